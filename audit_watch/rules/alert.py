"""What an evaluation produces: findings from a rule kind, alerts for people.

A *finding* is what a rule kind computes in SQL (a group, a value, what it was
compared to). An *alert* adds what people need: names for the ids, up to 20 row
ids with links, the filtered-list link, and a stable fingerprint for the state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from audit_watch.core.labels import group_label, group_noun, groups_summary
from audit_watch.core.numbers import number


@dataclass
class Finding:
    group: dict[str, Any]
    value: float
    threshold: str | None = None          # what the value was compared with, e.g. ">= 10"
    baseline: float | None = None         # the reference the threshold derives from
    details: dict[str, Any] = field(default_factory=dict)
    row_ids: list[str] = field(default_factory=list)
    # Where the sample rows live when not the rule's own source (cron_missed: events).
    row_source: str | None = None


def fingerprint(rule: str, group: dict[str, Any]) -> str:
    """Stable identity of (rule, group) across evaluations and restarts."""
    payload = json.dumps([rule, sorted((k, str(v)) for k, v in group.items())], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class Alert:
    rule: str
    kind: str
    severity: str
    source: str
    description: str
    group: dict[str, Any]
    group_names: dict[str, str]
    value: float
    threshold: str | None
    baseline: float | None
    window_start: datetime
    window_end: datetime
    row_ids: list[str]
    links: list[str]
    list_link: str
    details: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # The rule's firing groups at the evaluation in all, and how many of them are
    # tracked as alerts (the most severe ``max_groups``). None in older records.
    firing_groups: int | None = None
    tracked_groups: int | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rule, self.group)

    @property
    def group_label(self) -> str:
        """``Support Triage`` or ``agent Support Triage, user Ana`` for people."""
        return group_label(self.group, self.group_names)

    @property
    def groups_noun(self) -> str:
        """What this rule's groups are: ``agents``, ``rows`` (``any``), ``groups``."""
        if self.kind == "any":
            return "rows"
        return group_noun(list(self.group))

    @property
    def left_out(self) -> int:
        """Firing groups of the rule not tracked as alerts at the evaluation."""
        if self.firing_groups is None or self.tracked_groups is None:
            return 0
        return max(self.firing_groups - self.tracked_groups, 0)

    @property
    def groups_summary(self) -> str | None:
        """``3,000 agents firing; the 1,000 most severe are tracked``, or None when
        every firing group is tracked."""
        if not self.left_out or self.firing_groups is None or self.tracked_groups is None:
            return None
        return groups_summary(self.firing_groups, self.tracked_groups, self.groups_noun)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["fingerprint"] = self.fingerprint
        data["window_start"] = self.window_start.isoformat()
        data["window_end"] = self.window_end.isoformat()
        data["value"] = number(self.value)
        return json.loads(json.dumps(data, default=str))
