"""What an alert notification says, whatever the channel: the context its templates see.

A notification is rendered once, when it is queued: each channel type turns a
:class:`MessageContext` into its payload (see :mod:`audit_watch.channels.registry`),
and the outbox stores that payload, so a delivery retried tomorrow sends what was
decided today (and a template edited in between cannot break it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from audit_watch.core.labels import group_label
from audit_watch.core.timestamps import parse_timestamp


@dataclass
class Entry:
    """One alert in a message: its snapshot and where it stands now."""

    alert: dict[str, Any]            # Alert.to_json(), redacted
    status: str                      # firing | resolved | pending
    started_at: datetime | None = None
    fired_at: datetime | None = None
    resolved_at: datetime | None = None


@dataclass
class MessageContext:
    rule: dict[str, Any]             # name, kind, severity, description, source, window, template, ...
    event: str                       # firing | repeat | resolved
    entries: list[Entry]
    now: datetime


def rule_info(rule: Any) -> dict[str, Any]:
    return {
        "name": rule.name, "kind": rule.kind, "severity": rule.severity, "description": rule.description,
        "source": rule.source, "window": rule.window, "template": rule.template,
        "include_content": rule.include_content, "labels": dict(rule.labels),
        "repeat": rule.repeat, "for": rule.for_,
    }


def alert_view(entry: Entry, max_rows: int) -> dict[str, Any]:
    """What a template sees as ``alert``: the snapshot plus times, rows and status."""
    view = dict(entry.alert)
    start, end = parse_timestamp(view["window_start"]), parse_timestamp(view["window_end"])
    row_ids, links = list(view.get("row_ids") or []), list(view.get("links") or [])
    view.update(
        window_start=start, window_end=end, window=end - start,
        rows=[{"id": rid, "link": link} for rid, link in zip(row_ids, links)][:max_rows],
        more_rows=max(0, len(row_ids) - max_rows),
        group_label=view.get("group_label") or group_label(view.get("group") or {}, view.get("group_names") or {}),
        status=entry.status, started_at=entry.started_at, fired_at=entry.fired_at, resolved_at=entry.resolved_at,
        firing_for=(entry.resolved_at - entry.fired_at) if entry.fired_at and entry.resolved_at else None,
    )
    return view


def template_context(ctx: MessageContext, max_rows: int) -> dict[str, Any]:
    alerts = [alert_view(e, max_rows) for e in ctx.entries]
    return {
        "rule": ctx.rule, "event": ctx.event, "alerts": alerts, "count": len(alerts), "now": ctx.now,
        "title": title(ctx),
    }


def title(ctx: MessageContext) -> str:
    """``failed-job-spike: 3 alerts firing`` (plain text: headers, subjects, file names)."""
    name, count = ctx.rule["name"], len(ctx.entries)
    resolved = sum(1 for e in ctx.entries if e.status == "resolved")
    if ctx.event == "resolved":
        return f"Resolved: {name}" + (f" ({count} alerts)" if count > 1 else "")
    if ctx.event == "update":
        return f"Resolved: {name}" if resolved == count else f"{name}: {resolved} of {count} resolved"
    noun = "alert" if count == 1 else "alerts"
    if ctx.event == "repeat":
        return f"Still firing: {name} ({count} {noun})"
    return f"{name}: {count} {noun} firing"


def template_names(ctx: MessageContext) -> list[str | None]:
    """The templates to try, first existing wins: the rule's ``template``, its kind (then ``default``)."""
    return [ctx.rule.get("template"), ctx.rule["kind"]]
