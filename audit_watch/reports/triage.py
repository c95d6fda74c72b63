"""Triage of a window (the last hour, day or week): what is worth investigating,
what is probably nothing, and what to check first, with links.

Each signal (failed jobs per agent, provider errors, missed crons, new sign-in
addresses and sensitive actions, silent thread sources, per-agent spikes, other
warnings) is measured against its usual level in the same window on earlier
days (see :mod:`triage_signals`). Findings are ranked by severity, then by how
far they are from normal.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from audit_watch.reports.inputs import ReportData, ReportInputs, definition_of
from audit_watch.reports.model import TriageDefinition
from audit_watch.reports.queries import COUNT, counted_if, covered, data_start, grouped, totals
from audit_watch.reports.triage_signals import SIGNALS, Item, Triage, baseline_spans


def build(inputs: ReportInputs) -> ReportData:
    options: TriageDefinition = definition_of(inputs, TriageDefinition)
    baseline = baseline_spans(inputs.span)
    spans = [inputs.span, *baseline]
    triage = Triage(inputs, options, spans, covered(spans, data_start(inputs.conn, inputs.src)))
    items: list[Item] = [item for signal in SIGNALS for item in signal(triage)]
    items.sort(key=lambda i: (-i.score, i.title))
    serious = [i for i in items if i.severity != "info"]
    shown = serious[: options.top]
    for item in shown:
        if item.sample is not None:
            item.row_links = item.sample()
    length = inputs.period.length
    if length < timedelta(days=1):
        description = f"the same hours on the {len(baseline)} days before"
    elif length == timedelta(days=1):
        description = f"the {len(baseline)} days before"
    else:
        description = f"the {len(baseline)} periods of the same length before"
    context: dict[str, Any] = {
        "overview": _overview(inputs),
        "baseline": {
            "description": description,
            "windows": sum(triage.usable[1:]),
        },
        "investigate": [_item(i) for i in shown],
        "more": len(serious) - len(shown),
        "probably_nothing": triage.normal + [i.title for i in items if i.severity == "info"],
        "check_first": [{"title": i.title, "check": i.check[:1].upper() + i.check[1:], "link": i.list_link}
                        for i in shown[:3]],
    }
    return ReportData(title=f"Triage of {inputs.period.name}", context=context)


def _item(item: Item) -> dict[str, Any]:
    return {"kind": item.kind, "title": item.title, "severity": item.severity, "check": item.check,
            "detail": item.detail, "current": item.current, "usual": item.usual, "deviation": item.deviation,
            "list_link": item.list_link, "row_links": item.row_links}


def _overview(inputs: ReportInputs) -> dict[str, int]:
    src, conn = inputs.src, inputs.conn
    jobs, events = src.table("jobs"), src.table("events")
    job_rows = grouped(conn, src, "jobs", [inputs.span], where=[inputs.scope.rows(src, "jobs")],
                       measures={"count": COUNT, "failed": counted_if(jobs.c.status == "failed")})
    event_rows = grouped(conn, src, "events", [inputs.span], where=[inputs.scope.rows(src, "events")],
                         measures={"count": COUNT, "errors": counted_if(events.c.severity == "error"),
                                   "warnings": counted_if(events.c.severity == "warning")})
    thread_rows = grouped(conn, src, "threads", [inputs.span], where=[inputs.scope.rows(src, "threads")])
    return {
        "jobs": totals(job_rows, "count", 1)[0], "failed": totals(job_rows, "failed", 1)[0],
        "threads": totals(thread_rows, "count", 1)[0], "events": totals(event_rows, "count", 1)[0],
        "errors": totals(event_rows, "errors", 1)[0], "warnings": totals(event_rows, "warnings", 1)[0],
    }
