"""``any``: every matching row in the window is its own alert (capped at ``max_alerts``)."""

from __future__ import annotations

import json

from sqlalchemy import select

from audit_watch.alert import Finding
from audit_watch.rule_kinds.base import EvalContext, RuleKind, group_columns, group_of
from audit_watch.rule_model import AnyRule


# What an alert shows of the row. Prompts and responses are never here: they only
# reach a message when the rule sets include_content (the renderer's decision).
ROW_FIELDS = {
    "jobs": ("status", "agent_id", "user_id", "team_id", "job_type", "model", "provider",
             "input_tokens", "output_tokens", "error"),
    "threads": ("source", "type", "agent_id", "user_id", "team_id", "name", "message_count", "snippet"),
    "events": ("event_type", "severity", "description", "agent_id", "user_id", "team_id", "metadata"),
}
CONTENT_FIELDS = {"jobs": ("prompt", "response")}


class AnyRow(RuleKind):
    name = "any"

    def find(self, rule: AnyRule, ctx: EvalContext) -> list[Finding]:
        src = ctx.src
        table = src.table(rule.source)
        time = src.time_column(rule.source)
        groups = group_columns(src, rule.source, rule.group_by)
        fields = ROW_FIELDS[rule.source] + (CONTENT_FIELDS.get(rule.source, ()) if rule.include_content else ())
        row_columns = [table.c[name].label(f"row_{name}") for name in fields]
        stmt = (
            select(table.c.id, src.time_value(time).label("at"), *groups, *row_columns)
            .where(src.conditions(rule.source, rule.where), src.window(rule.source, ctx.window_start(rule), ctx.now))
            .order_by(src.time_value(time), table.c.id)
            .limit(rule.max_alerts + 1)
        )
        rows = ctx.conn.execute(stmt).all()
        findings = []
        for row in rows[: rule.max_alerts]:
            at = src.read_time(row.at)
            findings.append(
                Finding(
                    group={**group_of(rule.group_by, row), "id": row.id},
                    value=1,
                    threshold=None,
                    details={
                        "at": at.isoformat() if at else None,
                        "row": {name: _plain(row._mapping[f"row_{name}"]) for name in fields},
                    },
                    row_ids=[str(row.id)],
                )
            )
        if len(rows) > rule.max_alerts and findings:
            findings[-1].details["truncated"] = True
        return findings

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
