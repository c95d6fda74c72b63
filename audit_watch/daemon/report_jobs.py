"""Scheduled reports in the daemon: one run per (report, tick), by one replica.

At each cron tick of a definition (in its time zone, else the config's) the
replica that claims ``report:NAME`` at that tick in the run ledger builds the
report for the period that ends at the tick, queues it to the definition's
channels in the outbox and records the outcome, the queueing and the outcome in
one transaction: a replica that dies half-way has queued nothing, and a report
is never queued twice. Delivery is the outbox's (retries, backoff, dead rows).

A tick missed while no replica ran is still sent at start when it is at most
``catch_up`` old, and a run that starts later than that (or than ten minutes)
is skipped. A run the audit store fails is tried again twice within the same
claim before its error is recorded; a stopping daemon leaves it claimed, for a
replica (or itself, restarted) to take over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.exc import SQLAlchemyError

from audit_watch.alerting.state import StateStore
from audit_watch.alerting.views import alerts_table
from audit_watch.core.errors import short_error
from audit_watch.core.outcomes import RunOutcome, RunStatus
from audit_watch.daemon import ledger
from audit_watch.daemon.context import TickContext
from audit_watch.daemon.schedules import CronScheduleTrigger
from audit_watch.reports import build_report, period_for
from audit_watch.reports.delivery import enqueue_report, report_payloads
from audit_watch.reports.inputs import AlertActivity
from audit_watch.reports.model import ReportDefinitionBase

log = logging.getLogger(__name__)

RETRY_WAITS = (15.0, 60.0)    # seconds between the attempts of a run the audit store failed
ON_TIME = timedelta(minutes=10)   # a run this late (scheduler jitter, a busy pool) is not LATE


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


def allowed_lateness(definition: ReportDefinitionBase) -> timedelta:
    """How late after its tick a run may still send the report."""
    return max(definition.catch_up, ON_TIME)


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


@dataclass
class ReportOutcome:
    name: str
    tick: datetime
    status: RunOutcome       # ok | error | elsewhere | late | stopped
    queued: list[int] = field(default_factory=list)   # outbox ids
    error: str | None = None
    attempts: int = 0


def run_report_tick(ctx: TickContext, definition: ReportDefinitionBase, tick: datetime, *, claimed: bool = False,
                    retry_waits: Sequence[float] = RETRY_WAITS,
                    stopped: Callable[[float], bool] = _sleep) -> ReportOutcome:
    """Build and queue ``definition`` for ``tick`` if this replica wins the claim
    (``claimed``: it holds it already, taken over from a dead replica).

    A failure of the audit store is tried again after each of ``retry_waits``;
    ``stopped(seconds)`` waits and answers True when the daemon is stopping: the
    claim is then left open, for a replica (or this one, restarted) to take over
    within ``catch_up``. Anything else (an unknown user, a template error) is
    recorded at once. Errors of the state database itself are raised: nothing can
    be recorded then.
    """
    name, job = definition.name, ledger.report_job(definition.name)
    if ctx.clock() - tick > allowed_lateness(definition):
        log.warning("report %s at %s skipped: more than catch_up (%s) late", name, tick.isoformat(),
                    definition.catch_up, extra={"report": name})
        return ReportOutcome(name, tick, RunOutcome.LATE)
    if not claimed and not ledger.claim(ctx.state, job, tick, ctx.replica, ctx.clock()):
        return ReportOutcome(name, tick, RunOutcome.ELSEWHERE)
    started = time.monotonic()
    attempts = len(retry_waits) + 1
    for attempt in range(1, attempts + 1):
        try:
            payloads = _render(ctx, definition, tick)
        except (SQLAlchemyError, OSError) as exc:   # the audit store (or the state, read): worth a retry
            error = short_error(exc)
            if attempt == attempts:
                break
            log.warning("report %s at %s failed (attempt %d of %d), trying again: %s", name, tick.isoformat(),
                        attempt, attempts, error, extra={"report": name})
            if stopped(retry_waits[attempt - 1]):
                log.warning("report %s at %s: stopping; the run is left to be taken over", name, tick.isoformat())
                return ReportOutcome(name, tick, RunOutcome.STOPPED, error=error, attempts=attempt)
            continue
        except Exception as exc:  # noqa: BLE001 - the same input fails the same way: recorded, not retried
            error = short_error(exc)
            break
        try:
            with ctx.state.write() as conn:
                queued = enqueue_report(conn, name, payloads, ctx.clock(), ctx.policy)
                if not ledger.finish_in(conn, job, tick, ctx.replica, RunStatus.OK, ctx.clock(),
                                        seconds=time.monotonic() - started, alerts=len(queued)):
                    raise _TakenOver()   # rolls the queueing back: the other replica sends it
        except _TakenOver:
            log.warning("report %s at %s: another replica took this run over; not queued here", name,
                        tick.isoformat())
            return ReportOutcome(name, tick, RunOutcome.ELSEWHERE, attempts=attempt)
        log.info("report %s at %s queued to %s", name, tick.isoformat(), ", ".join(definition.channels),
                 extra={"report": name})
        return ReportOutcome(name, tick, RunOutcome.OK, queued, attempts=attempt)
    ledger.finish(ctx.state, job, tick, ctx.replica, RunStatus.ERROR, ctx.clock(),
                  seconds=time.monotonic() - started, error=error)
    log.error("report %s at %s not sent: %s", name, tick.isoformat(), error, extra={"report": name})
    return ReportOutcome(name, tick, RunOutcome.ERROR, error=error, attempts=attempt)


def _render(ctx: TickContext, definition: ReportDefinitionBase, tick: datetime) -> list[tuple[str, dict[str, Any]]]:
    """The report for the period ending at ``tick``, rendered for each of its channels."""
    period = period_for(definition, ctx.config, now=tick)
    # Only the digest lists alerts; the others need not read the whole alert table.
    alerts = alert_activity(ctx.state) if definition.report == "weekly-digest" else []
    result = build_report(definition, ctx.src, ctx.config, period, alerts=alerts, now=tick)
    return report_payloads(ctx.config, result, definition.channels)


class _TakenOver(Exception):
    """Raised inside the transaction to roll the queueing back."""
