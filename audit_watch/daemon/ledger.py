"""The run ledger: who evaluates which (job, tick), and which replicas are alive.

APScheduler 3 keeps its jobs in memory, one scheduler per process; replicas
coordinate here, in the state database:

* ``aw_run_ledger``: one row per (job, scheduled_for), where a job is a rule
  name, ``report:NAME`` for a scheduled report, or a built-in check. Every replica's scheduler fires every job; the claim
  (``INSERT ... ON CONFLICT DO NOTHING``) lets exactly one evaluate the tick.
  The row then records the outcome: history, error streaks, missed ticks.
* ``aw_replica``: each running ``audit-watch run`` heartbeats its row. A replica
  whose heartbeat stops is *reaped* by one survivor: its unfinished claims are
  taken over or abandoned, and the outbox rows it was sending are released.
* ``aw_delivery_run``: a delivery pass claims outbox rows with ``last_attempt_at``
  set to the pass's ``now``; registering that ``now`` (unique across replicas)
  first is what lets a survivor find the rows a dead replica was sending.

Times are written with each replica's clock: replicas must run NTP (ticks are
wall-clock times on every replica anyway).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from audit_watch.alerting import outbox as outbox_rows
from audit_watch.alerting.state import StateError, StateStore, lock_schema, outbox
from audit_watch.core.errors import short_error
from audit_watch.core.outcomes import OutboxStatus, RunStatus
from audit_watch.core.timestamps import UtcDateTime

log = logging.getLogger(__name__)

ledger_metadata = MetaData()

run_ledger = Table(
    "aw_run_ledger",
    ledger_metadata,
    Column("job", Text, primary_key=True),                  # a rule name or "audit-watch:..."
    Column("scheduled_for", UtcDateTime, primary_key=True),  # the tick
    Column("replica", Text, nullable=False),
    Column("status", String(16), nullable=False),          # a RunStatus
    Column("attempt", Integer, nullable=False, default=1),   # +1 when a survivor takes it over
    Column("claimed_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("seconds", Float),
    Column("alerts", Integer),
    Column("error", Text),
    Index("ix_aw_run_ledger_open", "status", "replica"),
    Index("ix_aw_run_ledger_time", "scheduled_for"),
)

replicas = Table(
    "aw_replica",
    ledger_metadata,
    Column("id", Text, primary_key=True),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    Column("stopped_at", UtcDateTime),
    Column("reaped_at", UtcDateTime),
    Column("reaped_by", Text),
)

delivery_runs = Table(
    "aw_delivery_run",
    ledger_metadata,
    Column("at", UtcDateTime, primary_key=True),   # the `now` the pass claims outbox rows with
    Column("replica", Text, nullable=False),
    Index("ix_aw_delivery_run_replica", "replica"),
)


REPORT_JOB_PREFIX = "report:"   # no rule name starts with it (rule_model)


def ensure_ledger_schema(state: StateStore) -> None:
    with state.write() as conn:
        lock_schema(conn)
        ledger_metadata.create_all(conn)


def report_job(name: str) -> str:
    """The ledger's job name for a scheduled report's runs (a rule's is its name)."""
    return REPORT_JOB_PREFIX + name


def report_name(job: str) -> str | None:
    """The report a job name stands for; None for a rule."""
    return job[len(REPORT_JOB_PREFIX):] if job.startswith(REPORT_JOB_PREFIX) else None


def new_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _insert(conn: Connection, table: Table) -> Any:
    """An INSERT that can take ``on_conflict_do_nothing`` on this dialect."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


# --- claims -------------------------------------------------------------------------


def claim(state: StateStore, job: str, tick: datetime, replica: str, now: datetime) -> bool:
    """Take (job, tick) for ``replica``; False when another replica (or an earlier
    run of this one) already has it."""
    with state.write() as conn:
        stmt = _insert(conn, run_ledger).values(
            job=job, scheduled_for=tick, replica=replica, status=RunStatus.CLAIMED, attempt=1, claimed_at=now,
        ).on_conflict_do_nothing(index_elements=["job", "scheduled_for"])
        # RETURNING says whether the row went in: SQLAlchemy 2.1 reports rowcount -1 for an INSERT.
        return conn.execute(stmt.returning(run_ledger.c.job)).first() is not None


def finish(state: StateStore, job: str, tick: datetime, replica: str, status: RunStatus, now: datetime, *,
           seconds: float | None = None, alerts: int | None = None, error: str | None = None) -> bool:
    """Record the outcome; False when the claim was taken over meanwhile (we were
    presumed dead), in which case nothing is written."""
    with state.write() as conn:
        return finish_in(conn, job, tick, replica, status, now, seconds=seconds, alerts=alerts, error=error)


def finish_in(conn: Connection, job: str, tick: datetime, replica: str, status: RunStatus, now: datetime, *,
              seconds: float | None = None, alerts: int | None = None, error: str | None = None) -> bool:
    """:func:`finish` inside the caller's transaction (with the writes the outcome stands for)."""
    return conn.execute(
        update(run_ledger)
        .where(run_ledger.c.job == job, run_ledger.c.scheduled_for == tick, run_ledger.c.replica == replica,
               run_ledger.c.status == RunStatus.CLAIMED)
        .values(status=status, finished_at=now, seconds=seconds, alerts=alerts, error=error)
    ).rowcount == 1


def is_claimed(state: StateStore, job: str, tick: datetime) -> bool:
    with state.read() as conn:
        found = conn.execute(
            select(run_ledger.c.job).where(run_ledger.c.job == job, run_ledger.c.scheduled_for == tick)
        ).first()
    return found is not None


@dataclass(frozen=True)
class Streak:
    """The current run of errors of one job (0 when its last finished run was ok)."""

    errors: int
    since: datetime | None
    last_error: str | None


def error_streak(state: StateStore, job: str) -> Streak:
    """Consecutive errors since the last ok run (held and abandoned runs do not count)."""
    with state.read() as conn:
        last_ok = conn.execute(
            select(func.max(run_ledger.c.scheduled_for)).where(run_ledger.c.job == job, run_ledger.c.status == RunStatus.OK)
        ).scalar()
        cond = [run_ledger.c.job == job, run_ledger.c.status == RunStatus.ERROR]
        if last_ok is not None:
            cond.append(run_ledger.c.scheduled_for > last_ok)
        count, since = conn.execute(select(func.count(), func.min(run_ledger.c.scheduled_for)).where(*cond)).one()
        last_error = None
        if count:
            last_error = conn.execute(
                select(run_ledger.c.error).where(*cond).order_by(run_ledger.c.scheduled_for.desc()).limit(1)
            ).scalar()
    return Streak(int(count), since, last_error)


def newer_claim_exists(conn: Connection, job: str, tick: datetime) -> bool:
    return conn.execute(
        select(run_ledger.c.job).where(run_ledger.c.job == job, run_ledger.c.scheduled_for > tick).limit(1)
    ).first() is not None


# --- replicas -----------------------------------------------------------------------


def register_replica(state: StateStore, replica: str, now: datetime) -> None:
    with state.write() as conn:
        conn.execute(insert(replicas).values(
            id=replica, host=socket.gethostname(), pid=os.getpid(), started_at=now, last_seen_at=now,
        ))


def heartbeat(state: StateStore, replica: str, now: datetime) -> None:
    with state.write() as conn:
        done = conn.execute(
            update(replicas).where(replicas.c.id == replica).values(last_seen_at=now, reaped_at=None, reaped_by=None)
        ).rowcount
        if not done:  # pruned while we were unreachable: come back
            conn.execute(insert(replicas).values(
                id=replica, host=socket.gethostname(), pid=os.getpid(), started_at=now, last_seen_at=now,
            ))


def mark_stopped(state: StateStore, replica: str, now: datetime) -> None:
    with state.write() as conn:
        conn.execute(update(replicas).where(replicas.c.id == replica).values(stopped_at=now, last_seen_at=now))


class ReplicaBeat(threading.Thread):
    """This replica's heartbeat, on its own thread so that no busy job can delay it."""

    def __init__(self, state: StateStore, replica: str, clock: Any, every: float = 1.0) -> None:
        super().__init__(name="replica-heartbeat", daemon=True)
        self.state, self.replica, self.clock, self.every = state, replica, clock, every
        self.stopped = threading.Event()
        self._ok_since: float | None = None

    def reachable_for(self) -> float:
        """Seconds the state database has answered every heartbeat (0 while it does not)."""
        since = self._ok_since
        return 0.0 if since is None else time.monotonic() - since

    def run(self) -> None:
        failing = False
        while not self.stopped.is_set():
            try:
                heartbeat(self.state, self.replica, self.clock())
                if self._ok_since is None:
                    self._ok_since = time.monotonic()
                if failing:
                    log.warning("state database reachable again")
                failing = False
            except Exception as exc:  # noqa: BLE001 - logged once per outage
                self._ok_since = None
                if not failing:
                    log.error("state database unreachable: %s", short_error(exc))
                failing = True
            self.stopped.wait(self.every)


def open_state(url: str, stop: threading.Event) -> StateStore | None:
    """The state database with the ledger's tables, waiting for it to come up (a
    daemon may start before its database). None when stopped meanwhile, or when the
    database was written by a newer audit-watch."""
    delay = 1.0
    while not stop.is_set():
        try:
            state = StateStore.open(url)
            ensure_ledger_schema(state)
            return state
        except StateError as exc:
            log.error("%s", exc)
            return None
        except Exception as exc:  # noqa: BLE001 - unreachable: wait and try again
            log.error("state database unavailable, retrying in %.0fs: %s", delay, short_error(exc))
            stop.wait(delay)
            delay = min(delay * 2, 30.0)
    return None


def live_replicas(state: StateStore, now: datetime, dead_after: timedelta) -> list[str]:
    with state.read() as conn:
        rows = conn.execute(
            select(replicas.c.id).where(replicas.c.stopped_at.is_(None), replicas.c.last_seen_at >= now - dead_after)
            .order_by(replicas.c.id)
        )
        return list(rows.scalars())


def reap_candidates(state: StateStore, me: str, now: datetime, dead_after: timedelta) -> list[str]:
    """Replicas gone (stopped, or silent for ``dead_after``) that nobody has reaped yet."""
    with state.read() as conn:
        rows = conn.execute(
            select(replicas.c.id).where(
                replicas.c.id != me, replicas.c.reaped_at.is_(None),
                or_(replicas.c.stopped_at.is_not(None), replicas.c.last_seen_at < now - dead_after),
            )
        )
        return list(rows.scalars())


@dataclass
class Reaped:
    """What one survivor took from a dead replica."""

    replica: str
    released_outbox: int = 0
    orphans: list[tuple[str, datetime]] | None = None   # unfinished claims, now ours (attempt + 1)


def reap(state: StateStore, dead: str, me: str, now: datetime) -> Reaped | None:
    """Take over a dead replica: exactly one survivor gets it (None for the others).

    Its unfinished claims become ours (the caller runs or abandons each); the
    outbox rows it was sending become due again at once.
    """
    result = Reaped(dead, orphans=[])
    with state.write() as conn:
        won = conn.execute(
            update(replicas).where(replicas.c.id == dead, replicas.c.reaped_at.is_(None))
            .values(reaped_at=now, reaped_by=me)
        ).rowcount
        if not won:
            return None
        runs = list(conn.execute(select(delivery_runs.c.at).where(delivery_runs.c.replica == dead)).scalars())
        if runs:
            result.released_outbox = conn.execute(
                update(outbox).where(outbox.c.status == OutboxStatus.SENDING, outbox.c.last_attempt_at.in_(runs))
                .values(claimed_until=now)
            ).rowcount
            conn.execute(delete(delivery_runs).where(delivery_runs.c.replica == dead))
        open_rows = conn.execute(
            select(run_ledger.c.job, run_ledger.c.scheduled_for)
            .where(run_ledger.c.replica == dead, run_ledger.c.status == RunStatus.CLAIMED)
        ).all()
        if open_rows:
            conn.execute(
                update(run_ledger).where(run_ledger.c.replica == dead, run_ledger.c.status == RunStatus.CLAIMED)
                .values(replica=me, attempt=run_ledger.c.attempt + 1, claimed_at=now)
            )
        result.orphans = [(row.job, row.scheduled_for) for row in open_rows]
    return result


# --- delivery runs ------------------------------------------------------------------


def open_delivery_run(state: StateStore, replica: str, now: datetime) -> datetime:
    """Register ``now`` (moved on by a microsecond while taken) as this replica's
    delivery pass; returns the ``now`` the pass must use."""
    at = now
    for _ in range(1000):
        with state.write() as conn:
            stmt = _insert(conn, delivery_runs).values(at=at, replica=replica).on_conflict_do_nothing()
            if conn.execute(stmt.returning(delivery_runs.c.at)).first() is not None:
                return at
        at += timedelta(microseconds=1)
    raise RuntimeError("could not register a delivery pass")  # pragma: no cover - 1000 collisions


def close_delivery_run(state: StateStore, at: datetime) -> None:
    with state.write() as conn:
        conn.execute(delete(delivery_runs).where(delivery_runs.c.at == at))


# --- history and housekeeping -------------------------------------------------------


def history(state: StateStore, job: str | None = None, since: datetime | None = None) -> list[Any]:
    """Ledger rows oldest first (tests, ``alerts``-style listings)."""
    stmt = select(run_ledger).order_by(run_ledger.c.job, run_ledger.c.scheduled_for)
    if job is not None:
        stmt = stmt.where(run_ledger.c.job == job)
    if since is not None:
        stmt = stmt.where(run_ledger.c.scheduled_for >= since)
    with state.read() as conn:
        return list(conn.execute(stmt).all())


def last_ticks(state: StateStore, jobs: Iterable[str]) -> dict[str, datetime]:
    """The newest claimed tick of each job (any replica)."""
    names = list(jobs)
    if not names:
        return {}
    with state.read() as conn:
        rows = conn.execute(
            select(run_ledger.c.job, func.max(run_ledger.c.scheduled_for))
            .where(run_ledger.c.job.in_(names)).group_by(run_ledger.c.job)
        )
        return {job: tick for job, tick in rows}


def prune(state: StateStore, now: datetime, keep: timedelta) -> int:
    """Forget ledger rows and replicas older than ``keep`` (error streaks older than
    that start counting from the cut)."""
    cut = now - keep
    with state.write() as conn:
        removed = conn.execute(
            delete(run_ledger).where(run_ledger.c.scheduled_for < cut, run_ledger.c.status != RunStatus.CLAIMED)
        ).rowcount
        conn.execute(delete(replicas).where(
            replicas.c.last_seen_at < cut, or_(replicas.c.stopped_at.is_not(None), replicas.c.reaped_at.is_not(None))
        ))
        # A pass that crashed before it ended and whose replica was never reaped.
        conn.execute(delete(delivery_runs).where(and_(delivery_runs.c.at < cut)))
    return int(removed)


def housekeeping(state: StateStore, now: datetime, keep: timedelta) -> None:
    """Hourly: forget old ledger rows and replicas, and settled notifications (30 days)."""
    try:
        pruned = prune(state, now, keep)
        sent = outbox_rows.prune(state, now)
        log.info("pruned %d ledger rows and %d settled notifications", pruned, sent)
    except Exception as exc:  # noqa: BLE001 - next hour
        log.warning("pruning failed: %s", short_error(exc))
