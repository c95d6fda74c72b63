"""Email through smtplib to a real aiosmtpd server on 127.0.0.1; both state backends."""

from __future__ import annotations

import json
import os
import random
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from audit_watch.alerting.outbox import list_entries
from audit_watch.alerting.pipeline import DeliverySummary, deliver_due, process
from audit_watch.alerting.state import StateStore
from audit_watch.config.model import Config

from smtp_server import SmtpServer, StallingServer, free_port, self_signed
from test_render import EVIL_ERROR, EVIL_NAME
from test_state import T0, evaluation, make_alert, make_rule, state, state_url


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return self_signed(tmp_path_factory.mktemp("tls"))   # no openssl: installed under CI, else a loud skip


def mail_config(port: int, **channel: Any) -> Config:
    return Config.model_validate({"channels": {"mail": {
        "type": "email", "host": "127.0.0.1", "port": port, "from": "audit-watch@example.com",
        "to": ["ops@example.com", "sre@example.com"], "cc": ["lead@example.com"], "timeout": "5s", **channel,
    }}})


def deliver(config: Config, state: StateStore, now: datetime, client_tls: ssl.SSLContext | None = None) -> DeliverySummary:
    options = {"mail": {"ssl_context": client_tls}} if client_tls else {}
    return deliver_due(config, state, now, rng=random.Random(5), channel_options=options)


def fire(config: Config, state: StateStore, now: datetime = T0, rule_name: str = "failed-jobs", **alert: Any) -> None:
    rule = make_rule(name=rule_name, notify=["mail"])
    process([evaluation(rule, now, make_alert(rule=rule_name, now=now, **alert))], config, state, now)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


def test_one_multipart_message_with_links_and_inlined_css(smtp: SmtpServer, state: StateStore) -> None:
    config = mail_config(smtp.port)
    fire(config, state, rows=3)
    assert deliver(config, state, T0).delivered == 1
    [received] = smtp.received
    assert received.mail_from == "audit-watch@example.com"
    assert received.rcpt_tos == ["ops@example.com", "sre@example.com", "lead@example.com"]
    message = received.message
    assert message["Subject"] == "[audit-watch] [WARNING] failed-jobs: 1 alert firing: Support Triage"
    assert message["To"] == "ops@example.com, sre@example.com" and message["Cc"] == "lead@example.com"
    assert message["Message-ID"].endswith("@example.com>") and message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Support Triage: 7 matching jobs in 15m" in text
    assert "job-a1-1: https://auxot.example.com/audit-logs/jobs/job-a1-1" in text
    assert '<a href="https://auxot.example.com/audit-logs/jobs/job-a1-3"' in html
    assert '<a href="https://auxot.example.com/audit-logs/jobs?status=failed&amp;agent_id=a1"' in html
    assert "<style" not in html and 'style="' in html and "border-collapse: collapse" in html


# (how the server listens, what the channel says, the outcome, who logged in)
TLS_CASES = {
    "starttls and login": ({"starttls": True, "users": {"aw": "s3cret"}},
                           {"starttls": True, "username": "aw", "password": "s3cret"}, "delivered", ["aw"]),
    "refused login is permanent": ({"starttls": True, "users": {"aw": "s3cret"}},
                                   {"starttls": True, "username": "aw", "password": "wrong"}, "dead", []),
    "implicit tls": ({"implicit_tls": True}, {"ssl": True}, "delivered", [None]),
}


@pytest.mark.parametrize("server, channel, outcome, logins", TLS_CASES.values(), ids=TLS_CASES.keys())
def test_tls(tls: tuple[ssl.SSLContext, ssl.SSLContext], state: StateStore, server: dict[str, Any],
             channel: dict[str, Any], outcome: str, logins: list[str | None]) -> None:
    server_tls, client_tls = tls
    options = {key: server_tls if value is True else value for key, value in server.items()}
    with SmtpServer(**options) as smtp:
        config = mail_config(smtp.port, **channel)
        fire(config, state)
        summary = deliver(config, state, T0, client_tls)
    assert [o.status for o in summary.outcomes] == [outcome]
    assert [r.authenticated_as for r in smtp.received] == logins
    if outcome == "dead":
        [entry] = list_entries(state)
        assert "login refused" in (entry.last_error or "")


def test_smtp_down_for_one_run_then_delivered_once(state: StateStore) -> None:
    port = free_port()
    config = mail_config(port)
    fire(config, state)
    summary = deliver(config, state, T0)                             # nobody listens yet
    assert summary.retrying == 1 and "cannot reach 127.0.0.1" in (summary.outcomes[0].error or "")
    with SmtpServer(port) as smtp:
        assert deliver(config, state, T0 + timedelta(seconds=5)).attempted == 0    # backing off
        assert deliver(config, state, T0 + timedelta(minutes=5)).delivered == 1
        assert deliver(config, state, T0 + timedelta(hours=5)).attempted == 0
    assert len(smtp.received) == 1


@pytest.mark.timeout(60)      # a send without a socket timeout would hang here: fail instead
@pytest.mark.parametrize("stall", ["greeting", "data"])
def test_a_server_that_accepts_and_then_hangs_times_out_and_is_retried(state: StateStore, stall: str) -> None:
    # Real time by nature: the channel's `timeout` is a socket timeout. 1 s here.
    with StallingServer(stall) as hung:
        config = mail_config(hung.port, timeout="1s")
        fire(config, state)
        started = time.monotonic()
        summary = deliver(config, state, T0)
        took = time.monotonic() - started
        assert hung.accepted == 1
    [outcome] = summary.outcomes
    assert outcome.status == "retrying" and "timed out" in (outcome.error or ""), outcome
    assert took < 30, took        # one timeout (or two: the reply to DATA, then QUIT), not forever
    with SmtpServer(hung.port) as smtp:                                   # the server is back
        assert deliver(config, state, T0 + timedelta(seconds=5)).attempted == 0     # backing off
        assert deliver(config, state, T0 + timedelta(minutes=5)).delivered == 1
    assert len(smtp.received) == 1


def test_run_once_does_not_hang_on_a_mail_server_that_says_nothing(state: StateStore, tmp_path: Any) -> None:
    """`audit-watch run --once` as a process: it ends, says the notification is retrying, exit 0."""
    from audit_watch.store.rows import insert_rows
    from audit_watch.store.schema import create_reference_tables
    from audit_watch.store.source import AuditSource

    src = AuditSource.from_url(f"sqlite:///{tmp_path / 'audit.db'}", readonly=False)
    create_reference_tables(src.engine, src.tables)
    insert_rows(src.engine, src.tables, {"jobs": [{"at": "-1m", "status": "failed", "count": 3}]}, T0)
    src.engine.dispose()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text('{"name": "failed-jobs", "kind": "threshold", "where": {"status": "failed"},'
                                              ' "window": "15m", "threshold": {"op": ">=", "value": 2}, "notify": ["mail"]}')
    with StallingServer("greeting") as hung:
        channel = mail_config(hung.port, timeout="1s").channels["mail"].model_dump(by_alias=True, mode="json")
        (tmp_path / "audit-watch.yaml").write_text(json.dumps({
            "source": {"url": "sqlite:///audit.db"}, "state": {"url": "sqlite:///state.db"}, "rules": ["rules/"],
            "channels": {"mail": channel}, "daemon": {"listen": None, "freshness": {"enabled": False}}}))
        done = subprocess.run([sys.executable, "-m", "audit_watch", "run", "--once", "--now", "2026-11-20T12:00:00Z"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert "1 notifications queued; delivered 0, retrying 1, dead 0" in done.stdout, done.stdout


def test_one_connection_per_batch(smtp: SmtpServer, state: StateStore) -> None:
    config = mail_config(smtp.port)
    fire(config, state, rule_name="failed-jobs")
    fire(config, state, rule_name="quota-errors")
    assert deliver(config, state, T0).delivered == 2
    assert [r.connection for r in smtp.received] == [1, 1]


def test_resolution_replies_to_the_firing_message(smtp: SmtpServer, state: StateStore) -> None:
    config = mail_config(smtp.port)
    fire(config, state)
    deliver(config, state, T0)
    process([evaluation(make_rule(notify=["mail"]), T0 + timedelta(minutes=5))], config, state, T0 + timedelta(minutes=5))
    deliver(config, state, T0 + timedelta(minutes=5))
    first, second = (r.message for r in smtp.received)
    assert second["Subject"] == "[audit-watch] [WARNING] Resolved: failed-jobs: Support Triage"
    assert second["In-Reply-To"] == first["Message-ID"] and second["References"] == first["Message-ID"]


def test_injection_reaches_email_escaped(smtp: SmtpServer, state: StateStore) -> None:
    config = mail_config(smtp.port)
    fire(config, state, name=EVIL_NAME + "\nBcc: victim@example.com", details={"row": {"error": EVIL_ERROR}})
    rule = make_rule(name="errors", kind="any", group_by=[], notify=["mail"])
    alert = make_alert(kind="any", rule="errors", name=None, group={"id": "job-1"},
                       details={"row": {"status": "failed", "job_type": "task", "error": EVIL_ERROR}})
    process([evaluation(rule, T0, alert)], config, state, T0)
    assert deliver(config, state, T0).delivered == 2
    for received in smtp.received:
        html = received.message.get_body(("html",)).get_content()
        assert "<script>" not in html and "<!channel>" not in html
        assert received.message["Bcc"] is None and "victim" not in " ".join(received.rcpt_tos)
    html = smtp.received[1].message.get_body(("html",)).get_content()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;!channel&gt;" in smtp.received[0].message.get_body(("html",)).get_content()
