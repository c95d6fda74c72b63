"""``audit-watch run --once``: one pass for cron jobs and tests, on the same ledger
as the daemon (a tick another run already has is not evaluated twice)."""

from __future__ import annotations

import sys
from datetime import datetime

from audit_watch.alerting.pipeline import DeliverySummary
from audit_watch.alerting.state import StateStore
from audit_watch.config.model import read_config
from audit_watch.core.secrets import scrub
from audit_watch.daemon import ledger
from audit_watch.daemon.context import ELSEWHERE, REPLICA_HEARTBEAT, utc_now
from audit_watch.daemon.freshness import FreshnessWatch, check_every, freshness_tick
from audit_watch.daemon.report_jobs import ReportOutcome, run_report_tick
from audit_watch.daemon.runtime import load_runtime
from audit_watch.daemon.schedules import interval_trigger, latest_tick
from audit_watch.daemon.tick import TickOutcome, deliver, run_due


def run_once(config_path: str | None, source_url: str | None, now: datetime | None) -> int:
    """``audit-watch run --once``: each rule's latest tick at ``now`` that no run has
    claimed yet (on a fresh state: every rule), the freshness check, each scheduled
    report whose latest tick is unclaimed and at most its ``catch_up`` old (so that
    ``run --once`` from cron every minute sends reports too), then delivery.
    Prints a summary; exit 0, 1 when a rule or report failed or a notification went
    dead, 2 for problems in the config, rule or report files."""
    config, problems = read_config(config_path)
    if config is None or problems:
        for problem in problems:
            print(scrub(str(problem)), file=sys.stderr)
        return 2
    now = now or utc_now()
    state = StateStore.open(config.state.url)
    ledger.ensure_ledger_schema(state)
    replica = "once-" + ledger.new_replica_id()
    # Liveness is wall-clock time, whatever --now says: daemons on the same state must
    # not take this run for a dead replica and reap its claims.
    ledger.register_replica(state, replica, utc_now())
    beat = ledger.ReplicaBeat(state, replica, utc_now, REPLICA_HEARTBEAT)
    beat.start()
    watch = FreshnessWatch(config.daemon.freshness)
    runtime, problems = load_runtime(config_path, source_url, state, replica, lambda: now,
                                     watch.hold if config.daemon.freshness.enabled else None)
    for problem in problems:
        print(scrub(str(problem)), file=sys.stderr)
    assert runtime is not None
    try:
        queued: list[int] = []
        if config.daemon.freshness.enabled:
            tick = latest_tick(interval_trigger(check_every(watch.config)), now)
            queued = freshness_tick(runtime.ctx, watch, tick, list(runtime.rules.values()))[1]
        outcomes = run_due(runtime.ctx, runtime.rules, runtime.triggers, now)
        reports = [run_report_tick(runtime.ctx, runtime.reports[name], tick, retry_waits=())
                   for name, tick in runtime.reports_due(now)]
        delivered = deliver(runtime.ctx, now)
    finally:
        beat.stopped.set()
        beat.join()
        ledger.mark_stopped(state, replica, utc_now())
        runtime.ctx.src.engine.dispose()
        state.close()
    text, failed = once_summary(now, outcomes, reports, delivered, len(queued))
    print(scrub(text))
    if problems:
        return 2
    return 1 if failed else 0


def once_summary(now: datetime, outcomes: list[TickOutcome], reports: list[ReportOutcome],
                 delivered: DeliverySummary, also_queued: int = 0) -> tuple[str, bool]:
    """The summary, and whether anything failed (a rule, a report, or a notification
    kept as dead). ``also_queued``: notifications of the built-in checks."""
    count = {status: sum(1 for o in outcomes if o.status == status)
             for status in (ledger.OK, ledger.ERROR, ledger.HELD, ELSEWHERE)}
    queued = sum(len(o.queued) for o in [*outcomes, *reports]) + also_queued
    lines = [
        f"run --once at {now.isoformat()}: {len(outcomes)} rules; evaluated {count[ledger.OK]}, failed "
        f"{count[ledger.ERROR]}, held {count[ledger.HELD]}, already evaluated at this tick {count[ELSEWHERE]}; "
        f"{queued} notifications queued; delivered {delivered.delivered}, "
        f"retrying {delivered.retrying}, dead {delivered.dead}."
    ]
    lines += [f"  {o.rule} at {o.tick.isoformat()}: {o.error}" for o in outcomes if o.status == ledger.ERROR]
    sent = [r for r in reports if r.status == ledger.OK]
    if sent:
        lines.append("  reports queued: " + ", ".join(f"{r.name} ({r.tick.isoformat()})" for r in sent))
    lines += [f"  report {r.name} at {r.tick.isoformat()}: {r.error}" for r in reports if r.status == ledger.ERROR]
    failed = count[ledger.ERROR] or delivered.dead or any(r.status == ledger.ERROR for r in reports)
    return "\n".join(lines), bool(failed)
