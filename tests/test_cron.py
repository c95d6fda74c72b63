"""The one cron module: what ``check`` accepts is what the scheduler builds, and the
scheduler and ``cron_missed`` read an expression alike, DST included.

The property tests run a fixed-seed, small budget here; ``CRON_EXAMPLES=5000`` runs
more by hand.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_watch.core.cron import CronError, CronSchedule, check_expression
from audit_watch.daemon.schedules import CronScheduleTrigger, latest_tick
from audit_watch.store.cron_runs import expected_runs

BERLIN, NEW_YORK = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York")
EXAMPLES = int(os.environ.get("CRON_EXAMPLES", "150"))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fires(expr: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """What the scheduler fires in (start, end]: its trigger asked again and again."""
    trigger = CronScheduleTrigger(expr, zone)
    out: list[datetime] = []
    previous = None
    while True:
        run = trigger.get_next_fire_time(previous, start)
        if run is None or run > end:
            return out
        if run > start:
            out.append(run)
        previous = run


@pytest.mark.parametrize("expr, message", [
    ("0 0 31 2 *", "never fires: none of its months has that day"),
    ("5-3 * * * *", "bad minute field"),
    ("0 0 * * 7-1", "bad day-of-week field"),
    ("0 0 ? * 1", "bad day-of-month field"),
    ("0 0 15W * *", "bad day-of-month field"),
    ("@daily", "not a five-field cron expression"),
    ("0 * * * * *", "not a five-field cron expression"),   # cronsim would read seconds
])
def test_what_the_scheduler_cannot_use_is_refused_everywhere_alike(expr: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        check_expression(expr)
    with pytest.raises(CronError, match=message):
        CronScheduleTrigger(expr, BERLIN)
    with pytest.raises(CronError, match=message):
        expected_runs(expr, "UTC", utc(2026, 11, 20), utc(2026, 11, 1), 10)


def test_two_oclock_in_berlin_runs_once_on_the_day_clocks_go_back() -> None:
    # 2026-10-25: 02:00-02:59 happens twice in Berlin (CEST, then CET); cron runs once.
    day = (utc(2026, 10, 24, 12), utc(2026, 10, 25, 12))
    assert fires("0 2 * * *", BERLIN, *day) == [utc(2026, 10, 25, 0)]          # 02:00 CEST
    assert expected_runs("0 2 * * *", "Europe/Berlin", day[1], day[0], 10) == [utc(2026, 10, 25, 0)]


def test_a_run_in_the_skipped_hour_happens_right_after_the_gap_in_berlin_and_new_york() -> None:
    # 2026-03-29 02:30 does not exist in Berlin: 03:00 CEST. 2026-03-08 02:30 not in New York: 03:00 EDT.
    for zone, day, after_gap in ((BERLIN, utc(2026, 3, 28, 12), utc(2026, 3, 29, 1)),
                                 (NEW_YORK, utc(2026, 3, 7, 12), utc(2026, 3, 8, 7))):
        end = day + timedelta(days=1)
        assert fires("30 2 * * *", zone, day, end) == [after_gap]
        assert expected_runs("30 2 * * *", zone.key, end, day, 10) == [after_gap]


def test_an_hourly_schedule_runs_in_both_copies_of_the_repeated_hour_in_new_york() -> None:
    # 2026-11-01 01:00 EDT (05:00 UTC) and 01:00 EST (06:00 UTC) are both 01:00.
    start, end = utc(2026, 11, 1, 4), utc(2026, 11, 1, 7)
    expected = [utc(2026, 11, 1, 5), utc(2026, 11, 1, 6), utc(2026, 11, 1, 7)]
    assert fires("0 * * * *", NEW_YORK, start, end) == expected
    assert expected_runs("0 * * * *", "America/New_York", end, start + timedelta(seconds=1), 10) == expected[::-1]


def test_the_latest_tick_is_the_last_fire_at_or_before_now() -> None:
    trigger = CronScheduleTrigger("0 9 * * 1-5", BERLIN)
    friday_nine = utc(2026, 11, 20, 8)                  # 09:00 CET
    assert latest_tick(trigger, friday_nine) == friday_nine
    assert latest_tick(trigger, friday_nine - timedelta(microseconds=1)) == utc(2026, 11, 19, 8)
    assert trigger.get_next_fire_time(None, friday_nine) == friday_nine        # at or after now
    assert trigger.get_next_fire_time(friday_nine, friday_nine) == utc(2026, 11, 23, 8)   # Monday


def test_a_schedule_from_the_audit_store_with_an_unknown_time_zone_is_a_cron_error() -> None:
    with pytest.raises(CronError, match="unknown time zone 'Mars/Olympus'"):
        CronSchedule.read("0 9 * * *", "Mars/Olympus")


# --- properties ----------------------------------------------------------------------------


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    number = st.integers(low, high).map(str)
    span = st.tuples(st.integers(low, high), st.integers(low, high)).map(lambda p: f"{min(p)}-{max(p)}")
    return st.one_of(
        st.just("*"), number, span,
        st.integers(1, high).map(lambda step: f"*/{step}"),
        st.tuples(span, st.integers(1, 5)).map(lambda p: f"{p[0]}/{p[1]}"),
        st.lists(number, min_size=2, max_size=3).map(",".join),
    )


EXPRESSIONS = st.tuples(
    _field(0, 59), st.one_of(_field(0, 23), st.sampled_from(["1", "2", "2-3", "*/2"])),
    st.one_of(st.just("*"), _field(1, 31), st.sampled_from(["L", "LW"])),
    st.one_of(st.just("*"), _field(1, 12), st.sampled_from(["jan-mar", "oct,nov"])),
    st.one_of(st.just("*"), _field(0, 7), st.sampled_from(["mon-fri", "5L", "0#1"])),
).map(" ".join)

# Days whose local time jumps or repeats, and an ordinary one.
DAYS = [utc(2026, 3, 8, 0), utc(2026, 3, 29, 0), utc(2026, 10, 25, 0), utc(2026, 11, 1, 0), utc(2026, 6, 10, 0)]
GARBAGE = st.lists(st.text(alphabet="0123456789*/,-LW#?JANMOFRI ", min_size=1, max_size=6), min_size=1,
                   max_size=7).map(" ".join)


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None)
@given(EXPRESSIONS, st.sampled_from([UTC, BERLIN, NEW_YORK]), st.sampled_from(DAYS),
       st.integers(0, 36 * 3600))
def test_the_scheduler_and_cron_missed_see_the_same_runs(expr: str, zone: ZoneInfo, day: datetime,
                                                          offset: int) -> None:
    """Forward (the scheduler's fires) and backward (cron_missed's expected runs, the
    scheduler's latest tick) walks agree, across DST changes in Berlin and New York."""
    try:
        check_expression(expr)
    except CronError:
        return
    start = day - timedelta(hours=6) + timedelta(seconds=offset % 3600)
    end = start + timedelta(hours=30) if expr.split()[0] != "*" else start + timedelta(hours=8)
    forward = fires(expr, zone, start, end)
    backward = expected_runs(expr, zone.key if zone is not UTC else "UTC", end, start + timedelta(seconds=1), 10**6)
    assert forward == backward[::-1]
    trigger = CronScheduleTrigger(expr, zone)
    if forward:
        assert latest_tick(trigger, end) == forward[-1]
        assert latest_tick(trigger, forward[0]) == forward[0]


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None)
@given(st.one_of(EXPRESSIONS, GARBAGE), st.sampled_from([UTC, BERLIN, NEW_YORK]))
def test_what_check_accepts_the_scheduler_can_always_run(expr: str, zone: ZoneInfo) -> None:
    """Accepted: the trigger builds and always has a next and a latest tick. Refused:
    a CronError (a ``file:line: field: message`` problem), never anything else."""
    try:
        check_expression(expr)
    except CronError:
        with pytest.raises(CronError):
            CronScheduleTrigger(expr, zone)
        return
    trigger = CronScheduleTrigger(expr, zone)
    for now in (utc(2026, 3, 29, 1, 30), utc(2026, 11, 1, 6, 30), utc(2099, 12, 31, 23, 59)):
        following = trigger.get_next_fire_time(None, now)
        assert following is not None and following >= now
        assert latest_tick(trigger, now) <= now
