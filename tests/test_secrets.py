"""Secrets: URLs that carry them are http(s) at load time, and every configured
secret is scrubbed from what leaves the process (logs, outbox errors, `alerts`,
/metrics, exceptions)."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import SecretStr, ValidationError
from slack_sdk.webhook import WebhookClient

from audit_watch.alerting.pipeline import deliver_due, process
from audit_watch.alerting.state import StateStore
from audit_watch.cli.main import main
from audit_watch.config.model import HeartbeatConfig, read_config
from audit_watch.core import logs
from audit_watch.core.errors import short_error
from audit_watch.core.logs import configure_logging
from audit_watch.core.secrets import MASK, remember, scrub, scrub_data
from audit_watch.daemon.ops import Health, Metrics, ops_app

from fake_slack import FakeSlack, Reply
from test_state import T0, evaluation, make_alert, make_rule


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = threading.excepthook, sys.excepthook
    levels = {name: logging.getLogger(name).level for name in logs.QUIET}
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    threading.excepthook, sys.excepthook = hooks
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)
    logging.captureWarnings(False)


def write_config(folder: Path, channels: dict[str, Any], **daemon: Any) -> Path:
    path = folder / "audit-watch.yaml"
    (folder / "rules").mkdir(exist_ok=True)
    path.write_text(json.dumps({
        "source": {"url": f"sqlite:///{folder / 'audit.db'}"}, "state": {"url": f"sqlite:///{folder / 'state.db'}"},
        "rules": ["rules/"], "channels": channels, "daemon": {"listen": None, **daemon},
    }, indent=1))
    return path


def check(config: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(config), "check"], env=env or {})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


# --- URLs that carry secrets are http(s), said without showing them ---------------------------------


@pytest.mark.parametrize("url", [
    "hooks.slack.com/services/T0/B0/sEcReT-w1thout-scheme",      # the finding: "unknown url type" printed it whole
    "ftp://hooks.slack.com/services/T0/B0/sEcReT-w1thout-scheme",
    "file:///etc/passwd-sEcReT-w1thout-scheme",
    "https:///sEcReT-w1thout-scheme",
    "https://hooks.slack.com/sEcReT-w1thout-scheme\n",
    "https://hooks.slack.com:99999/sEcReT-w1thout-scheme",
])
def test_a_secret_url_must_be_http_and_the_problem_does_not_show_it(tmp_path: Path, url: str) -> None:
    config = write_config(tmp_path, {"hook": {"type": "slack_webhook", "url": url}},
                          heartbeat={"url": url.replace("hooks", "beat")})
    code, output = check(config)
    assert code == 1
    lines = output.splitlines()
    hook = next(line for line in lines if ": channels.hook.url: " in line)
    beat = next(line for line in lines if ": daemon.heartbeat.url: " in line)
    assert hook.startswith(f"{config}:") and beat.startswith(f"{config}:")
    assert "sEcReT" not in output
    for problem in (hook, beat):
        assert "(the value is not shown)" in problem or "control characters" in problem, problem


def test_a_missing_variable_for_a_secret_url_is_one_problem(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"hook": {"type": "slack_webhook", "url": "${AW_TEST_NO_SUCH_HOOK}"}})
    code, output = check(config)
    assert code == 1
    line = next(n for n, text in enumerate(config.read_text().splitlines(), 1) if "AW_TEST_NO_SUCH_HOOK" in text)
    assert [text for text in output.splitlines() if "problem(s)" not in text] == [
        f"{config}:{line}: channels.hook.url: environment variable ${{AW_TEST_NO_SUCH_HOOK}} is not set"]


def test_http_and_https_urls_are_accepted() -> None:
    for url in ("https://hooks.slack.com/services/T0/B0/x", "http://127.0.0.1:8080/ping/abc", "HTTPS://hc-ping.com/u"):
        assert HeartbeatConfig(url=url).url is not None
    with pytest.raises(ValidationError) as refused:
        HeartbeatConfig(url="hc-ping.com/uuid-sEcReT")
    assert "sEcReT" not in str(refused.value)


# --- what is remembered --------------------------------------------------------------------------


def test_configured_secrets_and_environment_values_are_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AW_TEST_HOOK", "https://hooks.slack.com/services/T1/B1/env-hook-token")
    monkeypatch.setenv("AW_TEST_PORT", "587")
    config_path = write_config(tmp_path, {
        "hook": {"type": "slack_webhook", "url": "${AW_TEST_HOOK}"},
        "bot": {"type": "slack", "token": "xoxb-literal-in-file", "channel": "#ops"},
        "mail": {"type": "email", "host": "smtp.example.com", "port": "${AW_TEST_PORT}", "username": "aw",
                 "password": "pa55word!", "from": "a@example.com", "to": ["b@example.com"]},
    })
    data = json.loads(config_path.read_text())
    data["state"]["url"] = "postgresql://aw:db-pa%40ss@127.0.0.1:1/state"
    config_path.write_text(json.dumps(data))
    config, problems = read_config(config_path)
    assert config is not None and problems == []
    text = ("posting to https://hooks.slack.com/services/T1/B1/env-hook-token failed; path "
            "/services/T1/B1/env-hook-token; token xoxb-literal-in-file; password pa55word!; db-pa%40ss or db-pa@ss; "
            "port 587")
    assert scrub(text) == ("posting to *** failed; path ***; token ***; password ***; *** or ***; port 587")


def test_scrub_data_reaches_into_containers_and_dataclasses() -> None:
    from audit_watch.alerting.outbox import OutboxEntry

    remember(SecretStr("sk-nested-secret-1"))
    entry = OutboxEntry(id=1, channel="hook", kind="firing", rule="r", title="t", status="dead", attempts=1,
                        created_at=T0, next_attempt_at=None, give_up_at=T0, last_attempt_at=T0, delivered_at=None,
                        last_error="HTTP 404 for sk-nested-secret-1", parent_id=None, alerts=1)
    assert scrub_data([{"a": ("x sk-nested-secret-1",)}, entry, 3]) == [
        {"a": ("x ***",)}, entry.__class__(**{**entry.__dict__, "last_error": "HTTP 404 for ***"}), 3]


# --- logs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_logs_are_scrubbed_in_messages_arguments_extras_and_tracebacks(restore_logging: None, log_format: str) -> None:
    secret = "xoxb-log-secret-9"
    remember(secret)
    stream = io.StringIO()
    configure_logging(log_format, stream=stream)
    log = logging.getLogger("audit_watch.test")
    log.warning("token %s in an argument", secret, extra={"url": f"https://x/{secret}"})
    log.warning(f"token {secret} in the message")
    try:
        raise ValueError(f"unknown url type: {secret!r}")
    except ValueError:
        log.exception("it broke")
    thread = threading.Thread(target=lambda: (_ for _ in ()).throw(RuntimeError(secret)), name="worker")
    thread.start()
    thread.join()
    output = stream.getvalue()
    assert secret not in output and "ValueError: unknown url type" in output and "RuntimeError" in output
    assert output.count(MASK) >= (5 if log_format == "json" else 4)    # text lines do not show extras


def test_slack_sdk_is_kept_above_debug(restore_logging: None) -> None:
    """slack_sdk's webhook client logs the whole URL at DEBUG: with --log-level debug it stays quiet."""
    stream = io.StringIO()
    configure_logging("text", logging.DEBUG, stream=stream)
    url = "http://127.0.0.1:1/hooks/T9/B9/never-remembered-token"     # not remembered: the level alone keeps it out
    WebhookClient(url, timeout=1, retry_handlers=[]).logger.debug(f"Sending a request - url: {url}")
    logging.getLogger("audit_watch.test").debug("our own debug lines still show")
    assert "never-remembered-token" not in stream.getvalue()
    assert "our own debug lines still show" in stream.getvalue()


def test_the_command_line_scrubs_its_log_and_uncaught_exceptions(restore_logging: None,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    secret = "xoxb-cli-secret-77"
    remember(secret)
    logs.configure_cli_logging(logging.DEBUG)
    logging.getLogger("slack_sdk.webhook.client").debug("url: %s", secret)
    logging.getLogger("audit_watch.x").error("with %s", secret)
    try:
        raise RuntimeError(f"boom {secret}")
    except RuntimeError:
        sys.excepthook(*sys.exc_info())      # what Python does with an exception nobody caught
    err = capsys.readouterr().err
    assert secret not in err and f"RuntimeError: boom {MASK}" in err
    # The root logger's handlers (here pytest's) carry the filter; slack_sdk stays above DEBUG.
    assert secret not in caplog.text and f"with {MASK}" in caplog.text and "url:" not in caplog.text


def test_short_errors_are_scrubbed() -> None:
    remember("https://hooks.slack.com/services/T2/B2/short-error-token")
    error = ValueError("unknown url type: 'https://hooks.slack.com/services/T2/B2/short-error-token'")
    assert short_error(error) == "ValueError: unknown url type: '***'"


# --- the outbox, `alerts --outbox` and /metrics ---------------------------------------------------------


def test_a_webhook_error_quoting_its_url_is_stored_and_shown_without_it(tmp_path: Path, restore_logging: None) -> None:
    with FakeSlack() as fake:
        # A proxy (or Slack) answering with the path it was asked for.
        fake.script("webhook", Reply(404, f"no_service for {fake.webhook_url}"))
        config_path = write_config(tmp_path, {"hook": {"type": "slack_webhook", "url": fake.webhook_url}})
        config, problems = read_config(config_path)
        assert config is not None and not problems
        stream = io.StringIO()
        configure_logging("json", stream=stream)
        state = StateStore.open(config.state.url)
        try:
            rule = make_rule(notify=["hook"])
            process([evaluation(rule, T0, make_alert())], config, state, T0)
            assert deliver_due(config, state, T0 + timedelta(seconds=1)).dead == 1
        finally:
            state.close()
        secret_path = "/hooks/T000/B000/secret"
        assert fake.requests[0].path == secret_path
        assert secret_path not in stream.getvalue() and "webhook answered HTTP 404" in stream.getvalue()
        for args in (["alerts", "--outbox"], ["alerts", "--outbox", "--json"]):
            result = CliRunner().invoke(main, ["--config", str(config_path), *args])
            assert result.exit_code == 0, result.output
            assert secret_path not in result.output and "***" in result.output, result.output
        for args in (["alerts"], ["alerts", "--json"]):      # the alert states go through the same scrubbing
            result = CliRunner().invoke(main, ["--config", str(config_path), *args])
            assert result.exit_code == 0 and "failed-jobs" in result.output, result.output
        [entry] = json.loads(CliRunner().invoke(main, ["--config", str(config_path), "alerts", "--outbox",
                                                       "--json"]).output)
        assert entry["last_error"] == f"webhook answered HTTP 404: no_service for {MASK}"


def test_metrics_are_scrubbed() -> None:
    from audit_watch.daemon.http_server import Route, Router

    remember("metric-label-secret")
    metrics = Metrics("r1")
    metrics.deliveries.labels("metric-label-secret", "dead").inc()
    app = ops_app(metrics.registry, Health(lambda: T0))
    assert isinstance(app, Router) and isinstance(app.routes["/metrics"], Route)
    from test_ops import call

    status, _, body = call(app, "/metrics")
    assert status == "200 OK" and b"metric-label-secret" not in body
    assert b'audit_watch_deliveries_total{channel="***",result="dead"} 1.0' in body


def test_check_and_run_once_do_not_echo_an_environment_value(tmp_path: Path) -> None:
    """A secret put where a word was expected comes back in a problem ("unknown value ...")."""
    config = write_config(tmp_path, {"x": {"type": "${AW_TEST_WRONG_PLACE}"}})
    env = {"AW_TEST_WRONG_PLACE": "xoxb-in-the-wrong-key-1"}
    code, output = check(config, env)
    assert code == 1 and "channels.x.type: unknown value '***'" in output and "xoxb" not in output
    result = CliRunner().invoke(main, ["--config", str(config), "run", "--once"], env=env)
    assert result.exit_code == 2 and "unknown value '***'" in result.output and "xoxb" not in result.output
