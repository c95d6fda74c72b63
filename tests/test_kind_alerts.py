"""What an alert carries: names for ids, at most 20 row ids, a link per row, a list link."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from audit_watch.config.model import LinksConfig

PEOPLE = {
    "teams": [{"id": "t1", "name": "Support"}],
    "users": [{"id": "u1", "name": "Ana Lima"}],
    "agents": [{"id": "a1", "name": "Support Triage"}],
    "crons": [{"id": "c1", "name": "Nightly digest", "schedule": "0 9 * * *", "created_at": "-30d"}],
}


def test_alert_group_names_resolve_agent_user_and_team_ids(insert, evaluate):
    insert({**PEOPLE, "jobs": [
        {"at": "-5m", "status": "failed", "agent_id": "a1", "user_id": "u1", "team_id": "t1", "count": 2},
        {"at": "-5m", "status": "failed", "agent_id": "a-unknown", "user_id": None, "team_id": "t1"},
    ]})
    alerts = evaluate({"kind": "threshold", "where": {"status": "failed"},
                       "group_by": ["agent_id", "user_id", "team_id"], "window": "15m",
                       "threshold": {"op": ">=", "value": 1}})
    named = {a.group["agent_id"]: a.group_names for a in alerts}
    assert named == {
        "a1": {"agent_id": "Support Triage", "user_id": "Ana Lima", "team_id": "Support"},
        "a-unknown": {"team_id": "Support"},   # unknown ids and NULLs stay unnamed
    }
    label = next(a.group_label for a in alerts if a.group["agent_id"] == "a1")
    assert label == "agent Support Triage, user Ana Lima, team Support"


def test_alert_group_names_resolve_cron_ids(insert, evaluate):
    insert({**PEOPLE, "events": [
        {"at": "-5m", "event_type": "cron.failed", "metadata": {"cron_id": "c1", "error": "boom"}},
    ]})
    alerts = evaluate({"kind": "threshold", "source": "events", "where": {"event_type": "cron.failed"},
                       "group_by": ["metadata.cron_id"], "window": "15m", "threshold": {"op": ">=", "value": 1}})
    assert [(a.group, a.group_names) for a in alerts] == [
        ({"metadata.cron_id": "c1"}, {"metadata.cron_id": "Nightly digest"}),
    ]
    missed = evaluate({"kind": "cron_missed", "grace": "15m"})
    assert [(a.group, a.group_names) for a in missed] == [({"cron_id": "c1"}, {"cron_id": "Nightly digest"})]


def test_alert_names_rows_of_any_alerts(insert, evaluate):
    insert({**PEOPLE, "jobs": [{"id": "j1", "at": "-1m", "agent_id": "a1", "user_id": "u1"}]})
    alerts = evaluate({"kind": "any", "window": "15m"})
    assert alerts[0].details["row_names"] == {"agent_id": "Support Triage", "user_id": "Ana Lima",
                                              "team_id": "Support"}


def test_alert_carries_at_most_20_row_ids_newest_first_with_a_link_each(insert, evaluate):
    insert({"jobs": [{"id": f"job-{i:02d}", "at": f"-{i}m", "status": "failed"} for i in range(1, 26)]})
    alerts = evaluate({"kind": "threshold", "where": {"status": "failed"}, "window": "1h",
                       "threshold": {"op": ">=", "value": 1}})
    [alert] = alerts
    assert alert.value == 25
    assert alert.row_ids == [f"job-{i:02d}" for i in range(1, 21)]
    assert alert.links == [f"https://auxot.example.com/audit-logs/jobs/{rid}" for rid in alert.row_ids]


def test_alert_row_ids_are_the_group_rows_matching_where_in_the_window(insert, evaluate):
    insert({"jobs": [
        {"id": "mine", "at": "-5m", "status": "failed", "agent_id": "a1"},
        {"id": "other-agent", "at": "-5m", "status": "failed", "agent_id": "a2"},
        {"id": "not-failed", "at": "-5m", "status": "complete", "agent_id": "a1"},
        {"id": "too-old", "at": "-20m", "status": "failed", "agent_id": "a1"},
    ]})
    alerts = evaluate({"kind": "threshold", "where": {"status": "failed"}, "group_by": ["agent_id"],
                       "window": "15m", "threshold": {"op": ">=", "value": 1}})
    assert {a.group["agent_id"]: a.row_ids for a in alerts} == {"a1": ["mine"], "a2": ["other-agent"]}


def test_alert_list_link_filters_by_where_group_and_window(insert, evaluate):
    insert({"jobs": [{"id": "j/1", "at": "-5m", "status": "failed", "agent_id": "a 1"}]})
    links = LinksConfig(base_url="https://auxot.test/ws/")
    alerts = evaluate({"kind": "threshold", "where": {"status": "failed", "job_type": {"in": ["task", "eval"]}},
                       "group_by": ["agent_id"], "window": "15m", "threshold": {"op": ">=", "value": 1}},
                      links=links)
    [alert] = alerts
    assert alert.links == ["https://auxot.test/ws/audit-logs/jobs/j%2F1"]
    url = urlsplit(alert.list_link)
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://auxot.test/ws/audit-logs/jobs"
    assert parse_qs(url.query) == {
        "status": ["failed"], "job_type": ["task,eval"], "agent_id": ["a 1"],
        "from": ["2026-11-20T11:45:00Z"], "to": ["2026-11-20T12:00:00Z"],
    }


def test_alert_links_for_events_and_threads_use_their_tab(insert, evaluate):
    insert({"events": [{"id": "e1", "at": "-5m"}], "threads": [{"id": "th1", "at": "-5m"}]})
    for source, rid in (("events", "e1"), ("threads", "th1")):
        [alert] = evaluate({"kind": "threshold", "source": source, "window": "15m",
                            "threshold": {"op": ">=", "value": 1}})
        assert alert.links == [f"https://auxot.example.com/audit-logs/{source}/{rid}"]
        assert alert.list_link.startswith(f"https://auxot.example.com/audit-logs/{source}?")


def test_alert_window_is_the_half_open_range_ending_now(insert, evaluate):
    insert({"jobs": [{"at": "-5m"}]})
    [alert] = evaluate({"kind": "threshold", "window": "15m", "threshold": {"op": ">=", "value": 1}})
    assert (alert.window_start.isoformat(), alert.window_end.isoformat()) == (
        "2026-11-20T11:45:00+00:00", "2026-11-20T12:00:00+00:00",
    )
