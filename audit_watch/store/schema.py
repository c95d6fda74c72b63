"""The reference schema of the audit store (documented for users in ``docs/audit-store.md``:
keep the two in step).

Tables are declared, not reflected: every rule kind, the generator and the tests
use the same logical names. A deployment whose tables or columns are named
differently maps them in config; :func:`build_tables` gives each Column its
physical name and keeps the logical name as its ``key``, so code always says
``jobs.c.created_at`` whatever the column is called in the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

from audit_watch.core.timestamps import UtcDateTime


def _json_type() -> Any:
    return JSON().with_variant(JSONB(), "postgresql")


# Logical table -> [(logical column, type, options)], in the order of docs/audit-store.md.
REFERENCE_COLUMNS: dict[str, list[tuple[str, Any, dict[str, Any]]]] = {
    "teams": [
        ("id", Text, {"primary_key": True}),
        ("name", Text, {"nullable": False}),
    ],
    "users": [
        ("id", Text, {"primary_key": True}),
        ("name", Text, {"nullable": False}),
        ("email", Text, {"nullable": False}),
        ("role", Text, {"nullable": False}),
    ],
    "memberships": [
        ("user_id", Text, {"primary_key": True}),
        ("team_id", Text, {"primary_key": True}),
    ],
    "agents": [
        ("id", Text, {"primary_key": True}),
        ("name", Text, {"nullable": False}),
        ("team_id", Text, {"nullable": False}),
        ("created_at", UtcDateTime, {"nullable": False}),
    ],
    "crons": [
        ("id", Text, {"primary_key": True}),
        ("agent_id", Text, {"nullable": False}),
        ("name", Text, {"nullable": False}),
        ("schedule", Text, {"nullable": False}),
        ("timezone", Text, {"nullable": False, "server_default": "UTC"}),
        ("enabled", Boolean, {"nullable": False, "server_default": "1"}),
        ("created_at", UtcDateTime, {"nullable": False}),
    ],
    "jobs": [
        ("id", Text, {"primary_key": True}),
        ("status", Text, {"nullable": False}),
        ("agent_id", Text, {"nullable": False}),
        ("team_id", Text, {"nullable": False}),
        ("user_id", Text, {}),
        ("thread_id", Text, {}),
        ("job_type", Text, {"nullable": False}),
        ("model", Text, {}),
        ("provider", Text, {}),
        ("input_tokens", Integer, {"nullable": False, "server_default": "0"}),
        ("output_tokens", Integer, {"nullable": False, "server_default": "0"}),
        ("evaluator_status", Text, {}),
        ("error", Text, {}),
        ("prompt", Text, {}),
        ("response", Text, {}),
        ("created_at", UtcDateTime, {"nullable": False}),
        ("started_at", UtcDateTime, {}),
        ("finished_at", UtcDateTime, {}),
    ],
    "threads": [
        ("id", Text, {"primary_key": True}),
        ("source", Text, {"nullable": False}),
        ("type", Text, {"nullable": False}),
        ("agent_id", Text, {"nullable": False}),
        ("team_id", Text, {"nullable": False}),
        ("user_id", Text, {}),
        ("cron_id", Text, {}),
        ("name", Text, {"nullable": False}),
        ("message_count", Integer, {"nullable": False, "server_default": "0"}),
        ("snippet", Text, {}),
        ("created_at", UtcDateTime, {"nullable": False}),
        ("last_activity_at", UtcDateTime, {"nullable": False}),
    ],
    "events": [
        ("id", Text, {"primary_key": True}),
        ("event_type", Text, {"nullable": False}),
        ("severity", Text, {"nullable": False}),
        ("description", Text, {"nullable": False}),
        ("agent_id", Text, {}),
        ("user_id", Text, {}),
        ("team_id", Text, {}),
        ("metadata", "json", {"nullable": False, "server_default": "{}"}),
        ("created_at", UtcDateTime, {"nullable": False}),
    ],
}

# The indexes docs/audit-store.md recommends; created only by the generator (we never write
# to a real audit store).
REFERENCE_INDEXES: dict[str, list[tuple[str, ...]]] = {
    "jobs": [("created_at",), ("status", "created_at"), ("agent_id", "created_at")],
    "threads": [("last_activity_at",), ("source", "last_activity_at")],
    "events": [("created_at",), ("event_type", "created_at"), ("severity", "created_at")],
}

# The time column a window is measured on, per rule source.
TIME_COLUMN: dict[str, str] = {
    "jobs": "created_at",
    "threads": "last_activity_at",
    "events": "created_at",
}


def build_tables(
    table_names: Mapping[str, str] | None = None,
    column_names: Mapping[str, Mapping[str, str]] | None = None,
    schema: str | None = None,
    with_indexes: bool = False,
) -> dict[str, Table]:
    """Declare the reference tables under their physical names.

    ``table_names`` maps logical -> physical table name, ``column_names`` maps
    logical table -> {logical column -> physical column}.
    """
    table_names = table_names or {}
    column_names = column_names or {}
    metadata = MetaData(schema=schema)
    tables: dict[str, Table] = {}
    for logical, columns in REFERENCE_COLUMNS.items():
        renames = column_names.get(logical, {})
        cols = []
        for name, type_, options in columns:
            sql_type = _json_type() if type_ == "json" else type_
            cols.append(Column(renames.get(name, name), sql_type, key=name, **options))
        table = Table(table_names.get(logical, logical), metadata, *cols)
        if with_indexes:
            for index_cols in REFERENCE_INDEXES.get(logical, []):
                Index(
                    f"ix_{table.name}_{'_'.join(index_cols)}",
                    *(table.c[c] for c in index_cols),
                )
        tables[logical] = table
    return tables


def create_reference_tables(engine: Any, tables: Mapping[str, Table] | None = None) -> dict[str, Table]:
    """Create the reference tables (and their indexes) where absent."""
    tables = dict(tables) if tables is not None else build_tables(with_indexes=True)
    next(iter(tables.values())).metadata.create_all(engine, checkfirst=True)
    return tables
