"""One tick of one rule, the retirement of rules no longer loaded, and delivery passes.

The daemon, ``run --once`` and the demo go through :func:`run_rule_tick`: claim the
(rule, tick) in the run ledger, evaluate at the tick, record the state change and
its notifications, record the outcome, raise or resolve audit-watch's own
"rule failing" alert. Delivery passes register themselves (:func:`deliver`) so
that a survivor can release what a dead replica was sending (a survivor settles
a dead replica's unfinished ticks in ``takeover``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from apscheduler.triggers.base import BaseTrigger

from audit_watch.alerting.pipeline import DeliverySummary, deliver_due, process
from audit_watch.alerting.state import StateStore, all_states
from audit_watch.core.errors import short_error
from audit_watch.core.outcomes import RunOutcome, RunStatus
from audit_watch.daemon import ledger
from audit_watch.daemon.context import TickContext
from audit_watch.daemon.schedules import latest_tick
from audit_watch.daemon.self_alerts import (
    BUILTIN_PREFIX,
    builtin_rule,
    failing_rule_name,
    failing_rule_of,
    update_failing_alert,
)
from audit_watch.rules.evaluate import Evaluation, evaluate_rule
from audit_watch.rules.model import RuleBase

log = logging.getLogger(__name__)

RETIRE_IDLE = timedelta(minutes=15)   # an unknown rule's alert not evaluated this long is resolved
STILL_FAILING_EVERY = 60     # a failing rule's error is logged at its 1st, 60th, 120th ... tick in a row


@dataclass
class TickOutcome:
    rule: str
    tick: datetime
    status: RunOutcome                            # ok | error | held | elsewhere
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
        return TickOutcome(rule.name, tick, RunOutcome.ELSEWHERE)
    if ctx.hold is not None and ctx.hold(rule):
        kept = ledger.finish(ctx.state, rule.name, tick, ctx.replica, RunStatus.HELD, ctx.clock(),
                             error="held: the audit store has no new rows")
        return TickOutcome(rule.name, tick, RunOutcome.HELD, kept=kept)
    evaluation = evaluate_rule(rule, ctx.src, tick, ctx.config.links)
    error, queued = evaluation.error, []
    if evaluation.ok:
        try:
            processed = process([evaluation], ctx.config, ctx.state, ctx.clock(), renderer=ctx.renderer,
                                policy=ctx.policy)
            queued = list(processed.notifications)
        except Exception as exc:
            log.exception("rule %s at %s: recording the result failed", rule.name, tick.isoformat())
            error = f"recording the result failed: {short_error(exc)}"
    status = RunStatus.OK if error is None else RunStatus.ERROR
    kept = ledger.finish(ctx.state, rule.name, tick, ctx.replica, status, ctx.clock(), seconds=evaluation.seconds,
                         alerts=len(evaluation.alerts), error=error)
    if not kept:
        log.warning("rule %s at %s: another replica took this tick over meanwhile", rule.name, tick.isoformat())
    more, errors = update_failing_alert(ctx, rule, tick, failed=error is not None)
    if error is not None and (errors <= 1 or errors % STILL_FAILING_EVERY == 0):
        # The first error of a streak, then every STILL_FAILING_EVERY-th: a rule failing
        # every second must not flood the log (the ledger and /metrics keep every one).
        log.warning("rule %s failed at %s%s: %s", rule.name, tick.isoformat(),
                    f" ({errors} errors in a row)" if errors > 1 else "", error, extra={"rule": rule.name})
    return TickOutcome(rule.name, tick, RunOutcome(status), evaluation, error, queued + more, kept, errors)



def retire_rules(ctx: TickContext, rules: Iterable[RuleBase], now: datetime) -> list[int]:
    """Resolve the open alerts of rules a reload removed or disabled, and their "rule
    failing" alerts: nothing else ever would. As Alertmanager resolves alerts that stop
    arriving, the rule's channels get the resolution. Returns the outbox ids queued."""
    open_rules = _open_alert_rules(ctx.state)
    evaluations = []
    for rule in rules:
        if rule.name in open_rules:
            evaluations.append(Evaluation(rule.model_copy(update={"keep_firing_for": timedelta(0)}), now, []))
        failing = failing_rule_name(rule.name)
        if failing in open_rules:
            evaluations.append(Evaluation(builtin_rule(failing, f"Rule {rule.name} was removed.",
                                                       ctx.self_alert_channels(rule.notify), rule.severity), now, []))
    if not evaluations:
        return []
    summary = process(evaluations, ctx.config, ctx.state, now, renderer=ctx.renderer, policy=ctx.policy)
    return list(summary.notifications)


def retire_idle(ctx: TickContext, loaded: Iterable[str], now: datetime, idle: timedelta = RETIRE_IDLE) -> list[str]:
    """Quietly resolve the open alerts of rules not loaded here that no replica has
    evaluated for ``idle`` (removed while no daemon ran, say), and the "rule failing"
    alerts of such rules. Quietly: the rule, and so its channels, are unknown now. A
    replica still on an older rule set keeps evaluating its rules, so during a
    rolling change they are not idle. Returns the rule names resolved."""
    known = set(loaded)
    cutoff = now - idle

    def unowned(name: str) -> bool:
        if name.startswith(BUILTIN_PREFIX):
            rule = failing_rule_of(name)          # the freshness alert is nobody's rule
            return rule is not None and rule not in known
        return name not in known

    with ctx.state.read() as conn:
        names = sorted({s.rule for s in all_states(conn, include_resolved=False)
                        if s.last_evaluated_at <= cutoff and unowned(s.rule)})
    if names:
        gone = [Evaluation(builtin_rule(name, f"{name} is no longer configured.", ()), now, []) for name in names]
        process(gone, ctx.config, ctx.state, now, renderer=ctx.renderer, policy=ctx.policy)
    return names


def _open_alert_rules(state: StateStore) -> set[str]:
    with state.read() as conn:
        return {item.rule for item in all_states(conn, include_resolved=False)}


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


def run_due(ctx: TickContext, rules: dict[str, RuleBase], triggers: dict[str, BaseTrigger],
            now: datetime) -> list[TickOutcome]:
    """Every rule's latest tick at ``now`` that no run has claimed yet (``run --once``)."""
    return [run_rule_tick(ctx, rule, latest_tick(triggers[name], now)) for name, rule in rules.items()]
