"""A rendered report and where it goes: files, stdout, an e-mail message.

``write_report`` writes one format to a file (or returns it for stdout), or
every format plus the evidence CSV into a folder (what ``compliance --out DIR``
asks for). ``email_payload`` is what the outbox stores for an e-mail channel
(see :mod:`audit_watch.reports.delivery`); ``email_message`` is the message the
e-mail channel builds from it: text, HTML with the charts inline by Content-ID,
and the evidence CSV attached.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, overload

from audit_watch.channels.channel_type import ReportContent
from audit_watch.channels.email import report_email
from audit_watch.reports.periods import Period
from audit_watch.reports.scope import ResolvedScope

FORMATS = {"text": "txt", "html": "html", "markdown": "md", "slack": "slack.txt"}


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str            # "image/png", "text/csv"
    data: bytes
    cid: str | None = None       # set for images shown inline in the e-mail

    def to_json(self) -> dict[str, Any]:
        """What an outbox payload carries (``data`` in base64)."""
        return {"filename": self.filename, "content_type": self.content_type, "cid": self.cid,
                "data": base64.b64encode(self.data).decode("ascii")}


@dataclass
class ReportResult:
    name: str                    # the definition's name ("weekly-digest" for the built-in)
    report: str                  # which report: weekly-digest | compliance | token-usage | triage
    title: str
    period: Period
    scope: ResolvedScope
    generated_at: datetime
    context: dict[str, Any]      # everything the templates saw (numbers, rows, links)
    text: str
    html: str                    # standalone: charts as data: URIs (for files and browsers)
    email_html: str              # charts as cid: references to the inline attachments
    markdown: str
    slack: str
    attachments: list[Attachment] = field(default_factory=list)

    def rendered(self, fmt: str) -> str:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})")
        return str(getattr(self, fmt))

    @property
    def charts(self) -> list[Attachment]:
        return [a for a in self.attachments if a.content_type == "image/png"]

    @property
    def evidence(self) -> Attachment | None:
        return next((a for a in self.attachments if a.content_type == "text/csv"), None)

    @property
    def basename(self) -> str:
        return file_basename(self.name, self.scope, self.period)

    def content(self) -> ReportContent:
        """The report as channels receive it (see :mod:`audit_watch.reports.delivery`)."""
        period = self.period
        about = {
            "name": self.name, "kind": self.report, "title": self.title,
            "period": {"start": period.start.isoformat(), "end": period.end.isoformat(),
                       "timezone": period.timezone, "description": period.describe()},
            "scope": self.scope.label, "generated_at": self.generated_at.isoformat(),
        }
        evidence = self.evidence
        return ReportContent(
            name=self.name, title=self.title, period=period.describe(), text=self.text, html=self.html,
            email_html=self.email_html, slack=self.slack, attachments=tuple(a.to_json() for a in self.attachments),
            evidence=evidence.to_json() if evidence is not None else None, about=about,
        )


def file_basename(name: str, scope: ResolvedScope, period: Period) -> str:
    """``compliance-daniel-reyes-2026-11-20``: what the files of a run are called."""
    subject = "" if scope.kind == "workspace" else "-" + _slug(
        scope.people[0].name if scope.kind == "user" else scope.team_name or "team")
    return f"{name}{subject}-{period.local(period.end):%Y-%m-%d}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "scope"


@overload
def write_report(result: ReportResult, fmt: str = ..., out: None = None) -> str: ...
@overload
def write_report(result: ReportResult, fmt: str, out: str | Path) -> list[Path]: ...


def write_report(result: ReportResult, fmt: str = "text", out: str | Path | None = None) -> str | list[Path]:
    """Write the report; returns the text when ``out`` is None (for stdout), else the files written.

    ``out`` is a file for one format, or a folder that receives the HTML, the
    text, the chosen format and the evidence CSV: an existing folder, a path
    written with a trailing slash, or, for a compliance report, a path without a
    file extension (``--out evidence/2026-11``). A compliance report written to
    a single file also leaves its evidence beside it (``NAME.evidence.csv``): a
    summary without its evidence cannot be checked.
    """
    text = result.rendered(fmt)
    if out is None:
        return text
    target = Path(out)
    folder = target.is_dir() or str(out).endswith(("/", "\\")) or (result.report == "compliance" and not target.suffix)
    if folder:
        target.mkdir(parents=True, exist_ok=True)
        written = []
        for medium in dict.fromkeys(("html", "text", fmt)):
            path = target / f"{result.basename}.{FORMATS[medium]}"
            path.write_text(result.rendered(medium), encoding="utf-8")
            written.append(path)
        if result.evidence is not None:
            path = target / f"{result.basename}.evidence.csv"
            path.write_bytes(result.evidence.data)
            written.append(path)
        return written
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    written = [target]
    if result.evidence is not None:
        beside = target.with_name(target.stem + ".evidence.csv")
        beside.write_bytes(result.evidence.data)
        written.append(beside)
    return written


def email_payload(result: ReportResult, sender: str, css_inline: bool = True) -> dict[str, Any]:
    """The e-mail of a report as the outbox stores it: subject, text, HTML (CSS
    inlined), a Message-ID in the sender's domain, and every attachment (the
    charts with their Content-IDs, the evidence CSV)."""
    return report_email(result.content(), sender, css_inline)


def email_message(result: ReportResult, sender: str, to: list[str] | tuple[str, ...],
                  cc: list[str] | tuple[str, ...] = (), css_inline: bool = True) -> EmailMessage:
    """multipart/mixed( alternative( text, related( html, PNGs by Content-ID ) ), evidence CSV ):
    the message the e-mail channel sends for :func:`email_payload`."""
    from audit_watch.channels.email import build_message

    headers = {"Auto-Submitted": "auto-generated", "X-Audit-Watch-Report": result.name}
    return build_message(email_payload(result, sender, css_inline), sender=sender, to=to, cc=cc,
                         date=result.generated_at, headers=headers)
