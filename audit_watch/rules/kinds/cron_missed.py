"""``cron_missed``: an enabled cron's latest expected run has no ``cron.fired``.

The value is the number of consecutive missed runs, counted back from the latest
run due (at least ``grace`` ago) to the newest run that fired, at most
``max_runs``. Runs come from :mod:`audit_watch.store.cron_runs`, each schedule
walked once per evaluation however many crons share it.

The crons whose latest run did not fire come from one anti join in the database
(a healthy fleet returns nothing). Their streaks are then counted back in slices
of runs that double, for the crons whose streak is still open: the run before the
latest, the 2 before that, then 4, 8, ... up to ``max_runs`` (one aggregate
statement per slice: each open cron's newest fire inside the slice's grace
windows). A slice without fires costs an empty index range scan; the slice where
a streak ends reads at most twice the runs needed. A fleet that stopped three runs
ago takes three statements; each reads the fires inside grace windows, never
crons × runs.

The longest silence ranks first: the cron whose last fire (of a run that fired
in time) is oldest; for a cron without one, its oldest missed run counts.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, literal, select

from audit_watch.core.cron import CronError
from audit_watch.rules.alert import Finding
from audit_watch.rules.kinds.base import EvalContext, Found, RuleKind
from audit_watch.rules.model import CronMissedRule
from audit_watch.store.cron_runs import (
    FIRED,
    RunCalendar,
    ScheduleRuns,
    at_or_after,
    aware_time,
    fire_times,
    fired_within,
    last_fires,
    merged_windows,
    missed_latest,
    newest_fires,
    skip_unreadable,
)
from audit_watch.store.source import AuditSource
from audit_watch.store.where import where_clause

log = logging.getLogger(__name__)

SLICE_GROWTH = 2   # each slice of runs is this many times longer than the one before
MAX_LISTED_RUNS = 10
_EARLIEST = datetime.min.replace(tzinfo=UTC)

Schedule = tuple[str, str]   # (expression, time zone)


@dataclass(slots=True)
class CronRow:
    id: str
    agent_id: str
    name: str
    schedule: str
    timezone: str
    created_at: datetime


@dataclass(slots=True)
class Streak:
    """How a cron's consecutive misses end: after ``missed`` runs, at the run that
    fired at ``fired_at`` (None: no fire within ``max_runs``, or none since created)."""

    cron: CronRow
    missed: int
    fired_at: datetime | None


class CronMissed(RuleKind):
    name = "cron_missed"

    def fires_on_silence(self, rule: CronMissedRule) -> bool:
        return True                             # no cron.fired events arrive either

    def link_filters(self, rule: CronMissedRule, finding: Finding) -> list[tuple[str, Any]]:
        """The cron's ``cron.fired`` events (the rule's ``where`` filters crons, not events)."""
        return [("event_type", FIRED), ("metadata.cron_id", finding.group["cron_id"])]

    def find(self, rule: CronMissedRule, ctx: EvalContext) -> Found:
        calendar = RunCalendar(ctx.now - rule.grace)
        schedules = self._schedules(rule, ctx, calendar)
        due = {key: runs.first(1)[0] for key, runs in schedules.items()}
        crons_filter = where_clause(ctx.src, "crons", rule.where)
        missed = [self._cron(ctx.src, row) for row in missed_latest(ctx.conn, ctx.src, crons_filter, due, rule.grace)]
        streaks = self.streaks(ctx, missed, schedules, rule.grace, rule.max_runs)
        # The longest silence first: the oldest last fire (without one: the oldest missed run).
        streaks.sort(key=lambda s: (s.fired_at or schedules[(s.cron.schedule, s.cron.timezone)].first(s.missed)[-1],
                                    s.cron.id))
        kept = streaks[: rule.max_groups]
        newest = self._newest_fires(ctx, kept, schedules)
        findings = [self._finding(rule, s, schedules[(s.cron.schedule, s.cron.timezone)], newest.get(s.cron.id))
                    for s in kept]
        return Found(findings, len(streaks))

    # --- the crons and their schedules -----------------------------------------------------

    def _schedules(self, rule: CronMissedRule, ctx: EvalContext, calendar: RunCalendar) -> dict[Schedule, ScheduleRuns]:
        """The runs of each (schedule, time zone) of the crons checked; a schedule
        without runs, or one the cron library cannot read, is left out (its crons are
        not checked: :func:`~audit_watch.store.cron_runs.skip_unreadable` names them)."""
        stmt = ctx.prepared(rule, (self.name, "schedules"), lambda _moments: self._schedules_statement(rule, ctx.src))
        found = {}
        unreadable: dict[Schedule, CronError] = {}
        for schedule, zone in (tuple(row) for row in ctx.execute(stmt).all()):
            try:
                runs = calendar.runs(schedule, zone)
                if runs.first(1):
                    found[(schedule, zone)] = runs
            except CronError as exc:
                unreadable[(schedule, zone)] = exc
        if unreadable:
            crons = ctx.src.table("crons")
            rows = ctx.conn.execute(
                select(crons.c.id, crons.c.schedule, func.coalesce(crons.c.timezone, literal("UTC")))
                .where(crons.c.enabled.is_(True), where_clause(ctx.src, "crons", rule.where),
                       crons.c.schedule.in_(sorted({schedule for schedule, _ in unreadable})))
                .order_by(crons.c.id)
            ).all()
            for cron_id, schedule, zone in (tuple(row) for row in rows):
                if (schedule, zone) in unreadable:
                    skip_unreadable(cron_id, schedule, zone, unreadable[(schedule, zone)])
        return found

    def _schedules_statement(self, rule: CronMissedRule, src: AuditSource) -> Select[Any]:
        crons = src.table("crons")
        zone = func.coalesce(crons.c.timezone, literal("UTC"))
        return (
            select(crons.c.schedule, zone)
            .where(crons.c.enabled.is_(True), where_clause(src, "crons", rule.where))
            .group_by(crons.c.schedule, zone)
        )

    def _cron(self, src: AuditSource, row: Any) -> CronRow:
        cron_id, agent_id, name, schedule, zone, created = tuple(row)
        return CronRow(cron_id, agent_id, name, schedule, zone, aware_time(src, created) or _EARLIEST)

    # --- the streaks ---------------------------------------------------------------------

    def streaks(self, ctx: EvalContext, missed: list[CronRow], schedules: dict[Schedule, ScheduleRuns],
                grace: timedelta, max_runs: int) -> list[Streak]:
        """The streaks of the crons whose latest run due did not fire, counted back in
        slices of 1, 2, 4, ... runs while they stay open."""
        groups: dict[Schedule, list[CronRow]] = {}
        for cron in missed:
            groups.setdefault((cron.schedule, cron.timezone), []).append(cron)
        found: list[Streak] = []
        offset, size = 1, 1
        while groups and offset < max_runs:
            take = min(size, max_runs - offset)
            slices: dict[str, list[datetime]] = {}
            for key, crons in groups.items():
                first = schedules[key].first(offset + take)
                part = first[offset:]
                for cron in crons:
                    if first[-1] < cron.created_at:   # created within these runs
                        own = _since_created(first, cron)
                        if len(own) <= offset:        # no run before this slice since then
                            found.append(Streak(cron, len(own), None))
                            continue
                        slices[cron.id] = own[offset:]
                    elif part:
                        slices[cron.id] = part
                    else:                             # the schedule has no earlier runs
                        found.append(Streak(cron, len(first), None))
            ended = {cron_id: (offset + index, fired_at)
                     for cron_id, (index, fired_at) in self._newest_fired(ctx, slices, grace).items()}
            for cron_id in ended:
                del slices[cron_id]
            found += [Streak(cron, *ended[cron.id]) for crons in groups.values() for cron in crons if cron.id in ended]
            groups = {key: left for key, crons in groups.items() if (left := [c for c in crons if c.id in slices])}
            offset += take
            size *= SLICE_GROWTH
        for key, crons in groups.items():   # no fire within max_runs (or the schedule has no more runs)
            first = schedules[key].first(max_runs)
            found += [Streak(cron, len(_since_created(first, cron)), None) for cron in crons]
        return found

    def _newest_fired(self, ctx: EvalContext, slices: dict[str, list[datetime]],
                      grace: timedelta) -> dict[str, tuple[int, datetime]]:
        """{cron id: (index of its newest run in its slice that fired, the fire)}.

        Each open cron's newest fire inside the slice's windows (one row per cron):
        when it lies within grace after one of the cron's runs, that run is the newest
        that fired; when it does not (a late or unscheduled fire inside another cron's
        window), that cron's fires are read and matched one by one.
        """
        if not slices:
            return {}
        parts = {id(part): part for part in slices.values()}   # crons of one schedule share one
        windows = merged_windows((run, run + grace) for run in {run for part in parts.values() for run in part})
        # Per slice, its runs and their deadlines as ascending keys: the newest run at or
        # before t is a bisect, and t fired it when t is at most its deadline.
        keys = {key: ([-run.timestamp() for run in part], [(run + grace).timestamp() for run in part])
                for key, part in parts.items()}
        newest: dict[str, tuple[int, datetime]] = {}
        unclear = []
        for cron_id, last in last_fires(ctx.conn, ctx.src, windows, list(slices)).items():
            starts, deadlines = keys[id(slices[cron_id])]
            moment = last.timestamp()
            index = bisect.bisect_left(starts, -moment)
            if index < len(starts) and moment <= deadlines[index]:
                newest[cron_id] = (index, last)
            else:
                unclear.append(cron_id)
        if unclear:
            for cron_id, times in fire_times(ctx.conn, ctx.src, windows, unclear):
                for index, run in enumerate(slices[cron_id]):
                    fired_at = fired_within(times, run, run + grace)
                    if fired_at is not None:
                        newest[cron_id] = (index, fired_at)
                        break
        return newest

    # --- what the kept crons show ----------------------------------------------------------

    def _newest_fires(self, ctx: EvalContext, streaks: list[Streak],
                      schedules: dict[Schedule, ScheduleRuns]) -> dict[str, tuple[datetime, str]]:
        """Each cron's newest fire, which may be later than the run that last fired on
        time (a late fire), looked for since that fire (or the oldest missed run)."""
        if not streaks:
            return {}
        since = min(s.fired_at or schedules[(s.cron.schedule, s.cron.timezone)].first(s.missed)[-1] for s in streaks)
        return newest_fires(ctx.conn, ctx.src, since, ctx.now, [s.cron.id for s in streaks])

    def _finding(self, rule: CronMissedRule, streak: Streak, runs: ScheduleRuns,
                 newest: tuple[datetime, str] | None) -> Finding:
        cron = streak.cron
        missed = runs.first(streak.missed)
        last_fired = newest[0] if newest else streak.fired_at
        return Finding(
            group={"cron_id": cron.id},
            value=streak.missed,
            threshold=">= 1",
            details={
                "cron_name": cron.name,
                "agent_id": cron.agent_id,
                "schedule": cron.schedule,
                "timezone": cron.timezone,
                "expected_at": missed[0].isoformat(),
                "missed_runs": [r.isoformat() for r in missed[:MAX_LISTED_RUNS]],
                "at_least": streak.fired_at is None and streak.missed == rule.max_runs,
                "last_fired": last_fired.isoformat() if last_fired else None,
                "grace_seconds": int(rule.grace.total_seconds()),
            },
            row_ids=[newest[1]] if newest else [],
            row_source="events",
        )

    def sample(self, rule: CronMissedRule, ctx: EvalContext, findings: list[Finding]) -> None:
        """The evidence, the cron's newest ``cron.fired`` event, came with the finding."""

    def list_range(self, rule: CronMissedRule, now: datetime) -> tuple[datetime, datetime]:
        return now - timedelta(days=7), now


def _since_created(runs: list[datetime], cron: CronRow) -> list[datetime]:
    """The runs (newest first) at or after the cron's creation: none are expected before."""
    if not runs or runs[-1] >= cron.created_at:
        return runs
    return runs[: at_or_after(runs, cron.created_at)]
