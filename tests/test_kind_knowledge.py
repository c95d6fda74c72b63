"""What a kind implies, said by the kind: whether it fires on a silent store (the
daemon holds such rules) and what its "open in Audit Logs" list filters on."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from audit_watch.rules.alert import Finding
from audit_watch.rules.kinds import KINDS
from audit_watch.rules.loader import RULE_ADAPTER


def rule(kind: str, **keys: Any) -> Any:
    return RULE_ADAPTER.validate_python({"name": "r", "kind": kind, **keys})


@pytest.mark.parametrize("keys, silent_fires", [
    ({"kind": "threshold", "threshold": {"op": ">=", "value": 5}}, False),
    ({"kind": "threshold", "threshold": {"op": "<", "value": 5}}, True),       # "fewer than 5" holds on none
    ({"kind": "threshold", "threshold": {"op": "==", "value": 0}}, True),
    ({"kind": "metric", "field": "total_tokens", "threshold": {"op": "<=", "value": 100}}, True),
    ({"kind": "metric", "field": "total_tokens", "threshold": {"op": ">", "value": 100}}, False),
    ({"kind": "metric", "field": "total_tokens", "baseline": {"periods": 7, "factor": 2}}, False),
    ({"kind": "spike"}, False),
    ({"kind": "spike", "direction": "down"}, True),
    ({"kind": "spike", "direction": "both"}, True),
    ({"kind": "ratio", "ratio": {"op": "<", "value": 0.5}}, False),          # needs min_total rows
    ({"kind": "absence", "lookback": "1d"}, True),
    ({"kind": "cron_missed"}, True),
    ({"kind": "new_value", "field": "model", "lookback": "7d"}, False),
    ({"kind": "any"}, False),
], ids=lambda v: str(v) if isinstance(v, bool) else " ".join(f"{k}={v[k]}" for k in v))
def test_each_kind_says_whether_it_fires_on_a_silent_store(keys: dict[str, Any], silent_fires: bool) -> None:
    kind = keys.pop("kind")
    assert KINDS[kind].fires_on_silence(rule(kind, **keys)) is silent_fires


def test_every_kind_of_the_rule_format_has_its_unit() -> None:
    assert set(KINDS) == {"threshold", "ratio", "spike", "metric", "absence", "cron_missed", "new_value", "any"}


def test_link_filters_are_where_and_group_except_where_the_kind_says_otherwise() -> None:
    threshold = rule("threshold", where={"status": "failed"}, threshold={"op": ">", "value": 1})
    finding = Finding(group={"agent_id": "a1", "model": None}, value=3)
    assert KINDS["threshold"].link_filters(threshold, finding) == [("status", "failed"), ("agent_id", "a1")]
    row = Finding(group={"agent_id": "a1", "id": "job-7"}, value=1)
    assert KINDS["any"].link_filters(rule("any", where={"id": "job-7"}), row) == \
        [("id", "job-7"), ("agent_id", "a1")]                                        # the group's id: a row link
    missed = Finding(group={"cron_id": "c1"}, value=2, row_source="events")
    assert KINDS["cron_missed"].link_filters(rule("cron_missed", where={"name": "nightly"}), missed) == \
        [("event_type", "cron.fired"), ("metadata.cron_id", "c1")]                   # its fires, not the crons


def test_the_list_link_of_an_any_alert_leaves_the_row_id_out(insert: Any, evaluate: Any) -> None:
    insert({"events": [{"id": "e1", "at": "-5m", "event_type": "user.role_changed", "user_id": "u1"}]})
    [alert] = evaluate({"kind": "any", "source": "events", "where": {"event_type": "user.role_changed"},
                        "group_by": ["user_id"], "window": "15m"})
    query = parse_qs(urlsplit(alert.list_link).query)
    assert query["user_id"] == ["u1"] and query["event_type"] == ["user.role_changed"] and "id" not in query
    assert alert.links == ["https://auxot.example.com/audit-logs/events/e1"]


def test_the_list_link_of_a_missed_cron_shows_its_fires(insert: Any, evaluate: Any) -> None:
    insert({"crons": [{"id": "c1", "name": "nightly", "schedule": "0 9 * * *", "created_at": "-30d"}],
            "events": [{"at": "2026-11-19T09:00:30Z", "event_type": "cron.fired", "metadata": {"cron_id": "c1"}}]})
    [alert] = evaluate({"kind": "cron_missed", "grace": "15m", "where": {"name": "nightly"}})
    url = urlsplit(alert.list_link)
    assert url.path == "/audit-logs/events"
    query = parse_qs(url.query)
    assert (query["event_type"], query["metadata.cron_id"]) == (["cron.fired"], ["c1"])
    assert "name" not in query                      # its where filters crons, not the events listed
