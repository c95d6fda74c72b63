"""The durable outbox: claim, retry with backoff, dead letters, leases, threads; both backends."""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update

from audit_watch.alerting.outbox import DeliveryPolicy, claim, counts, enqueue, list_entries, prune, record, requeue
from audit_watch.alerting.pipeline import deliver_due
from audit_watch.alerting.state import StateStore, clear_thread_roots, outbox, set_thread_root
from audit_watch.channels.base import Channel, DeliveryResult, Notification
from audit_watch.config.model import Config

from test_state import T0, state, state_url

CONFIG = Config.model_validate({"channels": {"oncall": {"type": "file", "path": "unused"}}})
POLICY = DeliveryPolicy()


class Scripted(Channel):
    """Answers from a script (then success); remembers what it was handed."""

    def __init__(self, *results: DeliveryResult) -> None:
        super().__init__("oncall")
        self.script = deque(results)
        self.sent: list[Notification] = []

    def send(self, notification: Notification) -> DeliveryResult:
        self.sent.append(notification)
        return self.script.popleft() if self.script else DeliveryResult.delivered({"ts": f"ts-{notification.id}"})

    def send_batch(self, notifications: Sequence[Notification]) -> list[DeliveryResult]:
        return [self.send(n) for n in notifications]


def queue(state: StateStore, now: datetime = T0, parent_id: int | None = None, kind: str = "firing",
          policy: DeliveryPolicy = POLICY) -> int:
    with state.write() as conn:
        return enqueue(conn, channel="oncall", kind=kind, rule="failed-jobs", fingerprints=["fp1"],
                       payload={"title": "failed-jobs: 1 alert firing", "text": "x"}, now=now,
                       policy=policy, parent_id=parent_id)


def deliver(state: StateStore, channel: Channel, now: datetime, policy: DeliveryPolicy = POLICY) -> Any:
    return deliver_due(CONFIG, state, now, policy=policy, channels={"oncall": channel}, rng=random.Random(7))


def status_of(state: StateStore, outbox_id: int) -> Any:
    with state.read() as conn:
        return conn.execute(select(outbox).where(outbox.c.id == outbox_id)).one()


def test_delivered_once_and_listed(state: StateStore) -> None:
    first, second = queue(state), queue(state, now=T0 + timedelta(minutes=1))
    channel = Scripted()
    summary = deliver(state, channel, T0)
    assert [n.id for n in channel.sent] == [first] and summary.delivered == 1   # second not due yet
    assert [e.id for e in list_entries(state)] == [second]
    deliver(state, channel, T0 + timedelta(minutes=1))
    deliver(state, channel, T0 + timedelta(minutes=2))
    assert [n.id for n in channel.sent] == [first, second]
    row = status_of(state, first)
    assert row.status == "delivered" and row.remote_ref == {"ts": f"ts-{first}"} and row.delivered_at == T0
    assert counts(state)["delivered"] == 2 and list_entries(state) == []


def test_backoff_grows_with_jitter_then_delivers_once(state: StateStore) -> None:
    item = queue(state)
    channel = Scripted(*[DeliveryResult.retry("HTTP 500")] * 3)
    now = T0
    waits = []
    for _ in range(3):
        deliver(state, channel, now)
        row = status_of(state, item)
        assert row.status == "retrying" and row.last_error == "HTTP 500"
        waits.append((row.next_attempt_at - now).total_seconds())
        assert deliver(state, channel, now + timedelta(seconds=waits[-1] - 1)).attempted == 0  # not early
        now = row.next_attempt_at
    assert 15 <= waits[0] <= 30 and 30 <= waits[1] <= 60 and 60 <= waits[2] <= 120
    deliver(state, channel, now)
    deliver(state, channel, now + timedelta(hours=2))
    assert len(channel.sent) == 4 and status_of(state, item).status == "delivered"


def test_retry_after_is_honoured(state: StateStore) -> None:
    item = queue(state)
    channel = Scripted(DeliveryResult.retry("rate limited", retry_after=2))
    deliver(state, channel, T0)
    row = status_of(state, item)
    assert timedelta(seconds=2) <= row.next_attempt_at - T0 <= timedelta(seconds=2.2)


def test_a_permanent_error_is_dead_at_once_and_can_be_requeued(state: StateStore) -> None:
    item = queue(state)
    channel = Scripted(DeliveryResult.permanent("slack error channel_not_found"))
    deliver(state, channel, T0)
    deliver(state, channel, T0 + timedelta(hours=1))
    assert len(channel.sent) == 1
    [entry] = list_entries(state)
    assert entry.status == "dead" and "channel_not_found" in (entry.last_error or "")
    assert requeue(state, [item], T0 + timedelta(hours=2)) == 1
    deliver(state, channel, T0 + timedelta(hours=2))
    assert status_of(state, item).status == "delivered"


def test_gives_up_after_max_age(state: StateStore) -> None:
    policy = DeliveryPolicy(max_age=timedelta(minutes=10))
    item = queue(state, policy=policy)
    channel = Scripted(*[DeliveryResult.retry("connection refused")] * 100)
    now = T0
    for _ in range(20):
        deliver(state, channel, now, policy)
        row = status_of(state, item)
        if row.status == "dead":
            break
        now = row.next_attempt_at
    assert row.status == "dead" and row.last_error.startswith("gave up after")
    assert "connection refused" in row.last_error and now <= T0 + timedelta(minutes=10)


def test_a_crash_while_sending_is_retried_after_the_lease(state: StateStore) -> None:
    item = queue(state)
    [claimed] = claim(state, T0, POLICY)               # this worker "crashes" here
    channel = Scripted()
    assert deliver(state, channel, T0 + timedelta(minutes=5)).attempted == 0      # lease still held
    deliver(state, channel, T0 + POLICY.lease)
    assert [n.id for n in channel.sent] == [item] and status_of(state, item).status == "delivered"
    # The crashed worker's late answer is not allowed to overwrite the result.
    assert record(state, claimed, DeliveryResult.permanent("late"), T0 + timedelta(hours=1), POLICY,
                  random.Random(1)) == "lost"
    assert status_of(state, item).status == "delivered"


def test_a_reply_waits_for_its_root_and_gets_its_reference(state: StateStore) -> None:
    root = queue(state)
    reply = queue(state, parent_id=root, kind="resolved")
    channel = Scripted(DeliveryResult.retry("HTTP 503"))
    deliver(state, channel, T0)
    assert [n.id for n in channel.sent] == [root]                     # the reply waited
    deliver(state, channel, T0 + timedelta(hours=1))
    assert [n.id for n in channel.sent] == [root, root, reply]       # root first, then reply, same run
    assert channel.sent[-1].parent_ref == {"ts": f"ts-{root}"}


def test_a_reply_under_a_dead_root_goes_out_on_its_own(state: StateStore) -> None:
    root = queue(state)
    reply = queue(state, parent_id=root, kind="resolved")
    channel = Scripted(DeliveryResult.permanent("not_in_channel"))
    deliver(state, channel, T0)
    assert [n.id for n in channel.sent] == [root, reply] and channel.sent[1].parent_ref is None


def test_unknown_channel_is_dead_with_a_reason(state: StateStore) -> None:
    with state.write() as conn:
        item = enqueue(conn, channel="gone", kind="firing", rule="r", fingerprints=[], payload={}, now=T0,
                       policy=POLICY)
    deliver_due(CONFIG, state, T0)
    row = status_of(state, item)
    assert row.status == "dead" and "not configured" in row.last_error


def test_prune_deletes_old_settled_rows_and_keeps_what_a_thread_still_needs(state: StateStore) -> None:
    """Catches prune without either of its thread protections: the root of a firing
    alert's thread (aw_alert_thread) and a root whose reply is still waiting."""
    now = T0 + timedelta(days=40)
    plain = queue(state)                                   # old, delivered, nobody refers to it: deleted
    root_of_firing = queue(state)                          # old, delivered, thread root of a firing alert
    root_with_reply = queue(state)                         # old, delivered, its reply not yet sent
    reply = queue(state, now=now, parent_id=root_with_reply, kind="resolved")
    old_retrying = queue(state)                            # old but not settled: kept
    recent = queue(state, now=now - timedelta(days=29))    # settled but recent: kept
    channel = Scripted(DeliveryResult.delivered({"ts": "1"}), DeliveryResult.delivered({"ts": "2"}),
                       DeliveryResult.delivered({"ts": "3"}), DeliveryResult.retry("HTTP 500"))
    deliver(state, channel, T0)
    with state.write() as conn:      # the retry and the reply wait beyond the prune below
        conn.execute(update(outbox).where(outbox.c.id.in_([reply, old_retrying]))
                     .values(next_attempt_at=now + timedelta(days=1)))
    deliver(state, Scripted(), now - timedelta(days=29))
    with state.write() as conn:
        set_thread_root(conn, ["fp1"], "oncall", root_of_firing)
    assert status_of(state, old_retrying).status == "retrying" and status_of(state, reply).status == "queued"
    assert prune(state, now, older_than=timedelta(days=30)) == 1
    with state.read() as conn:
        left = [r.id for r in conn.execute(select(outbox.c.id).order_by(outbox.c.id))]
    assert left == [root_of_firing, root_with_reply, reply, old_retrying, recent] and plain not in left
    # Once the reply is settled and the thread has moved on, both old roots go too.
    deliver(state, Scripted(), now + timedelta(days=1))
    with state.write() as conn:
        clear_thread_roots(conn, ["fp1"])
    assert prune(state, now + timedelta(days=1), older_than=timedelta(days=30)) == 3   # both roots, old_retrying
    with state.read() as conn:
        assert [r.id for r in conn.execute(select(outbox.c.id).order_by(outbox.c.id))] == [reply, recent]


@pytest.mark.parametrize("workers", [2, 4])
def test_concurrent_claimers_never_take_the_same_row(state: StateStore, workers: int) -> None:
    """Each row goes to exactly one worker (SQLite: one writer at a time; PostgreSQL:
    FOR UPDATE SKIP LOCKED)."""
    ids = {queue(state) for _ in range(40)}
    policy = DeliveryPolicy(batch_size=3)
    start = threading.Barrier(workers)

    def worker() -> list[int]:
        start.wait()
        taken: list[int] = []
        while batch := claim(state, T0, policy):
            taken += [c.notification.id for c in batch]
        return taken

    with ThreadPoolExecutor(workers) as pool:
        results = [f.result() for f in [pool.submit(worker) for _ in range(workers)]]
    taken = [i for result in results for i in result]
    assert sorted(taken) == sorted(ids)                     # every row once, none twice
    assert counts(state)["sending"] == 40


@pytest.mark.postgres
@pytest.mark.parametrize("state_url", ["postgresql"], indirect=True)
def test_claim_skips_rows_locked_by_another_worker(state: StateStore) -> None:
    """PostgreSQL only: FOR UPDATE SKIP LOCKED passes over a row another transaction
    holds (SQLite has one writer; its case is the concurrent test above)."""
    first, second = queue(state), queue(state)
    with state.engine.connect() as other:
        with other.begin():
            other.execute(text("SELECT id FROM aw_outbox WHERE id = :id FOR UPDATE"), {"id": first})
            # In a thread: a claim that waited for the lock instead of skipping the row would
            # wait for this very transaction; the timeout turns that hang into a failure.
            pool = ThreadPoolExecutor(1)
            try:
                claimed = pool.submit(claim, state, T0, POLICY).result(timeout=10)
            finally:
                pool.shutdown(wait=False)
            assert [c.notification.id for c in claimed] == [second]
    assert [c.notification.id for c in claim(state, T0, POLICY)] == [first]
