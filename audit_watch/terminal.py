"""Terminal output: rich tables for alerts, backtests and rule tests."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

from audit_watch.alert import Alert, number
from audit_watch.backtest import BacktestResult
from audit_watch.ruletest import CaseResult

console = Console(highlight=False, soft_wrap=False)
errors = Console(stderr=True, highlight=False)

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def alerts_table(alerts: Iterable[Alert], title: str | None = None, with_rule: bool = True) -> Table:
    table = Table(title=title, show_lines=False, expand=False)
    if with_rule:
        table.add_column("rule", style="bold", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("group")
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("against", no_wrap=True)
    table.add_column("link", overflow="fold")
    for alert in alerts:
        cells = [alert.rule] if with_rule else []
        cells += [
            f"[{SEVERITY_STYLE.get(alert.severity, '')}]{alert.severity}[/]",
            _escape(alert.group_label),
            _value(alert),
            _escape(alert.threshold or ("" if alert.baseline is None else f"baseline {alert.baseline:g}")),
            alert.list_link,
        ]
        table.add_row(*cells)
    return table


def _value(alert: Alert) -> str:
    value = number(alert.value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"{value:,}"


def _escape(text: str) -> str:
    # Audit content must not be read as rich markup.
    return text.replace("[", "\\[")


def backtest_tables(result: BacktestResult) -> list[Table]:
    episodes = Table(title=f"{result.rule.name}: firings from {result.start:%Y-%m-%d %H:%M} to {result.end:%Y-%m-%d %H:%M}")
    episodes.add_column("group")
    episodes.add_column("first", no_wrap=True)
    episodes.add_column("last", no_wrap=True)
    episodes.add_column("steps", justify="right")
    episodes.add_column("peak", justify="right")
    episodes.add_column("against", no_wrap=True)
    for episode in result.episodes:
        episodes.add_row(
            _escape(episode.label), f"{episode.first:%Y-%m-%d %H:%M}", f"{episode.last:%Y-%m-%d %H:%M}",
            str(episode.steps), f"{number(episode.peak)}", episode.threshold or "",
        )
    per_day = Table(title="firing evaluations per day")
    per_day.add_column("day")
    per_day.add_column("evaluations that fired", justify="right")
    for day, count in sorted(result.per_day.items()):
        per_day.add_row(day, str(count))
    return [episodes, per_day]


def backtest_summary(result: BacktestResult) -> str:
    if not result.episodes:
        return f"{result.rule.name}: never fired in {result.evaluations} evaluations."
    return (
        f"{result.rule.name}: fired in {result.firing_steps} of {result.evaluations} evaluations, "
        f"{len(result.episodes)} episode(s); first {result.first:%Y-%m-%d %H:%M}, last {result.last:%Y-%m-%d %H:%M} (UTC)."
    )


def rule_test_lines(results: Iterable[CaseResult]) -> list[str]:
    lines = []
    for case in results:
        mark = "[green]PASS[/]" if case.passed else "[red]FAIL[/]"
        lines.append(f"{mark} {case.file}: {_escape(case.name)}")
        lines += [f"     {_escape(f)}" for f in case.failures]
    return lines
