"""Scheduled reports in the daemon: at the cron time, in the time zone, once.

The deterministic tests drive :func:`run_report_tick` with a fixed tick; one test
runs ``audit-watch run`` as a subprocess and waits for a report whose cron minute
is the next one in Asia/Kathmandu (UTC+05:45, so only a correctly zoned schedule
fires at that minute), delivered to the fake Slack API and to aiosmtpd.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from test_daemon import (
    Clock,
    Deployment,
    context,
    deployment,
    http_get,
    live,
    postgres_pair,
    stop,
    wait_for,
)
from test_ledger import state

from audit_watch.alerting.state import StateStore, outbox
from audit_watch.core.outcomes import RunOutcome
from audit_watch.daemon import ledger
from audit_watch.daemon.context import TickContext
from audit_watch.daemon.report_jobs import report_trigger, run_report_tick
from audit_watch.daemon.schedules import latest_tick
from audit_watch.daemon.service import Daemon
from audit_watch.reports.model import DEFINITION_MODELS
from audit_watch.store.settings import SourceConfig
from audit_watch.store.source import AuditSource

from test_state import T0, state_url

BERLIN = ZoneInfo("Europe/Berlin")
KATHMANDU = ZoneInfo("Asia/Kathmandu")


def definition(**keys: Any) -> Any:
    data = {"name": "digest", "report": "weekly-digest", "schedule": "0 8 * * 1", "timezone": "Europe/Berlin",
            "period": "last_week", "channels": ["archive"], "charts": False, **keys}
    return DEFINITION_MODELS[data["report"]].model_validate(data)


def report_rows(state: StateStore) -> list[Any]:
    with state.read() as conn:
        return list(conn.execute(select(outbox.c.kind, outbox.c.rule, outbox.c.channel, outbox.c.payload)
                                 .where(outbox.c.kind == "report").order_by(outbox.c.id)))


def test_the_cron_of_a_report_is_read_in_its_time_zone() -> None:
    trigger = report_trigger(definition(), "UTC")
    winter = datetime(2026, 11, 25, 12, tzinfo=UTC)                    # a Wednesday
    assert latest_tick(trigger, winter) == datetime(2026, 11, 23, 7, tzinfo=UTC)   # Mon 08:00 CET
    summer = datetime(2026, 7, 1, 12, tzinfo=UTC)
    assert latest_tick(trigger, summer) == datetime(2026, 6, 29, 6, tzinfo=UTC)    # Mon 08:00 CEST
    assert trigger.get_next_fire_time(None, winter) == datetime(2026, 11, 30, 7, tzinfo=UTC)
    # Without a zone of its own, the config's.
    assert latest_tick(report_trigger(definition(timezone=None), "America/New_York"), winter) == \
        datetime(2026, 11, 23, 13, tzinfo=UTC)


def test_a_scheduled_report_is_built_for_its_tick_and_queued_once(store: AuditSource, insert: Any,
                                                                  state: StateStore, tmp_path: Path) -> None:
    insert({"jobs": [{"at": "-3d", "status": "failed", "agent_id": "a1", "count": 4}]})
    tick = datetime(2026, 11, 16, 7, tzinfo=UTC)       # Mon 16 Nov 08:00 Berlin: the week before T0
    clock = Clock(tick + timedelta(seconds=3))
    first = run_report_tick(context(store, state, tmp_path, clock, "r1"), definition(), tick)
    second = run_report_tick(context(store, state, tmp_path, clock, "r2"), definition(), tick)
    assert first.status == RunOutcome.OK and len(first.queued) == 1 and first.attempts == 1
    assert second.status == RunOutcome.ELSEWHERE and second.queued == []
    [row] = report_rows(state)
    assert (row.kind, row.rule, row.channel) == ("report", "digest", "archive")
    period = row.payload["report"]["period"]
    # last_week at Monday 08:00 Berlin: Monday 9 Nov 00:00 to Monday 16 Nov 00:00, Berlin time.
    assert (period["start"], period["end"]) == ("2026-11-08T23:00:00+00:00", "2026-11-15T23:00:00+00:00")
    [run] = ledger.history(state, ledger.report_job("digest"))
    assert (run.replica, run.status, run.alerts, run.scheduled_for) == ("r1", "ok", 1, tick)


@pytest.fixture
def broken_ctx(store: AuditSource, state: StateStore, tmp_path: Path) -> Iterator[TickContext]:
    """A tick context whose audit store has no jobs table (every report run fails)."""
    good = context(store, state, tmp_path, Clock(T0))
    broken = AuditSource.from_config(SourceConfig(url=store.engine.url.render_as_string(False),
                                                  tables={"jobs": "no_such_table"}))
    try:
        yield TickContext(good.config, broken, state, good.renderer, "r1", good.clock)
    finally:
        broken.engine.dispose()


def test_a_failing_report_is_retried_then_recorded_and_queues_nothing(broken_ctx: TickContext,
                                                                    state: StateStore) -> None:
    waits: list[float] = []
    outcome = run_report_tick(broken_ctx, definition(), T0, retry_waits=(1.0, 2.0),
                              stopped=lambda seconds: bool(waits.append(seconds)))
    assert outcome.status == RunOutcome.ERROR and outcome.attempts == 3 and waits == [1.0, 2.0]
    assert "no_such_table" in (outcome.error or "")
    assert report_rows(state) == []
    [run] = ledger.history(state, ledger.report_job("digest"))
    assert run.status == "error" and "no_such_table" in run.error


def test_a_stopping_daemon_leaves_a_failing_report_claimed_for_a_take_over(broken_ctx: TickContext,
                                                                           state: StateStore) -> None:
    outcome = run_report_tick(broken_ctx, definition(), T0, retry_waits=(60.0,), stopped=lambda _: True)
    assert outcome.status == "stopped" and outcome.attempts == 1
    [run] = ledger.history(state, ledger.report_job("digest"))
    assert run.status == "claimed"       # a survivor, or this replica restarted, takes it over


def test_a_report_that_cannot_succeed_is_not_retried(store: AuditSource, state: StateStore,
                                                     tmp_path: Path) -> None:
    waits: list[float] = []
    ctx = context(store, state, tmp_path, Clock(T0))
    outcome = run_report_tick(ctx, definition(scope={"user": "nobody@example.com"}), T0,
                              stopped=lambda seconds: bool(waits.append(seconds)))
    assert outcome.status == RunOutcome.ERROR and outcome.attempts == 1 and waits == []
    assert "nobody@example.com" in (outcome.error or "")


def test_a_run_later_than_catch_up_is_skipped(store: AuditSource, state: StateStore,
                                             tmp_path: Path) -> None:
    ctx = context(store, state, tmp_path, Clock(T0 + timedelta(hours=2, minutes=1)))
    assert run_report_tick(ctx, definition(), T0).status == "late"
    ctx = context(store, state, tmp_path, Clock(T0 + timedelta(minutes=9)))     # catch_up 0: ten minutes
    assert run_report_tick(ctx, definition(catch_up="0"), T0).status == RunOutcome.OK
    assert [r.status for r in ledger.history(state)] == ["ok"]


def test_a_report_whose_claim_was_taken_over_queues_nothing(store: AuditSource, state: StateStore,
                                                          tmp_path: Path) -> None:
    clock = Clock(T0)
    ctx = context(store, state, tmp_path, clock, "r1")
    job = ledger.report_job("digest")
    ledger.register_replica(state, "r1", T0)
    assert ledger.claim(state, job, T0, "r1", T0)
    reaped = ledger.reap(state, "r1", "r2", T0)     # r2 presumed r1 dead and took its claims
    assert reaped is not None and reaped.orphans == [(job, T0)]
    outcome = run_report_tick(ctx, definition(), T0, claimed=True)
    assert outcome.status == RunOutcome.ELSEWHERE and report_rows(state) == []


def _add_report(config_path: Path, body: dict[str, Any]) -> None:
    folder = config_path.parent / "reports"
    folder.mkdir(exist_ok=True)
    (folder / f"{body['name']}.yaml").write_text(json.dumps(body))
    config = json.loads(config_path.read_text())
    config["reports"] = ["reports/"]
    config_path.write_text(json.dumps(config))


def test_the_daemon_sends_a_report_missed_during_downtime_once(deployment: Path) -> None:
    now = datetime.now(UTC)
    hour_ago = (now - timedelta(hours=1)).astimezone(BERLIN)
    _add_report(deployment, {"name": "hourly-triage", "report": "triage", "period": "1h", "channels": ["archive"],
                             "schedule": f"{hour_ago.minute} * * * *", "timezone": "Europe/Berlin"})
    _add_report(deployment, {"name": "too-late", "report": "triage", "period": "1h", "channels": ["archive"],
                             "schedule": f"{hour_ago.minute} {hour_ago.hour} * * *", "timezone": "Europe/Berlin",
                             "catch_up": "30m"})
    state_url_ = json.loads(deployment.read_text())["state"]["url"]
    for attempt in range(2):          # a start, then a restart: the tick is claimed already
        daemon = Daemon(str(deployment), None)
        assert daemon.start() is None
        assert sorted(daemon.runtime.reports) == ["hourly-triage", "too-late"]
        daemon.report_one_offs.shutdown(wait=True)
        if attempt == 0:   # the delivery loop sends it (its own thread): wait for the file
            wait_for(lambda: list((deployment.parent / "out").glob("*-hourly-triage-report.html")), 10, "the report")
        assert daemon.shutdown()
        state = StateStore.open(state_url_)
        try:
            runs = ledger.history(state, ledger.report_job("hourly-triage"))
            assert ledger.history(state, ledger.report_job("too-late")) == [], "an hour late is past its catch_up"
            assert len(report_rows(state)) == 1, attempt
        finally:
            state.close()
        tick = latest_tick(daemon.runtime.report_triggers["hourly-triage"], daemon.clock())
        assert [(r.status, r.scheduled_for) for r in runs] == [("ok", tick)], attempt


@pytest.mark.postgres
def test_run_sends_a_report_at_its_cron_minute_in_its_time_zone(live: Deployment) -> None:
    now = datetime.now(UTC)
    due = (now + timedelta(seconds=70 if now.second > 50 else 60)).replace(second=0, microsecond=0)
    local = due.astimezone(KATHMANDU)
    config = live.config({}, reload_watch=False)
    _add_report(config, {"name": "ops-triage", "report": "triage", "period": "1h", "channels": ["oncall", "mail"],
                         "schedule": f"{local.minute} {local.hour} * * *", "timezone": "Asia/Kathmandu"})
    proc, listen, log_path = live.start(config)
    posts = lambda: live.slack.calls("chat.postMessage")  # noqa: E731
    wait_for(lambda: posts() and live.smtp.received, (due - now).total_seconds() + 30, "the report")
    arrived = datetime.now(UTC)
    assert arrived >= due, (arrived, due)
    [post] = posts()
    assert "Triage" in post["text"] and post["blocks"]
    [mail] = live.smtp.received
    assert "Triage" in mail.message["Subject"]
    [run] = live.ledger_rows(ledger.report_job("ops-triage"))
    assert (run.status, run.scheduled_for) == ("ok", due)
    assert 'audit_watch_report_runs_total{report="ops-triage",result="ok"} 1.0' in http_get(listen, "/metrics")[1].decode()
    code, seconds = stop(proc)
    assert code == 0 and seconds < 10
    # A restart within catch_up finds the tick claimed: nothing is sent twice.
    proc, _, log_path = live.start(config, "restart")
    wait_for(lambda: any("audit-watch running" in line for line in log_path.read_text().splitlines()), 10, "start")
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert len(posts()) == 1 and len(live.smtp.received) == 1


def test_run_once_sends_the_reports_that_are_due(deployment: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from audit_watch.daemon.once import run_once

    _add_report(deployment, {"name": "hourly-triage", "report": "triage", "period": "1h", "channels": ["archive"],
                             "schedule": "0 * * * *", "timezone": "UTC"})
    assert run_once(str(deployment), None, T0 + timedelta(minutes=5)) == 0
    out = capsys.readouterr().out
    assert "reports queued: hourly-triage (2026-11-20T12:00:00+00:00)" in out
    assert "2 notifications queued; delivered 2" in out          # the rule's alert and the report
    assert run_once(str(deployment), None, T0 + timedelta(minutes=6)) == 0      # same report tick: not again
    assert "reports queued" not in capsys.readouterr().out
    reports = sorted(p.name for p in (deployment.parent / "out").glob("*-hourly-triage-report.*"))
    assert [name.rsplit(".", 1)[1] for name in reports] == ["html", "json", "txt"], reports


def test_a_reload_adds_reschedules_and_removes_report_jobs(deployment: Path) -> None:
    body = {"name": "daily-triage", "report": "triage", "period": "1d", "channels": ["archive"],
            "schedule": "0 7 * * *", "timezone": "UTC", "catch_up": "0"}
    _add_report(deployment, body)
    daemon = Daemon(str(deployment), None)
    assert daemon.start() is None
    try:
        job = lambda name: daemon.scheduler.get_job(ledger.report_job(name))  # noqa: E731
        assert str(job("daily-triage").trigger) == "cron[0 7 * * *, UTC]"
        _add_report(deployment, {**body, "schedule": "30 6 * * *", "timezone": "Europe/Berlin"})
        _add_report(deployment, {**body, "name": "second"})
        assert daemon.reload("test") is True
        assert str(job("daily-triage").trigger) == "cron[30 6 * * *, Europe/Berlin]"
        assert job("second") is not None
        (deployment.parent / "reports" / "second.yaml").write_text("name: second\nreport: triage\nschedule: nope\n")
        assert daemon.reload("test") is False and job("second") is not None     # refused: all stays
        (deployment.parent / "reports" / "second.yaml").unlink()
        assert daemon.reload("test") is True
        assert job("second") is None and sorted(daemon.runtime.reports) == ["daily-triage"]
    finally:
        assert daemon.shutdown()


def test_a_dead_replicas_report_run_is_taken_over_while_still_timely(deployment: Path) -> None:
    from audit_watch.daemon.runtime import load_runtime
    from audit_watch.daemon.takeover import settle_orphans

    _add_report(deployment, {"name": "hourly-triage", "report": "triage", "period": "1h", "channels": ["archive"],
                             "schedule": "0 * * * *", "timezone": "UTC"})
    state = StateStore.open(json.loads(deployment.read_text())["state"]["url"])
    ledger.ensure_ledger_schema(state)
    try:
        now = T0 + timedelta(minutes=30)
        runtime, problems = load_runtime(str(deployment), None, state, "survivor", lambda: now, None)
        assert runtime is not None and problems == []
        job = ledger.report_job("hourly-triage")
        for replica in ("dead", "survivor"):
            ledger.register_replica(state, replica, now)
        for tick in (T0, T0 - timedelta(hours=3)):
            assert ledger.claim(state, job, tick, "dead", now)
        reaped = ledger.reap(state, "dead", "survivor", now)
        assert reaped is not None
        # The 12:00 run is within catch_up (2h): run again here; the 09:00 one is past it.
        assert settle_orphans(runtime.ctx, runtime, reaped, now) == [(job, T0)]
        late = [r for r in ledger.history(state, job) if r.scheduled_for == T0 - timedelta(hours=3)]
        assert [(r.status, r.replica) for r in late] == [("abandoned", "survivor")]
        assert "past its catch_up, not sent" in late[0].error
        outcome = run_report_tick(runtime.ctx, runtime.reports["hourly-triage"], T0, claimed=True)
        assert outcome.status == RunOutcome.OK and len(outcome.queued) == 1
    finally:
        runtime.ctx.src.engine.dispose()
        state.close()
