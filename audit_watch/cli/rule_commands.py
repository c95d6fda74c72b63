"""``check``, ``test-rule``, ``backtest`` and ``test-rules``: rules before they run."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from audit_watch.cli.options import (
    DURATION,
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    TS,
    Settings,
    audit_source,
    common_options,
    now_or_clock,
    rules_of_file,
)


@click.command()
@click.option("--connect", is_flag=True, help="Also connect to the audit store and check tables and columns.")
@common_options
def check(settings: Settings, connect: bool) -> None:
    """Validate config, rules and templates; every problem as file:line: field: message."""
    from audit_watch.cli.check import run_check

    report = run_check(settings.config_path, settings.source_url, connect)
    for problem in report.problems:
        click.echo(str(problem), err=True)
    if report.problems:
        click.echo(f"{len(report.problems)} problem(s).", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"ok: {report.rules} rules, {report.channels} channels, {report.templates} templates, "
               f"{report.reports} reports.")




@click.command("test-rule")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--now", type=TS, help="Evaluate as of this time (ISO-8601); default: now.")
@click.option("--rule", "rule_name", help="Only this rule of the file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {rule, alerts: [{group, value, row_ids, links}]}.")
@common_options
def test_rule(settings: Settings, file: str, now: datetime | None, rule_name: str | None, as_json: bool) -> None:
    """Evaluate a rule once and print what would fire. Sends nothing, changes nothing."""
    from audit_watch.cli.terminal import alerts_table, console
    from audit_watch.rules.evaluate import evaluate_rule

    moment = now_or_clock(now)
    rules = rules_of_file(settings, file, rule_name)
    src = audit_source(settings)
    failed = False
    for rule in rules:
        evaluation = evaluate_rule(rule, src, moment, settings.config.links)
        if evaluation.error:
            failed = True
            click.echo(f"{rule.name}: evaluation failed: {evaluation.error}", err=True)
            continue
        if as_json:
            click.echo(json.dumps(_test_rule_json(rule.name, moment, evaluation.alerts), default=str))
        else:
            title = f"{rule.name} at {moment:%Y-%m-%d %H:%M:%S} UTC: {len(evaluation.alerts)} alert(s)"
            console.print(alerts_table(evaluation.alerts, title=title, with_rule=False))
    sys.exit(EXIT_BAD_INPUT if failed else EXIT_OK)


def _test_rule_json(name: str, now: datetime, alerts: list[Any]) -> dict[str, Any]:
    from audit_watch.core.numbers import number

    return {
        "rule": name,
        "now": now.isoformat(),
        "alerts": [
            {
                "group": a.group,
                "value": number(a.value),
                "row_ids": a.row_ids,
                "links": a.links,
                "group_names": a.group_names,
                "threshold": a.threshold,
                "baseline": a.baseline,
                "list_link": a.list_link,
                "window": {"from": a.window_start.isoformat(), "to": a.window_end.isoformat()},
                "details": a.details,
            }
            for a in alerts
        ],
    }


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--from", "start", type=TS, required=True, help="First evaluation time.")
@click.option("--to", "end", type=TS, required=True, help="Last evaluation time.")
@click.option("--step", type=DURATION, default="1h", show_default=True, help="Time between evaluations.")
@click.option("--rule", "rule_name", help="Only this rule of the file.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@common_options
def backtest(settings: Settings, file: str, start: datetime, end: datetime, step: Any,
             rule_name: str | None, as_json: bool) -> None:
    """Evaluate a rule at every step of a range and summarise when it would have fired."""
    from audit_watch.cli.terminal import backtest_summary, backtest_tables, console
    from audit_watch.rules.backtest import backtest as run_backtest

    if end < start:
        raise click.BadParameter("--to is before --from", param_hint="--to")
    if step.total_seconds() <= 0:
        raise click.BadParameter("the step must be longer than 0s", param_hint="--step")
    src = audit_source(settings)
    failed = False
    for rule in rules_of_file(settings, file, rule_name):
        result = run_backtest(rule, src, start, end, step, settings.config.links)
        failed = failed or bool(result.errors)
        if as_json:
            click.echo(json.dumps(result.to_json(), default=str))
            continue
        for table in backtest_tables(result):
            console.print(table)
        console.print(backtest_summary(result))
        for at, error in result.errors[:5]:
            console.print(f"[red]error at {at:%Y-%m-%d %H:%M}[/]: {error}")
    sys.exit(EXIT_BAD_INPUT if failed else EXIT_OK)




@click.command("test-rules")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@common_options
def test_rules(settings: Settings, files: tuple[str, ...]) -> None:
    """Run rule unit tests (YAML: rows at relative times, expected alerts)."""
    from audit_watch.cli.terminal import console, rule_test_lines
    from audit_watch.rules.ruletest import run_test_file

    results = []
    for file in files:
        results.extend(run_test_file(file))
    for line in rule_test_lines(results):
        console.print(line)
    failed = sum(1 for r in results if not r.passed)
    console.print(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(EXIT_FAILED if failed else EXIT_OK)
