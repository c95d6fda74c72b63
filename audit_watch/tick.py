"""One pass of the pipeline, and one tick of one rule.

``run_pass`` (evaluate rules at ``now``, update state, deliver) serves the demo.
The daemon and ``run --once`` go through :func:`run_rule_tick`: claim the
(rule, tick) in the run ledger, evaluate at the tick, record the state change and
its notifications, record the outcome, raise or resolve audit-watch's own
"rule failing" alert. Delivery passes register themselves (:func:`deliver`) so
that a survivor can release what a dead replica was sending.

Schedules live here too: every replica must compute the same ticks, so an
``every`` interval counts from a fixed anchor, and a ``schedule`` is standard
cron read by cronsim (APScheduler 3's ``from_crontab`` takes 0 as Monday).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.executors.base import run_job
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger
from cronsim import CronSim

from audit_watch import ledger
from audit_watch.alert import Alert
from audit_watch.channels.base import short_error
from audit_watch.config import Config, read_config
from audit_watch.evaluate import Evaluation, evaluate_rule, evaluate_rules
from audit_watch.links import condition_filters, list_link
from audit_watch.outbox import DeliveryPolicy
from audit_watch.pipeline import DeliverySummary, ProcessSummary, deliver_due, process
from audit_watch.render import Renderer
from audit_watch.rule_loader import RuleSet, load_rules, rule_files
from audit_watch.rule_model import RuleBase
from audit_watch.source import AuditSource
from audit_watch.state import StateStore, load_states
from audit_watch.yaml_source import Problem

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    evaluations: list[Evaluation]
    processed: ProcessSummary
    delivered: DeliverySummary

    @property
    def failed_rules(self) -> list[str]:
        return [e.rule.name for e in self.evaluations if not e.ok]


def load_rule_set(config: Config) -> RuleSet:
    """The config's rules; problems are logged, the good rules still run."""
    rule_set = load_rules(config.rule_paths, {"channels": config.channels})
    for problem in rule_set.problems:
        log.error("rule skipped: %s", problem)
    return rule_set


def run_pass(
    config: Config, rules: Iterable[RuleBase], src: AuditSource, state: StateStore, now: datetime
) -> PassResult:
    """Evaluate ``rules`` at ``now``, record the state changes with their
    notifications (one transaction), then deliver what is due."""
    evaluations = evaluate_rules([r for r in rules if r.enabled], src, now, config.links)
    processed = process(evaluations, config, state, now)
    delivered = deliver_due(config, state, now)
    return PassResult(evaluations, processed, delivered)


# --- schedules -------------------------------------------------------------------------

# Ticks of an `every` count from here (a Monday, 00:00 UTC): the same on every replica,
# and on the hour/day/week for intervals that divide those.
ANCHOR = datetime(2001, 1, 1, tzinfo=timezone.utc)
_SECOND = timedelta(seconds=1)


class CronScheduleTrigger(BaseTrigger):
    """A five-field cron expression in a time zone, read as cron reads it (cronsim:
    Sunday is 0, day-of-month OR day-of-week, DST like Debian cron)."""

    def __init__(self, expr: str, zone: ZoneInfo) -> None:
        self.expr, self.zone = expr, zone
        next(iter(CronSim(expr, datetime.now(zone))))  # fail now on a bad expression

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        if previous_fire_time is not None:
            start = previous_fire_time                  # strictly after the previous one
        else:
            start = now - _SECOND if now.microsecond == 0 else now  # at or after now
        return next(iter(CronSim(self.expr, start.astimezone(self.zone))), None)

    def latest(self, now: datetime) -> datetime:
        start = now.replace(microsecond=0) + _SECOND
        return next(iter(CronSim(self.expr, start.astimezone(self.zone), reverse=True))).astimezone(timezone.utc)

    def __str__(self) -> str:
        return f"cron[{self.expr}, {self.zone.key}]"

    def __repr__(self) -> str:
        return f"<CronScheduleTrigger {self.expr!r} {self.zone.key}>"


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
    return IntervalTrigger(seconds=max(1, int(every.total_seconds())), start_date=ANCHOR, timezone=timezone.utc)


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
        return (trigger.start_date + steps * trigger.interval).astimezone(timezone.utc)
    raise TypeError(f"no latest tick for {trigger!r}")


def tick_gap(trigger: BaseTrigger, tick: datetime) -> timedelta:
    """The time from ``tick`` to the next one."""
    following = trigger.get_next_fire_time(tick, tick)
    return (following - tick) if following is not None else timedelta(days=1)


# --- audit-watch's own alerts --------------------------------------------------------------


def builtin_rule(name: str, description: str, notify: Iterable[str], severity: str = "warning",
                 window: timedelta = timedelta(minutes=1)) -> RuleBase:
    """A rule-shaped value for an alert audit-watch raises about itself; it goes
    through the same states, outbox and templates as any rule's."""
    return RuleBase.model_validate({
        "name": name, "kind": "audit-watch", "description": description, "notify": list(notify),
        "severity": severity, "window": max(window, _SECOND), "repeat": timedelta(hours=4),
    })


def builtin_alert(rule: RuleBase, group: dict[str, Any], value: float, threshold: str, start: datetime,
                  end: datetime, list_url: str, details: dict[str, Any] | None = None) -> Alert:
    return Alert(
        rule=rule.name, kind=rule.kind, severity=rule.severity, source="audit-watch", description=rule.description,
        group=group, group_names={}, value=value, threshold=threshold, baseline=None,
        window_start=min(start, end), window_end=end, row_ids=[], links=[], list_link=list_url,
        details=details or {},
    )


def has_open_alert(state: StateStore, rule_name: str) -> bool:
    with state.read() as conn:
        return any(s.state != "resolved" for s in load_states(conn, rule_name).values())


def failing_rule_name(rule: str) -> str:
    return f"audit-watch: rule {rule} failing"


# --- one tick -----------------------------------------------------------------------------

ELSEWHERE = "elsewhere"   # another replica (or an earlier run) has the tick


@dataclass
class TickContext:
    """What a tick runs with; the daemon builds a new one on every reload."""

    config: Config
    src: AuditSource
    state: StateStore
    renderer: Renderer
    replica: str
    clock: Callable[[], datetime]
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    hold: Callable[[RuleBase], bool] | None = None     # True: do not evaluate now (the store is silent)
    channel_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def self_alert_channels(self, fallback: Iterable[str]) -> tuple[str, ...]:
        return self.config.daemon.notify or tuple(dict.fromkeys(fallback))


@dataclass
class TickOutcome:
    rule: str
    tick: datetime
    status: str                                   # ok | error | held | elsewhere
    evaluation: Evaluation | None = None
    error: str | None = None
    queued: list[int] = field(default_factory=list)   # outbox ids
    kept: bool = True                             # False: our claim was taken over meanwhile
    errors_in_a_row: int = 0                      # across replicas, from the ledger


def run_rule_tick(ctx: TickContext, rule: RuleBase, tick: datetime, *, claimed: bool = False) -> TickOutcome:
    """Evaluate ``rule`` at ``tick`` if this replica wins the claim (``claimed``: it
    already holds it, after taking over a dead replica's claim).

    Errors of the rule are recorded, never raised; errors of the state database
    are raised (nothing can be recorded then).
    """
    if not claimed and not ledger.claim(ctx.state, rule.name, tick, ctx.replica, ctx.clock()):
        return TickOutcome(rule.name, tick, ELSEWHERE)
    if ctx.hold is not None and ctx.hold(rule):
        kept = ledger.finish(ctx.state, rule.name, tick, ctx.replica, ledger.HELD, ctx.clock(),
                             error="held: the audit store has no new rows")
        return TickOutcome(rule.name, tick, ledger.HELD, kept=kept)
    evaluation = evaluate_rule(rule, ctx.src, tick, ctx.config.links)
    error, queued = evaluation.error, []
    if evaluation.ok:
        try:
            processed = process([evaluation], ctx.config, ctx.state, ctx.clock(), renderer=ctx.renderer,
                                policy=ctx.policy)
            queued = list(processed.notifications)
        except Exception as exc:  # noqa: BLE001 - recorded as this tick's error
            log.exception("rule %s at %s: recording the result failed", rule.name, tick.isoformat())
            error = f"recording the result failed: {short_error(exc)}"
    status = ledger.OK if error is None else ledger.ERROR
    kept = ledger.finish(ctx.state, rule.name, tick, ctx.replica, status, ctx.clock(), seconds=evaluation.seconds,
                         alerts=len(evaluation.alerts), error=error)
    if not kept:
        log.warning("rule %s at %s: another replica took this tick over meanwhile", rule.name, tick.isoformat())
    more, errors = update_failing_alert(ctx, rule, tick, failed=error is not None)
    return TickOutcome(rule.name, tick, status, evaluation, error, queued + more, kept, errors)


def update_failing_alert(ctx: TickContext, rule: RuleBase, tick: datetime, failed: bool) -> tuple[list[int], int]:
    """After N errors in a row: "rule X failing since ..."; resolved by its next success.
    Returns the outbox ids queued and the errors in a row."""
    name = failing_rule_name(rule.name)
    after = ctx.config.daemon.rule_error_alert_after
    errors = 0
    if failed:
        streak = ledger.error_streak(ctx.state, rule.name)
        errors = streak.errors
        if streak.errors >= after and streak.since is not None:
            since = streak.since
            if streak.errors == after:   # every failure is logged where it happens; this once
                log.error("rule %s failing since %s (%d errors in a row): %s", rule.name,
                          since.isoformat(), streak.errors, streak.last_error, extra={"rule": rule.name})
            description = (f"Rule {rule.name} has failed {streak.errors} times in a row since "
                           f"{since:%Y-%m-%d %H:%M:%S} UTC; it is retried every tick. Last error: {streak.last_error}")
            builtin = builtin_rule(name, description, ctx.self_alert_channels(rule.notify), rule.severity,
                                   max(tick - since, _SECOND))
            # The rows the rule would have looked at, for whoever investigates.
            rows = list_link(ctx.config.links, rule.source, condition_filters(rule.where), since - rule.window, tick)
            alert = builtin_alert(builtin, {"rule": rule.name}, streak.errors, f">= {after} errors in a row",
                                  since, tick, rows, {"last_error": streak.last_error, "failing_since": since.isoformat()})
            return process_builtin(ctx, builtin, [alert], tick), errors
    if not has_open_alert(ctx.state, name):
        return [], errors
    if not failed:
        log.warning("rule %s evaluates again", rule.name, extra={"rule": rule.name})
    builtin = builtin_rule(name, f"Rule {rule.name} evaluates again.", ctx.self_alert_channels(rule.notify),
                           rule.severity)
    return process_builtin(ctx, builtin, [], tick), errors


def process_builtin(ctx: TickContext, rule: RuleBase, alerts: list[Alert], tick: datetime) -> list[int]:
    """Record one evaluation of a built-in check like any rule's; returns the outbox ids queued."""
    summary = process([Evaluation(rule, tick, alerts)], ctx.config, ctx.state, ctx.clock(), renderer=ctx.renderer,
                      policy=ctx.policy)
    return list(summary.notifications)


def deliver(ctx: TickContext, now: datetime | None = None) -> DeliverySummary:
    """Send what is due, as a registered delivery pass of this replica."""
    at = ledger.open_delivery_run(ctx.state, ctx.replica, now or ctx.clock())
    try:
        return deliver_due(ctx.config, ctx.state, at, policy=ctx.policy, channel_options=ctx.channel_options)
    finally:
        try:
            ledger.close_delivery_run(ctx.state, at)
        except Exception as exc:  # noqa: BLE001 - the row only matters if we die; pruned later
            log.warning("could not close delivery pass %s: %s", at.isoformat(), short_error(exc))


def orphan_action(rule: RuleBase | None, trigger: BaseTrigger | None, tick: datetime, newer_exists: bool,
                  now: datetime) -> str:
    """What a survivor does with a dead replica's unfinished (rule, tick): run it
    while it is still the rule's current tick, else leave it (the next tick covers it)."""
    if rule is None or trigger is None or newer_exists:
        return ledger.ABANDONED
    return "run" if latest_tick(trigger, now) == tick else ledger.ABANDONED


def settle_orphans(ctx: TickContext, runtime: "Runtime", reaped: ledger.Reaped,
                   now: datetime) -> list[tuple[str, datetime]]:
    """Record the dead replica's unfinished ticks as abandoned, except those still
    current: returned, for the caller to run (the claims are ours already)."""
    to_run = []
    for job, tick in reaped.orphans or []:
        with ctx.state.read() as conn:
            newer = ledger.newer_claim_exists(conn, job, tick)
        if orphan_action(runtime.rules.get(job), runtime.triggers.get(job), tick, newer, now) == "run":
            to_run.append((job, tick))
        else:
            ledger.finish(ctx.state, job, tick, ctx.replica, ledger.ABANDONED, now,
                          error=f"replica {reaped.replica} stopped during this tick; the next tick covers it")
    log.warning("replica %s is gone: %d unfinished ticks (%d run again here), %d notifications released",
                reaped.replica, len(reaped.orphans or []), len(to_run), reaped.released_outbox)
    return to_run


def run_due(ctx: TickContext, rules: dict[str, RuleBase], triggers: dict[str, BaseTrigger],
            now: datetime) -> list[TickOutcome]:
    """Every rule's latest tick at ``now`` that no run has claimed yet (``run --once``)."""
    return [run_rule_tick(ctx, rule, latest_tick(triggers[name], now)) for name, rule in rules.items()]


def once_summary(now: datetime, outcomes: list[TickOutcome], delivered: DeliverySummary,
                 also_queued: int = 0) -> tuple[str, bool]:
    """``run --once``'s report, and whether anything failed (a rule, or a notification kept
    as dead). ``also_queued``: notifications of the built-in checks."""
    count = {status: sum(1 for o in outcomes if o.status == status)
             for status in (ledger.OK, ledger.ERROR, ledger.HELD, ELSEWHERE)}
    lines = [
        f"run --once at {now.isoformat()}: {len(outcomes)} rules; evaluated {count[ledger.OK]}, failed "
        f"{count[ledger.ERROR]}, held {count[ledger.HELD]}, already evaluated at this tick {count[ELSEWHERE]}; "
        f"{sum(len(o.queued) for o in outcomes) + also_queued} notifications queued; delivered {delivered.delivered}, "
        f"retrying {delivered.retrying}, dead {delivered.dead}."
    ]
    lines += [f"  {o.rule} at {o.tick.isoformat()}: {o.error}" for o in outcomes if o.status == ledger.ERROR]
    return "\n".join(lines), bool(count[ledger.ERROR] or delivered.dead)


# --- one loaded configuration ------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    """A loaded config and rule set: what every tick runs with until the next reload."""

    config: Config
    rules: dict[str, RuleBase]          # enabled rules by name
    triggers: dict[str, BaseTrigger]
    ctx: TickContext

    def trigger_key(self, name: str) -> tuple[Any, ...]:
        rule = self.rules[name]
        return (rule.every, rule.schedule, rule.timezone or self.config.timezone)

    def needs_restart(self, before: "Runtime") -> list[str]:
        """Settings that changed but that a reload cannot apply to a running process."""
        def keys(r: Runtime) -> dict[str, Any]:
            return {"state.url": r.config.state.url, "daemon.listen": r.config.daemon.listen,
                    "daemon.workers": r.config.daemon.workers}
        return [key for key, value in keys(self).items() if keys(before)[key] != value]


def load_runtime(config_path: str | None, source_url: str | None, state: StateStore, replica: str,
                 clock: Callable[[], datetime], hold: Callable[[RuleBase], bool] | None,
                 previous: Runtime | None = None) -> tuple[Runtime | None, list[Problem]]:
    """Load config and rules. At start, broken rule files are problems beside the good
    rules; on a reload (``previous`` given) any problem refuses the whole reload."""
    config, problems = read_config(config_path)
    if config is None or problems:
        return None, problems
    rule_set = load_rules(config.rule_paths, {"channels": config.channels})
    if rule_set.problems and previous is not None:
        return None, rule_set.problems
    rules = {item.rule.name: item.rule for item in rule_set.rules if item.rule.enabled}
    triggers = {name: rule_trigger(rule, config.timezone) for name, rule in rules.items()}
    if previous is not None and previous.config.source == config.source:
        src = previous.ctx.src
    else:
        src = AuditSource.from_config(config.source, source_url)
        log_disconnects(src.engine, "audit store")
    ctx = TickContext(config, src, state, Renderer(config.template_paths, config.timezone), replica, clock,
                      policy=DeliveryPolicy.from_config(config.delivery), hold=hold)
    return Runtime(config, rules, triggers, ctx), rule_set.problems


def watch_snapshot(config: Config) -> tuple[tuple[str, int, int], ...]:
    """What a reload depends on: the config file and every rule file (name, mtime, size)."""
    files, _ = rule_files(config.rule_paths)
    if config.file:
        files.append(Path(config.file))
    found = []
    for path in sorted(set(files)):
        try:
            stat = path.stat()
            found.append((str(path), stat.st_mtime_ns, stat.st_size))
        except OSError:
            found.append((str(path), -1, -1))
    return tuple(found)


def log_disconnects(engine: Any, what: str) -> None:
    """Say so when a database connection is lost; pool pre-ping reconnects on its own."""
    from sqlalchemy import event

    @event.listens_for(engine, "handle_error")
    def _lost(context: Any) -> None:
        if context.is_disconnect:
            how = "found dead before use" if getattr(context, "is_pre_ping", False) else "lost during a query"
            log.warning("connection to the %s %s (reconnecting): %s", what, how,
                        short_error(context.original_exception))
