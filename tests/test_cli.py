"""The command line as a user runs it: test-rule (pinned JSON), backtest, test-rules, exit codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from audit_watch.cli.main import main
from audit_watch.store.rows import insert_rows
from audit_watch.store.schema import create_reference_tables
from audit_watch.store.source import AuditSource

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

RULE = """\
name: failed-jobs
kind: threshold
source: jobs
where: {status: failed}
group_by: [agent_id]
window: 15m
threshold: {op: ">=", value: 3}
"""


@pytest.fixture()
def store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    src = AuditSource.from_url(url, readonly=False)
    create_reference_tables(src.engine, src.tables)
    insert_rows(src.engine, src.tables, {
        "agents": [{"id": "a1", "name": "Support Triage"}, {"id": "a2", "name": "Nightly Report"}],
        "jobs": [
            {"at": "-5m", "status": "failed", "agent_id": "a1", "count": 4},
            {"at": "-1m", "status": "failed", "agent_id": "a2", "count": 2},
            {"at": "-2h", "status": "failed", "agent_id": "a2", "count": 5},
            {"at": "-10m", "status": "complete", "agent_id": "a1", "count": 10},
        ],
    }, NOW)
    src.engine.dispose()
    return url


def _invoke(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def _rule_file(tmp_path: Path, text: str = RULE) -> str:
    path = tmp_path / "rule.yaml"
    path.write_text(text)
    return str(path)


def test_test_rule_json_has_the_pinned_shape(tmp_path: Path, store: str) -> None:
    result = _invoke("test-rule", _rule_file(tmp_path), "--source", store, "--now", "2026-11-20T12:00:00Z", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["rule"] == "failed-jobs"
    assert len(data["alerts"]) == 1
    alert = data["alerts"][0]
    assert alert["group"] == {"agent_id": "a1"}
    assert alert["value"] == 4
    assert len(alert["row_ids"]) == 4
    assert alert["links"] == [f"https://auxot.example.com/audit-logs/jobs/{rid}" for rid in alert["row_ids"]]
    assert alert["group_names"] == {"agent_id": "Support Triage"}
    assert "status=failed" in alert["list_link"] and "agent_id=a1" in alert["list_link"]


def test_test_rule_is_deterministic_with_now(tmp_path: Path, store: str) -> None:
    """At 10:00 only a2's earlier burst is in the window."""
    result = _invoke("test-rule", _rule_file(tmp_path), "--source", store, "--now", "2026-11-20T10:00:00Z", "--json")
    data = json.loads(result.output)
    assert [(a["group"]["agent_id"], a["value"]) for a in data["alerts"]] == [("a2", 5)]


def test_test_rule_table_output_names_the_group(tmp_path: Path, store: str) -> None:
    result = _invoke("test-rule", _rule_file(tmp_path), "--source", store, "--now", "2026-11-20T12:00:00Z")
    assert result.exit_code == 0
    assert "Support Triage" in result.output


def test_injection_value_is_a_bound_parameter(tmp_path: Path, store: str) -> None:
    rule = RULE.replace("where: {status: failed}", "where: {status: \"x'; DROP TABLE jobs; --\"}")
    result = _invoke("test-rule", _rule_file(tmp_path, rule), "--source", store, "--now", "2026-11-20T12:00:00Z", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["alerts"] == []
    again = _invoke("test-rule", _rule_file(tmp_path), "--source", store, "--now", "2026-11-20T12:00:00Z", "--json")
    assert json.loads(again.output)["alerts"][0]["value"] == 4  # the jobs table is still there


def test_bad_now_is_a_usage_error(tmp_path: Path, store: str) -> None:
    result = _invoke("test-rule", _rule_file(tmp_path), "--source", store, "--now", "yesterday")
    assert result.exit_code == 2
    assert "ISO-8601" in result.output


def test_broken_rule_file_is_bad_input(tmp_path: Path, store: str) -> None:
    result = _invoke("test-rule", _rule_file(tmp_path, RULE + "windw: 1h\n"), "--source", store)
    assert result.exit_code == 2
    assert "rule.yaml:8: windw: unknown key" in result.output


def test_backtest_summarises_episodes(tmp_path: Path, store: str) -> None:
    result = _invoke(
        "backtest", _rule_file(tmp_path), "--source", store,
        "--from", "2026-11-20T09:00:00Z", "--to", "2026-11-20T12:00:00Z", "--step", "5m", "--json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["evaluations"] == 37
    labels = [(e["label"], e["first"][11:16], e["last"][11:16]) for e in data["episodes"]]
    # a2's burst at 10:00 is in the 15-minute window at 10:00 and 10:10, not at 10:15 (half-open).
    assert labels == [("Nightly Report", "10:00", "10:10"), ("Support Triage", "11:55", "12:00")]
    assert data["per_day"] == {"2026-11-20": 5}


def test_backtest_table_output(tmp_path: Path, store: str) -> None:
    result = _invoke(
        "backtest", _rule_file(tmp_path), "--source", store,
        "--from", "2026-11-20T09:00:00Z", "--to", "2026-11-20T12:00:00Z", "--step", "5m",
    )
    assert result.exit_code == 0
    assert "fired in 5 of 37 evaluations, 2 episode(s)" in result.output


def test_test_rules_pass_and_fail(tmp_path: Path) -> None:
    _rule_file(tmp_path)
    tests = tmp_path / "rule.test.yaml"
    tests.write_text("""\
rule_files: [rule.yaml]
tests:
  - name: fires at three
    now: 2026-11-20T12:00:00Z
    rows:
      jobs: [{at: -1m, status: failed, agent_id: a1, count: 3}]
    expect:
      - rule: failed-jobs
        alerts: [{group: {agent_id: a1}, value: 3}]
  - name: a row exactly at now - window is out
    now: 2026-11-20T12:00:00Z
    rows:
      jobs:
        - {at: -15m, status: failed, agent_id: a1}
        - {at: -1m, status: failed, agent_id: a1, count: 2}
    expect:
      - rule: failed-jobs
        alerts: []
""")
    result = _invoke("test-rules", str(tests))
    assert result.exit_code == 0, result.output
    assert "2 passed, 0 failed" in result.output

    tests.write_text(tests.read_text().replace("value: 3}]", "value: 4}]"))
    result = _invoke("test-rules", str(tests))
    assert result.exit_code == 1
    assert "expected value 4, got 3" in result.output
    assert "1 passed, 1 failed" in result.output


def test_test_rules_bad_file_is_bad_input(tmp_path: Path) -> None:
    tests = tmp_path / "x.test.yaml"
    tests.write_text("rule_files: [missing.yaml]\ntests: []\n")
    result = _invoke("test-rules", str(tests))
    assert result.exit_code == 2
    assert "missing.yaml" in result.output
