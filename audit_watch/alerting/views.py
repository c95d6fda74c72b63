"""What ``audit-watch alerts [--outbox]`` shows: the alert states and the outbox, read-only."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from audit_watch.alerting.outbox import OutboxEntry, counts, list_entries
from audit_watch.alerting.state import StateStore, all_states


@dataclass(frozen=True)
class AlertRow:
    """One line of ``audit-watch alerts``."""

    rule: str
    group: str
    state: str
    severity: str
    value: Any
    started_at: datetime
    fired_at: datetime | None
    resolved_at: datetime | None
    last_evaluated_at: datetime
    last_notified_at: datetime | None
    silenced_by: int | None
    fingerprint: str
    recent_values: list[list[Any]]
    list_link: str


def alerts_table(state: StateStore, include_resolved: bool = True) -> list[AlertRow]:
    """Current alert states, firing first, then pending, then resolved."""
    order = {"firing": 0, "pending": 1, "resolved": 2}
    with state.read() as conn:
        items = all_states(conn, include_resolved)
    rows = [
        AlertRow(
            rule=s.rule, group=s.group_label, state=s.state, severity=str(s.alert.get("severity", "")),
            value=s.alert.get("value"), started_at=s.started_at, fired_at=s.fired_at, resolved_at=s.resolved_at,
            last_evaluated_at=s.last_evaluated_at, last_notified_at=s.last_notified_at,
            silenced_by=s.silenced_by, fingerprint=s.fingerprint, recent_values=s.recent_values,
            list_link=str(s.alert.get("list_link", "")),
        )
        for s in items
    ]
    return sorted(rows, key=lambda r: (order.get(r.state, 3), r.rule, r.group))


def outbox_table(state: StateStore, statuses: Iterable[str] | None = None, limit: int = 200) -> list[OutboxEntry]:
    """``alerts --outbox``: queued, retrying, sending and dead notifications (newest first)."""
    return list_entries(state, statuses, limit)


def outbox_summary(state: StateStore) -> dict[str, int]:
    """How many notifications are in each status."""
    return counts(state)
