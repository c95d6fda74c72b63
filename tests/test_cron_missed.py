"""cron_missed: expected runs by each cron's schedule and time zone (DST included),
matched to ``cron.fired`` events within ``grace`` (rules.md, Kinds)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from audit_watch.store import cron_runs
from audit_watch.store.cron_runs import expected_runs

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


# --- expected_runs against hand-computed UTC instants -------------------------------------------

def test_expected_runs_berlin_nine_oclock_moves_from_07_to_08_utc_when_summer_time_ends():
    # CEST (UTC+2) until 2026-10-25 03:00 local, then CET (UTC+1)
    runs = expected_runs("0 9 * * *", "Europe/Berlin", until=utc(2026, 10, 27, 12), since=utc(2026, 10, 22), limit=10)
    assert runs == [
        utc(2026, 10, 27, 8), utc(2026, 10, 26, 8), utc(2026, 10, 25, 8),
        utc(2026, 10, 24, 7), utc(2026, 10, 23, 7), utc(2026, 10, 22, 7),
    ]


def test_expected_runs_new_york_nine_oclock_moves_from_13_to_14_utc_when_daylight_time_ends():
    # EDT (UTC-4) until 2026-11-01 02:00 local, then EST (UTC-5)
    runs = expected_runs("0 9 * * *", "America/New_York", until=utc(2026, 11, 2, 23), since=utc(2026, 10, 31), limit=10)
    assert runs == [utc(2026, 11, 2, 14), utc(2026, 11, 1, 14), utc(2026, 10, 31, 13)]


def test_expected_runs_new_york_0130_runs_once_on_the_fall_back_day():
    # 01:30 happens twice on 2026-11-01 (05:30 UTC in EDT, 06:30 UTC in EST): one run, the first
    runs = expected_runs("30 1 * * *", "America/New_York", until=utc(2026, 11, 2, 12), since=utc(2026, 10, 31), limit=10)
    assert runs == [utc(2026, 11, 2, 6, 30), utc(2026, 11, 1, 5, 30), utc(2026, 10, 31, 5, 30)]


def test_expected_runs_berlin_0230_runs_once_on_the_fall_back_day():
    # 02:30 happens twice on 2026-10-25 (00:30 UTC in CEST, 01:30 UTC in CET)
    runs = expected_runs("30 2 * * *", "Europe/Berlin", until=utc(2026, 10, 26, 12), since=utc(2026, 10, 24), limit=10)
    assert runs == [utc(2026, 10, 26, 1, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 24, 0, 30)]


def test_expected_runs_hourly_cron_runs_in_both_copies_of_the_repeated_hour():
    runs = expected_runs("0 * * * *", "America/New_York", until=utc(2026, 11, 1, 7), since=utc(2026, 11, 1, 4), limit=10)
    assert runs == [utc(2026, 11, 1, 7), utc(2026, 11, 1, 6), utc(2026, 11, 1, 5), utc(2026, 11, 1, 4)]


def test_expected_runs_in_the_skipped_spring_hour_run_right_after_the_gap():
    # 2026-03-29 02:30 does not exist in Berlin: the run happens at 03:00 CEST = 01:00 UTC
    runs = expected_runs("30 2 * * *", "Europe/Berlin", until=utc(2026, 3, 30, 12), since=utc(2026, 3, 28), limit=10)
    assert runs == [utc(2026, 3, 30, 0, 30), utc(2026, 3, 29, 1), utc(2026, 3, 28, 1, 30)]


def test_expected_runs_include_both_bounds_and_respect_the_limit():
    runs = expected_runs("0 * * * *", "UTC", until=utc(2026, 11, 20, 9), since=utc(2026, 11, 20, 6), limit=10)
    assert runs == [utc(2026, 11, 20, h) for h in (9, 8, 7, 6)]
    assert expected_runs("0 * * * *", "UTC", until=utc(2026, 11, 20, 9), since=utc(2026, 11, 20, 6), limit=2) == [
        utc(2026, 11, 20, 9), utc(2026, 11, 20, 8),
    ]


# --- end to end ---------------------------------------------------------------------------------

RULE = {"kind": "cron_missed", "grace": "15m"}


def cron(id="c1", schedule="0 9 * * *", **extra):
    return {"id": id, "name": extra.pop("name", f"cron {id}"), "schedule": schedule, "created_at": "-30d", **extra}


def fired(at, cron_id="c1"):
    return {"at": at, "event_type": "cron.fired", "metadata": {"cron_id": cron_id}}


def values(alerts):
    return {a.group["cron_id"]: a.value for a in alerts}


def test_cron_that_fired_on_time_does_not_alert(insert, evaluate):
    insert({"crons": [cron()], "events": [fired("2026-11-19T09:01:00Z"), fired("2026-11-20T09:01:00Z")]})
    assert evaluate(RULE) == []


def test_cron_that_missed_its_latest_run_alerts_with_value_1(insert, evaluate):
    insert({"crons": [cron()], "events": [fired("2026-11-19T09:00:30Z")]})
    alerts = evaluate(RULE)
    assert values(alerts) == {"c1": 1}
    details = alerts[0].details
    assert details["expected_at"] == "2026-11-20T09:00:00+00:00"
    assert details["missed_runs"] == ["2026-11-20T09:00:00+00:00"]
    assert details["last_fired"] == "2026-11-19T09:00:30+00:00"
    assert alerts[0].row_ids  # evidence: the last cron.fired events
    assert alerts[0].links[0].startswith("https://auxot.example.com/audit-logs/events/")


def test_cron_consecutive_misses_count_back_to_the_last_fired_run(insert, evaluate):
    insert({"crons": [cron()], "events": [
        fired("2026-11-15T09:00:10Z"), fired("2026-11-17T09:00:10Z"),  # 18, 19, 20 missed
    ]})
    assert values(evaluate(RULE)) == {"c1": 3}


def test_cron_latest_run_within_grace_is_not_judged_yet(insert, evaluate):
    now = utc(2026, 11, 20, 9, 10)  # the 09:00 run is only 10 minutes old
    insert({"crons": [cron()], "events": [fired("2026-11-19T09:01:00Z")]}, now=now)
    assert evaluate(RULE, now=now) == []
    # once the grace has passed it is judged
    assert values(evaluate(RULE, now=utc(2026, 11, 20, 9, 15))) == {"c1": 1}


def test_cron_judges_the_previous_run_while_the_latest_is_within_grace(insert, evaluate):
    now = utc(2026, 11, 20, 9, 10)
    insert({"crons": [cron()], "events": [fired("2026-11-18T09:01:00Z")]}, now=now)
    alerts = evaluate(RULE, now=now)
    assert values(alerts) == {"c1": 1}
    assert alerts[0].details["expected_at"] == "2026-11-19T09:00:00+00:00"


def test_cron_fire_after_the_grace_still_counts_as_missed(insert, evaluate):
    insert({"crons": [cron()], "events": [fired("2026-11-19T09:01:00Z"), fired("2026-11-20T09:20:00Z")]})
    assert values(evaluate(RULE)) == {"c1": 1}


def test_cron_fire_before_the_expected_time_does_not_count(insert, evaluate):
    insert({"crons": [cron()], "events": [fired("2026-11-19T09:01:00Z"), fired("2026-11-20T08:59:00Z")]})
    assert values(evaluate(RULE)) == {"c1": 1}


def test_cron_fire_exactly_at_the_expected_time_counts(insert, evaluate):
    insert({"crons": [cron()], "events": [fired("2026-11-20T09:00:00Z")]})
    assert evaluate(RULE) == []


def test_cron_fire_of_another_cron_does_not_count(insert, evaluate):
    insert({"crons": [cron("c1"), cron("c2")], "events": [
        fired("2026-11-20T09:01:00Z", "c2"), fired("2026-11-19T09:01:00Z", "c1"),
        fired("2026-11-19T09:01:00Z", "c2"),
        {"at": "2026-11-20T09:01:00Z", "event_type": "cron.failed", "metadata": {"cron_id": "c1"}},
    ]})
    assert values(evaluate(RULE)) == {"c1": 1}


def test_cron_created_after_its_only_expected_run_does_not_alert(insert, evaluate):
    # created an hour ago (11:00), never fired; its only expected run so far was 09:00 today
    insert({"crons": [cron(created_at="-1h")]})
    assert evaluate(RULE) == []


def test_cron_misses_before_created_at_are_not_counted(insert, evaluate):
    insert({"crons": [cron(created_at="2026-11-18T12:00:00Z")]})   # never fired: misses 19th and 20th
    alerts = evaluate(RULE)
    assert values(alerts) == {"c1": 2}
    assert alerts[0].details["last_fired"] is None


def test_disabled_cron_is_ignored(insert, evaluate):
    insert({"crons": [cron("on"), cron("off", enabled=False)]})
    assert set(values(evaluate(RULE))) == {"on"}


@pytest.mark.parametrize(
    "where, expected",
    [
        ({"agent_id": "a2"}, {"c2"}),
        ({"agent_id": {"in": ["a1", "a3"]}}, {"c1", "c3"}),
        ({"name": {"not": "Nightly digest"}}, {"c2", "c3", "c4"}),
        ({"name": "Nightly digest"}, {"c1"}),
        ({"name": {"contains": "REPORT"}}, {"c2", "c3"}),
        ({"timezone": {"not": "UTC"}}, {"c3"}),
        ({"enabled": True}, {"c1", "c2", "c3", "c4"}),
        ({"agent_id": 4711}, {"c4"}),   # an unquoted numeric id in YAML
    ],
)
def test_cron_where_filters_crons(insert, evaluate, where, expected):
    insert({"crons": [
        cron("c1", agent_id="a1", name="Nightly digest"),
        cron("c2", agent_id="a2", name="Weekly report"),
        cron("c3", agent_id="a3", name="Daily report", timezone="Europe/Berlin"),
        cron("c4", agent_id="4711", name="Numbered"),
    ]})
    assert set(values(evaluate({**RULE, "where": where}))) == expected


def test_cron_in_berlin_after_dst_end_expects_08_utc(insert, evaluate):
    now = utc(2026, 10, 26, 12)
    insert({"crons": [cron(timezone="Europe/Berlin")], "events": [
        fired("2026-10-25T08:02:00Z"), fired("2026-10-26T08:02:00Z"),
    ]}, now=now)
    assert evaluate(RULE, now=now) == []


def test_cron_in_berlin_firing_at_the_summer_time_offset_after_dst_end_is_missed(insert, evaluate):
    now = utc(2026, 10, 26, 12)
    insert({"crons": [cron(timezone="Europe/Berlin")], "events": [
        fired("2026-10-24T07:02:00Z"),                                 # on time (CEST)
        fired("2026-10-25T07:02:00Z"), fired("2026-10-26T07:02:00Z"),  # an hour early (CET)
    ]}, now=now)
    alerts = evaluate(RULE, now=now)
    assert values(alerts) == {"c1": 2}
    assert alerts[0].details["missed_runs"] == ["2026-10-26T08:00:00+00:00", "2026-10-25T08:00:00+00:00"]


def test_cron_in_new_york_on_the_fall_back_day_is_satisfied_by_one_fire(insert, evaluate):
    now = utc(2026, 11, 1, 12)
    insert({"crons": [cron(schedule="30 1 * * *", timezone="America/New_York")], "events": [
        fired("2026-10-31T05:31:00Z"), fired("2026-11-01T05:31:00Z"),
    ]}, now=now)
    assert evaluate(RULE, now=now) == []


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # offset text is a SQLite matter
def test_cron_fired_events_written_with_an_offset_on_sqlite_still_match(store, insert, evaluate):
    insert({"crons": [cron()]})
    with store.engine.begin() as conn:
        for row_id, at in (("f1", "2026-11-19T11:01:00+02:00"), ("f2", "2026-11-20T04:01:00-05:00")):
            conn.execute(text(
                "INSERT INTO events (id, event_type, severity, description, metadata, created_at) "
                "VALUES (:id, 'cron.fired', 'info', '', '{\"cron_id\": \"c1\"}', :at)"
            ), {"id": row_id, "at": at})
    assert evaluate(RULE) == []


def test_cron_with_an_unusable_schedule_or_time_zone_is_skipped_not_fatal(insert, evaluate):
    insert({"crons": [cron("bad-tz", timezone="Mars/Olympus"), cron("bad-cron", schedule="not a cron"),
                      cron("good")]})
    assert set(values(evaluate(RULE))) == {"good"}


# Rows the cron library cannot read: skipped with a warning, once per cron and schedule.
UNREADABLE = ["0 0 31 2 *", "5-3 * * * *", "0 0 * * 7-1", "0 0 ? * 1", "0 0 15W * *"]


def test_crons_the_cron_library_cannot_read_are_skipped_and_said_once(insert, evaluate, caplog, monkeypatch):
    monkeypatch.setattr(cron_runs, "_skipped", set())
    bad = [cron(f"bad{i}", schedule=expr) for i, expr in enumerate(UNREADABLE)]
    insert({"crons": [*bad, cron("good"), cron("fine")], "events": [fired("2026-11-20T09:01:00Z", "fine")]})
    with caplog.at_level(logging.DEBUG, logger="audit_watch.store.cron_runs"):
        assert values(evaluate(RULE)) == {"good": 30}
        warned = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert sorted(r.getMessage().split()[1] for r in warned) == [f"bad{i}" for i in range(5)]
        assert warned[0].getMessage() == ("cron bad0 (schedule '0 0 31 2 *', time zone 'UTC') is not checked: "
                                          "'0 0 31 2 *' never fires: none of its months has that day")
        caplog.clear()
        assert values(evaluate(RULE, now=NOW + timedelta(minutes=1))) == {"good": 30}
        assert [r.levelno for r in caplog.records] == [logging.DEBUG] * 5       # not again at every evaluation


def test_cron_consecutive_misses_stop_at_max_runs(insert, evaluate):
    insert({"crons": [cron(schedule="*/5 * * * *", created_at="-30d")]})
    alerts = evaluate({**RULE, "max_runs": 10})
    assert values(alerts) == {"c1": 10}
    assert alerts[0].details["at_least"] is True
    assert alerts[0].details["expected_at"] == (NOW - timedelta(minutes=15)).isoformat()
