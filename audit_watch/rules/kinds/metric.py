"""``metric``: an aggregate of a column against a threshold or its own baseline.

Rows are put in buckets of the window's length counted back from ``now``
(bucket 0 is the window, 1 the one before, ...) and aggregated per group and
bucket in SQL. With ``baseline`` the current value is compared with the mean of
the buckets before it; a bucket without rows is missing, not zero, so a new or
part-time group is judged by the periods it was active in. A group without any
baseline bucket is skipped unless ``min_value`` is set and met.

Without ``group_by`` there is one group, and the count of an empty window is 0 (an
aggregate without GROUP BY always gives one row); ``sum``, ``avg``, ``min``, ``max``
and ``p95`` of nothing are NULL and never fire.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Select, and_, case, cast, func, literal, or_, select
from sqlalchemy.sql.elements import ColumnElement

from audit_watch.core.numbers import format_number
from audit_watch.rules.alert import Finding
from audit_watch.rules.kinds.base import (
    EvalContext,
    Found,
    Moments,
    Prepared,
    RuleKind,
    by_comparison,
    compare,
    group_columns,
    group_of,
    most_severe,
)
from audit_watch.rules.model import MetricRule
from audit_watch.store.source import AuditSource
from audit_watch.store.where import where_clause


def bucket_index(
    src: AuditSource, time: ColumnElement[Any], rule: MetricRule, moments: Moments, periods: int
) -> ColumnElement[Any]:
    """0 for the window, k for the k-th window before it (exact half-open bounds)."""
    if periods == 0:
        return literal(0)  # the rows are already limited to the window
    whens = [
        (src.flag_between(time, moments.ago(rule.window * (k + 1)), moments.ago(rule.window * k)), k)
        for k in range(periods + 1)
    ]
    return case(*whens, else_=None)


def aggregate_per_bucket(src: AuditSource, rows: Any, group_count: int, aggregate: str,
                         by_bucket: bool = True) -> Select[Any]:
    """One row per (group, bucket), or per group, with the aggregate as ``value``."""
    keys = [rows.c[f"g{i}"] for i in range(group_count)] + ([rows.c.bucket] if by_bucket else [])
    if aggregate == "p95":
        return _p95_per_bucket(src, rows, keys)
    function = {
        "count": func.count(rows.c.v),
        "sum": func.sum(rows.c.v),
        "avg": func.avg(cast(rows.c.v, Float)),
        "min": func.min(rows.c.v),
        "max": func.max(rows.c.v),
    }[aggregate]
    return select(*keys, function.label("value")).group_by(*keys)


def _p95_per_bucket(src: AuditSource, rows: Any, keys: list[Any]) -> Select[Any]:
    """Nearest-rank 95th percentile, identical on both backends."""
    if src.dialect == "postgresql":
        return select(*keys, func.percentile_disc(0.95).within_group(rows.c.v).label("value")).group_by(*keys)
    partition = keys or None
    ranked = select(
        *keys,
        rows.c.v,
        func.row_number().over(partition_by=partition, order_by=rows.c.v).label("rn"),
        func.count().over(partition_by=partition).label("n"),
    ).subquery()
    # ceil(0.95 * n) in integer arithmetic
    return select(*(ranked.c[k.name] for k in keys), ranked.c.v.label("value")).where(
        ranked.c.rn == (ranked.c.n * 95 + 99) // 100
    )


class Metric(RuleKind):
    name = "metric"

    def find(self, rule: MetricRule, ctx: EvalContext) -> Found:
        stmt = ctx.prepared(rule, (self.name, "find"), lambda moments: self.statement(rule, ctx.src, moments))
        if rule.threshold is not None:
            threshold = str(rule.threshold)
            return Found.of(
                ctx.execute(stmt).all(),
                lambda row: Finding(group=group_of(rule.group_by, row), value=_exact(row.value), threshold=threshold),
            )
        return self._baseline_findings(rule, ctx, stmt)

    def fires_on_silence(self, rule: MetricRule) -> bool:
        # A threshold such as "< 100" holds on no rows; a baseline compares with the past.
        return rule.threshold is not None and rule.threshold.holds(0)

    def statement(self, rule: MetricRule, src: AuditSource, moments: Moments) -> Select[Any]:
        periods = rule.baseline.periods if rule.baseline else 0
        time = src.time_column(rule.source)
        groups = group_columns(src, rule.source, rule.group_by)
        # count counts rows where the field is set (a text JSON key too); the other
        # aggregates need numbers (a JSON key counts only where it holds a number).
        if rule.aggregate == "count":
            value = src.column(rule.source, rule.field)
        else:
            value = src.numeric_column(rule.source, rule.field)
        rows = (
            select(*groups, bucket_index(src, time, rule, moments, periods).label("bucket"), value.label("v"))
            .where(
                where_clause(src, rule.source, rule.where),
                src.between(time, moments.ago(rule.window * (periods + 1)), moments.now),
                value.is_not(None),
            )
            .subquery()
        )
        if rule.threshold is not None:
            # The window only (periods == 0): one aggregate per group, no buckets.
            per_group = aggregate_per_bucket(src, rows, len(groups), rule.aggregate, by_bucket=False).subquery()
            gkeys = [per_group.c[f"g{i}"] for i in range(len(groups))]
            threshold = rule.threshold
            firing = select(*gkeys, per_group.c.value).where(compare(per_group.c.value, threshold))
            return most_severe(firing, rule, lambda groups: by_comparison(groups.c.value, threshold))
        per_bucket = aggregate_per_bucket(src, rows, len(groups), rule.aggregate).subquery()
        gkeys = [per_bucket.c[f"g{i}"] for i in range(len(groups))]
        return self._baseline_statement(rule, per_bucket, gkeys)

    def _baseline_statement(self, rule: MetricRule, per_bucket: Any, gkeys: list[Any]) -> Select[Any]:
        assert rule.baseline is not None
        current: ColumnElement[Any] = func.max(case((per_bucket.c.bucket == 0, per_bucket.c.value)))
        if rule.aggregate == "count" and not gkeys:
            current = func.coalesce(current, 0)  # the one group's count of an empty window
        summary = (
            select(
                *gkeys,
                current.label("current"),
                func.sum(case((per_bucket.c.bucket > 0, cast(per_bucket.c.value, Float)))).label("baseline_sum"),
                func.count(case((per_bucket.c.bucket > 0, 1))).label("periods_seen"),
            )
            .group_by(*gkeys)
            .subquery()
        )
        # current > factor * (sum / periods), multiplied out: exact for whole numbers,
        # where a mean of 1, 1 and 2 (4/3) times 3 need not give 4 in floating point.
        against_baseline = and_(
            summary.c.periods_seen > 0,
            summary.c.current * summary.c.periods_seen > summary.c.baseline_sum * rule.baseline.factor,
        )
        fires = against_baseline
        if rule.min_value is not None:
            fires = or_(against_baseline, and_(summary.c.periods_seen == 0, summary.c.current >= rule.min_value))
        firing = select(summary).where(summary.c.current.is_not(None), fires)
        return most_severe(firing, rule, _furthest_above_baseline)

    def _baseline_findings(self, rule: MetricRule, ctx: EvalContext, stmt: Prepared[Select[Any]]) -> Found:
        return Found.of(ctx.execute(stmt).all(), lambda row: self._baseline_finding(rule, row))

    def _baseline_finding(self, rule: MetricRule, row: Any) -> Finding:
        assert rule.baseline is not None
        seen = int(row.periods_seen)
        baseline = float(row.baseline_sum) / seen if seen else None
        threshold = (
            f"> {format_number(baseline * rule.baseline.factor)}" if baseline is not None
            else f">= {format_number(rule.min_value)}"
        )
        return Finding(
            group=group_of(rule.group_by, row),
            value=_exact(row.current),
            threshold=threshold,
            baseline=baseline,
            details={
                "aggregate": rule.aggregate,
                "field": rule.field,
                "periods_seen": seen,
                "periods": rule.baseline.periods,
                "factor": rule.baseline.factor,
                "ratio": float(row.current) / baseline if baseline else None,
            },
        )


def _furthest_above_baseline(groups: Any) -> list[Any]:
    """The largest multiple of its baseline first; groups without a baseline (fired
    by ``min_value``) after them, the largest value first."""
    ratio = cast(groups.c.current, Float) * groups.c.periods_seen / func.nullif(groups.c.baseline_sum, 0)
    return [ratio.desc().nulls_last(), groups.c.current.desc()]


def _exact(value: Any) -> float:
    """The aggregate as compared (whole numbers as ints; rounding is for display only)."""
    value = float(value)
    return int(value) if value.is_integer() else value
