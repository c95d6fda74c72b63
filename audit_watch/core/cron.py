"""Cron expressions: the one place audit-watch reads and walks them (with cronsim).

Rules, report definitions, the scheduler, ``cron_missed``, the cron-health
reports and the demo's seed generator all go through :class:`CronSchedule`, so
an expression means the same thing everywhere: standard five-field cron as
Debian cron reads it (Sunday is 0 or 7, names such as ``mon`` and ``jan``,
day-of-month OR day-of-week when both are restricted, cronsim's ``L``, ``LW``,
``5L`` and ``1#2``), and daylight saving time as cron handles it: a run in the
hour repeated when clocks go back happens once, a run in the hour skipped when
they go forward happens right after the gap.

An expression is accepted when cronsim parses it and it has a run both ahead
of and behind the current time, within the 50 years cronsim looks (any
expression that fires at all fires at least every 40 years: the calendar
repeats every 400 years, and leap days skip at most one century year). So
``0 0 31 2 *`` (30 and 31 February) is refused when a rule is read, not when
the scheduler first asks for its next run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
EXAMPLE = "'*/5 * * * *'"
_SECOND = timedelta(seconds=1)


class CronError(ValueError):
    """An expression, or a time zone, that a schedule cannot be built from."""


def check_expression(expr: str) -> str:
    """``expr`` unchanged when a schedule can be built from it; else :class:`CronError`
    saying what is wrong (for ``field: message`` problems)."""
    _parse(expr, datetime.now(UTC))
    return expr


def _parse(expr: str, moment: datetime) -> None:
    if len(expr.split()) != len(FIELDS):
        raise CronError(f"{expr!r} is not a five-field cron expression "
                        f"({' '.join(FIELDS)}; e.g. {EXAMPLE})")
    try:
        ahead = next(CronSim(expr, moment), None)
        behind = next(CronSim(expr, moment, reverse=True), None)
    except CronSimError as exc:
        if str(exc) == "Bad day-of-month" and _day_missing_from_months(expr):
            raise CronError(f"{expr!r} never fires: none of its months has that day") from exc
        # cronsim names the field: "Bad day-of-month".
        raise CronError(f"{expr!r} is not a valid cron expression: {str(exc).lower()} field "
                        f"({' '.join(FIELDS)}; e.g. {EXAMPLE})") from exc
    if ahead is None or behind is None:
        raise CronError(f"{expr!r} never fires (no such date in 50 years)")


def _day_missing_from_months(expr: str) -> bool:
    """cronsim refuses ``0 0 31 2 *`` as a bad day-of-month; in every month it is fine."""
    fields = expr.split()
    fields[FIELDS.index("month")] = "*"
    try:
        CronSim(" ".join(fields), datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError:
        return False
    return True


@dataclass(frozen=True)
class CronSchedule:
    """A five-field cron expression in a time zone. Built only from an expression
    :func:`check_expression` accepts (it raises :class:`CronError` otherwise).

    Every instant it returns is an aware UTC datetime.
    """

    expr: str
    zone: ZoneInfo

    def __post_init__(self) -> None:
        _parse(self.expr, datetime.now(self.zone))

    @classmethod
    def read(cls, expr: str, zone_name: str) -> CronSchedule:
        """From an expression and a time zone name, e.g. a row of the audit store's crons
        (read at every evaluation: the checked schedules are kept)."""
        return _read(expr, zone_name)

    def runs_after(self, moment: datetime) -> Iterator[datetime]:
        """Runs strictly after ``moment``, oldest first (until none in 50 years)."""
        for run in CronSim(self.expr, moment.astimezone(self.zone)):
            yield run.astimezone(UTC)

    def runs_until(self, moment: datetime) -> Iterator[datetime]:
        """Runs at or before ``moment``, newest first (until none in 50 years)."""
        # cronsim steps back from a whole second: start one second after it.
        start = moment.replace(microsecond=0) + _SECOND
        for run in CronSim(self.expr, start.astimezone(self.zone), reverse=True):
            yield run.astimezone(UTC)

    def next_after(self, moment: datetime) -> datetime | None:
        """The first run strictly after ``moment``."""
        return next(self.runs_after(moment), None)

    def next_at_or_after(self, moment: datetime) -> datetime | None:
        """The first run at or after ``moment``."""
        return self.next_after(moment - _SECOND if moment.microsecond == 0 else moment)

    def latest(self, moment: datetime) -> datetime | None:
        """The last run at or before ``moment``."""
        return next(self.runs_until(moment), None)

    def runs_between(self, since: datetime, until: datetime, limit: int) -> list[datetime]:
        """Runs with ``since <= run <= until``, newest first, at most ``limit``."""
        runs: list[datetime] = []
        for run in self.runs_until(until):
            if run < since or len(runs) >= limit:
                break
            runs.append(run)
        return runs

    def __str__(self) -> str:
        return f"{self.expr} ({self.zone.key})"


@lru_cache(maxsize=4096)
def _read(expr: str, zone_name: str) -> CronSchedule:
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CronError(f"unknown time zone {zone_name!r}") from exc
    return CronSchedule(expr, zone)
