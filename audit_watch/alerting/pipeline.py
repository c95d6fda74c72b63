"""One pass from evaluations to delivered notifications: the entry points of ``run``.

* :func:`process` applies evaluations to the alert states and queues the
  notifications they cause, all in ONE transaction: either both the state change
  and its notifications are stored, or neither.
* :func:`deliver_due` sends what is due from the outbox and records each result.
* :func:`alerts_table` and :func:`outbox_table` feed ``audit-watch alerts [--outbox]``.

Time is always the ``now`` argument: the caller reads the clock once per tick.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from markupsafe import escape
from sqlalchemy.engine import Connection

from audit_watch.alerting.notify import FIRING, RESOLVED, Planned, decide, plan
from audit_watch.alerting.outbox import (
    DeliveryPolicy,
    OutboxEntry,
    claim,
    counts,
    enqueue,
    list_entries,
    payload_of,
    record,
)
from audit_watch.alerting.silences import active_silences
from audit_watch.alerting.state import (
    AlertState,
    StateStore,
    all_states,
    clear_thread_roots,
    load_states,
    save_states,
    set_thread_root,
    states_by_fingerprint,
    thread_roots,
)
from audit_watch.channels import Channel, DeliveryResult, make_channel, threaded
from audit_watch.channels.messages import Entry, MessageContext, compose, rule_info, update_message
from audit_watch.channels.render import Renderer, mrkdwn_escape
from audit_watch.channels.settings import SlackChannel
from audit_watch.config.model import Config
from audit_watch.core.errors import short_error
from audit_watch.core.outcomes import DeliveryOutcome
from audit_watch.rules.evaluate import Evaluation

log = logging.getLogger(__name__)

MAX_ROUNDS = 20  # claim rounds per deliver_due: replies wait for their root, one round each


@dataclass
class ProcessSummary:
    evaluations: int = 0
    transitions: Counter[str] = field(default_factory=Counter)   # pending, firing, resolved, cleared
    notifications: list[int] = field(default_factory=list)       # outbox ids queued
    silenced: int = 0                                            # notifications held back
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (rule, why)


@dataclass(frozen=True)
class Outcome:
    id: int
    channel: str
    status: str
    error: str | None


@dataclass
class DeliverySummary:
    outcomes: list[Outcome] = field(default_factory=list)

    def _count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def attempted(self) -> int:
        return len(self.outcomes)

    @property
    def delivered(self) -> int:
        return self._count(DeliveryOutcome.DELIVERED)

    @property
    def retrying(self) -> int:
        return self._count(DeliveryOutcome.RETRYING)

    @property
    def dead(self) -> int:
        return self._count(DeliveryOutcome.DEAD)


@dataclass(frozen=True)
class AlertRow:
    """One line of ``audit-watch alerts``."""

    rule: str
    group: str
    state: str
    severity: str
    value: Any
    started_at: datetime
    fired_at: datetime | None
    resolved_at: datetime | None
    last_evaluated_at: datetime
    last_notified_at: datetime | None
    silenced_by: int | None
    fingerprint: str
    recent_values: list[list[Any]]
    list_link: str
    last_seen_at: datetime | None = None
    # At the latest evaluation that kept this group: the rule's firing groups in all,
    # and how many were tracked (the most severe max_groups).
    firing_groups: int | None = None
    tracked_groups: int | None = None
    groups_summary: str | None = None


def process(
    evaluations: Iterable[Evaluation], config: Config, state: StateStore, now: datetime,
    *, renderer: Renderer | None = None, policy: DeliveryPolicy | None = None,
) -> ProcessSummary:
    """Apply evaluations to the alert states and queue their notifications (one transaction).

    A failed evaluation changes nothing (a database outage must not resolve every
    alert); an evaluation older than the rule's last one is skipped as stale.
    """
    renderer = renderer or Renderer(config.template_paths, config.timezone)
    policy = policy or DeliveryPolicy.from_config(config.delivery)
    summary = ProcessSummary()
    with state.write() as conn:
        silences = active_silences(conn, now)
        for evaluation in evaluations:
            rule = evaluation.rule
            if not evaluation.ok:
                summary.skipped.append((rule.name, f"evaluation failed: {evaluation.error}"))
                continue
            prior = load_states(conn, rule.name, lock=True)
            latest = max((s.last_evaluated_at for s in prior.values()), default=None)
            if latest is not None and evaluation.now < latest:
                summary.skipped.append((rule.name, f"stale: evaluated at {evaluation.now.isoformat()}, "
                                                   f"state already at {latest.isoformat()}"))
                continue
            summary.evaluations += 1
            step = decide(rule, prior, evaluation.alerts, evaluation.now, silences, evaluation.complete)
            save_states(conn, step.changed, set(prior), step.removed)
            clear_thread_roots(conn, step.new_episodes)
            _count_transitions(summary, prior, step.changed, step.removed)
            summary.silenced += step.silenced
            roots = thread_roots(conn, [c.state.fingerprint for c in step.events])
            for planned in plan(rule, step.events, config.channels, roots, threaded):
                summary.notifications.append(
                    _queue(conn, planned, config, renderer, policy, evaluation.now, now)
                )
    return summary


def _count_transitions(summary: ProcessSummary, prior: Mapping[str, AlertState], changed: list[AlertState],
                       removed: list[str]) -> None:
    for item in changed:
        before = prior.get(item.fingerprint)
        if before is None or before.state != item.state:
            summary.transitions[item.state] += 1
    summary.transitions["cleared"] += len(removed)


def _entry(item: AlertState, status: str | None = None) -> Entry:
    return Entry(item.alert, status or item.state, item.started_at, item.fired_at, item.resolved_at)


def _queue(conn: Connection, planned: Planned, config: Config, renderer: Renderer, policy: DeliveryPolicy,
           evaluated_at: datetime, now: datetime) -> int:
    channel = config.channels[planned.channel]
    ctx = MessageContext(rule_info(planned.rule), planned.kind, [_entry(c.state) for c in planned.changes], evaluated_at)
    try:
        payload = compose(channel, renderer, ctx)
        if planned.kind == RESOLVED and planned.parent_id is not None and isinstance(channel, SlackChannel):
            update = _root_update(conn, planned, renderer, ctx, channel.max_rows)
            if update is not None:
                payload["update"] = update
    except Exception as exc:
        log.exception("rendering %s for %s failed; sending a plain fallback", planned.rule.name, planned.channel)
        payload = _fallback_payload(planned, ctx, short_error(exc))
    outbox_id = enqueue(
        conn, channel=planned.channel, kind=planned.kind, rule=planned.rule.name,
        fingerprints=planned.fingerprints, payload=payload, now=now, policy=policy, parent_id=planned.parent_id,
    )
    if planned.kind == FIRING and threaded(channel):
        set_thread_root(conn, planned.fingerprints, planned.channel, outbox_id)
    return outbox_id


def _root_update(conn: Connection, planned: Planned, renderer: Renderer, ctx: MessageContext,
                 max_rows: int) -> dict[str, Any] | None:
    """The firing message re-rendered: each of its alerts firing or resolved as of now.

    An alert counts as still firing only while the message is still its thread root
    (one that resolved and fired again belongs to a newer message).
    """
    root = payload_of(conn, planned.parent_id or 0)
    if not root or not root.get("alerts"):
        return None
    fingerprints = [a["fingerprint"] for a in root["alerts"]]
    states = states_by_fingerprint(conn, fingerprints)
    roots = thread_roots(conn, fingerprints)
    entries = []
    for alert in root["alerts"]:
        fp = alert["fingerprint"]
        item = states.get(fp)
        still = item is not None and item.state == "firing" and roots.get((fp, planned.channel)) == planned.parent_id
        if item is None:
            entries.append(Entry(alert, "resolved"))
        else:
            entries.append(Entry(alert, "firing" if still else "resolved", item.started_at, item.fired_at,
                                 item.resolved_at if not still else None))
    return update_message(renderer, MessageContext(ctx.rule, "update", entries, ctx.now), max_rows)


def _fallback_payload(planned: Planned, ctx: MessageContext, error: str) -> dict[str, Any]:
    labels = ", ".join(str(c.state.group_label) for c in planned.changes)
    line = f"{planned.rule.name}: {planned.kind} ({labels}). Rendering failed: {error}"
    section = {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn_escape(line)[:2900]}}
    return {
        "title": f"{planned.rule.name}: {planned.kind}", "text": mrkdwn_escape(line)[:2900], "blocks": [section],
        "subject": f"[audit-watch] {planned.rule.name}: {planned.kind}", "html": f"<pre>{escape(line)}</pre>",
        "message_id": f"<audit-watch.fallback.{planned.rule.name}.{ctx.now.timestamp():.0f}@audit-watch.local>",
        "alerts": [c.state.alert for c in planned.changes],
    }


def deliver_due(
    config: Config, state: StateStore, now: datetime, *, policy: DeliveryPolicy | None = None,
    channels: Mapping[str, Channel] | None = None, rng: random.Random | None = None,
    channel_options: Mapping[str, Mapping[str, Any]] | None = None, only: Iterable[int] | None = None,
) -> DeliverySummary:
    """Send every notification due at ``now`` (``only``: just these outbox ids, as
    ``audit-watch report`` sends its own); failures are rescheduled or kept as dead.

    ``channels`` replaces senders by name (tests); ``channel_options`` passes
    options to the senders built from the config (e.g. ``{"mail": {"ssl_context": ctx}}``).
    """
    wanted = None if only is None else list(only)
    policy = policy or DeliveryPolicy.from_config(config.delivery)
    rng = rng or random.Random()
    summary = DeliverySummary()
    built: dict[str, Channel] = {}
    attempted: set[int] = set()
    try:
        for _ in range(MAX_ROUNDS):
            claimed = claim(state, now, policy, exclude=attempted, only=wanted)
            if not claimed:
                break
            attempted.update(c.notification.id for c in claimed)
            by_channel: dict[str, list[Any]] = {}
            for item in claimed:
                by_channel.setdefault(item.notification.channel, []).append(item)
            for name, items in by_channel.items():
                results = _send(name, items, config, channels or {}, built, channel_options or {})
                for item, result in zip(items, results):
                    status = record(state, item, result, now, policy, rng)
                    summary.outcomes.append(Outcome(item.notification.id, name, status, result.error))
    finally:
        for sender in built.values():
            sender.close()
    return summary


def _send(name: str, items: list[Any], config: Config, overrides: Mapping[str, Channel],
          built: dict[str, Channel], options: Mapping[str, Mapping[str, Any]]) -> list[DeliveryResult]:
    sender = overrides.get(name) or built.get(name)
    if sender is None:
        channel_config = config.channels.get(name)
        if channel_config is None:
            log.error("outbox: channel %r is no longer configured", name)
            return [DeliveryResult.permanent(f"channel {name!r} is not configured")] * len(items)
        sender = built[name] = make_channel(name, channel_config, config.base_dir, **options.get(name, {}))
    try:
        results = sender.send_batch([i.notification for i in items])
    except Exception as exc:
        log.exception("channel %s raised while sending", name)
        return [DeliveryResult.retry(short_error(exc))] * len(items)
    if len(results) != len(items):  # pragma: no cover - a sender contract breach
        return [DeliveryResult.retry("sender returned a wrong number of results")] * len(items)
    return results


def alerts_table(state: StateStore, include_resolved: bool = True) -> list[AlertRow]:
    """Current alert states, firing first, then pending, then resolved."""
    order = {"firing": 0, "pending": 1, "resolved": 2}
    with state.read() as conn:
        items = all_states(conn, include_resolved)
    rows = [
        AlertRow(
            rule=s.rule, group=s.group_label, state=s.state, severity=str(s.alert.get("severity", "")),
            value=s.alert.get("value"), started_at=s.started_at, fired_at=s.fired_at, resolved_at=s.resolved_at,
            last_evaluated_at=s.last_evaluated_at, last_notified_at=s.last_notified_at,
            silenced_by=s.silenced_by, fingerprint=s.fingerprint, recent_values=s.recent_values,
            list_link=str(s.alert.get("list_link", "")), last_seen_at=s.last_seen_at,
            firing_groups=s.alert.get("firing_groups"), tracked_groups=s.alert.get("tracked_groups"),
            groups_summary=s.to_alert().groups_summary,
        )
        for s in items
    ]
    return sorted(rows, key=lambda r: (order.get(r.state, 3), r.rule, r.group))


def outbox_table(state: StateStore, statuses: Iterable[str] | None = None, limit: int = 200) -> list[OutboxEntry]:
    """``alerts --outbox``: queued, retrying, sending and dead notifications (newest first)."""
    return list_entries(state, statuses, limit)


def outbox_summary(state: StateStore) -> dict[str, int]:
    """How many notifications are in each status."""
    return counts(state)


__all__ = [
    "AlertRow", "DeliveryPolicy", "DeliverySummary", "Outcome", "ProcessSummary", "alerts_table", "deliver_due",
    "outbox_summary", "outbox_table", "process",
]
