"""Time stamps as the audit store and the state database keep them: aware UTC
datetimes on every backend (ISO text on SQLite, ``timestamptz`` on PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Text, TypeDecorator
from sqlalchemy.engine import Dialect


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``. SQLite keeps ISO-8601 text, written by
    Auxot with or without an offset (``2026-11-20 09:00:00`` or ``...+00:00``);
    both read back as the same aware datetime. We write the plain form.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Text())
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = parse_timestamp(value)
        value = as_utc(value)
        if dialect.name == "sqlite":
            return sqlite_timestamp_text(value)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return parse_timestamp(value)
        return as_utc(value)


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are UTC by the store's contract."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_timestamp(text: str) -> datetime:
    """ISO-8601 with ``T`` or a space, optional fraction, optional offset or ``Z``."""
    return as_utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))


def sqlite_timestamp_text(value: datetime) -> str:
    """The text form the store uses on SQLite: UTC, no offset, a space separator."""
    value = as_utc(value)
    if value.microsecond:
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value.strftime("%Y-%m-%d %H:%M:%S")
