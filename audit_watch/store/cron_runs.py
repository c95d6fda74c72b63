"""Crons' expected runs and their ``cron.fired`` events: shared by the ``cron_missed``
rule and the reports' cron health.

Expected runs come from each cron's own schedule in its own time zone (cronsim:
a run in the hour repeated when clocks go back counts once, a run in the hour
skipped when they go forward happens right after the gap, as cron does it). Crons
that share a schedule and a time zone share its runs: :class:`RunCalendar` walks
each schedule once per evaluation, only as far back as asked.

A run *fired* when a ``cron.fired`` event of its cron lies within ``grace`` after
it. Cron maths has no SQL, so the runs are computed in Python; the database reads
only the fires inside the runs' grace windows (merged into at most
:data:`MAX_WINDOWS` time ranges, each an index range scan on
``(event_type, created_at)``) and matches them per cron: an anti join for one run
per cron (:func:`unfired`), each cron's newest fire (:func:`last_fires`), or the
fires themselves for a bisect per run (:func:`fire_times`). The cost grows with the
number of fires inside those windows, not with crons × runs: thousands of crons
that stop at once are a few statements.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim
from sqlalchemy import DateTime, Float, Text, and_, exists, func, literal, or_, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from audit_watch.core.timestamps import as_utc
from audit_watch.store.source import AuditSource

FIRED = "cron.fired"
MAX_WINDOWS = 64   # time ranges per statement: a wider merged range reads a few more fires, nothing else

Window = tuple[datetime, datetime]


def expected_runs(schedule: str, tz_name: str, until: datetime, since: datetime, limit: int) -> list[datetime]:
    """Expected run times (UTC, newest first) with ``since <= t <= until``."""
    return ScheduleRuns(schedule, tz_name, until).since(since, limit)


class ScheduleRuns:
    """The runs of one schedule in one time zone at or before ``until``, newest
    first, computed lazily and kept: asking for 8 runs and then 64 walks 64."""

    def __init__(self, schedule: str, tz_name: str, until: datetime) -> None:
        start = (as_utc(until).replace(microsecond=0) + timedelta(seconds=1)).astimezone(ZoneInfo(tz_name))
        self._walk: Iterator[datetime] | None = iter(CronSim(schedule, start, reverse=True))
        self._runs: list[datetime] = []

    def first(self, count: int) -> list[datetime]:
        """The newest ``count`` runs (fewer when the schedule has no more)."""
        while len(self._runs) < count and self._walk is not None:
            moment = next(self._walk, None)
            if moment is None:
                self._walk = None
                break
            self._runs.append(moment.astimezone(UTC))
        return self._runs[:count]

    def since(self, since: datetime, limit: int) -> list[datetime]:
        """The newest runs at or after ``since``, at most ``limit``."""
        count = min(limit, 8)
        runs = self.first(count)
        while len(runs) == count < limit and runs[-1] >= since:
            count = min(limit, 4 * count)
            runs = self.first(count)
        return runs[: at_or_after(runs, since)]


def at_or_after(runs: Sequence[datetime], since: datetime) -> int:
    """How many of ``runs`` (newest first) are at or after ``since``."""
    return bisect.bisect_right(runs, -since.timestamp(), key=lambda run: -run.timestamp())


class RunCalendar:
    """:class:`ScheduleRuns` per (schedule, time zone), all at or before ``until``.

    Raises what cronsim and zoneinfo raise for an unusable schedule or time zone
    (``CronSimError``, ``ValueError``, ``KeyError``): callers skip that cron."""

    def __init__(self, until: datetime) -> None:
        self.until = until
        self._schedules: dict[tuple[str, str], ScheduleRuns] = {}

    def runs(self, schedule: str, tz_name: str) -> ScheduleRuns:
        key = (schedule, tz_name)
        found = self._schedules.get(key)
        if found is None:
            found = self._schedules[key] = ScheduleRuns(schedule, tz_name, self.until)
        return found


def merged_windows(windows: Iterable[Window], limit: int = MAX_WINDOWS) -> list[Window]:
    """The union of closed time ranges as at most ``limit`` ranges, oldest first.

    Past ``limit`` the ranges with the shortest gaps between them are joined: the
    result covers the union (and the short gaps), which is all the callers need.
    """
    merged: list[list[datetime]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    while len(merged) > limit:
        gaps = sorted(range(len(merged) - 1), key=lambda i: merged[i + 1][0] - merged[i][1])
        joined = set(gaps[: len(merged) - limit])
        folded: list[list[datetime]] = []
        for index, window in enumerate(merged):
            if index - 1 in joined:
                folded[-1][1] = window[1]
            else:
                folded.append(list(window))
        merged = folded
    return [(start, end) for start, end in merged]


def fired_within(times: Sequence[datetime], start: datetime, end: datetime) -> datetime | None:
    """The newest of the sorted ``times`` with ``start <= t <= end``, or None."""
    index = bisect.bisect_right(times, end)
    if index and times[index - 1] >= start:
        return times[index - 1]
    return None


# --- the statements --------------------------------------------------------------------


def aware_time(src: AuditSource, value: Any) -> datetime | None:
    """A time read from the store, as an aware datetime (as it comes from PostgreSQL:
    thousands of fires need no conversion to compare)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value
    return src.read_time(value)


def _cron_key(src: AuditSource) -> ColumnElement[Any]:
    events = src.table("events")
    return src.json_text(events.c["metadata"], "cron_id")


def _among(src: AuditSource, column: ColumnElement[Any], cron_ids: Sequence[str]) -> ColumnElement[bool]:
    """``column`` is one of ``cron_ids``: one bound JSON parameter, however many ids
    (a JSON array is quicker to send than a text array of thousands)."""
    if src.dialect == "postgresql":
        each = "SELECT jsonb_array_elements_text(CAST(:cron_ids AS jsonb)) AS value"
    else:
        each = "SELECT value FROM json_each(:cron_ids)"
    return column.in_(text(each).bindparams(cron_ids=json.dumps(list(cron_ids))).columns(value=Text))


def _within(src: AuditSource, column: ColumnElement[Any], window: Window) -> ColumnElement[bool]:
    """``start <= t <= end`` (both ends included), narrowed by the time index."""
    start, end = window
    exact = and_(src.time_value(column) >= src.time_param(start), src.time_value(column) <= src.time_param(end))
    if src.dialect != "sqlite":
        return exact
    # Text of any UTC offset lies within a day of its instant (see AuditSource.between).
    low = (as_utc(start) - timedelta(days=1)).strftime("%Y-%m-%d")
    high = (as_utc(end) + timedelta(days=2)).strftime("%Y-%m-%d")
    return and_(column >= literal(low), column < literal(high), exact)


def _fires_where(src: AuditSource, windows: Sequence[Window], cron_ids: Sequence[str]) -> list[ColumnElement[bool]]:
    events = src.table("events")
    return [
        events.c.event_type == FIRED,
        or_(*(_within(src, events.c.created_at, w) for w in windows)),
        _among(src, _cron_key(src), cron_ids),
    ]


def unfired(conn: Connection, src: AuditSource, runs: Mapping[str, datetime], grace: timedelta) -> set[str]:
    """The crons of ``runs`` (cron id: one run each) without a fire within ``grace``
    after their run: one anti join, per cron, inside the database.

    The fires inside the runs' windows are read once (a materialised CTE, hashed by
    cron) and the runs arrive as one JSON parameter; only the crons that did not
    fire come back, so a healthy fleet costs one statement that returns nothing.
    """
    if not runs:
        return set()
    events = src.table("events")
    windows = merged_windows((run, run + grace) for run in set(runs.values()))
    fires = (
        select(_cron_key(src).label("cron_id"), src.time_value(events.c.created_at).label("at"))
        .where(events.c.event_type == FIRED, or_(*(_within(src, events.c.created_at, w) for w in windows)))
        .cte("fires")
        .prefix_with("MATERIALIZED")
    )
    expected = _runs_table(src, runs, grace)
    stmt = select(expected.c.cron_id).where(
        ~exists().where(
            fires.c.cron_id == expected.c.cron_id, fires.c.at >= expected.c.start, fires.c.at <= expected.c.until
        )
    )
    return set(conn.execute(stmt).scalars().all())


def _runs_table(src: AuditSource, runs: Mapping[str, datetime], grace: timedelta) -> Any:
    """(cron_id, start, until) rows, a run and its grace, from one bound JSON parameter;
    the times comparable with ``src.time_value`` of a time column."""
    if src.dialect == "postgresql":
        text_of = {run: (run.isoformat(), (run + grace).isoformat()) for run in set(runs.values())}
        payload = json.dumps([{"c": c, "s": text_of[run][0], "u": text_of[run][1]} for c, run in runs.items()])
        return (
            text("SELECT r.c AS cron_id, r.s AS start, r.u AS until "
                 "FROM jsonb_to_recordset(CAST(:runs AS jsonb)) AS r(c text, s timestamptz, u timestamptz)")
            .bindparams(runs=payload)
            .columns(cron_id=Text, start=DateTime(timezone=True), until=DateTime(timezone=True))
            .subquery("expected")
        )
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    text_of = {run: (as_utc(run).strftime(fmt), as_utc(run + grace).strftime(fmt)) for run in set(runs.values())}
    payload = json.dumps([{"c": c, "s": text_of[run][0], "u": text_of[run][1]} for c, run in runs.items()])
    return (
        text("SELECT json_extract(value, '$.c') AS cron_id, julianday(json_extract(value, '$.s')) AS start, "
             "julianday(json_extract(value, '$.u')) AS until FROM json_each(:runs)")
        .bindparams(runs=payload)
        .columns(cron_id=Text, start=Float, until=Float)
        .subquery("expected")
    )


def fire_times(conn: Connection, src: AuditSource, windows: Sequence[Window], cron_ids: Sequence[str],
               stream: bool = False) -> Iterator[tuple[str, list[datetime]]]:
    """``(cron id, its fire times in the windows, sorted)`` per cron with any, one cron
    at a time; ``stream``: fetched in batches (a month of fires of every cron need not
    be in memory at once)."""
    if not windows or not cron_ids:
        return
    events = src.table("events")
    key = _cron_key(src).label("cron_id")
    at = src.time_value(events.c.created_at).label("at")
    stmt = select(key, at).where(*_fires_where(src, windows, cron_ids)).order_by(key, at)
    current: str | None = None
    times: list[datetime] = []
    result = conn.execution_options(stream_results=True, yield_per=5000).execute(stmt) if stream else conn.execute(stmt)
    for cron_id, value in result if stream else result.all():
        if cron_id != current:
            if current is not None:
                yield current, times
            current, times = cron_id, []
        moment = aware_time(src, value)
        if moment is not None:
            times.append(moment)
    if current is not None:
        yield current, times


def last_fires(conn: Connection, src: AuditSource, windows: Sequence[Window],
               cron_ids: Sequence[str]) -> dict[str, datetime]:
    """{cron id: its newest fire in the windows}, aggregated in SQL (one row per cron)."""
    if not windows or not cron_ids:
        return {}
    events = src.table("events")
    key = _cron_key(src)
    stmt = (
        select(key.label("cron_id"), func.max(src.time_value(events.c.created_at)).label("last"))
        .where(*_fires_where(src, windows, cron_ids))
        .group_by(key)
    )
    found = {}
    for cron_id, value in conn.execute(stmt).all():
        moment = aware_time(src, value)
        if moment is not None:
            found[cron_id] = moment
    return found


def newest_fires(conn: Connection, src: AuditSource, since: datetime, until: datetime,
                 cron_ids: Sequence[str]) -> dict[str, tuple[datetime, str]]:
    """{cron id: (time, event id) of its newest fire with ``since <= t <= until``}."""
    if not cron_ids:
        return {}
    events = src.table("events")
    key = _cron_key(src).label("cron_id")
    at = src.time_value(events.c.created_at)
    ranked = (
        select(
            events.c.id, key, at.label("at"),
            func.row_number().over(partition_by=key, order_by=(at.desc(), events.c.id.desc())).label("rank"),
        )
        .where(*_fires_where(src, [(since, until)], cron_ids))
        .subquery()
    )
    found = {}
    for row_id, cron_id, value, _rank in conn.execute(select(ranked).where(ranked.c.rank == 1)):
        moment = src.read_time(value)
        if moment is not None:
            found[cron_id] = (moment, str(row_id))
    return found
