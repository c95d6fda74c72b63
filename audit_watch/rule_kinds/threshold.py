"""``threshold``: the count of matching rows in the window meets ``threshold``."""

from __future__ import annotations

from sqlalchemy import func, select

from audit_watch.alert import Finding
from audit_watch.rule_kinds.base import EvalContext, RuleKind, compare, group_columns, group_of
from audit_watch.rule_model import ThresholdRule


class Threshold(RuleKind):
    name = "threshold"

    def find(self, rule: ThresholdRule, ctx: EvalContext) -> list[Finding]:
        src = ctx.src
        groups = group_columns(src, rule.source, rule.group_by)
        counted = (
            select(*groups, func.count().label("value"))
            .where(
                src.conditions(rule.source, rule.where),
                src.window(rule.source, ctx.window_start(rule), ctx.now),
            )
            .group_by(*groups)
            .subquery()
        )
        stmt = select(counted).where(compare(counted.c.value, rule.threshold))
        return [
            Finding(group=group_of(rule.group_by, row), value=row.value, threshold=str(rule.threshold))
            for row in ctx.conn.execute(stmt)
        ]
