"""Operating the daemon: ``/metrics``, ``/healthz`` and the dead-man's switch.

prometheus-client's own server answers the metrics on every path, so a small
WSGI dispatcher routes ``/metrics`` to ``make_wsgi_app()`` and answers
``/healthz`` itself: 200 while the scheduler runs and every rule's last tick is
recent, 503 (with the reasons, as JSON) otherwise.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from email.utils import make_msgid
from typing import Any
from wsgiref.simple_server import WSGIServer, make_server

from apscheduler.triggers.base import BaseTrigger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from audit_watch import __version__
from audit_watch.alerting.pipeline import DeliverySummary
from audit_watch.alerting.state import StateStore, alert_states, outbox
from audit_watch.channels import make_channel
from audit_watch.channels.base import Notification
from audit_watch.config.model import Config, HeartbeatConfig
from audit_watch.core.errors import short_error
from audit_watch.core.outcomes import HeartbeatResult, OutboxStatus, RunOutcome, RunStatus, TickResult
from audit_watch.daemon import ledger
from audit_watch.daemon.context import TickContext
from audit_watch.daemon.schedules import latest_tick, tick_gap
from audit_watch.daemon.tick import TickOutcome

log = logging.getLogger(__name__)

ALERT_STATES = ("pending", "firing", "resolved")


class Metrics:
    """Every instrument of one daemon, in its own registry (tests run several)."""

    def __init__(self, replica: str) -> None:
        self.registry = registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
        Gauge("audit_watch_info", "This audit-watch.", ["version", "replica"], registry=registry).labels(
            __version__, replica).set(1)
        self.scheduler_running = Gauge("audit_watch_scheduler_running", "1 while the scheduler runs.", registry=registry)
        self.rules = Gauge("audit_watch_rules", "Rules scheduled.", registry=registry)
        self.rule_problems = Gauge("audit_watch_rule_problems", "Problems in rule and report files at the last load.",
                                   registry=registry)
        self.evaluations = Counter("audit_watch_evaluations", "Rule evaluations by this replica, by result "
                                   "(ok, error, held).", ["rule", "result"], registry=registry)
        self.duration = Histogram("audit_watch_evaluation_duration_seconds", "Time to evaluate a rule.", ["kind"],
                                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                                  registry=registry)
        self.last_duration = Gauge("audit_watch_rule_last_evaluation_seconds", "The last evaluation's duration.",
                                   ["rule"], registry=registry)
        self.consecutive_errors = Gauge("audit_watch_rule_consecutive_errors", "Errors in a row (0 after a success).",
                                        ["rule"], registry=registry)
        self.ticks = Counter("audit_watch_ticks", "Scheduled runs by outcome: evaluated, elsewhere (another replica "
                             "had it), held, late (started after a newer tick was due: evaluated that one), busy "
                             "(skipped: the previous run still going), missed (skipped: past its misfire grace "
                             "time), failed (state database).",
                             ["outcome"], registry=registry)
        self.report_runs = Counter("audit_watch_report_runs", "Scheduled report runs by result: ok (queued to its "
                                   "channels), error, elsewhere (another replica had it), late (past its catch_up: not "
                                   "sent), stopped (the daemon stopped between attempts), failed (state database).",
                                   ["report", "result"], registry=registry)
        self.queued = Counter("audit_watch_notifications_queued", "Notifications written to the outbox.",
                              registry=registry)
        self.deliveries = Counter("audit_watch_deliveries", "Delivery attempts by channel and result "
                                  "(delivered, retrying, dead, lost).", ["channel", "result"], registry=registry)
        self.reloads = Counter("audit_watch_reloads", "Reloads by result.", ["result"], registry=registry)
        self.reload_ok = Gauge("audit_watch_config_last_reload_successful", "1 when the last reload was applied.",
                               registry=registry)
        self.reload_time = Gauge("audit_watch_config_last_reload_success_timestamp_seconds",
                                 "When a configuration was last applied.", registry=registry)
        self.heartbeats = Counter("audit_watch_heartbeats", "Dead-man's switch signals by result.", ["result"],
                                  registry=registry)
        self.newest_row = Gauge("audit_watch_store_newest_row_timestamp_seconds", "The audit store's newest row.",
                                registry=registry)
        self.store_silent = Gauge("audit_watch_store_silent", "1 while the audit store receives no rows.",
                                  registry=registry)
        self.replicas = Gauge("audit_watch_replicas_live", "Replicas heartbeating in the state database.",
                              registry=registry)

    def record_tick(self, outcome: TickOutcome, kind: str) -> None:
        if outcome.status == RunOutcome.ELSEWHERE:
            self.ticks.labels(TickResult.ELSEWHERE).inc()
            return
        self.ticks.labels(TickResult.HELD if outcome.status == RunOutcome.HELD else TickResult.EVALUATED).inc()
        self.evaluations.labels(outcome.rule, outcome.status).inc()
        if outcome.evaluation is not None:
            self.duration.labels(kind).observe(outcome.evaluation.seconds)
            self.last_duration.labels(outcome.rule).set(outcome.evaluation.seconds)
        self.consecutive_errors.labels(outcome.rule).set(outcome.errors_in_a_row)
        self.queued.inc(len(outcome.queued))

    def record_reading(self, reading: Any) -> None:
        """The freshness check's latest look at the audit store."""
        if reading is not None:
            if reading.newest is not None:
                self.newest_row.set(reading.newest.timestamp())
            self.store_silent.set(1 if reading.silent else 0)

    def count_deliveries(self, summary: DeliverySummary) -> None:
        for outcome in summary.outcomes:
            self.deliveries.labels(outcome.channel, outcome.status).inc()

    def watch_state(self, state: Callable[[], StateStore]) -> None:
        self.registry.register(StateCollector(state))


class StateCollector(Collector):
    """Alerts by state and outbox depth, read from the state database at scrape time."""

    def __init__(self, state: Callable[[], StateStore], cache_seconds: float = 2.0) -> None:
        self.state = state
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, list[Any]] | None = None
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Any]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > self.cache_seconds:
                self._cached = (time.monotonic(), list(self._families()))
            return iter(self._cached[1])

    def _families(self) -> Iterator[Any]:
        up = GaugeMetricFamily("audit_watch_state_up", "1 when the state database answered the last scrape.")
        try:
            with self.state().read() as conn:
                by_state = select(alert_states.c.state, func.count()).group_by(alert_states.c.state)
                alerts: dict[str, int] = {state: count for state, count in conn.execute(by_state)}
                by_status = select(outbox.c.status, func.count()).group_by(outbox.c.status)
                queued: dict[str, int] = {status: count for status, count in conn.execute(by_status)}
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even with the database gone
            log.warning("metrics: state database unavailable: %s", short_error(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        family = GaugeMetricFamily("audit_watch_alerts", "Alerts by state.", labels=["state"])
        for name in ALERT_STATES:
            family.add_metric([name], alerts.get(name, 0))
        yield family
        family = GaugeMetricFamily("audit_watch_outbox_notifications", "Outbox rows by status (queued and "
                                   "retrying are the depth).", labels=["status"])
        for name in OutboxStatus:
            family.add_metric([name], queued.get(name, 0))
        yield family


class Health:
    """``ok`` while the scheduler runs and every rule has done its recent ticks."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.started_at = clock()
        self.scheduler_running = False
        self._triggers: dict[str, BaseTrigger] = {}
        self._done: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def set_rules(self, triggers: Mapping[str, BaseTrigger]) -> None:
        """After a (re)load: unchanged rules keep their last tick, new ones start now."""
        now = self.clock()
        with self._lock:
            self._done = {name: self._done.get(name, now) for name in triggers}
            self._triggers = dict(triggers)

    def tick_done(self, rule: str, tick: datetime) -> None:
        """This replica ran the tick to the end (evaluated it, or saw another replica had)."""
        with self._lock:
            if rule in self._triggers and tick > self._done.get(rule, tick - timedelta(seconds=1)):
                self._done[rule] = tick

    def status(self) -> tuple[bool, dict[str, Any]]:
        now = self.clock()
        with self._lock:
            items = list(self._triggers.items())
            done = dict(self._done)
        late = []
        for name, trigger in items:
            due = latest_tick(trigger, now - _grace(trigger, now))
            if due > done.get(name, now):
                late.append({"rule": name, "due": due.isoformat(), "last_tick": done[name].isoformat()})
        ok = self.scheduler_running and not late
        return ok, {
            "status": "ok" if ok else "failing", "scheduler_running": self.scheduler_running, "rules": len(items),
            "late_rules": late[:50], "late_count": len(late), "started_at": self.started_at.isoformat(),
        }


def _grace(trigger: BaseTrigger, now: datetime) -> timedelta:
    """How late a tick may finish before the rule counts as late: one interval, at
    least 10 seconds, at most 5 minutes."""
    gap = tick_gap(trigger, latest_tick(trigger, now))
    return min(max(gap, timedelta(seconds=10)), timedelta(minutes=5))


# --- HTTP ------------------------------------------------------------------------------------


def ops_app(registry: CollectorRegistry, health: Health) -> Callable[..., Iterable[bytes]]:
    """``/metrics`` (Prometheus text), ``/healthz`` (JSON; 200 or 503)."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return metrics(environ, start_response)
        if path in ("/healthz", "/health"):
            ok, detail = health.status()
            body = json.dumps(detail).encode()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        body = b"audit-watch: /healthz, /metrics\n"
        status = "200 OK" if path == "/" else "404 Not Found"
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class OpsServer:
    """The WSGI app on ``listen`` in a background thread."""

    def __init__(self, listen: str, app: Callable[..., Iterable[bytes]]) -> None:
        host, port = parse_listen(listen)
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server_class: type[WSGIServer] = type("OpsWSGIServer", (ThreadingWSGIServer,), {"address_family": family})
        self.server = make_server(host, port, app, server_class, handler_class=_SilentHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="ops-http", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> OpsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the dead-man's switch ------------------------------------------------------------------


def send_heartbeat(config: Config, heartbeat: HeartbeatConfig, replica: str, now: datetime,
                   summary: str) -> str | None:
    """Signal that audit-watch runs; returns an error, or None when it went out."""
    if heartbeat.url is not None:
        url = heartbeat.url.get_secret_value()
        request = urllib.request.Request(url, headers={"User-Agent": f"audit-watch/{__version__}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return short_error(exc)
    name = heartbeat.channel or ""
    channel_config = config.channels.get(name)
    if channel_config is None:
        return f"channel {name!r} is not configured"
    text = f"audit-watch is running ({summary}; replica {replica}, {now:%Y-%m-%d %H:%M:%S} UTC)"
    payload = {
        "title": "audit-watch heartbeat", "text": text,
        "blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}],
        "subject": "[audit-watch] heartbeat", "html": f"<p>{text}</p>",
        "message_id": make_msgid("audit-watch.heartbeat"), "alerts": [],
    }
    sender = make_channel(name, channel_config, config.base_dir)
    try:
        result = sender.send(Notification(id=0, channel=name, kind="heartbeat", rule="audit-watch-heartbeat",
                                          payload=payload, created_at=now))
    finally:
        sender.close()
    return None if result.ok else (result.error or "failed")


HEARTBEAT_JOB = "audit-watch:heartbeat"


def heartbeat_tick(ctx: TickContext, heartbeat: HeartbeatConfig, health: Health, tick: datetime,
                   summary: str) -> HeartbeatResult:
    """One replica per tick signals, and only while healthy: a dead-man's switch must
    not say "fine" for a daemon whose rules are late."""
    ok, detail = health.status()
    if not ok:
        log.warning("heartbeat withheld: %d rules late, scheduler running: %s", detail["late_count"],
                    detail["scheduler_running"])
        return HeartbeatResult.WITHHELD
    if not ledger.claim(ctx.state, HEARTBEAT_JOB, tick, ctx.replica, ctx.clock()):
        return HeartbeatResult.ELSEWHERE
    error = send_heartbeat(ctx.config, heartbeat, ctx.replica, ctx.clock(), summary)
    ledger.finish(ctx.state, HEARTBEAT_JOB, tick, ctx.replica, RunStatus.ERROR if error else RunStatus.OK, ctx.clock(),
                  error=error)
    if error:
        log.warning("heartbeat failed: %s", error)
    return HeartbeatResult.ERROR if error else HeartbeatResult.SENT
