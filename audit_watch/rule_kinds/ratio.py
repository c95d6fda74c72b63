"""``ratio``: matching rows / rows of the denominator (``of``) in the window."""

from __future__ import annotations

from sqlalchemy import Float, case, cast, func, or_, select, true

from audit_watch.alert import Finding
from audit_watch.rule_kinds.base import EvalContext, RuleKind, compare, group_columns, group_of
from audit_watch.rule_model import RatioRule


class Ratio(RuleKind):
    name = "ratio"

    def find(self, rule: RatioRule, ctx: EvalContext) -> list[Finding]:
        src = ctx.src
        groups = group_columns(src, rule.source, rule.group_by)
        numerator_cond = src.conditions(rule.source, rule.where)
        denominator_cond = src.conditions(rule.source, rule.of) if rule.of else true()
        rows_of_interest = or_(numerator_cond, denominator_cond) if rule.of else true()
        counted = (
            select(
                *groups,
                func.sum(case((numerator_cond, 1), else_=0)).label("matching"),
                func.sum(case((denominator_cond, 1), else_=0)).label("total"),
            )
            .where(rows_of_interest, src.window(rule.source, ctx.window_start(rule), ctx.now))
            .group_by(*groups)
            .subquery()
        )
        ratio = cast(counted.c.matching, Float) / counted.c.total
        stmt = select(counted, ratio.label("value")).where(
            counted.c.total >= rule.min_total, compare(ratio, rule.ratio)
        )
        return [
            Finding(
                group=group_of(rule.group_by, row),
                value=round(float(row.value), 4),
                threshold=str(rule.ratio),
                details={"matching": int(row.matching), "total": int(row.total)},
            )
            for row in ctx.conn.execute(stmt)
        ]
