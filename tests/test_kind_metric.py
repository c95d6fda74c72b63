"""metric: an aggregate of a column against a threshold or its own baseline."""

from __future__ import annotations

import pytest


def by_group(alerts, key):
    return {a.group[key]: a.value for a in alerts}


def metric(field="input_tokens", aggregate="sum", **extra):
    """A metric rule over a 1h window; without baseline or threshold: ``>= 0`` (always fires)."""
    rule = {"kind": "metric", "field": field, "aggregate": aggregate, "window": "1h"}
    if "baseline" not in extra:
        rule["threshold"] = {"op": ">=", "value": 0}
    return {**rule, **extra}


@pytest.mark.parametrize(
    "aggregate, expected",
    [("count", 20), ("sum", 210), ("avg", 10.5), ("min", 1), ("max", 20),
     ("p95", 19)],  # nearest rank: ceil(0.95 * 20) = 19th smallest
)
def test_metric_each_aggregate_over_one_to_twenty(insert, evaluate, aggregate, expected):
    insert({"jobs": [{"at": f"-{i}m", "input_tokens": i} for i in range(1, 21)]})
    assert [a.value for a in evaluate(metric(aggregate=aggregate))] == [expected]


@pytest.mark.parametrize(
    "n, expected",
    [
        (1, 10),     # ceil(0.95) = 1st
        (10, 100),   # ceil(9.5) = 10th (an interpolating p95 would give 95.5)
        (21, 200),   # ceil(19.95) = 20th
        (40, 380),   # ceil(38.0) = 38th
    ],
)
def test_metric_p95_is_nearest_rank(insert, evaluate, n, expected):
    # values 10, 20, ..., 10n, inserted out of order
    insert({"jobs": [{"at": f"-{(i * 7) % 50 + 1}m", "input_tokens": 10 * i} for i in range(n, 0, -1)]})
    assert [a.value for a in evaluate(metric(aggregate="p95"))] == [expected]


def test_metric_aggregates_are_per_group(insert, evaluate):
    insert({"jobs": [
        {"at": "-5m", "agent_id": "a1", "input_tokens": 10},
        {"at": "-5m", "agent_id": "a1", "input_tokens": 30},
        {"at": "-5m", "agent_id": "a2", "input_tokens": 7},
    ]})
    assert by_group(evaluate(metric(aggregate="avg", group_by=["agent_id"])), "agent_id") == {"a1": 20, "a2": 7}
    assert by_group(evaluate(metric(aggregate="max", group_by=["agent_id"])), "agent_id") == {"a1": 30, "a2": 7}


def test_metric_threshold_form_fires_only_when_the_aggregate_meets_it(insert, evaluate):
    insert({"jobs": [
        {"at": "-5m", "agent_id": "big", "input_tokens": 600, "count": 2},
        {"at": "-5m", "agent_id": "small", "input_tokens": 999},
    ]})
    alerts = evaluate(metric(group_by=["agent_id"], threshold={"op": ">", "value": 1000}))
    assert [(a.group["agent_id"], a.value, a.threshold) for a in alerts] == [("big", 1200, "> 1,000")]


def test_metric_total_tokens_is_input_plus_output(insert, evaluate):
    insert({"jobs": [
        {"at": "-5m", "input_tokens": 100, "output_tokens": 50},
        {"at": "-5m", "input_tokens": 1, "output_tokens": 2},
    ]})
    assert [a.value for a in evaluate(metric(field="total_tokens", aggregate="sum"))] == [153]
    assert [a.value for a in evaluate(metric(field="total_tokens", aggregate="max"))] == [150]
    filtered = evaluate(metric(field="total_tokens", aggregate="count", where={"total_tokens": {"gte": 150}}))
    assert [a.value for a in filtered] == [1]


def test_metric_numeric_metadata_key_on_events(insert, evaluate):
    insert({"events": [
        {"at": "-5m", "event_type": "agent.evaluation", "metadata": {"score": 0.5}},
        {"at": "-5m", "event_type": "agent.evaluation", "metadata": {"score": 0.25}},
        {"at": "-5m", "event_type": "agent.evaluation", "metadata": {"passed": True}},  # no score: left out
    ]})
    alerts = evaluate(metric(field="metadata.score", aggregate="avg", source="events",
                             threshold={"op": "<", "value": 0.5}))
    assert [a.value for a in alerts] == [0.375]


# --- baseline ----------------------------------------------------------------------------------

def test_metric_baseline_mean_leaves_out_periods_without_rows(insert, evaluate):
    # 7 hourly periods before the window; rows in only 3 of them (10 each) -> mean 10, not 30/7
    jobs = []
    for agent, current in (("fires", 25), ("quiet", 15)):
        for hours_back in (2, 4, 6):
            jobs.append({"at": f"-{hours_back * 60 - 30}m", "agent_id": agent, "count": 10})
        jobs.append({"at": "-30m", "agent_id": agent, "count": current})
    insert({"jobs": jobs})
    alerts = evaluate(metric(aggregate="count", group_by=["agent_id"], baseline={"periods": 7, "factor": 2}))
    assert [(a.group["agent_id"], a.value, a.baseline) for a in alerts] == [("fires", 25, 10.0)]
    assert alerts[0].details["periods_seen"] == 3
    assert alerts[0].threshold == "> 20"


def test_metric_baseline_ignores_rows_older_than_its_periods(insert, evaluate):
    insert({"jobs": [
        {"at": "-90m", "input_tokens": 10},        # period 1
        {"at": "-210m", "input_tokens": 10_000},   # period 3: beyond periods: 2
        {"at": "-30m", "input_tokens": 25},
    ]})
    alerts = evaluate(metric(baseline={"periods": 2, "factor": 2}))
    assert [(a.value, a.baseline) for a in alerts] == [(25, 10.0)]


def test_metric_baseline_does_not_fire_at_exactly_factor_times_baseline(insert, evaluate):
    insert({"jobs": [{"at": "-90m", "input_tokens": 10}, {"at": "-30m", "input_tokens": 20}]})
    assert evaluate(metric(baseline={"periods": 1, "factor": 2})) == []


def test_metric_group_without_baseline_rows_is_skipped_unless_min_value_is_met(insert, evaluate):
    insert({"jobs": [
        {"at": "-30m", "agent_id": "new", "input_tokens": 500},
        {"at": "-90m", "agent_id": "old", "input_tokens": 100},
        {"at": "-30m", "agent_id": "old", "input_tokens": 100},
    ]})
    rule = metric(group_by=["agent_id"], baseline={"periods": 3, "factor": 2})
    assert evaluate(rule) == []
    met = evaluate({**rule, "min_value": 500})
    assert [(a.group["agent_id"], a.value, a.baseline, a.threshold) for a in met] == [("new", 500, None, ">= 500")]
    assert evaluate({**rule, "min_value": 501}) == []


def test_metric_count_of_a_text_metadata_key_counts_rows_where_it_is_set(insert, evaluate):
    insert({"events": [
        {"at": "-5m", "event_type": "auth.login", "metadata": {"ip": "10.0.0.1"}, "count": 3},
        {"at": "-5m", "event_type": "auth.login", "metadata": {}},
    ]})
    alerts = evaluate(metric(field="metadata.ip", aggregate="count", source="events"))
    assert [a.value for a in alerts] == [3]
