"""``new_value``: a value of ``field`` in the window that its group had not shown
in the ``lookback`` before the window. Each (group, new value) is one alert.

On PostgreSQL the statement reads as a person would write it: the window's rows
whose (group, value) has ``NOT EXISTS`` a row in the lookback, which the planner
runs as one hash anti join (the lookback's rows are hashed once, never grouped).
SQLite has no hash join: there the window and the lookback are grouped together
and a pair is new when its first row lies in the window. Both give the same pairs.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any
from typing import cast as type_cast

from sqlalchemy import Column, Select, String, Table, case, cast, exists, func, literal, select
from sqlalchemy.sql.elements import ColumnElement

from audit_watch.rules.alert import Finding
from audit_watch.rules.kinds.base import (
    EvalContext,
    Found,
    Moments,
    RuleKind,
    group_columns,
    group_of,
    most_severe,
    sample_rows,
    window_conditions,
)
from audit_watch.rules.model import NewValueRule
from audit_watch.store.source import AuditSource
from audit_watch.store.where import where_clause

# Stands for NULL in a group column when comparing groups: NULL = NULL is not true
# in SQL, but rows without a user are one group (as GROUP BY has them).
_NULL_GROUP = "\x01audit-watch:null\x01"


class NewValue(RuleKind):
    name = "new_value"

    def find(self, rule: NewValueRule, ctx: EvalContext) -> Found:
        src = ctx.src
        stmt = ctx.prepared(rule, (self.name, "find"), lambda moments: self.statement(rule, src, moments))

        def finding(row: Any) -> Finding:
            first_seen = src.read_time(row.first_seen)
            group = group_of(rule.group_by, row)
            group[rule.field] = row.new_value
            return Finding(
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

        return Found.of(ctx.execute(stmt).all(), finding)

    def statement(self, rule: NewValueRule, src: AuditSource, moments: Moments) -> Select[Any]:
        firing = self._not_seen_before(rule, src, moments) if src.dialect == "postgresql" else self._first_seen_in_window(
            rule, src, moments
        )
        # The busiest new value first (the most rows in the window), then the earliest.
        return most_severe(
            firing, rule, lambda g: [g.c.current.desc(), g.c.first_seen.asc()], keys=("new_value",)
        )

    def _not_seen_before(self, rule: NewValueRule, src: AuditSource, moments: Moments) -> Select[Any]:
        """The window's (group, value) pairs without a row in the lookback (anti join)."""
        window_start = moments.ago(rule.window)
        time = src.time_column(rule.source)
        value = src.column(rule.source, rule.field)
        groups = group_columns(src, rule.source, rule.group_by)
        # The same source with the rule's table aliased (an alias answers `.c` as its table does).
        seen = type_cast(Table, src.table(rule.source).alias("seen"))
        seen_src = dataclasses.replace(src, tables={**src.tables, rule.source: seen})
        seen_value = seen_src.column(rule.source, rule.field)
        same_group = [
            _null_safe(src.column(rule.source, name)) == _null_safe(seen_src.column(rule.source, name))
            for name in rule.group_by
        ]
        seen_before = exists().where(
            where_clause(seen_src, rule.source, rule.where),
            seen_src.window(rule.source, moments.ago(rule.window + rule.lookback), window_start),
            seen_value == value,
            *same_group,
        )
        return (
            select(
                *groups,
                value.label("new_value"),
                func.min(src.time_value(time)).label("first_seen"),
                func.count().label("current"),
            )
            .where(
                where_clause(src, rule.source, rule.where),
                src.window(rule.source, window_start, moments.now),
                value.is_not(None),
                ~seen_before,
            )
            .group_by(*groups, value)
        )

    def _first_seen_in_window(self, rule: NewValueRule, src: AuditSource, moments: Moments) -> Select[Any]:
        """The (group, value) pairs of window and lookback whose first row is in the window."""
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


def _null_safe(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """A group column for an equality that holds for two NULLs too, and that a hash
    join can still use (``IS NOT DISTINCT FROM`` cannot be hashed)."""
    if isinstance(column, Column) and not column.nullable:
        return column
    text_value = column if isinstance(column.type, String) else cast(column, String)
    return func.coalesce(text_value, literal(_NULL_GROUP, String))
