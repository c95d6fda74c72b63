"""Scheduled reports in the daemon: one run per (report, tick), by one replica.

At each cron tick of a definition (in its time zone, else the config's) the
replica that claims ``report:NAME`` at that tick in the run ledger builds the
report for the period that ends at the tick, queues it to the definition's
channels in the outbox and records the outcome, the queueing and the outcome in
one transaction: a replica that dies half-way has queued nothing, and a report
is never queued twice. Delivery is the outbox's (retries, backoff, dead rows).

A tick missed while no replica ran is still sent at start when it is at most
``catch_up`` old. A run that fails (the audit store is down) is tried again a
few times within the same claim before its error is recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from audit_watch import ledger
from audit_watch.channels.base import short_error
from audit_watch.pipeline import alerts_table
from audit_watch.reports import build_report, period_for
from audit_watch.reports.delivery import enqueue_report
from audit_watch.reports.inputs import AlertActivity
from audit_watch.reports.model import ReportDefinitionBase
from audit_watch.schedules import CronScheduleTrigger
from audit_watch.state import StateStore
from audit_watch.tick import ELSEWHERE, TickContext

log = logging.getLogger(__name__)

RETRY_WAITS = (15.0, 60.0)    # seconds between the attempts of one failing run


def report_trigger(definition: ReportDefinitionBase, default_timezone: str) -> CronScheduleTrigger:
    assert definition.schedule is not None
    return CronScheduleTrigger(definition.schedule, ZoneInfo(definition.timezone or default_timezone))


def scheduled_reports(definitions: Sequence[ReportDefinitionBase]) -> dict[str, ReportDefinitionBase]:
    """The definitions the daemon runs: enabled, with a schedule (channels are then required)."""
    return {d.name: d for d in definitions if d.enabled and d.schedule}


def alert_activity(state: StateStore) -> list[AlertActivity]:
    """Alerts that fired, for the digest's alert section."""
    return [
        AlertActivity(rule=r.rule, group=str(r.group), severity=r.severity, fired_at=r.fired_at,
                      resolved_at=r.resolved_at, value=r.value if isinstance(r.value, (int, float)) else None,
                      link=r.list_link)
        for r in alerts_table(state) if r.fired_at is not None
    ]


@dataclass
class ReportOutcome:
    name: str
    tick: datetime
    status: str                                       # ok | error | elsewhere
    queued: list[int] = field(default_factory=list)   # outbox ids
    error: str | None = None
    attempts: int = 0


def run_report_tick(ctx: TickContext, definition: ReportDefinitionBase, tick: datetime, *, claimed: bool = False,
                    retry_waits: Sequence[float] = RETRY_WAITS,
                    stopped: Callable[[float], bool] = lambda _: False) -> ReportOutcome:
    """Build and queue ``definition`` for ``tick`` if this replica wins the claim
    (``claimed``: it holds it already, taken over from a dead replica).

    ``stopped(seconds)`` waits between attempts and answers True when the daemon is
    stopping (then the error is recorded at once). Errors of the state database
    itself are raised: nothing can be recorded then.
    """
    job = ledger.report_job(definition.name)
    if not claimed and not ledger.claim(ctx.state, job, tick, ctx.replica, ctx.clock()):
        return ReportOutcome(definition.name, tick, ELSEWHERE)
    started = time.monotonic()
    error = ""
    for attempt in range(1, len(retry_waits) + 2):
        try:
            period = period_for(definition, ctx.config, now=tick)
            result = build_report(definition, ctx.src, ctx.config, period, alerts=alert_activity(ctx.state), now=tick)
            with ctx.state.write() as conn:
                queued = enqueue_report(conn, ctx.config, result, definition.channels, ctx.clock(), ctx.policy)
                if not ledger.finish_in(conn, job, tick, ctx.replica, ledger.OK, ctx.clock(),
                                        seconds=time.monotonic() - started, alerts=len(queued)):
                    raise _TakenOver()
        except _TakenOver:
            log.warning("report %s at %s: another replica took this run over; not queued here",
                        definition.name, tick.isoformat())
            return ReportOutcome(definition.name, tick, ELSEWHERE, attempts=attempt)
        except Exception as exc:  # noqa: BLE001 - the audit store, a template: tried again, then recorded
            error = short_error(exc)
            last = attempt > len(retry_waits)
            log.warning("report %s at %s failed (attempt %d%s): %s", definition.name, tick.isoformat(), attempt,
                        "" if last else ", trying again", error, extra={"report": definition.name})
            if last or stopped(retry_waits[attempt - 1]):
                break
            continue
        log.info("report %s for %s queued to %s", definition.name, period.describe(), ", ".join(definition.channels),
                 extra={"report": definition.name})
        return ReportOutcome(definition.name, tick, ledger.OK, queued, attempts=attempt)
    ledger.finish(ctx.state, job, tick, ctx.replica, ledger.ERROR, ctx.clock(),
                  seconds=time.monotonic() - started, error=error)
    log.error("report %s at %s not sent: %s", definition.name, tick.isoformat(), error,
              extra={"report": definition.name})
    return ReportOutcome(definition.name, tick, ledger.ERROR, error=error, attempts=attempt)


class _TakenOver(Exception):
    """Rolls back the queueing when the claim is no longer ours."""
