"""The stages of processing one evaluation, in the order :func:`audit_watch.alerting.pipeline.process` runs them.

::

    evaluation ─ failed ─ load prior states ─ stale ─ decide ─ store_step ─ plan_notifications
               ─ (later: routing, inhibition, mute intervals, a cap per channel per tick)
               ─ render ─ enqueue_notification ─ (later: acknowledgement, escalation)

Each stage has one job and hands its result down: :func:`failed` and :func:`stale`
say why an evaluation must change nothing; :func:`audit_watch.alerting.notify.decide`
(pure) moves the states forward; :func:`store_step` writes them; :func:`plan_notifications`
groups the events into one notification per channel (and thread); :func:`render`
turns one into its channel's payload; :func:`enqueue_notification` queues it. All
of them run inside the one transaction of ``process``: states and notifications
are stored together or not at all.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from markupsafe import escape
from sqlalchemy.engine import Connection

from audit_watch.alerting.notify import FIRING, RESOLVED, Change, Planned, Step, plan
from audit_watch.alerting.outbox import DeliveryPolicy, enqueue, payload_of
from audit_watch.alerting.state import (
    AlertState,
    clear_thread_roots,
    save_states,
    set_thread_root,
    states_by_fingerprint,
    thread_roots,
)
from audit_watch.channels.channel_type import ChannelSettings
from audit_watch.channels.escaping import mrkdwn_escape
from audit_watch.channels.messages import Entry, MessageContext, rule_info
from audit_watch.channels.registry import compose, root_update, threaded, updates_root
from audit_watch.channels.render import Renderer
from audit_watch.core.errors import short_error
from audit_watch.rules.evaluate import Evaluation
from audit_watch.rules.model import RuleBase

log = logging.getLogger(__name__)


# --- admission: which evaluations may change the states --------------------------------


def failed(evaluation: Evaluation) -> str | None:
    """Why a failed evaluation changes nothing (a database outage must not resolve every alert)."""
    return None if evaluation.ok else f"evaluation failed: {evaluation.error}"


def stale(evaluation: Evaluation, prior: Mapping[str, AlertState]) -> str | None:
    """Why an evaluation older than the rule's last one changes nothing (a slow worker
    must not move the states back)."""
    latest = max((s.last_evaluated_at for s in prior.values()), default=None)
    if latest is not None and evaluation.now < latest:
        return f"stale: evaluated at {evaluation.now.isoformat()}, state already at {latest.isoformat()}"
    return None


# --- the states ----------------------------------------------------------------------


def store_step(conn: Connection, prior: Mapping[str, AlertState], step: Step) -> None:
    """Write what :func:`~audit_watch.alerting.notify.decide` decided; an alert that
    starts firing again starts a new thread."""
    save_states(conn, step.changed, set(prior), step.removed)
    clear_thread_roots(conn, step.new_episodes)


def transitions(prior: Mapping[str, AlertState], step: Step) -> Counter[str]:
    """How many alerts entered each state (pending, firing, resolved), and ``cleared``:
    pending alerts whose condition went away."""
    counted: Counter[str] = Counter()
    for item in step.changed:
        before = prior.get(item.fingerprint)
        if before is None or before.state != item.state:
            counted[item.state] += 1
    counted["cleared"] += len(step.removed)
    return counted


# --- notifications -------------------------------------------------------------------


def plan_notifications(conn: Connection, rule: RuleBase, events: list[Change],
                       channels: Mapping[str, ChannelSettings]) -> list[Planned]:
    """One notification per (channel, kind[, thread]) for one rule's events; on
    channels that thread, repeats and resolutions name their firing message."""
    roots = thread_roots(conn, [c.state.fingerprint for c in events])
    return plan(rule, events, channels, roots, threaded)


def message_context(planned: Planned, evaluated_at: datetime) -> MessageContext:
    entries = [_entry(c.state) for c in planned.changes]
    return MessageContext(rule_info(planned.rule), planned.kind, entries, evaluated_at)


def render(conn: Connection, planned: Planned, channel: ChannelSettings, renderer: Renderer,
           evaluated_at: datetime) -> dict[str, Any]:
    """The payload the outbox stores for one notification.

    A resolution on a channel that updates its messages also carries ``update``:
    the firing message re-rendered. Should rendering fail, a plain payload says
    so: a broken template must not swallow the notification.
    """
    ctx = message_context(planned, evaluated_at)
    try:
        payload = compose(channel, renderer, ctx)
        if planned.kind == RESOLVED and planned.parent_id is not None and updates_root(channel):
            entries = root_entries(conn, planned.channel, planned.parent_id)
            if entries is not None:
                payload["update"] = root_update(channel, renderer, MessageContext(ctx.rule, "update", entries, ctx.now))
    except Exception as exc:
        log.exception("rendering %s for %s failed; sending a plain fallback", planned.rule.name, planned.channel)
        payload = fallback_payload(planned, ctx, short_error(exc))
    return payload


def root_entries(conn: Connection, channel: str, root_id: int) -> list[Entry] | None:
    """The alerts of firing message ``root_id``, each firing or resolved as of now
    (None when that message is gone).

    An alert counts as still firing only while the message is still its thread root
    (one that resolved and fired again belongs to a newer message).
    """
    root = payload_of(conn, root_id)
    if not root or not root.get("alerts"):
        return None
    fingerprints = [a["fingerprint"] for a in root["alerts"]]
    states = states_by_fingerprint(conn, fingerprints)
    roots = thread_roots(conn, fingerprints)
    entries = []
    for alert in root["alerts"]:
        fp = alert["fingerprint"]
        item = states.get(fp)
        if item is None:
            entries.append(Entry(alert, "resolved"))
            continue
        still = item.state == "firing" and roots.get((fp, channel)) == root_id
        entries.append(Entry(alert, "firing" if still else "resolved", item.started_at, item.fired_at,
                             None if still else item.resolved_at))
    return entries


def fallback_payload(planned: Planned, ctx: MessageContext, error: str) -> dict[str, Any]:
    """A payload every channel type can send, escaped by hand: what fired, and that rendering failed."""
    labels = ", ".join(str(c.state.group_label) for c in planned.changes)
    line = f"{planned.rule.name}: {planned.kind} ({labels}). Rendering failed: {error}"
    section = {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn_escape(line)[:2900]}}
    return {
        "title": f"{planned.rule.name}: {planned.kind}", "text": mrkdwn_escape(line)[:2900], "blocks": [section],
        "subject": f"[audit-watch] {planned.rule.name}: {planned.kind}", "html": f"<pre>{escape(line)}</pre>",
        "message_id": f"<audit-watch.fallback.{planned.rule.name}.{ctx.now.timestamp():.0f}@audit-watch.local>",
        "alerts": [c.state.alert for c in planned.changes],
    }


def enqueue_notification(conn: Connection, planned: Planned, payload: dict[str, Any], channel: ChannelSettings,
                         policy: DeliveryPolicy, now: datetime) -> int:
    """Queue the notification; a firing one becomes the thread root of its alerts on
    channels that thread. Returns its outbox id."""
    outbox_id = enqueue(
        conn, channel=planned.channel, kind=planned.kind, rule=planned.rule.name,
        fingerprints=planned.fingerprints, payload=payload, now=now, policy=policy, parent_id=planned.parent_id,
    )
    if planned.kind == FIRING and threaded(channel):
        set_thread_root(conn, planned.fingerprints, planned.channel, outbox_id)
    return outbox_id


def _entry(item: AlertState) -> Entry:
    return Entry(item.alert, item.state, item.started_at, item.fired_at, item.resolved_at)
