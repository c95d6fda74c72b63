"""A successful SIGHUP reload of ``audit-watch run`` (a real process, SQLite, real time):
changed templates are used from the next message on, a rule set to ``enabled: false``
resolves its alerts (and says so), the other rules keep their state.

Real time because the reload is driven by a signal to a running daemon; the rules tick
every second, so the test waits a few seconds at most for each step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from test_daemon import log_records, wait_for

from audit_watch.alerting.state import StateStore
from audit_watch.alerting.views import alerts_table
from audit_watch.store.rows import insert_rows
from audit_watch.store.schema import create_reference_tables
from audit_watch.store.source import AuditSource

FAILED = {"name": "failed-jobs", "kind": "threshold", "where": {"status": "failed"}, "group_by": ["agent_id"],
          "window": "1h", "every": "1s", "threshold": {"op": ">=", "value": 2}, "notify": ["archive"], "repeat": "0s"}


# The file channel's text of a threshold rule (a config template comes before the bundled one).
TEMPLATE = "VERSION{% for alert in alerts %} {{ alert.status }}: {{ alert.group_label }}{% endfor %}\n"


def texts(folder: Path, rule: str, kind: str) -> list[str]:
    return [p.read_text().strip() for p in sorted((folder / "out").glob(f"*-{rule}-{kind}.txt"))]


def states(folder: Path) -> dict[str, str]:
    store = StateStore.open(f"sqlite:///{folder / 'state.db'}")
    try:
        return {row.rule: row.state for row in alerts_table(store)}
    finally:
        store.close()


def test_sighup_applies_new_templates_and_resolves_a_disabled_rules_alerts(tmp_path: Path) -> None:
    src = AuditSource.from_url(f"sqlite:///{tmp_path / 'audit.db'}", readonly=False)
    create_reference_tables(src.engine, src.tables)
    insert_rows(src.engine, src.tables, {
        "agents": [{"id": "a1", "name": "Support Triage"}],
        "jobs": [{"at": "-2m", "status": "failed", "agent_id": "a1", "count": 3}],
    }, datetime.now(UTC))
    src.engine.dispose()
    rules, templates = tmp_path / "rules", tmp_path / "templates" / "alerts"
    rules.mkdir()
    templates.mkdir(parents=True)
    (rules / "failed.yaml").write_text(json.dumps(FAILED))
    (rules / "kept.yaml").write_text(json.dumps({**FAILED, "name": "kept"}))
    template = templates / "threshold.text.j2"
    template.write_text(TEMPLATE.replace("VERSION", "VERSION ONE"))
    (tmp_path / "audit-watch.yaml").write_text(json.dumps({
        "source": {"url": "sqlite:///audit.db"}, "state": {"url": "sqlite:///state.db"},
        "rules": ["rules/"], "templates": ["templates/"],
        "channels": {"archive": {"type": "file", "path": "out"}},
        "daemon": {"listen": None, "reload_watch": False, "freshness": {"enabled": False}},
    }))
    log_path = tmp_path / "daemon.log"
    proc = subprocess.Popen([sys.executable, "-m", "audit_watch", "run", "--log-format", "json"], cwd=tmp_path,
                            stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for(lambda: texts(tmp_path, "failed-jobs", "firing") and texts(tmp_path, "kept", "firing"), 60,
                 "both rules firing")
        assert texts(tmp_path, "failed-jobs", "firing") == ["VERSION ONE firing: Support Triage"]

        template.write_text(TEMPLATE.replace("VERSION", "VERSION TWO"))
        (rules / "failed.yaml").write_text(json.dumps({**FAILED, "enabled": False}))
        (rules / "new.yaml").write_text(json.dumps({**FAILED, "name": "added"}))
        proc.send_signal(signal.SIGHUP)
        reloaded: Any = wait_for(lambda: [r for r in log_records(log_path) if r["message"].startswith("reloaded:")],
                                 30, "the reload")
        assert "2 rules (1 added, 1 removed, 0 changed)" in reloaded[0]["message"]
        # The disabled rule's alert is resolved, and the message is rendered with the new template.
        resolved = wait_for(lambda: texts(tmp_path, "failed-jobs", "resolved"), 30, "the resolution")
        assert resolved == ["VERSION TWO resolved: Support Triage"]
        assert wait_for(lambda: texts(tmp_path, "added", "firing"), 30, "the added rule") == \
            ["VERSION TWO firing: Support Triage"]
        assert states(tmp_path) == {"failed-jobs": "resolved", "kept": "firing", "added": "firing"}
        # The kept rule was not told again (its state survived the reload), the disabled one stays quiet.
        assert len(texts(tmp_path, "kept", "firing")) == 1 and len(texts(tmp_path, "failed-jobs", "firing")) == 1
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert log_records(log_path)[-1]["message"] == "stopped"
