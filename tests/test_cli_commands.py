"""The operator's commands as real processes: ``alerts``, ``silence``, ``check --connect``,
``export``, ``seed`` and ``demo`` (what an admin types, exit codes and all).

The alert states come from ``run --once --now`` on a small SQLite deployment, so
``alerts`` and ``silence`` read what the daemon's own path wrote.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from audit_watch.store.rows import insert_rows
from audit_watch.store.schema import create_reference_tables
from audit_watch.store.source import AuditSource

from smtp_server import free_port

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
RULE = {"name": "failed-jobs", "kind": "threshold", "where": {"status": "failed"}, "group_by": ["agent_id"],
        "window": "15m", "every": "1m", "threshold": {"op": ">=", "value": 2}, "notify": ["archive"],
        "labels": {"team": "payments"}, "repeat": "0s"}


def aw(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """``audit-watch ARGS`` in ``cwd``; with ``ok`` its exit code must be 0."""
    proc = subprocess.run([sys.executable, "-m", "audit_watch", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env={**os.environ, "COLUMNS": "200"})
    if ok:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """An audit store where a1 (Support Triage) fails at 11:55 and a2 (Billing Bot) at
    12:10, a failed-jobs rule, a file channel and a Slack channel nobody listens to."""
    src = AuditSource.from_url(f"sqlite:///{tmp_path / 'audit.db'}", readonly=False)
    create_reference_tables(src.engine, src.tables)
    insert_rows(src.engine, src.tables, {
        "agents": [{"id": "a1", "name": "Support Triage"}, {"id": "a2", "name": "Billing Bot"}],
        "jobs": [{"id": "j-a1", "at": "-5m", "status": "failed", "agent_id": "a1", "count": 3, "error": "quota"},
                 {"id": "j-a2", "at": "+10m", "status": "failed", "agent_id": "a2", "count": 2},
                 {"id": "ok", "at": "-20m", "status": "complete", "agent_id": "a1"}],
    }, T0)
    src.engine.dispose()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "failed.yaml").write_text(json.dumps(RULE))
    (tmp_path / "audit-watch.yaml").write_text(json.dumps({
        "source": {"url": "sqlite:///audit.db"}, "state": {"url": "sqlite:///state.db"}, "rules": ["rules/"],
        "channels": {"archive": {"type": "file", "path": "out"},
                     "oncall": {"type": "slack", "token": "xoxb-t", "channel": "#ops",
                                "base_url": f"http://127.0.0.1:{free_port()}/api/"}},
        "daemon": {"listen": None, "freshness": {"enabled": False}},
    }))
    return tmp_path


def alerts_json(site: Path, *flags: str) -> list[dict[str, Any]]:
    return json.loads(aw("alerts", "--json", *flags, cwd=site).stdout)


def notified(site: Path) -> list[str]:
    """The firing/resolved files the file channel wrote, by the groups they name."""
    found = []
    for path in sorted((site / "out").glob("*.json")):
        document = json.loads(path.read_text())
        found.append(f"{document['kind']}: " + ", ".join(a["group_label"] for a in document["alerts"]))
    return found


def test_alerts_lists_states_active_only_and_as_json(site: Path) -> None:
    aw("run", "--once", "--now", "2026-11-20T12:00:00Z", cwd=site)          # a1 fires
    aw("run", "--once", "--now", "2026-11-20T12:20:00Z", cwd=site)          # a1 resolves, a2 fires
    rows = alerts_json(site)
    assert [(r["rule"], r["group"], r["state"]) for r in rows] == [
        ("failed-jobs", "Billing Bot", "firing"), ("failed-jobs", "Support Triage", "resolved")]
    firing, resolved = rows
    assert (firing["value"], firing["severity"], firing["started_at"]) == (2, "warning", "2026-11-20 12:20:00+00:00")
    assert (resolved["fired_at"], resolved["resolved_at"]) == ("2026-11-20 12:00:00+00:00", "2026-11-20 12:20:00+00:00")
    assert [r["group"] for r in alerts_json(site, "--active")] == ["Billing Bot"]
    table = aw("alerts", cwd=site).stdout
    assert "Billing Bot" in table and "Support Triage" in table and "resolved" in table
    active = aw("alerts", "--active", cwd=site).stdout
    assert "Billing Bot" in active and "Support Triage" not in active


def test_alerts_outbox_shows_what_waits_and_why(site: Path) -> None:
    rule = {**RULE, "notify": ["oncall"]}                                    # Slack that nobody answers
    (site / "rules" / "failed.yaml").write_text(json.dumps(rule))
    once = aw("run", "--once", "--now", "2026-11-20T12:00:00Z", cwd=site)
    assert "delivered 0, retrying 1, dead 0" in once.stdout
    [entry] = json.loads(aw("alerts", "--outbox", "--json", cwd=site).stdout)
    assert (entry["channel"], entry["kind"], entry["rule"], entry["status"], entry["attempts"], entry["alerts"]) == \
        ("oncall", "firing", "failed-jobs", "retrying", 1, 1)
    assert entry["title"] == "failed-jobs: 1 alert firing" and entry["last_error"]
    table = aw("alerts", "--outbox", cwd=site).stdout
    assert "retrying" in table and "oncall" in table and "failed-jobs" in table


def states(site: Path) -> list[tuple[str, str, int | None, bool]]:
    """(group, state, silenced by, told) of every alert, read from the state database."""
    from audit_watch.alerting.state import StateStore
    from audit_watch.alerting.views import alerts_table

    store = StateStore.open(f"sqlite:///{site / 'state.db'}")
    try:
        return [(r.group, r.state, r.silenced_by, r.last_notified_at is not None) for r in alerts_table(store)]
    finally:
        store.close()


@pytest.mark.parametrize("rule, match, silenced", [
    ("failed-jobs", "agent_id=a1", True),                # the group's id
    ("failed-*", "agent_id=Support Triage", True),        # a pattern, and the name shown for the id
    ("fail*", "team=payments", True),                     # a label of the rule
    ("failed-jobs", "agent_id=Billing Bot", False),       # another group
    ("quota-*", "team=payments", False),                  # another rule
])
def test_silence_add_matches_by_id_name_pattern_or_label(site: Path, rule: str, match: str, silenced: bool) -> None:
    added = aw("silence", "add", "--rule", rule, "--match", match, "--for", "2h", "--comment", "deploying",
               "--now", "2026-11-20T11:00:00Z", cwd=site)
    assert added.stdout.startswith("silence 1: ") and "until 2026-11-20 13:00 UTC" in added.stdout
    aw("run", "--once", "--now", "2026-11-20T12:00:00Z", cwd=site)
    if silenced:
        assert states(site) == [("Support Triage", "firing", 1, False)] and notified(site) == []   # held back
    else:
        assert states(site) == [("Support Triage", "firing", None, True)]
        assert notified(site) == ["firing: Support Triage"]


def test_silence_list_and_expire_through_the_cli(site: Path) -> None:
    aw("silence", "add", "--rule", "failed-*", "--match", "agent_id=a1", "--for", "2h", "--comment", "deploying",
       "--by", "ana", "--now", "2026-11-20T11:00:00Z", cwd=site)
    listed = aw("silence", "list", "--now", "2026-11-20T12:00:00Z", cwd=site).stdout
    assert "failed-*" in listed and "deploying" in listed and "ana" in listed
    aw("run", "--once", "--now", "2026-11-20T12:00:00Z", cwd=site)
    assert notified(site) == []
    assert aw("silence", "expire", "1", "--now", "2026-11-20T12:01:00Z", cwd=site).stdout.strip() == "silence 1 expired"
    assert "deploying" not in aw("silence", "list", "--now", "2026-11-20T12:01:30Z", cwd=site).stdout
    assert "deploying" in aw("silence", "list", "--all", "--now", "2026-11-20T12:01:30Z", cwd=site).stdout
    aw("run", "--once", "--now", "2026-11-20T12:02:00Z", cwd=site)          # the silence ended: told now
    assert notified(site) == ["firing: Support Triage"] and states(site) == [("Support Triage", "firing", None, True)]
    again = aw("silence", "expire", "1", "--now", "2026-11-20T12:03:00Z", cwd=site, ok=False)
    assert again.returncode == 2 and "already ended" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize("args, message", [
    (["--rule", "failed-jobs", "--for", "0s", "--comment", "x"], "positive duration"),
    (["--rule", "failed-jobs", "--for", "1h", "--comment", " "], "--comment"),
    (["--rule", "failed-jobs", "--match", "agent_id", "--for", "1h", "--comment", "x"], "key=value"),
    (["--rule", "failed-jobs", "--for", "soon", "--comment", "x"], "soon"),
])
def test_silence_add_refuses_bad_input_with_exit_2(site: Path, args: list[str], message: str) -> None:
    from audit_watch.alerting import silences
    from audit_watch.alerting.state import StateStore

    proc = aw("silence", "add", *args, cwd=site, ok=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    store = StateStore.open(f"sqlite:///{site / 'state.db'}")
    try:
        assert silences.list_silences(store, T0, include_ended=True) == []
    finally:
        store.close()


def test_check_connect_reaches_the_store(site: Path) -> None:
    ok = aw("check", "--connect", cwd=site)
    assert ok.stdout.startswith("ok: 1 rules, 2 channels")
    config = json.loads((site / "audit-watch.yaml").read_text())
    config["source"]["columns"] = {"jobs": {"status": "job_status"}}
    (site / "audit-watch.yaml").write_text(json.dumps(config))
    assert aw("check", cwd=site).returncode == 0                            # without --connect: not looked at
    broken = aw("check", "--connect", cwd=site, ok=False)
    assert broken.returncode == 1
    assert "source.columns.jobs.status: column 'job_status' not found in jobs" in broken.stderr
    unreachable = aw("check", "--connect", "--source", f"sqlite:///{site / 'missing' / 'nope.db'}", cwd=site, ok=False)
    assert unreachable.returncode == 1 and "source.url: cannot connect" in unreachable.stderr


def test_export_writes_the_rows_of_the_range(site: Path) -> None:
    done = aw("export", "jobs", "--from", "2026-11-20T11:30:00Z", "--to", "2026-11-20T12:00:00Z",
              "--where", "status=failed", "--out", "failed.csv", cwd=site)
    assert done.stderr.strip() == "exported 3 jobs rows"
    rows = list(csv.DictReader(io.StringIO((site / "failed.csv").read_text())))
    assert sorted(r["id"] for r in rows) == ["j-a1-1", "j-a1-2", "j-a1-3"]
    assert {r["error"] for r in rows} == {"quota"} and "prompt" not in rows[0]
    lines = aw("export", "jobs", "--from", "2026-11-20T11:00:00Z", "--to", "2026-11-20T13:00:00Z",
               "--format", "jsonl", "--where", "agent_id!=a1", cwd=site).stdout.splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["j-a2-4", "j-a2-5"]
    bad = aw("export", "jobs", "--from", "2026-11-20T11:00:00Z", "--to", "2026-11-20T13:00:00Z",
             "--where", "colour=red", cwd=site, ok=False)
    assert bad.returncode == 2 and "unknown column 'colour'" in bad.stderr


def test_seed_is_deterministic_and_refuses_a_store_with_activity(tmp_path: Path) -> None:
    def seed(name: str, number: str) -> tuple[str, list[Any]]:
        out = aw("seed", "--db", f"sqlite:///{tmp_path / name}", "--days", "1", "--scale", "0.05", "--seed", number,
                 "--end", "2026-11-20T12:00:00Z", cwd=tmp_path).stdout
        with sqlite3.connect(tmp_path / name) as db:
            jobs = db.execute("SELECT id, agent_id, status, created_at FROM jobs ORDER BY id").fetchall()
        return out, jobs

    first, jobs = seed("a.db", "7")
    assert f"{len(jobs):,} jobs" in first and "to 2026-11-20 12:00 UTC (seed 7, scale 0.05)" in first
    assert len(jobs) > 100 and max(row[3] for row in jobs) <= "2026-11-20 12:00:00"
    assert seed("b.db", "7")[1] == jobs                                    # same seed: same rows
    assert seed("c.db", "8")[1] != jobs
    again = aw("seed", "--db", f"sqlite:///{tmp_path / 'a.db'}", "--days", "1", "--scale", "0.05", cwd=tmp_path, ok=False)
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr
    assert "already holds rows" in again.stderr


def test_demo_builds_a_store_fires_the_bundled_rules_and_renders_the_reports(tmp_path: Path) -> None:
    done = aw("demo", "--dir", "d", "--scale", "0.02", cwd=tmp_path)
    assert "0 retrying, 0 dead" in done.stdout
    folder = tmp_path / "d"
    fired = {path.name.split("-", 2)[2].rsplit("-", 1)[0] for path in (folder / "outbox").glob("*-firing.json")}
    # Each planted incident's rule fires (see demo/seed/incidents.py).
    assert {"failed-job-spike", "cron-not-firing", "new-login-ip", "provider-error-burst", "token-overrun",
            "webhook-silent", "sensitive-actions"} <= fired
    assert f"{len(fired)} fired" in done.stdout
    reports = {p.suffix for p in (folder / "outbox" / "reports").rglob("*") if p.is_file()}
    assert {".html", ".txt", ".csv"} <= reports, reports
    # The config it wrote works with the other commands.
    states = json.loads(aw("--config", str(folder / "audit-watch.yaml"), "alerts", "--json", "--active",
                           cwd=tmp_path).stdout)
    assert {row["rule"] for row in states} == fired and all(row["state"] == "firing" for row in states)
    assert aw("--config", str(folder / "audit-watch.yaml"), "check", "--connect", cwd=tmp_path).returncode == 0
