"""The alert lifecycle through the state database, on SQLite and PostgreSQL.

``decide()`` has its own pure tests (test_state.py); these run every evaluation
through ``process()``, so each step reads the states the previous one WROTE. A
column saved wrongly (``last_seen_at``, ``last_notified_at``, ``episode``) shows up
here and nowhere in the pure tests.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from audit_watch.alerting.pipeline import process
from audit_watch.alerting.state import StateStore, alert_states, all_states, outbox
from audit_watch.alerting.views import alerts_table
from audit_watch.config.model import Config

from test_state import T0, evaluation, make_alert, make_rule, state, state_url

MIN = timedelta(minutes=1)
# A Slack channel threads (repeats and resolutions reply to the firing message); nothing
# is delivered here, so its address is never used.
CONFIG = Config.model_validate({"channels": {
    "oncall": {"type": "slack", "token": "xoxb-t", "channel": "#ops", "base_url": "http://127.0.0.1:9/api/"},
}})


def tick(state: StateStore, rule: Any, now: datetime, *agents: str) -> list[int]:
    """One evaluation at ``now`` that finds ``agents`` over the threshold; the outbox ids queued."""
    alerts = [make_alert(agent, f"Agent {agent}", now=now) for agent in agents]
    return process([evaluation(rule, now, *alerts)], CONFIG, state, now).notifications


def queued(state: StateStore) -> list[tuple[str, int | None]]:
    """(kind, parent id) of every outbox row, oldest first."""
    with state.read() as conn:
        return [(r.kind, r.parent_id) for r in conn.execute(select(outbox.c.kind, outbox.c.parent_id).order_by(outbox.c.id))]


def state_of(state: StateStore) -> Any:
    with state.read() as conn:
        [item] = all_states(conn)
    return item


def test_keep_firing_for_holds_then_resolves_from_the_last_time_the_condition_held(state: StateStore) -> None:
    # Catches last_seen_at saved as any later time (e.g. the last evaluation): the alert
    # would then be held forever and never resolve.
    rule = make_rule(keep_firing_for="10m", repeat="0s")
    [root] = tick(state, rule, T0, "a1")
    assert state_of(state).last_seen_at == T0
    assert tick(state, rule, T0 + 5 * MIN) == []                          # gone, but held
    assert tick(state, rule, T0 + 9 * MIN) == []
    held = state_of(state)
    assert (held.state, held.last_seen_at, held.last_evaluated_at) == ("firing", T0, T0 + 9 * MIN)
    assert len(tick(state, rule, T0 + 10 * MIN)) == 1                     # 10 minutes after it was last seen
    resolved = state_of(state)
    assert (resolved.state, resolved.resolved_at, resolved.episode) == ("resolved", T0 + 10 * MIN, 1)
    assert resolved.last_notified_at == T0 + 10 * MIN                     # told of the resolution
    assert queued(state) == [("firing", None), ("resolved", root)]


def test_keep_firing_for_a_flapping_alert_stays_one_episode(state: StateStore) -> None:
    rule = make_rule(keep_firing_for="10m", repeat="0s")
    tick(state, rule, T0, "a1")
    tick(state, rule, T0 + 4 * MIN)                                       # gone: held
    assert tick(state, rule, T0 + 6 * MIN, "a1") == []                    # back: no second firing message
    assert state_of(state).last_seen_at == T0 + 6 * MIN
    assert tick(state, rule, T0 + 15 * MIN) == []                         # 9 minutes since last seen
    assert len(tick(state, rule, T0 + 16 * MIN)) == 1
    item = state_of(state)
    assert (item.state, item.episode, item.fired_at) == ("resolved", 1, T0)
    assert [kind for kind, _ in queued(state)] == ["firing", "resolved"]


def test_without_keep_firing_for_the_first_quiet_evaluation_resolves(state: StateStore) -> None:
    rule = make_rule(repeat="0s")
    tick(state, rule, T0, "a1")
    assert len(tick(state, rule, T0 + MIN)) == 1 and state_of(state).state == "resolved"


def test_notify_resolved_false_resolves_quietly_and_the_next_episode_starts_a_new_thread(state: StateStore) -> None:
    rule = make_rule(notify_resolved=False, repeat="1h")
    [first] = tick(state, rule, T0, "a1")
    assert tick(state, rule, T0 + MIN) == []                              # resolved, nobody told
    item = state_of(state)
    assert (item.state, item.resolved_at) == ("resolved", T0 + MIN)
    [second] = tick(state, rule, T0 + 2 * MIN, "a1")                      # fires again: a new message
    [repeat] = tick(state, rule, T0 + 62 * MIN, "a1")
    item = state_of(state)
    assert (item.state, item.episode, item.fired_at) == ("firing", 2, T0 + 2 * MIN)
    # The repeat threads under the second episode's message, not the first one's.
    assert queued(state) == [("firing", None), ("firing", None), ("repeat", second)] and first != second


def test_repeat_0s_never_repeats(state: StateStore) -> None:
    rule = make_rule(repeat="0s")
    tick(state, rule, T0, "a1")
    for hours in (1, 4, 24, 72):
        assert tick(state, rule, T0 + timedelta(hours=hours), "a1") == []
    item = state_of(state)
    assert (item.state, item.last_notified_at) == ("firing", T0)
    assert [kind for kind, _ in queued(state)] == ["firing"]


def test_repeat_counts_from_the_last_notification_stored(state: StateStore) -> None:
    # Catches last_notified_at not written back: a repeat would then go out every tick.
    rule = make_rule(repeat="1h")
    [root] = tick(state, rule, T0, "a1")
    assert tick(state, rule, T0 + 59 * MIN, "a1") == []
    assert len(tick(state, rule, T0 + 60 * MIN, "a1")) == 1
    assert state_of(state).last_notified_at == T0 + 60 * MIN
    assert tick(state, rule, T0 + 61 * MIN, "a1") == [] and tick(state, rule, T0 + 119 * MIN, "a1") == []
    assert len(tick(state, rule, T0 + 120 * MIN, "a1")) == 1
    assert queued(state) == [("firing", None), ("repeat", root), ("repeat", root)]


def test_pending_is_stored_and_fires_after_for(state: StateStore) -> None:
    rule = make_rule(**{"for": "5m"}, repeat="0s")
    assert tick(state, rule, T0, "a1") == [] and state_of(state).state == "pending"
    assert tick(state, rule, T0 + 4 * MIN, "a1") == []
    assert len(tick(state, rule, T0 + 5 * MIN, "a1")) == 1
    item = state_of(state)
    assert (item.state, item.started_at, item.fired_at) == ("firing", T0, T0 + 5 * MIN)
    assert [v[1] for v in item.recent_values] == [7, 7, 7]


def test_a_failure_between_the_state_change_and_the_outbox_row_writes_nothing(state: StateStore) -> None:
    """The outbox INSERT fails (injected at the database driver): neither the new states
    nor any notification of that pass may remain, and the next pass does it all."""
    rule = make_rule(repeat="0s")
    other = make_rule(name="quota-errors", repeat="0s")
    tick(state, rule, T0, "a1")                                           # a1 firing, told
    before = state_of(state)

    def refuse_outbox(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO AW_OUTBOX"):
            raise RuntimeError("injected: the outbox write failed")

    event.listen(state.engine, "before_cursor_execute", refuse_outbox)
    try:
        with pytest.raises(Exception, match="injected"):
            # quota-errors fires (states written, then its outbox row fails); a1 resolves.
            process([evaluation(other, T0 + MIN, make_alert(rule="quota-errors", now=T0 + MIN)),
                     evaluation(rule, T0 + MIN)], CONFIG, state, T0 + MIN)
    finally:
        event.remove(state.engine, "before_cursor_execute", refuse_outbox)
    with state.read() as conn:
        rows = conn.execute(select(alert_states.c.rule, alert_states.c.state)).all()
    assert rows == [("failed-jobs", "firing")] and state_of(state) == before
    assert queued(state) == [("firing", None)]
    # Nothing was lost either: the same pass again stores and queues both.
    summary = process([evaluation(other, T0 + MIN, make_alert(rule="quota-errors", now=T0 + MIN)),
                       evaluation(rule, T0 + MIN)], CONFIG, state, T0 + MIN)
    assert len(summary.notifications) == 2
    assert sorted((r.rule, r.state) for r in alerts_table(state)) == [("failed-jobs", "resolved"),
                                                                      ("quota-errors", "firing")]
