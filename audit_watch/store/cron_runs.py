"""Crons' expected runs and whether each fired: shared by the ``cron_missed``
rule and the reports' cron health.

Expected runs come from each cron's own schedule in its own time zone (cronsim:
a run in the hour repeated when clocks go back counts once, a run in the hour
skipped when they go forward happens right after the gap, as cron does it). The
runs go to the database as one bound JSON parameter and are joined with the
``cron.fired`` events there, one row per run with its count of fires.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim
from sqlalchemy import DateTime, String, and_, func, select, text
from sqlalchemy.sql.elements import ColumnElement

from audit_watch.core.timestamps import as_utc
from audit_watch.store.source import AuditSource

FIRED = "cron.fired"


def expected_runs(schedule: str, tz_name: str, until: datetime, since: datetime, limit: int) -> list[datetime]:
    """Expected run times (UTC, newest first) with ``since <= t <= until``."""
    tz = ZoneInfo(tz_name)
    start = (as_utc(until).replace(microsecond=0) + timedelta(seconds=1)).astimezone(tz)
    runs: list[datetime] = []
    for moment in CronSim(schedule, start, reverse=True):
        moment = moment.astimezone(UTC)
        if moment < since or len(runs) >= limit:
            break
        runs.append(moment)
    return runs


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
