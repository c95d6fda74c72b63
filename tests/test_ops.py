"""/healthz, /metrics, JSON logs and the dead-man's switch; no wall clock (a fake clock)."""

from __future__ import annotations

import io
import json
import logging
import threading
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from apscheduler.triggers.base import BaseTrigger
from test_ledger import state

from audit_watch.alerting.state import StateStore
from audit_watch.channels.render import Renderer
from audit_watch.config.model import Config, HeartbeatConfig
from audit_watch.core.logs import configure_logging
from audit_watch.core.outcomes import RunOutcome
from audit_watch.daemon.context import TickContext
from audit_watch.daemon.ops import Health, Metrics, OpsServer, StateCollector, heartbeat_tick, ops_app, send_heartbeat
from audit_watch.daemon.schedules import interval_trigger, rule_trigger
from audit_watch.daemon.tick import TickOutcome
from audit_watch.rules.evaluate import Evaluation

from test_state import T0, make_rule, state_url

S = timedelta(seconds=1)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def call(app: Callable[..., Any], path: str) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        answer.update(status=status, headers=dict(headers))

    body = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], body


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + timedelta(milliseconds=300))


def test_healthz_is_ok_while_every_rule_keeps_up(clock: Clock) -> None:
    health = Health(clock)
    health.scheduler_running = True
    every_second: dict[str, BaseTrigger] = {"fast": interval_trigger(S), "hourly": interval_trigger(timedelta(hours=1))}
    health.set_rules(every_second)
    app = ops_app(Metrics("r1").registry, health)
    status, headers, body = call(app, "/healthz")
    assert status == "200 OK" and headers["Content-Type"] == "application/json"
    assert json.loads(body)["rules"] == 2
    for second in range(1, 30):            # "fast" runs every tick, "hourly" has no tick due yet
        clock.now = T0 + second * S
        health.tick_done("fast", T0 + second * S)
    assert call(app, "/healthz")[0] == "200 OK"
    clock.now += 15 * S                    # "fast" stops: late after its 10 s grace
    status, _, body = call(app, "/healthz")
    detail = json.loads(body)
    assert status.startswith("503") and detail["late_count"] == 1 and detail["late_rules"][0]["rule"] == "fast"
    health.tick_done("fast", clock.now.replace(microsecond=0))
    assert call(app, "/healthz")[0] == "200 OK"
    health.scheduler_running = False
    assert call(app, "/healthz")[0].startswith("503")


def test_healthz_after_a_reload_keeps_unchanged_rules_and_starts_new_ones_now(clock: Clock) -> None:
    health = Health(clock)
    health.scheduler_running = True
    health.set_rules({"a": interval_trigger(S)})
    clock.now = T0 + 60 * S
    health.set_rules({"a": interval_trigger(S), "b": interval_trigger(S)})
    ok, detail = health.status()
    assert not ok and [r["rule"] for r in detail["late_rules"]] == ["a"]   # "a" never ran since T0


def test_metrics_and_other_paths(clock: Clock) -> None:
    metrics = Metrics("r1")
    rule = make_rule()
    outcome = TickOutcome(rule.name, T0, RunOutcome.OK, Evaluation(rule, T0, [], seconds=0.02), queued=[1, 2])
    metrics.record_tick(outcome, rule.kind)
    metrics.record_tick(TickOutcome(rule.name, T0 + S, "elsewhere"), rule.kind)
    metrics.record_tick(TickOutcome(rule.name, T0 + 2 * S, RunOutcome.ERROR, Evaluation(rule, T0, [], error="x"),
                                    errors_in_a_row=3), rule.kind)
    app = ops_app(metrics.registry, Health(clock))
    status, headers, body = call(app, "/metrics")
    text = body.decode()
    assert status == "200 OK" and headers["Content-Type"].startswith("text/plain")
    for line in (
        'audit_watch_evaluations_total{result="ok",rule="failed-jobs"} 1.0',
        'audit_watch_evaluations_total{result="error",rule="failed-jobs"} 1.0',
        'audit_watch_ticks_total{outcome="elsewhere"} 1.0',
        'audit_watch_ticks_total{outcome="evaluated"} 2.0',
        'audit_watch_rule_consecutive_errors{rule="failed-jobs"} 3.0',
        "audit_watch_notifications_queued_total 2.0",
        'audit_watch_evaluation_duration_seconds_count{kind="threshold"} 2.0',
        'audit_watch_info{replica="r1",version=',
        "process_resident_memory_bytes",
    ):
        assert line in text, line
    assert call(app, "/")[0] == "200 OK" and call(app, "/nope")[0] == "404 Not Found"


def test_alerts_and_outbox_depth_come_from_the_state_database(state: StateStore) -> None:
    from audit_watch.alerting.pipeline import process

    from test_state import evaluation, make_alert

    config = Config.model_validate({"channels": {"archive": {"type": "file", "path": "/nonexistent"}}})
    rule = make_rule(notify=["archive"])
    process([evaluation(rule, T0, make_alert(), make_alert(agent="a2"))], config, state, T0)
    families = {f.name: {tuple(s.labels.values()): s.value for s in f.samples}
                for f in StateCollector(lambda: state, cache_seconds=0).collect()}
    assert families["audit_watch_state_up"] == {(): 1}
    assert families["audit_watch_alerts"][("firing",)] == 2
    assert families["audit_watch_outbox_notifications"][("queued",)] == 1

    class Broken:
        def read(self) -> Any:
            raise RuntimeError("database gone")

    families = {f.name: f for f in StateCollector(lambda: Broken(), cache_seconds=0).collect()}  # type: ignore[arg-type, return-value]
    assert list(families) == ["audit_watch_state_up"] and families["audit_watch_state_up"].samples[0].value == 0


def test_the_ops_server_answers_over_http(clock: Clock) -> None:
    health = Health(clock)
    health.scheduler_running = True
    server = OpsServer("127.0.0.1:0", ops_app(Metrics("r1").registry, health)).start()
    try:
        with urllib.request.urlopen(f"http://{server.address}/healthz", timeout=5) as response:
            assert response.status == 200 and json.load(response)["status"] == "ok"
        with urllib.request.urlopen(f"http://{server.address}/metrics", timeout=5) as response:
            assert b"audit_watch_scheduler_running" in response.read()
    finally:
        server.stop()


# --- logs ---------------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, hook = list(root.handlers), root.level, threading.excepthook
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    threading.excepthook = hook
    logging.captureWarnings(False)


def test_json_logs_are_one_object_per_line_even_for_tracebacks(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    log = logging.getLogger("audit_watch.test")
    log.info("rule %s failed", "r1", extra={"rule": "r1", "tick": T0})
    try:
        raise ValueError("bad\nmultiline")
    except ValueError:
        log.exception("it broke")
    thread = threading.Thread(target=lambda: 1 / 0, name="worker")
    thread.start()
    thread.join()
    logging.getLogger("apscheduler.executors.default").info("Running job ...")   # quietened
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["rule r1 failed", "it broke", "uncaught exception in thread worker"]
    assert lines[0]["rule"] == "r1" and lines[0]["tick"] == str(T0) and lines[0]["level"] == "info"
    assert "ValueError: bad\nmultiline" in lines[1]["exception"] and "ZeroDivisionError" in lines[2]["exception"]
    with pytest.raises(ValueError):
        configure_logging("xml")


# --- the dead-man's switch ------------------------------------------------------------------------


@pytest.fixture
def pinged() -> Iterator[tuple[str, list[str]]]:
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            self.send_response(500 if "fail" in self.path else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", paths
    finally:
        server.shutdown()
        server.server_close()


def test_heartbeat_to_a_url_and_to_a_channel(pinged: tuple[str, list[str]], tmp_path: Path) -> None:
    base, paths = pinged
    config = Config.model_validate({"channels": {"beat": {"type": "file", "path": str(tmp_path / "beats")}}})
    assert send_heartbeat(config, HeartbeatConfig(url=f"{base}/ping/abc"), "r1", T0, "3 rules") is None
    assert paths == ["/ping/abc"]
    assert "500" in (send_heartbeat(config, HeartbeatConfig(url=f"{base}/fail"), "r1", T0, "") or "")
    assert send_heartbeat(config, HeartbeatConfig(url="http://127.0.0.1:1/"), "r1", T0, "") is not None
    assert send_heartbeat(config, HeartbeatConfig(channel="beat"), "r1", T0, "3 rules") is None
    [text] = (tmp_path / "beats").glob("*.txt")
    assert "audit-watch is running (3 rules; replica r1" in text.read_text()


def test_one_replica_per_tick_signals_and_only_while_healthy(state: StateStore, tmp_path: Path,
                                                             clock: Clock) -> None:
    config = Config.model_validate({"channels": {"beat": {"type": "file", "path": str(tmp_path / "beats")}}})
    heartbeat = HeartbeatConfig(channel="beat", every="1m")

    def ctx(replica: str) -> TickContext:
        return TickContext(config, None, state, Renderer(), replica, clock)  # type: ignore[arg-type]

    health = Health(clock)
    health.set_rules({"r": rule_trigger(make_rule(every="1s"), "UTC")})
    assert heartbeat_tick(ctx("a"), heartbeat, health, T0, "") == "withheld"   # scheduler not running
    health.scheduler_running = True
    assert heartbeat_tick(ctx("a"), heartbeat, health, T0, "") == "sent"
    assert heartbeat_tick(ctx("b"), heartbeat, health, T0, "") == "elsewhere"
    assert len(list((tmp_path / "beats").glob("*.txt"))) == 1
    clock.now += timedelta(minutes=1)                                          # rule "r" never ran: late
    assert heartbeat_tick(ctx("b"), heartbeat, health, T0 + timedelta(minutes=1), "") == "withheld"
