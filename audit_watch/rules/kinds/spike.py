"""``spike``: the window's count against the reference span right before it.

The reference count is scaled to the window's length (a 6 h reference for a
1 h window counts one sixth). ``up`` fires at ``current >= factor * reference``
and ``current >= min_current`` (so a zero reference needs ``min_current``, and
zero against zero never fires); ``down`` fires when the scaled reference is at
least ``min_reference`` and ``current <= reference / factor``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, Select, and_, case, cast, false, func, or_, select

from audit_watch.core.numbers import format_number
from audit_watch.rules.alert import Finding
from audit_watch.rules.kinds.base import EvalContext, Found, Moments, RuleKind, group_columns, group_of, most_severe
from audit_watch.rules.model import SpikeRule
from audit_watch.store.source import AuditSource
from audit_watch.store.where import where_clause


class Spike(RuleKind):
    name = "spike"

    def find(self, rule: SpikeRule, ctx: EvalContext) -> Found:
        stmt = ctx.prepared(rule, (self.name, "find"), lambda moments: self.statement(rule, ctx.src, moments))
        rows = ctx.execute(stmt).all()
        return Found.of(rows, lambda row: self._finding(rule, row))

    def _finding(self, rule: SpikeRule, row: Any) -> Finding:
        window_s = rule.window.total_seconds()
        reference_s = rule.reference_span.total_seconds()
        baseline = float(row.reference) * window_s / reference_s
        is_up = bool(row.is_up)
        threshold = (
            f">= {format_number(max(rule.factor * baseline, rule.min_current))}"
            if is_up
            else f"<= {format_number(baseline / rule.factor)}"
        )
        return Finding(
            group=group_of(rule.group_by, row),
            value=int(row.current),
            threshold=threshold,
            baseline=baseline,
            details={
                "direction": "up" if is_up else "down",
                "reference_count": int(row.reference),
                "reference_span_seconds": int(rule.reference_span.total_seconds()),
                "factor": rule.factor,
            },
        )

    def statement(self, rule: SpikeRule, src: AuditSource, moments: Moments) -> Select[Any]:
        now = moments.now
        window_start = moments.ago(rule.window)
        reference_start = moments.ago(rule.window + rule.reference_span)
        time = src.time_column(rule.source)
        groups = group_columns(src, rule.source, rule.group_by)
        counted = (
            select(
                *groups,
                func.sum(case((src.flag_between(time, window_start, now), 1), else_=0)).label("current"),
                func.sum(case((src.flag_between(time, reference_start, window_start), 1), else_=0)).label("reference"),
            )
            .where(where_clause(src, rule.source, rule.where), src.between(time, reference_start, now))
            .group_by(*groups)
            .subquery()
        )
        window_s = rule.window.total_seconds()
        reference_s = rule.reference_span.total_seconds()
        # Compared multiplied out (reference * window vs. x * reference span) rather than
        # through the scale factor: 49 rows over 49m scale to exactly 1 per minute, where
        # 49 * (60 / 2940) would be 0.9999999999999999 and miss min_reference: 1.
        current = cast(counted.c.current, Float)
        reference_w = cast(counted.c.reference, Float) * window_s
        up = and_(current * reference_s >= reference_w * rule.factor, counted.c.current >= rule.min_current)
        down = and_(
            reference_w >= rule.min_reference * reference_s,
            current * rule.factor * reference_s <= reference_w,
        )
        fires = {"up": up, "down": down, "both": or_(up, down)}.get(rule.direction, false())
        firing = select(counted, up.label("is_up")).where(fires)
        return most_severe(firing, rule, _steepest)

    def fires_on_silence(self, rule: SpikeRule) -> bool:
        return rule.direction in ("down", "both")

    def list_range(self, rule: SpikeRule, now: datetime) -> tuple[datetime, datetime]:
        return now - rule.window - rule.reference_span, now


def _steepest(groups: Any) -> list[Any]:
    """Spikes up first, the highest current count first; then drops, the largest
    reference first (the most activity gone)."""
    return [groups.c.is_up.desc(), case((groups.c.is_up, groups.c.current), else_=groups.c.reference).desc()]
