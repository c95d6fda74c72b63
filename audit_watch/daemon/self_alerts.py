"""Alerts audit-watch raises about itself: "rule X failing since ...", and the
rule-shaped values that let them (and the freshness alert) go through the same
states, outbox and templates as any rule's."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from pydantic import field_validator

from audit_watch.alerting.pipeline import process
from audit_watch.alerting.state import StateStore, load_states
from audit_watch.daemon import ledger
from audit_watch.daemon.context import TickContext
from audit_watch.rules.alert import Alert
from audit_watch.rules.evaluate import Evaluation
from audit_watch.rules.links import condition_filters, list_link
from audit_watch.rules.model import RuleBase

log = logging.getLogger(__name__)

_SECOND = timedelta(seconds=1)
BUILTIN_PREFIX = "audit-watch: "     # the names of audit-watch's own alerts start so



class BuiltinRule(RuleBase):
    """The rule of an alert audit-watch raises or resolves itself. Its name is
    generated ("audit-watch: rule X failing") or read back from the state database
    (a removed rule's, perhaps written before names were checked): not input from a
    rule file, so not held to the pattern of rule names."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return value


def builtin_rule(name: str, description: str, notify: Iterable[str], severity: str = "warning",
                 window: timedelta = timedelta(minutes=1)) -> RuleBase:
    """A rule-shaped value for an alert audit-watch raises about itself; it goes
    through the same states, outbox and templates as any rule's."""
    return BuiltinRule.model_validate({
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
    return f"{BUILTIN_PREFIX}rule {rule} failing"


def failing_rule_of(name: str) -> str | None:
    """The rule a "rule X failing" alert is about; None for other names."""
    head, tail = f"{BUILTIN_PREFIX}rule ", " failing"
    return name[len(head):-len(tail)] if name.startswith(head) and name.endswith(tail) else None


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
            if streak.errors == after:   # the streak's own lines are rate-limited (tick.py); this once
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
