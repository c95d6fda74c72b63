"""Is the audit store still receiving rows? One alert when it is not.

When the pipe from Auxot breaks, every rule that fires on *missing* rows
(absence, cron_missed, a spike downwards, "fewer than N") would fire at once.
Instead, the daemon checks the newest row of the configured tables every tenth
of ``max_silence`` (at least a second and at most a minute apart: every minute
with the default 2h); once nothing has arrived for ``max_silence`` it raises one alert
("audit store silent since ...") and holds those rules (they are not evaluated,
their states stay as they were) until rows arrive again.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from audit_watch.config.model import FreshnessConfig
from audit_watch.core.durations import format_duration
from audit_watch.core.errors import short_error
from audit_watch.core.outcomes import RunStatus
from audit_watch.daemon import ledger
from audit_watch.daemon.context import TickContext
from audit_watch.daemon.self_alerts import BUILTIN_PREFIX, builtin_alert, builtin_rule, has_open_alert, process_builtin
from audit_watch.rules.kinds import KINDS
from audit_watch.rules.links import list_link
from audit_watch.rules.model import RuleBase
from audit_watch.store.source import AuditSource

log = logging.getLogger(__name__)

FRESHNESS_JOB = "audit-watch:freshness"
FRESHNESS_RULE = BUILTIN_PREFIX + "audit store silent"


def fires_on_silence(rule: RuleBase) -> bool:
    """Would this rule fire merely because no rows arrive? Its kind says."""
    kind = KINDS.get(rule.kind)     # None for audit-watch's own alerts
    return kind is not None and kind.fires_on_silence(rule)


def newest_row(src: AuditSource, tables: tuple[str, ...]) -> datetime | None:
    """The newest time column value across ``tables`` (one indexed max() each)."""
    newest: datetime | None = None
    with src.connect() as conn:
        for table in tables:
            value = src.read_time(conn.execute(select(func.max(src.time_column(table)))).scalar())
            if value is not None and (newest is None or value > newest):
                newest = value
    return newest


def check_every(config: FreshnessConfig) -> timedelta:
    """How often to look: a tenth of the allowed silence, between 1s and 1m."""
    return min(max(config.max_silence / 10, timedelta(seconds=1)), timedelta(minutes=1))


@dataclass(frozen=True)
class Reading:
    newest: datetime | None
    checked_at: datetime
    max_silence: timedelta

    @property
    def silent(self) -> bool:
        return self.newest is None or self.checked_at - self.newest > self.max_silence

    @property
    def silence(self) -> timedelta | None:
        return None if self.newest is None else self.checked_at - self.newest


class FreshnessWatch:
    """The latest reading, shared by the freshness job and every rule tick."""

    def __init__(self, config: FreshnessConfig) -> None:
        self.config = config
        self._reading: Reading | None = None
        self._lock = threading.Lock()

    @property
    def reading(self) -> Reading | None:
        with self._lock:
            return self._reading

    def observe(self, src: AuditSource, now: datetime) -> Reading:
        """Query the store; a failed query keeps the previous reading (and raises)."""
        reading = Reading(newest_row(src, self.config.tables), now, self.config.max_silence)
        with self._lock:
            before, self._reading = self._reading, reading
        if reading.silent and (before is None or not before.silent):
            log.error("the audit store has had no new rows in %s since %s: holding %s",
                      ", ".join(self.config.tables), reading.newest.isoformat() if reading.newest else "ever",
                      "rules that fire on missing rows")
        elif not reading.silent and before is not None and before.silent:
            log.warning("the audit store receives rows again (newest %s)", reading.newest)
        return reading

    def look(self, src: AuditSource, now: datetime) -> Reading | None:
        """:meth:`observe`, logging a failure instead (None: the store could not be read)."""
        if not self.config.enabled:
            return None
        try:
            return self.observe(src, now)
        except Exception as exc:  # noqa: BLE001 - the source is down: the rules' errors say so
            log.warning("freshness check failed: %s", short_error(exc))
            return None

    def hold(self, rule: RuleBase) -> bool:
        reading = self.reading
        return bool(self.config.enabled and reading is not None and reading.silent and fires_on_silence(rule))


def update_freshness_alert(ctx: TickContext, reading: Reading, tick: datetime, rules: list[RuleBase]) -> list[int]:
    """Raise or resolve the one "audit store silent" alert; returns the outbox ids queued."""
    tables = ", ".join(ctx.config.daemon.freshness.tables)
    channels = ctx.self_alert_channels(name for rule in rules for name in rule.notify)
    if not reading.silent:
        if not has_open_alert(ctx.state, FRESHNESS_RULE):
            return []
        rule = builtin_rule(FRESHNESS_RULE, f"The audit store receives rows again ({tables}).", channels)
        return process_builtin(ctx, rule, [], tick)
    since = reading.newest
    held = sorted(r.name for r in rules if fires_on_silence(r))
    description = (
        f"No new rows in {tables} since {since:%Y-%m-%d %H:%M:%S} UTC: the pipe from Auxot may be broken."
        if since else f"No rows at all in {tables}: the pipe from Auxot may not be connected."
    ) + (f" Held until rows arrive: {', '.join(held)}." if held else "")
    start = since or (tick - reading.max_silence)
    rule = builtin_rule(FRESHNESS_RULE, description, channels, "critical", max(tick - start, timedelta(seconds=1)))
    threshold = f"no new rows for {format_duration(reading.max_silence)}"
    latest = list_link(ctx.config.links, ctx.config.daemon.freshness.tables[0], [], since, None)
    alert = builtin_alert(rule, {}, 0, threshold, start, tick, latest,
                          {"newest_row": since.isoformat() if since else None, "held_rules": held})
    return process_builtin(ctx, rule, [alert], tick)



def freshness_tick(ctx: TickContext, watch: FreshnessWatch, tick: datetime,
                   rules: list[RuleBase]) -> tuple[Reading | None, list[int]]:
    """Look at the store (every replica does: each holds its rules by it), then raise
    or resolve the alert (one replica per tick). Returns the reading (None when the
    store could not be read) and the outbox ids queued."""
    reading = watch.look(ctx.src, ctx.clock())
    if reading is None:
        return None, []
    if not ledger.claim(ctx.state, FRESHNESS_JOB, tick, ctx.replica, ctx.clock()):
        return reading, []
    queued = update_freshness_alert(ctx, reading, tick, rules)
    ledger.finish(ctx.state, FRESHNESS_JOB, tick, ctx.replica, RunStatus.OK, ctx.clock())
    return reading, queued
