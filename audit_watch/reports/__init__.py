"""Scheduled reports over the audit store: the four built-in reports and how to run them.

A run is: resolve the scope, query the store (every number a GROUP BY), draw the
charts, render every medium from ``templates/reports/``. The command line and
the daemon call these functions::

    definition = find_report(name, loaded_definitions)           # or a built-in's defaults
    period = period_for(definition, config, now=now)               # or start=, end=
    result = build_report(definition, src, config, period, Scope(user=email))
    write_report(result, "html", out)                              # or email_message(result, ...)
    queue_report(state, config, result, definition.channels, now)  # to its channels, through the outbox
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from audit_watch.config.model import Config
from audit_watch.core.yaml_source import InputError, Problem
from audit_watch.reports import compliance, token_usage, triage, weekly_digest
from audit_watch.reports.delivery import (
    check_report_channels,
    enqueue_report,
    queue_report,
    report_payload,
    report_payloads,
)
from audit_watch.reports.inputs import AlertActivity, ReportData, ReportInputs
from audit_watch.reports.loader import LoadedReport, find_report, report_definitions
from audit_watch.reports.model import REPORT_NAMES, ReportDefinitionBase, default_definition
from audit_watch.reports.output import (
    Attachment,
    ReportResult,
    email_message,
    email_payload,
    file_basename,
    write_report,
)
from audit_watch.reports.periods import Period, report_period
from audit_watch.reports.render_report import MEDIA, render, template_folders
from audit_watch.reports.scope import ResolvedScope, Scope, resolve_scope
from audit_watch.store.source import AuditSource


@dataclass(frozen=True)
class ReportKind:
    name: str
    template: str                                  # base name under templates/reports/
    build: Callable[[ReportInputs], ReportData]
    needs_subject: bool = False                    # compliance: a user or a team


REPORTS: dict[str, ReportKind] = {
    "weekly-digest": ReportKind("weekly-digest", "weekly_digest", weekly_digest.build),
    "compliance": ReportKind("compliance", "compliance", compliance.build, needs_subject=True),
    "token-usage": ReportKind("token-usage", "token_usage", token_usage.build),
    "triage": ReportKind("triage", "triage", triage.build),
}
assert tuple(REPORTS) == REPORT_NAMES


def period_for(definition: ReportDefinitionBase, config: Config, *, now: datetime | None = None,
               start: datetime | None = None, end: datetime | None = None) -> Period:
    """The period of a run: ``--from/--to``, else the definition's period at ``now``,
    in the definition's time zone (else the config's). ValueError for bad input."""
    return report_period(definition.period, now=now, start=start, end=end,
                         timezone_name=definition.timezone or config.timezone)


def build_report(
    report: str | ReportDefinitionBase,
    src: AuditSource,
    config: Config,
    period: Period,
    scope: Scope | None = None,
    *,
    alerts: Sequence[AlertActivity] = (),
    now: datetime | None = None,
    definitions: Iterable[LoadedReport] = (),
) -> ReportResult:
    """Build and render one report.

    ``report`` is a built-in name, the name of a loaded definition (looked up in
    ``definitions``) or a definition. ``scope`` from the command line replaces the
    definition's when it names a user or team; ``alerts`` feed the digest's alert
    section. Raises InputError for an unknown report, user, team or agent.
    """
    definition = report if isinstance(report, ReportDefinitionBase) else find_report(report, list(definitions))
    kind = REPORTS[definition.report]
    wanted = definition.scope.to_scope()
    if scope is not None and (scope.user or scope.team or scope.agents):
        # The command line names the subject; agents from the definition still narrow it.
        wanted = Scope(scope.user, scope.team, scope.agents or (wanted.agents if (scope.user or scope.team) else ()))
    if kind.needs_subject and not (wanted.user or wanted.team):
        raise InputError([Problem("--user", 0, "", f"the {kind.name} report needs --user EMAIL or --team NAME")])
    with src.connect() as conn:
        resolved = resolve_scope(conn, src, wanted)
        inputs = ReportInputs(src, conn, period, resolved, definition, config.links, now or period.end, alerts)
        data = kind.build(inputs)
    return _render(definition, kind, period, resolved, inputs.now, data, config)


def _render(definition: ReportDefinitionBase, kind: ReportKind, period: Period, scope: ResolvedScope,
            now: datetime, data: ReportData, config: Config) -> ReportResult:
    tag = hashlib.sha256(f"{definition.name}|{period.start.isoformat()}|{period.end.isoformat()}|{scope.label}"
                         .encode()).hexdigest()[:12]
    attachments: list[Attachment] = []
    standalone, inline = [], []
    for chart in data.charts:
        png = chart.draw()
        cid = f"{chart.name}.{tag}@audit-watch"
        attachments.append(Attachment(f"{chart.name}.png", "image/png", png, cid))
        common = {"name": chart.name, "title": chart.title, "alt": chart.alt}
        standalone.append({**common, "src": "data:image/png;base64," + base64.b64encode(png).decode()})
        inline.append({**common, "src": f"cid:{cid}"})
    context: dict[str, Any] = {
        **data.context,
        "report": {"name": definition.name, "kind": kind.name, "title": data.title,
                   "description": definition.description, "generated_at": now},
        "period": period.to_context(),
        "scope": scope.to_context(),
        "workspace": config.links.base_url,
        "evidence_file": (f"{file_basename(definition.name, scope, period)}.evidence.csv"
                          if data.evidence_csv is not None else None),
    }
    base = definition.template or kind.template
    folders = template_folders(config)
    rendered = {medium: render(base, medium, {**context, "charts": inline if medium == "html" else standalone},
                               folders) for medium in MEDIA}
    html = render(base, "html", {**context, "charts": standalone}, folders)
    result = ReportResult(
        name=definition.name, report=kind.name, title=data.title, period=period, scope=scope, generated_at=now,
        context=context, text=rendered["text"], html=html, email_html=rendered["html"],
        markdown=rendered["markdown"], slack=rendered["slack"], attachments=attachments,
    )
    if data.evidence_csv is not None:
        result.attachments.append(Attachment(context["evidence_file"], "text/csv", data.evidence_csv.encode("utf-8")))
    return result


def run_report(name: str, src: AuditSource, config: Config, *, now: datetime, start: datetime | None = None,
               end: datetime | None = None, user: str | None = None, team: str | None = None,
               definitions: Iterable[LoadedReport] = (), alerts: Sequence[AlertActivity] = ()) -> ReportResult:
    """``audit-watch report NAME [--user|--team] [--from --to | --now]`` in one call."""
    definition = find_report(name, list(definitions))
    try:
        period = period_for(definition, config, now=now, start=start, end=end)
    except ValueError as exc:
        raise InputError([Problem("--from" if start or end else "--now", 0, "", str(exc))]) from None
    scope = Scope(user=user, team=team) if (user or team) else None
    return build_report(definition, src, config, period, scope, alerts=alerts, now=now)


__all__ = [
    "REPORTS", "REPORT_NAMES", "AlertActivity", "Attachment", "LoadedReport", "Period", "ReportKind",
    "ReportResult", "Scope", "build_report", "check_report_channels", "default_definition", "email_message",
    "email_payload", "enqueue_report", "find_report", "period_for", "queue_report", "report_definitions",
    "report_payload", "report_payloads", "report_period", "run_report", "write_report",
]
