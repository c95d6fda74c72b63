"""Crons' expected runs and their ``cron.fired`` events: shared by the ``cron_missed``
rule and the reports' cron health.

Expected runs come from each cron's own schedule in its own time zone, read by
:mod:`audit_watch.core.cron` like every schedule (a run in the hour repeated when
clocks go back counts once, a run in the hour skipped when they go forward happens
right after the gap, as cron does it). Crons that share a schedule and a time zone
share its runs: :class:`RunCalendar` walks each schedule once per evaluation, only
as far back as asked. A cron whose schedule or time zone cannot be read is not
checked; :func:`skip_unreadable` says so once.

A run *fired* when a ``cron.fired`` event of its cron lies within ``grace`` after
it. Cron maths has no SQL, so the runs are computed in Python; the database reads
only the fires inside the runs' grace windows (merged into at most
:data:`MAX_WINDOWS` time ranges, each an index range scan on
``(event_type, created_at)``) and matches them per cron: an anti join for the
latest run of every cron (:func:`missed_latest`), each cron's newest fire
(:func:`last_fires`), or the fires themselves for a bisect per run
(:func:`fire_times`). The cost grows with the
number of fires inside those windows, not with crons × runs: thousands of crons
that stop at once are a few statements.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Float, Text, and_, exists, func, literal, or_, select, text, type_coerce
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from audit_watch.core.cron import CronError, CronSchedule
from audit_watch.core.timestamps import as_utc
from audit_watch.store.source import AuditSource

log = logging.getLogger(__name__)

FIRED = "cron.fired"
MAX_WINDOWS = 64   # time ranges per statement: a wider merged range reads a few more fires, nothing else

Window = tuple[datetime, datetime]


# (cron id, schedule, time zone) already warned about: see skip_unreadable.
_skipped: set[tuple[str, str, str]] = set()
_skipped_lock = threading.Lock()


def expected_runs(schedule: str, tz_name: str, until: datetime, since: datetime, limit: int) -> list[datetime]:
    """Expected run times (UTC, newest first) with ``since <= t <= until``.

    Raises :class:`~audit_watch.core.cron.CronError` for a schedule or time zone the
    cron library cannot read (the crons table is data: callers skip such a cron).
    """
    return CronSchedule.read(schedule, tz_name).runs_between(as_utc(since), as_utc(until), limit)


def skip_unreadable(cron_id: str, schedule: str, tz_name: str | None, error: CronError) -> None:
    """Say that a cron whose schedule or time zone cannot be read is skipped (never
    alerted on, counted as idle): a warning the first time this process meets each
    (cron, schedule, time zone), a DEBUG line at later evaluations."""
    key = (cron_id, schedule, tz_name or "UTC")
    with _skipped_lock:
        first = key not in _skipped
        _skipped.add(key)
    log.log(logging.WARNING if first else logging.DEBUG,
            "cron %s (schedule %r, time zone %r) is not checked: %s", cron_id, schedule, tz_name, error)


def runs_or_skip(cron_id: str, schedule: str, tz_name: str | None, until: datetime, since: datetime,
                 limit: int) -> list[datetime]:
    """:func:`expected_runs`, or none for a cron whose schedule or time zone cannot be
    read (see :func:`skip_unreadable`)."""
    try:
        return expected_runs(schedule, tz_name or "UTC", until, since, limit)
    except CronError as exc:
        skip_unreadable(cron_id, schedule, tz_name, exc)
        return []


class ScheduleRuns:
    """The runs of one schedule in one time zone at or before ``until``, newest
    first, computed lazily and kept: asking for 8 runs and then 64 walks 64."""

    def __init__(self, schedule: str, tz_name: str, until: datetime) -> None:
        self._walk: Iterator[datetime] | None = CronSchedule.read(schedule, tz_name).runs_until(as_utc(until))
        self._runs: list[datetime] = []

    def first(self, count: int) -> list[datetime]:
        """The newest ``count`` runs (fewer when the schedule has no more)."""
        while len(self._runs) < count and self._walk is not None:
            moment = next(self._walk, None)
            if moment is None:
                self._walk = None
                break
            self._runs.append(moment)
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

    Raises :class:`~audit_watch.core.cron.CronError` for a schedule or time zone the
    cron library cannot read: callers skip the crons that have it."""

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


def _plain_time(src: AuditSource, column: ColumnElement[Any]) -> ColumnElement[Any]:
    """A time column (or its ``time_value``) read as the driver gives it: thousands of
    fires need no per-row conversion (see :func:`aware_time`)."""
    if src.dialect == "postgresql":
        return type_coerce(column, DateTime(timezone=True))
    return column


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


def missed_latest(conn: Connection, src: AuditSource, crons_filter: ColumnElement[bool],
                  due: Mapping[tuple[str, str], datetime], grace: timedelta) -> list[Any]:
    """The enabled crons matching ``crons_filter`` whose latest run due did not fire:
    rows ``(id, agent_id, name, schedule, timezone, created_at)``.

    ``due``: {(schedule, time zone): its latest run due}, one entry per schedule, not
    per cron. One statement: the crons joined with their schedule's run (created by
    then), anti joined with the fires inside the runs' grace windows (materialised
    once, hashed by cron). A healthy fleet returns nothing.
    """
    if not due:
        return []
    crons, events = src.table("crons"), src.table("events")
    windows = merged_windows((run, run + grace) for run in set(due.values()))
    fires = (
        select(_cron_key(src).label("cron_id"), src.time_value(events.c.created_at).label("at"))
        .where(events.c.event_type == FIRED, or_(*(_within(src, events.c.created_at, w) for w in windows)))
        .cte("fires")
        .prefix_with("MATERIALIZED")
    )
    runs = _due_table(src, due, grace)
    zone = func.coalesce(crons.c.timezone, literal("UTC"))
    stmt = (
        select(crons.c.id, crons.c.agent_id, crons.c.name, crons.c.schedule, zone.label("timezone"),
               _plain_time(src, crons.c.created_at).label("created_at"))
        .select_from(crons.join(runs, and_(crons.c.schedule == runs.c.schedule, zone == runs.c.zone)))
        .where(
            crons.c.enabled.is_(True),
            crons_filter,
            src.time_value(crons.c.created_at) <= runs.c.start,
            ~exists().where(fires.c.cron_id == crons.c.id, fires.c.at >= runs.c.start, fires.c.at <= runs.c.until),
        )
        .order_by(crons.c.id)
    )
    return list(conn.execute(stmt).all())


def _due_table(src: AuditSource, due: Mapping[tuple[str, str], datetime], grace: timedelta) -> Any:
    """(schedule, zone, start, until) rows, a run and its grace, from one bound JSON
    parameter; the times comparable with ``src.time_value`` of a time column."""
    if src.dialect == "postgresql":
        payload = json.dumps([{"s": s, "z": z, "a": run.isoformat(), "u": (run + grace).isoformat()}
                              for (s, z), run in due.items()])
        return (
            text("SELECT r.s AS schedule, r.z AS zone, r.a AS start, r.u AS until FROM "
                 "jsonb_to_recordset(CAST(:due AS jsonb)) AS r(s text, z text, a timestamptz, u timestamptz)")
            .bindparams(due=payload)
            .columns(schedule=Text, zone=Text, start=DateTime(timezone=True), until=DateTime(timezone=True))
            .subquery("due")
        )
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    payload = json.dumps([{"s": s, "z": z, "a": as_utc(run).strftime(fmt), "u": as_utc(run + grace).strftime(fmt)}
                          for (s, z), run in due.items()])
    return (
        text("SELECT json_extract(value, '$.s') AS schedule, json_extract(value, '$.z') AS zone, "
             "julianday(json_extract(value, '$.a')) AS start, julianday(json_extract(value, '$.u')) AS until "
             "FROM json_each(:due)")
        .bindparams(due=payload)
        .columns(schedule=Text, zone=Text, start=Float, until=Float)
        .subquery("due")
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
    at = _plain_time(src, src.time_value(events.c.created_at)).label("at")
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
        select(key.label("cron_id"), _plain_time(src, func.max(src.time_value(events.c.created_at))).label("last"))
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
            events.c.id, key, _plain_time(src, at).label("at"),
            func.row_number().over(partition_by=key, order_by=(at.desc(), events.c.id.desc())).label("rank"),
        )
        .where(*_fires_where(src, [(since, until)], cron_ids))
        .subquery()
    )
    found = {}
    for row_id, cron_id, value, _rank in conn.execute(select(ranked).where(ranked.c.rank == 1)).all():
        moment = aware_time(src, value)
        if moment is not None:
            found[cron_id] = (moment, str(row_id))
    return found
