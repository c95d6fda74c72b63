"""Engines for the audit store and the state database, per backend.

- PostgreSQL: psycopg 3, pre-ping (survives a server restart), a UTC session,
  custom plans only, an optional statement timeout.
- SQLite: a file opened read-only when asked, through a ``file:`` URI whose path is
  percent-encoded (a ``#`` or ``?`` in a file name is part of the name, not a
  fragment or query that would open another file); an in-memory database shares
  one connection so that all sessions see it; a progress handler stands in for the
  statement timeout; every connection gets audit-watch's SQL functions
  (:mod:`audit_watch.store.text_match`).
"""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import QueuePool, StaticPool

from audit_watch.store.text_match import register_sqlite_functions

_SQLITE_BUSY_TIMEOUT_S = 30


def make_engine(url: str, readonly: bool = False, statement_timeout: timedelta | None = None) -> Engine:
    """An engine for the audit store or the state database (see the module's doc)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        # psycopg prepares a statement run 5 times on a connection, and after 5 more
        # runs PostgreSQL may switch it to a generic plan that cannot see the bound
        # values. A rule's statement is the same text at every tick, and its values
        # decide the plan: with `event_type = $1` unknown, new-login-ip's generic plan
        # scans every event of the lookback by time (160 ms instead of 1 ms).
        options = "-c TimeZone=UTC -c plan_cache_mode=force_custom_plan"
        if statement_timeout:
            options += f" -c statement_timeout={int(statement_timeout.total_seconds() * 1000)}"
        return create_engine(parsed, pool_pre_ping=True, connect_args={"options": options})
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(parsed, readonly)
        event.listen(engine, "connect", register_sqlite_functions)
        if statement_timeout:
            _sqlite_progress_timeout(engine, statement_timeout)
        return engine
    return create_engine(parsed, pool_pre_ping=True)


def sqlite_readonly_uri(path: str) -> str:
    """The ``file:`` URI that opens exactly ``path``, read-only (never creating it).

    In a URI ``?`` starts the query and ``#`` the fragment, and ``%`` escapes: all
    three (and anything else outside the unreserved set) are percent-encoded.
    """
    return f"file:{quote(path, safe='/')}?mode=ro"


def _sqlite_engine(parsed: URL, readonly: bool) -> Engine:
    database = parsed.database or ""
    if database in ("", ":memory:"):
        return create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    if not readonly or database.startswith("file:"):  # a URI given by the user is taken as written
        return create_engine(parsed, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})
    uri = sqlite_readonly_uri(database)

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=_SQLITE_BUSY_TIMEOUT_S, check_same_thread=False)

    # A file database: a pool of connections, as SQLAlchemy gives a file URL.
    return create_engine("sqlite://", creator=connect, poolclass=QueuePool)


def _sqlite_progress_timeout(engine: Engine, timeout: timedelta) -> None:
    """SQLite has no statement_timeout: interrupt a query that runs too long."""
    limit = timeout.total_seconds()

    @event.listens_for(engine, "connect")
    def _install(dbapi_connection: Any, record: Any) -> None:
        state: dict[str, Any] = {"start": None}

        def handler() -> int:
            return 1 if state["start"] and time.monotonic() - state["start"] > limit else 0

        dbapi_connection.set_progress_handler(handler, 100_000)
        record.info["audit_watch_timer"] = state

    @event.listens_for(engine, "before_cursor_execute")
    def _start(conn: Any, *_args: Any) -> None:
        state = conn.connection.info.get("audit_watch_timer")
        if state is not None:
            state["start"] = time.monotonic()
