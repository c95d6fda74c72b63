"""One loaded configuration: config, rules and their triggers, and what a tick
runs with. The daemon loads one at start and a new one on every reload; a reload
that finds any problem keeps the previous one."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from apscheduler.triggers.base import BaseTrigger

from audit_watch.alerting.outbox import DeliveryPolicy
from audit_watch.alerting.state import StateStore
from audit_watch.channels.render import Renderer
from audit_watch.config.model import Config, read_config
from audit_watch.core.cron import CronError
from audit_watch.core.definition_files import yaml_files
from audit_watch.core.errors import short_error
from audit_watch.core.yaml_source import Problem
from audit_watch.daemon.context import TickContext
from audit_watch.daemon.report_jobs import allowed_lateness, report_trigger, scheduled_reports
from audit_watch.daemon.schedules import CronScheduleTrigger, latest_tick, rule_trigger
from audit_watch.reports.loader import LoadedReport, report_definitions
from audit_watch.reports.model import ReportDefinitionBase
from audit_watch.rules.loader import LoadedRule, load_rules, rule_files
from audit_watch.rules.model import RuleBase
from audit_watch.store.source import AuditSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """A loaded config and rule set: what every tick runs with until the next reload."""

    config: Config
    rules: dict[str, RuleBase]          # enabled rules by name
    triggers: dict[str, BaseTrigger]
    ctx: TickContext
    reports: dict[str, ReportDefinitionBase] = field(default_factory=dict)   # scheduled reports by name
    report_triggers: dict[str, CronScheduleTrigger] = field(default_factory=dict)

    def rule_schedules(self) -> dict[str, tuple[Any, ...]]:
        """What each rule's trigger is built from: a change means rescheduling it."""
        zone = self.config.timezone
        return {name: (r.every, r.schedule, r.timezone or zone) for name, r in self.rules.items()}

    def report_schedules(self) -> dict[str, tuple[Any, ...]]:
        zone = self.config.timezone
        return {name: (d.schedule, d.timezone or zone) for name, d in self.reports.items()}

    def reports_due(self, now: datetime) -> list[tuple[str, datetime]]:
        """Each scheduled report's latest tick at ``now``, while it may still be sent
        (at most ``catch_up`` old, or ten minutes)."""
        ticks = [(name, latest_tick(trigger, now)) for name, trigger in self.report_triggers.items()]
        return [(name, tick) for name, tick in ticks if self.report_on_time(name, tick, now)]

    def report_on_time(self, name: str, tick: datetime, now: datetime) -> bool:
        """Whether report ``name``'s run for ``tick`` may still be sent at ``now``."""
        return name in self.reports and now - tick <= allowed_lateness(self.reports[name])

    def needs_restart(self, before: Runtime) -> list[str]:
        """Settings that changed but that a reload cannot apply to a running process."""
        def keys(r: Runtime) -> dict[str, Any]:
            return {"state.url": r.config.state.url, "daemon.listen": r.config.daemon.listen,
                    "daemon.workers": r.config.daemon.workers}
        return [key for key, value in keys(self).items() if keys(before)[key] != value]


def schedule_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(removed, added, rescheduled) between two {name: schedule} maps."""
    removed = [name for name in before if name not in after]
    added = [name for name in after if name not in before]
    rescheduled = [name for name in after if name in before and after[name] != before[name]]
    return removed, added, rescheduled


def load_runtime(config_path: str | None, source_url: str | None, state: StateStore, replica: str,
                 clock: Callable[[], datetime], hold: Callable[[RuleBase], bool] | None,
                 previous: Runtime | None = None) -> tuple[Runtime | None, list[Problem]]:
    """Load config, rules and report definitions. At start, broken rule or report files
    are problems beside the good ones; on a reload (``previous`` given) any problem
    refuses the whole reload."""
    config, problems = read_config(config_path)
    if config is None or problems:
        return None, problems
    rule_set = load_rules(config.rule_paths, {"channels": config.channels})
    definitions, report_problems = report_definitions(config.report_paths, config.channels)
    enabled = [item for item in rule_set.rules if item.rule.enabled]
    scheduled = scheduled_reports([item.definition for item in definitions])
    triggers, report_triggers, trigger_problems = build_triggers(
        enabled, [item for item in definitions if item.definition.name in scheduled], config.timezone)
    problems = [*rule_set.problems, *report_problems, *trigger_problems]
    if problems and previous is not None:
        return None, problems
    rules = {item.rule.name: item.rule for item in enabled if item.rule.name in triggers}
    reports = {name: d for name, d in scheduled.items() if name in report_triggers}
    if previous is not None and previous.config.source == config.source:
        src = previous.ctx.src
    else:
        src = AuditSource.from_config(config.source, source_url)
        log_disconnects(src.engine, "audit store")
    ctx = TickContext(config, src, state, Renderer(config.template_paths, config.timezone), replica, clock,
                      policy=DeliveryPolicy.from_config(config.delivery), hold=hold)
    return Runtime(config, rules, triggers, ctx, reports, report_triggers), problems


def build_triggers(rules: Iterable[LoadedRule], reports: Iterable[LoadedReport], default_timezone: str
                   ) -> tuple[dict[str, BaseTrigger], dict[str, CronScheduleTrigger], list[Problem]]:
    """The scheduler's triggers for ``rules`` and ``reports`` (those with a schedule).

    ``check`` builds them too, so what it accepts is what the daemon schedules. The
    schedule's own validation (:mod:`audit_watch.core.cron`) has already refused what
    cannot be scheduled; anything that still fails here is a problem at the rule's or
    report's file and line, not an exception that stops a start or a reload.
    """
    triggers: dict[str, BaseTrigger] = {}
    report_triggers: dict[str, CronScheduleTrigger] = {}
    problems: list[Problem] = []
    for item in rules:
        key = "schedule" if item.rule.schedule else "every"
        try:
            triggers[item.rule.name] = rule_trigger(item.rule, default_timezone)
        except Exception as exc:  # noqa: BLE001 - one rule that cannot be scheduled is one problem
            problems.append(Problem(item.file, item.line, key, f"cannot be scheduled: {_reason(exc)}"))
    for report in reports:
        if not report.definition.schedule:
            continue
        try:
            report_triggers[report.definition.name] = report_trigger(report.definition, default_timezone)
        except Exception as exc:  # noqa: BLE001 - likewise for a report
            problems.append(Problem(report.file, report.line, "schedule", f"cannot be scheduled: {_reason(exc)}"))
    return triggers, report_triggers, problems


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, CronError) else short_error(exc)


def watch_snapshot(config: Config) -> tuple[tuple[str, int, int], ...]:
    """What a reload depends on: the config file, every rule file and every report
    definition (name, mtime, size)."""
    files, _ = rule_files(config.rule_paths)
    files += yaml_files(config.report_paths, "reports")[0]
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
