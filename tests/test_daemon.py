"""The daemon: ticks, self-alerts, freshness, ``run --once``, reload (no wall clock);
then ``audit-watch run`` as a subprocess against PostgreSQL, in real time.

The subprocess tests share their helpers with test_replicas.py.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import create_engine, select, text
from test_ledger import state

from audit_watch.alerting.pipeline import process
from audit_watch.alerting.state import StateStore, outbox
from audit_watch.alerting.views import alerts_table
from audit_watch.channels.render import Renderer
from audit_watch.config.model import Config
from audit_watch.core.outcomes import RunOutcome
from audit_watch.daemon import ledger, service
from audit_watch.daemon import runtime as runtime_module
from audit_watch.daemon.context import TickContext
from audit_watch.daemon.freshness import FRESHNESS_RULE, FreshnessWatch, fires_on_silence, update_freshness_alert
from audit_watch.daemon.once import run_once
from audit_watch.daemon.runtime import watch_snapshot
from audit_watch.daemon.schedules import TickPoolExecutor, latest_tick, scheduled_time
from audit_watch.daemon.self_alerts import failing_rule_name
from audit_watch.daemon.service import Daemon
from audit_watch.daemon.tick import run_rule_tick
from audit_watch.rules.loader import RULE_ADAPTER
from audit_watch.store.rows import insert_rows
from audit_watch.store.schema import create_reference_tables
from audit_watch.store.settings import SourceConfig
from audit_watch.store.source import AuditSource

from fake_slack import FakeSlack
from smtp_server import SmtpServer, free_port
from test_state import PG_ADMIN_URL, T0, state_url, temporary_postgres

S = timedelta(seconds=1)
FAILED_JOBS = {"name": "failed-jobs", "kind": "threshold", "where": {"status": "failed"}, "window": "15m",
               "every": "1m", "threshold": {"op": ">=", "value": 2}, "notify": ["archive"]}


def rule(**keys: Any) -> Any:
    """The failed-jobs rule with ``keys`` changed; a key given as None is dropped."""
    data = {k: v for k, v in {**FAILED_JOBS, **keys}.items() if v is not None}
    return RULE_ADAPTER.validate_python(data)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


def context(store: AuditSource, state: StateStore, tmp_path: Path, clock: Clock, replica: str = "r1",
            **daemon: Any) -> TickContext:
    config = Config.model_validate({"channels": {"archive": {"type": "file", "path": str(tmp_path / "out")}},
                                    "daemon": {"listen": None, **daemon}})
    return TickContext(config, store, state, Renderer(), replica, clock)


def titles(state: StateStore) -> list[str]:
    with state.read() as conn:
        return [f"{r.kind}: {r.rule}" for r in conn.execute(select(outbox.c.kind, outbox.c.rule).order_by(outbox.c.id))]


# --- one tick (deterministic) ------------------------------------------------------------------


def test_a_tick_is_evaluated_by_the_replica_that_claims_it(store: AuditSource, insert: Any, state: StateStore,
                                                           tmp_path: Path) -> None:
    insert({"jobs": [{"at": "-5m", "status": "failed", "count": 3}]})
    clock = Clock(T0 + timedelta(milliseconds=400))
    first = run_rule_tick(context(store, state, tmp_path, clock, "r1"), rule(), T0)
    second = run_rule_tick(context(store, state, tmp_path, clock, "r2"), rule(), T0)
    assert first.status == RunOutcome.OK and len(first.evaluation.alerts) == 1 and len(first.queued) == 1
    assert second.status == RunOutcome.ELSEWHERE and second.evaluation is None
    [row] = ledger.history(state, "failed-jobs")
    assert (row.replica, row.status, row.alerts, row.scheduled_for) == ("r1", "ok", 1, T0)
    assert first.evaluation.now == T0          # the tick, not the (later) clock


def test_a_failing_rule_alerts_after_n_errors_and_resolves_when_it_works_again(
        store: AuditSource, state: StateStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(T0)
    good = context(store, state, tmp_path, clock, rule_error_alert_after=3)
    broken_source = AuditSource.from_config(SourceConfig(url=str(store.engine.url.render_as_string(False)),
                                                         tables={"jobs": "no_such_table"}))
    bad = TickContext(good.config, broken_source, state, good.renderer, "r1", clock)
    try:
        with caplog.at_level(logging.DEBUG):
            outcomes = [run_rule_tick(bad, rule(), T0 + i * timedelta(minutes=1)) for i in range(4)]
    finally:
        broken_source.engine.dispose()
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # The first error of the streak, and the alert at the third: not a line per tick.
    assert len([m for m in warned if "failed at" in m]) == 1 and len([m for m in warned if "failing since" in m]) == 1
    assert [o.status for o in outcomes] == ["error"] * 4 and [o.errors_in_a_row for o in outcomes] == [1, 2, 3, 4]
    assert [len(o.queued) for o in outcomes] == [0, 0, 1, 0]          # once, at the third error
    assert titles(state) == ["firing: audit-watch: rule failed-jobs failing"]
    with state.read() as conn:
        payload = conn.execute(select(outbox.c.payload)).scalar_one()
    assert "failed 3 times in a row since 2026-11-20 12:00:00 UTC" in payload["text"]
    recovered = run_rule_tick(good, rule(), T0 + timedelta(minutes=4))
    assert recovered.status == RunOutcome.OK and recovered.errors_in_a_row == 0 and len(recovered.queued) == 1
    assert titles(state)[-1] == "resolved: audit-watch: rule failed-jobs failing"
    assert run_rule_tick(good, rule(), T0 + timedelta(minutes=5)).queued == []


def test_a_silent_store_raises_one_alert_and_holds_the_rules_that_fire_on_silence(
        store: AuditSource, insert: Any, state: StateStore, tmp_path: Path) -> None:
    insert({"jobs": [{"at": "-3h", "status": "failed", "agent_id": "a1"}]})
    clock = Clock(T0)
    watch = FreshnessWatch(Config.model_validate({"daemon": {"freshness": {"max_silence": "2h"}}}).daemon.freshness)
    ctx = context(store, state, tmp_path, clock)
    ctx.hold = watch.hold
    absence = rule(name="agent-quiet", kind="absence", lookback="1d", where={}, group_by=["agent_id"],
                   threshold=None)
    reading = watch.observe(store, T0)
    assert reading.silent and reading.newest == T0 - timedelta(hours=3)
    assert watch.hold(absence) and not watch.hold(rule())
    assert run_rule_tick(ctx, absence, T0).status == RunOutcome.HELD
    assert run_rule_tick(ctx, rule(), T0).status == RunOutcome.OK
    assert len(update_freshness_alert(ctx, reading, T0, [absence, rule()])) == 1
    with state.read() as conn:
        text_ = conn.execute(select(outbox.c.payload)).scalar_one()["text"]
    assert "No new rows in jobs, threads, events since 2026-11-20 09:00:00 UTC" in text_
    assert "Held until rows arrive: agent-quiet." in text_
    assert update_freshness_alert(ctx, reading, T0 + S, [absence]) == []          # still firing: quiet
    insert({"jobs": [{"id": "fresh", "at": "-1m", "status": "complete"}]})
    reading = watch.observe(store, T0 + 2 * S)
    assert not reading.silent and not watch.hold(absence)
    assert len(update_freshness_alert(ctx, reading, T0 + 2 * S, [absence])) == 1
    assert titles(state) == [f"firing: {FRESHNESS_RULE}", f"resolved: {FRESHNESS_RULE}"]


def test_which_rules_fire_on_silence() -> None:
    assert fires_on_silence(rule(kind="absence", lookback="1d", threshold=None))
    assert fires_on_silence(rule(threshold={"op": "<", "value": 5}))
    assert not fires_on_silence(rule())
    assert fires_on_silence(rule(kind="spike", direction="down", threshold=None))
    assert not fires_on_silence(rule(kind="spike", threshold=None))
    assert fires_on_silence(rule(kind="cron_missed", where={}, threshold=None, source="events"))


def test_the_executor_tells_a_run_its_scheduled_tick() -> None:
    seen: list[datetime | None] = []
    done = threading.Event()
    scheduler = BackgroundScheduler(executors={"default": TickPoolExecutor(2)}, timezone=UTC)
    due = datetime.now(UTC) - timedelta(milliseconds=500)   # already due: runs at once
    scheduler.add_job(lambda: (seen.append(scheduled_time()), done.set()), "interval", hours=1,
                      next_run_time=due, misfire_grace_time=None)
    scheduler.start()
    try:
        assert done.wait(5)
    finally:
        scheduler.shutdown(wait=True)
    assert seen == [due] and scheduled_time() is None


# --- run --once and reload (SQLite, no waiting) -------------------------------------------------


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    src = AuditSource.from_url(f"sqlite:///{tmp_path / 'audit.db'}", readonly=False)
    create_reference_tables(src.engine, src.tables)
    insert_rows(src.engine, src.tables, {"jobs": [{"at": "-5m", "status": "failed", "count": 3}]}, T0)
    src.engine.dispose()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "failed.yaml").write_text(json.dumps(FAILED_JOBS))
    config = tmp_path / "audit-watch.yaml"
    config.write_text(json.dumps({
        "source": {"url": f"sqlite:///{tmp_path / 'audit.db'}"}, "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        "rules": ["rules/"], "channels": {"archive": {"type": "file", "path": str(tmp_path / "out")}},
        "daemon": {"listen": None, "freshness": {"enabled": False}},
    }))
    return config


def test_run_once_evaluates_what_is_due_then_delivers(deployment: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_once(str(deployment), None, T0 + timedelta(seconds=20)) == 0
    out = capsys.readouterr().out
    assert "1 rules; evaluated 1" in out and "1 notifications queued; delivered 1" in out
    assert len(list((deployment.parent / "out").glob("*failed-jobs-firing.txt"))) == 1
    assert run_once(str(deployment), None, T0 + timedelta(seconds=40)) == 0      # same tick (12:00)
    assert "already evaluated at this tick 1" in capsys.readouterr().out
    (deployment.parent / "rules" / "bad.yaml").write_text("name: bad\nkind: threshold\nwindow: 5x\n")
    assert run_once(str(deployment), None, T0 + timedelta(minutes=1)) == 2       # bad input, good rules ran
    captured = capsys.readouterr()
    assert "bad.yaml:3: window:" in captured.err and "evaluated 1" in captured.out


def test_a_reload_applies_rule_changes_and_refuses_broken_files(deployment: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    rules = deployment.parent / "rules"
    (rules / "failed.yaml").write_text(json.dumps({**FAILED_JOBS, "every": "1h"}))
    daemon = Daemon(str(deployment), None)
    assert daemon.start() is None
    try:
        assert daemon.scheduler is not None and daemon.scheduler.get_job("rule:failed-jobs") is not None
        before = daemon.runtime
        snapshot = watch_snapshot(before.config)
        (rules / "broken.yaml").write_text("name: broken\nkind: threshold\nnotfiy: [archive]\n")
        assert watch_snapshot(before.config) != snapshot
        with caplog.at_level(logging.ERROR):
            assert daemon.reload("test") is False
        assert daemon.runtime is before
        assert any("broken.yaml:3: notfiy: unknown key" in r.getMessage() for r in caplog.records)
        (rules / "broken.yaml").unlink()
        (rules / "second.yaml").write_text(json.dumps({**FAILED_JOBS, "name": "second", "every": "2h"}))
        (rules / "failed.yaml").write_text(json.dumps({**FAILED_JOBS, "every": "30m"}))
        assert daemon.reload("test") is True
        assert set(daemon.runtime.rules) == {"failed-jobs", "second"}
        assert str(daemon.scheduler.get_job("rule:failed-jobs").trigger).startswith("interval[0:30:00]")
        assert daemon.scheduler.get_job("rule:second") is not None
        (rules / "second.yaml").unlink()
        daemon._watch()                       # a change seen once: wait until the files settle
        assert "second" in daemon.runtime.rules
        daemon._watch()                       # unchanged since: reload
        assert "second" not in daemon.runtime.rules and daemon.scheduler.get_job("rule:second") is None
    finally:
        assert daemon.shutdown()


def test_a_reload_that_fails_in_an_unexpected_way_keeps_the_running_configuration(
        deployment: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = deployment.parent / "rules"
    (rules / "failed.yaml").write_text(json.dumps({**FAILED_JOBS, "every": "1h"}))
    daemon = Daemon(str(deployment), None)
    assert daemon.start() is None
    assert daemon.scheduler is not None
    scheduler = daemon.scheduler

    def jobs() -> dict[str, str]:
        return {job.id: str(job.trigger) for job in scheduler.get_jobs() if not job.id.startswith("builtin:")}

    try:
        before, scheduled = daemon.runtime, jobs()
        assert scheduled == {"rule:failed-jobs": "interval[1:00:00]"}

        def broken_load(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(service, "load_runtime", broken_load)
        with caplog.at_level(logging.ERROR):
            assert daemon.reload("test") is False
        assert daemon.runtime is before and jobs() == scheduled
        [failure] = [r for r in caplog.records if r.getMessage() == "reload refused: loading the configuration failed"]
        assert failure.exc_info is not None and "disk on fire" in str(failure.exc_info[1])
        monkeypatch.undo()

        # Half-way through rescheduling: "second" is added, then changing failed-jobs fails.
        (rules / "second.yaml").write_text(json.dumps({**FAILED_JOBS, "name": "second", "every": "2h"}))
        (rules / "failed.yaml").write_text(json.dumps({**FAILED_JOBS, "every": "30m"}))
        schedule_rule = daemon._schedule_rule

        def failing_for_the_new_config(runtime: Any, name: str) -> None:
            if runtime is not before and name == "failed-jobs":
                raise RuntimeError("scheduler said no")
            schedule_rule(runtime, name)

        monkeypatch.setattr(daemon, "_schedule_rule", failing_for_the_new_config)
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert daemon.reload("test") is False
        assert any(r.getMessage() == "reload refused: scheduling the new configuration failed" for r in caplog.records)
        assert daemon.runtime is before and jobs() == scheduled    # "second" gone again, failed-jobs back at 1h
        monkeypatch.undo()
        assert daemon.reload("test") is True
        assert jobs() == {"rule:failed-jobs": "interval[0:30:00]", "rule:second": "interval[2:00:00]"}
    finally:
        assert daemon.shutdown()


def test_a_rule_that_cannot_be_scheduled_is_a_problem_at_its_file_and_line(
        deployment: Path, monkeypatch: pytest.MonkeyPatch, state: StateStore) -> None:
    """Whatever the validation missed: at start the rule is skipped, on a reload the reload is refused."""
    rules = deployment.parent / "rules"
    (rules / "second.yaml").write_text(json.dumps({**FAILED_JOBS, "name": "second"}))
    build = runtime_module.rule_trigger

    def rule_trigger(rule: Any, default_timezone: str) -> Any:
        if rule.name == "second":
            raise RuntimeError("no trigger for you")
        return build(rule, default_timezone)

    monkeypatch.setattr(runtime_module, "rule_trigger", rule_trigger)
    started, problems = runtime_module.load_runtime(str(deployment), None, state, "r1", Clock(T0), None)
    assert started is not None and set(started.rules) == set(started.triggers) == {"failed-jobs"}
    assert [str(p).split("/")[-1] for p in problems] == [
        "second.yaml:1: every: cannot be scheduled: RuntimeError: no trigger for you"]
    reloaded, problems = runtime_module.load_runtime(str(deployment), None, state, "r1", Clock(T0), None,
                                                     previous=started)
    assert reloaded is None and len(problems) == 1
    started.ctx.src.engine.dispose()


def _fire(state_url_: str, rule: Any, now: datetime) -> None:
    """Give ``rule`` a firing alert in the state database, as its evaluation would."""
    from test_state import evaluation, make_alert

    config = Config.model_validate({"channels": {"archive": {"type": "file", "path": "/nonexistent"}}})
    state = StateStore.open(state_url_)
    try:
        process([evaluation(rule, now, make_alert(rule=rule.name, now=now))], config, state, now)
    finally:
        state.close()


def _open_alerts(state_url_: str) -> dict[str, str]:
    state = StateStore.open(state_url_)
    try:
        return {row.rule: row.state for row in alerts_table(state)}
    finally:
        state.close()


def test_removed_rules_do_not_leave_their_alerts_firing(deployment: Path) -> None:
    rules = deployment.parent / "rules"
    (rules / "failed.yaml").write_text(json.dumps({**FAILED_JOBS, "every": "1h"}))
    # Yearly: its catch-up tick (1 January) is older than its alert, so it is skipped as stale
    # and the alert stays as this test sets it.
    (rules / "second.yaml").write_text(json.dumps({**FAILED_JOBS, "name": "second", "every": None,
                                                   "schedule": "0 0 1 1 *", "timezone": "UTC"}))
    state_url_ = json.loads(deployment.read_text())["state"]["url"]
    now = datetime.now(UTC)
    _fire(state_url_, rule(name="second", notify=["archive"]), now - timedelta(minutes=5))
    _fire(state_url_, rule(name="deleted-while-down", notify=["archive"]), now - timedelta(minutes=20))
    _fire(state_url_, rule(name=failing_rule_name("deleted-while-down"), notify=["archive"]),
          now - timedelta(minutes=20))
    # Unknown here but evaluated a minute ago: another replica still runs it (a rolling change).
    _fire(state_url_, rule(name="on-another-replica", notify=["archive"]), now - timedelta(minutes=1))
    daemon = Daemon(str(deployment), None)
    assert daemon.start() is None
    try:
        daemon.one_offs.shutdown(wait=True)
        # Removed while no daemon ran: resolved at start, quietly (its channels are unknown now).
        states = _open_alerts(state_url_)
        assert states["deleted-while-down"] == states[failing_rule_name("deleted-while-down")] == "resolved"
        assert states["second"] == states["on-another-replica"] == "firing"
        (rules / "second.yaml").unlink()
        assert daemon.reload("test") is True
        assert _open_alerts(state_url_)["second"] == "resolved"
        state = StateStore.open(state_url_)
        try:
            with state.read() as conn:
                queued = [(r.kind, r.rule) for r in conn.execute(select(outbox.c.kind, outbox.c.rule))]
        finally:
            state.close()
        assert [r for r in queued if r[0] == "resolved"] == [("resolved", "second")]
    finally:
        assert daemon.shutdown()


def test_after_downtime_each_rule_runs_once_at_its_latest_tick(deployment: Path) -> None:
    rules = deployment.parent / "rules"
    (rules / "failed.yaml").write_text(json.dumps({**FAILED_JOBS, "every": "1h"}))
    (rules / "daily.yaml").write_text(json.dumps({**FAILED_JOBS, "name": "daily", "every": None,
                                                  "schedule": "30 6 * * *", "timezone": "Europe/Berlin"}))
    state_url_ = json.loads(deployment.read_text())["state"]["url"]
    for attempt in range(2):          # a start, then a restart: the ticks are claimed already
        daemon = Daemon(str(deployment), None)
        assert daemon.start() is None
        daemon.one_offs.shutdown(wait=True)   # the catch-up runs, to the end
        assert daemon.shutdown()
        state = StateStore.open(state_url_)
        rows = ledger.history(state)
        state.close()
        runtime = daemon.runtime
        ticks = {name: latest_tick(runtime.triggers[name], daemon.clock()) for name in runtime.rules}
        assert sorted((r.job, r.scheduled_for) for r in rows) == sorted(ticks.items()), attempt
        assert ticks["daily"].astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") == "06:30"


# --- audit-watch run as a subprocess (PostgreSQL, real time) ----------------------------------------


@dataclass
class Deployment:
    folder: Path
    source_url: str
    state_url: str
    slack: FakeSlack
    smtp: SmtpServer
    procs: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    @property
    def source(self) -> AuditSource:
        return AuditSource.from_url(self.source_url, readonly=False)

    def config(self, rules: dict[str, dict[str, Any]], **daemon: Any) -> Path:
        folder = self.folder / "rules"
        folder.mkdir(exist_ok=True)
        for name, body in rules.items():
            (folder / f"{name}.yaml").write_text(json.dumps(body))
        path = self.folder / "audit-watch.yaml"
        path.write_text(json.dumps({
            "source": {"url": self.source_url, "statement_timeout": "5s"}, "state": {"url": self.state_url},
            "rules": ["rules/"],
            "channels": {"oncall": {"type": "slack", "token": "xoxb-test", "channel": "#ops",
                                    "base_url": self.slack.base_url},
                         "mail": {"type": "email", "host": "127.0.0.1", "port": self.smtp.port,
                                  "from": "audit-watch@example.com", "to": ["ops@example.com"], "timeout": "5s"}},
            "daemon": {"freshness": {"enabled": False}, **daemon},
        }))
        return path

    def start(self, config: Path, name: str = "daemon") -> tuple[subprocess.Popen[bytes], str, Path]:
        listen = f"127.0.0.1:{free_port()}"
        log_path = self.folder / f"{name}.log"
        command = [sys.executable, "-m", "audit_watch", "run", "--config", str(config), "--log-format", "json",
                   "--listen", listen]
        proc = subprocess.Popen(command, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, cwd=self.folder,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs.append((proc, log_path))
        wait_for(lambda: http_get(listen, "/healthz")[0] in (200, 503), 20, f"{name} to listen")
        return proc, listen, log_path

    def insert(self, rows: dict[str, list[dict[str, Any]]]) -> None:
        now = datetime.now(UTC)
        for items in rows.values():
            for item in items:
                item.setdefault("id", uuid.uuid4().hex)
                item.setdefault("at", now)
        src = self.source
        try:
            insert_rows(src.engine, src.tables, rows, now)
        finally:
            src.engine.dispose()

    def ledger_rows(self, job: str | None = None) -> list[Any]:
        state = StateStore.open(self.state_url)
        try:
            return ledger.history(state, job)
        finally:
            state.close()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def http_get(listen: str, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{listen}{path}", timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def log_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            records.append({"level": "raw", "message": line})   # must not happen: asserted below
    return records


def replica_id(log_path: Path) -> str:
    """The replica id a daemon announced in its log."""
    for record in log_records(log_path):
        if record["message"].startswith("audit-watch running as replica "):
            return record["message"].split()[4].rstrip(":")
    raise AssertionError(f"{log_path.name}: no start message")


def stop(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=15)
    return code, time.monotonic() - started


@pytest.fixture(scope="module")
def postgres_pair() -> Iterator[tuple[str, str]]:
    """A source and a state database, created for this module and dropped after."""
    with temporary_postgres() as source_url, temporary_postgres() as state_url_:
        src = AuditSource.from_url(source_url, readonly=False)
        create_reference_tables(src.engine, src.tables)
        src.engine.dispose()
        StateStore.open(state_url_).close()
        yield source_url, state_url_


@pytest.fixture
def live(postgres_pair: tuple[str, str], tmp_path: Path) -> Iterator[Deployment]:
    source_url, state_url_ = postgres_pair
    with FakeSlack() as slack, SmtpServer() as smtp:
        deployment = Deployment(tmp_path, source_url, state_url_, slack, smtp)
        try:
            yield deployment
        finally:
            for proc, _ in deployment.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        for proc, path in deployment.procs:   # --log-format json: nothing else on the output
            if proc.returncode == 0:         # (a killed one may have died mid-line)
                assert all(r["level"] != "raw" for r in log_records(path)), f"{path.name}: a line is not JSON"


SHARE = {"name": "failing-share", "kind": "ratio", "where": {"status": "failed"}, "ratio": {"op": ">=", "value": 0.5},
         "min_total": 3, "window": "1m", "every": "1s", "notify": ["oncall", "mail"], "source": "jobs"}


@pytest.mark.postgres
def test_run_alerts_resolves_survives_a_broken_reload_and_stops_on_sigterm(live: Deployment) -> None:
    config = live.config({"share": SHARE}, reload_watch=False)
    proc, listen, log_path = live.start(config)
    posts = lambda: live.slack.calls("chat.postMessage")  # noqa: E731
    live.insert({"jobs": [{"status": "failed", "agent_id": "a1"} for _ in range(3)]})
    wait_for(lambda: len(posts()) == 1 and len(live.smtp.received) == 1, 15, "the firing message")
    assert "failing-share" in posts()[0]["text"] and "failing-share" in live.smtp.received[0].message["Subject"]
    live.insert({"jobs": [{"status": "complete", "agent_id": "a1"} for _ in range(10)]})
    wait_for(lambda: len(posts()) == 2 and len(live.smtp.received) == 2, 15, "the resolution")
    assert posts()[1]["thread_ts"] == "1700000000.000001" and len(live.slack.calls("chat.update")) == 1
    assert "Resolved" in live.smtp.received[1].message["Subject"]

    status, body = http_get(listen, "/healthz")
    assert status == 200 and json.loads(body)["rules"] == 1
    # The pass that sent the resolution counts its outcomes when it ends (after the email).
    delivered = 'audit_watch_deliveries_total{channel="oncall",result="delivered"} 2.0'

    def scraped() -> str | None:
        text_ = http_get(listen, "/metrics")[1].decode()
        return text_ if delivered in text_ else None

    metrics = wait_for(scraped, 10, "the deliveries in /metrics")
    assert 'audit_watch_evaluations_total{result="ok",rule="failing-share"}' in metrics
    assert 'audit_watch_alerts{state="resolved"} 1.0' in metrics

    (live.folder / "rules" / "broken.yaml").write_text("name: broken\nkind: ratio\nwindow: 10 minutes\n")
    proc.send_signal(signal.SIGHUP)
    refused = wait_for(lambda: [r for r in log_records(log_path) if r["message"].startswith("reload refused:")],
                       10, "the refused reload")
    assert any("broken.yaml:3: window:" in r["message"] for r in refused) and proc.poll() is None
    live.insert({"jobs": [{"status": "failed", "agent_id": "a2"} for _ in range(20)]})
    wait_for(lambda: len(posts()) == 3, 15, "the old rule firing after the refused reload")

    code, seconds = stop(proc)
    assert code == 0 and seconds < 10, (code, seconds)
    assert log_records(log_path)[-1]["message"] == "stopped"
    ticks = [r for r in live.ledger_rows("failing-share") if r.status != "claimed"]
    assert len({r.scheduled_for for r in ticks}) == len(ticks) and all(r.status == "ok" for r in ticks)


# What a lenient cron parser let through `check` and then stopped a daemon at its reload.
UNSCHEDULABLE = ["0 0 31 2 *", "5-3 * * * *", "0 0 * * 7-1", "0 0 ? * 1", "0 0 15W * *"]


@pytest.mark.postgres
def test_sighup_with_an_unschedulable_cron_is_refused_and_the_daemon_keeps_firing(live: Deployment) -> None:
    # Only this test's agents: the module's other tests leave failed jobs in the shared store.
    where = {"status": "failed", "agent_id": {"in": ["agent-before", "agent-after"]}}
    by_agent = {"name": "failed-by-agent", "kind": "threshold", "source": "jobs", "where": where,
                "group_by": ["agent_id"], "window": "1m", "every": "1s", "threshold": {"op": ">=", "value": 3},
                "notify": ["oncall"]}
    proc, _, log_path = live.start(live.config({"by-agent": by_agent}, reload_watch=False))

    def firing_posts() -> list[dict[str, Any]]:     # resolutions go into the alert's thread
        return [p for p in live.slack.calls("chat.postMessage") if not p.get("thread_ts")]

    def ticked_since(moment: datetime) -> bool:
        return any(r.status == "ok" and r.scheduled_for > moment for r in live.ledger_rows("failed-by-agent"))

    def refusals() -> int:
        return len([r for r in log_records(log_path) if r["message"].startswith("reload refused (")])

    live.insert({"jobs": [{"status": "failed", "agent_id": "agent-before"} for _ in range(3)]})
    wait_for(lambda: len(firing_posts()) == 1, 15, "the alert before the reloads")
    for count, expr in enumerate(UNSCHEDULABLE, 1):
        (live.folder / "rules" / "nightly.yaml").write_text(
            f'name: nightly\nkind: threshold\nthreshold: {{op: ">", value: 0}}\nschedule: "{expr}"\n')
        sent = datetime.now(UTC)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda n=count: refusals() == n, 10, f"reload {count} refused")
        problems = [r["message"] for r in log_records(log_path) if r["message"].startswith("reload refused: ")]
        assert f"nightly.yaml:4: schedule: {expr!r}" in problems[-1], problems[-1]
        assert proc.poll() is None, expr
        wait_for(lambda since=sent: ticked_since(since), 10, f"a tick after the reload with {expr!r}")
    live.insert({"jobs": [{"status": "failed", "agent_id": "agent-after"} for _ in range(3)]})
    wait_for(lambda: len(firing_posts()) == 2, 15, "a new alert after the refused reloads")
    assert proc.poll() is None
    assert stop(proc)[0] == 0
    state = StateStore.open(live.state_url)
    try:
        firing = [row.group for row in alerts_table(state) if row.state == "firing"]
    finally:
        state.close()
    assert any("agent-after" in group for group in firing), firing


@pytest.mark.postgres
def test_run_recovers_when_the_source_database_restarts(live: Deployment) -> None:
    share = {**SHARE, "name": "restart-share", "notify": ["oncall"]}
    proc, listen, log_path = live.start(live.config({"share": share}))
    wait_for(lambda: len([r for r in live.ledger_rows("restart-share") if r.status == "ok"]) >= 2, 15, "first ticks")
    database = live.source_url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:   # what a restart does to every client connection
            killed = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                       "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": database}).scalar()
    finally:
        admin.dispose()
    assert killed >= 1
    after = datetime.now(UTC)
    wait_for(lambda: len([r for r in live.ledger_rows("restart-share")
                          if r.status == "ok" and r.scheduled_for > after]) >= 3, 15, "ticks after the restart")
    lost = [r for r in log_records(log_path) if "connection to the audit store" in r["message"]]
    assert lost and lost[0]["level"] == "warning"
    live.insert({"jobs": [{"status": "failed", "agent_id": "a9"} for _ in range(30)]})
    wait_for(lambda: live.slack.calls("chat.postMessage"), 15, "an alert after the restart")
    assert http_get(listen, "/healthz")[0] == 200
    assert stop(proc)[0] == 0


def _lock_jobs_until(live: Deployment, release: Callable[[], bool]) -> threading.Thread:
    """Hold ACCESS EXCLUSIVE on jobs (every evaluation waits) until ``release()`` says so."""
    locked = threading.Event()

    def hold() -> None:
        engine = create_engine(live.source_url)
        try:
            with engine.connect() as conn:
                conn.execute(text("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"))
                locked.set()
                while not release():
                    time.sleep(0.05)
                conn.rollback()
        finally:
            engine.dispose()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert locked.wait(10)
    return thread


@pytest.mark.postgres
def test_sigterm_lets_the_evaluation_in_flight_finish(live: Deployment) -> None:
    share = {**SHARE, "name": "slow-share", "notify": ["oncall"]}
    proc, _, log_path = live.start(live.config({"share": share}))
    wait_for(lambda: any(r.status == "ok" for r in live.ledger_rows("slow-share")), 15, "a first tick")
    sent_at: list[float] = []
    holder = _lock_jobs_until(live, lambda: bool(sent_at) and time.monotonic() - sent_at[0] > 2)
    stuck = wait_for(lambda: [r for r in live.ledger_rows("slow-share") if r.status == "claimed"], 10, "a blocked tick")
    proc.send_signal(signal.SIGTERM)
    sent_at.append(time.monotonic())
    code = proc.wait(timeout=15)
    seconds = time.monotonic() - sent_at[0]
    holder.join(5)
    assert code == 0 and 2 < seconds < 10, (code, seconds)
    [finished] = [r for r in live.ledger_rows("slow-share") if r.scheduled_for == stuck[0].scheduled_for]
    assert finished.status == "ok" and finished.finished_at is not None    # finished, not dropped
    assert not [r for r in live.ledger_rows("slow-share") if r.status == "claimed"]


@pytest.mark.postgres
def test_sigterm_exits_within_ten_seconds_even_with_a_run_stuck_in_a_query(live: Deployment) -> None:
    share = {**SHARE, "name": "stuck-share", "notify": ["oncall"]}
    config = live.config({"share": share})
    data = json.loads(config.read_text())
    data["source"]["statement_timeout"] = "1m"               # the query would wait far longer than 10 s
    config.write_text(json.dumps(data))
    proc, _, log_path = live.start(config)
    wait_for(lambda: any(r.status == "ok" for r in live.ledger_rows("stuck-share")), 15, "a first tick")
    done = threading.Event()
    holder = _lock_jobs_until(live, done.is_set)
    try:
        wait_for(lambda: [r for r in live.ledger_rows("stuck-share") if r.status == "claimed"], 10, "a blocked tick")
        code, seconds = stop(proc)
    finally:
        done.set()
        holder.join(5)
    assert code == 0 and seconds < 10, (code, seconds)
    messages = [r["message"] for r in log_records(log_path)]
    assert any("still going after 8s" in m for m in messages) and messages[-1] == "stopped"
    # The replica recorded its stop: the next replica to start takes the claim over at once.
    state = StateStore.open(live.state_url)
    try:
        candidates = ledger.reap_candidates(state, "someone-else", datetime.now(UTC), timedelta(seconds=6))
        assert replica_id(log_path) in candidates
        assert [r.replica for r in ledger.history(state, "stuck-share") if r.status == "claimed"] == [replica_id(log_path)]
    finally:
        state.close()
