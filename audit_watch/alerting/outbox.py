"""The durable outbox: notifications wait here until a channel has taken them.

A notification is written in the same transaction as the state change that
caused it (:func:`enqueue`), so a crash after the commit loses nothing: the next
run delivers it. Delivery claims due rows (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so replicas never take the same row), marks them ``sending`` with a
lease, sends outside any transaction, then records the result:

``queued`` -> ``sending`` -> ``delivered``
                         -> ``retrying`` (backoff with jitter, or the server's Retry-After)
                         -> ``dead``     (a permanent error, or still failing after ``max_age``)

A row left ``sending`` by a crashed worker is taken again when its lease ends
(at-least-once). A reply waits for its thread's root message to be delivered
(or dead) so that it can thread under it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, not_, or_, select, update
from sqlalchemy.engine import Connection

from audit_watch.alerting.state import StateStore, alert_threads, outbox
from audit_watch.channels.base import DeliveryResult, Notification
from audit_watch.core.outcomes import DeliveryOutcome, OutboxStatus

log = logging.getLogger(__name__)

FINAL = (OutboxStatus.DELIVERED, OutboxStatus.DEAD)


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard to try. ``max_age``: how long after queueing a failing
    notification is retried before it is kept as dead."""

    max_age: timedelta = timedelta(hours=24)
    base_delay: timedelta = timedelta(seconds=30)
    max_delay: timedelta = timedelta(hours=1)
    min_delay: timedelta = timedelta(seconds=1)
    lease: timedelta = timedelta(minutes=10)
    batch_size: int = 50

    @classmethod
    def from_config(cls, delivery: Any) -> DeliveryPolicy:
        """The policy the config's ``delivery:`` section asks for."""
        return cls(max_age=delivery.max_age, base_delay=delivery.base_delay, max_delay=delivery.max_delay)

    def backoff(self, attempts: int, rng: random.Random) -> timedelta:
        """Exponential, capped, with "equal jitter": half fixed, half random."""
        delay = min(self.max_delay.total_seconds(), self.base_delay.total_seconds() * 2 ** max(attempts - 1, 0))
        return timedelta(seconds=delay / 2 + rng.uniform(0, delay / 2))


@dataclass(frozen=True)
class Claimed:
    notification: Notification
    attempts: int
    give_up_at: datetime


@dataclass(frozen=True)
class OutboxEntry:
    """One row for ``audit-watch alerts --outbox``."""

    id: int
    channel: str
    kind: str
    rule: str
    title: str
    status: OutboxStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    give_up_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    last_error: str | None
    parent_id: int | None
    alerts: int


def enqueue(
    conn: Connection, *, channel: str, kind: str, rule: str, fingerprints: list[str], payload: dict[str, Any],
    now: datetime, policy: DeliveryPolicy, parent_id: int | None = None,
) -> int:
    """Queue a notification inside the caller's transaction; returns its id."""
    stmt = insert(outbox).values(
        channel=channel, kind=kind, rule=rule, fingerprints=fingerprints, payload=payload, parent_id=parent_id,
        status=OutboxStatus.QUEUED, attempts=0, created_at=now, next_attempt_at=now, give_up_at=now + policy.max_age,
    )
    return int(conn.execute(stmt.returning(outbox.c.id)).scalar_one())


def payload_of(conn: Connection, outbox_id: int) -> dict[str, Any] | None:
    return conn.execute(select(outbox.c.payload).where(outbox.c.id == outbox_id)).scalar()


def _due(now: datetime) -> Any:
    waiting = and_(outbox.c.status.in_((OutboxStatus.QUEUED, OutboxStatus.RETRYING)), outbox.c.next_attempt_at <= now)
    abandoned = and_(outbox.c.status == OutboxStatus.SENDING, outbox.c.claimed_until <= now)
    return or_(waiting, abandoned)


def _parent_settled() -> Any:
    parent = outbox.alias("parent")
    pending_parent = exists(select(parent.c.id).where(parent.c.id == outbox.c.parent_id, parent.c.status.not_in(FINAL)))
    return or_(outbox.c.parent_id.is_(None), not_(pending_parent))


def claim(state: StateStore, now: datetime, policy: DeliveryPolicy, exclude: Iterable[int] = (),
          only: Iterable[int] | None = None) -> list[Claimed]:
    """Take up to ``batch_size`` due rows for this worker (oldest first; ``only``:
    among these ids)."""
    excluded = list(exclude)
    with state.write() as conn:
        stmt = select(outbox.c.id).where(_due(now), _parent_settled()).order_by(outbox.c.id).limit(policy.batch_size)
        if excluded:
            stmt = stmt.where(outbox.c.id.not_in(excluded))
        if only is not None:
            stmt = stmt.where(outbox.c.id.in_(list(only)))
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True, of=outbox)
        ids = list(conn.execute(stmt).scalars())
        if not ids:
            return []
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(ids), _due(now))
            .values(status=OutboxStatus.SENDING, claimed_until=now + policy.lease, attempts=outbox.c.attempts + 1,
                    last_attempt_at=now)
        )
        claimed = select(outbox).where(outbox.c.id.in_(ids), outbox.c.status == OutboxStatus.SENDING).order_by(outbox.c.id)
        rows = conn.execute(claimed).all()
        parent_ids = {row.parent_id for row in rows if row.parent_id is not None}
        parents = {}
        if parent_ids:
            found = conn.execute(
                select(outbox.c.id, outbox.c.remote_ref, outbox.c.status).where(outbox.c.id.in_(parent_ids))
            )
            parents = {p.id: p.remote_ref for p in found if p.status == OutboxStatus.DELIVERED}
    return [
        Claimed(
            Notification(
                id=row.id, channel=row.channel, kind=row.kind, rule=row.rule, payload=row.payload,
                created_at=row.created_at, attempt=row.attempts, parent_ref=parents.get(row.parent_id),
                remote_ref=row.remote_ref,
            ),
            row.attempts,
            row.give_up_at,
        )
        for row in rows
    ]


def record(
    state: StateStore, claimed: Claimed, result: DeliveryResult, now: datetime, policy: DeliveryPolicy,
    rng: random.Random,
) -> DeliveryOutcome:
    """Store the outcome of one attempt; returns what it came to (``lost`` when another
    worker took the row over after this worker's lease ran out)."""
    n = claimed.notification
    values: dict[str, Any] = {"claimed_until": None}
    if result.remote_ref is not None:
        values["remote_ref"] = result.remote_ref
    if result.ok:
        values.update(status=OutboxStatus.DELIVERED, delivered_at=now, last_error=result.error)
    elif not result.retryable:
        values.update(status=OutboxStatus.DEAD, last_error=result.error)
        log.error("notification %s to %s failed permanently, kept as dead: %s", n.id, n.channel, result.error)
    else:
        if result.retry_after is not None:
            wait = timedelta(seconds=max(result.retry_after, 0))
            wait += timedelta(seconds=rng.uniform(0, min(1.0, wait.total_seconds() * 0.1)))
        else:
            wait = policy.backoff(claimed.attempts, rng)
        next_at = now + max(wait, policy.min_delay)
        if next_at > claimed.give_up_at:
            error = f"gave up after {claimed.attempts} attempts: {result.error}"
            values.update(status=OutboxStatus.DEAD, last_error=error)
            log.error("notification %s to %s: %s", n.id, n.channel, error)
        else:
            values.update(status=OutboxStatus.RETRYING, next_attempt_at=next_at, last_error=result.error)
            log.warning("notification %s to %s failed (attempt %s), retry at %s: %s",
                        n.id, n.channel, claimed.attempts, next_at.isoformat(), result.error)
    with state.write() as conn:
        # Only the worker holding the claim may write: after a lease ran out and another
        # worker took the row, this worker's late answer is dropped.
        done = conn.execute(
            update(outbox)
            .where(outbox.c.id == n.id, outbox.c.status == OutboxStatus.SENDING, outbox.c.attempts == claimed.attempts)
            .values(**values)
        ).rowcount
    if not done:
        log.warning("notification %s: claim lost before its result was stored", n.id)
        return DeliveryOutcome.LOST
    return DeliveryOutcome(values["status"])


def list_entries(state: StateStore, statuses: Iterable[str] | None = None, limit: int = 200) -> list[OutboxEntry]:
    """Newest first; by default everything not yet delivered (queued, retrying, sending, dead)."""
    wanted = list(statuses) if statuses is not None else [s for s in OutboxStatus if s != OutboxStatus.DELIVERED]
    with state.read() as conn:
        rows = conn.execute(
            select(outbox).where(outbox.c.status.in_(wanted)).order_by(outbox.c.id.desc()).limit(limit)
        ).all()
    return [
        OutboxEntry(
            id=r.id, channel=r.channel, kind=r.kind, rule=r.rule, title=str((r.payload or {}).get("title", "")),
            status=OutboxStatus(r.status), attempts=r.attempts, created_at=r.created_at,
            next_attempt_at=r.next_attempt_at if r.status in (OutboxStatus.QUEUED, OutboxStatus.RETRYING) else None,
            give_up_at=r.give_up_at, last_attempt_at=r.last_attempt_at, delivered_at=r.delivered_at,
            last_error=r.last_error, parent_id=r.parent_id, alerts=len(r.fingerprints or []),
        )
        for r in rows
    ]


def counts(state: StateStore) -> dict[str, int]:
    with state.read() as conn:
        rows = conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all()
    found = {status: int(count) for status, count in rows}
    return {status: found.get(status, 0) for status in OutboxStatus}


def requeue(state: StateStore, ids: Iterable[int], now: datetime, policy: DeliveryPolicy | None = None) -> int:
    """Send dead notifications again (after fixing a token, say), with a fresh ``max_age``."""
    policy = policy or DeliveryPolicy()
    with state.write() as conn:
        return conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(list(ids)), outbox.c.status == OutboxStatus.DEAD)
            .values(status=OutboxStatus.QUEUED, next_attempt_at=now, give_up_at=now + policy.max_age, last_error=None)
        ).rowcount


def prune(state: StateStore, now: datetime, older_than: timedelta = timedelta(days=30)) -> int:
    """Delete settled rows older than ``older_than`` that no thread still needs."""
    child = outbox.alias("child")
    with state.write() as conn:
        return conn.execute(
            delete(outbox).where(
                outbox.c.status.in_(FINAL),
                outbox.c.created_at < now - older_than,
                outbox.c.id.not_in(select(alert_threads.c.outbox_id)),
                not_(exists(select(child.c.id).where(child.c.parent_id == outbox.c.id, child.c.status.not_in(FINAL)))),
            )
        ).rowcount
