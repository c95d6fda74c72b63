"""A survivor takes over what a dead replica left unfinished."""

from __future__ import annotations

import logging
from datetime import datetime

from apscheduler.triggers.base import BaseTrigger

from audit_watch.core.outcomes import RunStatus
from audit_watch.daemon import ledger
from audit_watch.daemon.context import TickContext
from audit_watch.daemon.runtime import Runtime
from audit_watch.daemon.schedules import latest_tick
from audit_watch.rules.model import RuleBase

log = logging.getLogger(__name__)


def orphan_action(rule: RuleBase | None, trigger: BaseTrigger | None, tick: datetime, newer_exists: bool,
                  now: datetime) -> str:
    """What a survivor does with a dead replica's unfinished (rule, tick): run it
    while it is still the rule's current tick, else leave it (the next tick covers it)."""
    if rule is None or trigger is None or newer_exists:
        return RunStatus.ABANDONED
    return "run" if latest_tick(trigger, now) == tick else RunStatus.ABANDONED


def settle_orphans(ctx: TickContext, runtime: Runtime, reaped: ledger.Reaped,
                   now: datetime) -> list[tuple[str, datetime]]:
    """Record the dead replica's unfinished ticks as abandoned, except those still
    current: returned, for the caller to run (the claims are ours already)."""
    to_run = []
    for job, tick in reaped.orphans or []:
        with ctx.state.read() as conn:
            newer = ledger.newer_claim_exists(conn, job, tick)
        report = ledger.report_name(job)
        if report is not None:   # a report run left half-done queued nothing: send it while still timely
            action = "run" if not newer and runtime.report_on_time(report, tick, now) else RunStatus.ABANDONED
        else:
            action = orphan_action(runtime.rules.get(job), runtime.triggers.get(job), tick, newer, now)
        if action == "run":
            to_run.append((job, tick))
        else:
            covered = ("past its catch_up, not sent" if report is not None else "the next tick covers it")
            ledger.finish(ctx.state, job, tick, ctx.replica, RunStatus.ABANDONED, now,
                          error=f"replica {reaped.replica} stopped during this tick; {covered}")
    log.warning("replica %s is gone: %d unfinished ticks (%d run again here), %d notifications released",
                reaped.replica, len(reaped.orphans or []), len(to_run), reaped.released_outbox)
    return to_run
