"""``audit-watch run``: the scheduler, signals, reload, replicas, graceful shutdown.

One APScheduler ``BackgroundScheduler`` per process with a memory job store,
rebuilt at start from the YAML: a job per rule at its tick, a job per scheduled
report at its cron time (:mod:`audit_watch.daemon.report_jobs`, on a pool of its own),
plus built-in jobs (freshness, heartbeat, reaping dead replicas, pruning) and a
delivery thread. Which replica runs a (rule, tick) or a (report, tick) is decided
by the run ledger (:mod:`audit_watch.daemon.ledger`), so N copies on one PostgreSQL
state share the work.

Signal handlers only set events; reloading and stopping happen in the main loop.
A reload that finds a problem in the config or in any rule or report file is
refused as a whole (every problem logged as ``file:line: field: message``) and the running
configuration stays; so does one that fails in any other way (logged with its traceback):
the daemon never stops because of a reload. SIGTERM stops the scheduling, waits up to 8 s
for the runs in flight, and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent, JobSubmissionEvent
from apscheduler.schedulers.background import BackgroundScheduler

from audit_watch.alerting.state import StateStore
from audit_watch.config.model import read_config
from audit_watch.core.errors import short_error
from audit_watch.core.logs import configure_logging
from audit_watch.core.outcomes import HeartbeatResult, TickResult
from audit_watch.daemon import ledger
from audit_watch.daemon.context import REPLICA_HEARTBEAT, utc_now
from audit_watch.daemon.freshness import FreshnessWatch, check_every, freshness_tick
from audit_watch.daemon.ops import Health, Metrics, OpsServer, heartbeat_tick, ops_app
from audit_watch.daemon.report_jobs import run_report_tick
from audit_watch.daemon.runtime import Runtime, load_runtime, log_disconnects, schedule_changes, watch_snapshot
from audit_watch.daemon.schedules import TickPoolExecutor, interval_trigger, latest_tick, scheduled_time
from audit_watch.daemon.takeover import settle_orphans
from audit_watch.daemon.tick import deliver, retire_idle, retire_rules, run_rule_tick

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 8.0                    # SIGTERM to exit stays under 10 s
DEAD_AFTER = timedelta(seconds=6)         # a replica silent this long is presumed dead
REAP_EVERY = timedelta(seconds=2)
REPORT_WORKERS = 2                        # reports built at once (each apart from the rule workers)
DELIVER_EVERY = 5.0                       # seconds; fresh notifications go out at once (a kick)
WATCH_EVERY = 2.0                         # seconds between looks at the rule files
STATE_ERROR_LOG_EVERY = 30.0              # one line per outage period, not one per rule tick


class Daemon:
    def __init__(self, config_path: str | None, source_url: str | None, listen: str | None = None) -> None:
        self.config_path, self.source_url, self.listen_override = config_path, source_url, listen
        self.clock = utc_now
        self.replica = ledger.new_replica_id()
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.metrics = Metrics(self.replica)
        self.health = Health(self.clock)
        self.runtime: Runtime | None = None
        self.state: StateStore | None = None
        self.scheduler: BackgroundScheduler | None = None
        self.server: OpsServer | None = None
        self.freshness: FreshnessWatch | None = None
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self.beat: ledger.ReplicaBeat | None = None
        # Catch-up and take-over runs: not APScheduler "date" jobs, whose removal races
        # with shutdown() in APScheduler 3 (JobLookupError on the scheduler thread).
        self.one_offs: ThreadPoolExecutor | None = None
        self.report_one_offs: ThreadPoolExecutor | None = None   # reports caught up or taken over
        self.evaluating: threading.BoundedSemaphore | None = None   # scheduled and one-off runs together
        self._delivery_due = threading.Event()
        self._last_state_error = 0.0
        self._snapshot: Any = None
        self.load_problems = 0              # problems in rule/report files at the last load
        self._pending: Any = None

    # --- start ------------------------------------------------------------------------

    def start(self) -> int | None:
        """Load, open, schedule; an exit code when the daemon cannot start."""
        config, problems = read_config(self.config_path)
        if config is None or problems:
            for problem in problems:
                log.error("%s", problem)
            log.error("not starting: the configuration has %d problem(s)", len(problems))
            return 2
        self.state = ledger.open_state(config.state.url, self.stop_requested)
        if self.state is None:
            return 0 if self.stop_requested.is_set() else 1
        log_disconnects(self.state.engine, "state database")
        ledger.register_replica(self.state, self.replica, self.clock())
        self.freshness = FreshnessWatch(config.daemon.freshness)
        runtime, problems = load_runtime(self.config_path, self.source_url, self.state, self.replica, self.clock,
                                         self.freshness.hold)
        for problem in problems:
            log.error("skipped: %s", problem)
        if runtime is None:
            return 2
        self.runtime = runtime
        self.metrics.rule_problems.set(len(problems))
        self.metrics.watch_state(lambda: self.state)  # type: ignore[arg-type, return-value]
        listen = self.listen_override or runtime.config.daemon.listen
        if listen:
            try:
                self.server = OpsServer(listen, ops_app(self.metrics.registry, self.health)).start()
            except OSError as exc:
                log.error("cannot listen on %s: %s", listen, exc)
                return 1
            log.info("serving /healthz and /metrics on http://%s", self.server.address)
        self.beat = ledger.ReplicaBeat(self.state, self.replica, self.clock, REPLICA_HEARTBEAT)
        self.beat.start()
        # A first look, so that rules are held from their first tick when the store is silent.
        self.metrics.record_reading(self.freshness.look(runtime.ctx.src, self.clock()))
        self.one_offs = ThreadPoolExecutor(runtime.config.daemon.workers, thread_name_prefix="one-off")
        self.report_one_offs = ThreadPoolExecutor(REPORT_WORKERS, thread_name_prefix="report-one-off")
        self.evaluating = threading.BoundedSemaphore(runtime.config.daemon.workers)
        threading.Thread(target=self._delivery_loop, name="delivery", daemon=True).start()
        self.scheduler = self._build_scheduler(runtime)
        self.scheduler.start()
        self.health.scheduler_running = True
        self.metrics.scheduler_running.set(1)
        self.load_problems = len(problems)
        self._retire_vanished(runtime)
        self._catch_up(runtime, list(runtime.rules), list(runtime.reports))
        self._snapshot = watch_snapshot(runtime.config)
        log.info("audit-watch running as replica %s: %d rules, %d scheduled reports", self.replica,
                 len(runtime.rules), len(runtime.reports))
        return None

    def _build_scheduler(self, runtime: Runtime) -> BackgroundScheduler:
        scheduler = BackgroundScheduler(
            executors={"default": TickPoolExecutor(runtime.config.daemon.workers), "internal": TickPoolExecutor(4),
                       "reports": TickPoolExecutor(REPORT_WORKERS)},
            job_defaults={"coalesce": True, "max_instances": 1}, timezone=UTC,
        )
        scheduler.add_listener(self._on_skipped, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        self.scheduler = scheduler
        for name in runtime.rules:
            self._schedule_rule(runtime, name)
        for name in runtime.reports:
            self._schedule_report(runtime, name)
        self._schedule_builtins(runtime)
        self.health.set_rules(runtime.triggers)
        self.metrics.rules.set(len(runtime.rules))
        return scheduler

    def _schedule_rule(self, runtime: Runtime, name: str) -> None:
        # No run is dropped for starting late (misfire_grace_time=None): with coalescing
        # and max_instances=1 a rule has at most one run pending, and a run that starts
        # after its next tick is due evaluates that newest tick instead (_rule_job).
        # Dropping would let an overloaded rule starve: each run waits, then is dropped.
        assert self.scheduler is not None
        self.scheduler.add_job(self._rule_job, runtime.triggers[name], args=[name], id=f"rule:{name}", name=name,
                               misfire_grace_time=None, replace_existing=True)

    def _schedule_report(self, runtime: Runtime, name: str) -> None:
        # A report that starts late still reports on the period of its own tick.
        assert self.scheduler is not None
        self.scheduler.add_job(self._report_job, runtime.report_triggers[name], args=[name], id=ledger.report_job(name),
                               name=ledger.report_job(name), executor="reports", misfire_grace_time=None,
                               replace_existing=True)

    def _schedule_builtins(self, runtime: Runtime) -> None:
        assert self.scheduler is not None
        daemon = runtime.config.daemon
        jobs = {
            "reap": (self._reap_job, REAP_EVERY),
            "maintenance": (self._maintenance_job, timedelta(hours=1)),
            "freshness": (self._freshness_job, check_every(daemon.freshness) if daemon.freshness.enabled else None),
            "heartbeat": (self._heartbeat_job, daemon.heartbeat.every if daemon.heartbeat else None),
        }
        for name, (func, every) in jobs.items():
            job_id = f"builtin:{name}"
            if every is None:
                if self.scheduler.get_job(job_id):
                    self.scheduler.remove_job(job_id)
                continue
            trigger = interval_trigger(every)
            self.scheduler.add_job(func, trigger, id=job_id, name=job_id, executor="internal", replace_existing=True,
                                   misfire_grace_time=max(1, int(every.total_seconds())))

    def _catch_up(self, runtime: Runtime, names: list[str], reports: list[str]) -> None:
        """Each rule's latest tick at once, if no replica has it yet: after downtime
        that is one evaluation per rule, not one per missed tick. A report's latest
        tick too, while it is at most ``catch_up`` old."""
        now = self.clock()
        assert self.one_offs is not None
        for name in names:
            self.one_offs.submit(self._rule_job, name, latest_tick(runtime.triggers[name], now))
        assert self.report_one_offs is not None
        for name, tick in runtime.reports_due(now):
            if name in reports:
                self.report_one_offs.submit(self._report_job, name, tick)

    def _retire_vanished(self, runtime: Runtime) -> None:
        """Resolve, quietly, the alerts of rules no replica evaluates any more (removed
        while nothing ran): at start and hourly, unless the rule files had problems (a
        rule that is missing may just be unreadable)."""
        if self.load_problems:
            return
        try:
            names = retire_idle(runtime.ctx, runtime.rules, self.clock())
        except Exception as exc:  # noqa: BLE001 - tried again within the hour
            log.warning("could not resolve the alerts of removed rules: %s", short_error(exc))
            return
        if names:
            log.warning("resolved the open alerts of %d rule(s) no longer configured: %s", len(names),
                        ", ".join(names))

    # --- jobs ---------------------------------------------------------------------------

    @contextmanager
    def _running(self) -> Iterator[None]:
        with self._in_flight_lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1

    def _rule_job(self, name: str, tick: datetime | None = None, claimed: bool = False) -> None:
        runtime = self.runtime
        if self.stop_requested.is_set() or runtime is None or name not in runtime.rules:
            return
        rule, trigger = runtime.rules[name], runtime.triggers[name]
        assert self.evaluating is not None
        with self._running(), self.evaluating:
            if self.stop_requested.is_set():    # stopped while waiting for a worker
                return
            due = tick or scheduled_time() or latest_tick(trigger, self.clock())
            tick = due if claimed else max(due, latest_tick(trigger, self.clock()))
            if tick > due:                     # started after a newer tick was due: evaluate that one
                self.metrics.ticks.labels(TickResult.LATE).inc()
            try:
                outcome = run_rule_tick(runtime.ctx, rule, tick, claimed=claimed)
            except Exception as exc:  # noqa: BLE001 - the state database: retried next tick
                self.metrics.ticks.labels(TickResult.FAILED).inc()
                if time.monotonic() - self._last_state_error > STATE_ERROR_LOG_EVERY:
                    self._last_state_error = time.monotonic()
                    log.error("rule ticks cannot be recorded (state database): %s; e.g. %s at %s", short_error(exc),
                              name, tick.isoformat(), extra={"rule": name})
                return
            self.health.tick_done(name, tick)
            self.metrics.record_tick(outcome, rule.kind)
            if outcome.queued:
                self._delivery_due.set()

    def _report_job(self, name: str, tick: datetime | None = None, claimed: bool = False) -> None:
        runtime = self.runtime
        if self.stop_requested.is_set() or runtime is None or name not in runtime.reports:
            return
        # Not under the evaluation semaphore: a report waiting to retry must not hold up rules.
        with self._running():
            tick = tick or scheduled_time() or latest_tick(runtime.report_triggers[name], self.clock())
            try:
                outcome = run_report_tick(runtime.ctx, runtime.reports[name], tick, claimed=claimed,
                                          stopped=self.stop_requested.wait)
            except Exception as exc:  # noqa: BLE001 - the state database: the claim stays open
                # Left claimed: after a restart a survivor (or this replica) takes it over within catch_up.
                log.error("report %s at %s cannot be recorded (state database): %s", name, tick.isoformat(),
                          short_error(exc), extra={"report": name})
                self.metrics.report_runs.labels(name, TickResult.FAILED).inc()
                return
            self.metrics.report_runs.labels(name, outcome.status).inc()
            if outcome.queued:
                self.metrics.queued.inc(len(outcome.queued))
                self._delivery_due.set()

    def _delivery_loop(self) -> None:
        """One delivery pass at a time per replica: at once when a tick queued
        notifications, else every few seconds (retries, rows released by a reaping).
        Its own thread: a slow mail server never holds up an evaluation."""
        while not self.stop_requested.is_set():
            self._delivery_due.wait(DELIVER_EVERY)
            self._delivery_due.clear()
            runtime = self.runtime
            if runtime is None or self.stop_requested.is_set():
                continue
            with self._running():
                try:
                    self.metrics.count_deliveries(deliver(runtime.ctx))
                except Exception as exc:  # noqa: BLE001 - the outbox keeps them: the next pass tries again
                    log.warning("delivery pass failed: %s", short_error(exc))

    def _reap_job(self) -> None:
        """Take over from replicas that stopped heartbeating (one survivor each)."""
        runtime, state = self.runtime, self.state
        if runtime is None or state is None or self.stop_requested.is_set():
            return
        # Only a replica that has itself reached the database for DEAD_AFTER may judge
        # others: after an outage everyone's heartbeat is old.
        if self.beat is None or self.beat.reachable_for() < DEAD_AFTER.total_seconds():
            return
        now = self.clock()
        try:
            self.metrics.replicas.set(len(ledger.live_replicas(state, now, DEAD_AFTER)))
            for dead in ledger.reap_candidates(state, self.replica, now, DEAD_AFTER):
                reaped = ledger.reap(state, dead, self.replica, now)
                if reaped is None:
                    continue
                for job, tick in settle_orphans(runtime.ctx, runtime, reaped, now):
                    report = ledger.report_name(job)
                    if report is not None:
                        self.report_one_offs.submit(self._report_job, report, tick, True)  # type: ignore[union-attr]
                    else:
                        self.one_offs.submit(self._rule_job, job, tick, True)  # type: ignore[union-attr]
                if reaped.released_outbox:
                    self._delivery_due.set()
        except Exception as exc:  # noqa: BLE001 - tried again in two seconds
            log.warning("reaping dead replicas failed: %s", short_error(exc))

    def _freshness_job(self) -> None:
        runtime = self.runtime
        if runtime is None or self.freshness is None or self.stop_requested.is_set():
            return
        with self._running():
            try:
                reading, queued = freshness_tick(runtime.ctx, self.freshness, scheduled_time() or self.clock(),
                                                 list(runtime.rules.values()))
            except Exception as exc:  # noqa: BLE001 - the state database: next check
                log.warning("freshness alert could not be recorded: %s", short_error(exc))
                return
            self.metrics.record_reading(reading)
            if queued:
                self._delivery_due.set()

    def _heartbeat_job(self) -> None:
        runtime = self.runtime
        if runtime is None or runtime.config.daemon.heartbeat is None or self.stop_requested.is_set():
            return
        try:
            result = heartbeat_tick(runtime.ctx, runtime.config.daemon.heartbeat, self.health,
                                    scheduled_time() or self.clock(), f"{len(runtime.rules)} rules")
        except Exception as exc:  # noqa: BLE001 - no heartbeat is the signal
            log.warning("heartbeat failed: %s", short_error(exc))
            result = HeartbeatResult.ERROR
        if result != HeartbeatResult.ELSEWHERE:
            self.metrics.heartbeats.labels(result).inc()

    def _maintenance_job(self) -> None:
        runtime, state = self.runtime, self.state
        if runtime is not None and state is not None:
            ledger.housekeeping(state, self.clock(), runtime.config.daemon.ledger_retention)
            self._retire_vanished(runtime)

    def _on_skipped(self, event: JobExecutionEvent | JobSubmissionEvent) -> None:
        # On the scheduler's thread: keep it short.
        if event.code == EVENT_JOB_MAX_INSTANCES:
            self.metrics.ticks.labels(TickResult.BUSY).inc()
            log.warning("%s: a tick was skipped, the previous run is still going", event.job_id)
        else:
            self.metrics.ticks.labels(TickResult.MISSED).inc()

    # --- main loop, reload, stop ------------------------------------------------------------

    def serve(self) -> None:
        last_watch = time.monotonic()
        while not self.stop_requested.wait(0.25):
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload("SIGHUP")
            elif self.runtime and self.runtime.config.daemon.reload_watch and time.monotonic() - last_watch >= WATCH_EVERY:
                last_watch = time.monotonic()
                self._watch()

    def _watch(self) -> None:
        """Reload when the config or rule files change (and have stopped changing)."""
        assert self.runtime is not None
        snapshot = watch_snapshot(self.runtime.config)
        if snapshot == self._snapshot:
            return
        if self._pending == snapshot:   # unchanged for one look: the edit is complete
            self._pending = None
            self.reload("rule files changed")
            self._snapshot = snapshot
        else:
            self._pending = snapshot

    def reload(self, reason: str) -> bool:
        """Load the configuration anew and switch to it. Any problem, and any error,
        refuses the reload: the daemon keeps running the last good configuration and
        never stops because of a reload."""
        old, state = self.runtime, self.state
        assert old is not None and state is not None and self.scheduler is not None
        log.info("reloading (%s)", reason)
        try:
            new, problems = load_runtime(self.config_path, self.source_url, state, self.replica, self.clock,
                                         self.freshness.hold if self.freshness else None, previous=old)
        except Exception:  # whatever it is, the running configuration stays
            log.exception("reload refused: loading the configuration failed")
            return self._refused(old, 1)
        if new is None:
            for problem in problems:
                log.error("reload refused: %s", problem)
            return self._refused(old, len(problems))
        try:
            removed, added, new_reports = self._switch(old, new)
        except Exception:  # back to the previous schedule
            log.exception("reload refused: scheduling the new configuration failed")
            self._restore(old)
            if new.ctx.src is not old.ctx.src:
                new.ctx.src.engine.dispose()
            return self._refused(old, 1)
        try:
            self._settle(old, new, removed, added, new_reports)
        except Exception:  # the new configuration runs: only its follow-up failed
            log.exception("reload applied, but what follows it failed")
        return True

    def _refused(self, old: Runtime, count: int) -> bool:
        log.error("reload refused (%d problem(s)): still running the previous configuration and %d rules",
                  count, len(old.rules))
        self.metrics.reloads.labels("refused").inc()
        self.metrics.reload_ok.set(0)
        return False

    def _switch(self, old: Runtime, new: Runtime) -> tuple[list[str], list[str], list[str]]:
        """Run ``new`` and reschedule what changed; returns (removed rules, added rules,
        added reports). What this does, :meth:`_restore` can undo."""
        assert self.scheduler is not None
        removed, added, changed = schedule_changes(old.rule_schedules(), new.rule_schedules())
        gone_reports, new_reports, moved_reports = schedule_changes(old.report_schedules(), new.report_schedules())
        self.runtime = new
        if self.freshness is not None:
            self.freshness.config = new.config.daemon.freshness
        for name in added + changed:
            self._schedule_rule(new, name)
        for name in new_reports + moved_reports:
            self._schedule_report(new, name)
        for job_id in [f"rule:{name}" for name in removed] + [ledger.report_job(name) for name in gone_reports]:
            if self.scheduler.get_job(job_id) is not None:
                self.scheduler.remove_job(job_id)
        self._schedule_builtins(new)
        return removed, added, new_reports

    def _restore(self, runtime: Runtime) -> None:
        """Back to ``runtime`` after a reload failed half-way through :meth:`_switch`."""
        assert self.scheduler is not None
        self.runtime = runtime
        if self.freshness is not None:
            self.freshness.config = runtime.config.daemon.freshness
        try:
            wanted = {f"rule:{name}" for name in runtime.rules} | {ledger.report_job(n) for n in runtime.reports}
            for job in self.scheduler.get_jobs():
                if job.id.startswith(("rule:", ledger.report_job(""))) and job.id not in wanted:
                    job.remove()
            for name in runtime.rules:
                self._schedule_rule(runtime, name)
            for name in runtime.reports:
                self._schedule_report(runtime, name)
            self._schedule_builtins(runtime)
        except Exception:  # keep running what is scheduled
            log.exception("could not put the previous schedule back in full: some rules or reports may not run "
                          "until the next reload or restart")

    def _settle(self, old: Runtime, new: Runtime, removed: list[str], added: list[str],
                new_reports: list[str]) -> None:
        """After a reload is applied: resolve removed rules' alerts, catch up, count and say so."""
        for key in new.needs_restart(old):
            log.warning("%s changed: takes effect at the next restart", key)
        if removed:
            try:
                queued = retire_rules(old.ctx, [old.rules[name] for name in removed], self.clock())
            except Exception as exc:  # noqa: BLE001 - the alerts stay open; the next start resolves them
                log.warning("could not resolve the alerts of removed rules: %s", short_error(exc))
            else:
                if queued:
                    self._delivery_due.set()
        self._catch_up(new, added, new_reports)
        self.health.set_rules(new.triggers)
        self.metrics.rules.set(len(new.rules))
        self.metrics.rule_problems.set(0)
        self.load_problems = 0
        self.metrics.reloads.labels("applied").inc()
        self.metrics.reload_ok.set(1)
        self.metrics.reload_time.set(time.time())
        if new.ctx.src is not old.ctx.src:
            old.ctx.src.engine.dispose()
        edited = sum(1 for n in new.rules if n in old.rules and new.rules[n] != old.rules[n])
        log.info("reloaded: %d rules (%d added, %d removed, %d changed); unchanged rules keep their state",
                 len(new.rules), len(added), len(removed), edited)
        self._snapshot = watch_snapshot(new.config)

    def shutdown(self) -> bool:
        """Finish what runs (up to SHUTDOWN_TIMEOUT); True when everything finished."""
        self.stop_requested.set()
        log.info("stopping: finishing the runs in flight")
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for pool in (self.one_offs, self.report_one_offs):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self.health.scheduler_running = False
        self.metrics.scheduler_running.set(0)
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        finished = self._in_flight == 0
        if not finished:
            log.warning("%d run(s) still going after %.0fs: leaving them to the other replicas", self._in_flight,
                        SHUTDOWN_TIMEOUT)
        if self.beat is not None:
            self.beat.stopped.set()
        if self.state is not None:
            try:
                ledger.mark_stopped(self.state, self.replica, self.clock())
            except Exception as exc:  # noqa: BLE001 - the others will see the heartbeat stop
                log.warning("could not record the stop: %s", short_error(exc))
        if self.server is not None:
            self.server.stop()
        if finished:
            if self.runtime is not None:
                self.runtime.ctx.src.engine.dispose()
            if self.state is not None:
                self.state.close()
        log.info("stopped")
        return finished


def _install_signals(daemon: Daemon) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop_requested.set())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop_requested.set())
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: daemon.reload_requested.set())


def run_daemon(config_path: str | None, source_url: str | None, log_format: str = "text",
               listen: str | None = None, level: int | None = None) -> int:
    """``audit-watch run``: blocks until SIGTERM or SIGINT; returns the exit code.
    ``level`` is the log level the operator asked for (default INFO)."""
    configure_logging(log_format, level)
    daemon = Daemon(config_path, source_url, listen)
    _install_signals(daemon)
    try:
        code = daemon.start()
    except Exception:
        log.exception("audit-watch could not start")
        code = 1
    if code is not None:
        daemon.shutdown()
        return code
    try:
        daemon.serve()
    finally:
        finished = daemon.shutdown()
    if not finished:  # worker threads stuck in a query would block the interpreter's exit
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0
