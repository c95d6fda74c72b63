"""Crons' expected runs and whether each fired: shared by the ``cron_missed``
rule and the reports' cron health.

Expected runs come from each cron's own schedule in its own time zone, read by
:mod:`audit_watch.core.cron` like every schedule (a run in the hour repeated when
clocks go back counts once, a run in the hour skipped when they go forward happens
right after the gap, as cron does it). The runs go to the database as one bound
JSON parameter and are joined with the ``cron.fired`` events there, one row per
run with its count of fires.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, String, and_, func, select, text
from sqlalchemy.sql.elements import ColumnElement

from audit_watch.core.cron import CronError, CronSchedule
from audit_watch.core.timestamps import as_utc
from audit_watch.store.source import AuditSource

log = logging.getLogger(__name__)

FIRED = "cron.fired"

# (cron id, schedule, time zone) already warned about: see runs_or_skip.
_skipped: set[tuple[str, str, str]] = set()
_skipped_lock = threading.Lock()


def expected_runs(schedule: str, tz_name: str, until: datetime, since: datetime, limit: int) -> list[datetime]:
    """Expected run times (UTC, newest first) with ``since <= t <= until``.

    Raises :class:`~audit_watch.core.cron.CronError` for a schedule or time zone the
    cron library cannot read (the crons table is data: callers skip such a cron).
    """
    return CronSchedule.read(schedule, tz_name).runs_between(as_utc(since), as_utc(until), limit)


def runs_or_skip(cron_id: str, schedule: str, tz_name: str | None, until: datetime, since: datetime,
                 limit: int) -> list[datetime]:
    """:func:`expected_runs`, or none for a cron whose schedule or time zone cannot be
    read: that cron is skipped (never alerted on, counted as idle), the others are not.

    A warning says so the first time this process meets each (cron, schedule, time
    zone); at later evaluations it is a DEBUG line, not one line a minute."""
    try:
        return expected_runs(schedule, tz_name or "UTC", until, since, limit)
    except CronError as exc:
        key = (cron_id, schedule, tz_name or "UTC")
        with _skipped_lock:
            first = key not in _skipped
            _skipped.add(key)
        log.log(logging.WARNING if first else logging.DEBUG,
                "cron %s (schedule %r, time zone %r) is not checked: %s", cron_id, schedule, tz_name, exc)
        return []


def runs_table(src: AuditSource, runs: list[tuple[str, datetime, datetime]]) -> Any:
    """(cron id, expected at, deadline) rows as a derived table from one JSON parameter."""
    if src.dialect == "postgresql":
        payload = json.dumps([{"c": c, "e": e.isoformat(), "d": d.isoformat()} for c, e, d in runs])
        return (
            text(
                "SELECT r.c AS cron_id, r.e AS expected_at, r.d AS deadline "
                "FROM jsonb_to_recordset(CAST(:runs AS jsonb)) AS r(c text, e timestamptz, d timestamptz)"
            )
            .bindparams(runs=payload)
            .columns(cron_id=String, expected_at=DateTime(timezone=True), deadline=DateTime(timezone=True))
            .subquery("expected")
        )
    fmt = "%Y-%m-%d %H:%M:%S.000"
    payload = json.dumps([{"c": c, "e": as_utc(e).strftime(fmt), "d": as_utc(d).strftime(fmt)} for c, e, d in runs])
    return (
        text(
            "SELECT json_extract(value, '$.c') AS cron_id, json_extract(value, '$.e') AS expected_at, "
            "json_extract(value, '$.d') AS deadline FROM json_each(:runs)"
        )
        .bindparams(runs=payload)
        .columns(cron_id=String, expected_at=String, deadline=String)
        .subquery("expected")
    )


def fired_per_run(src: AuditSource, runs: list[tuple[str, datetime, datetime]]) -> Any:
    """A subquery: one row per run (cron_id, expected_at, deadline, fired) where
    ``fired`` counts the cron's ``cron.fired`` events in [expected_at, deadline]."""
    expected = runs_table(src, runs)
    events = src.table("events")
    fired_time = src.time_value(events.c.created_at)
    join_on = and_(
        events.c.event_type == FIRED,
        src.json_text(events.c["metadata"], "cron_id") == expected.c.cron_id,
        fired_time >= src.time_value(expected.c.expected_at),
        fired_time <= src.time_value(expected.c.deadline),
        *_coarse_range(src, events.c.created_at, expected),
    )
    return (
        select(expected.c.cron_id, expected.c.expected_at, expected.c.deadline,
               func.count(events.c.id).label("fired"))
        .select_from(expected.outerjoin(events, join_on))
        .group_by(expected.c.cron_id, expected.c.expected_at, expected.c.deadline)
        .subquery("per_run")
    )


def _coarse_range(src: AuditSource, column: ColumnElement[Any], expected: Any) -> list[ColumnElement[bool]]:
    """On SQLite, a date range on the raw column so the (event_type, created_at) index helps."""
    if src.dialect != "sqlite":
        return []
    return [
        column >= func.date(expected.c.expected_at, "-1 day"),
        column < func.date(expected.c.deadline, "+2 day"),
    ]
