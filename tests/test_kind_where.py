"""``where`` operators, on real columns and on JSON metadata keys (rules.md, Rule files)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, inspect, select

JOBS = [
    {"id": "j1", "at": "-5m", "status": "failed", "model": "gpt-4o", "provider": "openai",
     "input_tokens": 500, "error": "Quota exceeded for org"},
    {"id": "j2", "at": "-5m", "status": "failed", "model": "local-llama", "provider": None,
     "input_tokens": 1000, "error": "100% of budget_used"},
    {"id": "j3", "at": "-5m", "status": "complete", "model": None, "provider": "anthropic",
     "input_tokens": 1500, "error": None},
    {"id": "j4", "at": "-5m", "status": "cancelled", "model": "claude-sonnet-4", "provider": "anthropic",
     "input_tokens": 2000, "error": "rate limit at 50_percent"},
]


@pytest.fixture
def matching(insert, evaluate):
    """``matching(where)`` -> sorted ids of the jobs the conditions select."""
    insert({"jobs": JOBS})

    def _matching(where, source="jobs"):
        alerts = evaluate({"kind": "any", "source": source, "where": where, "window": "1h", "max_alerts": 100})
        return sorted(a.group["id"] for a in alerts)

    return _matching


@pytest.mark.parametrize(
    "where, expected",
    [
        ({"status": "failed"}, ["j1", "j2"]),
        ({"status": {"eq": "failed"}}, ["j1", "j2"]),
        ({"status": "failed", "model": "gpt-4o"}, ["j1"]),                       # AND-ed
        ({"status": {"in": ["failed", "cancelled"]}}, ["j1", "j2", "j4"]),
        ({"model": {"not": "local-llama"}}, ["j1", "j3", "j4"]),                 # NULL counts as "not"
        ({"model": {"not_in": ["gpt-4o", "local-llama"]}}, ["j3", "j4"]),        # NULL counts as "not in"
        ({"provider": {"not": "anthropic"}}, ["j1", "j2"]),
        ({"model": None}, ["j3"]),
        ({"input_tokens": {"gt": 1000}}, ["j3", "j4"]),
        ({"input_tokens": {"gte": 1000}}, ["j2", "j3", "j4"]),
        ({"input_tokens": {"lt": 1000}}, ["j1"]),
        ({"input_tokens": {"lte": 1000}}, ["j1", "j2"]),
        ({"input_tokens": {"gt": 500, "lt": 2000}}, ["j2", "j3"]),
        ({"total_tokens": {"gte": 1500}}, ["j3", "j4"]),
        ({"error": {"contains": "quota"}}, ["j1"]),                              # case-insensitive
        ({"error": {"contains": "QUOTA EXCEEDED"}}, ["j1"]),
        ({"error": {"contains": "%"}}, ["j2"]),                                  # literal, not a wildcard
        ({"error": {"contains": "0%"}}, ["j2"]),
        ({"error": {"contains": "_"}}, ["j2", "j4"]),                            # literal, not any character
        ({"error": {"contains": "t_u"}}, ["j2"]),
        ({"error": {"contains": "0_p"}}, ["j4"]),
        ({"error": {"contains": "\\"}}, []),
        ({"provider": {"exists": True}}, ["j1", "j3", "j4"]),
        ({"provider": {"exists": False}}, ["j2"]),
        ({"error": {"exists": False}}, ["j3"]),
    ],
)
def test_where_operator_selects_exactly(matching, where, expected):
    assert matching(where) == expected


def test_where_contains_percent_and_underscore_do_not_act_as_wildcards(matching):
    # "a%b" as a LIKE pattern would match "a...b" in every error; "_" would match any character
    assert matching({"error": {"contains": "q%g"}}) == []
    assert matching({"error": {"contains": "quota_exceeded"}}) == []


@pytest.mark.parametrize("column", ["status", "error"])
def test_where_value_with_sql_injection_is_only_a_value(store, matching, column):
    hostile = "x'; DROP TABLE jobs; --"
    assert matching({column: hostile}) == []
    assert matching({column: {"in": [hostile, "x"]}}) == []
    assert matching({column: {"contains": hostile}}) == []
    assert matching({column: {"not": hostile}}) == (
        ["j1", "j2", "j3", "j4"]
    )
    assert "jobs" in inspect(store.engine).get_table_names()
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(store.tables["jobs"])).scalar_one() == 4


def test_where_sql_injection_in_a_metadata_key_value_is_only_a_value(store, insert, evaluate):
    insert({"events": [{"at": "-5m", "metadata": {"ip": "10.0.0.1"}}]})
    hostile = "x'; DROP TABLE jobs; --"
    alerts = evaluate({"kind": "threshold", "source": "events",
                       "where": {"metadata.ip": hostile, "description": {"contains": hostile}},
                       "window": "1h", "threshold": {"op": ">=", "value": 0}})
    assert [a.value for a in alerts] == [0]
    assert "jobs" in inspect(store.engine).get_table_names()


# --- JSON metadata keys -----------------------------------------------------------------------

EVENTS = [
    {"id": "e1", "at": "-5m", "event_type": "provider.error", "metadata": {"provider": "openai", "status": 429}},
    {"id": "e2", "at": "-5m", "event_type": "provider.error", "metadata": {"provider": "openai", "status": 500}},
    {"id": "e3", "at": "-5m", "event_type": "provider.error", "metadata": {"provider": "anthropic", "status": 529}},
    {"id": "e4", "at": "-5m", "event_type": "auth.login", "metadata": {"ip": "10.0.0.1"}},
    {"id": "e5", "at": "-5m", "event_type": "agent.evaluation", "metadata": {"score": 0.25, "passed": False}},
    {"id": "e6", "at": "-5m", "event_type": "agent.evaluation", "metadata": {"score": 1, "passed": True}},
    {"id": "e7", "at": "-5m", "event_type": "cron.fired", "metadata": {"cron_id": "c1", "note": None}},
]


@pytest.fixture
def matching_events(insert, evaluate):
    insert({"events": EVENTS})

    def _matching(where):
        alerts = evaluate({"kind": "any", "source": "events", "where": where, "window": "1h", "max_alerts": 100})
        return sorted(a.group["id"] for a in alerts)

    return _matching


@pytest.mark.parametrize(
    "where, expected",
    [
        ({"metadata.status": 429}, ["e1"]),                             # a number equals a JSON number
        ({"metadata.status": "429"}, ["e1"]),
        ({"metadata.status": {"in": [429, 529]}}, ["e1", "e3"]),
        ({"metadata.status": {"not": 429}}, ["e2", "e3", "e4", "e5", "e6", "e7"]),  # missing key counts as "not"
        ({"metadata.status": {"not_in": [429, 500]}}, ["e3", "e4", "e5", "e6", "e7"]),
        ({"metadata.status": {"gte": 500}}, ["e2", "e3"]),
        ({"metadata.status": {"lt": 500}}, ["e1"]),
        ({"metadata.score": {"lt": 0.5}}, ["e5"]),
        ({"metadata.score": 1}, ["e6"]),
        ({"metadata.passed": True}, ["e6"]),
        ({"metadata.passed": False}, ["e5"]),
        ({"metadata.provider": {"contains": "OPEN"}}, ["e1", "e2"]),
        ({"metadata.ip": {"exists": True}}, ["e4"]),
        ({"metadata.ip": {"exists": False}}, ["e1", "e2", "e3", "e5", "e6", "e7"]),
        ({"metadata.note": {"exists": True}}, ["e7"]),                  # a key holding null exists
        ({"metadata.cron_id": "c1", "event_type": "cron.fired"}, ["e7"]),
    ],
)
def test_where_on_metadata_keys_is_the_same_on_both_backends(matching_events, where, expected):
    assert matching_events(where) == expected


def test_order_operators_and_metrics_on_metadata_use_json_numbers_only(insert, evaluate):
    # PostgreSQL must not fail the rule on a non-numeric value, and SQLite must not
    # count text as greater than every number.
    insert({"events": [
        {"id": "num", "at": "-5m", "metadata": {"status": 503}},
        {"id": "text", "at": "-5m", "metadata": {"status": "ok"}},
        {"id": "numeric-text", "at": "-5m", "metadata": {"status": "600"}},
        {"id": "bool", "at": "-5m", "metadata": {"status": True}},
        {"id": "object", "at": "-5m", "metadata": {"status": {"code": 700}}},
        {"id": "missing", "at": "-5m", "metadata": {}},
    ]})
    alerts = evaluate({"kind": "any", "source": "events", "where": {"metadata.status": {"gte": 500}},
                       "window": "1h"})
    assert [a.group["id"] for a in alerts] == ["num"]
    for aggregate in ("max", "sum", "avg", "p95"):
        values = evaluate({"kind": "metric", "source": "events", "field": "metadata.status",
                           "aggregate": aggregate, "window": "1h", "threshold": {"op": ">=", "value": 0}})
        assert [a.value for a in values] == [503], aggregate


def test_where_values_take_their_column_type_so_both_backends_agree(insert, evaluate):
    # YAML reads an unquoted id as a number; PostgreSQL would reject text = integer
    insert({"jobs": [
        {"id": "n1", "at": "-5m", "agent_id": "12345", "input_tokens": 1000},
        {"id": "n2", "at": "-5m", "agent_id": "777", "input_tokens": 10},
    ]})

    def ids(where):
        return sorted(a.group["id"] for a in evaluate({"kind": "any", "where": where, "window": "1h"}))

    assert ids({"agent_id": 12345}) == ["n1"]
    assert ids({"agent_id": {"in": [12345, 1]}}) == ["n1"]
    assert ids({"agent_id": {"not": 12345}}) == ["n2"]
    assert ids({"input_tokens": "1000"}) == ["n1"]
    assert ids({"input_tokens": {"gte": "500"}}) == ["n1"]
    assert ids({"total_tokens": {"lt": "500.5"}}) == ["n2"]
