"""``any``: every matching row in the window is its own alert (capped at ``max_alerts``)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from sqlalchemy import Select, select

from audit_watch.rules.alert import Finding
from audit_watch.rules.kinds.base import EvalContext, Moments, RuleKind, group_columns, group_of
from audit_watch.rules.model import AnyRule
from audit_watch.store.source import AuditSource
from audit_watch.store.where import where_clause

# What an alert shows of the row. Prompts and responses are never here: they only
# reach a message when the rule sets include_content (the renderer's decision).
ROW_FIELDS = {
    "jobs": ("status", "agent_id", "user_id", "team_id", "job_type", "model", "provider",
             "input_tokens", "output_tokens", "error"),
    "threads": ("source", "type", "agent_id", "user_id", "team_id", "name", "message_count", "snippet"),
    "events": ("event_type", "severity", "description", "agent_id", "user_id", "team_id", "metadata"),
}
CONTENT_FIELDS = {"jobs": ("prompt", "response")}


def row_fields(rule: AnyRule) -> tuple[str, ...]:
    """The columns of the row an alert shows."""
    return ROW_FIELDS[rule.source] + (CONTENT_FIELDS.get(rule.source, ()) if rule.include_content else ())


class AnyRow(RuleKind):
    name = "any"

    def find(self, rule: AnyRule, ctx: EvalContext) -> list[Finding]:
        src = ctx.src
        stmt = ctx.prepared(rule, (self.name, "find"), lambda moments: self.statement(rule, src, moments))
        labelled_fields = [(name, f"row_{name}") for name in row_fields(rule)]
        rows = ctx.execute(stmt).all()
        findings = []
        for row in rows[: rule.max_alerts]:
            at = src.read_time(row.at)
            mapping = row._mapping  # a new view at every access: once per row
            findings.append(
                Finding(
                    group={**group_of(rule.group_by, row), "id": row.id},
                    value=1,
                    threshold=None,
                    details={
                        "at": at.isoformat() if at else None,
                        "row": {name: _plain(mapping[label]) for name, label in labelled_fields},
                    },
                    row_ids=[str(row.id)],
                )
            )
        if len(rows) > rule.max_alerts and findings:
            findings[-1].details["truncated"] = True
        return findings

    def link_filters(self, rule: AnyRule, finding: Finding) -> list[tuple[str, Any]]:
        # The row's id is in its group (one alert per row) and has its own link.
        group = {key: value for key, value in finding.group.items() if key != "id"}
        return super().link_filters(rule, replace(finding, group=group))

    def statement(self, rule: AnyRule, src: AuditSource, moments: Moments) -> Select[Any]:
        table = src.table(rule.source)
        time = src.time_column(rule.source)
        groups = group_columns(src, rule.source, rule.group_by)
        row_columns = [table.c[name].label(f"row_{name}") for name in row_fields(rule)]
        return (
            select(table.c.id, src.time_value(time).label("at"), *groups, *row_columns)
            .where(
                where_clause(src, rule.source, rule.where),
                src.window(rule.source, moments.ago(rule.window), moments.now),
            )
            .order_by(src.time_value(time), table.c.id)
            .limit(rule.max_alerts + 1)
        )

    def sample(self, rule: AnyRule, ctx: EvalContext, findings: list[Finding]) -> None:
        """Each finding is its own row: nothing more to fetch."""


def _plain(value: object) -> object:
    """JSON metadata arrives as a dict on PostgreSQL and as text on SQLite."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
