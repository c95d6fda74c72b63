"""``audit-watch export jobs|threads|events``: rows of a time range as CSV or JSON Lines.

For a SIEM, a compliance platform or a spreadsheet. Rows stream from the
database in batches (a server-side cursor on PostgreSQL: ``stream_results`` with
``yield_per``) and are written as they come, so memory stays flat whatever the
range. The range is half-open like every window: ``--from < t <= --to`` on the
table's time column (``created_at``; ``last_activity_at`` for threads), oldest
first.

Jobs' ``prompt`` and ``response`` may hold personal data: they are left out
unless asked for (``include_content``). Values are written as stored (a SIEM
wants the data, not a spreadsheet-safe rewrite of it); times are ISO-8601 UTC
with a ``Z``, the events' metadata is JSON.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select

from audit_watch.core.timestamps import as_utc
from audit_watch.core.yaml_source import InputError, Problem
from audit_watch.store.columns import NUMERIC_COLUMNS, column_problem, is_json_key, real_columns
from audit_watch.store.source import AuditSource
from audit_watch.store.where import Condition, where_clause

EXPORT_TABLES = ("jobs", "threads", "events")
EXPORT_FORMATS = ("csv", "jsonl")
CONTENT_COLUMNS: dict[str, tuple[str, ...]] = {"jobs": ("prompt", "response")}
BATCH_ROWS = 1000


def _problem(option: str, message: str) -> InputError:
    return InputError([Problem(option, 0, "", message)])


def export_columns(table: str, include_content: bool = False) -> list[str]:
    """The columns written, in the reference schema's order."""
    hidden = () if include_content else CONTENT_COLUMNS.get(table, ())
    return [name for name in real_columns(table) if name not in hidden]


def parse_where(items: Iterable[str] | Mapping[str, Any], table: str) -> tuple[Condition, ...]:
    """``["status=failed", "agent_id=a1", "metadata.ip=1.2.3.4", "model!=gpt-4o"]`` -> conditions.

    The same key given twice means either value (``IN``). Numeric columns take
    whole numbers. Raises InputError naming ``--where``.
    """
    pairs: list[tuple[str, str, Any]] = []
    entries = items.items() if isinstance(items, Mapping) else [_split(item) for item in items]
    for key, value in entries:
        negate = key.endswith("!")
        key = key.rstrip("!").strip()
        problem = column_problem(table, key)
        if problem:
            raise _problem("--where", problem)
        if key in NUMERIC_COLUMNS.get(table, set()) and not is_json_key(table, key):
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise _problem("--where", f"{key} takes a whole number, got {value!r}") from None
        pairs.append((key, "not" if negate else "eq", value))
    merged: dict[tuple[str, str], list[Any]] = {}
    for key, op, value in pairs:
        merged.setdefault((key, op), []).append(value)
    conditions = []
    for (key, op), values in merged.items():
        if len(values) == 1:
            conditions.append(Condition(key, op, values[0]))
        else:
            conditions.append(Condition(key, "in" if op == "eq" else "not_in", values))
    return tuple(conditions)


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise _problem("--where", f"{item!r} is not key=value (e.g. status=failed, metadata.ip=203.0.113.9)")
    key, value = item.split("=", 1)
    if not key.strip():
        raise _problem("--where", f"{item!r} has no key")
    return key, value


def iter_rows(src: AuditSource, table: str, where: tuple[Condition, ...], start: datetime, end: datetime,
              include_content: bool = False, batch: int = BATCH_ROWS) -> Iterator[dict[str, Any]]:
    """The rows, oldest first, fetched ``batch`` at a time (a generator: consume it inside
    one pass; the read-only transaction stays open until it is exhausted or closed)."""
    t = src.table(table)
    columns = export_columns(table, include_content)
    time_column = src.time_column(table)
    stmt = (
        select(*(t.c[name] for name in columns))
        .where(src.between(time_column, start, end), where_clause(src, table, where))
        .order_by(src.time_value(time_column), t.c.id)
    )
    with src.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch).execute(stmt)
        try:
            for row in result:
                yield dict(zip(columns, row))
        finally:
            result.close()


def _text(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat().replace("+00:00", "Z")
    return value


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return _text(value)


def _json_value(name: str, value: Any) -> Any:
    if name == "metadata" and isinstance(value, str):
        # Metadata that came back as text (a column without a JSON type): keep it structured.
        try:
            return json.loads(value)
        except ValueError:
            return value
    return _text(value)


@contextmanager
def _output(stream: TextIO | str | Path | None) -> Iterator[TextIO]:
    if stream is None:
        yield sys.stdout
    elif isinstance(stream, (str, Path)):
        path = Path(stream)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="") as handle:
            yield handle
    else:
        yield stream


def export_rows(src: AuditSource, table: str, where: Iterable[str] | Mapping[str, Any] | tuple[Condition, ...],
                start: datetime, end: datetime, fmt: str = "csv", stream: TextIO | str | Path | None = None,
                *, include_content: bool = False, batch: int = BATCH_ROWS) -> int:
    """Write the rows of ``table`` with ``start < t <= end`` matching ``where``; returns the row count.

    ``stream`` is an open text stream, a file path (``--out``) or None (stdout).
    ``where`` is ``key=value`` strings (``--where``), a mapping, or conditions.
    Raises InputError for a bad table, format, range or condition.
    """
    if table not in EXPORT_TABLES:
        raise _problem("TABLE", f"cannot export {table!r} (tables: {', '.join(EXPORT_TABLES)})")
    if fmt not in EXPORT_FORMATS:
        raise _problem("--format", f"unknown format {fmt!r} (formats: {', '.join(EXPORT_FORMATS)})")
    if as_utc(end) <= as_utc(start):
        raise _problem("--to", "--to must be after --from")
    conditions = where if isinstance(where, tuple) and all(isinstance(c, Condition) for c in where) \
        else parse_where(where, table)  # type: ignore[arg-type]
    columns = export_columns(table, include_content)
    count = 0
    with _output(stream) as out:
        writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if writer is not None:
            writer.writerow(columns)
        for row in iter_rows(src, table, conditions, start, end, include_content, batch):
            if writer is not None:
                writer.writerow([_csv_value(row[name]) for name in columns])
            else:
                out.write(json.dumps({k: _json_value(k, v) for k, v in row.items()}, ensure_ascii=False,
                                     separators=(",", ":")) + "\n")
            count += 1
        out.flush()
    return count
