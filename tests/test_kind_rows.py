"""absence, new_value and any: kinds about which rows (or values) appear."""

from __future__ import annotations

# --- absence ---------------------------------------------------------------------------------

def test_absence_fires_for_a_group_seen_in_lookback_but_not_in_window(insert, evaluate):
    insert({"jobs": [
        {"at": "-3h", "agent_id": "silent", "count": 4},
        {"at": "-3h", "agent_id": "active"},
        {"at": "-10m", "agent_id": "active"},
    ]})
    alerts = evaluate({"kind": "absence", "group_by": ["agent_id"], "window": "1h", "lookback": "1d"})
    assert [(a.group, a.value, a.baseline) for a in alerts] == [({"agent_id": "silent"}, 0, 4)]
    assert alerts[0].details["last_seen"] == "2026-11-20T09:00:00+00:00"
    assert alerts[0].details["silent_for_seconds"] == 3 * 3600
    assert len(alerts[0].row_ids) == 4  # the evidence: the rows of the lookback


def test_absence_ignores_a_group_seen_only_before_the_lookback(insert, evaluate):
    insert({"jobs": [{"at": "-2d", "agent_id": "long-gone"}, {"at": "-3h", "agent_id": "recent"}]})
    alerts = evaluate({"kind": "absence", "group_by": ["agent_id"], "window": "1h", "lookback": "1d"})
    assert [a.group["agent_id"] for a in alerts] == ["recent"]


def test_absence_on_threads_uses_last_activity_not_created_at(insert, evaluate):
    insert({"threads": [
        # created long ago, active in the window: present
        {"source": "slack", "created_at": "-20d", "at": "-10m"},
        # created in the window, last active before it: absent
        {"source": "email", "created_at": "-10m", "at": "-3h"},
    ]})
    alerts = evaluate({"kind": "absence", "source": "threads", "group_by": ["source"], "window": "1h",
                       "lookback": "7d"})
    assert [a.group["source"] for a in alerts] == ["email"]


def test_absence_respects_where_in_lookback_and_window(insert, evaluate):
    insert({"jobs": [
        {"at": "-3h", "agent_id": "a1", "status": "complete"},
        {"at": "-10m", "agent_id": "a1", "status": "failed"},   # not matching: does not count as seen
    ]})
    alerts = evaluate({"kind": "absence", "where": {"status": "complete"}, "group_by": ["agent_id"],
                       "window": "1h", "lookback": "1d"})
    assert [a.group["agent_id"] for a in alerts] == ["a1"]


# --- new_value -------------------------------------------------------------------------------

def test_new_value_fires_for_a_value_not_seen_in_the_lookback(insert, evaluate):
    insert({"jobs": [
        {"at": "-3d", "agent_id": "a1", "model": "gpt-4o"},
        {"at": "-10m", "agent_id": "a1", "model": "gpt-4o"},          # seen: no alert
        {"at": "-10m", "agent_id": "a1", "model": "local-llama", "count": 3},  # new: one alert
    ]})
    alerts = evaluate({"kind": "new_value", "field": "model", "group_by": ["agent_id"], "window": "1h",
                       "lookback": "7d"})
    assert [(a.group, a.value) for a in alerts] == [({"agent_id": "a1", "model": "local-llama"}, 3)]
    assert len(alerts[0].row_ids) == 3
    assert alerts[0].details["first_seen"] == "2026-11-20T11:50:00+00:00"


def test_new_value_is_one_alert_per_group_and_value(insert, evaluate):
    insert({"jobs": [
        {"at": "-3d", "agent_id": "a1", "model": "gpt-4o"},
        {"at": "-10m", "agent_id": "a1", "model": "x", "count": 2},
        {"at": "-10m", "agent_id": "a1", "model": "y"},
        {"at": "-10m", "agent_id": "a2", "model": "x"},
        {"at": "-10m", "agent_id": "a2", "model": "gpt-4o"},   # seen by a1 only: new for a2
        {"at": "-10m", "agent_id": "a2", "model": None},        # NULL is no value
    ]})
    alerts = evaluate({"kind": "new_value", "field": "model", "group_by": ["agent_id"], "window": "1h",
                       "lookback": "7d"})
    assert sorted((a.group["agent_id"], a.group["model"], a.value) for a in alerts) == [
        ("a1", "x", 2), ("a1", "y", 1), ("a2", "gpt-4o", 1), ("a2", "x", 1),
    ]
    for alert in alerts:
        assert len(alert.row_ids) == alert.value


def test_new_value_metadata_ip_in_field_group_by_and_where(insert, evaluate):
    def login(at, user, ip, **extra):
        return {"at": at, "event_type": "auth.login", "metadata": {"user": user, "ip": ip, **extra}}

    insert({"events": [
        login("-5d", "ana", "10.0.0.1"),
        login("-10m", "ana", "10.0.0.1"),
        login("-10m", "ana", "203.0.113.9"),
        login("-10m", "bo", "10.0.0.1"),
        login("-10m", "bo", "198.51.100.7", vpn=True),
        {"at": "-10m", "event_type": "auth.login", "metadata": {"user": "bo"}},   # no ip
        {"at": "-10m", "event_type": "auth.login_failed", "metadata": {"user": "ana", "ip": "192.0.2.1"}},
    ]})
    rule = {"kind": "new_value", "source": "events", "field": "metadata.ip", "group_by": ["metadata.user"],
            "where": {"event_type": "auth.login", "metadata.ip": {"exists": True}},
            "window": "1h", "lookback": "30d"}
    alerts = evaluate(rule)
    assert sorted((a.group["metadata.user"], a.group["metadata.ip"]) for a in alerts) == [
        ("ana", "203.0.113.9"), ("bo", "10.0.0.1"), ("bo", "198.51.100.7"),
    ]
    restricted = evaluate({**rule, "where": {"metadata.ip": {"in": ["203.0.113.9", "192.0.2.1"]},
                                             "metadata.user": "ana"}})
    assert sorted(a.group["metadata.ip"] for a in restricted) == ["192.0.2.1", "203.0.113.9"]
    vpn = evaluate({**rule, "where": {"metadata.vpn": True}})
    assert [(a.group["metadata.user"], a.group["metadata.ip"]) for a in vpn] == [("bo", "198.51.100.7")]


def test_new_value_numeric_metadata_value_reads_as_the_same_text_on_both_backends(insert, evaluate):
    insert({"events": [
        {"at": "-5d", "event_type": "provider.error", "metadata": {"provider": "openai", "status": 500}},
        {"at": "-10m", "event_type": "provider.error", "metadata": {"provider": "openai", "status": 500}},
        {"at": "-10m", "event_type": "provider.error", "metadata": {"provider": "openai", "status": 429},
         "count": 2},
        {"at": "-10m", "event_type": "provider.error", "metadata": {"provider": "anthropic", "status": 529}},
    ]})
    alerts = evaluate({"kind": "new_value", "source": "events", "field": "metadata.status",
                       "group_by": ["metadata.provider"], "where": {"metadata.status": {"in": [429, 500]}},
                       "window": "1h", "lookback": "30d"})
    assert [(a.group, a.value) for a in alerts] == [({"metadata.provider": "openai", "metadata.status": "429"}, 2)]
    exact = evaluate({"kind": "threshold", "source": "events", "where": {"metadata.status": 429},
                      "window": "1h", "threshold": {"op": ">=", "value": 1}})
    assert [a.value for a in exact] == [2]


# --- any -------------------------------------------------------------------------------------

def test_any_is_one_alert_per_matching_row(insert, evaluate):
    insert({"events": [
        {"id": "e1", "at": "-30m", "event_type": "credential.revoked", "severity": "warning",
         "agent_id": "a1", "metadata": {"credential": "prod-key"}},
        {"id": "e2", "at": "-10m", "event_type": "credential.revoked", "severity": "warning"},
        {"id": "e3", "at": "-10m", "event_type": "auth.login"},
    ]})
    alerts = evaluate({"kind": "any", "source": "events", "where": {"event_type": "credential.revoked"},
                       "window": "1h"})
    assert [(a.group, a.value, a.row_ids) for a in alerts] == [
        ({"id": "e1"}, 1, ["e1"]), ({"id": "e2"}, 1, ["e2"]),
    ]
    assert alerts[0].details["row"]["metadata"] == {"credential": "prod-key"}
    assert alerts[0].details["at"] == "2026-11-20T11:30:00+00:00"


def test_any_stops_at_max_alerts_oldest_first_and_counts_every_row(insert, evaluate):
    insert({"jobs": [{"id": f"j{i}", "at": f"-{i}m", "status": "failed"} for i in range(1, 8)]})
    alerts = evaluate({"kind": "any", "where": {"status": "failed"}, "window": "1h", "max_alerts": 3})
    assert [a.group["id"] for a in alerts] == ["j7", "j6", "j5"]
    assert [(a.firing_groups, a.tracked_groups) for a in alerts] == [(7, 3)] * 3
    assert alerts[0].groups_summary == "7 rows firing; the 3 most severe are tracked"
    exact = evaluate({"kind": "any", "where": {"status": "failed"}, "window": "1h", "max_groups": 7})
    assert len(exact) == 7 and exact[0].firing_groups == 7 and exact[0].groups_summary is None


def test_any_keeps_group_by_values_beside_the_row_id(insert, evaluate):
    insert({"jobs": [{"id": "j1", "at": "-1m", "agent_id": "a9", "status": "failed"}]})
    alerts = evaluate({"kind": "any", "group_by": ["agent_id"], "window": "1h"})
    assert [a.group for a in alerts] == [{"agent_id": "a9", "id": "j1"}]
    assert "prompt" not in alerts[0].details["row"]  # content only with include_content
