"""One pass of the pipeline: evaluate rules at ``now``, update state, deliver.

``run --once``, the demo and every daemon tick go through here, so that they
all send exactly what the daemon would.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from audit_watch.config import Config
from audit_watch.evaluate import Evaluation, evaluate_rules
from audit_watch.pipeline import DeliverySummary, ProcessSummary, deliver_due, process
from audit_watch.rule_loader import RuleSet, load_rules
from audit_watch.rule_model import RuleBase
from audit_watch.source import AuditSource
from audit_watch.state import StateStore

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
