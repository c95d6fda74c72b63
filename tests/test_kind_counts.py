"""threshold, ratio and spike: counts of rows in the window (rules.md, Kinds)."""

from __future__ import annotations

import pytest


def by_group(alerts, *keys):
    return {tuple(a.group[k] for k in keys): a.value for a in alerts}


# --- threshold -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "op, value, fires",
    [
        (">", 2, True), (">", 3, False),
        (">=", 3, True), (">=", 4, False),
        ("<", 4, True), ("<", 3, False),
        ("<=", 3, True), ("<=", 2, False),
        ("==", 3, True), ("==", 2, False), ("==", 4, False),
    ],
)
def test_threshold_op_compares_count_of_three(insert, evaluate, op, value, fires):
    insert({"jobs": [{"at": "-5m", "status": "failed", "count": 3}, {"at": "-5m", "status": "complete"}]})
    alerts = evaluate({"kind": "threshold", "where": {"status": "failed"}, "window": "15m",
                       "threshold": {"op": op, "value": value}})
    assert [a.value for a in alerts] == ([3] if fires else [])


def test_threshold_group_by_one_column_alerts_per_group_that_meets_it(insert, evaluate):
    insert({"jobs": [
        {"at": "-5m", "status": "failed", "agent_id": "a1", "count": 3},
        {"at": "-5m", "status": "failed", "agent_id": "a2", "count": 2},
        {"at": "-5m", "status": "failed", "agent_id": "a3", "count": 5},
    ]})
    alerts = evaluate({"kind": "threshold", "where": {"status": "failed"}, "group_by": ["agent_id"],
                       "window": "15m", "threshold": {"op": ">=", "value": 3}})
    assert by_group(alerts, "agent_id") == {("a1",): 3, ("a3",): 5}
    assert all(list(a.group) == ["agent_id"] for a in alerts)


def test_threshold_group_by_two_columns_counts_each_combination(insert, evaluate):
    insert({"jobs": [
        {"at": "-5m", "agent_id": "a1", "model": "gpt-4o", "count": 2},
        {"at": "-5m", "agent_id": "a1", "model": "claude-sonnet-4", "count": 1},
        {"at": "-5m", "agent_id": "a2", "model": "gpt-4o", "count": 4},
        {"at": "-5m", "agent_id": "a2", "model": None, "count": 2},
    ]})
    alerts = evaluate({"kind": "threshold", "group_by": ["agent_id", "model"], "window": "15m",
                       "threshold": {"op": ">=", "value": 2}})
    assert by_group(alerts, "agent_id", "model") == {
        ("a1", "gpt-4o"): 2, ("a2", "gpt-4o"): 4, ("a2", None): 2,
    }
    null_model = next(a for a in alerts if a.group["model"] is None)
    assert len(null_model.row_ids) == 2  # NULL groups still get their sample rows


def test_threshold_without_group_by_is_one_group_and_zero_rows_satisfy_less_than(insert, evaluate):
    insert({"jobs": [{"at": "-5m", "status": "complete", "count": 4}, {"at": "-1h", "status": "failed"}]})
    alerts = evaluate({"kind": "threshold", "where": {"status": "failed"}, "window": "15m",
                       "threshold": {"op": "<", "value": 1}})
    assert [(a.group, a.value, a.row_ids) for a in alerts] == [({}, 0, [])]
    all_rows = evaluate({"kind": "threshold", "window": "15m", "threshold": {"op": ">=", "value": 4}})
    assert [(a.group, a.value) for a in all_rows] == [({}, 4)]


def test_threshold_on_an_empty_store_with_less_than_fires_once(evaluate):
    alerts = evaluate({"kind": "threshold", "source": "events", "window": "1h",
                       "threshold": {"op": "<=", "value": 0}})
    assert [(a.group, a.value) for a in alerts] == [({}, 0)]


def test_threshold_on_threads_counts_by_last_activity(insert, evaluate):
    insert({"threads": [
        {"at": "-5m", "created_at": "-30d", "source": "slack"},   # old thread, active now: in
        {"at": "-2h", "created_at": "-5m", "source": "slack"},    # created now, last active before: out
    ]})
    alerts = evaluate({"kind": "threshold", "source": "threads", "where": {"source": "slack"},
                       "window": "15m", "threshold": {"op": ">=", "value": 1}})
    assert [a.value for a in alerts] == [1]


# --- ratio -----------------------------------------------------------------------------------

def test_ratio_is_matching_over_all_rows_of_the_group(insert, evaluate):
    insert({"jobs": [
        {"at": "-5m", "agent_id": "a1", "status": "failed", "count": 2},
        {"at": "-5m", "agent_id": "a1", "status": "complete", "count": 6},
        {"at": "-5m", "agent_id": "a2", "status": "failed", "count": 1},
        {"at": "-5m", "agent_id": "a2", "status": "complete", "count": 9},
    ]})
    alerts = evaluate({"kind": "ratio", "where": {"status": "failed"}, "group_by": ["agent_id"],
                       "window": "15m", "ratio": {"op": ">=", "value": 0.2}})
    assert by_group(alerts, "agent_id") == {("a1",): 0.25}
    assert alerts[0].details == {"matching": 2, "total": 8}


@pytest.mark.parametrize("min_total, fires", [(4, True), (5, False)])
def test_ratio_min_total_is_the_smallest_denominator_that_can_fire(insert, evaluate, min_total, fires):
    insert({"jobs": [
        {"at": "-5m", "status": "failed", "count": 2},
        {"at": "-5m", "status": "complete", "count": 2},
    ]})
    alerts = evaluate({"kind": "ratio", "where": {"status": "failed"}, "window": "15m",
                       "ratio": {"op": ">=", "value": 0.5}, "min_total": min_total})
    assert [a.value for a in alerts] == ([0.5] if fires else [])


def test_ratio_of_conditions_are_the_denominator(insert, evaluate):
    insert({"jobs": [
        {"at": "-5m", "status": "failed", "job_type": "task", "count": 2},
        {"at": "-5m", "status": "complete", "job_type": "task", "count": 1},
        {"at": "-5m", "status": "failed", "job_type": "chat_reply", "count": 5},
        {"at": "-5m", "status": "complete", "job_type": "chat_reply", "count": 5},
    ]})
    alerts = evaluate({"kind": "ratio", "where": {"status": "failed", "job_type": "task"},
                       "of": {"job_type": "task"}, "window": "15m", "ratio": {"op": ">", "value": 0.5}})
    assert [a.value for a in alerts] == [2 / 3]  # exact: rounding is for display only
    assert alerts[0].details == {"matching": 2, "total": 3}


def test_ratio_of_a_different_event_type_as_denominator(insert, evaluate):
    insert({"events": [
        {"at": "-5m", "event_type": "auth.login_failed", "count": 3},
        {"at": "-5m", "event_type": "auth.login", "count": 3},
        {"at": "-5m", "event_type": "agent.updated", "count": 10},
    ]})
    alerts = evaluate({"kind": "ratio", "source": "events", "where": {"event_type": "auth.login_failed"},
                       "of": {"event_type": {"in": ["auth.login", "auth.login_failed"]}},
                       "window": "15m", "ratio": {"op": ">=", "value": 0.5}})
    assert [(a.value, a.details["total"]) for a in alerts] == [(0.5, 6)]


# --- spike -----------------------------------------------------------------------------------

SPIKE = {"kind": "spike", "where": {"status": "failed"}, "group_by": ["agent_id"], "window": "1h"}


def test_spike_reference_is_scaled_to_the_window(insert, evaluate):
    # reference 6h holds 12 rows -> 2 per hour; factor 3 -> current must reach 6
    insert({"jobs": [
        {"at": "-3h", "status": "failed", "agent_id": "six", "count": 12},
        {"at": "-10m", "status": "failed", "agent_id": "six", "count": 6},
        {"at": "-3h", "status": "failed", "agent_id": "five", "count": 12},
        {"at": "-10m", "status": "failed", "agent_id": "five", "count": 5},
    ]})
    alerts = evaluate({**SPIKE, "reference": "6h", "factor": 3, "min_current": 1})
    assert [(a.group["agent_id"], a.value, a.baseline) for a in alerts] == [("six", 6, 2.0)]
    assert alerts[0].details["reference_count"] == 12


def test_spike_zero_reference_fires_at_min_current_not_below(insert, evaluate):
    insert({"jobs": [
        {"at": "-10m", "status": "failed", "agent_id": "five", "count": 5},
        {"at": "-10m", "status": "failed", "agent_id": "four", "count": 4},
    ]})
    alerts = evaluate({**SPIKE, "reference": "6h", "factor": 3, "min_current": 5})
    assert [(a.group["agent_id"], a.value, a.baseline) for a in alerts] == [("five", 5, 0.0)]


def test_spike_min_current_holds_even_when_the_factor_is_met(insert, evaluate):
    insert({"jobs": [
        {"at": "-2h", "status": "failed", "agent_id": "a1", "count": 1},
        {"at": "-10m", "status": "failed", "agent_id": "a1", "count": 4},
    ]})
    assert evaluate({**SPIKE, "factor": 3, "min_current": 5}) == []
    assert [a.value for a in evaluate({**SPIKE, "factor": 3, "min_current": 4})] == [4]


@pytest.mark.parametrize("direction", ["up", "down", "both"])
def test_spike_zero_against_zero_never_fires(insert, evaluate, direction):
    insert({"jobs": [
        {"at": "-9h", "status": "failed", "agent_id": "a1", "count": 50},   # before the reference
        {"at": "-10m", "status": "complete", "agent_id": "a1", "count": 50},  # not matching
    ]})
    assert evaluate({**SPIKE, "reference": "6h", "direction": direction, "min_reference": 0.01}) == []


def test_spike_down_needs_min_reference_and_current_at_most_reference_over_factor(insert, evaluate):
    # reference 6h: 18 rows -> 3 per hour; factor 3 -> current must be at most 1
    insert({"jobs": [
        {"at": "-3h", "status": "failed", "agent_id": "one", "count": 18},
        {"at": "-10m", "status": "failed", "agent_id": "one"},
        {"at": "-3h", "status": "failed", "agent_id": "zero", "count": 18},
        {"at": "-3h", "status": "failed", "agent_id": "two", "count": 18},
        {"at": "-10m", "status": "failed", "agent_id": "two", "count": 2},
    ]})
    rule = {**SPIKE, "reference": "6h", "factor": 3, "direction": "down"}
    fired = evaluate({**rule, "min_reference": 3})
    assert by_group(fired, "agent_id") == {("one",): 1, ("zero",): 0}
    assert all(a.baseline == 3.0 and a.details["direction"] == "down" for a in fired)
    assert evaluate({**rule, "min_reference": 3.5}) == []


def test_spike_down_min_reference_compares_the_exact_scaled_reference(insert, evaluate):
    # window 1m, reference 49m: 49 rows scale to exactly 1 per minute (not 0.9999...)
    insert({"jobs": [{"at": "-20m", "status": "failed", "agent_id": "a1", "count": 49}]})
    alerts = evaluate({**SPIKE, "window": "1m", "reference": "49m", "factor": 2, "direction": "down",
                       "min_reference": 1})
    assert [(a.value, a.baseline) for a in alerts] == [(0, 1.0)]


def test_spike_direction_both_fires_up_and_down_groups(insert, evaluate):
    insert({"jobs": [
        {"at": "-90m", "status": "failed", "agent_id": "up", "count": 2},
        {"at": "-10m", "status": "failed", "agent_id": "up", "count": 6},
        {"at": "-90m", "status": "failed", "agent_id": "down", "count": 6},
        {"at": "-10m", "status": "failed", "agent_id": "down", "count": 2},
        {"at": "-90m", "status": "failed", "agent_id": "steady", "count": 4},
        {"at": "-10m", "status": "failed", "agent_id": "steady", "count": 4},
    ]})
    alerts = evaluate({**SPIKE, "factor": 3, "direction": "both", "min_current": 1})
    assert {a.group["agent_id"]: (a.value, a.details["direction"]) for a in alerts} == {
        "up": (6, "up"), "down": (2, "down"),
    }
    only_up = evaluate({**SPIKE, "factor": 3, "min_current": 1})
    assert [a.group["agent_id"] for a in only_up] == ["up"]
