"""``new_value``: a value of ``field`` in the window that its group had not shown
in the ``lookback`` before the window. Each (group, new value) is one alert."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Select, case, func, select

from audit_watch.rules.alert import Finding
from audit_watch.rules.kinds.base import (
    EvalContext,
    Moments,
    RuleKind,
    group_columns,
    group_of,
    sample_rows,
    window_conditions,
)
from audit_watch.rules.model import NewValueRule
from audit_watch.store.source import AuditSource
from audit_watch.store.where import where_clause


class NewValue(RuleKind):
    name = "new_value"

    def find(self, rule: NewValueRule, ctx: EvalContext) -> list[Finding]:
        src = ctx.src
        stmt = ctx.prepared(rule, (self.name, "find"), lambda moments: self.statement(rule, src, moments))
        findings = []
        for row in ctx.execute(stmt):
            first_seen = src.read_time(row.first_seen)
            group = group_of(rule.group_by, row)
            group[rule.field] = row.new_value
            findings.append(
                Finding(
                    group=group,
                    value=int(row.current),
                    threshold="new",
                    details={
                        "field": rule.field,
                        "new_value": row.new_value,
                        "first_seen": first_seen.isoformat() if first_seen else None,
                        "lookback_seconds": int(rule.lookback.total_seconds()),
                    },
                )
            )
        return findings

    def statement(self, rule: NewValueRule, src: AuditSource, moments: Moments) -> Select[Any]:
        now = moments.now
        window_start = moments.ago(rule.window)
        time = src.time_column(rule.source)
        value = src.column(rule.source, rule.field)
        groups = group_columns(src, rule.source, rule.group_by)
        seen = (
            select(
                *groups,
                value.label("new_value"),
                func.min(src.time_value(time)).label("first_seen"),
                func.sum(case((src.flag_between(time, window_start, now), 1), else_=0)).label("current"),
            )
            .where(
                where_clause(src, rule.source, rule.where),
                src.between(time, moments.ago(rule.window + rule.lookback), now),
                value.is_not(None),
            )
            .group_by(*groups, value)
            .subquery()
        )
        return select(seen).where(seen.c.first_seen > src.time_param(window_start))

    def sample(self, rule: NewValueRule, ctx: EvalContext, findings: list[Finding]) -> None:
        if not findings:
            return
        conditions = window_conditions(ctx, rule, "where", rule.where, rule.window, timedelta(0))
        sample_rows(
            ctx, rule.source, rule.group_by + (rule.field,), conditions.built, findings, params=ctx.params(conditions)
        )
