"""The notification policy: which state changes produce which notifications.

:func:`decide` moves the states of one rule forward by one evaluation (pure: no
database, no clock) and says what people must hear about:

* ``firing``   the condition has held for ``for`` (or at once when ``for`` is 0),
               or a firing alert nobody was told about (its silence ended);
* ``repeat``   still firing ``repeat`` after the last notification;
* ``resolved`` the condition stopped holding (and ``keep_firing_for`` has passed),
               unless ``notify_resolved: false`` or nobody was ever told it fired.

Silenced alerts change state like any other; only their notifications are held
back, so the first evaluation after a silence ends tells what is still firing.

An evaluation that left firing groups out (more fired than the rule's
``max_groups``) is not *complete*: a tracked alert missing from it may only have
ranked below the cut, so it keeps its state (and its last value) rather than
resolving; the next complete evaluation decides.

:func:`plan` groups one rule's notifications per channel: everything of one kind
goes out as ONE message (one Slack message listing 12 agents). Repeats and
resolutions thread under the message that announced the firing, so on channels
with threads they are grouped per thread root as well.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from audit_watch.alerting.silences import Silence, silence_for
from audit_watch.alerting.state import AlertState
from audit_watch.rules.alert import Alert
from audit_watch.rules.model import RuleBase

log = logging.getLogger(__name__)

FIRING, REPEAT, RESOLVED = "firing", "repeat", "resolved"
KIND_ORDER = (FIRING, REPEAT, RESOLVED)
# Keys of audit content that only reach a message when the rule sets include_content.
CONTENT_KEYS = frozenset({"prompt", "response"})


@dataclass
class Change:
    """One alert's part in a notification."""

    kind: str
    state: AlertState
    alert: Alert


@dataclass
class Step:
    """What one evaluation does to a rule's states."""

    changed: list[AlertState] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)       # pending alerts that cleared
    events: list[Change] = field(default_factory=list)
    new_episodes: list[str] = field(default_factory=list)  # started firing: start new threads
    silenced: int = 0                                       # notifications held back


@dataclass
class Planned:
    """A notification for one channel, before rendering."""

    rule: RuleBase
    channel: str
    kind: str
    changes: list[Change]
    parent_id: int | None = None

    @property
    def fingerprints(self) -> list[str]:
        return [c.state.fingerprint for c in self.changes]


def redact(alert_json: dict[str, Any], include_content: bool) -> dict[str, Any]:
    """Drop prompts and responses from an alert snapshot unless the rule asks for them."""
    if include_content:
        return alert_json
    return _without_content(alert_json)


def _without_content(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_content(v) for k, v in value.items() if k not in CONTENT_KEYS}
    if isinstance(value, list):
        return [_without_content(v) for v in value]
    return value


def decide(
    rule: RuleBase,
    prior: Mapping[str, AlertState],
    alerts: list[Alert],
    now: datetime,
    active_silences: list[Silence],
    complete: bool = True,
) -> Step:
    """Apply one evaluation of ``rule`` at ``now`` to its prior states (``complete``:
    whether a group missing from ``alerts`` is known not to fire)."""
    step = Step()
    current: dict[str, Alert] = {}
    for alert in alerts:  # the last one wins should a kind ever repeat a group
        current[alert.fingerprint] = alert

    for fp, alert in current.items():
        before = prior.get(fp)
        silence = silence_for(alert, active_silences)
        snapshot = redact({**alert.to_json(), "group_label": alert.group_label}, rule.include_content)
        if before is None or before.state == "resolved":
            item = AlertState(
                fingerprint=fp, rule=rule.name, group=snapshot["group"], group_label=alert.group_label,
                state="pending", started_at=now, last_seen_at=now, last_evaluated_at=now, alert=snapshot,
                episode=before.episode if before else 0,
                recent_values=list(before.recent_values) if before else [],
            )
        else:
            item = replace(before, last_seen_at=now, last_evaluated_at=now, alert=snapshot,
                           group_label=alert.group_label)
        item.add_value(now, alert.value)
        item.silenced_by = silence.id if silence else None
        if item.state == "pending" and now - item.started_at >= rule.for_:
            item.state, item.fired_at, item.last_notified_at = "firing", now, None
            item.episode += 1
            step.new_episodes.append(fp)
            _announce(step, item, alert, FIRING, silence, now)
        elif item.state == "firing":
            _still_firing(step, rule, item, alert, silence, now)
        step.changed.append(item)

    for fp, before in prior.items():
        if fp in current or before.state == "resolved":
            continue
        if not complete:
            step.changed.append(replace(before, last_evaluated_at=now))  # below the cut: unknown
            continue
        if before.state == "pending":
            step.removed.append(fp)
            continue
        item = replace(before, last_evaluated_at=now)
        alert = item.to_alert()
        silence = silence_for(alert, active_silences)
        item.silenced_by = silence.id if silence else None
        if rule.keep_firing_for > timedelta(0) and now - item.last_seen_at < rule.keep_firing_for:
            _still_firing(step, rule, item, alert, silence, now)  # flapping guard: hold on
        else:
            item.state, item.resolved_at = "resolved", now
            told = item.last_notified_at is not None
            if rule.notify_resolved and told:
                _announce(step, item, alert, RESOLVED, silence, now)
        step.changed.append(item)
    return step


def _still_firing(step: Step, rule: RuleBase, item: AlertState, alert: Alert, silence: Silence | None,
                  now: datetime) -> None:
    if item.last_notified_at is None:
        _announce(step, item, alert, FIRING, silence, now)  # fired during a silence
    elif rule.repeat and now - item.last_notified_at >= rule.repeat:
        _announce(step, item, alert, REPEAT, silence, now)


def _announce(step: Step, item: AlertState, alert: Alert, kind: str, silence: Silence | None, now: datetime) -> None:
    if silence is not None:
        step.silenced += 1
        return
    item.last_notified_at = now
    step.events.append(Change(kind, item, alert))


def plan(
    rule: RuleBase,
    events: list[Change],
    channels: Mapping[str, Any],
    roots: Mapping[tuple[str, str], int],
    threaded: Callable[[Any], bool],
) -> list[Planned]:
    """One notification per (channel, kind[, thread root]) for one rule's events.

    ``roots`` maps (fingerprint, channel) to the firing notification of the
    current episode; ``threaded(channel_config)`` tells whether a channel
    threads (only then is a kind split by its root).
    """
    planned: list[Planned] = []
    if not events:
        return planned
    for name in rule.notify:
        channel = channels.get(name)
        if channel is None:
            log.warning("rule %s notifies unknown channel %r: skipped", rule.name, name)
            continue
        buckets: dict[tuple[str, int | None], list[Change]] = {}
        for change in events:
            parent = None
            if change.kind != FIRING and threaded(channel):
                parent = roots.get((change.state.fingerprint, name))
            buckets.setdefault((change.kind, parent), []).append(change)
        for (kind, parent), changes in sorted(buckets.items(), key=lambda kv: (KIND_ORDER.index(kv[0][0]), kv[0][1] or 0)):
            ordered = sorted(changes, key=lambda c: (c.alert.group_label, c.state.fingerprint))
            planned.append(Planned(rule, name, kind, ordered, parent))
    return planned
