"""Evaluate a rule at a time: findings from its kind, then names and links.

Shared by ``test-rule``, ``backtest``, ``test-rules``, ``demo`` and the daemon.
A rule that fails (bad SQL, a timeout, the database gone) yields an Evaluation
with ``error`` set; it never stops the other rules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from audit_watch.config.model import LinksConfig
from audit_watch.rules.alert import Alert, Finding
from audit_watch.rules.kinds import KINDS, EvalContext
from audit_watch.rules.links import list_link, row_link
from audit_watch.rules.model import RuleBase
from audit_watch.store.source import AuditSource

log = logging.getLogger(__name__)

# Which table names an id in a group or a row (for "Support Triage" instead of a UUID).
NAME_TABLES = {
    "agent_id": "agents",
    "user_id": "users",
    "team_id": "teams",
    "cron_id": "crons",
    "metadata.cron_id": "crons",
    "metadata.target_user_id": "users",
}


@dataclass
class Evaluation:
    rule: RuleBase
    now: datetime
    alerts: list[Alert] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def evaluate_rule(
    rule: RuleBase, src: AuditSource, now: datetime, links: LinksConfig | None = None
) -> Evaluation:
    """Evaluate ``rule`` at ``now``; errors are caught and reported, never raised."""
    links = links or LinksConfig()
    started = time.perf_counter()
    try:
        alerts = _evaluate(rule, src, now, links)
    except Exception as exc:  # noqa: BLE001 - one rule's failure must not stop the others
        # DEBUG: the caller says it where it fits (the daemon once per streak, commands on stderr).
        log.debug("rule %s failed at %s: %s", rule.name, now.isoformat(), _short(exc))
        return Evaluation(rule, now, error=_short(exc), seconds=time.perf_counter() - started)
    return Evaluation(rule, now, alerts, seconds=time.perf_counter() - started)


def evaluate_rules(
    rules: Iterable[RuleBase], src: AuditSource, now: datetime, links: LinksConfig | None = None
) -> list[Evaluation]:
    return [evaluate_rule(rule, src, now, links) for rule in rules]


def _evaluate(rule: RuleBase, src: AuditSource, now: datetime, links: LinksConfig) -> list[Alert]:
    kind = KINDS[rule.kind]
    with src.connect() as conn:
        ctx = EvalContext(src, conn, now)
        findings = kind.find(rule, ctx)
        kind.sample(rule, ctx, findings)
        names = resolve_names(src, conn, findings)
    window_start, window_end = kind.window_range(rule, now)
    list_start, list_end = kind.list_range(rule, now)
    alerts = []
    for finding in findings:
        tab = finding.row_source or rule.source
        group_names = {
            key: names[(NAME_TABLES[key], str(value))]
            for key, value in finding.group.items()
            if key in NAME_TABLES and (NAME_TABLES[key], str(value)) in names
        }
        details = dict(finding.details)
        if "agent_id" in details and ("agents", str(details["agent_id"])) in names:
            details["agent_name"] = names[("agents", str(details["agent_id"]))]
        row = details.get("row")
        if isinstance(row, dict):
            details["row_names"] = {
                key: names[(NAME_TABLES[key], str(row[key]))]
                for key in row
                if key in NAME_TABLES and (NAME_TABLES[key], str(row[key])) in names
            }
        filters = kind.link_filters(rule, finding)
        alerts.append(
            Alert(
                rule=rule.name,
                kind=rule.kind,
                severity=rule.severity,
                source=rule.source,
                description=rule.description,
                group=finding.group,
                group_names=group_names,
                value=finding.value,
                threshold=finding.threshold,
                baseline=finding.baseline,
                window_start=window_start,
                window_end=window_end,
                row_ids=finding.row_ids[: links.max_rows],
                links=[row_link(links, tab, rid) for rid in finding.row_ids[: links.max_rows]],
                list_link=list_link(links, tab, filters, list_start, list_end),
                details=details,
                labels=dict(rule.labels),
            )
        )
    return alerts


def resolve_names(src: AuditSource, conn: Connection, findings: list[Finding]) -> dict[tuple[str, str], str]:
    """{(table, id): name} for every id the findings mention, one query per table."""
    wanted: dict[str, set[str]] = {}

    def want(key: str, value: Any) -> None:
        if key in NAME_TABLES and value is not None:
            wanted.setdefault(NAME_TABLES[key], set()).add(str(value))

    for finding in findings:
        for key, value in finding.group.items():
            want(key, value)
        want("agent_id", finding.details.get("agent_id"))
        row = finding.details.get("row")
        if isinstance(row, dict):
            for key, value in row.items():
                want(key, value)
    names: dict[tuple[str, str], str] = {}
    for table_name, ids in wanted.items():
        table = src.table(table_name)
        for chunk in _chunks(sorted(ids), 500):
            for row in conn.execute(select(table.c.id, table.c.name).where(table.c.id.in_(chunk))):
                names[(table_name, str(row.id))] = row.name
    return names


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:500]
