"""When things run: the ticks of rules, reports and built-in jobs.

Every replica must compute the same ticks, so an ``every`` interval counts from a
fixed anchor, and a ``schedule`` is standard cron read by :mod:`audit_watch.core.cron`
(not APScheduler 3's ``from_crontab``, which takes 0 as Monday). :class:`TickPoolExecutor`
tells each run the tick it was due for, so that a run that starts late still evaluates
its own tick.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.executors.base import run_job
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from audit_watch.core.cron import CronSchedule
from audit_watch.rules.model import RuleBase

# Ticks of an `every` count from here (a Monday, 00:00 UTC): the same on every replica,
# and on the hour/day/week for intervals that divide those.
ANCHOR = datetime(2001, 1, 1, tzinfo=UTC)


class CronScheduleTrigger(BaseTrigger):
    """A rule's or a report's ``schedule``: a :class:`~audit_watch.core.cron.CronSchedule`
    (what ``check`` builds too) as an APScheduler trigger."""

    def __init__(self, expr: str, zone: ZoneInfo) -> None:
        self.schedule = CronSchedule(expr, zone)     # CronError (a ValueError) on a bad expression

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        if previous_fire_time is not None:
            return self.schedule.next_after(previous_fire_time)
        return self.schedule.next_at_or_after(now)

    def latest(self, now: datetime) -> datetime:
        tick = self.schedule.latest(now)
        if tick is None:    # not for an expression CronSchedule accepts (it checks for a run behind)
            raise ValueError(f"{self}: no run in the 50 years before {now.isoformat()}")
        return tick

    def __str__(self) -> str:
        return f"cron[{self.schedule.expr}, {self.schedule.zone.key}]"

    def __repr__(self) -> str:
        return f"<CronScheduleTrigger {self.schedule.expr!r} {self.schedule.zone.key}>"


_scheduled = threading.local()


class TickPoolExecutor(ThreadPoolExecutor):
    """APScheduler's thread pool, telling each run the tick it was scheduled for
    (:func:`scheduled_time`): a run that starts late still evaluates its own tick.
    A custom executor is APScheduler 3's documented extension point."""

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        logger_name = self._logger.name

        def run() -> list[Any]:
            events: list[Any] = []
            for run_time in run_times:  # one with coalescing
                _scheduled.value = run_time
                try:
                    events.extend(run_job(job, job._jobstore_alias, [run_time], logger_name))
                finally:
                    _scheduled.value = None
            return events

        def done(future: Any) -> None:
            exc = future.exception()
            if exc is not None:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, future.result())

        self._pool.submit(run).add_done_callback(done)


def scheduled_time() -> datetime | None:
    """The tick the running job was scheduled for (None outside a scheduled run)."""
    return getattr(_scheduled, "value", None)


def interval_trigger(every: timedelta) -> IntervalTrigger:
    return IntervalTrigger(seconds=max(1, int(every.total_seconds())), start_date=ANCHOR, timezone=UTC)


def rule_trigger(rule: RuleBase, default_timezone: str) -> BaseTrigger:
    if rule.schedule:
        return CronScheduleTrigger(rule.schedule, ZoneInfo(rule.timezone or default_timezone))
    return interval_trigger(rule.interval)


def latest_tick(trigger: BaseTrigger, now: datetime) -> datetime:
    """The most recent tick at or before ``now``: what a run at ``now`` is due for."""
    if isinstance(trigger, CronScheduleTrigger):
        return trigger.latest(now)
    if isinstance(trigger, IntervalTrigger):
        steps = (now - trigger.start_date) // trigger.interval
        return (trigger.start_date + steps * trigger.interval).astimezone(UTC)
    raise TypeError(f"no latest tick for {trigger!r}")


def tick_gap(trigger: BaseTrigger, tick: datetime) -> timedelta:
    """The time from ``tick`` to the next one."""
    following = trigger.get_next_fire_time(tick, tick)
    return (following - tick) if following is not None else timedelta(days=1)
