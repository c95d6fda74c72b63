"""What every report builder receives and returns."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from audit_watch.config.model import LinksConfig
from audit_watch.reports.model import ReportDefinitionBase
from audit_watch.reports.periods import Period
from audit_watch.reports.queries import Span
from audit_watch.reports.scope import ResolvedScope
from audit_watch.rules.links import list_link, row_link
from audit_watch.store.source import AuditSource


@dataclass(frozen=True)
class AlertActivity:
    """An alert of audit-watch's own state that fired or resolved in the period.

    The digest does not read the state database itself: the caller passes these
    (an empty list when no state is available).
    """

    rule: str
    group: str                       # the group's label, e.g. "Support Triage"
    severity: str
    fired_at: datetime
    resolved_at: datetime | None = None
    value: float | None = None
    link: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AlertActivity:
        """From a dict with these keys (e.g. a row of the state's alert history)."""
        return cls(rule=str(data["rule"]), group=str(data.get("group", "")), severity=str(data["severity"]),
                   fired_at=data["fired_at"], resolved_at=data.get("resolved_at"), value=data.get("value"),
                   link=data.get("link"))


@dataclass
class ReportInputs:
    src: AuditSource
    conn: Connection
    period: Period
    scope: ResolvedScope
    definition: Any                  # the report's definition model (its options)
    links: LinksConfig
    now: datetime
    alerts: Sequence[AlertActivity] = ()

    @property
    def span(self) -> Span:
        return self.period.start, self.period.end

    def row_link(self, tab: str, row_id: str) -> str:
        return row_link(self.links, tab, row_id)

    def list_link(self, tab: str, filters: Iterable[tuple[str, Any]] = (), span: Span | None = None,
                  scoped: bool = True) -> str:
        """The Audit Logs list filtered by ``filters`` and (unless ``scoped`` is off) the
        scope, over ``span`` (default: the period)."""
        lo, hi = span or self.span
        filters = list(filters)
        extra: list[tuple[str, Any]] = []
        if not scoped:
            pass
        elif self.scope.kind == "user":
            extra.append(("user_id", self.scope.user_ids[0]))
        elif self.scope.kind == "team":
            extra.append(("team_id", self.scope.team_id))
        if scoped and self.scope.agent_ids is not None and len(self.scope.agent_ids) == 1:
            extra.append(("agent_id", self.scope.agent_ids[0]))
        keys = {k for k, _ in filters}
        return list_link(self.links, tab, [*filters, *[(k, v) for k, v in extra if k not in keys]], lo, hi)


@dataclass(frozen=True)
class ChartSpec:
    """A chart a template shows; ``draw`` makes the PNG (matplotlib is imported only then)."""

    name: str
    title: str
    alt: str
    draw: Callable[[], bytes]


@dataclass
class ReportData:
    title: str
    context: dict[str, Any]
    charts: list[ChartSpec] = field(default_factory=list)
    evidence_csv: str | None = None          # compliance: every row the summary rests on


def definition_of(inputs: ReportInputs, model: type[ReportDefinitionBase]) -> Any:
    """The definition as its report's model (a typed view for the builder)."""
    if not isinstance(inputs.definition, model):
        raise TypeError(f"expected a {model.__name__}, got {type(inputs.definition).__name__}")
    return inputs.definition
