"""The run ledger and the tick arithmetic, on SQLite and PostgreSQL; no wall clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select

from audit_watch.alerting.state import StateStore, outbox
from audit_watch.core.outcomes import RunStatus
from audit_watch.daemon import ledger
from audit_watch.daemon.schedules import (
    ANCHOR,
    CronScheduleTrigger,
    interval_trigger,
    latest_tick,
    rule_trigger,
    tick_gap,
)
from audit_watch.daemon.takeover import orphan_action
from audit_watch.rules.loader import RULE_ADAPTER

from test_state import T0, emptied_state, state_url

S = timedelta(seconds=1)
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def state(state_url: str) -> Iterator[StateStore]:
    """An empty state database with the ledger's tables."""
    store = StateStore.open(state_url)
    ledger.ensure_ledger_schema(store)
    store.close()
    yield from emptied_state(state_url, ledger.ledger_metadata)


# --- claims -----------------------------------------------------------------------------------


def test_a_tick_is_claimed_once_and_finished_by_its_holder(state: StateStore) -> None:
    assert ledger.claim(state, "r", T0, "a", T0)
    assert not ledger.claim(state, "r", T0, "b", T0)
    assert ledger.claim(state, "r", T0 + S, "b", T0 + S)            # the next tick is free
    assert not ledger.finish(state, "r", T0, "b", RunStatus.OK, T0)    # not b's claim
    assert ledger.finish(state, "r", T0, "a", RunStatus.OK, T0, seconds=0.1, alerts=2)
    assert not ledger.finish(state, "r", T0, "a", RunStatus.ERROR, T0)  # already finished
    rows = ledger.history(state, "r")
    assert [(r.replica, r.status, r.alerts) for r in rows] == [("a", "ok", 2), ("b", "claimed", None)]
    assert rows[0].scheduled_for == T0 and ledger.is_claimed(state, "r", T0)


def test_the_error_streak_counts_errors_since_the_last_success(state: StateStore) -> None:
    outcomes = ["error", "ok", "error", "held", "error", "error"]
    for i, status in enumerate(outcomes):
        ledger.claim(state, "r", T0 + i * S, "a", T0)
        ledger.finish(state, "r", T0 + i * S, "a", status, T0, error=f"boom {i}" if status == "error" else None)
    streak = ledger.error_streak(state, "r")
    assert (streak.errors, streak.since, streak.last_error) == (3, T0 + 2 * S, "boom 5")
    assert ledger.error_streak(state, "other") == ledger.Streak(0, None, None)
    ledger.claim(state, "r", T0 + 9 * S, "a", T0)
    ledger.finish(state, "r", T0 + 9 * S, "a", "ok", T0)
    assert ledger.error_streak(state, "r").errors == 0


def test_delivery_passes_get_distinct_times(state: StateStore) -> None:
    first = ledger.open_delivery_run(state, "a", T0)
    second = ledger.open_delivery_run(state, "b", T0)
    assert first == T0 and second == T0 + timedelta(microseconds=1)
    ledger.close_delivery_run(state, first)
    assert ledger.open_delivery_run(state, "c", T0) == T0


# --- replicas ----------------------------------------------------------------------------------


def _sending_row(state: StateStore, at: datetime) -> int:
    with state.write() as conn:
        return int(conn.execute(insert(outbox).values(
            channel="oncall", kind="firing", rule="r", fingerprints=["f"], payload={}, status="sending", attempts=1,
            created_at=at, next_attempt_at=at, give_up_at=at + timedelta(days=1), claimed_until=at + timedelta(minutes=10),
            last_attempt_at=at,
        ).returning(outbox.c.id)).scalar_one())


def test_a_dead_replica_is_reaped_by_one_survivor(state: StateStore) -> None:
    dead_after = timedelta(seconds=6)
    for name in ("a", "b", "c"):
        ledger.register_replica(state, name, T0)
    ledger.claim(state, "r", T0, "a", T0)
    ledger.claim(state, "r2", T0, "b", T0)
    mine = _sending_row(state, ledger.open_delivery_run(state, "a", T0))
    their_pass = ledger.open_delivery_run(state, "b", T0)
    theirs = _sending_row(state, their_pass)
    later = T0 + 10 * S
    ledger.heartbeat(state, "b", later)
    ledger.heartbeat(state, "c", later)
    assert ledger.live_replicas(state, later, dead_after) == ["b", "c"]
    assert ledger.reap_candidates(state, "b", later, dead_after) == ["a"]
    reaped = ledger.reap(state, "a", "b", later)
    assert reaped is not None and reaped.orphans == [("r", T0)] and reaped.released_outbox == 1
    assert ledger.reap(state, "a", "c", later) is None                  # exactly one survivor
    assert ledger.reap_candidates(state, "c", later, dead_after) == []
    with state.read() as conn:
        leases = dict(conn.execute(select(outbox.c.id, outbox.c.claimed_until)).all())
    assert leases[mine] == later and leases[theirs] == their_pass + timedelta(minutes=10)  # b's own row untouched
    [row] = ledger.history(state, "r")
    assert (row.replica, row.status, row.attempt) == ("b", "claimed", 2)
    assert ledger.finish(state, "r", T0, "b", RunStatus.ABANDONED, later)
    assert not ledger.finish(state, "r", T0, "a", RunStatus.OK, later)      # the dead one's late answer is dropped


def test_a_stopped_replica_is_reaped_at_once_and_a_paused_one_comes_back(state: StateStore) -> None:
    for name in ("a", "b", "c"):
        ledger.register_replica(state, name, T0)
    ledger.mark_stopped(state, "a", T0)
    assert ledger.reap_candidates(state, "b", T0, timedelta(seconds=6)) == ["a"]   # no waiting for a clean stop
    ledger.reap(state, "a", "b", T0)
    later = T0 + 10 * S
    ledger.heartbeat(state, "b", later)
    assert ledger.reap_candidates(state, "b", later, timedelta(seconds=6)) == ["c"]
    ledger.reap(state, "c", "b", later)
    ledger.heartbeat(state, "c", later + S)   # back from a pause (SIGSTOP, a partition): alive again
    assert ledger.live_replicas(state, later + S, timedelta(seconds=6)) == ["b", "c"]
    assert ledger.reap_candidates(state, "b", later + S, timedelta(seconds=6)) == []


def test_prune_keeps_open_claims_and_recent_rows(state: StateStore) -> None:
    old = T0 - timedelta(days=5)
    ledger.claim(state, "r", old, "a", old)
    ledger.claim(state, "r", old + S, "a", old)
    ledger.finish(state, "r", old + S, "a", RunStatus.OK, old)
    ledger.claim(state, "r", T0, "a", T0)
    ledger.finish(state, "r", T0, "a", RunStatus.OK, T0)
    assert ledger.prune(state, T0, timedelta(days=3)) == 1
    assert [r.scheduled_for for r in ledger.history(state, "r")] == [old, T0]
    assert ledger.last_ticks(state, ["r", "none"]) == {"r": T0}


# --- ticks (pure) -----------------------------------------------------------------------------


def _rule(**keys: object) -> object:
    return RULE_ADAPTER.validate_python({"name": "r", "kind": "threshold", "threshold": {"op": ">=", "value": 1}, **keys})


def test_every_ticks_count_from_a_fixed_anchor() -> None:
    trigger = rule_trigger(_rule(every="15m"), "UTC")
    now = datetime(2026, 11, 20, 12, 14, 59, 999999, tzinfo=UTC)
    assert latest_tick(trigger, now) == datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    assert latest_tick(trigger, now + timedelta(microseconds=1)) == datetime(2026, 11, 20, 12, 15, tzinfo=UTC)
    assert trigger.get_next_fire_time(None, now) == datetime(2026, 11, 20, 12, 15, tzinfo=UTC)
    assert tick_gap(trigger, ANCHOR) == timedelta(minutes=15)
    assert latest_tick(interval_trigger(S), T0 + timedelta(milliseconds=700)) == T0
    weekly = interval_trigger(timedelta(weeks=1))
    assert latest_tick(weekly, T0).weekday() == 0      # Mondays, 00:00 UTC


def test_a_schedule_is_standard_cron_in_the_rules_time_zone() -> None:
    # 0 = Sunday and 1-5 = Monday to Friday, as in crontab (APScheduler 3's own
    # from_crontab would take 1 for Tuesday).
    trigger = rule_trigger(_rule(schedule="0 9 * * 1-5", timezone="Europe/Berlin"), "UTC")
    friday_noon = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    assert latest_tick(trigger, friday_noon) == datetime(2026, 11, 20, 8, 0, tzinfo=UTC)  # 09:00 CET
    upcoming = trigger.get_next_fire_time(None, friday_noon)
    assert upcoming.astimezone(BERLIN) == datetime(2026, 11, 23, 9, 0, tzinfo=BERLIN)            # Monday
    assert trigger.get_next_fire_time(upcoming, upcoming).astimezone(BERLIN).day == 24
    sunday = rule_trigger(_rule(schedule="30 6 * * 0"), "UTC")
    assert latest_tick(sunday, friday_noon) == datetime(2026, 11, 15, 6, 30, tzinfo=UTC)
    exact = datetime(2026, 11, 15, 6, 30, tzinfo=UTC)
    assert latest_tick(sunday, exact) == exact and sunday.get_next_fire_time(None, exact) == exact


def test_a_schedule_across_the_spring_forward_gap() -> None:
    trigger = CronScheduleTrigger("30 2 * * *", BERLIN)   # 02:30 does not exist on 2026-03-29
    after = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)
    tick = latest_tick(trigger, after)
    assert tick.date().isoformat() == "2026-03-29" and tick.astimezone(BERLIN).hour == 3
    assert tick_gap(trigger, tick) < timedelta(hours=24)


def test_an_orphaned_tick_runs_again_only_while_it_is_current() -> None:
    rule = _rule(every="1h")
    trigger = rule_trigger(rule, "UTC")
    tick = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    assert orphan_action(rule, trigger, tick, False, tick + timedelta(minutes=20)) == "run"
    assert orphan_action(rule, trigger, tick, False, tick + timedelta(minutes=61)) == RunStatus.ABANDONED
    assert orphan_action(rule, trigger, tick, True, tick + timedelta(minutes=20)) == RunStatus.ABANDONED
    assert orphan_action(None, None, tick, False, tick) == RunStatus.ABANDONED   # a built-in, or a removed rule
