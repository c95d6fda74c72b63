"""``audit-watch run --once``: one pass for cron jobs and tests, on the same ledger
as the daemon (a tick another run already has is not evaluated twice).

The pass is the daemon's own: each rule's tick claimed in the run ledger, held
while the audit store is silent, its "rule failing" alert kept; the freshness
check; the scheduled reports that are due; delivery. ``audit-watch demo`` runs
the same pass at the demo data's "now" (:func:`once_runtime`, :func:`once_pass`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from audit_watch.alerting.pipeline import DeliverySummary
from audit_watch.alerting.state import StateStore
from audit_watch.config.model import Config, read_config
from audit_watch.core.outcomes import RunOutcome
from audit_watch.core.yaml_source import Problem
from audit_watch.daemon import ledger
from audit_watch.daemon.context import REPLICA_HEARTBEAT, utc_now
from audit_watch.daemon.freshness import FreshnessWatch, check_every, freshness_tick
from audit_watch.daemon.report_jobs import ReportOutcome, run_report_tick
from audit_watch.daemon.runtime import Runtime, load_runtime
from audit_watch.daemon.schedules import interval_trigger, latest_tick
from audit_watch.daemon.tick import TickOutcome, deliver, run_due
from audit_watch.rules.evaluate import Evaluation


@dataclass
class OncePass:
    """What one pass did."""

    now: datetime
    outcomes: list[TickOutcome]                                # one per rule
    reports: list[ReportOutcome]
    delivered: DeliverySummary
    builtin_queued: list[int] = field(default_factory=list)   # outbox ids of the freshness alert

    @property
    def evaluations(self) -> list[Evaluation]:
        """The rules this pass evaluated (not those held, or evaluated by an earlier run)."""
        return [o.evaluation for o in self.outcomes if o.evaluation is not None]

    @property
    def failed(self) -> bool:
        """A rule or a report failed, or a notification was kept as dead."""
        return (self.count(RunOutcome.ERROR) > 0 or any(r.status == RunOutcome.ERROR for r in self.reports)
                or self.delivered.dead > 0)

    def count(self, status: RunOutcome) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def summary(self) -> str:
        queued = sum(len(o.queued) for o in self.outcomes) + sum(len(r.queued) for r in self.reports)
        queued += len(self.builtin_queued)
        delivered = self.delivered
        lines = [
            f"run --once at {self.now.isoformat()}: {len(self.outcomes)} rules; evaluated "
            f"{self.count(RunOutcome.OK)}, failed {self.count(RunOutcome.ERROR)}, held {self.count(RunOutcome.HELD)}, "
            f"already evaluated at this tick {self.count(RunOutcome.ELSEWHERE)}; {queued} notifications queued; "
            f"delivered {delivered.delivered}, retrying {delivered.retrying}, dead {delivered.dead}."
        ]
        lines += [f"  {o.rule} at {o.tick.isoformat()}: {o.error}" for o in self.outcomes if o.status == RunOutcome.ERROR]
        sent = [r for r in self.reports if r.status == RunOutcome.OK]
        if sent:
            lines.append("  reports queued: " + ", ".join(f"{r.name} ({r.tick.isoformat()})" for r in sent))
        lines += [f"  report {r.name} at {r.tick.isoformat()}: {r.error}" for r in self.reports
                  if r.status == RunOutcome.ERROR]
        return "\n".join(lines)


@contextmanager
def once_runtime(config: Config, config_path: str | None, source_url: str | None,
                 now: datetime) -> Iterator[tuple[Runtime, FreshnessWatch | None, list[Problem]]]:
    """The loaded config, rules and reports on a clock stopped at ``now``, as a
    registered replica of the state database; the freshness watch when enabled; the
    problems of the rule and report files (the good ones are loaded). Everything is
    closed on exit."""
    state = StateStore.open(config.state.url)
    try:
        ledger.ensure_ledger_schema(state)
        replica = "once-" + ledger.new_replica_id()
        # Liveness is wall-clock time, whatever --now says: daemons on the same state must
        # not take this run for a dead replica and reap its claims.
        ledger.register_replica(state, replica, utc_now())
        beat = ledger.ReplicaBeat(state, replica, utc_now, REPLICA_HEARTBEAT)
        beat.start()
        try:
            watch = FreshnessWatch(config.daemon.freshness) if config.daemon.freshness.enabled else None
            runtime, problems = load_runtime(config_path, source_url, state, replica, lambda: now,
                                             watch.hold if watch is not None else None)
            assert runtime is not None   # the config was read before: only a reload refuses problems
            try:
                yield runtime, watch, problems
            finally:
                runtime.ctx.src.engine.dispose()
        finally:
            beat.stopped.set()
            beat.join()
            ledger.mark_stopped(state, replica, utc_now())
    finally:
        state.close()


def once_pass(runtime: Runtime, watch: FreshnessWatch | None, now: datetime, *, reports: bool = True) -> OncePass:
    """The freshness check, each rule's latest tick at ``now`` that no run has claimed
    yet (on a fresh state: every rule), each scheduled report whose latest tick is
    unclaimed and at most its ``catch_up`` old (``reports``), then delivery."""
    builtin: list[int] = []
    if watch is not None:
        tick = latest_tick(interval_trigger(check_every(watch.config)), now)
        builtin = freshness_tick(runtime.ctx, watch, tick, list(runtime.rules.values()))[1]
    outcomes = run_due(runtime.ctx, runtime.rules, runtime.triggers, now)
    report_outcomes = [run_report_tick(runtime.ctx, runtime.reports[name], tick, retry_waits=())
                       for name, tick in runtime.reports_due(now)] if reports else []
    delivered = deliver(runtime.ctx, now)
    return OncePass(now, outcomes, report_outcomes, delivered, builtin)


def run_once(config_path: str | None, source_url: str | None, now: datetime | None) -> int:
    """``audit-watch run --once``: :func:`once_pass` at ``now`` (reports included, so
    that ``run --once`` from cron every minute sends them too). Prints a summary;
    exit 0, 1 when a rule or report failed or a notification went dead, 2 for
    problems in the config, rule or report files."""
    config, problems = read_config(config_path)
    if config is None or problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 2
    now = now or utc_now()
    with once_runtime(config, config_path, source_url, now) as (runtime, watch, problems):
        for problem in problems:
            print(problem, file=sys.stderr)
        result = once_pass(runtime, watch, now)
    print(result.summary())
    if problems:
        return 2
    return 1 if result.failed else 0
