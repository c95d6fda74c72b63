"""What every rule kind shares: the evaluation context, group columns, row samples.

A kind computes its findings with one SQL statement that aggregates in the
database and returns only the groups that fire. The sample of row ids (at most
20 per group) is a second, small query over the firing groups only.

A rule's statement is built once and reused at every evaluation (building the
SQLAlchemy expression costs more Python time than a selective query takes in the
database): every instant a kind compares with is ``now - offset``, with an offset
fixed by the rule, and is built as a :class:`~audit_watch.store.source.Moment` whose
value is bound at execution. :meth:`EvalContext.prepared` caches what a builder
returns together with the moments it used; :meth:`EvalContext.execute` binds them
to ``ctx.now``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import and_, literal, or_, select, union_all
from sqlalchemy.engine import Connection, CursorResult, Row
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import ColumnElement

from audit_watch.rules.alert import Finding
from audit_watch.rules.links import condition_filters
from audit_watch.rules.model import Comparison, RuleBase
from audit_watch.store.source import AuditSource, Moment
from audit_watch.store.where import Condition, where_clause

MAX_SAMPLE_ROWS = 20
MAX_SAMPLED_GROUPS = 200

_Built = TypeVar("_Built")
_Built_co = TypeVar("_Built_co", covariant=True)  # a prepared Select is a prepared Executable


class Moments:
    """Hands a builder the instants it compares with (``now - offset``) and records
    which ones it used, so their values can be bound at each execution."""

    def __init__(self) -> None:
        self._used: dict[timedelta, Moment] = {}

    def ago(self, offset: timedelta) -> Moment:
        return self._used.setdefault(offset, Moment(offset))

    @property
    def now(self) -> Moment:
        return self.ago(timedelta(0))

    def used(self) -> tuple[Moment, ...]:
        return tuple(self._used.values())


@dataclass(frozen=True)
class Prepared(Generic[_Built_co]):
    """What a builder made once for a rule (a statement or a clause), with the moments it binds."""

    built: _Built_co
    moments: tuple[Moment, ...]


@dataclass
class EvalContext:
    src: AuditSource
    conn: Connection
    now: datetime

    def window_start(self, rule: RuleBase) -> datetime:
        return self.now - rule.window

    def prepared(self, rule: RuleBase, variant: Hashable, build: Callable[[Moments], _Built]) -> Prepared[_Built]:
        """``build(moments)`` for ``rule``, made at its first evaluation and reused after.

        ``variant`` tells apart what one rule builds (its kind's statement, a sample's
        conditions, ...) and must include whatever else ``build`` depends on. The
        result must not depend on ``ctx.now`` other than through ``moments``.
        """

        def build_recording() -> Prepared[_Built]:
            moments = Moments()
            built = build(moments)
            return Prepared(built, moments.used())

        return self.src.statements.get_or_build(rule, variant, build_recording)

    def params(self, *prepared: Prepared[Any]) -> dict[str, Any]:
        """The values of the moments of ``prepared`` at this evaluation's ``now``."""
        return self.src.moment_values((m for p in prepared for m in p.moments), self.now)

    def execute(self, prepared: Prepared[Executable]) -> CursorResult[Any]:
        """Run a prepared statement at this evaluation's ``now``."""
        return self.conn.execute(prepared.built, self.params(prepared))


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
    params: Mapping[str, Any] | None = None,
) -> None:
    """Fill ``finding.row_ids`` with the newest matching rows of each finding's group.

    ``params``: the values of bound parameters in ``conditions`` that carry none
    (the moments of a prepared clause, see :meth:`EvalContext.params`).

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
    for row in ctx.conn.execute(stmt, dict(params or {})):
        sampled[row.group_index].row_ids.append(str(row.row_id))


class RuleKind(ABC):
    """One kind of rule: compute findings in SQL, then sample their rows; and what
    else the kind implies (for holding it on a silent store, for its links)."""

    name: str

    @abstractmethod
    def find(self, rule: Any, ctx: EvalContext) -> list[Finding]:
        """The groups that fire at ``ctx.now``, with their values."""

    def fires_on_silence(self, rule: Any) -> bool:
        """Would ``rule`` fire merely because no rows arrive? The daemon holds such
        rules while the audit store is silent (one "store silent" alert instead).
        By default no: the kind fires on rows that are there."""
        return False

    def link_filters(self, rule: Any, finding: Finding) -> list[tuple[str, Any]]:
        """What the finding's "open in Audit Logs" list filters on: by default the
        rule's ``where`` (its filters the list can express), when the rows listed are
        the rule's own, and the group's values."""
        where = condition_filters(rule.where) if (finding.row_source or rule.source) == rule.source else []
        return where + [(key, value) for key, value in finding.group.items() if value is not None]

    def sample_range(self, rule: Any, now: datetime) -> tuple[datetime, datetime]:
        """Where the evidence rows of a finding lie (by default: the window)."""
        return now - rule.window, now

    def sample(self, rule: Any, ctx: EvalContext, findings: list[Finding]) -> None:
        if not findings:
            return
        start, end = self.sample_range(rule, ctx.now)
        conditions = window_conditions(ctx, rule, "where", rule.where, ctx.now - start, ctx.now - end)
        sample_rows(ctx, rule.source, rule.group_by, conditions.built, findings, params=ctx.params(conditions))

    def list_range(self, rule: Any, now: datetime) -> tuple[datetime, datetime]:
        """The time range of the "open in Audit Logs" link."""
        return self.sample_range(rule, now)

    def window_range(self, rule: Any, now: datetime) -> tuple[datetime, datetime]:
        return now - rule.window, now


def window_conditions(
    ctx: EvalContext,
    rule: Any,
    label: str,
    where: tuple[Condition, ...],
    start_offset: timedelta,
    end_offset: timedelta,
) -> Prepared[ColumnElement[bool]]:
    """``where`` and ``now - start_offset < time <= now - end_offset`` on the rule's
    source, built once per rule (for the row samples).

    ``label`` names which of the rule's conditions ``where`` is (conditions can hold
    lists, which cannot be part of a cache key).
    """

    def build(moments: Moments) -> ColumnElement[bool]:
        src = ctx.src
        return and_(
            where_clause(src, rule.source, where),
            src.window(rule.source, moments.ago(start_offset), moments.ago(end_offset)),
        )

    return ctx.prepared(rule, ("sample conditions", label, start_offset, end_offset), build)
