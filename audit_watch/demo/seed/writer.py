"""Bulk writing into the reference tables.

SQLite: ``executemany`` in large batches inside one transaction. PostgreSQL
(psycopg 3): ``COPY ... FROM STDIN`` with ``write_row``, several streams in
parallel, committed together at the end. Rows are tuples in the reference
column order with timestamps already formatted as UTC text (the PostgreSQL
session time zone is set to UTC for the transaction, so COPY reads them as UTC).

Secondary indexes of tables this run creates are built after the load (much
faster than maintaining them row by row); tables that already existed keep
theirs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import ExitStack, suppress
from queue import Queue
from typing import Any

from psycopg.copy import QueuedLibpqWriter
from sqlalchemy import Engine, text

from audit_watch.demo.seed.rows import BULK_TABLES, COLUMNS
from audit_watch.store.schema import build_tables

SEED_TABLE = "audit_watch_seed"
# Parallel COPY streams per table on PostgreSQL: jobs outweigh the rest 3:1.
STREAMS = {"jobs": 2}
SEED_COLUMNS = ("seed", "days", "scale", "end_at")


class SeedError(RuntimeError):
    """The target database cannot be seeded (not empty, unsupported driver)."""


def prepare(engine: Engine) -> None:
    """Create the reference tables that are absent (indexes come after the load)
    and the seed ledger; refuse a database whose activity tables hold rows."""
    if engine.dialect.name not in ("sqlite", "postgresql"):
        raise SeedError(f"seeding supports SQLite and PostgreSQL, not {engine.dialect.name}")
    if engine.dialect.name == "postgresql" and engine.dialect.driver != "psycopg":
        raise SeedError("seeding PostgreSQL needs psycopg 3: use a postgresql:// or "
                        "postgresql+psycopg:// URL")
    tables = build_tables(with_indexes=False)
    metadata = next(iter(tables.values())).metadata
    metadata.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE IF NOT EXISTS {SEED_TABLE} (seed INTEGER NOT NULL, "
                          "days INTEGER NOT NULL, scale REAL NOT NULL, end_at TEXT NOT NULL)"))
        for name in ("teams", *BULK_TABLES):
            if conn.execute(text(f"SELECT 1 FROM {name} LIMIT 1")).first():
                raise SeedError(f"table {name} already holds rows: seed into an empty database "
                                "(the generator's ids would collide with a previous run)")


def create_indexes(engine: Engine) -> None:
    """The reference indexes, where absent."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
        for table in build_tables(with_indexes=True).values():
            for index in table.indexes:
                index.create(conn, checkfirst=True)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE " + ", ".join(BULK_TABLES)))


class BulkWriter:
    """Buffers rows per table and writes them through the DBAPI, one transaction."""

    def __init__(self, engine: Engine, batch: int = 50_000) -> None:
        self.engine = engine
        self.batch = batch
        self.buffers: dict[str, list[tuple]] = {name: [] for name in COLUMNS}
        self.counts: dict[str, int] = {name: 0 for name in COLUMNS}
        self.raw: Any = None

    def __enter__(self) -> BulkWriter:
        self.raw = self.engine.raw_connection()
        self._begin()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self.flush()
                self._commit()
            else:
                self._rollback(exc)
        finally:
            self._close()

    def add(self, table: str, rows: Iterable[tuple]) -> None:
        buffer = self.buffers[table]
        buffer.extend(rows)
        if len(buffer) >= self.batch:
            self._write(table, buffer)
            buffer.clear()

    def flush(self) -> None:
        for table, buffer in self.buffers.items():
            if buffer:
                self._write(table, buffer)
                buffer.clear()

    def write_seed_row(self, seed: int, days: int, scale: float, end_at: str) -> None:
        self._write_rows(self.raw, SEED_TABLE, SEED_COLUMNS, [(seed, days, scale, end_at)])

    def _write(self, table: str, rows: Sequence[tuple]) -> None:
        self._write_rows(self.raw, table, COLUMNS[table], rows)
        self.counts[table] += len(rows)

    # -- per backend -----------------------------------------------------------
    def _begin(self) -> None:
        cur = self.raw.cursor()
        cur.execute("PRAGMA synchronous = OFF")      # this connection only
        cur.execute("PRAGMA cache_size = -200000")
        cur.close()

    def _commit(self) -> None:
        self.raw.commit()

    def _rollback(self, exc: object) -> None:
        self.raw.rollback()

    def _close(self) -> None:
        self.raw.close()

    def _write_rows(self, raw: Any, table: str, columns: Sequence[str],
                    rows: Sequence[tuple]) -> None:
        marks = ", ".join("?" * len(columns))
        cur = raw.cursor()
        try:
            cur.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        finally:
            cur.close()


class PostgresBulkWriter(BulkWriter):
    """COPY into PostgreSQL: one connection and one long COPY per activity table.

    Each COPY pushes its data from a worker thread (psycopg's queued writer),
    so the generator keeps formatting rows while the server parses them, and
    the three tables load in parallel server processes. All connections commit
    at the end (or all roll back).
    """

    def __init__(self, engine: Engine, batch: int = 5_000) -> None:
        super().__init__(engine, batch)
        # (table, n) -> (connection, the open COPY's exit stack, its write_row)
        self.streams: dict[tuple[str, int], tuple[Any, ExitStack, Any]] = {}
        self.batches = dict.fromkeys(BULK_TABLES, 0)

    def _begin(self) -> None:
        self._session(self.raw)

    @staticmethod
    def _session(raw: Any) -> None:
        cur = raw.cursor()
        cur.execute("SET LOCAL TIME ZONE 'UTC'")
        cur.execute("SET LOCAL synchronous_commit = off")
        cur.close()

    def _write(self, table: str, rows: Sequence[tuple]) -> None:
        if table not in BULK_TABLES:
            super()._write(table, rows)
            return
        self.batches[table] += 1
        key = (table, self.batches[table] % STREAMS.get(table, 1))
        if key not in self.streams:
            raw = self.engine.raw_connection()
            self._session(raw)
            cur = raw.cursor()
            stack = ExitStack()
            copy = stack.enter_context(cur.copy(
                f"COPY {table} ({', '.join(COLUMNS[table])}) FROM STDIN",
                writer=_QueuedWriter(cur)))
            self.streams[key] = (raw, stack, copy.write_row)
        write_row = self.streams[key][2]
        for row in rows:
            write_row(row)
        self.counts[table] += len(rows)

    def _commit(self) -> None:
        for _, stack, _ in self.streams.values():
            stack.close()                            # ends the COPY
        for raw, _, _ in self.streams.values():
            raw.commit()
        self.raw.commit()

    def _rollback(self, exc: object) -> None:
        error = exc if isinstance(exc, BaseException) else None
        for raw, stack, _ in self.streams.values():
            with suppress(Exception):                # the original error matters more
                stack.__exit__(type(error) if error else None, error, None)
            raw.rollback()
        self.raw.rollback()

    def _close(self) -> None:
        for raw, _, _ in self.streams.values():
            raw.close()
        self.raw.close()

    def _write_rows(self, raw: Any, table: str, columns: Sequence[str],
                    rows: Sequence[tuple]) -> None:
        cur = raw.cursor()
        try:
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        finally:
            cur.close()


class _QueuedWriter(QueuedLibpqWriter):
    """psycopg's queued writer with a shorter queue (64 x 1 MB rather than 1 GB)."""

    def __init__(self, cursor: Any) -> None:
        super().__init__(cursor)
        self._queue = Queue(maxsize=64)  # type: ignore[assignment]  # psycopg types it as its own async-compatible Queue


def bulk_writer(engine: Engine) -> BulkWriter:
    if engine.dialect.name == "postgresql":
        return PostgresBulkWriter(engine)
    return BulkWriter(engine)
