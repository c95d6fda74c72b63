"""``threshold``: the count of matching rows in the window meets ``threshold``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select

from audit_watch.rules.alert import Finding
from audit_watch.rules.kinds.base import EvalContext, Moments, RuleKind, compare, group_columns, group_of
from audit_watch.rules.model import ThresholdRule
from audit_watch.store.source import AuditSource
from audit_watch.store.where import where_clause


class Threshold(RuleKind):
    name = "threshold"

    def find(self, rule: ThresholdRule, ctx: EvalContext) -> list[Finding]:
        stmt = ctx.prepared(rule, (self.name, "find"), lambda moments: self.statement(rule, ctx.src, moments))
        return [
            Finding(group=group_of(rule.group_by, row), value=row.value, threshold=str(rule.threshold))
            for row in ctx.execute(stmt)
        ]

    def fires_on_silence(self, rule: ThresholdRule) -> bool:
        return rule.threshold.holds(0)          # "fewer than N" holds on no rows

    def statement(self, rule: ThresholdRule, src: AuditSource, moments: Moments) -> Select[Any]:
        groups = group_columns(src, rule.source, rule.group_by)
        counted = (
            select(*groups, func.count().label("value"))
            .where(
                where_clause(src, rule.source, rule.where),
                src.window(rule.source, moments.ago(rule.window), moments.now),
            )
            .group_by(*groups)
            .subquery()
        )
        return select(counted).where(compare(counted.c.value, rule.threshold))
