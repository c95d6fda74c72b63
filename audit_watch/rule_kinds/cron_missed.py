"""``cron_missed``: an enabled cron's latest expected run has no ``cron.fired``.

Expected runs come from each cron's own schedule in its own time zone (cronsim:
a run in the hour repeated when clocks go back counts once, a run in the hour
skipped when they go forward happens right after the gap, as cron does it).
The matching of runs to ``cron.fired`` events is a join aggregated in SQL, one
row per expected run; the value is the number of consecutive missed runs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError
from sqlalchemy import DateTime, String, and_, func, select, text
from sqlalchemy.sql.elements import ColumnElement

from audit_watch.alert import Finding
from audit_watch.rule_kinds.base import EvalContext, RuleKind, sample_rows
from audit_watch.rule_model import CronMissedRule
from audit_watch.schema import as_utc
from audit_watch.source import AuditSource

log = logging.getLogger(__name__)
FIRED = "cron.fired"


def expected_runs(schedule: str, tz_name: str, until: datetime, since: datetime, limit: int) -> list[datetime]:
    """Expected run times (UTC, newest first) with ``since <= t <= until``."""
    tz = ZoneInfo(tz_name)
    start = (as_utc(until).replace(microsecond=0) + timedelta(seconds=1)).astimezone(tz)
    runs: list[datetime] = []
    for moment in CronSim(schedule, start, reverse=True):
        moment = moment.astimezone(timezone.utc)
        if moment < since or len(runs) >= limit:
            break
        runs.append(moment)
    return runs


@dataclass
class CronRow:
    id: str
    agent_id: str
    name: str
    schedule: str
    timezone: str
    created_at: datetime


class CronMissed(RuleKind):
    name = "cron_missed"

    def find(self, rule: CronMissedRule, ctx: EvalContext) -> list[Finding]:
        src = ctx.src
        due_by = ctx.now - rule.grace
        crons = self._crons(rule, ctx)
        # Phase 1: only each cron's latest run. Phase 2: the history of the ones missed.
        latest = {c.id: self._runs(c, due_by, 1) for c in crons}
        fired = self._fired_counts(ctx, rule, {cid: runs for cid, runs in latest.items() if runs})
        missed = [c for c in crons if latest[c.id] and not fired.get((c.id, latest[c.id][0]))]
        if not missed:
            return []
        history = {c.id: self._runs(c, due_by, rule.max_runs) for c in missed}
        fired = self._fired_counts(ctx, rule, history)
        last_fired = self._last_fired(ctx, [c.id for c in missed])
        findings = []
        for cron in missed:
            runs = history[cron.id]
            streak = 0
            for run in runs:
                if fired.get((cron.id, run)):
                    break
                streak += 1
            if streak == 0:
                continue
            findings.append(
                Finding(
                    group={"cron_id": cron.id},
                    value=streak,
                    threshold=">= 1",
                    details={
                        "cron_name": cron.name,
                        "agent_id": cron.agent_id,
                        "schedule": cron.schedule,
                        "timezone": cron.timezone,
                        "expected_at": runs[0].isoformat(),
                        "missed_runs": [r.isoformat() for r in runs[:streak][:10]],
                        "at_least": streak == rule.max_runs,
                        "last_fired": last_fired.get(cron.id),
                        "grace_seconds": int(rule.grace.total_seconds()),
                    },
                    row_source="events",
                )
            )
        return findings

    def _crons(self, rule: CronMissedRule, ctx: EvalContext) -> list[CronRow]:
        crons = ctx.src.table("crons")
        stmt = select(
            crons.c.id, crons.c.agent_id, crons.c.name, crons.c.schedule, crons.c.timezone, crons.c.created_at
        ).where(crons.c.enabled.is_(True), ctx.src.conditions("crons", rule.where)).order_by(crons.c.id)
        return [CronRow(*row) for row in ctx.conn.execute(stmt)]

    def _runs(self, cron: CronRow, due_by: datetime, limit: int) -> list[datetime]:
        try:
            return expected_runs(cron.schedule, cron.timezone or "UTC", due_by, cron.created_at, limit)
        except (CronSimError, ValueError, KeyError) as exc:
            log.warning("cron %s (%s) has an unusable schedule %r / time zone %r: %s",
                        cron.id, cron.name, cron.schedule, cron.timezone, exc)
            return []

    def _fired_counts(
        self, ctx: EvalContext, rule: CronMissedRule, runs: dict[str, list[datetime]]
    ) -> dict[tuple[str, datetime], int]:
        """{(cron id, expected run): cron.fired events within grace}, counted in SQL."""
        pairs = [(cid, run) for cid, cron_runs in runs.items() for run in cron_runs]
        if not pairs:
            return {}
        src = ctx.src
        expected = _runs_table(src, [(cid, run, run + rule.grace) for cid, run in pairs])
        events = src.table("events")
        fired_time = src.time_value(events.c.created_at)
        join_on = and_(
            events.c.event_type == FIRED,
            src.json_text(events.c["metadata"], "cron_id") == expected.c.cron_id,
            fired_time >= expected.c.expected_at,
            fired_time <= expected.c.deadline,
            *_coarse_range(src, events.c.created_at, expected),
        )
        stmt = (
            select(expected.c.cron_id, expected.c.expected_at, func.count(events.c.id).label("fired"))
            .select_from(expected.outerjoin(events, join_on))
            .group_by(expected.c.cron_id, expected.c.expected_at)
        )
        counts = {}
        for row in ctx.conn.execute(stmt):
            counts[(row.cron_id, src.read_time(row.expected_at))] = int(row.fired)
        return counts

    def _last_fired(self, ctx: EvalContext, cron_ids: list[str]) -> dict[str, str]:
        src = ctx.src
        events = src.table("events")
        cron_id = src.json_text(events.c["metadata"], "cron_id")
        stmt = (
            select(cron_id.label("cron_id"), func.max(src.time_value(events.c.created_at)).label("last"))
            .where(events.c.event_type == FIRED, cron_id.in_(cron_ids), src.at_or_before(events.c.created_at, ctx.now))
            .group_by(cron_id)
        )
        return {row.cron_id: src.read_time(row.last).isoformat() for row in ctx.conn.execute(stmt)}

    def sample(self, rule: CronMissedRule, ctx: EvalContext, findings: list[Finding]) -> None:
        """The evidence: the cron's last ``cron.fired`` events (when it last ran)."""
        src = ctx.src
        events = src.table("events")
        conditions = and_(events.c.event_type == FIRED, src.at_or_before(events.c.created_at, ctx.now))
        renamed = [Finding(group={"metadata.cron_id": f.group["cron_id"]}, value=f.value) for f in findings]
        sample_rows(ctx, "events", ("metadata.cron_id",), conditions, renamed, limit=5)
        for finding, sampled in zip(findings, renamed):
            finding.row_ids = sampled.row_ids

    def list_range(self, rule: CronMissedRule, now: datetime) -> tuple[datetime, datetime]:
        return now - timedelta(days=7), now


def _runs_table(src: AuditSource, runs: list[tuple[str, datetime, datetime]]) -> Any:
    """The expected runs as a derived table from one bound JSON parameter."""
    if src.dialect == "postgresql":
        payload = json.dumps([{"c": c, "e": e.isoformat(), "d": d.isoformat()} for c, e, d in runs])
        return (
            text(
                "SELECT r.c AS cron_id, r.e AS expected_at, r.d AS deadline "
                "FROM jsonb_to_recordset(CAST(:runs AS jsonb)) AS r(c text, e timestamptz, d timestamptz)"
            )
            .bindparams(runs=payload)
            .columns(cron_id=String, expected_at=DateTime(timezone=True), deadline=DateTime(timezone=True))
            .subquery("expected")
        )
    fmt = "%Y-%m-%d %H:%M:%S.000"
    payload = json.dumps([{"c": c, "e": e.strftime(fmt), "d": d.strftime(fmt)} for c, e, d in runs])
    return (
        text(
            "SELECT json_extract(value, '$.c') AS cron_id, json_extract(value, '$.e') AS expected_at, "
            "json_extract(value, '$.d') AS deadline FROM json_each(:runs)"
        )
        .bindparams(runs=payload)
        .columns(cron_id=String, expected_at=String, deadline=String)
        .subquery("expected")
    )


def _coarse_range(src: AuditSource, column: ColumnElement[Any], expected: Any) -> list[ColumnElement[bool]]:
    """On SQLite, a date range on the raw column so the (event_type, created_at) index helps."""
    if src.dialect != "sqlite":
        return []
    return [
        column >= func.date(expected.c.expected_at, "-1 day"),
        column < func.date(expected.c.deadline, "+2 day"),
    ]
