"""Report periods: ``7d``, ``yesterday``, ``last_week``, ``last_month`` or ``--from/--to``.

A period is the half-open range ``start < t <= end`` (UTC instants), like every
window in audit-watch. Calendar periods are cut at local midnight in the report's
time zone, so ``last_week`` in Europe/Berlin runs from Monday 00:00 Berlin time
(exclusive) to the next Monday 00:00 (inclusive), whatever the DST offset; a row
written exactly at Monday 00:00 belongs to the week that ends there.

``previous()`` and ``history(n)`` give the periods right before, of the same kind:
the month before a month (28 to 31 days), the week before a week, the same
length before a duration. Reports compare against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from audit_watch.core.durations import format_duration, parse_duration
from audit_watch.core.timestamps import as_utc
from audit_watch.core.validators import check_timezone

Unit = Literal["duration", "day", "week", "month"]
CALENDAR_SPECS: dict[str, Unit] = {"yesterday": "day", "last_week": "week", "last_month": "month"}
PERIOD_HELP = "a duration such as 1h, 1d, 7d or 30d, or one of yesterday, last_week, last_month"
MAX_DAY_BUCKETS = 93


def check_period_spec(spec: str) -> str:
    """Validate a period as written in a report definition; returns it unchanged."""
    if spec in CALENDAR_SPECS:
        return spec
    try:
        length = parse_duration(spec)
    except ValueError:
        raise ValueError(f"{spec!r} is not a period: use {PERIOD_HELP}") from None
    if length <= timedelta(0):
        raise ValueError("a period must be longer than 0s")
    return spec


@dataclass(frozen=True)
class Period:
    start: datetime          # exclusive, UTC
    end: datetime            # inclusive, UTC
    timezone: str
    spec: str                # "7d", "last_week", ... or "custom"
    unit: Unit

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.zone)

    def shifted(self, steps: int) -> Period:
        """The period ``steps`` places earlier (calendar-aware for days, weeks, months)."""
        if steps == 0:
            return self
        if self.unit == "duration":
            delta = self.length * steps
            return Period(self.start - delta, self.end - delta, self.timezone, self.spec, self.unit)
        first = self.local(self.start).date()
        if self.unit == "month":
            start_day = _add_months(first, -steps)
            end_day = _add_months(start_day, 1)
        else:
            days = (7 if self.unit == "week" else 1) * steps
            start_day = first - timedelta(days=days)
            end_day = start_day + timedelta(days=7 if self.unit == "week" else 1)
        return Period(_midnight(start_day, self.zone), _midnight(end_day, self.zone),
                      self.timezone, self.spec, self.unit)

    def previous(self) -> Period:
        return self.shifted(1)

    def history(self, count: int) -> list[Period]:
        """The ``count`` periods before this one, newest first."""
        return [self.shifted(i) for i in range(1, count + 1)]

    def buckets(self) -> list[Bucket]:
        """Chart buckets: local calendar days when the period is cut at midnight,
        else 24-hour spans ending at ``end`` (no misleading half days); hours for
        periods of two days or less."""
        if self.length <= timedelta(days=2):
            step = timedelta(hours=1)
            count = max(1, int(self.length / step))
            return [Bucket(self.local(self.end - step * (i + 1)).strftime("%H:%M"),
                           max(self.start, self.end - step * (i + 1)), self.end - step * i)
                    for i in reversed(range(count))]
        local_start = self.local(self.start)
        if local_start.time() == time(0) and self.local(self.end).time() == time(0):
            out: list[Bucket] = []
            day = local_start.date()
            while len(out) < MAX_DAY_BUCKETS:
                lo, hi = _midnight(day, self.zone), _midnight(day + timedelta(days=1), self.zone)
                if lo >= self.end:
                    break
                out.append(Bucket(day.strftime("%b %d"), lo, hi))
                day += timedelta(days=1)
            return out
        count = min(MAX_DAY_BUCKETS, -(-int(self.length.total_seconds()) // 86400))
        spans = []
        for i in range(count):
            hi = self.end - timedelta(days=i)
            lo = max(self.start, hi - timedelta(days=1))
            spans.append(Bucket(self.local(hi).strftime("%b %d"), lo, hi))
        return list(reversed(spans))

    def describe(self) -> str:
        """``13 Nov 2026 12:00 – 20 Nov 2026 12:00 UTC`` or ``week of 16 Nov 2026``."""
        lo, hi = self.local(self.start), self.local(self.end)
        zone = self.timezone
        if self.unit == "month":
            return f"{lo:%B %Y} ({zone})"
        if self.unit == "week":
            last = hi - timedelta(days=1)
            return f"week of {lo:%a %d %b} – {last:%a %d %b %Y} ({zone})"
        if self.unit == "day":
            return f"{lo:%a %d %b %Y} ({zone})"
        return f"{lo:%d %b %Y %H:%M} – {hi:%d %b %Y %H:%M} ({zone})"

    @property
    def name(self) -> str:
        """What the period is called in prose: "the last 7 days", "last week"."""
        if self.spec == "last_week":
            return "last week"
        if self.spec == "last_month":
            return "last month"
        if self.spec == "yesterday":
            return "yesterday"
        if self.spec == "custom":
            return "the period"
        text = format_duration(self.length)
        words = {"1h": "hour", "1d": "day", "24h": "day", "1w": "7 days"}
        if text in words:
            return f"the last {words[text]}"
        number, unit = text[:-1], {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[text[-1]]
        return f"the last {number} {unit}"

    def to_context(self) -> dict[str, object]:
        return {"start": self.start, "end": self.end, "timezone": self.timezone, "spec": self.spec,
                "description": self.describe(), "name": self.name}


@dataclass(frozen=True)
class Bucket:
    label: str
    start: datetime          # exclusive
    end: datetime            # inclusive


def report_period(spec: str | None = None, *, now: datetime | None = None, start: datetime | None = None,
                  end: datetime | None = None, timezone_name: str = "UTC") -> Period:
    """The period of a report run.

    ``--from/--to`` (``start``/``end``) win; otherwise ``spec`` is read relative to
    ``now`` (which the caller reads from the clock once, or from ``--now``).
    Raises ValueError with a message fit for the user.
    """
    check_timezone(timezone_name)
    zone = ZoneInfo(timezone_name)
    if start is not None or end is not None:
        if start is None or end is None:
            raise ValueError("give both --from and --to")
        start, end = as_utc(start), as_utc(end)
        if end <= start:
            raise ValueError("--to must be after --from")
        return Period(start, end, timezone_name, "custom", "duration")
    if now is None:
        raise ValueError("a period needs --now (or --from and --to)")
    now = as_utc(now)
    spec = check_period_spec(spec or "7d")
    unit = CALENDAR_SPECS.get(spec)
    if unit is None:
        return Period(now - parse_duration(spec), now, timezone_name, spec, "duration")
    today = now.astimezone(zone).date()
    if unit == "day":
        first, last = today - timedelta(days=1), today
    elif unit == "week":
        last = today - timedelta(days=today.weekday())
        first = last - timedelta(days=7)
    else:
        last = today.replace(day=1)
        first = _add_months(last, -1)
    return Period(_midnight(first, zone), _midnight(last, zone), timezone_name, spec, unit)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    """Local midnight of ``day`` as a UTC instant (the first instant of the day,
    also where midnight is skipped by a DST change)."""
    naive = datetime.combine(day, time(0))
    local = naive.replace(tzinfo=zone)
    # A nonexistent local time round-trips to a different wall clock: step past the gap.
    if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
        local = (naive + timedelta(hours=1)).replace(tzinfo=zone)
    return local.astimezone(UTC)


def _add_months(day: date, months: int) -> date:
    """The first day of the month ``months`` away from ``day``'s month."""
    index = day.year * 12 + (day.month - 1) + months
    return date(index // 12, index % 12 + 1, 1)


def off_hours_spans(period: Period, first: time, last: time, weekdays: frozenset[int]) -> list[Bucket]:
    """The parts of ``period`` outside working hours, as UTC spans ``(start, end]``.

    Working time is ``first < local time <= last`` on ``weekdays`` (Monday = 0) in
    the period's time zone (``last`` of midnight means the end of the day); every
    other moment of the period is off hours. DST-correct: each local day is cut
    at its own offsets.
    """
    zone = period.zone
    working: list[tuple[datetime, datetime]] = []
    day = period.local(period.start).date() - timedelta(days=1)
    last_day = period.local(period.end).date() + timedelta(days=1)
    while day <= last_day:
        if day.weekday() in weekdays:
            lo = datetime.combine(day, first, tzinfo=zone).astimezone(UTC)
            end_day = day + timedelta(days=1) if last == time(0) else day
            hi = datetime.combine(end_day, last, tzinfo=zone).astimezone(UTC)
            working.append((lo, hi))
        day += timedelta(days=1)
    spans: list[Bucket] = []
    cursor = period.start
    for lo, hi in working:
        if hi <= cursor:
            continue
        if lo >= period.end:
            break
        if lo > cursor:
            spans.append(Bucket("off", cursor, min(lo, period.end)))
        cursor = max(cursor, hi)
    if cursor < period.end:
        spans.append(Bucket("off", cursor, period.end))
    return spans
