"""audit-watch's own database: alert states, thread roots, silences and the outbox.

The schema is small and created by audit-watch itself: ``create_all`` plus a
``schema_version`` row that a newer release can migrate from (and that stops an
older release from writing into a newer schema). SQLite by default, PostgreSQL
in production; both through SQLAlchemy Core.

On SQLite every write transaction starts with ``BEGIN IMMEDIATE``: a
read-then-write (load states, decide, write) must hold the write lock from its
first read, or two processes could decide on the same stale rows.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine

from audit_watch.config.model import Config
from audit_watch.core.timestamps import UtcDateTime, parse_timestamp
from audit_watch.rules.alert import Alert
from audit_watch.store.source import make_engine

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RECENT_VALUES = 20

metadata = MetaData()

schema_version = Table(
    "aw_schema_version",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

# One row per (rule, group) that is pending or firing, or resolved (kept for history
# and for "resolved since"). A pending alert whose condition clears is deleted.
alert_states = Table(
    "aw_alert_state",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("rule", Text, nullable=False),
    Column("group_json", JSON, nullable=False),
    Column("group_label", Text, nullable=False),
    Column("state", String(16), nullable=False),           # pending | firing | resolved
    Column("started_at", UtcDateTime, nullable=False),     # condition began to hold (this episode)
    Column("fired_at", UtcDateTime),
    Column("resolved_at", UtcDateTime),
    Column("last_seen_at", UtcDateTime, nullable=False),   # condition last held
    Column("last_evaluated_at", UtcDateTime, nullable=False),
    Column("last_notified_at", UtcDateTime),               # this episode; NULL = nobody told yet
    Column("silenced_by", Integer),
    Column("episode", Integer, nullable=False, default=0),
    Column("recent_values", JSON, nullable=False),         # [[iso time, value], ...] oldest first
    Column("alert_json", JSON, nullable=False),            # Alert.to_json(), content redacted
    Index("ix_aw_alert_state_rule", "rule"),
)

# Which notification a (fingerprint, channel) threads under: the firing message of
# the current episode. Slack replies and updates, email In-Reply-To, both use it.
alert_threads = Table(
    "aw_alert_thread",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("channel", Text, primary_key=True),
    Column("outbox_id", Integer, nullable=False),
)

silences = Table(
    "aw_silence",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule", Text, nullable=False),                  # a name or an fnmatch pattern
    Column("matchers", JSON, nullable=False),              # {key: value}
    Column("starts_at", UtcDateTime, nullable=False),
    Column("ends_at", UtcDateTime, nullable=False),
    Column("comment", Text, nullable=False),
    Column("created_by", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expired_at", UtcDateTime),                     # ended early by `silence expire`
)

outbox = Table(
    "aw_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel", Text, nullable=False),
    Column("kind", String(16), nullable=False),            # firing | repeat | resolved
    Column("rule", Text, nullable=False),
    Column("fingerprints", JSON, nullable=False),
    Column("payload", JSON, nullable=False),               # rendered content + alerts
    Column("parent_id", Integer),                          # the thread root notification
    Column("status", String(16), nullable=False),          # queued | retrying | sending | delivered | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", UtcDateTime, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("give_up_at", UtcDateTime, nullable=False),
    Column("claimed_until", UtcDateTime),
    Column("last_attempt_at", UtcDateTime),
    Column("delivered_at", UtcDateTime),
    Column("last_error", Text),
    Column("remote_ref", JSON),                            # Slack {channel, ts}; email {message_id}
    Index("ix_aw_outbox_due", "status", "next_attempt_at"),
    Index("ix_aw_outbox_parent", "parent_id"),
)


_SCHEMA_LOCK = 0x61775F6C  # "aw_l"


def lock_schema(conn: Connection) -> None:
    """Serialise schema creation between replicas that start together (PostgreSQL:
    two concurrent CREATE TABLE IF NOT EXISTS can both try to create the table).
    Held until the transaction ends; SQLite's write transaction serialises already."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})


class StateError(RuntimeError):
    """The state database cannot be used (e.g. written by a newer audit-watch)."""


@dataclass
class StateStore:
    """audit-watch's own database. Open it with :meth:`open` or :meth:`from_config`."""

    engine: Engine

    @classmethod
    def open(cls, url: str) -> StateStore:
        engine = make_engine(url)
        if engine.dialect.name == "sqlite":
            _sqlite_explicit_transactions(engine)
        store = cls(engine)
        store.ensure_schema()
        return store

    @classmethod
    def from_config(cls, config: Config) -> StateStore:
        """``state.url`` as the config holds it: a relative SQLite path written in the
        config file was made relative to the file's folder when it was read, like
        every path in it; the default (no ``state:`` section) is
        ``audit-watch-state.db`` in the working directory."""
        return cls.open(config.state.url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def ensure_schema(self) -> None:
        with self.write() as conn:
            lock_schema(conn)
            metadata.create_all(conn)
            found = conn.execute(select(schema_version.c.version).where(schema_version.c.id == 1)).scalar()
            if found is None:
                conn.execute(insert(schema_version).values(id=1, version=SCHEMA_VERSION))
            elif found > SCHEMA_VERSION:
                raise StateError(
                    f"the state database has schema version {found}, newer than this audit-watch "
                    f"understands ({SCHEMA_VERSION}): upgrade audit-watch"
                )
            elif found < SCHEMA_VERSION:
                # Migrations from older versions go here, one step at a time.
                conn.execute(update(schema_version).values(version=SCHEMA_VERSION))

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that will write (SQLite: holds the write lock from the start)."""
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(aw_read_only=True) as conn:
            with conn.begin():
                yield conn

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_explicit_transactions(engine: Engine) -> None:
    """pysqlite defers BEGIN until the first write; we want it at the first statement."""

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        # WAL lets `audit-watch alerts` read while the daemon writes.
        if dbapi_connection.execute("PRAGMA database_list").fetchone()[2]:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        mode = "DEFERRED" if conn.get_execution_options().get("aw_read_only") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")


# --- alert states -------------------------------------------------------------------


@dataclass
class AlertState:
    """The lifecycle of one (rule, group)."""

    fingerprint: str
    rule: str
    group: dict[str, Any]
    group_label: str
    state: str
    started_at: datetime
    last_seen_at: datetime
    last_evaluated_at: datetime
    alert: dict[str, Any]
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    last_notified_at: datetime | None = None
    silenced_by: int | None = None
    episode: int = 0
    recent_values: list[list[Any]] = field(default_factory=list)

    def add_value(self, now: datetime, value: float) -> None:
        self.recent_values = [*self.recent_values, [now.isoformat(), value]][-RECENT_VALUES:]

    def to_alert(self) -> Alert:
        return alert_from_json(self.alert)


_STATE_FIELDS = (
    "fingerprint", "rule", "group_label", "state", "started_at", "fired_at", "resolved_at",
    "last_seen_at", "last_evaluated_at", "last_notified_at", "silenced_by", "episode",
    "recent_values",
)


def _state_from_row(row: Any) -> AlertState:
    m = row._mapping
    return AlertState(
        group=m["group_json"], alert=m["alert_json"], **{name: m[name] for name in _STATE_FIELDS}
    )


def _state_to_row(item: AlertState) -> dict[str, Any]:
    row = {name: getattr(item, name) for name in _STATE_FIELDS}
    row["group_json"] = item.group
    row["alert_json"] = item.alert
    return row


def load_states(conn: Connection, rule: str, lock: bool = False) -> dict[str, AlertState]:
    """The states of one rule by fingerprint (PostgreSQL: locked for this transaction)."""
    stmt = select(alert_states).where(alert_states.c.rule == rule)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return {row.fingerprint: _state_from_row(row) for row in conn.execute(stmt)}


def all_states(conn: Connection, include_resolved: bool = True) -> list[AlertState]:
    stmt = select(alert_states).order_by(alert_states.c.rule, alert_states.c.group_label)
    if not include_resolved:
        stmt = stmt.where(alert_states.c.state != "resolved")
    return [_state_from_row(row) for row in conn.execute(stmt)]


def save_states(conn: Connection, changed: list[AlertState], existing: set[str], removed: list[str]) -> None:
    """Write what the policy decided; ``existing`` tells insert from update."""
    for item in changed:
        row = _state_to_row(item)
        if item.fingerprint in existing:
            conn.execute(update(alert_states).where(alert_states.c.fingerprint == item.fingerprint).values(**row))
        else:
            conn.execute(insert(alert_states).values(**row))
    if removed:
        conn.execute(delete(alert_states).where(alert_states.c.fingerprint.in_(removed)))
        conn.execute(delete(alert_threads).where(alert_threads.c.fingerprint.in_(removed)))


def thread_roots(conn: Connection, fingerprints: list[str]) -> dict[tuple[str, str], int]:
    """{(fingerprint, channel): outbox id of the firing message}."""
    if not fingerprints:
        return {}
    rows = conn.execute(select(alert_threads).where(alert_threads.c.fingerprint.in_(fingerprints)))
    return {(row.fingerprint, row.channel): row.outbox_id for row in rows}


def set_thread_root(conn: Connection, fingerprints: list[str], channel: str, outbox_id: int) -> None:
    conn.execute(
        delete(alert_threads).where(alert_threads.c.fingerprint.in_(fingerprints), alert_threads.c.channel == channel)
    )
    rows = [{"fingerprint": fp, "channel": channel, "outbox_id": outbox_id} for fp in fingerprints]
    conn.execute(insert(alert_threads), rows)


def clear_thread_roots(conn: Connection, fingerprints: list[str]) -> None:
    """A new episode starts a new thread."""
    if fingerprints:
        conn.execute(delete(alert_threads).where(alert_threads.c.fingerprint.in_(fingerprints)))


def states_by_fingerprint(conn: Connection, fingerprints: list[str]) -> dict[str, AlertState]:
    if not fingerprints:
        return {}
    rows = conn.execute(select(alert_states).where(alert_states.c.fingerprint.in_(fingerprints)))
    return {row.fingerprint: _state_from_row(row) for row in rows}


def alert_from_json(data: dict[str, Any]) -> Alert:
    """The inverse of :meth:`Alert.to_json` (what states and the outbox store)."""
    known = {f.name for f in dataclasses.fields(Alert)}
    fields = {k: v for k, v in data.items() if k in known}
    fields["window_start"] = parse_timestamp(fields["window_start"])
    fields["window_end"] = parse_timestamp(fields["window_end"])
    return Alert(**fields)
