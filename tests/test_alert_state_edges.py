"""Edges of the alert-state path that mutation testing found unguarded (``make mutate``):
thread roots per fingerprint and channel, what is stored and read back, silences at
their boundaries, the order and grouping of planned notifications."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from test_lifecycle import CONFIG, queued, state_of, tick

from audit_watch.alerting import silences
from audit_watch.alerting.notify import FIRING, REPEAT, RESOLVED, Change, decide, plan
from audit_watch.alerting.pipeline import process
from audit_watch.alerting.state import (
    StateStore,
    alert_from_json,
    alert_threads,
    all_states,
    clear_thread_roots,
    outbox,
    set_thread_root,
    thread_roots,
)

from test_state import T0, evaluation, make_alert, make_rule, state, state_url

MIN = timedelta(minutes=1)


# --- stored and read back ---------------------------------------------------------------------


def test_what_is_stored_reads_back_whole(state: StateStore) -> None:
    rule = make_rule(repeat="0s")
    tick(state, rule, T0, "a1")
    item = state_of(state)
    assert item.group == {"agent_id": "a1"} and item.alert["group"] == {"agent_id": "a1"}
    alert = make_alert("a1", now=T0)
    assert alert_from_json(alert.to_json()) == alert                          # window times too
    assert item.to_alert().window_end == T0 and item.to_alert().window_start == T0 - timedelta(minutes=15)
    # The name shown follows the audit store: a renamed agent shows its new name.
    process([evaluation(rule, T0 + MIN, make_alert("a1", "Renamed Bot", now=T0 + MIN))], CONFIG, state, T0 + MIN)
    item = state_of(state)
    assert (item.group_label, item.last_seen_at, item.last_evaluated_at) == ("Renamed Bot", T0 + MIN, T0 + MIN)


def test_all_states_are_ordered_by_rule_then_group_and_can_leave_out_the_resolved(state: StateStore) -> None:
    failed, quota = make_rule(repeat="0s"), make_rule(name="quota-errors", repeat="0s")
    process([evaluation(quota, T0, make_alert("a2", "Zed", rule="quota-errors"), make_alert("a1", "Ada", rule="quota-errors")),
             evaluation(failed, T0, make_alert("a3", "Bob"))], CONFIG, state, T0)
    process([evaluation(quota, T0 + MIN, make_alert("a2", "Zed", rule="quota-errors"))], CONFIG, state, T0 + MIN)
    with state.read() as conn:
        everything = [(s.rule, s.group_label, s.state) for s in all_states(conn)]
        active = [(s.rule, s.group_label) for s in all_states(conn, include_resolved=False)]
    assert everything == [("failed-jobs", "Bob", "firing"), ("quota-errors", "Ada", "resolved"),
                          ("quota-errors", "Zed", "firing")]
    assert active == [("failed-jobs", "Bob"), ("quota-errors", "Zed")]


def test_a_pending_alert_that_clears_takes_its_old_thread_root_along(state: StateStore) -> None:
    rule = make_rule(**{"for": "5m"}, repeat="0s")
    tick(state, rule, T0, "a1", "a2")
    [root] = tick(state, rule, T0 + 5 * MIN, "a1", "a2")                     # both fire: one message, one root
    tick(state, rule, T0 + 6 * MIN, "a2")                                    # a1 resolves (its root row stays)
    tick(state, rule, T0 + 7 * MIN, "a1", "a2")                              # a1 pending again
    tick(state, rule, T0 + 8 * MIN, "a2")                                    # and clears: forgotten
    with state.read() as conn:
        assert [(s.group_label, s.state) for s in all_states(conn)] == [("Agent a2", "firing")]
        assert conn.execute(select(alert_threads.c.outbox_id)).scalars().all() == [root]


def test_thread_roots_are_kept_per_fingerprint_and_channel(state: StateStore) -> None:
    with state.write() as conn:
        set_thread_root(conn, ["fp1"], "oncall", 1)
        set_thread_root(conn, ["fp2"], "oncall", 2)
        set_thread_root(conn, ["fp1"], "mail", 3)
        set_thread_root(conn, ["fp1"], "oncall", 4)                          # replaces only (fp1, oncall)
        assert thread_roots(conn, ["fp1", "fp2"]) == {("fp1", "oncall"): 4, ("fp2", "oncall"): 2, ("fp1", "mail"): 3}
        clear_thread_roots(conn, ["fp1"])
        assert thread_roots(conn, ["fp1", "fp2"]) == {("fp2", "oncall"): 2}


def test_an_episode_counts_on_and_keeps_its_recent_values(state: StateStore) -> None:
    rule = make_rule(repeat="0s")
    tick(state, rule, T0, "a1")
    tick(state, rule, T0 + MIN)                                              # resolved
    tick(state, rule, T0 + 2 * MIN, "a1")                                    # a second episode
    item = state_of(state)
    assert (item.episode, item.state) == (2, "firing")
    assert [v[0] for v in item.recent_values] == [T0.isoformat(), (T0 + 2 * MIN).isoformat()]


# --- silences on alerts already told ---------------------------------------------------------------


def test_a_silence_holds_back_the_repeats_and_the_resolution_of_an_alert_already_told(state: StateStore) -> None:
    rule = make_rule(repeat="30m", keep_firing_for="2h")
    [root] = tick(state, rule, T0, "a1")
    assert tick(state, rule, T0 + 30 * MIN) == [1 + root]                    # held by keep_firing_for, repeated
    silence = silences.add(state, "failed-jobs", timedelta(hours=3), "known", T0 + 31 * MIN)
    assert tick(state, rule, T0 + 60 * MIN) == []                            # repeat due, silenced
    assert state_of(state).silenced_by == silence.id
    summary = process([evaluation(rule, T0 + 121 * MIN)], CONFIG, state, T0 + 121 * MIN)   # resolves, silenced
    assert summary.notifications == [] and summary.silenced == 1
    item = state_of(state)
    assert (item.state, item.silenced_by, item.last_notified_at) == ("resolved", silence.id, T0 + 30 * MIN)
    assert queued(state) == [(FIRING, None), (REPEAT, root)]


def test_an_alert_that_fired_during_a_silence_is_told_once_when_it_ends(state: StateStore) -> None:
    rule = make_rule(repeat="0s")
    silences.add(state, "failed-jobs", timedelta(minutes=10), "deploying", T0)
    summary = process([evaluation(rule, T0, make_alert("a1"), make_alert("a2", "Billing"))], CONFIG, state, T0)
    assert summary.silenced == 2 and summary.notifications == []
    assert len(tick(state, rule, T0 + 10 * MIN, "a1")) == 1                 # the silence is over: told
    assert state_of_group(state, "Agent a1").last_notified_at == T0 + 10 * MIN
    assert tick(state, rule, T0 + 11 * MIN, "a1") == []                      # and only once


def state_of_group(state: StateStore, label: str) -> Any:
    with state.read() as conn:
        return next(s for s in all_states(conn) if s.group_label == label)


@pytest.mark.parametrize(("offset", "active"), [(-1, False), (0, True), (59, True), (60, False)])
def test_a_silence_is_in_force_from_its_start_to_just_before_its_end(state: StateStore, offset: int,
                                                                    active: bool) -> None:
    made = silences.add(state, "failed-*", timedelta(hours=1), "  window  ", T0, matchers={"agent_id": "a1"},
                        created_by="ana")
    now = T0 + offset * MIN
    assert made.active(now) is active
    with state.read() as conn:
        found = silences.active_silences(conn, now)
    assert [s.id for s in found] == ([made.id] if active else [])
    listed = silences.list_silences(state, now)
    assert [s.id for s in listed] == ([] if offset >= 60 else [made.id])     # future silences are listed too
    if listed:
        assert listed[0] == made and (made.comment, made.starts_at, made.created_at) == ("window", T0, T0)


def test_an_expired_silence_is_no_longer_in_force(state: StateStore) -> None:
    made = silences.add(state, "failed-jobs", timedelta(hours=1), "x", T0)
    ended = silences.expire(state, made.id, T0 + MIN)
    assert not ended.active(T0 + 2 * MIN) and ended.ended_at == T0 + MIN
    with state.read() as conn:
        assert silences.active_silences(conn, T0 + 2 * MIN) == []
    with pytest.raises(silences.SilenceError, match="already ended"):
        silences.expire(state, silences.add(state, "r", timedelta(hours=1), "x", T0).id, T0 + timedelta(hours=1))


def test_silences_are_listed_soonest_end_first_then_by_id(state: StateStore) -> None:
    first = silences.add(state, "a", timedelta(hours=2), "x", T0)
    second = silences.add(state, "b", timedelta(hours=1), "x", T0)
    third = silences.add(state, "c", timedelta(hours=2), "x", T0)
    assert [s.id for s in silences.list_silences(state, T0)] == [second.id, first.id, third.id]


def test_silence_input_edges() -> None:
    assert silences.parse_matchers(["error=a=b"]) == {"error": "a=b"}       # the first = splits
    with pytest.raises(silences.SilenceError, match="needs a rule name"):
        silences.add(None, " ", timedelta(hours=1), "x", T0)  # type: ignore[arg-type]


# --- planning -----------------------------------------------------------------------------------


def test_decide_resolves_every_alert_gone_whatever_the_order() -> None:
    rule = make_rule(repeat="0s")
    prior = {s.fingerprint: s for s in decide(rule, {}, [make_alert("a1"), make_alert("a2")], T0, []).changed}
    still = make_alert("a1")
    ordered = dict(sorted(prior.items(), key=lambda kv: kv[0] != still.fingerprint))   # the one still there first
    step = decide(rule, ordered, [still], T0 + MIN, [])
    assert sorted((s.group["agent_id"], s.state) for s in step.changed) == [("a1", "firing"), ("a2", "resolved")]
    assert [(e.kind, e.alert.group["agent_id"]) for e in step.events] == [(RESOLVED, "a2")]


def test_decide_forgets_a_cleared_pending_alert_and_still_resolves_the_next_one() -> None:
    rule = make_rule(**{"for": "5m"}, repeat="0s")
    firing = decide(rule, {}, [make_alert("a2")], T0 - 10 * MIN, []).changed
    firing = decide(rule, {s.fingerprint: s for s in firing}, [make_alert("a2")], T0 - 5 * MIN, []).changed
    pending = decide(rule, {}, [make_alert("a1")], T0 - MIN, []).changed
    prior = {s.fingerprint: s for s in [*pending, *firing]}                 # the pending one first
    step = decide(rule, prior, [], T0, [])
    assert step.removed == [pending[0].fingerprint]
    assert [(s.group["agent_id"], s.state) for s in step.changed] == [("a2", "resolved")]


def test_plan_orders_by_kind_then_thread_and_skips_unknown_channels(caplog: pytest.LogCaptureFixture) -> None:
    rule = make_rule(notify=["pager", "oncall"])
    step = decide(rule, {}, [make_alert("a1"), make_alert("a2"), make_alert("a3")], T0, [])
    states = {s.group["agent_id"]: s for s in step.changed}
    events = [Change(RESOLVED, states["a3"], make_alert("a3")), Change(REPEAT, states["a2"], make_alert("a2")),
              Change(REPEAT, states["a1"], make_alert("a1")), Change(FIRING, states["a3"], make_alert("a3"))]
    roots = {(states["a1"].fingerprint, "oncall"): 7}                      # a2 has no root (e.g. pruned)
    with caplog.at_level(logging.WARNING):
        planned = plan(rule, events, CONFIG.channels, roots, lambda channel: True)
    assert [(p.channel, p.kind, p.parent_id) for p in planned] == [
        ("oncall", FIRING, None), ("oncall", REPEAT, None), ("oncall", REPEAT, 7), ("oncall", RESOLVED, None)]
    assert [r.getMessage() for r in caplog.records] == ["rule failed-jobs notifies unknown channel 'pager': skipped"]
    unthreaded = plan(rule, events, CONFIG.channels, roots, lambda channel: False)
    assert [(p.kind, p.parent_id, len(p.changes)) for p in unthreaded] == [(FIRING, None, 1), (REPEAT, None, 2),
                                                                          (RESOLVED, None, 1)]


def test_two_passes_at_once_repeat_an_alert_once(state: StateStore) -> None:
    """Two replicas process the same rule at the same moment: its states are locked
    (PostgreSQL: FOR UPDATE; SQLite: one writer), so the repeat goes out once."""
    rule = make_rule(repeat="1h")
    tick(state, rule, T0, "a1")
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def replica() -> None:
        start.wait()
        try:
            tick(state, rule, T0 + 60 * MIN, "a1")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert [kind for kind, _ in queued(state)] == [FIRING, REPEAT]
    with state.read() as conn:
        assert conn.execute(select(outbox.c.kind)).scalars().all() == [FIRING, REPEAT]
