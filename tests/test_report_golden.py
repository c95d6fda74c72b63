"""Golden tests: the four reports on generated data with fixed dates.

Every number is checked against a direct SQL count on the same SQLite file (the
generator writes UTC text 'YYYY-MM-DD HH:MM:SS', so plain text comparisons are
exact here), and the planted incidents must show up in the digest and the triage.
The data is seeded once for the module (about 80,000 jobs, two seconds).
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from audit_watch.config.model import Config
from audit_watch.demo.seed import planted_incidents, seed_database
from audit_watch.demo.seed.incidents import BURST_PROVIDER, SPIKE_ERROR, TOKEN_BUDGET
from audit_watch.demo.seed.world import NEW_IP
from audit_watch.reports import build_report, report_period, run_report
from audit_watch.reports.model import TokenUsageDefinition
from audit_watch.reports.queries import SENSITIVE_EVENT_TYPES
from audit_watch.store.source import AuditSource

END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SEED, SCALE = 42, 0.25
DANIEL = "daniel.reyes@brightline.io"


def ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AuditSource, sqlite3.Connection]]:
    path = tmp_path_factory.mktemp("golden") / "audit.db"
    seed_database(f"sqlite:///{path}", days=30, seed=SEED, scale=SCALE, end=END)
    src = AuditSource.from_url(f"sqlite:///{path}")
    db = sqlite3.connect(path)
    yield src, db
    db.close()
    src.engine.dispose()


@pytest.fixture(scope="module")
def incidents() -> dict[str, Any]:
    return {i.rule: i for i in planted_incidents(END, seed=SEED, scale=SCALE)}


def q(db: sqlite3.Connection, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    return db.execute(sql, params).fetchall()


def by_key(rows: list[tuple[Any, ...]]) -> dict[Any, int]:
    return {row[0]: row[1] for row in rows}


WEEK = (ts(END - timedelta(days=7)), ts(END))
WEEK_BEFORE = (ts(END - timedelta(days=14)), ts(END - timedelta(days=7)))
DAY = (ts(END - timedelta(days=1)), ts(END))


@pytest.fixture(scope="module")
def digest(seeded: tuple[AuditSource, sqlite3.Connection]) -> Any:
    return run_report("weekly-digest", seeded[0], Config(), now=END)


# --- weekly digest ------------------------------------------------------------------------------


def test_digest_counts_equal_direct_sql(seeded: Any, digest: Any) -> None:
    _, db = seeded
    ctx = digest.context
    for table, column, key, section, name in (
        ("jobs", "created_at", "status", ctx["jobs"]["by_status"], "status"),
        ("threads", "last_activity_at", "source", ctx["threads"]["by_source"], "source"),
        ("events", "created_at", "severity", ctx["events"]["by_severity"], "severity"),
    ):
        sql = f"SELECT {key}, count(*) FROM {table} WHERE {column} > ? AND {column} <= ? GROUP BY {key}"
        now, before = by_key(q(db, sql, *WEEK)), by_key(q(db, sql, *WEEK_BEFORE))
        assert {row[name]: (row["current"], row["previous"]) for row in section} == \
            {k: (now.get(k, 0), before.get(k, 0)) for k in set(now) | set(before)}
    total = q(db, "SELECT count(*) FROM jobs WHERE created_at > ? AND created_at <= ?", *WEEK)[0][0]
    assert ctx["jobs"]["total"]["current"] == total and f"{total:,} jobs" in digest.text


def test_digest_failed_agents_and_their_most_common_error_equal_direct_sql(seeded: Any, digest: Any) -> None:
    _, db = seeded
    top = q(db, "SELECT a.name, count(*) AS n FROM jobs j JOIN agents a ON a.id = j.agent_id WHERE j.status = "
                "'failed' AND j.created_at > ? AND j.created_at <= ? GROUP BY j.agent_id ORDER BY n DESC, "
                "j.agent_id LIMIT 5", *WEEK)
    assert [(r["name"], r["current"]) for r in digest.context["failed_by_agent"]] == top
    for row in digest.context["failed_by_agent"]:
        error, count = q(db, "SELECT error, count(*) AS n FROM jobs WHERE status = 'failed' AND agent_id = ? AND "
                             "created_at > ? AND created_at <= ? GROUP BY error ORDER BY n DESC, error LIMIT 1",
                         row["agent_id"], *WEEK)[0]
        assert (row["top_error"], row["top_error_count"]) == (error, count)


def test_digest_tokens_daily_jobs_and_sensitive_actions_equal_direct_sql(seeded: Any, digest: Any) -> None:
    _, db = seeded
    ctx = digest.context
    tokens = q(db, "SELECT agent_id, sum(input_tokens + output_tokens) AS t FROM jobs WHERE created_at > ? AND "
                   "created_at <= ? GROUP BY agent_id ORDER BY t DESC, agent_id LIMIT 5", *WEEK)
    assert [(r["agent_id"], r["current"]) for r in ctx["tokens"]["top"]] == tokens
    for day in ctx["daily"]:
        jobs, failed = q(db, "SELECT count(*), sum(status = 'failed') FROM jobs WHERE created_at > ? AND "
                             "created_at <= ?", ts(day["start"]), ts(day["end"]))[0]
        assert (day["jobs"], day["failed"]) == (jobs, failed)
    marks = ",".join("?" * len(SENSITIVE_EVENT_TYPES))
    ids = [r[0] for r in q(db, f"SELECT id FROM events WHERE event_type IN ({marks}) AND created_at > ? AND "
                              "created_at <= ?", *SENSITIVE_EVENT_TYPES, *WEEK)]
    assert ctx["sensitive"]["count"] == len(ids) == 5
    assert sorted(r["id"] for r in ctx["sensitive"]["rows"]) == sorted(ids)


def test_digest_cron_health_equals_direct_sql(seeded: Any, digest: Any, incidents: dict[str, Any]) -> None:
    _, db = seeded
    fired = by_key(q(db, "SELECT json_extract(metadata, '$.cron_id'), count(*) FROM events WHERE event_type = "
                         "'cron.fired' AND created_at > ? AND created_at <= ? GROUP BY 1", *WEEK))
    crons = {c["id"]: c for c in digest.context["crons"]["rows"]}
    assert {cid: c["fired"] for cid, c in crons.items()} == {cid: fired.get(cid, 0) for cid in crons}
    stopped = incidents["cron-not-firing"].group["cron_id"]
    assert (crons[stopped]["expected"], crons[stopped]["fired"], crons[stopped]["missed"]) == (7, 5, 2)
    assert all(c["missed"] == 0 for cid, c in crons.items() if cid != stopped)
    enabled = q(db, "SELECT count(*) FROM crons WHERE enabled")[0][0]
    assert len(crons) == enabled


def test_planted_incidents_appear_in_the_digest(digest: Any, incidents: dict[str, Any]) -> None:
    ctx = digest.context
    failing = incidents["failed-job-spike"].group["agent_id"]
    worst = ctx["failed_by_agent"][0]
    assert worst["agent_id"] == failing and worst["top_error"] == SPIKE_ERROR
    assert incidents["job-error-rate"].group["agent_id"] == failing
    overrun = incidents["token-overrun"].group["agent_id"]
    assert ctx["tokens"]["top"][0]["agent_id"] == overrun and ctx["tokens"]["top"][0]["pct"] > 1
    assert incidents["token-budget"].group["agent_id"] == overrun
    actor = incidents["sensitive-actions"].group["user_id"]
    assert all(r["actor"] == "Daniel Reyes" for r in ctx["sensitive"]["rows"])
    assert [a["ip"] for a in ctx["sign_ins"]["new_addresses"]] == [NEW_IP]
    assert ctx["sign_ins"]["new_addresses"][0]["user_id"] == actor == incidents["new-login-ip"].group["user_id"]
    errors = next(r for r in ctx["events"]["by_severity"] if r["severity"] == "error")
    assert errors["current"] >= 36 + errors["previous"] // 2
    webhook = next(r for r in ctx["threads"]["by_source"] if r["source"] == "webhook")
    assert webhook["current"] < webhook["previous"]
    text = digest.text
    for needle in ("Support Triage failures rose", "Nightly finance report' missed 2", "Knowledge Base Sync used",
                   "198.51.100.231", "Error events rose", "changed the role of Priya Shah"):
        assert needle in text, needle


def test_digest_is_deterministic(seeded: Any, digest: Any) -> None:
    again = run_report("weekly-digest", seeded[0], Config(), now=END)
    assert (again.text, again.html, again.email_html, again.markdown, again.slack) == \
        (digest.text, digest.html, digest.email_html, digest.markdown, digest.slack)
    assert [a.data for a in again.attachments] == [a.data for a in digest.attachments]


# --- triage ---------------------------------------------------------------------------------------


def test_planted_incidents_appear_in_the_triage_of_the_last_day(seeded: Any, incidents: dict[str, Any]) -> None:
    _, db = seeded
    result = run_report("triage", seeded[0], Config(), now=END)
    items = result.context["investigate"]
    titles = "\n".join(i["title"] for i in items)
    expected = {
        "failed_jobs": "Support Triage", "provider_errors": BURST_PROVIDER, "cron": "Nightly finance report",
        "tokens": "Knowledge Base Sync", "sensitive": "Daniel Reyes", "silent": "Ticket Intake",
    }
    for kind, name in expected.items():
        assert any(i["kind"] == kind and name in i["title"] for i in items), (kind, titles)
    assert NEW_IP in next(i["title"] for i in items if i["kind"] == "sensitive")
    failing = incidents["failed-job-spike"].group["agent_id"]
    failed = q(db, "SELECT count(*) FROM jobs WHERE status = 'failed' AND agent_id = ? AND created_at > ? AND "
                   "created_at <= ?", failing, *DAY)[0][0]
    assert next(i for i in items if i["kind"] == "failed_jobs")["current"] == failed
    burst = q(db, "SELECT count(*) FROM events WHERE event_type = 'provider.error' AND json_extract(metadata, "
                  "'$.provider') = ? AND created_at > ? AND created_at <= ?", BURST_PROVIDER, *DAY)[0][0]
    assert next(i for i in items if i["kind"] == "provider_errors")["current"] == burst
    assert [i["severity"] for i in items] == sorted((i["severity"] for i in items),
                                                    key=lambda s: {"critical": 0, "warning": 1}[s])
    assert result.context["probably_nothing"] and len(result.context["check_first"]) == 3
    assert all(i["list_link"].startswith("https://auxot.example.com/audit-logs/") for i in items)


def test_triage_of_the_failure_hour_marks_it_critical(seeded: Any, incidents: dict[str, Any]) -> None:
    spike = incidents["failed-job-spike"]
    period = report_period(start=spike.first_fire - timedelta(hours=1), end=spike.first_fire)
    result = build_report("triage", seeded[0], Config(), period)
    first = result.context["investigate"][0]
    assert (first["kind"], first["severity"]) == ("failed_jobs", "critical") and "Support Triage" in first["title"]
    assert "the same hours on the 7 days before" in result.text


# --- compliance -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daniel(seeded: Any) -> Any:
    return run_report("compliance", seeded[0], Config(), now=END, start=END - timedelta(days=7), end=END, user=DANIEL)


def _csv_rows(result: Any) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(result.evidence.data.decode())))


def test_compliance_of_the_planted_user_lists_exactly_their_sensitive_actions(seeded: Any, daniel: Any,
                                                                               incidents: dict[str, Any]) -> None:
    _, db = seeded
    actor = incidents["sensitive-actions"].group["user_id"]
    marks = ",".join("?" * len(SENSITIVE_EVENT_TYPES))
    expected = q(db, f"SELECT id FROM events WHERE user_id = ? AND event_type IN ({marks}) AND created_at > ? "
                     "AND created_at <= ? ORDER BY created_at, id", actor, *SENSITIVE_EVENT_TYPES, *WEEK)
    listed = [a["id"] for a in daniel.context["sensitive"]["actions"]]
    assert listed == [r[0] for r in expected] and len(listed) == 5
    assert daniel.context["counts"]["sensitive_actions"] == 5 and daniel.context["counts"]["account_changes"] == 0
    for action in daniel.context["sensitive"]["actions"]:
        assert action["link"] in daniel.html and action["link"] in daniel.text
    assert "They made 5 sensitive actions" in daniel.text
    assert any(f["severity"] == "critical" and NEW_IP in f["text"] for f in daniel.context["findings"])
    assert [a["ip"] for a in daniel.context["sign_ins"]["new_addresses"]] == [NEW_IP]


def test_compliance_csv_has_one_line_per_evidence_row_and_nothing_of_other_users(seeded: Any, daniel: Any,
                                                                                 incidents: dict[str, Any]) -> None:
    _, db = seeded
    actor = incidents["sensitive-actions"].group["user_id"]
    text = daniel.evidence.data.decode()
    rows = _csv_rows(daniel)
    assert len(text.splitlines()) == len(rows) + 1 == daniel.context["evidence"]["rows"] + 1
    assert len({(r["table"], r["id"]) for r in rows}) == len(rows)
    for table in ("threads", "jobs", "events"):
        ids = [r["id"] for r in rows if r["table"] == table]
        owners = {row[0] for row in q(db, f"SELECT DISTINCT user_id FROM {table} WHERE id IN "
                                          f"({','.join('?' * len(ids))})", *ids)} if ids else set()
        assert owners == {actor}, table
    assert {r["person"] for r in rows} == {"Daniel Reyes"}
    assert all(r["link"] == f"https://auxot.example.com/audit-logs/{r['table']}/{r['id']}" for r in rows)
    sections = {s: sum(1 for r in rows if r["section"] == s) for s in {r["section"] for r in rows}}
    expected = {
        "thread": q(db, "SELECT count(*) FROM threads WHERE user_id = ? AND last_activity_at > ? AND "
                        "last_activity_at <= ?", actor, *WEEK)[0][0],
        "failed_job": q(db, "SELECT count(*) FROM jobs WHERE user_id = ? AND status = 'failed' AND created_at > ? "
                            "AND created_at <= ?", actor, *WEEK)[0][0],
        "sign_in": q(db, "SELECT count(*) FROM events WHERE user_id = ? AND event_type = 'auth.login' AND "
                         "created_at > ? AND created_at <= ?", actor, *WEEK)[0][0],
        "sensitive_action": 5,
    }
    assert {k: v for k, v in sections.items() if k in expected} == expected
    counts = daniel.context["counts"]
    assert (counts["threads"], counts["failed_jobs"], counts["sign_ins"]) == \
        (expected["thread"], expected["failed_job"], expected["sign_in"])
    off_in_csv = sum(1 for r in rows if r["off_hours"] == "yes" and r["section"] != "failed_job")
    assert off_in_csv == daniel.context["off_hours"]["total"]


def test_team_compliance_evidence_is_only_of_its_members(seeded: Any) -> None:
    _, db = seeded
    result = run_report("compliance", seeded[0], Config(), now=END, start=END - timedelta(days=3), end=END,
                        team="Finance & Operations")
    members = {r[0] for r in q(db, "SELECT u.name FROM users u JOIN memberships m ON m.user_id = u.id JOIN teams t "
                                   "ON t.id = m.team_id WHERE t.name = 'Finance & Operations'")}
    rows = _csv_rows(result)
    assert rows and {r["person"] for r in rows} <= members
    assert len(result.context["per_person"]) == len(members)
    assert "Finance &amp; Operations" in result.html


def test_compliance_of_the_promoted_user_shows_the_change_to_her_account(seeded: Any) -> None:
    result = run_report("compliance", seeded[0], Config(), now=END, start=END - timedelta(days=7), end=END,
                        user="priya.shah@brightline.io")
    changes = result.context["sensitive"]["account_changes"]
    assert [(c["event_type"], c["actor"]) for c in changes] == [("user.role_changed", "Daniel Reyes")]
    assert result.context["counts"]["sensitive_actions"] == 0
    assert [r["section"] for r in _csv_rows(result)].count("account_change") == 1


# --- token usage ----------------------------------------------------------------------------------


def test_token_usage_equals_direct_sql_and_flags_the_looping_agent(seeded: Any, incidents: dict[str, Any]) -> None:
    _, db = seeded
    overrun = incidents["token-overrun"].group["agent_id"]
    definition = TokenUsageDefinition.model_validate({
        "name": "tokens", "report": "token-usage", "period": "7d", "top": 20,
        "budgets": {"Knowledge Base Sync": TOKEN_BUDGET}})
    result = build_report(definition, seeded[0], Config(), report_period("7d", now=END))
    agents = {a["agent_id"]: a for a in result.context["agents"]}
    sql = q(db, "SELECT agent_id, count(*), sum(input_tokens), sum(output_tokens) FROM jobs WHERE created_at > ? "
                "AND created_at <= ? GROUP BY agent_id", *WEEK)
    assert {r[0]: (r[1], r[2], r[3]) for r in sql} == {a: (v["jobs"], v["input"], v["output"]) for a, v in agents.items()}
    by_type = q(db, "SELECT job_type, sum(input_tokens + output_tokens) FROM jobs WHERE created_at > ? AND "
                    "created_at <= ? GROUP BY job_type", *WEEK)
    assert {t["job_type"]: t["tokens"] for t in result.context["job_types"]} == dict(by_type)
    flagged = result.context["flagged"]
    assert flagged[0]["agent_id"] == overrun
    reasons = " ".join(f["reason"] for f in flagged[0]["flags"])
    assert "input tokens per job grew" in reasons and "looping over a large context file" in reasons
    over = sum(1 for day in range(7) if q(db, "SELECT sum(input_tokens + output_tokens) FROM jobs WHERE agent_id = ? "
                                              "AND created_at > ? AND created_at <= ?", overrun,
                                              ts(END - timedelta(days=day + 1)), ts(END - timedelta(days=day)))[0][0]
               > TOKEN_BUDGET)
    assert agents[overrun]["over_budget_days"] == over >= 2
    assert f"over its budget of {TOKEN_BUDGET:,} tokens a day on {over} of 7" in reasons
    assert [a["agent_id"] for a in flagged] == [overrun]
    assert "Knowledge Base Sync" in result.slack and "Check:" in result.text


def test_reports_written_as_files(seeded: Any, daniel: Any, tmp_path: Path) -> None:
    from audit_watch.reports import write_report

    written = write_report(daniel, "html", tmp_path / "pack/")
    by_suffix = {p.suffix: p for p in written}
    assert sorted(by_suffix) == [".csv", ".html", ".txt"] and all(p.parent == tmp_path / "pack" for p in written)
    # Each file holds its medium of this very report, not just something.
    assert by_suffix[".html"].read_text() == daniel.html
    assert by_suffix[".txt"].read_text() == daniel.text
    assert by_suffix[".csv"].read_bytes() == daniel.evidence.data
