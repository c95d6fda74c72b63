"""The whole pass: evaluations -> states + outbox (one transaction) -> delivery; both backends."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from audit_watch.alerting import silences
from audit_watch.alerting.pipeline import deliver_due, process
from audit_watch.alerting.state import StateStore
from audit_watch.alerting.views import alerts_table, outbox_summary, outbox_table
from audit_watch.config.model import Config
from audit_watch.rules.evaluate import evaluate_rule
from audit_watch.rules.loader import RULE_ADAPTER
from audit_watch.store.rows import insert_rows
from audit_watch.store.schema import create_reference_tables
from audit_watch.store.source import AuditSource

from fake_slack import FakeSlack
from test_state import T0, evaluation, make_alert, make_rule, state, state_url

MIN = timedelta(minutes=1)


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


def slack_config(fake: FakeSlack, tmp_path: Path | None = None) -> Config:
    channels: dict[str, Any] = {"oncall": {"type": "slack", "token": "xoxb-t", "channel": "#ops", "base_url": fake.base_url}}
    if tmp_path is not None:
        channels["archive"] = {"type": "file", "path": str(tmp_path / "outbox")}
    return Config.model_validate({"channels": channels})


def step(config: Config, state: StateStore, rule: Any, now: Any, *alerts: Any) -> None:
    """One tick: process what the rule found at ``now``, then deliver."""
    process([evaluation(rule, now, *alerts)], config, state, now)
    deliver_due(config, state, now, rng=random.Random(11))


def test_timeline(fake: FakeSlack, state: StateStore) -> None:
    config = slack_config(fake)
    rule = make_rule(**{"for": "5m", "repeat": "1h"})
    posts = lambda: fake.calls("chat.postMessage")  # noqa: E731

    step(config, state, rule, T0, make_alert(now=T0))                                   # pending
    assert posts() == [] and [r.state for r in alerts_table(state)] == ["pending"]
    step(config, state, rule, T0 + 5 * MIN, make_alert(now=T0 + 5 * MIN))               # firing
    assert len(posts()) == 1 and "thread_ts" not in posts()[0]
    root_ts = "1700000000.000001"
    for minutes in (6, 30, 64):                                                           # still firing
        step(config, state, rule, T0 + minutes * MIN, make_alert(now=T0 + minutes * MIN))
    assert len(posts()) == 1
    step(config, state, rule, T0 + 65 * MIN, make_alert(now=T0 + 65 * MIN, value=9))    # repeat due
    assert len(posts()) == 2 and posts()[1]["thread_ts"] == root_ts
    assert "*Value:* 9" in json.dumps(posts()[1]["blocks"])
    step(config, state, rule, T0 + 70 * MIN)                                             # resolved
    assert len(posts()) == 3 and posts()[2]["thread_ts"] == root_ts
    [update] = fake.calls("chat.update")
    assert update["ts"] == root_ts and update["blocks"][0]["text"]["text"] == "✅ Resolved: failed-jobs"
    assert [r.state for r in alerts_table(state)] == ["resolved"]
    step(config, state, rule, T0 + 80 * MIN)                                             # stays quiet
    step(config, state, rule, T0 + 3 * 60 * MIN, make_alert(now=T0 + 180 * MIN))       # pending again
    assert len(posts()) == 3
    step(config, state, rule, T0 + 185 * MIN, make_alert(now=T0 + 185 * MIN))          # a new episode
    assert len(posts()) == 4 and "thread_ts" not in posts()[3]
    assert len(fake.calls("chat.update")) == 1
    step(config, state, rule, T0 + 250 * MIN, make_alert(now=T0 + 250 * MIN))          # repeat: new thread
    assert posts()[4]["thread_ts"] == "1700000000.000004"


def test_twelve_agents_are_one_message_per_channel(fake: FakeSlack, state: StateStore, tmp_path: Path) -> None:
    config = slack_config(fake, tmp_path)
    rule = make_rule(notify=["oncall", "archive"])
    agents = [make_alert(f"a{i:02d}", f"Agent {i:02d}") for i in range(12)]
    summary = process([evaluation(rule, T0, *agents)], config, state, T0)
    assert len(summary.notifications) == 2 and summary.transitions["firing"] == 12
    assert deliver_due(config, state, T0).delivered == 2
    [post] = fake.calls("chat.postMessage")
    assert post["text"].startswith("🟠 [warning] failed-jobs: 12 alerts firing: Agent 00, Agent 01, Agent 02 and 9 more")
    files = sorted(p.name for p in (tmp_path / "outbox").iterdir())
    assert len(files) == 2 and files[0].endswith("-failed-jobs-firing.json") and files[1].endswith(".txt")
    # Six of them resolve together: one reply, and the root shows 6 of 12.
    process([evaluation(rule, T0 + MIN, *agents[:6])], config, state, T0 + MIN)
    deliver_due(config, state, T0 + MIN)
    assert len(fake.calls("chat.postMessage")) == 2
    assert fake.calls("chat.update")[0]["blocks"][0]["text"]["text"] == "🟠 failed-jobs: 6 of 12 resolved"


def test_a_silenced_alert_sends_nothing_until_the_silence_ends(fake: FakeSlack, state: StateStore) -> None:
    config = slack_config(fake)
    rule = make_rule(repeat="1h")
    silence = silences.add(state, "failed-jobs", timedelta(hours=2), "known incident", T0, matchers={"agent_id": "a1"})
    step(config, state, rule, T0, make_alert("a1"), make_alert("a2", "Billing"))
    [post] = fake.calls("chat.postMessage")
    assert "Billing" in post["text"] and "Support Triage" not in post["text"]
    by_group = {r.group: r for r in alerts_table(state)}
    assert by_group["Support Triage"].state == "firing" and by_group["Support Triage"].silenced_by == silence.id
    assert by_group["Support Triage"].last_notified_at is None
    step(config, state, rule, T0 + 90 * MIN, make_alert("a1", now=T0 + 90 * MIN), make_alert("a2", "Billing"))
    assert len(fake.calls("chat.postMessage")) == 2                       # only Billing's repeat
    assert "Support Triage" not in fake.calls("chat.postMessage")[1]["text"]
    step(config, state, rule, T0 + 121 * MIN, make_alert("a1", now=T0 + 121 * MIN), make_alert("a2", "Billing"))
    third = fake.calls("chat.postMessage")[2]                              # the silence ended by itself
    assert "Support Triage" in third["text"] and "thread_ts" not in third and "firing" in third["text"]


def test_an_alert_resolved_during_its_silence_says_nothing(fake: FakeSlack, state: StateStore) -> None:
    config = slack_config(fake)
    rule = make_rule()
    silences.add(state, "failed-jobs", timedelta(hours=1), "maintenance", T0)
    step(config, state, rule, T0, make_alert())
    step(config, state, rule, T0 + 10 * MIN)
    step(config, state, rule, T0 + 70 * MIN)
    assert fake.calls("chat.postMessage") == [] and alerts_table(state)[0].state == "resolved"


def test_a_crash_between_commit_and_delivery_loses_nothing(fake: FakeSlack, state: StateStore, state_url: str) -> None:
    config = slack_config(fake)
    summary = process([evaluation(make_rule(), T0, make_alert())], config, state, T0)
    assert len(summary.notifications) == 1
    state.close()                                                          # the process "dies" here
    restarted = StateStore.open(state_url)
    try:
        assert deliver_due(config, restarted, T0 + MIN).delivered == 1
        assert deliver_due(config, restarted, T0 + 2 * MIN).attempted == 0
        process([evaluation(make_rule(), T0 + 2 * MIN, make_alert())], config, restarted, T0 + 2 * MIN)
        assert deliver_due(config, restarted, T0 + 2 * MIN).attempted == 0
    finally:
        restarted.close()
    assert len(fake.calls("chat.postMessage")) == 1


def test_a_failed_or_stale_evaluation_changes_nothing(fake: FakeSlack, state: StateStore) -> None:
    config = slack_config(fake)
    rule = make_rule()
    step(config, state, rule, T0, make_alert())
    summary = process([evaluation(rule, T0 + MIN, error="OperationalError: database is locked")], config, state, T0 + MIN)
    assert summary.skipped and summary.skipped[0][1].startswith("evaluation failed")
    stale = process([evaluation(rule, T0 - MIN)], config, state, T0 + MIN)
    assert stale.skipped and stale.skipped[0][1].startswith("stale")
    assert [r.state for r in alerts_table(state)] == ["firing"] and len(fake.calls("chat.postMessage")) == 1


def test_a_rendering_failure_still_notifies(fake: FakeSlack, state: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import audit_watch.alerting.stages as pipeline

    def broken(*_args: Any) -> dict[str, Any]:
        raise RuntimeError("template bug")

    monkeypatch.setattr(pipeline, "compose", broken)
    config = slack_config(fake)
    step(config, state, make_rule(), T0, make_alert(name="<!here>"))
    [post] = fake.calls("chat.postMessage")
    assert "Rendering failed: RuntimeError: template bug" in post["text"] and "<!here>" not in post["text"]


def test_real_rules_on_an_sqlite_store_to_the_file_channel(state: StateStore, tmp_path: Path) -> None:
    src = AuditSource.from_url(f"sqlite:///{tmp_path / 'audit.db'}", readonly=False)
    create_reference_tables(src.engine, src.tables)
    insert_rows(src.engine, src.tables, {
        "agents": [{"id": "a1", "name": "Support Triage"}, {"id": "a2", "name": "Billing Bot"}],
        "jobs": [{"agent_id": "a1", "status": "failed", "at": "-5m", "count": 6, "prompt": "SECRET PROMPT"},
                 {"agent_id": "a2", "status": "failed", "at": "-5m", "count": 2}],
    }, T0)
    config = Config.model_validate({"channels": {"archive": {"type": "file", "path": "outbox"}}, "base_dir": tmp_path})
    rule = RULE_ADAPTER.validate_python({
        "name": "failed-jobs", "kind": "threshold", "where": {"status": "failed"}, "group_by": ["agent_id"],
        "threshold": {"op": ">=", "value": 5}, "window": "15m", "notify": ["archive"],
    })
    evaluated = evaluate_rule(rule, src, T0, config.links)
    src.engine.dispose()
    assert evaluated.ok and len(evaluated.alerts) == 1
    processed = process([evaluated], config, state, T0)
    delivered = deliver_due(config, state, T0)
    assert len(processed.notifications) == 1 and delivered.delivered == 1
    stem = f"20261120T120000Z-{processed.notifications[0]:08d}-failed-jobs-firing"
    document = json.loads((tmp_path / "outbox" / f"{stem}.json").read_text())
    expected = evaluated.alerts[0].to_json()
    assert document["alerts"][0] == {**expected, "group_label": "Support Triage"}
    text = (tmp_path / "outbox" / f"{stem}.txt").read_text()
    assert "Support Triage: 6 matching jobs in 15m" in text and "SECRET" not in text
    assert outbox_table(state) == [] and outbox_summary(state)["delivered"] == 1
    [entry] = outbox_table(state, ["delivered"])
    assert entry.title == "failed-jobs: 1 alert firing" and entry.alerts == 1
