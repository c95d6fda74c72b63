"""Typed models of the rule format (README.md, "Rules": the keys, kinds and their semantics).

Every model forbids unknown keys, so a typo (``notfiy:``) is an error. Cross
references that need the rest of the config (channel names) come in through the
pydantic validation context: ``{"channels": {...}}``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from audit_watch.core.durations import Duration
from audit_watch.core.numbers import format_number
from audit_watch.core.validators import CronExpression, TimeZoneName, check_channel_names
from audit_watch.store.columns import column_problem
from audit_watch.store.where import Condition, parse_where

Source = Literal["jobs", "threads", "events"]
Severity = Literal["info", "warning", "critical"]
CompareOp = Literal[">", ">=", "<", "<=", "=="]

class Comparison(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    op: CompareOp
    value: float

    def holds(self, value: float) -> bool:
        return {
            ">": value > self.value,
            ">=": value >= self.value,
            "<": value < self.value,
            "<=": value <= self.value,
            "==": value == self.value,
        }[self.op]

    def __str__(self) -> str:
        return f"{self.op} {format_number(self.value)}"


class RuleBase(BaseModel):
    """Keys every kind shares. ``where`` arrives raw and leaves as Conditions."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(min_length=1)
    description: str = ""
    kind: str
    source: Source = "jobs"
    where: tuple[Condition, ...] = ()
    group_by: tuple[str, ...] = ()
    window: Duration = timedelta(minutes=15)
    every: Duration | None = None
    schedule: CronExpression | None = None
    timezone: TimeZoneName | None = None
    for_: Duration = Field(default=timedelta(0), alias="for")
    keep_firing_for: Duration = timedelta(0)
    severity: Severity = "warning"
    notify: tuple[str, ...] = ()
    repeat: Duration | None = timedelta(hours=4)
    notify_resolved: bool = True
    template: str | None = None
    include_content: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _not_a_report_job(cls, value: str) -> str:
        # The run ledger names a scheduled report's runs "report:NAME".
        if value.startswith("report:"):
            raise ValueError("a rule name cannot start with 'report:'")
        return value

    @field_validator("where", mode="before")
    @classmethod
    def _parse_where(cls, raw: Any, info: ValidationInfo) -> tuple[Condition, ...]:
        return parse_where(raw, cls.filter_table(info.data.get("source", "jobs")))

    @classmethod
    def filter_table(cls, source: str) -> str:
        """The table ``where`` filters (cron_missed filters crons)."""
        return source

    @field_validator("group_by", mode="before")
    @classmethod
    def _check_group_by(cls, raw: Any, info: ValidationInfo) -> Any:
        if isinstance(raw, str):
            raw = [raw]
        if isinstance(raw, list):
            table = info.data.get("source", "jobs")
            for index, column in enumerate(raw):
                problem = column_problem(table, column)
                if problem:
                    raise PydanticCustomError("group_by", problem, {"subpath": [index]})
        return raw

    @field_validator("window")
    @classmethod
    def _positive_window(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("the window must be longer than 0s")
        return value

    @field_validator("every")
    @classmethod
    def _positive_every(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("every must be longer than 0s")
        return value

    @field_validator("notify")
    @classmethod
    def _check_channels(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return check_channel_names(value, info, "notify")

    @model_validator(mode="after")
    def _every_or_schedule(self) -> RuleBase:
        if self.every is not None and self.schedule is not None:
            raise ValueError("give either every or schedule, not both")
        return self

    @property
    def interval(self) -> timedelta:
        """How often the rule runs when it has no cron schedule."""
        return self.every or timedelta(minutes=1)

    def history_span(self) -> timedelta:
        """How much data before ``now`` one evaluation reads (for backtests' warm-up)."""
        return self.window


class ThresholdRule(RuleBase):
    kind: Literal["threshold"]
    threshold: Comparison


class RatioRule(RuleBase):
    kind: Literal["ratio"]
    ratio: Comparison
    min_total: int = Field(default=1, ge=1)
    of: tuple[Condition, ...] = ()

    @field_validator("of", mode="before")
    @classmethod
    def _parse_of(cls, raw: Any, info: ValidationInfo) -> tuple[Condition, ...]:
        return parse_where(raw, info.data.get("source", "jobs"))


class SpikeRule(RuleBase):
    kind: Literal["spike"]
    factor: float = 3.0
    min_current: int = Field(default=1, ge=1)
    reference: Duration | None = None
    direction: Literal["up", "down", "both"] = "up"
    min_reference: float = Field(default=1.0, gt=0)

    @field_validator("factor")
    @classmethod
    def _factor_at_least_one(cls, value: float) -> float:
        if value < 1:
            raise ValueError(f"factor must be at least 1 (a spike is a multiple of the reference), got {value:g}")
        return value

    @property
    def reference_span(self) -> timedelta:
        return self.reference or self.window

    def history_span(self) -> timedelta:
        return self.window + self.reference_span


class Baseline(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    periods: int = Field(ge=1, le=60)
    factor: float = Field(gt=0)


class MetricRule(RuleBase):
    kind: Literal["metric"]
    aggregate: Literal["count", "sum", "avg", "min", "max", "p95"] = "sum"
    field: str
    threshold: Comparison | None = None
    baseline: Baseline | None = None
    min_value: float | None = None

    @field_validator("field")
    @classmethod
    def _check_field(cls, value: str, info: ValidationInfo) -> str:
        numeric = info.data.get("aggregate", "sum") != "count"
        problem = column_problem(info.data.get("source", "jobs"), value, numeric=numeric)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _one_condition(self) -> MetricRule:
        if (self.threshold is None) == (self.baseline is None):
            raise ValueError("a metric rule takes exactly one of threshold or baseline")
        return self

    def history_span(self) -> timedelta:
        periods = self.baseline.periods if self.baseline else 0
        return self.window * (periods + 1)


class AbsenceRule(RuleBase):
    kind: Literal["absence"]
    lookback: Duration

    def history_span(self) -> timedelta:
        return self.window + self.lookback


class CronMissedRule(RuleBase):
    kind: Literal["cron_missed"]
    source: Source = "events"
    grace: Duration = timedelta(minutes=15)
    max_runs: int = Field(default=100, ge=1, le=1000)

    @classmethod
    def filter_table(cls, source: str) -> str:
        return "crons"

    def history_span(self) -> timedelta:
        return timedelta(days=2) + self.grace


class NewValueRule(RuleBase):
    kind: Literal["new_value"]
    field: str
    lookback: Duration

    @field_validator("field")
    @classmethod
    def _check_field(cls, value: str, info: ValidationInfo) -> str:
        problem = column_problem(info.data.get("source", "jobs"), value)
        if problem:
            raise ValueError(problem)
        return value

    def history_span(self) -> timedelta:
        return self.window + self.lookback


class AnyRule(RuleBase):
    kind: Literal["any"]
    max_alerts: int = Field(default=50, ge=1, le=1000)


Rule = Annotated[
    ThresholdRule | RatioRule | SpikeRule | MetricRule | AbsenceRule | CronMissedRule | NewValueRule | AnyRule,
    Field(discriminator="kind"),
]
