"""Who or what a report covers: the whole workspace, one user, one team, some agents.

Two readings of a team, chosen by the report:

- operational reports (digest, token usage, triage) follow the work: rows whose
  ``team_id`` is the team (its agents' jobs and threads, its events);
- the compliance summary follows the people: rows whose ``user_id`` is one of the
  team's members, because compliance asks what those people did. Rows no person
  started (cron and webhook work) are nobody's actions and are left out.

``agents`` narrows either reading to the named agents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import and_, false, func, or_, select, true
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from audit_watch.core.yaml_source import InputError, Problem
from audit_watch.store.source import AuditSource


@dataclass(frozen=True)
class Scope:
    """The scope as the user wrote it: an e-mail or id, a team name or id, agent names or ids."""

    user: str | None = None
    team: str | None = None
    agents: tuple[str, ...] = ()


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    email: str
    role: str


@dataclass(frozen=True)
class ResolvedScope:
    kind: Literal["workspace", "user", "team"]
    label: str                                  # "Daniel Reyes (daniel.reyes@...)", "team Sales"
    people: tuple[Person, ...] = ()             # the user, or the team's members
    team_id: str | None = None
    team_name: str | None = None
    agent_ids: tuple[str, ...] | None = None    # None: every agent
    agent_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def user_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.people)

    def rows(self, src: AuditSource, table: str, people: bool = False) -> ColumnElement[bool]:
        """The rows of ``jobs``, ``threads`` or ``events`` in scope (see the module doc)."""
        t = src.table(table)
        parts: list[ColumnElement[bool]] = []
        if self.kind == "user" or (self.kind == "team" and people):
            parts.append(t.c.user_id.in_(self.user_ids) if self.user_ids else false())
        elif self.kind == "team":
            parts.append(t.c.team_id == self.team_id)
        if self.agent_ids is not None:
            parts.append(t.c.agent_id.in_(self.agent_ids))
        return and_(*parts) if parts else true()

    def crons(self, src: AuditSource) -> ColumnElement[bool]:
        """Crons in scope: those of the team's agents, or of the named agents."""
        crons, agents = src.table("crons"), src.table("agents")
        parts: list[ColumnElement[bool]] = []
        if self.team_id is not None:
            parts.append(crons.c.agent_id.in_(select(agents.c.id).where(agents.c.team_id == self.team_id)))
        if self.agent_ids is not None:
            parts.append(crons.c.agent_id.in_(self.agent_ids))
        return and_(*parts) if parts else true()

    def to_context(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "label": self.label,
            "team": self.team_name,
            "agents": list(self.agent_names),
            "people": [{"id": p.id, "name": p.name, "email": p.email, "role": p.role} for p in self.people],
        }


def _problem(option: str, message: str) -> InputError:
    return InputError([Problem(option, 0, "", message)])


def resolve_scope(conn: Connection, src: AuditSource, scope: Scope) -> ResolvedScope:
    """Look the names up; an unknown or ambiguous name is an InputError naming the option."""
    if scope.user and scope.team:
        raise _problem("--user", "give --user or --team, not both")
    agent_ids, agent_names = _agents(conn, src, scope.agents)
    suffix = f", agents {', '.join(agent_names)}" if agent_names else ""
    if scope.user:
        person = _user(conn, src, scope.user)
        return ResolvedScope("user", f"{person.name} ({person.email}){suffix}", (person,),
                             agent_ids=agent_ids, agent_names=agent_names)
    if scope.team:
        teams = src.table("teams")
        rows = conn.execute(
            select(teams.c.id, teams.c.name).where(
                or_(teams.c.id == scope.team, func.lower(teams.c.name) == scope.team.lower())
            )
        ).all()
        if not rows:
            raise _problem("--team", f"no team named {scope.team!r}")
        if len(rows) > 1:
            raise _problem("--team", f"{len(rows)} teams are named {scope.team!r}: give the team id")
        team_id, team_name = rows[0]
        users, memberships = src.table("users"), src.table("memberships")
        members = conn.execute(
            select(users.c.id, users.c.name, users.c.email, users.c.role)
            .where(users.c.id.in_(select(memberships.c.user_id).where(memberships.c.team_id == team_id)))
            .order_by(users.c.name, users.c.id)
        ).all()
        return ResolvedScope("team", f"team {team_name}{suffix}", tuple(Person(*m) for m in members),
                             team_id=team_id, team_name=team_name, agent_ids=agent_ids, agent_names=agent_names)
    label = f"agents {', '.join(agent_names)}" if agent_names else "the whole workspace"
    return ResolvedScope("workspace", label, agent_ids=agent_ids, agent_names=agent_names)


def _user(conn: Connection, src: AuditSource, key: str) -> Person:
    users = src.table("users")
    rows = conn.execute(
        select(users.c.id, users.c.name, users.c.email, users.c.role).where(
            or_(users.c.id == key, func.lower(users.c.email) == key.lower())
        )
    ).all()
    if not rows:
        raise _problem("--user", f"no user with the e-mail or id {key!r}")
    if len(rows) > 1:
        raise _problem("--user", f"{len(rows)} users match {key!r}: give the user id")
    return Person(*rows[0])


def _agents(conn: Connection, src: AuditSource, keys: tuple[str, ...]) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    if not keys:
        return None, ()
    agents = src.table("agents")
    ids: list[str] = []
    names: list[str] = []
    for key in keys:
        rows = conn.execute(
            select(agents.c.id, agents.c.name).where(
                or_(agents.c.id == key, func.lower(agents.c.name) == key.lower())
            )
        ).all()
        if not rows:
            raise _problem("agents", f"no agent named {key!r}")
        for agent_id, name in rows:
            if agent_id not in ids:
                ids.append(agent_id)
                names.append(name)
    return tuple(ids), tuple(names)
