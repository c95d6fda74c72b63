"""The daemon's HTTP endpoint under hostile clients, and background errors that must
not end the daemon.

The first test is the reproduction of the finding: a daemon with few file
descriptors and hundreds of half-sent requests used to hold a thread and a
descriptor per connection until the file watch failed with EMFILE and the
daemon exited.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from audit_watch.core.secrets import remember
from audit_watch.daemon import service
from audit_watch.daemon.http_server import HttpLimits, OpsServer, Route, Router
from audit_watch.daemon.ops import Health, Metrics, ops_app
from audit_watch.store.schema import create_reference_tables
from audit_watch.store.source import AuditSource

from smtp_server import free_port

RULE = {"name": "every-second", "kind": "threshold", "window": "1m", "every": "1s",
        "threshold": {"op": ">=", "value": 1}}


def request(address: str, path: str = "/healthz", method: str = "GET", timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://{address}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def deployment(folder: Path, listen: str | None) -> Path:
    src = AuditSource.from_url(f"sqlite:///{folder / 'audit.db'}", readonly=False)
    create_reference_tables(src.engine, src.tables)
    src.engine.dispose()
    (folder / "rules").mkdir()
    (folder / "rules" / "every-second.yaml").write_text(json.dumps(RULE))
    config = folder / "audit-watch.yaml"
    config.write_text(json.dumps({
        "source": {"url": f"sqlite:///{folder / 'audit.db'}"}, "state": {"url": f"sqlite:///{folder / 'state.db'}"},
        "rules": ["rules/"], "daemon": {"listen": listen, "freshness": {"enabled": False}},
    }))
    return config


# --- the reproduction: a daemon with few descriptors and 300 half-sent requests ------------------------


def test_hundreds_of_idle_connections_neither_stop_the_daemon_nor_its_health_check(tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    config = deployment(tmp_path, listen)
    limit = 128

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    log_path = tmp_path / "daemon.log"
    proc = subprocess.Popen([sys.executable, "-m", "audit_watch", "run", "--config", str(config)],
                            stdout=log_path.open("wb"), stderr=subprocess.STDOUT, preexec_fn=few_descriptors,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    idle: list[socket.socket] = []
    try:
        wait_for(lambda: _status(listen) == 200, 20, "the daemon to answer /healthz")
        for _ in range(300):    # half-sent requests: the head never ends
            client = socket.create_connection(("127.0.0.1", int(listen.rsplit(":", 1)[1])), timeout=5)
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            idle.append(client)
        started = time.monotonic()
        assert _status(listen) == 200
        assert time.monotonic() - started < 3, "the health check waited for the idle connections"
        time.sleep(2.5)         # more than one look of the file watch (every 2 s) while they are open
        assert proc.poll() is None, log_path.read_text()[-3000:]
        descriptors = len(os.listdir(f"/proc/{proc.pid}/fd"))
        threads = len(os.listdir(f"/proc/{proc.pid}/task"))
        assert descriptors < 16 + 40, descriptors             # the connection cap, plus what the daemon holds
        assert threads < 16 + 30, threads
        status, _, body = request(listen, "/metrics")
        assert status == 200
        evicted = _sample(body.decode(), 'audit_watch_http_connections_closed_total{reason="evicted"}')
        assert evicted >= 300 - 16
    finally:
        for client in idle:
            client.close()
        proc.terminate()
        proc.wait(15)
    assert proc.returncode == 0
    assert "Too many open files" not in log_path.read_text()


def _status(listen: str) -> int:
    try:
        return request(listen, timeout=2)[0]
    except OSError:
        return 0


def _sample(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


# --- the endpoint's limits, one at a time (in process, short timeouts) -------------------------------


@pytest.fixture
def endpoint() -> Iterator[Callable[..., tuple[OpsServer, list[str]]]]:
    servers: list[OpsServer] = []

    def start(app: Any = None, **limits: Any) -> tuple[OpsServer, list[str]]:
        events: list[str] = []
        health = Health(lambda: __import__("datetime").datetime.now(__import__("datetime").UTC))
        health.scheduler_running = True
        server = OpsServer("127.0.0.1:0", app or ops_app(Metrics("r1").registry, health),
                           HttpLimits(**{"read_timeout": 0.5, "max_connections": 4, **limits}), events.append).start()
        servers.append(server)
        return server, events

    yield start
    for server in servers:
        server.stop()


def test_only_get_and_head_are_answered(endpoint: Any) -> None:
    server, _ = endpoint()
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"):
        for path in ("/healthz", "/metrics", "/"):
            status, headers, _ = request(server.address, path, method)
            assert (status, headers.get("Allow")) == (405, "GET, HEAD"), (method, path)
    status, headers, body = request(server.address, "/healthz", "HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 10
    status, headers, body = request(server.address, "/metrics", "HEAD")      # prometheus' app refuses HEAD itself
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 1000
    assert request(server.address, "/nope")[0] == 404
    assert request(server.address, "/metrics")[0] == 200


def test_a_silent_connection_is_closed_after_the_read_timeout(endpoint: Any) -> None:
    server, events = endpoint()
    host, port = server.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as client:
        started = time.monotonic()
        assert client.recv(100) == b""          # closed by the server, no answer
        assert 0.4 < time.monotonic() - started < 2
    wait_for(lambda: "timeout" in events, 2, "the timeout to be counted")


def test_a_request_trickling_in_is_cut_at_the_deadline_not_after_a_quiet_spell(endpoint: Any) -> None:
    server, events = endpoint()                 # read_timeout 0.5 s
    host, port = server.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as client:
        stop = threading.Event()

        def trickle() -> None:                  # never quiet for more than 0.05 s
            for byte in b"GET /healthz HTTP/1.1\r\nHost: example\r\nX-Slow: " + b"a" * 200:
                if stop.wait(0.05):
                    return
                try:
                    client.send(bytes([byte]))
                except OSError:
                    return

        sender = threading.Thread(target=trickle)
        started = time.monotonic()
        sender.start()
        try:
            assert client.recv(100) == b""
        except ConnectionResetError:            # closed with unread bytes: a reset, just as closed
            pass
        closed_after = time.monotonic() - started
        stop.set()
        sender.join()
    assert 0.4 < closed_after < 1.5, closed_after
    assert "timeout" in events


def test_idle_connections_make_room_for_new_ones_and_threads_stay_capped(endpoint: Any) -> None:
    server, events = endpoint(read_timeout=30)      # only the cap can free the slots here
    host, port = server.address.rsplit(":", 1)
    before = threading.active_count()
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(40)]
    try:
        for client in idle:
            client.sendall(b"GET /healthz HTTP/1.1\r\n")
        started = time.monotonic()
        assert request(server.address, timeout=5)[0] == 200
        assert time.monotonic() - started < 2
        assert threading.active_count() - before <= 4
        assert events.count("evicted") >= 40 - 4
    finally:
        for client in idle:
            client.close()


def test_a_connection_being_answered_is_never_closed_to_make_room(endpoint: Any) -> None:
    release = threading.Event()

    def slow(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    server, events = endpoint(Router([Route("/slow", slow)]), max_connections=2, read_timeout=5)
    answers: list[Any] = []
    workers = [threading.Thread(target=lambda: answers.append(request(server.address, "/slow", timeout=10)))
               for _ in range(3)]
    for worker in workers:
        worker.start()
        time.sleep(0.2)
    time.sleep(0.5)
    assert answers == [] and "evicted" not in events   # the third waits in the backlog
    release.set()
    for worker in workers:
        worker.join(10)
    assert [a[2] for a in answers] == [b"done"] * 3


def test_a_body_over_the_limit_is_refused(endpoint: Any) -> None:
    def echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))]

    server, _ = endpoint(Router([Route("/echo", echo, methods=("POST",))], max_body=10))
    req = urllib.request.Request(f"http://{server.address}/echo", data=b"x" * 11, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=5)
    assert refused.value.code == 413
    req = urllib.request.Request(f"http://{server.address}/echo", data=b"0123456789", method="POST")
    with urllib.request.urlopen(req, timeout=5) as response:
        assert response.read() == b"0123456789"
    assert request(server.address, "/echo", "GET")[1]["Allow"] == "POST"


def test_answers_are_scrubbed_of_secrets(endpoint: Any) -> None:
    remember("hunter2-very-secret")

    def leaky(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"error": "could not reach https://x/hunter2-very-secret"}']

    server, _ = endpoint(Router([Route("/leak", leaky)]))
    assert request(server.address, "/leak")[2] == b'{"error": "could not reach https://x/***"}'


def test_the_endpoint_restarts_its_loop_after_a_failure(endpoint: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server, events = endpoint()
    original = type(server.server).serve_forever
    calls = []

    def failing_once(self: Any, poll_interval: float = 0.5) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(24, "Too many open files")
        original(self, poll_interval)

    server.stop()
    fresh = OpsServer("127.0.0.1:0", server.server.get_app(), HttpLimits(), events.append)
    monkeypatch.setattr(type(fresh.server), "serve_forever", failing_once)
    fresh.start()
    try:
        wait_for(lambda: _status(fresh.address) == 200, 5, "the endpoint to come back")
        assert events.count("error") == 1 and len(calls) == 2
    finally:
        fresh.stop()


# --- background errors: logged, counted, retried ----------------------------------------------------


def test_errors_in_the_file_watch_and_the_delivery_loop_do_not_end_the_daemon(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = deployment(tmp_path, None)
    failures = {"watch": 2, "deliver": 2}
    real_snapshot, real_deliver = service.watch_snapshot, service.deliver

    def snapshot(config: Any) -> Any:
        if failures["watch"]:
            failures["watch"] -= 1
            raise OSError(24, "Too many open files", str(tmp_path / "rules"))
        return real_snapshot(config)

    def deliver(ctx: Any) -> Any:
        if failures["deliver"]:
            failures["deliver"] -= 1
            raise OSError(24, "Too many open files")
        return real_deliver(ctx)

    monkeypatch.setattr(service, "WATCH_EVERY", 0.1)
    monkeypatch.setattr(service, "DELIVER_EVERY", 0.1)
    daemon = service.Daemon(str(config), None)
    assert daemon.start() is None
    monkeypatch.setattr(service, "watch_snapshot", snapshot)
    monkeypatch.setattr(service, "deliver", deliver)
    loop = threading.Thread(target=daemon.serve, daemon=True)
    loop.start()
    try:
        wait_for(lambda: failures == {"watch": 0, "deliver": 0}, 10, "both failures")
        (tmp_path / "rules" / "second.yaml").write_text(json.dumps({**RULE, "name": "second"}))
        wait_for(lambda: daemon.runtime is not None and "second" in daemon.runtime.rules, 10,
                 "the file watch to work again and reload")
        assert loop.is_alive()
        registry = daemon.metrics.registry
        assert registry.get_sample_value("audit_watch_background_errors_total", {"task": "file-watch"}) == 2
        assert registry.get_sample_value("audit_watch_background_errors_total", {"task": "delivery"}) == 2
    finally:
        daemon.stop_requested.set()
        loop.join(5)
        assert daemon.shutdown()


def test_a_failing_scheduled_job_is_counted(tmp_path: Path) -> None:
    daemon = service.Daemon(str(deployment(tmp_path, None)), None)
    assert daemon.start() is None
    try:
        assert daemon.scheduler is not None
        daemon.scheduler.add_job(lambda: 1 / 0, executor="internal", id="broken")
        wait_for(lambda: daemon.metrics.registry.get_sample_value("audit_watch_background_errors_total",
                                                                  {"task": "job"}) == 1, 5, "the job error")
    finally:
        assert daemon.shutdown()
