"""What each type of channel receives, rendered once when the notification is queued.

The outbox stores the rendered payload, so a delivery retried tomorrow sends what
was decided today (and a template edited in between cannot break it). Payloads:

* slack / slack_webhook: ``{"text", "blocks"}`` and, for a resolution, ``"update"``
  (the original message re-rendered with each alert's current status);
* email: ``{"subject", "text", "html", "message_id"}``, HTML with CSS inlined;
* file: ``{"text"}``.

Every payload also carries ``"alerts"`` (``Alert.to_json()``, content redacted).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import make_msgid
from typing import Any

import css_inline

from audit_watch.channels.escaping import mrkdwn_escape
from audit_watch.channels.render import Renderer
from audit_watch.channels.settings import EmailChannel, FileChannel, SlackChannel, SlackWebhookChannel
from audit_watch.channels.slack_blocks import Section, build_message
from audit_watch.core.durations import format_duration
from audit_watch.core.labels import group_label
from audit_watch.core.timestamps import parse_timestamp

SEVERITY_EMOJI = {"critical": "🔴", "warning": "🟠", "info": "🔵"}
_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False)


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


def _names(ctx: MessageContext, limit: int = 3) -> str:
    labels = [alert_view(e, 0)["group_label"] for e in ctx.entries]
    shown = ", ".join(labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def compose(channel: Any, renderer: Renderer, ctx: MessageContext) -> dict[str, Any]:
    """The payload for one channel's notification (see the module doc)."""
    alerts = [e.alert for e in ctx.entries]
    if isinstance(channel, (SlackChannel, SlackWebhookChannel)):
        payload = slack_message(renderer, ctx, channel.max_rows)
    elif isinstance(channel, EmailChannel):
        payload = email_message(renderer, ctx, channel)
    elif isinstance(channel, FileChannel):
        payload = {"text": renderer.render("text", _template_names(ctx), template_context(ctx, FILE_MAX_ROWS))}
    else:  # pragma: no cover - config validation knows every type
        raise TypeError(f"unknown channel type {type(channel).__name__}")
    payload["alerts"] = alerts
    payload["title"] = title(ctx)
    return payload


def _template_names(ctx: MessageContext) -> list[str | None]:
    return [ctx.rule.get("template"), ctx.rule["kind"]]


def slack_message(renderer: Renderer, ctx: MessageContext, max_rows: int) -> dict[str, Any]:
    data = template_context(ctx, max_rows)
    sections = []
    for view in data["alerts"]:
        mrkdwn = renderer.render("slack", _template_names(ctx), {**data, "alert": view, "status": view["status"]})
        sections.append(Section(mrkdwn, view.get("list_link")))
    rule = ctx.rule
    emoji = "✅" if ctx.event == "resolved" or (ctx.event == "update" and all(
        e.status == "resolved" for e in ctx.entries)) else SEVERITY_EMOJI.get(rule["severity"], "⚠️")
    header = f"{emoji} {title(ctx)}"
    intro = None  # replies in a thread stay short: the root message has the details
    if ctx.event in ("firing", "update"):
        intro = f"*Severity:* {mrkdwn_escape(rule['severity'])} · *Kind:* {mrkdwn_escape(rule['kind'])}"
        if rule["description"]:
            intro += f"\n{mrkdwn_escape(rule['description'])}"
    window = format_duration(rule["window"])
    tz = renderer.zone
    context = [
        f"Rule *{mrkdwn_escape(rule['name'])}* · window {window} · evaluated "
        f"{ctx.now.astimezone(tz):%Y-%m-%d %H:%M %Z} · audit-watch"
    ]
    text = f"{emoji} [{rule['severity']}] {mrkdwn_escape(title(ctx))}: {mrkdwn_escape(_names(ctx))}"
    return build_message(header, intro, sections, context, text)


EMAIL_MAX_ROWS = 10
FILE_MAX_ROWS = 20


def email_fields(subject: str, text: str, html: str, sender: str, inline_css: bool = True) -> dict[str, Any]:
    """What every e-mail payload holds: a one-line subject, the text, the HTML with its
    CSS inlined (mail clients drop <style>), a Message-ID in the sender's domain."""
    domain = sender.rpartition("@")[2] or "audit-watch.local"
    return {
        "subject": " ".join(subject.split())[:250],
        "text": text,
        "html": _INLINER.inline(html) if inline_css else html,
        "message_id": make_msgid("audit-watch", domain=domain),
    }


def email_message(renderer: Renderer, ctx: MessageContext, channel: EmailChannel) -> dict[str, Any]:
    data = template_context(ctx, EMAIL_MAX_ROWS)
    names = _template_names(ctx)
    return email_fields(renderer.render("subject", names, data), renderer.render("email_text", names, data) + "\n",
                        renderer.render("email_html", names, data), channel.from_)


def update_message(renderer: Renderer, ctx: MessageContext, max_rows: int) -> dict[str, Any]:
    """The original Slack message re-rendered with each alert's current status."""
    return slack_message(renderer, MessageContext(ctx.rule, "update", ctx.entries, ctx.now), max_rows)
