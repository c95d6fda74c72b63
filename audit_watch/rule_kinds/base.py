"""What every rule kind shares: the evaluation context, group columns, row samples.

A kind computes its findings with one SQL statement that aggregates in the
database and returns only the groups that fire. The sample of row ids (at most
20 per group) is a second, small query over the firing groups only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, literal, or_, select, union_all
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.elements import ColumnElement

from audit_watch.alert import Finding
from audit_watch.rule_model import Comparison, RuleBase
from audit_watch.source import AuditSource

MAX_SAMPLE_ROWS = 20
MAX_SAMPLED_GROUPS = 200


@dataclass
class EvalContext:
    src: AuditSource
    conn: Connection
    now: datetime

    def window_start(self, rule: RuleBase) -> datetime:
        return self.now - rule.window


def group_columns(src: AuditSource, source: str, group_by: tuple[str, ...]) -> list[ColumnElement[Any]]:
    """The group_by columns labelled ``g0, g1, ...`` (names with dots are not labels)."""
    return [src.column(source, name).label(f"g{i}") for i, name in enumerate(group_by)]


def group_of(group_by: tuple[str, ...], row: Row[Any]) -> dict[str, Any]:
    mapping = row._mapping
    return {name: mapping[f"g{i}"] for i, name in enumerate(group_by)}


def compare(expr: ColumnElement[Any], comparison: Comparison) -> ColumnElement[bool]:
    value = comparison.value
    return {
        ">": expr > value,
        ">=": expr >= value,
        "<": expr < value,
        "<=": expr <= value,
        "==": expr == value,
    }[comparison.op]


def group_filter(
    src: AuditSource, source: str, group_by: tuple[str, ...], groups: list[dict[str, Any]]
) -> ColumnElement[bool]:
    """Rows belonging to any of ``groups`` (NULL-safe)."""
    if not group_by:
        return and_(True)
    exprs = [src.column(source, name) for name in group_by]
    if len(group_by) == 1 and all(g[group_by[0]] is not None for g in groups):
        return exprs[0].in_([g[group_by[0]] for g in groups])
    clauses = []
    for group in groups:
        parts = [
            expr.is_(None) if group[name] is None else expr == group[name]
            for expr, name in zip(exprs, group_by)
        ]
        clauses.append(and_(*parts))
    return or_(*clauses)


def sample_rows(
    ctx: EvalContext,
    source: str,
    group_by: tuple[str, ...],
    conditions: ColumnElement[bool],
    findings: list[Finding],
    limit: int = MAX_SAMPLE_ROWS,
) -> None:
    """Fill ``finding.row_ids`` with the newest matching rows of each finding's group.

    One statement: per group a ``... ORDER BY time DESC LIMIT n`` (an index scan
    on (group column, time) that stops after n rows), glued with UNION ALL. A
    window function over all of a group's rows would sort a whole day of rows
    for a token-budget alert just to keep 20.
    """
    if not findings:
        return
    src = ctx.src
    table = src.table(source)
    sampled = findings[:MAX_SAMPLED_GROUPS]
    # The raw column orders by the index; on SQLite that is the stored text, which
    # sorts as time for the store's (single) timestamp format.
    newest_first = (src.time_column(source).desc(), table.c.id.desc())
    parts = [
        select(table.c.id.label("row_id"), literal(index).label("group_index"))
        .where(conditions, group_filter(src, source, group_by, [finding.group]))
        .order_by(*newest_first)
        .limit(limit)
        .subquery()
        .select()
        for index, finding in enumerate(sampled)
    ]
    stmt = parts[0] if len(parts) == 1 else union_all(*parts)
    for row in ctx.conn.execute(stmt):
        sampled[row.group_index].row_ids.append(str(row.row_id))


class RuleKind(ABC):
    """One kind of rule: compute findings in SQL, then sample their rows."""

    name: str

    @abstractmethod
    def find(self, rule: Any, ctx: EvalContext) -> list[Finding]:
        """The groups that fire at ``ctx.now``, with their values."""

    def sample_range(self, rule: Any, now: datetime) -> tuple[datetime, datetime]:
        """Where the evidence rows of a finding lie (by default: the window)."""
        return now - rule.window, now

    def sample(self, rule: Any, ctx: EvalContext, findings: list[Finding]) -> None:
        start, end = self.sample_range(rule, ctx.now)
        conditions = and_(
            ctx.src.conditions(rule.source, rule.where), ctx.src.window(rule.source, start, end)
        )
        sample_rows(ctx, rule.source, rule.group_by, conditions, findings)

    def list_range(self, rule: Any, now: datetime) -> tuple[datetime, datetime]:
        """The time range of the "open in Audit Logs" link."""
        return self.sample_range(rule, now)

    def window_range(self, rule: Any, now: datetime) -> tuple[datetime, datetime]:
        return now - rule.window, now


def scaled(count: float, numerator: timedelta, denominator: timedelta) -> float:
    return count * (numerator.total_seconds() / denominator.total_seconds())
