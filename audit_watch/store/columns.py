"""Which columns a rule may name, per source (a static catalogue, no database needed).

Rules speak in the reference schema's logical names; renames in config map them
to physical columns. Besides the real columns a rule may use:
- ``total_tokens`` on jobs (``input_tokens + output_tokens``);
- ``metadata.KEY`` on events (a key of the JSON metadata). A key may hold any
  character but ``"`` and ``\\``: SQLite's JSON paths cannot quote them, and a key
  that matched on one backend only would be worse than one refused at load time.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import Boolean, Integer, Text

from audit_watch.core.timestamps import UtcDateTime
from audit_watch.store.schema import REFERENCE_COLUMNS

ColumnKind = Literal["text", "number", "time", "boolean", "json", "document"]

COMPUTED_COLUMNS: dict[str, set[str]] = {"jobs": {"total_tokens"}}
JSON_COLUMN: dict[str, str] = {"events": "metadata"}
NUMERIC_COLUMNS: dict[str, set[str]] = {
    "jobs": {"input_tokens", "output_tokens", "total_tokens"},
    "threads": {"message_count"},
    "events": set(),
}
TIME_COLUMNS = {"created_at", "started_at", "finished_at", "last_activity_at"}
_UNQUOTABLE_KEY_CHARACTERS = ('"', "\\")


def real_columns(table: str) -> list[str]:
    return [name for name, _, _ in REFERENCE_COLUMNS[table]]


def is_json_key(table: str, name: str) -> bool:
    prefix = JSON_COLUMN.get(table)
    return prefix is not None and name.startswith(prefix + ".") and len(name) > len(prefix) + 1


def json_key(name: str) -> str:
    """The key of ``metadata.KEY``."""
    return name.split(".", 1)[1]


def column_kind(table: str, name: str) -> ColumnKind | None:
    """What a usable column holds (``json``: a key of the JSON metadata, ``document``:
    the whole JSON column), None if unknown."""
    if is_json_key(table, name):
        return "json"
    if name in COMPUTED_COLUMNS.get(table, set()):
        return "number"
    for column, type_, _options in REFERENCE_COLUMNS.get(table, []):
        if column == name:
            if type_ is Text:
                return "text"
            if type_ is Integer:
                return "number"
            if type_ is UtcDateTime:
                return "time"
            if type_ is Boolean:
                return "boolean"
            return "document"
    return None


def column_problem(table: str, name: str, numeric: bool = False) -> str | None:
    """None when ``name`` is usable on ``table``, else a message that lists the choices."""
    if not isinstance(name, str) or not name:
        return "a column name is required"
    if is_json_key(table, name):
        if any(char in json_key(name) for char in _UNQUOTABLE_KEY_CHARACTERS):
            return f'a metadata key cannot hold " or \\ ({name!r})'
        return None  # JSON values are cast to numbers where a number is needed
    known = set(real_columns(table)) | COMPUTED_COLUMNS.get(table, set())
    if name not in known:
        extra = f", or {JSON_COLUMN[table]}.KEY" if table in JSON_COLUMN else ""
        return f"unknown column {name!r} of {table} (columns: {', '.join(sorted(known))}{extra})"
    if numeric and name not in NUMERIC_COLUMNS.get(table, set()):
        numeric_cols = sorted(NUMERIC_COLUMNS.get(table, set()))
        return f"column {name!r} of {table} is not numeric (numeric: {', '.join(numeric_cols) or 'none'})"
    return None
