"""SQL shared by the reports: counts per period and key in one GROUP BY.

Every report compares a period with earlier ones. Rather than one query per
period, rows of all periods are read in one statement: a CASE expression numbers
the period a row falls in (exact ``start < t <= end`` tests, the same as
``AuditSource.between``), the WHERE clause is an OR of the periods' index-friendly
ranges, and an outer GROUP BY aggregates. The CASE is computed in a subquery and
grouped by its label: PostgreSQL would otherwise see two differently bound copies
of the same expression in SELECT and GROUP BY.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, literal, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from audit_watch.store.source import AuditSource

# The event catalogue's sensitive actions (docs/audit-store.md), in words.
SENSITIVE_EVENT_TYPES: dict[str, str] = {
    "user.role_changed": "changed a role",
    "credential.created": "created a credential",
    "credential.rotated": "rotated a credential",
    "credential.revoked": "revoked a credential",
    "api_key.created": "created an API key",
    "api_key.revoked": "revoked an API key",
    "agent.created": "created an agent",
    "agent.updated": "edited an agent",
    "agent.deleted": "deleted an agent",
    "config.changed": "changed a setting",
}
# The same as nouns, for counts: "3 agent edits".
SENSITIVE_NOUNS: dict[str, tuple[str, str]] = {
    "user.role_changed": ("role change", "role changes"),
    "credential.created": ("new credential", "new credentials"),
    "credential.rotated": ("credential rotation", "credential rotations"),
    "credential.revoked": ("credential revocation", "credential revocations"),
    "api_key.created": ("new API key", "new API keys"),
    "api_key.revoked": ("API key revocation", "API key revocations"),
    "agent.created": ("new agent", "new agents"),
    "agent.updated": ("agent edit", "agent edits"),
    "agent.deleted": ("agent deletion", "agent deletions"),
    "config.changed": ("setting change", "setting changes"),
}


def counted_noun(event_type: str, count: int) -> str:
    """``3 agent edits``, ``1 role change``."""
    one, many = SENSITIVE_NOUNS.get(event_type, (event_type, event_type))
    return f"{count} {one if count == 1 else many}"


# Changes of access rather than of behaviour: worth a second look every time.
ACCESS_EVENT_TYPES = frozenset(t for t in SENSITIVE_EVENT_TYPES if t.split(".")[0] in ("user", "credential", "api_key"))

Span = tuple[datetime, datetime]
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x80-\x9f]")


@dataclass(frozen=True)
class Measure:
    """An aggregate of the outer GROUP BY: ``count`` rows, ``sum`` of ``expr``, or
    ``latest``/``earliest`` of a time expression (from ``AuditSource.time_value``)."""

    kind: str
    expr: ColumnElement[Any] | None = None


COUNT = Measure("count")


def summed(expr: ColumnElement[Any]) -> Measure:
    return Measure("sum", expr)


def counted_if(condition: ColumnElement[bool]) -> Measure:
    return Measure("sum", case((condition, 1), else_=0))


def latest(src: AuditSource, column: ColumnElement[Any]) -> Measure:
    return Measure("latest", src.time_value(column))


def earliest(src: AuditSource, column: ColumnElement[Any]) -> Measure:
    return Measure("earliest", src.time_value(column))


def _contiguous(spans: Sequence[Span]) -> list[tuple[int, Span]] | None:
    """The spans in time order when each starts where the previous ends, else None."""
    ordered = sorted(enumerate(spans), key=lambda item: item[1][0])
    for (_, (_, hi)), (_, (lo, _)) in zip(ordered, ordered[1:]):
        if lo != hi:
            return None
    return ordered


def bucket_case(src: AuditSource, column: ColumnElement[Any], spans: Sequence[Span]) -> ColumnElement[Any]:
    """The index of the span a time falls in (spans must not overlap), else NULL.

    Contiguous spans (a period and the one before, the days of a week) need one
    comparison per span, given that ``within_any`` already bounds the rows: on
    SQLite every comparison re-reads the text timestamp, so this halves the work.
    """
    ordered = _contiguous(spans)
    if ordered is not None:
        value = src.time_value(column)
        return case(*[(value <= src.time_param(hi), literal(i)) for i, (_, hi) in ordered], else_=None)
    return case(*[(src.flag_between(column, lo, hi), literal(i)) for i, (lo, hi) in enumerate(spans)], else_=None)


def within_any(src: AuditSource, column: ColumnElement[Any], spans: Sequence[Span]) -> ColumnElement[bool]:
    if _contiguous(spans) is not None:
        return src.between(column, min(lo for lo, _ in spans), max(hi for _, hi in spans))
    return or_(*[src.between(column, lo, hi) for lo, hi in spans])


def grouped(
    conn: Connection,
    src: AuditSource,
    table: str,
    spans: Sequence[Span],
    *,
    keys: Mapping[str, ColumnElement[Any]] | None = None,
    where: Iterable[ColumnElement[bool]] = (),
    measures: Mapping[str, Measure] | None = None,
    time_column: ColumnElement[Any] | None = None,
) -> list[dict[str, Any]]:
    """Aggregates per (span index ``p``, keys): one statement, grouped in the database."""
    keys = dict(keys or {})
    measures = dict(measures or {"count": COUNT})
    column = time_column if time_column is not None else src.time_column(table)
    inner_columns = [bucket_case(src, column, spans).label("p")]
    inner_columns += [expr.label(f"k_{name}") for name, expr in keys.items()]
    inner_columns += [m.expr.label(f"m_{name}") for name, m in measures.items() if m.expr is not None]
    inner = select(*inner_columns).where(within_any(src, column, spans), *where).subquery("rows_in_spans")
    aggregates = []
    for name, measure in measures.items():
        if measure.kind == "count":
            aggregates.append(func.count().label(name))
        elif measure.kind == "latest":
            aggregates.append(func.max(inner.c[f"m_{name}"]).label(name))
        elif measure.kind == "earliest":
            aggregates.append(func.min(inner.c[f"m_{name}"]).label(name))
        else:
            aggregates.append(func.sum(inner.c[f"m_{name}"]).label(name))
    group_cols = [inner.c.p] + [inner.c[f"k_{name}"] for name in keys]
    stmt = select(*group_cols, *aggregates).group_by(*group_cols)
    out = []
    for row in conn.execute(stmt):
        mapping = row._mapping
        if mapping["p"] is None:
            continue
        item: dict[str, Any] = {"p": int(mapping["p"])}
        item.update({name: mapping[f"k_{name}"] for name in keys})
        for name, measure in measures.items():
            value = mapping[name]
            item[name] = src.read_time(value) if measure.kind in ("latest", "earliest") else int(value or 0)
        out.append(item)
    return out


def pivot(rows: Iterable[Mapping[str, Any]], key: str | tuple[str, ...], measure: str, periods: int) -> dict[Any, list[int]]:
    """{key value: [measure in period 0, 1, ...]} (0 where a period has no row)."""
    out: dict[Any, list[int]] = {}
    for row in rows:
        k = tuple(row[name] for name in key) if isinstance(key, tuple) else row[key]
        out.setdefault(k, [0] * periods)[row["p"]] = row[measure]
    return out


def totals(rows: Iterable[Mapping[str, Any]], measure: str, periods: int) -> list[int]:
    out = [0] * periods
    for row in rows:
        out[row["p"]] += row[measure]
    return out


def lookup_names(conn: Connection, src: AuditSource, table: str, ids: Iterable[Any]) -> dict[str, str]:
    """{id: name} of agents, users, teams or crons."""
    wanted = sorted({str(i) for i in ids if i is not None})
    t = src.table(table)
    names: dict[str, str] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        names.update({str(r.id): r.name for r in conn.execute(select(t.c.id, t.c.name).where(t.c.id.in_(chunk)))})
    return names


def data_start(conn: Connection, src: AuditSource) -> datetime | None:
    """When the store's records begin (the earliest job or event).

    Earlier periods have no data at all, and must not count as a history of
    zeros. The raw column's MIN uses its index; on SQLite text it is exact to
    the offset the writer used, which is close enough for this purpose.
    """
    firsts: list[datetime] = []
    for table in ("jobs", "events"):
        first = src.read_time(conn.execute(select(func.min(src.time_column(table)))).scalar())
        if first is not None:
            firsts.append(first)
    return min(firsts) if firsts else None


def covered(spans: Sequence[Span], first: datetime | None) -> list[bool]:
    """Which spans lie entirely after the start of the data."""
    return [first is not None and lo >= first for lo, _ in spans]


def newest_ids(conn: Connection, src: AuditSource, table: str, span: Span, where: Iterable[ColumnElement[bool]],
               limit: int = 3) -> list[str]:
    """Ids of the newest rows matching ``where`` in ``span`` (for "open the rows" links)."""
    t = src.table(table)
    column = src.time_column(table)
    stmt = (select(t.c.id).where(src.between(column, *span), *where)
            .order_by(src.time_value(column).desc(), t.c.id).limit(limit))
    return [str(r.id) for r in conn.execute(stmt)]


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def ratio(current: float, reference: float | None) -> float | None:
    """current / reference, or None when there is nothing to compare with."""
    if reference is None or reference <= 0:
        return None
    return current / reference


def change(current: int, previous: int | None) -> dict[str, Any]:
    """{"current", "previous", "delta", "pct"}: pct is None when previous is 0 or unknown."""
    if previous is None:
        return {"current": current, "previous": None, "delta": None, "pct": None}
    pct = (current - previous) / previous if previous else None
    return {"current": current, "previous": previous, "delta": current - previous, "pct": pct}


def shorten(text: str | None, limit: int = 160) -> str | None:
    """Untrusted text kept to one readable line (errors can be whole stack traces)."""
    if text is None:
        return None
    flat = " ".join(_CONTROL.sub(" ", str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"
