"""Slack through real slack-sdk clients against a fake Slack on 127.0.0.1; both state backends."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from audit_watch.alerting.outbox import list_entries
from audit_watch.alerting.pipeline import DeliverySummary, deliver_due, process
from audit_watch.alerting.state import StateStore
from audit_watch.config.model import Config

from fake_slack import CHANNEL_ID, FakeSlack, rate_limited, server_error, slack_error
from smtp_server import free_port
from test_render import EVIL_ERROR, EVIL_NAME, assert_no_slack_injection
from test_state import T0, evaluation, make_alert, make_rule, state, state_url

TOKEN = "xoxb-test-token"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


def config_for(fake: FakeSlack, **channel: Any) -> Config:
    return Config.model_validate({"channels": {
        "oncall": {"type": "slack", "token": TOKEN, "channel": "#ops-alerts", "base_url": fake.base_url, **channel},
        "hook": {"type": "slack_webhook", "url": fake.webhook_url},
    }})


def deliver(config: Config, state: StateStore, now: datetime) -> DeliverySummary:
    return deliver_due(config, state, now, rng=random.Random(3))


def fire(config: Config, state: StateStore, now: datetime = T0, notify: tuple[str, ...] = ("oncall",), **alert: Any) -> None:
    rule = make_rule(notify=list(notify), repeat="1h")
    process([evaluation(rule, now, make_alert(now=now, **alert))], config, state, now)


def resolve(config: Config, state: StateStore, now: datetime, notify: tuple[str, ...] = ("oncall",)) -> None:
    process([evaluation(make_rule(notify=list(notify), repeat="1h"), now)], config, state, now)


def test_block_kit_message(fake: FakeSlack, state: StateStore) -> None:
    config = config_for(fake)
    fire(config, state, rows=3)
    assert deliver(config, state, T0).delivered == 1
    [request] = [r for r in fake.requests if r.method == "chat.postMessage"]
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    body = request.body
    assert body["channel"] == "#ops-alerts" and "thread_ts" not in body
    assert body["text"] == "🟠 [warning] failed-jobs: 1 alert firing: Support Triage"
    header, intro, section, context = body["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "🟠 failed-jobs: 1 alert firing", "emoji": True}}
    assert intro["text"]["text"] == "*Severity:* warning · *Kind:* threshold\nFailed jobs per agent"
    text = section["text"]["text"]
    assert text.startswith("*Support Triage*: 7 matching jobs in 15m\n*Value:* 7 against &gt;= 5\n")
    for i in (1, 2, 3):
        assert f"<https://auxot.example.com/audit-logs/jobs/job-a1-{i}|job-a1-{i}>" in text
    button = section["accessory"]
    assert button["type"] == "button" and button["text"]["text"] == "Open in Audit Logs"
    assert button["url"] == "https://auxot.example.com/audit-logs/jobs?status=failed&agent_id=a1"
    assert context["type"] == "context"
    assert context["elements"][0]["text"].startswith("Rule *failed-jobs* · window 15m · evaluated 2026-11-20 12:00 UTC")


def test_rate_limit_waits_for_retry_after_then_delivers_once(fake: FakeSlack, state: StateStore) -> None:
    config = config_for(fake)
    fake.script("chat.postMessage", rate_limited(2))
    fire(config, state)
    assert deliver(config, state, T0).retrying == 1
    assert deliver(config, state, T0 + timedelta(seconds=1.9)).attempted == 0
    assert len(fake.calls("chat.postMessage")) == 1                 # nothing sent before the 2 s
    assert deliver(config, state, T0 + timedelta(seconds=2.5)).delivered == 1
    assert deliver(config, state, T0 + timedelta(minutes=5)).attempted == 0
    assert len(fake.calls("chat.postMessage")) == 2 and len(fake.calls("chat.postMessage", ok_only=True)) == 1


def test_server_errors_back_off_then_deliver_once(fake: FakeSlack, state: StateStore) -> None:
    config = config_for(fake)
    fake.script("chat.postMessage", server_error(), server_error(502), server_error())
    fire(config, state)
    now = T0
    for _ in range(3):
        assert deliver(config, state, now).retrying == 1
        [entry] = list_entries(state)
        assert entry.status == "retrying" and "HTTP 5" in (entry.last_error or "")
        assert entry.next_attempt_at is not None and entry.next_attempt_at > now
        now = entry.next_attempt_at
    assert deliver(config, state, now).delivered == 1
    deliver(config, state, now + timedelta(hours=1))
    assert len(fake.calls("chat.postMessage")) == 4 and len(fake.calls("chat.postMessage", ok_only=True)) == 1


@pytest.mark.parametrize("code", ["invalid_auth", "channel_not_found", "not_in_channel"])
def test_permanent_errors_are_dead_at_once(fake: FakeSlack, state: StateStore, code: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    config = config_for(fake)
    fake.script("chat.postMessage", slack_error(code))
    fire(config, state)
    with caplog.at_level(logging.ERROR):
        assert deliver(config, state, T0).dead == 1
    deliver(config, state, T0 + timedelta(days=1))
    assert len(fake.calls("chat.postMessage")) == 1
    [entry] = list_entries(state)
    assert entry.status == "dead" and code in (entry.last_error or "")
    assert any(code in r.getMessage() and "oncall" in r.getMessage() for r in caplog.records)


def test_connection_refused_is_retried(state: StateStore) -> None:
    config = Config.model_validate({"channels": {"oncall": {
        "type": "slack", "token": TOKEN, "channel": "#c", "base_url": f"http://127.0.0.1:{free_port()}/api/"}}})
    fire(config, state)
    assert deliver(config, state, T0).retrying == 1


def test_repeat_and_resolution_thread_under_the_first_message(fake: FakeSlack, state: StateStore) -> None:
    config = config_for(fake)
    fire(config, state)
    deliver(config, state, T0)
    root = fake.calls("chat.postMessage")[0]
    root_ts = "1700000000.000001"
    fire(config, state, now=T0 + timedelta(hours=1))                 # repeat is due
    deliver(config, state, T0 + timedelta(hours=1))
    resolve(config, state, T0 + timedelta(hours=1, minutes=5))
    deliver(config, state, T0 + timedelta(hours=1, minutes=5))
    posts = fake.calls("chat.postMessage")
    assert len(posts) == 3 and "thread_ts" not in root
    assert posts[1]["thread_ts"] == root_ts and posts[1]["channel"] == CHANNEL_ID
    assert posts[1]["blocks"][0]["text"]["text"] == "🟠 Still firing: failed-jobs (1 alert)"
    assert posts[2]["thread_ts"] == root_ts and posts[2]["blocks"][0]["text"]["text"] == "✅ Resolved: failed-jobs"
    [update] = fake.calls("chat.update")
    assert update["channel"] == CHANNEL_ID and update["ts"] == root_ts
    assert update["blocks"][0]["text"]["text"] == "✅ Resolved: failed-jobs"
    assert "~Support Triage~ resolved after 1h 5m firing" in update["blocks"][2]["text"]["text"]


def test_a_failed_update_is_retried_without_posting_the_reply_again(fake: FakeSlack, state: StateStore) -> None:
    config = config_for(fake)
    fire(config, state)
    deliver(config, state, T0)
    fake.script("chat.update", server_error())
    resolve(config, state, T0 + timedelta(minutes=5))
    assert deliver(config, state, T0 + timedelta(minutes=5)).retrying == 1
    assert deliver(config, state, T0 + timedelta(minutes=30)).delivered == 1
    assert len(fake.calls("chat.postMessage")) == 2                  # root + one reply
    assert len(fake.calls("chat.update")) == 2 and len(fake.calls("chat.update", ok_only=True)) == 1


def test_an_update_slack_refuses_leaves_the_reply_delivered(fake: FakeSlack, state: StateStore) -> None:
    config = config_for(fake)
    fire(config, state)
    deliver(config, state, T0)
    fake.script("chat.update", slack_error("message_not_found"))
    resolve(config, state, T0 + timedelta(minutes=5))
    assert deliver(config, state, T0 + timedelta(minutes=5)).delivered == 1
    assert len(fake.calls("chat.postMessage")) == 2


def test_injection_reaches_slack_escaped(fake: FakeSlack, state: StateStore) -> None:
    config = config_for(fake)
    fire(config, state, notify=("oncall", "hook"), name=EVIL_NAME, details={"row": {"error": EVIL_ERROR}})
    deliver(config, state, T0)
    for body in [*fake.calls("chat.postMessage"), *fake.calls("webhook")]:
        assert_no_slack_injection(body)
        assert "&lt;!channel&gt; &lt;https://evil.test|click&gt; &lt;@U123&gt; &amp; co" in body["text"]


def test_webhook_posts_every_notification_without_threads(fake: FakeSlack, state: StateStore) -> None:
    config = config_for(fake)
    fire(config, state, notify=("hook",))
    deliver(config, state, T0)
    resolve(config, state, T0 + timedelta(minutes=5), notify=("hook",))
    deliver(config, state, T0 + timedelta(minutes=5))
    first, second = fake.calls("webhook")
    assert first["blocks"][0]["type"] == "header" and "thread_ts" not in second
    assert second["blocks"][0]["text"]["text"] == "✅ Resolved: failed-jobs"
    assert [r.path for r in fake.requests] == ["/hooks/T000/B000/secret"] * 2


def test_webhook_rate_limit_and_permanent_errors(fake: FakeSlack, state: StateStore) -> None:
    from fake_slack import Reply

    config = config_for(fake)
    fake.script("webhook", rate_limited(3), Reply(404, "no_service"))
    fire(config, state, notify=("hook",))
    assert deliver(config, state, T0).retrying == 1
    assert deliver(config, state, T0 + timedelta(seconds=2)).attempted == 0
    assert deliver(config, state, T0 + timedelta(seconds=4)).dead == 1
    [entry] = list_entries(state)
    assert "404" in (entry.last_error or "") and "no_service" in (entry.last_error or "")
