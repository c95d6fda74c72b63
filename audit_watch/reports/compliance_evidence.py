"""The evidence of a compliance summary: every row a statement rests on, as CSV.

One CSV line per row (threads, failed jobs, sign-ins, failed sign-ins, sensitive
actions, changes to the subject's account), each with a link to the row in
Auxot. The rows are fetched with the same conditions the summary's counts use,
so the counts and the evidence agree by construction (and the tests check it).

Job prompts and responses are never read. Free text (thread names, errors,
descriptions) is folded to one line, and cells that a spreadsheet would run as a
formula (``=``, ``+``, ``-``, ``@``) are prefixed with an apostrophe.
"""

from __future__ import annotations

import bisect
import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.sql.elements import ColumnElement

from audit_watch.reports.inputs import ReportInputs
from audit_watch.reports.queries import SENSITIVE_EVENT_TYPES, Span, shorten
from audit_watch.store.source import AuditSource

SIGN_IN, FAILED_SIGN_IN = "auth.login", "auth.login_failed"
SECTIONS = ("thread", "failed_job", "sign_in", "failed_sign_in", "sensitive_action", "account_change")
CSV_COLUMNS = ("section", "table", "id", "time_utc", "off_hours", "person", "email", "agent", "kind", "detail",
               "link")


@dataclass(frozen=True)
class EvidenceRow:
    section: str
    table: str
    id: str
    at: datetime
    user_id: str | None
    agent_id: str | None
    kind: str                    # status, event type or thread source
    detail: str | None           # thread name, error, description (untrusted)
    ip: str | None = None
    target_user_id: str | None = None


def event_sections(event_type: str) -> str:
    if event_type == SIGN_IN:
        return "sign_in"
    if event_type == FAILED_SIGN_IN:
        return "failed_sign_in"
    return "sensitive_action"


def fetch_evidence(inputs: ReportInputs, span: Span) -> list[EvidenceRow]:
    """Every row of the summary in ``span``, oldest first (ties by id)."""
    src, conn, scope = inputs.src, inputs.conn, inputs.scope
    threads, jobs, events = src.table("threads"), src.table("jobs"), src.table("events")
    rows: list[EvidenceRow] = []
    tv = src.time_value(threads.c.last_activity_at)
    for r in conn.execute(
        select(threads.c.id, tv.label("at"), threads.c.user_id, threads.c.agent_id, threads.c.source, threads.c.name)
        .where(scope.rows(src, "threads", people=True), src.between(threads.c.last_activity_at, *span))
    ):
        rows.append(EvidenceRow("thread", "threads", r.id, _at(src, r.at), r.user_id, r.agent_id, r.source,
                                shorten(r.name, 200)))
    tv = src.time_value(jobs.c.created_at)
    for r in conn.execute(
        select(jobs.c.id, tv.label("at"), jobs.c.user_id, jobs.c.agent_id, jobs.c.job_type, jobs.c.error)
        .where(scope.rows(src, "jobs", people=True), jobs.c.status == "failed", src.between(jobs.c.created_at, *span))
    ):
        rows.append(EvidenceRow("failed_job", "jobs", r.id, _at(src, r.at), r.user_id, r.agent_id,
                                r.job_type, shorten(r.error, 300)))
    for section, where in (
        (None, [scope.rows(src, "events", people=True), events.c.event_type.in_(acted_types())]),
        ("account_change", account_change_conditions(inputs)),
    ):
        for r in conn.execute(_event_select(inputs).where(src.between(events.c.created_at, *span), *where)):
            rows.append(EvidenceRow(section or event_sections(r.event_type), "events", r.id, _at(src, r.at),
                                    r.user_id, r.agent_id, r.event_type, shorten(r.description, 300),
                                    ip=r.ip, target_user_id=r.target))
    rows.sort(key=lambda row: (row.at, row.id))
    return rows


def _at(src: AuditSource, value: Any) -> datetime:
    moment = src.read_time(value)
    assert moment is not None, "a NOT NULL time column returned NULL"
    return moment


def acted_types() -> list[str]:
    """Event types counted as the subject's own actions."""
    return [SIGN_IN, FAILED_SIGN_IN, *SENSITIVE_EVENT_TYPES]


def account_change_conditions(inputs: ReportInputs) -> list[ColumnElement[bool]]:
    """Sensitive actions of *others* on the subject's accounts (a role change of theirs).

    Actions by the subject themselves are already their sensitive actions: each
    row is evidence once.
    """
    src, scope = inputs.src, inputs.scope
    events = src.table("events")
    target = src.json_text(events.c["metadata"], "target_user_id")
    return [
        events.c.event_type.in_(list(SENSITIVE_EVENT_TYPES)),
        target.in_(scope.user_ids),
        or_(events.c.user_id.is_(None), events.c.user_id.not_in(scope.user_ids)),
    ]


def _event_select(inputs: ReportInputs) -> Any:
    src = inputs.src
    events = src.table("events")
    return select(
        events.c.id, src.time_value(events.c.created_at).label("at"), events.c.user_id, events.c.agent_id,
        events.c.event_type, events.c.description,
        src.json_text(events.c["metadata"], "ip").label("ip"),
        src.json_text(events.c["metadata"], "target_user_id").label("target"),
    )


class OffHours:
    """Is a moment in one of the off-hours spans ``(start, end]``? (bisect, no SQL)."""

    def __init__(self, spans: Sequence[tuple[datetime, datetime]]) -> None:
        self.spans = sorted(spans)
        self.starts = [lo for lo, _ in self.spans]

    def __contains__(self, moment: datetime) -> bool:
        index = bisect.bisect_left(self.starts, moment) - 1
        return index >= 0 and self.spans[index][0] < moment <= self.spans[index][1]


def _cell(value: Any) -> str:
    text = "" if value is None else " ".join(str(value).split())
    # A spreadsheet would run these as formulas (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def evidence_csv(rows: Iterable[EvidenceRow], inputs: ReportInputs, people: dict[str, tuple[str, str]],
                 agents: dict[str, str], off_hours: OffHours) -> str:
    """The CSV text: a header, then one line per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        person = people.get(str(row.user_id), (None, None)) if row.user_id else (None, None)
        writer.writerow([
            row.section, row.table, _cell(row.id), row.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "yes" if row.at in off_hours else "no", _cell(person[0]), _cell(person[1]),
            _cell(agents.get(str(row.agent_id)) if row.agent_id else None), _cell(row.kind),
            _cell(f"{row.detail} (from {row.ip})" if row.ip and row.section in ("sign_in", "failed_sign_in")
                  else row.detail),
            inputs.row_link(row.table, row.id),
        ])
    return buffer.getvalue()
