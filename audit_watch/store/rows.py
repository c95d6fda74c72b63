"""Write hand-made audit rows with sensible defaults (rule unit tests, pytest).

Rows say only what matters to the test; ``at`` (``-5m`` or an ISO timestamp)
sets the table's time column relative to ``now``, and ``count`` repeats a row.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Engine

from audit_watch.core.durations import parse_duration
from audit_watch.core.timestamps import parse_timestamp
from audit_watch.store.schema import REFERENCE_COLUMNS

_LONG_AGO = timedelta(days=365)

DEFAULTS: dict[str, dict[str, Any]] = {
    "teams": {"name": None},
    "users": {"name": None, "email": None, "role": "member"},
    "memberships": {"user_id": "u1", "team_id": "t1"},
    "agents": {"name": None, "team_id": "t1"},
    "crons": {"agent_id": "a1", "name": None, "timezone": "UTC", "enabled": True},
    "jobs": {"status": "complete", "agent_id": "a1", "team_id": "t1", "job_type": "task",
             "input_tokens": 0, "output_tokens": 0},
    "threads": {"source": "app", "type": "chat", "agent_id": "a1", "team_id": "t1",
                "name": "thread", "message_count": 1},
    "events": {"event_type": "auth.login", "severity": "info", "description": "", "metadata": {}},
}
# Which columns ``at`` sets; a thread's created_at follows its last activity.
AT_COLUMNS = {
    "agents": ("created_at",),
    "crons": ("created_at",),
    "jobs": ("created_at",),
    "threads": ("last_activity_at", "created_at"),
    "events": ("created_at",),
}


class RowError(ValueError):
    """A hand-written row that cannot be stored (unknown table or column, bad time)."""


def moment(value: Any, now: datetime) -> datetime:
    """``-5m``/``+1h`` relative to now, an ISO timestamp, or a datetime."""
    if isinstance(value, datetime):
        return parse_timestamp(value.isoformat())
    text = str(value).strip()
    if text[:1] in "+-":
        sign = -1 if text[0] == "-" else 1
        return now + sign * parse_duration(text[1:])
    try:
        return parse_timestamp(text)
    except ValueError:
        raise RowError(f"{value!r} is neither a relative time (-5m) nor an ISO timestamp") from None


def build_rows(table: str, rows: Iterable[Mapping[str, Any]], now: datetime, ids: Iterable[int]) -> list[dict[str, Any]]:
    """Expand ``count``, apply ``at`` and defaults; returns plain rows ready to insert."""
    if table not in REFERENCE_COLUMNS:
        raise RowError(f"unknown table {table!r} (tables: {', '.join(REFERENCE_COLUMNS)})")
    known = {name for name, _, _ in REFERENCE_COLUMNS[table]}
    counter = iter(ids)
    out: list[dict[str, Any]] = []
    for raw in rows:
        row = dict(raw)
        count = int(row.pop("count", 1))
        at = row.pop("at", None)
        unknown = set(row) - known
        if unknown:
            raise RowError(f"{table}: unknown column {sorted(unknown)[0]!r}")
        when = moment(at, now) if at is not None else None
        for _ in range(count):
            item = {**DEFAULTS.get(table, {}), **row}
            if "id" in known and "id" not in row:
                item["id"] = f"{table[:-1]}-{next(counter)}"
            elif count > 1 and "id" in row:
                item["id"] = f"{row['id']}-{next(counter)}"
            for column in AT_COLUMNS.get(table, ()):
                if column not in row:
                    item[column] = when if when is not None else (now - _LONG_AGO if table in ("agents", "crons") else now)
            for column, value in list(item.items()):
                if value is None and column in ("name", "email"):
                    item[column] = f"{item.get('id', 'x')}@example.com" if column == "email" else str(item.get("id"))
                elif isinstance(value, str) and column in ("created_at", "last_activity_at", "started_at", "finished_at"):
                    item[column] = moment(value, now)
            out.append(item)
    return out


def insert_rows(engine: Engine, tables: Mapping[str, Table], data: Mapping[str, list[Mapping[str, Any]]],
                now: datetime) -> dict[str, int]:
    """Insert ``{table: [rows]}``; returns how many rows went into each table."""
    ids = itertools.count(1)
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        for table, rows in data.items():
            built = build_rows(table, rows or [], now, ids)
            if built:
                # Every row gets every column so one executemany fits all.
                columns = {c for row in built for c in row}
                rows = [{c: r.get(c, _column_default(table, c)) for c in columns} for r in built]
                conn.execute(insert(tables[table]), rows)
            counts[table] = len(built)
    return counts


def _column_default(table: str, column: str) -> Any:
    return DEFAULTS.get(table, {}).get(column)
