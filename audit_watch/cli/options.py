"""What every command shares: the global options, time and duration parameters,
loading the config once, and reading the clock (once, when ``--now`` is not given)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy.exc import OperationalError

from audit_watch.config.model import Config, load_config
from audit_watch.core.durations import parse_duration
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
        try:
            return ctx.invoke(command, settings, **kwargs)
        except InputError as exc:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except OperationalError as exc:
            # An unreachable or missing database is an operator's problem, not a bug:
            # say which, without a traceback (and without the URL's password).
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
            click.echo(f"cannot use the database: {reason}", err=True)
            ctx.exit(EXIT_BAD_INPUT)

    return wrapper


def wall_clock() -> datetime:
    return datetime.now(UTC)


def now_or_clock(value: datetime | None) -> datetime:
    return value or wall_clock()


def audit_source(settings: Settings) -> Any:
    from audit_watch.store.source import AuditSource

    return AuditSource.from_config(settings.config.source, settings.source_url)


def rules_of_file(settings: Settings, file: str, rule_name: str | None) -> list[Any]:
    from audit_watch.rules.loader import load_rule_file

    rules = load_rule_file(file, {"channels": settings.config.channels} if settings.config.channels else None)
    if rule_name:
        rules = [r for r in rules if r.name == rule_name]
        if not rules:
            raise click.BadParameter(f"no rule named {rule_name!r} in {file}", param_hint="--rule")
    if not rules:
        raise click.BadParameter(f"{file} holds no rule", param_hint="FILE")
    return rules
