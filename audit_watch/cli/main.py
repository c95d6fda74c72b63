"""The ``audit-watch`` command line: thin commands over the stages below.

Exit codes (README.md, Commands): 0 ok, 1 a failed check or expectation, 2 bad usage or input.
Each group of commands lives in its own module; this one wires them under ``main``.
"""

from __future__ import annotations

import logging

import click

from audit_watch import __version__
from audit_watch.cli.alert_commands import alerts, silence
from audit_watch.cli.demo_commands import demo, seed
from audit_watch.cli.options import Settings
from audit_watch.cli.report_commands import export, report
from audit_watch.cli.rule_commands import backtest, check, test_rule, test_rules
from audit_watch.cli.run_commands import run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file (default ./audit-watch.yaml).")
@click.option("--source", "source_url", help="SQLAlchemy URL of the audit store (overrides source.url).")
@click.option("--log-level", default=None, help="Default: WARNING; INFO for `run`.",
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.version_option(__version__, prog_name="audit-watch")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, source_url: str | None, log_level: str | None) -> None:
    """Alerts and reports over Auxot's audit logs (Jobs, Threads, Events)."""
    logging.basicConfig(level=(log_level or "WARNING").upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ctx.ensure_object(Settings)
    settings.config_path, settings.source_url = config_path, source_url
    settings.log_level = logging.getLevelName(log_level.upper()) if log_level else None


for command in (check, test_rule, backtest, test_rules, run, alerts, silence, report, export, seed, demo):
    main.add_command(command)


if __name__ == "__main__":  # pragma: no cover
    main()
