"""A crash between the state change and delivery loses nothing and sends nothing twice.

`audit-watch run --once` runs as a real process against a fake Slack that hangs on
the first chat.postMessage; the process is SIGKILLed while it waits, i.e. after the
alert state and its outbox row were committed and before delivery finished. The
next `run --once` (once the dead run's claim has lapsed) delivers the notification,
and no further message follows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from audit_watch.alerting import views as pipeline
from audit_watch.alerting.state import StateStore
from audit_watch.store.rows import insert_rows
from audit_watch.store.schema import create_reference_tables
from audit_watch.store.source import AuditSource

from fake_slack import FakeSlack, hang

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

RULE = """\
name: failed-jobs
kind: threshold
source: jobs
where: {status: failed}
group_by: [agent_id]
window: 1h
threshold: {op: ">=", value: 3}
notify: [oncall]
"""


def _setup(tmp_path: Path, fake: FakeSlack) -> Path:
    src = AuditSource.from_url(f"sqlite:///{tmp_path / 'audit.db'}", readonly=False)
    create_reference_tables(src.engine, src.tables)
    insert_rows(src.engine, src.tables, {
        "agents": [{"id": "a1", "name": "Support Triage"}],
        "jobs": [{"at": "-5m", "status": "failed", "agent_id": "a1", "count": 4}],
    }, NOW)
    src.engine.dispose()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "failed.yaml").write_text(RULE)
    config = tmp_path / "audit-watch.yaml"
    config.write_text(f"""\
source: {{url: "sqlite:///audit.db"}}
state: {{url: "sqlite:///state.db"}}
rules: [rules/]
channels:
  oncall: {{type: slack, token: "xoxb-test", channel: "#ops", base_url: "{fake.base_url}"}}
daemon: {{listen: null, freshness: {{enabled: false}}}}
""")
    return config


def _run_once(config: Path, now: datetime) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "audit_watch", "--config", str(config), "run", "--once",
         "--now", now.strftime("%Y-%m-%dT%H:%M:%SZ")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=config.parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )


def test_sigkill_between_commit_and_delivery_delivers_exactly_once(tmp_path: Path) -> None:
    with FakeSlack() as fake:
        config = _setup(tmp_path, fake)
        fake.script("chat.postMessage", hang(30))
        first = _run_once(config, NOW)
        deadline = time.monotonic() + 60
        while "chat.postMessage" not in fake.received:
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline, "the first run never tried to deliver"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

        # What the killed run left: the alert firing, its notification in the outbox, undelivered.
        state = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}")
        try:
            rows = pipeline.alerts_table(state)
            assert [(r.rule, r.state) for r in rows] == [("failed-jobs", "firing")]
            entries = pipeline.outbox_table(state)
            assert len(entries) == 1 and entries[0].status != "delivered"
        finally:
            state.close()

        # The next run, after the dead run's claim has lapsed, delivers it.
        second = _run_once(config, NOW + timedelta(minutes=11))
        output = second.communicate(timeout=120)[0]
        assert second.returncode == 0, output

        posts = [r for r in fake.requests if r.method == "chat.postMessage"]
        assert len(fake.received) == 2, fake.received           # the hung one, then one more
        assert len(posts) >= 1 and posts[-1].status == 200
        assert "Support Triage" in str(posts[-1].body)
        state = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}")
        try:
            summary = pipeline.outbox_summary(state)
            assert summary["delivered"] == 1 and sum(summary.values()) == 1, summary
        finally:
            state.close()

        # A third run sends nothing more: delivered exactly once.
        third = _run_once(config, NOW + timedelta(minutes=12))
        assert third.communicate(timeout=120)[0] is not None
        assert fake.received.count("chat.postMessage") == 2
