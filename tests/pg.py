"""Scratch PostgreSQL databases for tests: created fresh, dropped afterwards.

When the server cannot be reached the test is skipped loudly on a laptop and
fails when CI is set (the PostgreSQL half of the suite must run there).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get("AUDIT_WATCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SKIPPED: list[str] = []


def unreachable(reason: str) -> None:
    message = f"PostgreSQL at {make_url(PG_ADMIN_URL).render_as_string(hide_password=True)} is not reachable: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set: the PostgreSQL half of the tests must run)", pytrace=False)
    SKIPPED.append(message)
    pytest.skip(f"!!! SKIPPING POSTGRESQL TESTS !!! {message}")


@contextmanager
def temporary_postgres(prefix: str = "aw_test") -> Iterator[str]:
    """The URL of a fresh database on the test server; dropped (WITH FORCE) on exit."""
    admin_url = make_url(PG_ADMIN_URL)
    if admin_url.drivername == "postgresql":
        admin_url = admin_url.set(drivername="postgresql+psycopg")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure to reach the server
        admin.dispose()
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        unreachable(f"{type(exc).__name__}: {first_line}")
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
