"""``seed`` and ``demo``."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click

from audit_watch.cli.options import TS, Settings, common_options


@click.command()
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


@click.command()
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
