"""The ``audit-watch`` command line: thin commands over the pipeline modules.

Exit codes (rules.md): 0 ok, 1 a failed check or expectation, 2 bad usage or input.
The clock is read once, here, when ``--now`` is not given.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import OperationalError

from audit_watch import __version__
from audit_watch.config.model import Config, load_config
from audit_watch.core.durations import parse_duration
from audit_watch.core.logs import configure_cli_logging
from audit_watch.core.secrets import remember_url_password, scrub, scrub_data
from audit_watch.core.timestamps import parse_timestamp
from audit_watch.core.yaml_source import InputError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class Timestamp(click.ParamType):
    name = "TS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_timestamp(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO-8601 time such as 2026-11-20T09:30:00Z", param, ctx)


class DurationType(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


TS = Timestamp()
DURATION = DurationType()


class Settings:
    """What the global options say; the config is loaded once, on first use."""

    def __init__(self) -> None:
        self.config_path: str | None = None
        self.source_url: str | None = None
        self.log_level: int | None = None
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--config`` and ``--source`` on every command (also accepted before it)."""

    @click.option("--config", "config_path", type=click.Path(dir_okay=False),
                  help="Config file (default ./audit-watch.yaml).")
    @click.option("--source", "source_url", help="SQLAlchemy URL of the audit store (overrides source.url).")
    @click.pass_context
    @functools.wraps(command)
    def wrapper(ctx: click.Context, config_path: str | None, source_url: str | None, **kwargs: Any) -> Any:
        settings: Settings = ctx.ensure_object(Settings)
        settings.config_path = config_path or settings.config_path
        settings.source_url = source_url or settings.source_url
        remember_url_password(settings.source_url)
        try:
            return ctx.invoke(command, settings, **kwargs)
        except InputError as exc:
            for problem in exc.problems:
                click.echo(scrub(str(problem)), err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except OperationalError as exc:
            # An unreachable or missing database is an operator's problem, not a bug:
            # say which, without a traceback (and without the URL's password).
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
            click.echo(scrub(f"cannot use the database: {reason}"), err=True)
            ctx.exit(EXIT_BAD_INPUT)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file (default ./audit-watch.yaml).")
@click.option("--source", "source_url", help="SQLAlchemy URL of the audit store (overrides source.url).")
@click.option("--log-level", default=None, help="Default: WARNING; INFO for `run`.",
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.version_option(__version__, prog_name="audit-watch")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, source_url: str | None, log_level: str | None) -> None:
    """Alerts and reports over Auxot's audit logs (Jobs, Threads, Events)."""
    configure_cli_logging(logging.getLevelName((log_level or "WARNING").upper()))
    settings = ctx.ensure_object(Settings)
    settings.config_path, settings.source_url = config_path, source_url
    settings.log_level = logging.getLevelName(log_level.upper()) if log_level else None


def wall_clock() -> datetime:
    return datetime.now(UTC)


def _now(value: datetime | None) -> datetime:
    return value or wall_clock()


def _source(settings: Settings) -> Any:
    from audit_watch.store.source import AuditSource

    return AuditSource.from_config(settings.config.source, settings.source_url)


def _rules_of_file(settings: Settings, file: str, rule_name: str | None) -> list[Any]:
    from audit_watch.rules.loader import load_rule_file

    rules = load_rule_file(file, {"channels": settings.config.channels} if settings.config.channels else None)
    if rule_name:
        rules = [r for r in rules if r.name == rule_name]
        if not rules:
            raise click.BadParameter(f"no rule named {rule_name!r} in {file}", param_hint="--rule")
    if not rules:
        raise click.BadParameter(f"{file} holds no rule", param_hint="FILE")
    return rules


# --- check ----------------------------------------------------------------------------


@main.command()
@click.option("--connect", is_flag=True, help="Also connect to the audit store and check tables and columns.")
@common_options
def check(settings: Settings, connect: bool) -> None:
    """Validate config, rules and templates; every problem as file:line: field: message."""
    from audit_watch.cli.check import run_check

    report = run_check(settings.config_path, settings.source_url, connect)
    for problem in report.problems:
        click.echo(scrub(str(problem)), err=True)
    if report.problems:
        click.echo(f"{len(report.problems)} problem(s).", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"ok: {report.rules} rules, {report.channels} channels, {report.templates} templates, "
               f"{report.reports} reports.")


# --- test-rule and backtest -----------------------------------------------------------


@main.command("test-rule")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--now", type=TS, help="Evaluate as of this time (ISO-8601); default: now.")
@click.option("--rule", "rule_name", help="Only this rule of the file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {rule, alerts: [{group, value, row_ids, links}]}.")
@common_options
def test_rule(settings: Settings, file: str, now: datetime | None, rule_name: str | None, as_json: bool) -> None:
    """Evaluate a rule once and print what would fire. Sends nothing, changes nothing."""
    from audit_watch.cli.terminal import alerts_table, console
    from audit_watch.rules.evaluate import evaluate_rule

    moment = _now(now)
    rules = _rules_of_file(settings, file, rule_name)
    src = _source(settings)
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


@main.command()
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
    src = _source(settings)
    failed = False
    for rule in _rules_of_file(settings, file, rule_name):
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


# --- test-rules -----------------------------------------------------------------------


@main.command("test-rules")
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


# --- run, alerts, silences -----------------------------------------------------------


@main.command()
@click.option("--once", is_flag=True, help="Evaluate what is due, deliver, and exit.")
@click.option("--now", type=TS, help="With --once: evaluate as of this time (ISO-8601).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--listen", help="Address of /healthz and /metrics, e.g. 127.0.0.1:9464.")
@common_options
def run(settings: Settings, once: bool, now: datetime | None, log_format: str, listen: str | None) -> None:
    """The daemon: evaluates rules on their schedules and delivers notifications."""
    from audit_watch.daemon import service as daemon
    from audit_watch.daemon.once import run_once

    if once:
        sys.exit(run_once(settings.config_path, settings.source_url, now))
    if now is not None:
        raise click.BadParameter("--now only goes with --once", param_hint="--now")
    sys.exit(daemon.run_daemon(settings.config_path, settings.source_url, log_format, listen, settings.log_level))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--outbox", is_flag=True, help="Show the outbox (queued, retrying, dead) instead.")
@click.option("--active", is_flag=True, help="Only pending and firing alerts.")
@common_options
def alerts(settings: Settings, as_json: bool, outbox: bool, active: bool) -> None:
    """The current alert states, or the outbox."""
    from audit_watch.alerting import pipeline
    from audit_watch.alerting.state import StateStore
    from audit_watch.cli.terminal import console, outbox_view, states_view

    state = StateStore.from_config(settings.config)
    try:
        # Stored errors may predate a secret's configuration (or its scrubbing): scrub on the way out too.
        if outbox:
            entries = scrub_data(pipeline.outbox_table(state))
            if as_json:
                click.echo(json.dumps([_plain(e) for e in entries], default=str))
            else:
                console.print(outbox_view(entries, pipeline.outbox_summary(state)))
            return
        rows = scrub_data(pipeline.alerts_table(state, include_resolved=not active))
        if as_json:
            click.echo(json.dumps([_plain(r) for r in rows], default=str))
        else:
            console.print(states_view(rows))
    finally:
        state.close()


def _plain(item: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(item) if dataclasses.is_dataclass(item) else item


@main.group()
def silence() -> None:
    """Silences: matching alerts are still evaluated and recorded, but nothing is sent."""


@silence.command("add")
@click.option("--rule", required=True, help="Rule name (a pattern such as failed-* works).")
@click.option("--match", "matchers", multiple=True, help="key=value of the alert's group (id or name); repeatable.")
@click.option("--for", "duration", type=DURATION, required=True, help="How long, e.g. 2h.")
@click.option("--comment", required=True, help="Why (shown in silence list).")
@click.option("--by", "created_by", help="Who.")
@click.option("--now", type=TS, help="Start time (default: now).")
@common_options
def silence_add(settings: Settings, rule: str, matchers: tuple[str, ...], duration: Any, comment: str,
                created_by: str | None, now: datetime | None) -> None:
    """Silence a rule, or some of its groups, for a while."""
    from audit_watch.alerting import silences
    from audit_watch.alerting.state import StateStore

    state = StateStore.from_config(settings.config)
    try:
        made = silences.add(state, rule, duration, comment, _now(now),
                            matchers=silences.parse_matchers(list(matchers)), created_by=created_by)
    except silences.SilenceError as exc:
        raise click.BadParameter(str(exc)) from None
    finally:
        state.close()
    click.echo(f"silence {made.id}: {made.rule} {made.matchers or ''} until {made.ends_at:%Y-%m-%d %H:%M} UTC")


@silence.command("list")
@click.option("--all", "include_ended", is_flag=True, help="Also ended and expired silences.")
@click.option("--now", type=TS, help="As of this time (default: now).")
@common_options
def silence_list(settings: Settings, include_ended: bool, now: datetime | None) -> None:
    """The active silences."""
    from audit_watch.alerting import silences
    from audit_watch.alerting.state import StateStore
    from audit_watch.cli.terminal import console, silences_view

    state = StateStore.from_config(settings.config)
    try:
        console.print(silences_view(silences.list_silences(state, _now(now), include_ended), _now(now)))
    finally:
        state.close()


@silence.command("expire")
@click.argument("silence_id", type=int)
@click.option("--now", type=TS, help="As of this time (default: now).")
@common_options
def silence_expire(settings: Settings, silence_id: int, now: datetime | None) -> None:
    """End a silence now."""
    from audit_watch.alerting import silences
    from audit_watch.alerting.state import StateStore

    state = StateStore.from_config(settings.config)
    try:
        ended = silences.expire(state, silence_id, _now(now))
    except silences.SilenceError as exc:
        raise click.BadParameter(str(exc)) from None
    finally:
        state.close()
    click.echo(f"silence {ended.id} expired")


# --- reports and export ----------------------------------------------------------------


REPORT_CHOICES = ("weekly-digest", "compliance", "token-usage", "triage")


@main.command()
@click.argument("name")
@click.option("--user", help="Scope: a user, by email (compliance).")
@click.option("--team", help="Scope: a team, by name.")
@click.option("--from", "start", type=TS, help="Period start (with --to).")
@click.option("--to", "end", type=TS, help="Period end (with --from).")
@click.option("--now", type=TS, help="Evaluate the report's period as of this time; default: now.")
@click.option("--format", "fmt", type=click.Choice(["text", "html", "markdown"]), default="text", show_default=True)
@click.option("--out", type=click.Path(), help="A file; for compliance a folder (HTML, text, evidence CSV).")
@click.option("--channel", "channel_names", multiple=True, metavar="NAME",
              help="Deliver to this channel instead of the definition's; repeatable.")
@click.option("--dry-run", is_flag=True, help="Render only; deliver nothing.")
@common_options
def report(settings: Settings, name: str, user: str | None, team: str | None, start: datetime | None,
           end: datetime | None, now: datetime | None, fmt: str, out: str | None, channel_names: tuple[str, ...],
           dry_run: bool) -> None:
    """Render a report now: weekly-digest, compliance, token-usage, triage, or a defined report's name.

    A report whose definition names channels (or with --channel) is then queued
    in the outbox and delivered at once; failures are retried by `audit-watch run`.
    """
    from audit_watch.reports import check_report_channels, find_report, report_definitions, run_report

    if user and team:
        raise click.BadParameter("give --user or --team, not both", param_hint="--user")
    if (start is None) != (end is None):
        raise click.BadParameter("--from and --to go together", param_hint="--from")
    if start is not None and now is not None:
        raise click.BadParameter("give --from/--to or --now, not both", param_hint="--now")
    config = settings.config
    try:
        check_report_channels(config, channel_names)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--channel") from None
    moment = _now(now)
    definitions, problems = report_definitions(config.report_paths, config.channels)
    for problem in problems:
        click.echo(f"report definition skipped: {problem}", err=True)
    channels = tuple(dict.fromkeys(channel_names or find_report(name, definitions).channels))
    src = _source(settings)
    try:
        result = run_report(name, src, config, now=moment, start=start, end=end, user=user, team=team,
                            definitions=definitions, alerts=_alert_activity(config))
    finally:
        src.engine.dispose()
    written = _write_report(result, fmt, out)
    if isinstance(written, str):
        click.echo(written)
    else:
        for path in written:
            click.echo(f"wrote {path}", err=True)
    if not channels:
        return
    if dry_run:
        click.echo(f"dry run: {result.name} not queued for {', '.join(channels)}", err=True)
        return
    # Queued and sent at the wall-clock time: --now places the report's period, not its delivery.
    sys.exit(_deliver_report(config, result, channels, wall_clock()))


def _deliver_report(config: Config, result: Any, channels: tuple[str, ...], now: datetime) -> int:
    """Queue the report for ``channels``, run one delivery pass, say how each went.
    Exit 1 when a delivery is dead."""
    from sqlalchemy import select

    from audit_watch.alerting.outbox import DeliveryPolicy
    from audit_watch.alerting.pipeline import deliver_due
    from audit_watch.alerting.state import StateStore, outbox
    from audit_watch.daemon import ledger
    from audit_watch.reports import queue_report

    policy = DeliveryPolicy.from_config(config.delivery)
    state = StateStore.from_config(config)
    try:
        ledger.ensure_ledger_schema(state)
        ids = queue_report(state, config, result, channels, now, policy)
        # A registered pass, as the daemon's: its `now` is unique among the replicas' passes.
        at = ledger.open_delivery_run(state, "report-" + ledger.new_replica_id(), now)
        try:
            deliver_due(config, state, at, policy=policy, only=ids)   # its own rows, not the whole outbox
        finally:
            ledger.close_delivery_run(state, at)
        with state.read() as conn:
            rows = conn.execute(select(outbox).where(outbox.c.id.in_(ids)).order_by(outbox.c.id)).all()
    finally:
        state.close()
    dead = False
    for row in rows:
        head = f"{result.name} to {row.channel}"
        if row.status == "delivered":
            click.echo(f"{head}: delivered", err=True)
        elif row.status == "dead":
            dead = True
            click.echo(f"{head}: dead: {scrub(row.last_error or '')}", err=True)
        elif row.status == "retrying":
            click.echo(f"{head}: retrying at {row.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC ({scrub(row.last_error or '')}); "
                       "the outbox keeps it: `audit-watch run` delivers it later", err=True)
        else:  # queued or sending: another audit-watch is delivering it
            click.echo(f"{head}: {row.status} in the outbox (id {row.id}): `audit-watch run` delivers it", err=True)
    return EXIT_FAILED if dead else EXIT_OK


def _write_report(result: Any, fmt: str, out: str | None) -> Any:
    from audit_watch.reports import write_report

    return write_report(result, fmt, out)


def _alert_activity(config: Config) -> list[Any]:
    """Alerts of the state database for the digest; none when there is no state yet."""
    from audit_watch.alerting.state import StateStore
    from audit_watch.daemon.report_jobs import alert_activity

    try:
        state = StateStore.from_config(config)
    except Exception:  # noqa: BLE001 - a report must not need the daemon's database
        return []
    try:
        return alert_activity(state)
    finally:
        state.close()


@main.command()
@click.argument("table", type=click.Choice(["jobs", "threads", "events"]))
@click.option("--where", "where", multiple=True, help="key=value (also key!=value, metadata.KEY=value); repeatable.")
@click.option("--from", "start", type=TS, required=True)
@click.option("--to", "end", type=TS, required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="File to write (default: standard output).")
@common_options
def export(settings: Settings, table: str, where: tuple[str, ...], start: datetime, end: datetime, fmt: str,
           out: str | None) -> None:
    """Stream rows with start < time <= end as CSV or JSON lines, in constant memory."""
    from audit_watch.store.export import export_rows

    src = _source(settings)
    try:
        count = export_rows(src, table, list(where), start, end, fmt, out)
    finally:
        src.engine.dispose()
    click.echo(f"exported {count} {table} rows", err=True)


# --- seed and demo --------------------------------------------------------------------


@main.command()
@click.option("--db", "url", required=True, help="SQLAlchemy URL of the database to fill.")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 366))
@click.option("--seed", "seed_value", default=42, show_default=True, type=int)
@click.option("--scale", default=1.0, show_default=True, type=click.FloatRange(0.01, 1000))
@click.option("--end", type=TS, help="Last moment of the data (default: the current hour).")
@common_options
def seed(settings: Settings, url: str, days: int, seed_value: int, scale: float, end: datetime | None) -> None:
    """Write generated Auxot activity, with known incidents, into any database."""
    from audit_watch.demo.seed import seed_database

    summary = seed_database(url, days=days, seed=seed_value, scale=scale, end=end, progress=True)
    click.echo(str(summary))


@main.command()
@click.option("--dir", "folder", default="demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--scale", default=0.25, show_default=True, type=click.FloatRange(0.01, 10))
@click.option("--fresh", is_flag=True, help="Seed the demo store again even when it exists.")
@common_options
def demo(settings: Settings, folder: str, scale: float, fresh: bool) -> None:
    """Build the embedded demo store, run every bundled rule once, deliver to files."""
    from audit_watch.cli.terminal import console, demo_summary
    from audit_watch.demo.run import run_demo

    result = run_demo(Path(folder), scale=scale, fresh=fresh, say=console.print)
    demo_summary(result)
    sys.exit(result.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
