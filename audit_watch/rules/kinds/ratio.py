"""``ratio``: matching rows / rows of the denominator (``of``) in the window.

The numerator counts rows that match ``where`` among the denominator's rows, so
the ratio is a share (0..1): ``where: {status: failed}`` with
``of: {job_type: chat_reply}`` is the share of chat replies that failed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Float, Select, case, cast, func, select

from audit_watch.rules.alert import Finding
from audit_watch.rules.kinds.base import (
    EvalContext,
    Found,
    Moments,
    RuleKind,
    by_comparison,
    compare,
    group_columns,
    group_of,
    most_severe,
    sample_rows,
    window_conditions,
)
from audit_watch.rules.model import RatioRule
from audit_watch.store.source import AuditSource
from audit_watch.store.where import where_clause


class Ratio(RuleKind):
    name = "ratio"

    def find(self, rule: RatioRule, ctx: EvalContext) -> Found:
        stmt = ctx.prepared(rule, (self.name, "find"), lambda moments: self.statement(rule, ctx.src, moments))
        return Found.of(
            ctx.execute(stmt).all(),
            lambda row: Finding(
                group=group_of(rule.group_by, row),
                value=float(row.value),  # exact: rounding is for display only
                threshold=str(rule.ratio),
                details={"matching": int(row.matching), "total": int(row.total)},
            ),
        )

    def statement(self, rule: RatioRule, src: AuditSource, moments: Moments) -> Select[Any]:
        groups = group_columns(src, rule.source, rule.group_by)
        numerator_cond = where_clause(src, rule.source, rule.where)
        denominator_cond = where_clause(src, rule.source, rule.of)
        counted = (
            select(
                *groups,
                func.sum(case((numerator_cond, 1), else_=0)).label("matching"),
                func.count().label("total"),
            )
            .where(denominator_cond, src.window(rule.source, moments.ago(rule.window), moments.now))
            .group_by(*groups)
            .subquery()
        )
        ratio = cast(counted.c.matching, Float) / counted.c.total
        firing = select(counted, ratio.label("value")).where(
            counted.c.total >= rule.min_total, compare(ratio, rule.ratio)
        )
        return most_severe(firing, rule, lambda groups: by_comparison(groups.c.value, rule.ratio))

    def sample(self, rule: RatioRule, ctx: EvalContext, findings: list[Finding]) -> None:
        if not findings:
            return
        # The evidence is the numerator's rows: matching `where` among the denominator's.
        conditions = window_conditions(ctx, rule, "where and of", rule.where + rule.of, rule.window, timedelta(0))
        sample_rows(ctx, rule.source, rule.group_by, conditions.built, findings, params=ctx.params(conditions))
