"""``absence``: a group seen in the ``lookback`` before the window has no row in it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, func, select

from audit_watch.rules.alert import Finding
from audit_watch.rules.kinds.base import EvalContext, Moments, RuleKind, group_columns, group_of
from audit_watch.rules.model import AbsenceRule
from audit_watch.store.source import AuditSource
from audit_watch.store.where import where_clause


class Absence(RuleKind):
    name = "absence"

    def fires_on_silence(self, rule: AbsenceRule) -> bool:
        return True

    def find(self, rule: AbsenceRule, ctx: EvalContext) -> list[Finding]:
        src, now = ctx.src, ctx.now
        stmt = ctx.prepared(rule, (self.name, "find"), lambda moments: self.statement(rule, src, moments))
        findings = []
        for row in ctx.execute(stmt):
            last_seen = src.read_time(row.last_seen)
            findings.append(
                Finding(
                    group=group_of(rule.group_by, row),
                    value=0,
                    threshold="== 0",
                    baseline=int(row.seen),
                    details={
                        "last_seen": last_seen.isoformat() if last_seen else None,
                        "silent_for_seconds": int((now - last_seen).total_seconds()) if last_seen else None,
                        "seen_in_lookback": int(row.seen),
                    },
                )
            )
        return findings

    def statement(self, rule: AbsenceRule, src: AuditSource, moments: Moments) -> Select[Any]:
        now = moments.now
        window_start = moments.ago(rule.window)
        lookback_start = moments.ago(rule.window + rule.lookback)
        time = src.time_column(rule.source)
        groups = group_columns(src, rule.source, rule.group_by)
        counted = (
            select(
                *groups,
                func.sum(case((src.flag_between(time, window_start, now), 1), else_=0)).label("current"),
                func.count().label("seen"),
                func.max(src.time_value(time)).label("last_seen"),
            )
            .where(where_clause(src, rule.source, rule.where), src.between(time, lookback_start, now))
            .group_by(*groups)
            .subquery()
        )
        return select(counted).where(counted.c.current == 0)

    def sample_range(self, rule: AbsenceRule, now: datetime) -> tuple[datetime, datetime]:
        # Nothing is in the window by definition: the evidence is the last rows seen.
        return now - rule.window - rule.lookback, now
