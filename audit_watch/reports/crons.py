"""Cron health over a period: each cron's expected runs, how many fired, how many were missed.

Expected runs come from the cron's own schedule and time zone (the same
``runs_or_skip`` the ``cron_missed`` rule uses, so DST behaves the same), from
the cron's ``created_at`` on. A run counts as fired when a ``cron.fired`` event
for it arrives within ``grace`` after the expected time; a run whose grace
reaches past the end of the period and that has not fired by then is *pending*,
neither fired nor missed. The matching is a join aggregated in SQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.engine import Connection

from audit_watch.reports.queries import Span, grouped, latest, lookup_names
from audit_watch.reports.scope import ResolvedScope
from audit_watch.store.cron_runs import FIRED, fired_per_run, runs_or_skip
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
    runs: list[tuple[str, datetime]] = []
    expected: dict[str, int] = {}
    for cron in rows:
        since = max(start + timedelta(seconds=1), src.read_time(cron.created_at) or start)
        times = runs_or_skip(cron.id, cron.schedule, cron.timezone, end, since, MAX_RUNS)
        expected[cron.id] = len(times)
        runs.extend((cron.id, t) for t in times)
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


def _run_outcomes(conn: Connection, src: AuditSource, runs: list[tuple[str, datetime]], end: datetime,
                  grace: timedelta) -> dict[str, tuple[int, int, datetime | None, datetime | None]]:
    """{cron id: (missed, pending, first missed run, last missed run)}, counted in SQL."""
    if not runs:
        return {}
    per_run = fired_per_run(src, [(cid, t, t + grace) for cid, t in runs])
    unfired = per_run.c.fired == 0
    deadline_passed = src.time_value(per_run.c.deadline) <= src.time_param(end)
    is_missed = and_(unfired, deadline_passed)
    is_pending = and_(unfired, ~deadline_passed)
    stmt = (
        select(
            per_run.c.cron_id,
            func.sum(case((is_missed, 1), else_=0)).label("missed"),
            func.sum(case((is_pending, 1), else_=0)).label("pending"),
            func.min(case((is_missed, per_run.c.expected_at), else_=None)).label("first_missed"),
            func.max(case((is_missed, per_run.c.expected_at), else_=None)).label("last_missed"),
        )
        .group_by(per_run.c.cron_id)
    )
    return {
        row.cron_id: (int(row.missed or 0), int(row.pending or 0),
                      src.read_time(row.first_missed), src.read_time(row.last_missed))
        for row in conn.execute(stmt)
    }
