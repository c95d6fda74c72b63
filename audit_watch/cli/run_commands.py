"""``run``: the daemon, or one pass of it (``--once``)."""

from __future__ import annotations

import sys
from datetime import datetime

import click

from audit_watch.cli.options import TS, Settings, common_options


@click.command()
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
