"""``report`` and ``export``."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

import click

from audit_watch.cli.options import EXIT_FAILED, EXIT_OK, TS, Settings, audit_source, common_options, now_or_clock
from audit_watch.config.model import Config
from audit_watch.core.outcomes import OutboxStatus


@click.command()
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
    moment = now_or_clock(now)
    definitions, problems = report_definitions(config.report_paths, config.channels)
    for problem in problems:
        click.echo(f"report definition skipped: {problem}", err=True)
    channels = tuple(dict.fromkeys(channel_names or find_report(name, definitions).channels))
    src = audit_source(settings)
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
    sys.exit(_deliver_report(config, result, channels, now_or_clock(None)))


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
        if row.status == OutboxStatus.DELIVERED:
            click.echo(f"{head}: delivered", err=True)
        elif row.status == OutboxStatus.DEAD:
            dead = True
            click.echo(f"{head}: dead: {row.last_error}", err=True)
        elif row.status == OutboxStatus.RETRYING:
            click.echo(f"{head}: retrying at {row.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC ({row.last_error}); "
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


@click.command()
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

    src = audit_source(settings)
    try:
        count = export_rows(src, table, list(where), start, end, fmt, out)
    finally:
        src.engine.dispose()
    click.echo(f"exported {count} {table} rows", err=True)
