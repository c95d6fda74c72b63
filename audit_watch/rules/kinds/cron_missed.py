"""``cron_missed``: an enabled cron's latest expected run has no ``cron.fired``.

The value is the number of consecutive missed runs, counted back from the latest
run due (at least ``grace`` ago) to the newest run that fired, at most
``max_runs``. Runs come from :mod:`audit_watch.store.cron_runs` (each schedule
walked once per evaluation, however many crons share it).

The streaks are found in slices of runs, newest first, for the crons whose
streak is still open: the latest run of every cron (one anti join in the database
names the crons whose run did not fire: a healthy fleet returns nothing), then the
8 runs before it, then the 64 before those, ... up to ``max_runs`` (one aggregate
statement per slice: each open cron's newest fire inside the slice's windows).
A fleet that stopped a few runs ago takes two statements; each reads the fires
inside the slice's grace windows, never crons × runs.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cronsim import CronSimError
from sqlalchemy import Select, select

from audit_watch.rules.alert import Finding
from audit_watch.rules.kinds.base import EvalContext, Found, RuleKind
from audit_watch.rules.model import CronMissedRule
from audit_watch.store.cron_runs import (
    RunCalendar,
    ScheduleRuns,
    at_or_after,
    aware_time,
    fire_times,
    fired_within,
    last_fires,
    merged_windows,
    newest_fires,
    unfired,
)
from audit_watch.store.source import AuditSource
from audit_watch.store.where import where_clause

log = logging.getLogger(__name__)

SLICE_GROWTH = 8   # each slice of runs looks this many times further back than the one before
MAX_LISTED_RUNS = 10
_EARLIEST = datetime.min.replace(tzinfo=UTC)


@dataclass(slots=True)
class CronRow:
    id: str
    agent_id: str
    name: str
    schedule: str
    timezone: str
    created_at: datetime


@dataclass
class Streak:
    """A cron's consecutive missed runs, newest first."""

    cron: CronRow
    runs: list[datetime]            # the missed runs, newest first
    last_fired: datetime | None     # the fire of the newest run that fired (None: none found)
    at_least: bool                  # stopped counting at max_runs

    @property
    def silent_since(self) -> datetime:
        return self.runs[-1]


class CronMissed(RuleKind):
    name = "cron_missed"

    def find(self, rule: CronMissedRule, ctx: EvalContext) -> Found:
        due_by = ctx.now - rule.grace
        streaks = self.streaks(ctx, self._crons(rule, ctx), due_by, rule.grace, rule.max_runs)
        # The longest silence first: the streak whose first missed run is oldest.
        streaks.sort(key=lambda s: (s.silent_since, s.cron.id))
        kept = streaks[: rule.max_groups]
        newest = self._newest_fires(ctx, kept)
        findings = [self._finding(rule, streak, newest.get(streak.cron.id)) for streak in kept]
        return Found(findings, len(streaks))

    def _newest_fires(self, ctx: EvalContext, streaks: list[Streak]) -> dict[str, tuple[datetime, str]]:
        """Each cron's newest fire, which may be later than the run that last fired on
        time (a late fire), looked for since that run (or the first missed run)."""
        if not streaks:
            return {}
        since = min(s.last_fired or s.silent_since for s in streaks)
        return newest_fires(ctx.conn, ctx.src, since, ctx.now, [s.cron.id for s in streaks])

    def _finding(self, rule: CronMissedRule, streak: Streak, newest: tuple[datetime, str] | None) -> Finding:
        cron = streak.cron
        last_fired = newest[0] if newest else streak.last_fired
        return Finding(
            group={"cron_id": cron.id},
            value=len(streak.runs),
            threshold=">= 1",
            details={
                "cron_name": cron.name,
                "agent_id": cron.agent_id,
                "schedule": cron.schedule,
                "timezone": cron.timezone,
                "expected_at": streak.runs[0].isoformat(),
                "missed_runs": [r.isoformat() for r in streak.runs[:MAX_LISTED_RUNS]],
                "at_least": streak.at_least,
                "last_fired": last_fired.isoformat() if last_fired else None,
                "grace_seconds": int(rule.grace.total_seconds()),
            },
            row_ids=[newest[1]] if newest else [],
            row_source="events",
        )

    def _crons(self, rule: CronMissedRule, ctx: EvalContext) -> list[CronRow]:
        stmt = ctx.prepared(rule, (self.name, "crons"), lambda _moments: self._crons_statement(rule, ctx.src))
        src = ctx.src
        crons = []
        for row in ctx.execute(stmt).all():
            cron_id, agent_id, name, schedule, zone, created = tuple(row)
            crons.append(CronRow(cron_id, agent_id, name, schedule, zone or "UTC", aware_time(src, created) or _EARLIEST))
        return crons

    def _crons_statement(self, rule: CronMissedRule, src: AuditSource) -> Select[Any]:
        crons = src.table("crons")
        return select(
            crons.c.id, crons.c.agent_id, crons.c.name, crons.c.schedule, crons.c.timezone, crons.c.created_at
        ).where(crons.c.enabled.is_(True), where_clause(src, "crons", rule.where)).order_by(crons.c.id)

    # --- the streaks -------------------------------------------------------------------

    def streaks(self, ctx: EvalContext, crons: list[CronRow], due_by: datetime, grace: timedelta,
                max_runs: int) -> list[Streak]:
        """The crons whose latest run due by ``due_by`` did not fire, with their streaks."""
        calendar = RunCalendar(due_by)
        open_: dict[str, tuple[CronRow, ScheduleRuns]] = {}
        for cron in crons:
            try:
                open_[cron.id] = (cron, calendar.runs(cron.schedule, cron.timezone))
            except (CronSimError, ValueError, KeyError) as exc:
                log.warning("cron %s (%s) has an unusable schedule %r / time zone %r: %s",
                            cron.id, cron.name, cron.schedule, cron.timezone, exc)
        found: list[Streak] = []
        offset, size = 0, 1
        while open_ and offset < max_runs:
            take = min(size, max_runs - offset)
            slices: dict[str, list[datetime]] = {}
            # Per schedule: its runs up to this slice's end, and the slice (one list
            # shared by every cron of the schedule created before its runs).
            shared: dict[int, tuple[list[datetime], list[datetime]]] = {}
            for cron_id, (cron, runs) in list(open_.items()):
                first, part = shared.get(id(runs)) or shared.setdefault(id(runs), _slice(runs, offset, take))
                if first and first[-1] < cron.created_at:
                    first = _since_created(first, cron)
                    part = first[offset:]
                if not part:  # no run before this slice since the cron was created
                    del open_[cron_id]
                    if offset:
                        found.append(Streak(cron, first, None, at_least=False))
                    continue
                slices[cron_id] = part
            newest_fired = self._newest_fired(ctx, slices, grace, exact=offset == 0)
            missed: dict[tuple[int, int], list[datetime]] = {}   # per schedule and count: the missed runs
            for cron_id, (index, fired_at) in newest_fired.items():
                cron, runs = open_.pop(cron_id)
                if offset + index:
                    key = (id(runs), offset + index)
                    due = missed.get(key) or missed.setdefault(key, runs.first(offset + index))
                    found.append(Streak(cron, _since_created(due, cron), fired_at, False))
            offset += take
            size *= SLICE_GROWTH
        for cron, runs in open_.values():  # no fire within max_runs
            due = _since_created(runs.first(max_runs), cron)
            found.append(Streak(cron, due, None, at_least=len(due) == max_runs))
        return found

    def _newest_fired(self, ctx: EvalContext, slices: dict[str, list[datetime]], grace: timedelta,
                      exact: bool) -> dict[str, tuple[int, datetime]]:
        """{cron id: (index of its newest run in its slice that fired, the fire)}.

        ``exact`` (the first slice, one run per cron): an anti join in the database
        names the crons whose run did not fire; the others are done (their fire is not
        needed). Otherwise each open cron's newest fire inside the slice's windows
        (one row per cron): when it lies within grace after one of the cron's runs,
        that run is the newest that fired; when it does not (a late or unscheduled
        fire inside another cron's window), that cron's fires are read and matched one
        by one.
        """
        if not slices:
            return {}
        if exact:
            missed = unfired(ctx.conn, ctx.src, {cron_id: part[0] for cron_id, part in slices.items()}, grace)
            return {cron_id: (0, part[0]) for cron_id, part in slices.items() if cron_id not in missed}
        parts = {id(part): part for part in slices.values()}   # crons of one schedule share one
        windows = merged_windows((run, run + grace) for run in {run for part in parts.values() for run in part})
        # Per slice, its runs as ascending keys: the newest run at or before t is a bisect.
        keys = {key: [-run.timestamp() for run in part] for key, part in parts.items()}
        newest: dict[str, tuple[int, datetime]] = {}
        unclear = []
        for cron_id, last in last_fires(ctx.conn, ctx.src, windows, list(slices)).items():
            part = slices[cron_id]
            index = bisect.bisect_left(keys[id(part)], -last.timestamp())
            if index < len(part) and last <= part[index] + grace:
                newest[cron_id] = (index, last)
            else:
                unclear.append(cron_id)
        newest.update(self._match(ctx, slices, windows, grace, unclear))
        return newest

    def _match(self, ctx: EvalContext, slices: dict[str, list[datetime]], windows: list[tuple[datetime, datetime]],
               grace: timedelta, cron_ids: list[str]) -> dict[str, tuple[int, datetime]]:
        matched: dict[str, tuple[int, datetime]] = {}
        for cron_id, times in fire_times(ctx.conn, ctx.src, windows, cron_ids):
            for index, run in enumerate(slices.get(cron_id, ())):
                fired_at = fired_within(times, run, run + grace)
                if fired_at is not None:
                    matched[cron_id] = (index, fired_at)
                    break
        return matched

    def sample(self, rule: CronMissedRule, ctx: EvalContext, findings: list[Finding]) -> None:
        """The evidence, the cron's newest ``cron.fired`` event, came with the finding."""

    def list_range(self, rule: CronMissedRule, now: datetime) -> tuple[datetime, datetime]:
        return now - timedelta(days=7), now


def _slice(runs: ScheduleRuns, offset: int, take: int) -> tuple[list[datetime], list[datetime]]:
    first = runs.first(offset + take)
    return first, first[offset:]


def _since_created(runs: list[datetime], cron: CronRow) -> list[datetime]:
    """The runs (newest first) at or after the cron's creation: none are expected before."""
    if not runs or runs[-1] >= cron.created_at:
        return runs
    return runs[: at_or_after(runs, cron.created_at)]
