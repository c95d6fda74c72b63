"""Evaluate a rule at every step of a past range: when would it have fired?

Consecutive firing steps of one group form an *episode*, which is what a person
tuning a threshold wants to see (one incident, not 36 hourly rows).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from audit_watch.config.model import LinksConfig
from audit_watch.core.numbers import number
from audit_watch.rules.alert import Alert
from audit_watch.rules.evaluate import evaluate_rule
from audit_watch.rules.model import RuleBase
from audit_watch.store.source import AuditSource


@dataclass
class Episode:
    """One group firing over consecutive steps."""

    group: dict[str, Any]
    label: str
    first: datetime
    last: datetime
    steps: int
    peak: float
    threshold: str | None
    list_link: str

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group, "label": self.label, "first": self.first.isoformat(),
            "last": self.last.isoformat(), "steps": self.steps, "peak": number(self.peak),
            "threshold": self.threshold, "list_link": self.list_link,
        }


@dataclass
class BacktestResult:
    rule: RuleBase
    start: datetime
    end: datetime
    step: timedelta
    evaluations: int = 0
    firing_steps: int = 0
    episodes: list[Episode] = field(default_factory=list)
    per_day: Counter[str] = field(default_factory=Counter)
    errors: list[tuple[datetime, str]] = field(default_factory=list)

    @property
    def first(self) -> datetime | None:
        return min((e.first for e in self.episodes), default=None)

    @property
    def last(self) -> datetime | None:
        return max((e.last for e in self.episodes), default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule.name,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "step": int(self.step.total_seconds()),
            "evaluations": self.evaluations,
            "firing_steps": self.firing_steps,
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "per_day": dict(sorted(self.per_day.items())),
            "episodes": [e.to_json() for e in self.episodes],
            "errors": [{"at": at.isoformat(), "error": err} for at, err in self.errors],
        }


def steps(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    out, moment = [], start
    while moment <= end:
        out.append(moment)
        moment += step
    return out


def backtest(
    rule: RuleBase,
    src: AuditSource,
    start: datetime,
    end: datetime,
    step: timedelta,
    links: LinksConfig | None = None,
    on_step: Callable[[datetime, list[Alert]], None] | None = None,
) -> BacktestResult:
    """Evaluate ``rule`` at ``start, start+step, ... <= end``."""
    result = BacktestResult(rule, start, end, step)
    open_episodes: dict[str, Episode] = {}
    for moment in steps(start, end, step):
        evaluation = evaluate_rule(rule, src, moment, links)
        result.evaluations += 1
        if evaluation.error:
            result.errors.append((moment, evaluation.error))
            continue
        if on_step:
            on_step(moment, evaluation.alerts)
        if evaluation.alerts:
            result.firing_steps += 1
            result.per_day[moment.strftime("%Y-%m-%d")] += 1
        seen = set()
        for alert in evaluation.alerts:
            key = alert.fingerprint
            seen.add(key)
            episode = open_episodes.get(key)
            if episode is None:
                episode = Episode(alert.group, alert.group_label, moment, moment, 0, alert.value,
                                  alert.threshold, alert.list_link)
                open_episodes[key] = episode
                result.episodes.append(episode)
            episode.last = moment
            episode.steps += 1
            episode.peak = max(episode.peak, alert.value)
        for key in list(open_episodes):
            if key not in seen:
                del open_episodes[key]
    result.episodes.sort(key=lambda e: (e.first, e.label))
    return result
