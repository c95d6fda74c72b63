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

# (schedule, time zone, until, since, the expected runs, newest first)
EXPECTED_RUNS = {
    # CEST (UTC+2) until 2026-10-25 03:00 local, then CET (UTC+1)
    "berlin 09:00 moves from 07 to 08 UTC when summer time ends": (
        "0 9 * * *", "Europe/Berlin", utc(2026, 10, 27, 12), utc(2026, 10, 22),
        [utc(2026, 10, 27, 8), utc(2026, 10, 26, 8), utc(2026, 10, 25, 8),
         utc(2026, 10, 24, 7), utc(2026, 10, 23, 7), utc(2026, 10, 22, 7)]),
    # EDT (UTC-4) until 2026-11-01 02:00 local, then EST (UTC-5)
    "new york 09:00 moves from 13 to 14 UTC when daylight time ends": (
        "0 9 * * *", "America/New_York", utc(2026, 11, 2, 23), utc(2026, 10, 31),
        [utc(2026, 11, 2, 14), utc(2026, 11, 1, 14), utc(2026, 10, 31, 13)]),
    # 01:30 happens twice on 2026-11-01 (05:30 UTC in EDT, 06:30 UTC in EST): one run, the first
    "new york 01:30 runs once on the fall-back day": (
        "30 1 * * *", "America/New_York", utc(2026, 11, 2, 12), utc(2026, 10, 31),
        [utc(2026, 11, 2, 6, 30), utc(2026, 11, 1, 5, 30), utc(2026, 10, 31, 5, 30)]),
    # 02:30 happens twice on 2026-10-25 (00:30 UTC in CEST, 01:30 UTC in CET)
    "berlin 02:30 runs once on the fall-back day": (
        "30 2 * * *", "Europe/Berlin", utc(2026, 10, 26, 12), utc(2026, 10, 24),
        [utc(2026, 10, 26, 1, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 24, 0, 30)]),
    "an hourly cron runs in both copies of the repeated hour": (
        "0 * * * *", "America/New_York", utc(2026, 11, 1, 7), utc(2026, 11, 1, 4),
        [utc(2026, 11, 1, 7), utc(2026, 11, 1, 6), utc(2026, 11, 1, 5), utc(2026, 11, 1, 4)]),
    # 2026-03-29 02:30 does not exist in Berlin: the run happens at 03:00 CEST = 01:00 UTC
    "a run in the skipped spring hour happens right after the gap": (
        "30 2 * * *", "Europe/Berlin", utc(2026, 3, 30, 12), utc(2026, 3, 28),
        [utc(2026, 3, 30, 0, 30), utc(2026, 3, 29, 1), utc(2026, 3, 28, 1, 30)]),
}


@pytest.mark.parametrize("schedule, zone, until, since, expected", EXPECTED_RUNS.values(), ids=EXPECTED_RUNS.keys())
def test_expected_runs_across_dst(schedule, zone, until, since, expected):
    assert expected_runs(schedule, zone, until=until, since=since, limit=10) == expected


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


# (schedule, time zone, now, cron.fired times, the missed runs expected)
DST_CASES = {
    "berlin after dst end expects 08 utc": (
        "0 9 * * *", "Europe/Berlin", utc(2026, 10, 26, 12), ["2026-10-25T08:02:00Z", "2026-10-26T08:02:00Z"], []),
    "berlin firing at the summer offset after dst end is missed": (
        "0 9 * * *", "Europe/Berlin", utc(2026, 10, 26, 12),
        ["2026-10-24T07:02:00Z",                              # on time (CEST)
         "2026-10-25T07:02:00Z", "2026-10-26T07:02:00Z"],      # an hour early (CET)
        ["2026-10-26T08:00:00+00:00", "2026-10-25T08:00:00+00:00"]),
    "new york on the fall-back day is satisfied by one fire": (
        "30 1 * * *", "America/New_York", utc(2026, 11, 1, 12), ["2026-10-31T05:31:00Z", "2026-11-01T05:31:00Z"], []),
}


@pytest.mark.parametrize("schedule, zone, now, fires, missed", DST_CASES.values(), ids=DST_CASES.keys())
def test_cron_across_dst(insert, evaluate, schedule, zone, now, fires, missed):
    insert({"crons": [cron(schedule=schedule, timezone=zone)], "events": [fired(at) for at in fires]}, now=now)
    alerts = evaluate(RULE, now=now)
    assert values(alerts) == ({"c1": len(missed)} if missed else {})
    assert [a.details["missed_runs"] for a in alerts] == ([missed] if missed else [])


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


# --- streaks across slices of runs, against a count fire by fire --------------------------------

from audit_watch.store.cron_runs import ScheduleRuns, at_or_after, fired_within, merged_windows  # noqa: E402


def test_merged_windows_join_overlaps_and_stay_under_the_limit():
    w = [(utc(2026, 11, 20, h), utc(2026, 11, 20, h, 15)) for h in (1, 2, 4)]
    assert merged_windows(w + [(utc(2026, 11, 20, 1, 10), utc(2026, 11, 20, 1, 20))]) == [
        (utc(2026, 11, 20, 1), utc(2026, 11, 20, 1, 20)), w[1], w[2]]
    # past the limit the shortest gaps are joined (5 and 45 minutes), the widest stays open
    folded = merged_windows(w + [(utc(2026, 11, 20, 4, 20), utc(2026, 11, 20, 4, 30))], limit=2)
    assert folded == [(utc(2026, 11, 20, 1), utc(2026, 11, 20, 2, 15)), (utc(2026, 11, 20, 4), utc(2026, 11, 20, 4, 30))]


def test_fired_within_takes_the_newest_fire_in_the_range():
    fires = [utc(2026, 11, 20, 9, 1), utc(2026, 11, 20, 9, 5), utc(2026, 11, 20, 10, 1)]
    assert fired_within(fires, utc(2026, 11, 20, 9), utc(2026, 11, 20, 9, 15)) == utc(2026, 11, 20, 9, 5)
    assert fired_within(fires, utc(2026, 11, 20, 9, 6), utc(2026, 11, 20, 9, 59)) is None
    assert fired_within(fires, utc(2026, 11, 20, 10, 1), utc(2026, 11, 20, 10, 1)) == utc(2026, 11, 20, 10, 1)


def test_schedule_runs_are_walked_once_and_cut_at_since():
    runs = ScheduleRuns("0 * * * *", "UTC", utc(2026, 11, 20, 12, 30))
    assert runs.first(2) == [utc(2026, 11, 20, 12), utc(2026, 11, 20, 11)]
    assert runs.since(utc(2026, 11, 20, 9), 100) == [utc(2026, 11, 20, h) for h in (12, 11, 10, 9)]
    assert runs.since(utc(2026, 11, 19), 3) == [utc(2026, 11, 20, h) for h in (12, 11, 10)]
    assert at_or_after(runs.first(4), utc(2026, 11, 20, 10, 30)) == 2


def count_missed(schedule, tz, fires, now, grace, created, max_runs):
    """Fire by fire, without audit-watch's slices."""
    missed = 0
    for run in expected_runs(schedule, tz, now - grace, created, max_runs):
        if any(run <= f <= run + grace for f in fires):
            break
        missed += 1
    return missed


@pytest.mark.parametrize("streak", [1, 2, 3, 4, 8, 30, 63, 64, 99])
def test_streaks_crossing_the_slices_of_runs_are_exact(insert, evaluate, streak):
    # hourly, latest run due 11:00; fired on time until `streak` runs ago (slices: 1, 1, 2, 4, ... runs)
    fires = [utc(2026, 11, 20, 11, 2) - timedelta(hours=streak + k) for k in range(3)]
    insert({"crons": [cron(schedule="0 * * * *", created_at="-30d")],
            "events": [fired(at.isoformat()) for at in fires]})
    alerts = evaluate(RULE)
    expected = count_missed("0 * * * *", "UTC", fires, NOW, timedelta(minutes=15), NOW - timedelta(days=30), 100)
    assert values(alerts) == {"c1": expected} and expected == streak
    assert alerts[0].details["last_fired"] == max(fires).isoformat()


def test_a_late_fire_after_the_streak_began_is_the_last_fire_but_no_run_fired(insert, evaluate):
    # c1 hourly at :00 ran on time at 09:00, then 20 minutes late for 10:00 (inside c2's
    # window for its 10:20 run, so c1's newest fire there belongs to no run of c1)
    insert({"crons": [cron(schedule="0 * * * *"), cron("c2", schedule="20 * * * *")],
            "events": [fired("2026-11-20T09:00:30Z"), fired("2026-11-20T10:20:00Z"),
                       fired("2026-11-20T09:20:30Z", "c2")]})
    alerts = {a.group["cron_id"]: a for a in evaluate(RULE)}
    assert {cron_id: a.value for cron_id, a in alerts.items()} == {"c1": 2, "c2": 2}
    assert alerts["c1"].details["last_fired"] == "2026-11-20T10:20:00+00:00"
    assert alerts["c2"].details["last_fired"] == "2026-11-20T09:20:30+00:00"


def test_random_fleets_match_the_count_fire_by_fire(insert, evaluate):
    """A small differential test (fixed seed): crons on several schedules and time zones,
    fires on time, late, early or missing, created at various times."""
    import random

    rng = random.Random(10)
    schedules = ["*/5 * * * *", "0 * * * *", "30 */2 * * *", "15 9 * * *", "0 9 * * 1-5", "*/20 * * * *"]
    zones = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]
    crons, events, expected = [], [], {}
    for i in range(40):
        schedule, zone = rng.choice(schedules), rng.choice(zones)
        created = NOW - timedelta(hours=rng.choice([2, 30, 200]))
        stop = NOW - timedelta(minutes=rng.choice([0, 20, 70, 300, 3000]))
        fires = []
        for run in reversed(expected_runs(schedule, zone, NOW, NOW - timedelta(days=10), 3000)):
            if run > stop:
                break
            roll = rng.random()
            offset = (timedelta(minutes=rng.randint(0, 14)) if roll < 0.85 else
                      timedelta(minutes=rng.randint(16, 40)) if roll < 0.93 else
                      -timedelta(minutes=1) if roll < 0.96 else None)
            if offset is not None and run + offset <= NOW:
                fires.append(run + offset)
        cron_id = f"c{i:02d}"
        crons.append(cron(cron_id, schedule=schedule, timezone=zone, created_at=created.isoformat()))
        events += [fired(at.isoformat(), cron_id) for at in fires]
        count = count_missed(schedule, zone, fires, NOW, timedelta(minutes=15), created, 100)
        if count:
            expected[cron_id] = count
    insert({"crons": crons, "events": events})
    assert values(evaluate({**RULE, "max_groups": 100})) == expected
    assert len(expected) >= 10
