"""What a Slack message says: an alert notification, its root's update, a report.

Payloads are ``{"text", "blocks"}`` (Block Kit within Slack's limits, see
:mod:`audit_watch.channels.slack_blocks`); ``text`` is the notification's
fallback line. Every value from the audit store is mrkdwn-escaped, by the
templates or here.
"""

from __future__ import annotations

import re
from typing import Any

from audit_watch.channels.channel_type import ReportContent
from audit_watch.channels.escaping import escape_slack, mrkdwn_escape
from audit_watch.channels.messages import MessageContext, alert_view, template_context, template_names, title
from audit_watch.channels.render import Renderer
from audit_watch.channels.slack_blocks import MAX_TEXT, Section, build_message
from audit_watch.core.durations import format_duration

SEVERITY_EMOJI = {"critical": "🔴", "warning": "🟠", "info": "🔵"}
_BLANK_LINES = re.compile(r"\n[ \t]*\n")


def alert_message(renderer: Renderer, ctx: MessageContext, max_rows: int) -> dict[str, Any]:
    """A header, the rule's severity and description (not in thread replies), one
    section per alert with its button, and a context line."""
    data = template_context(ctx, max_rows)
    sections = []
    for view in data["alerts"]:
        mrkdwn = renderer.render("slack", template_names(ctx), {**data, "alert": view, "status": view["status"]})
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


def _names(ctx: MessageContext, limit: int = 3) -> str:
    labels = [alert_view(e, 0)["group_label"] for e in ctx.entries]
    shown = ", ".join(labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def report_message(report: ReportContent) -> dict[str, Any]:
    """A header with the report's title, its Slack rendering in sections within
    Slack's limits, and a context line with the period; ``text`` is the title and
    the period."""
    heading = " ".join(report.title.split())
    period = escape_slack(report.period)
    sections = [Section(chunk) for chunk in report_sections(report.slack)]
    context = [f"Report *{escape_slack(report.name)}* · {period} · audit-watch"]
    message = build_message(heading, None, sections, context, f"{escape_slack(heading)} · {period}",
                            more_label="sections")
    return {"title": report.title, **message}


def report_sections(mrkdwn: str) -> list[str]:
    """The body's paragraphs (split at blank lines), each cut at whole lines
    into pieces that fit a section, so that nothing is lost to the limit."""
    pieces: list[str] = []
    for paragraph in _BLANK_LINES.split(mrkdwn.strip("\n")):
        current: list[str] = []
        size = 0
        for line in paragraph.strip("\n").split("\n"):
            extra = len(line) + (1 if current else 0)
            if current and size + extra > MAX_TEXT:
                pieces.append("\n".join(current))
                current, size, extra = [], 0, len(line)
            current.append(line)
            size += extra
        if current and any(line.strip() for line in current):
            pieces.append("\n".join(current))
    return pieces
