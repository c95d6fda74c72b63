"""The ``where`` conditions of rules and exports: their model, their validation
against the audit store's columns, and their SQL.

Every value is a bound parameter, and both backends compare alike:

- numbers given for text columns become text, numeric text for numeric columns a
  number; text orders by code point (``gt: M`` is the same on every collation);
- ``contains`` is a case-insensitive substring under Unicode's simple lowercase
  mapping (:mod:`audit_watch.store.text_match`); ``%`` and ``_`` are literal;
- a JSON metadata key compares by its JSON type: a JSON number equals a number of
  the same value (``197``, ``197.0`` and ``"197"`` in a rule are one number), a
  JSON string or boolean equals text (``true``/``false`` for booleans), a missing
  key or JSON null equals null; the order operators see JSON numbers only, and
  ``contains`` JSON strings only;
- ``not`` and ``not_in`` are exactly the rows ``eq`` and ``in`` leave out (NULL and
  a missing key count as "not"); a null in an ``in`` list matches NULL.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic_core import PydanticCustomError
from sqlalchemy import String, and_, false, literal, not_, or_, true
from sqlalchemy.sql.elements import ColumnElement

from audit_watch.core.timestamps import parse_timestamp
from audit_watch.store.columns import JSON_COLUMN, NUMERIC_COLUMNS, column_kind, column_problem, json_key
from audit_watch.store.source import AuditSource
from audit_watch.store.text_match import unicode_lower

WHERE_OPERATORS = ("eq", "in", "not", "not_in", "gt", "gte", "lt", "lte", "contains", "exists")
_LIST_OPERATORS = {"in", "not_in"}
_ORDER_OPERATORS = {"gt", "gte", "lt", "lte"}
_EQUALITY_OPERATORS = {"eq", "in", "not", "not_in"}
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Condition:
    """One ``where`` test: ``column op value``. Values are always bound parameters."""

    column: str
    op: str
    value: Any


def _where_error(path: list[str], message: str) -> PydanticCustomError:
    # ``subpath`` lets the error formatter point at the line of the column or operator.
    return PydanticCustomError("where", message, {"subpath": path})


def parse_where(raw: Any, table: str) -> tuple[Condition, ...]:
    """``{status: failed, model: {not: x}}`` -> conditions, checking columns and operators."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise PydanticCustomError("where", "expected a mapping of column: condition")
    conditions: list[Condition] = []
    for column, spec in raw.items():
        problem = column_problem(table, column)
        if problem:
            raise _where_error([column], problem)
        if isinstance(spec, dict):
            if not spec:
                raise _where_error([column], "empty condition")
            for op, value in spec.items():
                if op not in WHERE_OPERATORS:
                    raise _where_error(
                        [column, op],
                        f"unknown operator {op!r} (use one of {', '.join(WHERE_OPERATORS)})",
                    )
                problem = _value_problem(table, column, op, value)
                if problem:
                    raise _where_error([column, op], problem)
                conditions.append(Condition(column, op, value))
        elif isinstance(spec, list):
            raise _where_error([column], "a list needs an operator: {in: [...]} or {not_in: [...]}")
        else:
            problem = _value_problem(table, column, "eq", spec)
            if problem:
                raise _where_error([column], problem)
            conditions.append(Condition(column, "eq", spec))
    return tuple(conditions)


def _value_problem(table: str, column: str, op: str, value: Any) -> str | None:
    """What is wrong with ``column op value`` (None: nothing), before any SQL is built."""
    if op in _LIST_OPERATORS and not (isinstance(value, list) and value):
        return f"{op} takes a non-empty list"
    if op not in _LIST_OPERATORS and isinstance(value, (list, dict)):
        return f"{op} takes a single value"
    if op == "exists":
        return None if isinstance(value, bool) else "exists takes true or false"
    kind = column_kind(table, column)
    if op == "contains":
        if not isinstance(value, str):
            return "contains takes text"
        return None if kind in ("text", "json") else f"contains needs a text column ({column} holds {kind} values)"
    if op in _ORDER_OPERATORS:
        if isinstance(value, bool) or value is None:
            return f"{op} takes a number, text or timestamp"
        if kind in ("json", "number") and _as_number(value) is None:
            what = "a metadata key" if kind == "json" else column
            return f"{op} on {what} takes a number, got {value!r}"
        if kind == "boolean":
            return f"{op} needs a column of numbers, text or timestamps ({column} is true or false)"
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, (list, dict)):
            return f"{op} takes plain values, not {type(item).__name__}s"
        if kind == "number" and item is not None and _as_number(item) is None:
            return f"{column} holds numbers, got {item!r}"
        if kind == "time" and item is not None and _as_time(item) is None:
            return f"{column} holds timestamps, got {item!r} (ISO-8601, e.g. 2026-11-20T09:30:00Z)"
    return None


# --- SQL ---------------------------------------------------------------------------


def where_clause(src: AuditSource, table: str, conditions: tuple[Condition, ...]) -> ColumnElement[bool]:
    if not conditions:
        return true()
    return and_(*(condition_clause(src, table, c) for c in conditions))


def condition_clause(src: AuditSource, table: str, cond: Condition) -> ColumnElement[bool]:
    """One ``where`` entry as SQL; every value is a bound parameter."""
    name, op, value = cond.column, cond.op, cond.value
    kind = column_kind(table, name)
    if op == "exists":
        if kind == "json":
            present = src.json_has_key(src.tables[table].c[JSON_COLUMN[table]], json_key(name))
        else:
            present = src.column(table, name).is_not(None)
        return present if value else not_(present)
    if kind == "json":
        return _json_condition(src, table, name, op, value)
    if kind == "time":
        return _time_condition(src, table, name, op, value)
    value = _coerce(src, table, name, value)
    column = src.column(table, name)
    if op in _ORDER_OPERATORS:
        ordered = src.code_point_order(column) if kind == "text" else column
        return _ordered(ordered, op, literal(value))
    if op == "contains":
        return src.fold_case(column).contains(unicode_lower(str(value)), autoescape=True)
    if op == "eq":
        return column.is_(None) if value is None else column == literal(value)
    if op == "not":
        return column.is_not(None) if value is None else or_(column != literal(value), column.is_(None))
    listed = [item for item in value if item is not None]
    if op == "in":
        matches = [column.in_(listed)] if listed else []
        return or_(*matches, column.is_(None)) if None in value else or_(*matches)
    if op == "not_in":
        if None in value:  # NULL is in the list: only the values that are set and not listed
            return and_(column.is_not(None), column.not_in(listed)) if listed else column.is_not(None)
        return or_(column.not_in(listed), column.is_(None))
    raise ValueError(f"unknown operator {op!r}")


def _ordered(column: ColumnElement[Any], op: str, bound: ColumnElement[Any]) -> ColumnElement[bool]:
    return {"gt": column > bound, "gte": column >= bound, "lt": column < bound, "lte": column <= bound}[op]


def _coerce(src: AuditSource, table: str, name: str, value: Any) -> Any:
    """A where value in its column's type, so both backends compare alike.

    YAML reads an unquoted id (``agent_id: 12345``) as a number: PostgreSQL
    rejects ``text = integer`` where SQLite quietly converts. Numbers become text
    for text columns; numeric text becomes a number for numeric columns.
    """
    if name in NUMERIC_COLUMNS.get(table, set()):
        numeric = True
    elif name in src.tables[table].c and isinstance(src.tables[table].c[name].type, String):
        numeric = False
    else:
        return value  # booleans: as written

    def one(item: Any) -> Any:
        if item is None:
            return None
        if not numeric:
            return _as_text(item)
        if isinstance(item, str):
            try:
                return int(item)
            except ValueError:
                try:
                    return float(item)
                except ValueError:
                    raise ValueError(f"where {name}: {item!r} is not a number") from None
        return item

    return [one(item) for item in value] if isinstance(value, list) else one(value)


def _time_condition(src: AuditSource, table: str, name: str, op: str, value: Any) -> ColumnElement[bool]:
    """Times compare as instants, whatever their text (SQLite) or time zone."""
    raw = src.tables[table].c[name]
    column = src.time_value(raw)
    if op in _ORDER_OPERATORS:
        return _ordered(column, op, src.time_param(_time_value(value)))
    values = value if op in _LIST_OPERATORS else [value]
    parts = [and_(raw.is_not(None), column == src.time_param(_time_value(v))) for v in values if v is not None]
    if None in values:
        parts.append(raw.is_(None))
    matches = or_(*parts)  # never NULL, so that NOT is exactly the other rows
    return matches if op in ("eq", "in") else not_(matches)


def _json_condition(src: AuditSource, table: str, name: str, op: str, value: Any) -> ColumnElement[bool]:
    """A condition on a key of the JSON metadata, by the JSON type of its value."""
    document, key = src.tables[table].c[JSON_COLUMN[table]], json_key(name)
    if op in _ORDER_OPERATORS:
        return _ordered(src.json_number(document, key), op, literal(_as_number(value)))
    if op == "contains":
        return and_(
            src.json_is(document, key, "string"),
            src.fold_case(src.json_text(document, key)).contains(unicode_lower(str(value)), autoescape=True),
        )
    values = value if op in _LIST_OPERATORS else [value]
    numbers = sorted({n for n in (_as_number(v) for v in values) if n is not None})
    texts = sorted({_as_text(v) for v in values if v is not None})
    parts: list[ColumnElement[bool]] = []
    if numbers:
        parts.append(and_(src.json_is(document, key, "number"), src.json_number(document, key).in_(numbers)))
    if texts:
        parts.append(and_(src.json_is(document, key, "string", "boolean"), src.json_text(document, key).in_(texts)))
    if None in values:  # a missing key or a JSON null
        parts.append(not_(src.json_is(document, key, "number", "string", "boolean", "object", "array")))
    # Each part is true or false, never NULL, so that NOT is exactly the other rows.
    matches = or_(*parts) if parts else false()
    return matches if op in ("eq", "in") else not_(matches)


def _as_number(value: Any) -> float | None:
    """The number a rule value stands for: a number, or text written as a JSON number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and _JSON_NUMBER.fullmatch(value.strip()):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) else None


def _as_text(value: Any) -> str:
    """A rule value as the text it equals: ``true``/``false``, a number as written (``4.0``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def _as_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return parse_timestamp(value.isoformat() if isinstance(value, date) else str(value))
    except ValueError:
        return None


def _time_value(value: Any) -> datetime:
    moment = _as_time(value)
    if moment is None:
        raise ValueError(f"{value!r} is not a timestamp")
    return moment
