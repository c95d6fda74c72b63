"""Terminal output: rich tables for alerts, backtests and rule tests."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from audit_watch.core.numbers import format_number, number
from audit_watch.core.outcomes import RunOutcome
from audit_watch.demo.run import DemoResult
from audit_watch.rules.alert import Alert
from audit_watch.rules.backtest import BacktestResult
from audit_watch.rules.ruletest import CaseResult

# Piped output (make demo, CI logs) gets room for the table instead of rich's 80 columns.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)
errors = Console(stderr=True, highlight=False)

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def alerts_table(alerts: Iterable[Alert], title: str | None = None, with_rule: bool = True) -> Table:
    """Alerts as a table; the links follow in the caption, numbered, so that a
    narrow terminal does not fold them (terminals make whole URLs clickable)."""
    alerts = list(alerts)
    table = Table(title=title, show_lines=False, expand=False, caption_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    if with_rule:
        table.add_column("rule", style="bold", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("group")
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("against", no_wrap=True)
    for index, alert in enumerate(alerts, 1):
        cells = [str(index)] + ([alert.rule] if with_rule else [])
        cells += [
            f"[{SEVERITY_STYLE.get(alert.severity, '')}]{alert.severity}[/]",
            _escape(_group_text(alert)),
            _value(alert),
            _escape(alert.threshold or ("" if alert.baseline is None else f"baseline {alert.baseline:g}")),
        ]
        table.add_row(*cells)
    if alerts:
        table.caption = "\n".join(f"[{i}] {_link(a)}" for i, a in enumerate(alerts, 1))
    return table


def _group_text(alert: Alert) -> str:
    """The group by name; an `any` alert also says what its row is (not its id)."""
    if alert.kind != "any":
        return alert.group_label
    names = [alert.group_names.get(k, str(v)) for k, v in alert.group.items() if k != "id"]
    row = alert.details.get("row") or {}
    what = row.get("event_type") or row.get("status") or row.get("source") or alert.group.get("id", "")
    return ": ".join(str(p) for p in (", ".join(names), what) if p)


def _link(alert: Alert) -> str:
    """An `any` alert is one row: link to it; others link to the filtered list."""
    return alert.links[0] if alert.kind == "any" and alert.links else alert.list_link


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
            str(episode.steps), format_number(episode.peak), episode.threshold or "",
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


STATE_STYLE = {"firing": "bold red", "pending": "yellow", "resolved": "green"}


def _when(moment: Any) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else ""


def states_view(rows: Iterable[Any]) -> Table:
    """``audit-watch alerts``: one line per (rule, group); below, for each rule that
    left firing groups untracked, how many fired at its latest evaluation."""
    rows = list(rows)
    table = Table(title="alert states", caption="\n".join(_left_out(rows)) or None, caption_justify="left")
    for name in ("rule", "group", "state", "severity", "value", "since", "last evaluated", "last notified", "silenced"):
        table.add_column(name, no_wrap=name not in ("group",))
    for row in rows:
        since = row.fired_at or row.started_at
        if row.state == "resolved":
            since = row.resolved_at
        table.add_row(
            row.rule, _escape(str(row.group)), f"[{STATE_STYLE.get(row.state, '')}]{row.state}[/]",
            row.severity, format_number(row.value) if isinstance(row.value, (int, float)) else str(row.value),
            _when(since), _when(row.last_evaluated_at), _when(row.last_notified_at),
            f"#{row.silenced_by}" if row.silenced_by else "",
        )
    return table


def _left_out(rows: list[Any]) -> list[str]:
    latest: dict[str, Any] = {}
    for row in rows:
        if row.state in ("firing", "pending") and row.last_seen_at is not None:
            if row.rule not in latest or row.last_seen_at > latest[row.rule].last_seen_at:
                latest[row.rule] = row
    return [f"{rule}: {_escape(row.groups_summary)} (at {_when(row.last_seen_at)})"
            for rule, row in sorted(latest.items()) if row.groups_summary]


def outbox_view(entries: Iterable[Any], summary: dict[str, int]) -> Table:
    """``audit-watch alerts --outbox``: what is queued, retrying and dead."""
    counts = ", ".join(f"{status} {count}" for status, count in sorted(summary.items())) or "empty"
    table = Table(title=f"outbox: {counts}")
    for name in ("id", "channel", "rule", "kind", "status", "attempts", "next attempt", "gives up", "last error"):
        table.add_column(name, no_wrap=name != "last error")
    for entry in entries:
        table.add_row(
            str(entry.id), entry.channel, entry.rule, entry.kind, entry.status, str(entry.attempts),
            _when(entry.next_attempt_at), _when(entry.give_up_at), _escape(entry.last_error or ""),
        )
    return table


def silences_view(silences: Iterable[Any], now: Any) -> Table:
    table = Table(title="silences")
    for name in ("id", "rule", "match", "from", "until", "by", "comment", "active"):
        table.add_column(name, no_wrap=name not in ("comment",))
    for item in silences:
        match = ", ".join(f"{k}={v}" for k, v in item.matchers.items())
        table.add_row(
            str(item.id), item.rule, _escape(match), _when(item.starts_at), _when(item.ended_at),
            _escape(item.created_by or ""), _escape(item.comment), "yes" if item.active(now) else "no",
        )
    return table


def demo_summary(demo: DemoResult) -> None:
    """What ``audit-watch demo`` prints: the alerts, the rules' timing, where things went."""
    for problem in demo.problems:
        console.print(f"[red]{problem}[/]")
    evaluations = demo.result.evaluations
    alerts = [a for e in evaluations for a in e.alerts]
    console.print(alerts_table(alerts, title=f"audit-watch demo: alerts at {demo.now:%Y-%m-%d %H:%M} UTC"))
    fired = sum(1 for e in evaluations if e.alerts)
    held = demo.result.count(RunOutcome.HELD)
    console.print(
        f"{len(evaluations)} rules evaluated in {demo.elapsed:.2f}s as `run --once` evaluates them (run ledger, "
        f"freshness check, alert states, outbox): {fired} fired, {sum(len(e.alerts) for e in evaluations)} alerts"
        + (f"; {held} held (the audit store is silent)." if held else ".")
    )
    for evaluation in evaluations:
        if evaluation.error:
            console.print(f"[red]{evaluation.rule.name} failed: {evaluation.error}[/]")
    delivered = demo.result.delivered
    console.print(
        f"{delivered.delivered} notification(s) delivered to the file channel in {demo.outbox}/ "
        f"(JSON and rendered text); {delivered.retrying} retrying, {delivered.dead} dead."
    )
    reports = demo.folder / "outbox" / "reports"
    console.print(f"{len(demo.reports)} report file(s) rendered into {reports}/ "
                  "(HTML opens in a browser; the compliance evidence is a CSV).")
    console.print(f"Try: .venv/bin/audit-watch --config {demo.folder.as_posix()}/audit-watch.yaml alerts")

