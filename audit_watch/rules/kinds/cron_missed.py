"""``cron_missed``: an enabled cron's latest expected run has no ``cron.fired``.

Expected runs and their fires come from :mod:`audit_watch.store.cron_runs` (one row
per run, counted in SQL); the value is the number of consecutive missed runs.

The statements reading the crons and their last fires are built once per rule;
the one counting fires per run is built per evaluation, as the runs (a JSON
parameter of :func:`~audit_watch.store.cron_runs.runs_table`) change with ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, bindparam, func, select
from sqlalchemy.sql.elements import ColumnElement

from audit_watch.rules.alert import Finding
from audit_watch.rules.kinds.base import EvalContext, Moments, RuleKind, sample_rows
from audit_watch.rules.model import CronMissedRule
from audit_watch.store.cron_runs import FIRED, fired_per_run, runs_or_skip
from audit_watch.store.source import AuditSource
from audit_watch.store.where import where_clause


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

    def fires_on_silence(self, rule: CronMissedRule) -> bool:
        return True                             # no cron.fired events arrive either

    def link_filters(self, rule: CronMissedRule, finding: Finding) -> list[tuple[str, Any]]:
        """The cron's ``cron.fired`` events (the rule's ``where`` filters crons, not events)."""
        return [("event_type", FIRED), ("metadata.cron_id", finding.group["cron_id"])]

    def find(self, rule: CronMissedRule, ctx: EvalContext) -> list[Finding]:
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
        last_fired = self._last_fired(rule, ctx, [c.id for c in missed])
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
        stmt = ctx.prepared(rule, (self.name, "crons"), lambda _moments: self._crons_statement(rule, ctx.src))
        return [CronRow(row.id, row.agent_id, row.name, row.schedule, row.timezone, row.created_at)
                for row in ctx.execute(stmt)]

    def _crons_statement(self, rule: CronMissedRule, src: AuditSource) -> Select[Any]:
        crons = src.table("crons")
        return select(
            crons.c.id, crons.c.agent_id, crons.c.name, crons.c.schedule, crons.c.timezone, crons.c.created_at
        ).where(crons.c.enabled.is_(True), where_clause(src, "crons", rule.where)).order_by(crons.c.id)

    def _runs(self, cron: CronRow, due_by: datetime, limit: int) -> list[datetime]:
        return runs_or_skip(cron.id, cron.schedule, cron.timezone, due_by, cron.created_at, limit)

    def _fired_counts(
        self, ctx: EvalContext, rule: CronMissedRule, runs: dict[str, list[datetime]]
    ) -> dict[tuple[str, datetime], int]:
        """{(cron id, expected run): cron.fired events within grace}, counted in SQL."""
        pairs = [(cid, run) for cid, cron_runs in runs.items() for run in cron_runs]
        if not pairs:
            return {}
        src = ctx.src
        per_run = fired_per_run(src, [(cid, run, run + rule.grace) for cid, run in pairs])
        counts: dict[tuple[str, datetime], int] = {}
        for row in ctx.conn.execute(select(per_run.c.cron_id, per_run.c.expected_at, per_run.c.fired)):
            expected = src.read_time(row.expected_at)
            if expected is not None:
                counts[(row.cron_id, expected)] = int(row.fired)
        return counts

    def _last_fired(self, rule: CronMissedRule, ctx: EvalContext, cron_ids: list[str]) -> dict[str, str]:
        src = ctx.src
        stmt = ctx.prepared(rule, (self.name, "last fired"), lambda moments: self._last_fired_statement(src, moments))
        rows = ctx.conn.execute(stmt.built, {**ctx.params(stmt), "cron_ids": cron_ids})
        found = {row.cron_id: src.read_time(row.last) for row in rows}
        return {cron_id: last.isoformat() for cron_id, last in found.items() if last is not None}

    def _last_fired_statement(self, src: AuditSource, moments: Moments) -> Select[Any]:
        """The last fire of each cron in the bound list ``cron_ids``."""
        events = src.table("events")
        cron_id = src.json_text(events.c["metadata"], "cron_id")
        return (
            select(cron_id.label("cron_id"), func.max(src.time_value(events.c.created_at)).label("last"))
            .where(
                events.c.event_type == FIRED,
                cron_id.in_(bindparam("cron_ids", expanding=True)),
                src.at_or_before(events.c.created_at, moments.now),
            )
            .group_by(cron_id)
        )

    def sample(self, rule: CronMissedRule, ctx: EvalContext, findings: list[Finding]) -> None:
        """The evidence: the cron's last ``cron.fired`` events (when it last ran)."""
        if not findings:
            return
        conditions = ctx.prepared(
            rule, (self.name, "sample conditions"), lambda moments: self._fired_by_now(ctx.src, moments)
        )
        renamed = [Finding(group={"metadata.cron_id": f.group["cron_id"]}, value=f.value) for f in findings]
        sample_rows(ctx, "events", ("metadata.cron_id",), conditions.built, renamed, limit=5,
                    params=ctx.params(conditions))
        for finding, sampled in zip(findings, renamed):
            finding.row_ids = sampled.row_ids

    def _fired_by_now(self, src: AuditSource, moments: Moments) -> ColumnElement[bool]:
        events = src.table("events")
        return and_(events.c.event_type == FIRED, src.at_or_before(events.c.created_at, moments.now))

    def list_range(self, rule: CronMissedRule, now: datetime) -> tuple[datetime, datetime]:
        return now - timedelta(days=7), now

