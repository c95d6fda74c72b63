"""``alerts`` and ``silence``: the alert states, the outbox, silences."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from audit_watch.cli.options import DURATION, TS, Settings, common_options, now_or_clock


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--outbox", is_flag=True, help="Show the outbox (queued, retrying, dead) instead.")
@click.option("--active", is_flag=True, help="Only pending and firing alerts.")
@common_options
def alerts(settings: Settings, as_json: bool, outbox: bool, active: bool) -> None:
    """The current alert states, or the outbox."""
    from audit_watch.alerting import views
    from audit_watch.alerting.state import StateStore
    from audit_watch.cli.terminal import console, outbox_view, states_view

    state = StateStore.from_config(settings.config)
    try:
        if outbox:
            entries = views.outbox_table(state)
            if as_json:
                click.echo(json.dumps([_plain(e) for e in entries], default=str))
            else:
                console.print(outbox_view(entries, views.outbox_summary(state)))
            return
        rows = views.alerts_table(state, include_resolved=not active)
        if as_json:
            click.echo(json.dumps([_plain(r) for r in rows], default=str))
        else:
            console.print(states_view(rows))
    finally:
        state.close()


def _plain(item: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(item) if dataclasses.is_dataclass(item) and not isinstance(item, type) else item


@click.group()
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
        made = silences.add(state, rule, duration, comment, now_or_clock(now),
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
        console.print(silences_view(silences.list_silences(state, now_or_clock(now), include_ended), now_or_clock(now)))
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
        ended = silences.expire(state, silence_id, now_or_clock(now))
    except silences.SilenceError as exc:
        raise click.BadParameter(str(exc)) from None
    finally:
        state.close()
    click.echo(f"silence {ended.id} expired")
