"""Report definitions: YAML files in a ``reports/`` folder beside the rules.

A file holds one report or a list under ``reports:``. Every model forbids
unknown keys (a typo is an error with its line). ``report:`` names the built-in
report it configures; the other keys are its schedule, scope, period, channels,
template and the options of that report::

    name: support-weekly
    report: weekly-digest
    schedule: "0 8 * * 1"          # cron, in `timezone` (default: the config's)
    timezone: Europe/Berlin
    scope: {team: Customer Support}
    period: last_week              # 7d, 1d, yesterday, last_week, last_month, ...
    channels: [support-leads]
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from audit_watch.core.durations import Duration
from audit_watch.core.validators import CronExpression, TimeZoneName, check_channel_names
from audit_watch.reports.periods import check_period_spec
from audit_watch.reports.scope import Scope

REPORT_NAMES = ("weekly-digest", "compliance", "token-usage", "triage")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ScopeDefinition(_Strict):
    user: str | None = None          # e-mail or id
    team: str | None = None          # name or id
    agents: tuple[str, ...] = ()     # names or ids

    @model_validator(mode="after")
    def _one_subject(self) -> ScopeDefinition:
        if self.user and self.team:
            raise ValueError("give user or team, not both")
        return self

    def to_scope(self) -> Scope:
        return Scope(self.user, self.team, self.agents)


class ReportDefinitionBase(_Strict):
    name: str
    description: str = ""
    report: str
    schedule: CronExpression | None = None   # none: only on demand (`audit-watch report NAME`)
    timezone: TimeZoneName | None = None     # none: the config's timezone
    scope: ScopeDefinition = Field(default_factory=ScopeDefinition)
    period: str = "7d"
    channels: tuple[str, ...] = ()
    template: str | None = None      # base name under templates/reports/ (default: the report's)
    enabled: bool = True
    labels: dict[str, str] = Field(default_factory=dict)
    # A run missed while no replica was up is still sent when its tick is at most this
    # old (a weekly digest two hours late is welcome; a day late, it is noise). At most
    # 1d: the run ledger (kept at least a day) must still hold the claim that says
    # whether it went out.
    catch_up: Duration = timedelta(hours=2)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use letters, digits, '-', '_' and '.' (it names files and the command argument)")
        return value

    @field_validator("period")
    @classmethod
    def _check_period(cls, value: str) -> str:
        return check_period_spec(value)

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError("a template is a base name such as weekly_digest (no folders)")
        return value

    @field_validator("channels")
    @classmethod
    def _check_channels(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return check_channel_names(value, info, "channels")

    @field_validator("catch_up")
    @classmethod
    def _catch_up_within_a_day(cls, value: timedelta) -> timedelta:
        if value > timedelta(days=1):
            raise ValueError("at most 1d (a report more than a day late is noise)")
        return value

    @model_validator(mode="after")
    def _scheduled_needs_channels(self) -> ReportDefinitionBase:
        if self.schedule and not self.channels:
            raise PydanticCustomError("channels", "a scheduled report needs channels to deliver to",
                                      {"subpath": ["channels"]})
        return self


class WeeklyDigestDefinition(ReportDefinitionBase):
    report: Literal["weekly-digest"]
    period: str = "7d"
    top: int = Field(default=5, ge=1, le=50)         # failed agents and token consumers listed
    charts: bool = True
    max_sensitive: int = Field(default=25, ge=0, le=500)


def _working_hours(value: str) -> tuple[time, time]:
    match = _HOURS.match(value)
    if not match:
        raise ValueError("write working hours as HH:MM-HH:MM, e.g. 07:00-20:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"{value!r} is not a time range of one day")
    first, last = time(h1, m1), time(0) if h2 == 24 else time(h2, m2)
    if (h2, m2) <= (h1, m1):
        raise ValueError("working hours must end after they start on the same day")
    return first, last


class ComplianceDefinition(ReportDefinitionBase):
    report: Literal["compliance"]
    period: str = "30d"
    working_hours: str = "07:00-20:00"               # in the report's time zone
    working_days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri")
    history: int = Field(default=4, ge=1, le=12)     # earlier periods a spike is measured against
    spike_factor: float = Field(default=3.0, ge=1.0)
    new_ip_lookback: Duration = timedelta(days=90)
    max_listed: int = Field(default=25, ge=1, le=1000)   # rows listed in the prose (all are in the CSV)

    @field_validator("working_hours")
    @classmethod
    def _check_hours(cls, value: str) -> str:
        _working_hours(value)
        return value

    @field_validator("working_days")
    @classmethod
    def _check_days(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, day in enumerate(value):
            if day.lower() not in WEEKDAYS:
                raise PydanticCustomError("working_days", f"unknown day {day!r} (use {', '.join(WEEKDAYS)})",
                                          {"subpath": [index]})
        return tuple(d.lower() for d in value)

    @model_validator(mode="after")
    def _scheduled_needs_subject(self) -> ComplianceDefinition:
        # On demand the command line names the subject (--user/--team); a schedule cannot.
        if self.schedule and not (self.scope.user or self.scope.team):
            raise PydanticCustomError("scope", "a scheduled compliance report needs scope.user or scope.team",
                                      {"subpath": ["scope"]})
        return self

    @property
    def hours(self) -> tuple[time, time]:
        return _working_hours(self.working_hours)

    @property
    def weekdays(self) -> frozenset[int]:
        return frozenset(WEEKDAYS.index(d) for d in self.working_days)


class TokenUsageDefinition(ReportDefinitionBase):
    report: Literal["token-usage"]
    period: str = "7d"
    budgets: dict[str, int] = Field(default_factory=dict)   # agent name or id -> tokens per day
    history: int = Field(default=4, ge=1, le=12)
    growth_factor: float = Field(default=2.0, gt=1.0)
    min_jobs: int = Field(default=20, ge=1)
    failed_share: float = Field(default=0.2, gt=0, le=1)
    top: int = Field(default=10, ge=1, le=100)
    charts: bool = True

    @field_validator("budgets")
    @classmethod
    def _positive_budgets(cls, value: dict[str, int]) -> dict[str, int]:
        for agent, budget in value.items():
            if budget <= 0:
                raise PydanticCustomError("budgets", "a budget is a positive number of tokens per day",
                                          {"subpath": [agent]})
        return value


class TriageDefinition(ReportDefinitionBase):
    report: Literal["triage"]
    period: str = "1d"
    factor: float = Field(default=3.0, ge=1.0)       # deviation from the usual that is worth a look
    min_count: int = Field(default=5, ge=1)          # fewer rows than this are never a spike
    new_ip_lookback: Duration = timedelta(days=30)
    top: int = Field(default=10, ge=1, le=50)
    growth_factor: float = Field(default=2.0, gt=1.0)


DEFINITION_MODELS: dict[str, type[ReportDefinitionBase]] = {
    "weekly-digest": WeeklyDigestDefinition,
    "compliance": ComplianceDefinition,
    "token-usage": TokenUsageDefinition,
    "triage": TriageDefinition,
}


def default_definition(report: str) -> ReportDefinitionBase:
    """The built-in report with every option at its default (``audit-watch report weekly-digest``)."""
    return DEFINITION_MODELS[report].model_validate({"name": report, "report": report})
