"""The ``where`` conditions of rules and exports: their model, their validation
against the audit store's columns, and their SQL.

Every value is a bound parameter. Both backends compare alike: numbers given for
text columns become text, numeric text for numeric columns a number, and JSON
metadata keys compare as text (see :meth:`AuditSource.json_text`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic_core import PydanticCustomError
from sqlalchemy import String, and_, func, literal, not_, or_, true
from sqlalchemy.sql.elements import ColumnElement

from audit_watch.core.timestamps import parse_timestamp
from audit_watch.store.columns import JSON_COLUMN, NUMERIC_COLUMNS, TIME_COLUMNS, column_problem, is_json_key
from audit_watch.store.source import AuditSource

WHERE_OPERATORS = ("eq", "in", "not", "not_in", "gt", "gte", "lt", "lte", "contains", "exists")
_LIST_OPERATORS = {"in", "not_in"}
_ORDER_OPERATORS = {"gt", "gte", "lt", "lte"}


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
                if op in _LIST_OPERATORS and not (isinstance(value, list) and value):
                    raise _where_error([column, op], f"{op} takes a non-empty list")
                if op in _ORDER_OPERATORS and (isinstance(value, (list, dict, bool)) or value is None):
                    raise _where_error([column, op], f"{op} takes a number, text or timestamp")
                if op == "exists" and not isinstance(value, bool):
                    raise _where_error([column, op], "exists takes true or false")
                if op == "contains" and not isinstance(value, str):
                    raise _where_error([column, op], "contains takes text")
                if op not in _LIST_OPERATORS and isinstance(value, (list, dict)):
                    raise _where_error([column, op], f"{op} takes a single value")
                _check_value(table, column, op, value, [column, op])
                conditions.append(Condition(column, op, value))
        elif isinstance(spec, list):
            raise _where_error([column], "a list needs an operator: {in: [...]} or {not_in: [...]}")
        else:
            _check_value(table, column, "eq", spec, [column])
            conditions.append(Condition(column, "eq", spec))
    return tuple(conditions)


def _check_value(table: str, column: str, op: str, value: Any, path: list[str]) -> None:
    """What the SQL will need of the value, checked when the rule is loaded (not at
    its first evaluation): numbers for numeric columns and for ordering a JSON key,
    timestamps for time columns."""
    if op == "contains":
        if column in NUMERIC_COLUMNS.get(table, set()) or column in TIME_COLUMNS:
            raise _where_error(path, f"contains works on text; {column} is not a text column")
        return
    if op == "exists":
        return
    if column in TIME_COLUMNS and op in ("in", "not_in", "not") and not (op == "not" and value is None):
        raise _where_error(path, f"{op} does not work on times: use gt, gte, lt, lte, or null / {{not: null}}")
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, (dict, list)):
            raise _where_error(path, "takes a number, text or timestamp, not a list or mapping")
        if item is None:
            continue
        if column in NUMERIC_COLUMNS.get(table, set()) or (is_json_key(table, column) and op in _ORDER_OPERATORS):
            if not _is_number(item):
                raise _where_error(path, f"{column} is numeric: {item!r} is not a number")
        elif column in TIME_COLUMNS and op in ("eq", "gt", "gte", "lt", "lte") and not isinstance(item, datetime):
            try:
                parse_timestamp(str(item))
            except (ValueError, OverflowError):
                raise _where_error(path, f"{column} is a time: {item!r} is not an ISO-8601 timestamp") from None


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True


# --- SQL ---------------------------------------------------------------------------


def where_clause(src: AuditSource, table: str, conditions: tuple[Condition, ...]) -> ColumnElement[bool]:
    if not conditions:
        return true()
    return and_(*(condition_clause(src, table, c) for c in conditions))

def condition_clause(src: AuditSource, table: str, cond: Condition) -> ColumnElement[bool]:
    """One ``where`` entry as SQL; every value is a bound parameter."""
    name, op, value = cond.column, cond.op, cond.value
    json_key = is_json_key(table, name)
    if op == "exists":
        if json_key:
            present = src.json_has_key(src.tables[table].c[JSON_COLUMN[table]], name.split(".", 1)[1])
        else:
            present = src.column(table, name).is_not(None)
        return present if value else not_(present)
    if name in TIME_COLUMNS and op in ("eq", "gt", "gte", "lt", "lte") and value is not None:
        return _time_condition(src, table, name, op, value)
    if not json_key:
        value = _coerce(src, table, name, value)
    if op in ("gt", "gte", "lt", "lte"):
        column = src.numeric_column(table, name) if json_key else src.column(table, name)
        bound = literal(float(value)) if json_key else literal(value)
        return {"gt": column > bound, "gte": column >= bound, "lt": column < bound, "lte": column <= bound}[op]
    column = src.column(table, name)
    if op == "contains":
        return func.lower(column).contains(str(value).lower(), autoescape=True)
    if json_key:
        value = _as_json_text(value) if op in ("eq", "not") else [_as_json_text(v) for v in value]
    if op == "eq":
        return column.is_(None) if value is None else column == literal(value)
    if op == "not":
        return column.is_not(None) if value is None else or_(column != literal(value), column.is_(None))
    if op == "in":
        return column.in_(list(value))
    if op == "not_in":
        return or_(column.not_in(list(value)), column.is_(None))
    raise ValueError(f"unknown operator {op!r}")

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
        return value  # booleans, JSON: as written

    def one(item: Any) -> Any:
        if item is None:
            return None
        if not numeric:
            if isinstance(item, bool):
                return "true" if item else "false"
            return str(item) if isinstance(item, (int, float)) else item
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
    moment = value if isinstance(value, datetime) else parse_timestamp(str(value))
    column, bound = src.time_value(src.tables[table].c[name]), src.time_param(moment)
    return {
        "eq": column == bound, "gt": column > bound, "gte": column >= bound,
        "lt": column < bound, "lte": column <= bound,
    }[op]


def _as_json_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
