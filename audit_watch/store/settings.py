"""The ``source:`` section of the config: where the audit store is and how its
tables and columns are named there."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from audit_watch.core.durations import Duration
from audit_watch.store.schema import REFERENCE_COLUMNS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SourceConfig(_Strict):
    url: str = "sqlite:///audit.db"
    tables: dict[str, str] = Field(default_factory=dict)
    columns: dict[str, dict[str, str]] = Field(default_factory=dict)
    db_schema: str | None = Field(default=None, alias="schema")
    statement_timeout: Duration = timedelta(seconds=30)

    @field_validator("tables", "columns")
    @classmethod
    def _known_tables(cls, value: dict[str, Any]) -> dict[str, Any]:
        for table, renames in value.items():
            if table not in REFERENCE_COLUMNS:
                raise ValueError(f"unknown table {table!r} (tables: {', '.join(REFERENCE_COLUMNS)})")
            if isinstance(renames, dict):
                known = {name for name, _, _ in REFERENCE_COLUMNS[table]}
                for column in renames:
                    if column not in known:
                        raise ValueError(f"unknown column {column!r} of {table}")
        return value
