"""Cron health over a period: each cron's expected runs, how many fired, how many were missed.

Expected runs come from the cron's own schedule and time zone (a cron whose
schedule cannot be read is listed with no expected runs), from the cron's
``created_at`` on, and are matched with the ``cron.fired`` events inside their
grace windows by the same code as the ``cron_missed`` rule
(:mod:`audit_watch.store.cron_runs`), so DST and the grace behave the same. A run
counts as fired when a ``cron.fired`` event for it arrives within ``grace`` after
the expected time; a run whose grace reaches past the end of the period and that
has not fired by then is *pending*, neither fired nor missed. The fires are read
once for all crons, streamed one cron at a time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from audit_watch.core.cron import CronError
from audit_watch.reports.queries import Span, grouped, latest, lookup_names
from audit_watch.reports.scope import ResolvedScope
from audit_watch.store.cron_runs import (
    FIRED,
    RunCalendar,
    fire_times,
    fired_within,
    merged_windows,
    skip_unreadable,
)
from audit_watch.store.source import AuditSource

DEFAULT_GRACE = timedelta(minutes=15)
MAX_RUNS = 50_000          # a cron every minute for a month is 44,640 runs
LAST_FIRED_LOOKBACK = timedelta(days=35)


def cron_health(conn: Connection, src: AuditSource, scope: ResolvedScope, span: Span,
                grace: timedelta = DEFAULT_GRACE) -> list[dict[str, Any]]:
    """One entry per enabled cron in scope, most missed first, then by name."""
    crons = src.table("crons")
    rows = conn.execute(
        select(crons.c.id, crons.c.agent_id, crons.c.name, crons.c.schedule, crons.c.timezone, crons.c.created_at)
        .where(crons.c.enabled.is_(True), scope.crons(src))
        .order_by(crons.c.name, crons.c.id)
    ).all()
    if not rows:
        return []
    start, end = span
    calendar = RunCalendar(end)
    runs: dict[str, list[datetime]] = {}
    for cron in rows:
        since = max(start + timedelta(seconds=1), src.read_time(cron.created_at) or start)
        try:
            runs[cron.id] = calendar.runs(cron.schedule, cron.timezone or "UTC").since(since, MAX_RUNS)
        except CronError as exc:      # not checked: listed with no expected runs
            skip_unreadable(cron.id, cron.schedule, cron.timezone, exc)
            runs[cron.id] = []
    expected = {cron_id: len(times) for cron_id, times in runs.items()}
    outcome = _run_outcomes(conn, src, runs, end, grace)
    cron_ids = [c.id for c in rows]
    events = src.table("events")
    cron_key = src.json_text(events.c["metadata"], "cron_id")
    fired_rows = grouped(conn, src, "events", [span], keys={"cron_id": cron_key},
                         where=[events.c.event_type == FIRED, cron_key.in_(cron_ids)])
    fired = {r["cron_id"]: r["count"] for r in fired_rows}
    last_rows = grouped(conn, src, "events", [(end - LAST_FIRED_LOOKBACK, end)], keys={"cron_id": cron_key},
                        where=[events.c.event_type == FIRED, cron_key.in_(cron_ids)],
                        measures={"last": latest(src, events.c.created_at)})
    last_fired = {r["cron_id"]: r["last"] for r in last_rows}
    agents = lookup_names(conn, src, "agents", [c.agent_id for c in rows])
    out = []
    for cron in rows:
        missed, pending, first_missed, last_missed = outcome.get(cron.id, (0, 0, None, None))
        out.append({
            "id": cron.id,
            "name": cron.name,
            "agent_id": cron.agent_id,
            "agent": agents.get(str(cron.agent_id), str(cron.agent_id)),
            "schedule": cron.schedule,
            "timezone": cron.timezone or "UTC",
            "expected": expected[cron.id],
            "fired": fired.get(cron.id, 0),
            "missed": missed,
            "pending": pending,
            "first_missed": first_missed,
            "last_missed": last_missed,
            "last_fired": last_fired.get(cron.id),
            "status": "missed" if missed else ("idle" if expected[cron.id] == 0 else "ok"),
        })
    out.sort(key=lambda c: (-c["missed"], c["name"], c["id"]))
    return out


Outcome = tuple[int, int, datetime | None, datetime | None]


def _run_outcomes(conn: Connection, src: AuditSource, runs: dict[str, list[datetime]], end: datetime,
                  grace: timedelta) -> dict[str, Outcome]:
    """{cron id: (missed, pending, first missed run, last missed run)}: the fires inside
    the runs' grace windows, matched to each run with a bisect."""
    outcome = {cron_id: _outcome(times, [], end, grace) for cron_id, times in runs.items() if times}
    windows = merged_windows((t, t + grace) for t in {t for times in runs.values() for t in times})
    for cron_id, fires in fire_times(conn, src, windows, [c for c, times in runs.items() if times], stream=True):
        outcome[cron_id] = _outcome(runs[cron_id], fires, end, grace)
    return outcome


def _outcome(runs: list[datetime], fires: list[datetime], end: datetime, grace: timedelta) -> Outcome:
    missed: list[datetime] = []
    pending = 0
    for run in runs:
        if fires and fired_within(fires, run, run + grace) is not None:
            continue
        if run + grace <= end:
            missed.append(run)
        else:
            pending += 1
    return len(missed), pending, min(missed, default=None), max(missed, default=None)
