"""Silences: "say nothing about this rule (and these groups) for a while".

Silenced alerts are still evaluated and their states recorded; only their
notifications are held back. A silence ends by itself at ``ends_at``, or early
with :func:`expire`. Functions for ``silence add/list/expire``; the CLI parses
the arguments (``--match key=value`` -> ``{"key": "value"}``).

A matcher ``key=value`` matches an alert whose group has ``key`` equal to
``value``, or whose group shows the name ``value`` for ``key`` (``agent_id=Support
Triage`` works as well as the id), or whose labels have ``key: value``. The rule is
a name or an fnmatch pattern (``failed-*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from audit_watch.alerting.state import StateStore
from audit_watch.alerting.state import silences as silence_table
from audit_watch.rules.alert import Alert


class SilenceError(ValueError):
    """Bad input for a silence (the CLI turns it into exit code 2)."""


@dataclass(frozen=True)
class Silence:
    id: int
    rule: str
    matchers: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    comment: str
    created_by: str | None
    created_at: datetime
    expired_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.expired_at is None and self.starts_at <= now < self.ends_at

    def matches(self, alert: Alert) -> bool:
        if not fnmatchcase(alert.rule, self.rule):
            return False
        return all(_matches_key(alert, key, value) for key, value in self.matchers.items())

    @property
    def ended_at(self) -> datetime:
        return self.expired_at if self.expired_at is not None else self.ends_at


def _matches_key(alert: Alert, key: str, value: str) -> bool:
    if key in alert.group and str(alert.group[key]) == value:
        return True
    if alert.group_names.get(key) == value:
        return True
    return alert.labels.get(key) == value


def parse_matchers(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["agent_id=a1", "model=gpt"]`` -> ``{"agent_id": "a1", "model": "gpt"}``."""
    matchers: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SilenceError(f"--match {item!r}: expected key=value")
        matchers[key.strip()] = value.strip()
    return matchers


def add(
    state: StateStore,
    rule: str,
    duration: timedelta,
    comment: str,
    now: datetime,
    matchers: dict[str, str] | None = None,
    created_by: str | None = None,
    starts_at: datetime | None = None,
) -> Silence:
    """Silence ``rule`` (name or pattern) for ``duration`` from ``starts_at`` (default now)."""
    if not rule.strip():
        raise SilenceError("a silence needs a rule name (or a pattern such as 'failed-*')")
    if duration <= timedelta(0):
        raise SilenceError("a silence needs a positive duration, e.g. --for 2h")
    if not comment.strip():
        raise SilenceError("say why with --comment (whoever sees the silence later will want to know)")
    start = starts_at or now
    row = {
        "rule": rule.strip(),
        "matchers": dict(matchers or {}),
        "starts_at": start,
        "ends_at": start + duration,
        "comment": comment.strip(),
        "created_by": created_by,
        "created_at": now,
        "expired_at": None,
    }
    with state.write() as conn:
        new_id = conn.execute(insert(silence_table).values(**row).returning(silence_table.c.id)).scalar_one()
    return Silence(id=new_id, rule=rule.strip(), matchers=dict(matchers or {}), starts_at=start,
                   ends_at=start + duration, comment=comment.strip(), created_by=created_by, created_at=now,
                   expired_at=None)


def list_silences(state: StateStore, now: datetime, include_ended: bool = False) -> list[Silence]:
    """Active and future silences (and ended ones when asked), soonest end first."""
    with state.read() as conn:
        stmt = select(silence_table).order_by(silence_table.c.ends_at, silence_table.c.id)
        if not include_ended:
            stmt = stmt.where(silence_table.c.expired_at.is_(None), silence_table.c.ends_at > now)
        return [_from_row(row) for row in conn.execute(stmt)]


def expire(state: StateStore, silence_id: int, now: datetime) -> Silence:
    """End a silence now. Raises SilenceError for an unknown or already ended id."""
    with state.write() as conn:
        row = conn.execute(select(silence_table).where(silence_table.c.id == silence_id)).first()
        if row is None:
            raise SilenceError(f"no silence with id {silence_id}")
        found = _from_row(row)
        if found.expired_at is not None or found.ends_at <= now:
            raise SilenceError(f"silence {silence_id} already ended at {found.ended_at.isoformat()}")
        conn.execute(update(silence_table).where(silence_table.c.id == silence_id).values(expired_at=now))
    return Silence(**{**found.__dict__, "expired_at": now})


def active_silences(conn: Connection, now: datetime) -> list[Silence]:
    """Silences in force at ``now`` (used inside the pipeline's transaction)."""
    stmt = select(silence_table).where(
        silence_table.c.starts_at <= now,
        silence_table.c.ends_at > now,
        silence_table.c.expired_at.is_(None),
    )
    return [_from_row(row) for row in conn.execute(stmt)]


def silence_for(alert: Alert, active: list[Silence]) -> Silence | None:
    for item in active:
        if item.matches(alert):
            return item
    return None


def _from_row(row: Any) -> Silence:
    m = row._mapping
    return Silence(
        id=m["id"], rule=m["rule"], matchers=dict(m["matchers"] or {}), starts_at=m["starts_at"],
        ends_at=m["ends_at"], comment=m["comment"], created_by=m["created_by"],
        created_at=m["created_at"], expired_at=m["expired_at"],
    )
