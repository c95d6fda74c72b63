"""`audit-watch check`: every bad input is a `file:line: field: message`, exit 1, no traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from audit_watch.cli.main import main

CONFIG = """\
source: {url: "sqlite:///audit.db"}
rules: [rules/]
templates: [templates/]
channels:
  oncall: {type: slack, token: "${AW_TEST_TOKEN}", channel: "#ops"}
  archive: {type: file, path: ./outbox}
"""

GOOD_RULE = """\
name: failed-jobs
kind: threshold
source: jobs
where: {status: failed}
group_by: [agent_id]
window: 15m
threshold: {op: ">=", value: 5}
notify: [oncall]
"""


def _run_check(tmp_path: Path, files: dict[str, str], env: dict[str, str] | None = None) -> tuple[int, str]:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "audit-watch.yaml").write_text(files.pop("audit-watch.yaml", CONFIG))
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    result = CliRunner().invoke(
        main, ["--config", str(tmp_path / "audit-watch.yaml"), "check"],
        env={"AW_TEST_TOKEN": "xoxb-secret-value", **(env or {})},
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


# (description, files, expected "file:line: field" fragment, message fragment)
CASES = [
    ("yaml syntax", {"rules/r.yaml": "name: r\nkind: threshold\n  bad: [\n"}, "r.yaml:3", "YAML syntax error"),
    ("unknown kind", {"rules/r.yaml": "name: r\nkind: frobnicate\n"}, "r.yaml:2: kind", "unknown value 'frobnicate'"),
    ("unknown key", {"rules/r.yaml": GOOD_RULE + "notfiy: [oncall]\n"}, "r.yaml:9: notfiy", "unknown key"),
    ("bad duration", {"rules/r.yaml": GOOD_RULE.replace("window: 15m", "window: 15x")}, "r.yaml:6: window", "not a duration"),
    ("bad op", {"rules/r.yaml": GOOD_RULE.replace('op: ">="', 'op: "=>"')}, "r.yaml:7: threshold.op", "'=>'"),
    ("unknown column", {"rules/r.yaml": GOOD_RULE.replace("group_by: [agent_id]", "group_by: [agent]")},
     "r.yaml:5: group_by[0]", "unknown column 'agent'"),
    ("unknown where column", {"rules/r.yaml": GOOD_RULE.replace("where: {status: failed}", "where:\n  stat: failed")},
     "r.yaml:5: where.stat", "unknown column 'stat'"),
    ("unknown where operator", {"rules/r.yaml": GOOD_RULE.replace("where: {status: failed}", "where:\n  error: {like: quota}")},
     "r.yaml:5: where.error.like", "unknown operator 'like'"),
    ("negative grace", {"rules/r.yaml": "name: r\nkind: cron_missed\ngrace: -5m\n"}, "r.yaml:3: grace", "cannot be negative"),
    ("unknown channel", {"rules/r.yaml": GOOD_RULE.replace("notify: [oncall]", "notify: [oncall, pager]")},
     "r.yaml:8: notify[1]", "unknown channel 'pager'"),
    ("duplicate name", {"rules/a.yaml": GOOD_RULE, "rules/b.yaml": GOOD_RULE}, "b.yaml:1: name", "duplicate rule name"),
    ("bad cron expression", {"rules/r.yaml": GOOD_RULE + 'schedule: "61 * * * *"\n'}, "r.yaml:9: schedule", "cron expression"),
    ("spike factor 0", {"rules/r.yaml": "name: r\nkind: spike\nwindow: 1h\nfactor: 0\n"}, "r.yaml:4: factor", "at least 1"),
    ("missing env var", {"audit-watch.yaml": CONFIG.replace("AW_TEST_TOKEN", "AW_TEST_MISSING")},
     "audit-watch.yaml:5: channels.oncall.token", "${AW_TEST_MISSING} is not set"),
    ("template syntax", {"templates/alerts/kinds/spike.j2": "hello\n{% if x %}\n{{ y }\n"}, "spike.j2:3: template", ""),
    ("template unknown filter", {"templates/alerts/default.slack.j2": "{{ alert.rule | shout }}\n"}, "default.slack.j2:1: template", "shout"),
    ("empty file", {"rules/r.yaml": ""}, "r.yaml:1", "empty file"),
    ("file that is a list", {"rules/r.yaml": "- name: r\n  kind: any\n"}, "r.yaml:1", "not a bare list"),
    ("bad time zone", {"rules/r.yaml": GOOD_RULE + "timezone: Mars/Olympus\n"}, "r.yaml:9: timezone", "unknown time zone"),
    ("threshold and baseline both", {"rules/r.yaml": "name: r\nkind: metric\nfield: total_tokens\nwindow: 1d\n"
                                     "threshold: {op: '>', value: 1}\nbaseline: {periods: 7, factor: 2}\n"},
     "r.yaml:1", "exactly one of threshold or baseline"),
]


@pytest.mark.parametrize("files, where, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_check_reports_file_line_field(tmp_path: Path, files: dict[str, str], where: str, message: str) -> None:
    code, output = _run_check(tmp_path, dict(files))
    assert code == 1, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if where in line]
    assert lines, f"expected {where!r} in:\n{output}"
    assert message in lines[0], output


# Expressions a lenient cron parser accepts and the scheduler cannot use: never again past check.
UNSCHEDULABLE = ["0 0 31 2 *", "5-3 * * * *", "0 0 * * 7-1", "0 0 ? * 1", "0 0 15W * *"]

REPORT = """\
name: digest
report: weekly-digest
period: last_week
channels: [archive]
schedule: "{expr}"
"""


@pytest.mark.parametrize("expr", UNSCHEDULABLE)
def test_check_refuses_a_schedule_the_scheduler_cannot_use_in_rules_and_reports(tmp_path: Path, expr: str) -> None:
    code, output = _run_check(tmp_path, {"rules/r.yaml": GOOD_RULE + f'schedule: "{expr}"\n',
                                         "reports/digest.yaml": REPORT.format(expr=expr)})
    assert code == 1 and "Traceback" not in output
    for where in ("r.yaml:9: schedule:", "digest.yaml:5: schedule:"):
        [line] = [line for line in output.splitlines() if where in line]
        assert repr(expr) in line and ("not a valid cron expression" in line or "never fires" in line), line
    assert "2 problem(s)" in output


def test_check_names_the_day_a_month_lacks(tmp_path: Path) -> None:
    code, output = _run_check(tmp_path, {"rules/r.yaml": GOOD_RULE + 'schedule: "0 0 30 2 *"\n'})
    assert code == 1 and "r.yaml:9: schedule: '0 0 30 2 *' never fires: none of its months has that day" in output


@pytest.mark.parametrize("expr", ["0 0 29 2 *", "0 9 * * mon-fri", "0 0 L * *", "0 0 * * 5L", "0 0 * * 1#2",
                                  "0 0 * * 0-7", "*/7 1-5/2 * jan,jul *"])
def test_check_accepts_what_the_scheduler_runs(tmp_path: Path, expr: str) -> None:
    code, output = _run_check(tmp_path, {"rules/r.yaml": GOOD_RULE + f'schedule: "{expr}"\n',
                                         "reports/digest.yaml": REPORT.format(expr=expr)})
    assert code == 0, output


def test_check_passes_a_good_setup(tmp_path: Path) -> None:
    code, output = _run_check(tmp_path, {"rules/r.yaml": GOOD_RULE})
    assert code == 0, output
    assert "ok: 1 rules, 2 channels" in output


def test_check_reports_every_problem_not_just_the_first(tmp_path: Path) -> None:
    files = {
        "rules/a.yaml": GOOD_RULE.replace("window: 15m", "window: soon"),
        "rules/b.yaml": "name: b\nkind: spike\nfactor: 0\n",
        "rules/c.yaml": "",
    }
    code, output = _run_check(tmp_path, files)
    assert code == 1
    assert "a.yaml:6: window" in output and "b.yaml:3: factor" in output and "c.yaml:1" in output
    assert "3 problem(s)" in output


def test_check_never_prints_a_secret(tmp_path: Path) -> None:
    files = {"rules/r.yaml": GOOD_RULE.replace("notify: [oncall]", "notify: [nope]")}
    code, output = _run_check(tmp_path, files, env={"AW_TEST_TOKEN": "xoxb-do-not-print-me"})
    assert code == 1
    assert "xoxb-do-not-print-me" not in output


def test_env_value_cannot_inject_yaml(tmp_path: Path) -> None:
    """${VAR} is replaced after parsing: a value with YAML syntax stays a string."""
    config = CONFIG.replace('channel: "#ops"', 'channel: "${AW_TEST_CHANNEL}"')
    code, output = _run_check(
        tmp_path, {"audit-watch.yaml": config, "rules/r.yaml": GOOD_RULE},
        env={"AW_TEST_CHANNEL": "#ops}\nextra: {type: file"},
    )
    assert code == 0, output


def test_check_as_a_real_process_exits_1_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text("name: r\nkind: threshold\nwindow: 15x\nthreshold: {op: '>', value: 1}\n")
    (tmp_path / "audit-watch.yaml").write_text("rules: [rules/]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "audit_watch", "--config", str(tmp_path / "audit-watch.yaml"), "check"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "r.yaml:3: window:" in proc.stderr


def test_delivery_max_age_comes_from_the_config(tmp_path: Path) -> None:
    from audit_watch.alerting.outbox import DeliveryPolicy
    from audit_watch.config.model import load_config

    path = tmp_path / "audit-watch.yaml"
    path.write_text("delivery: {max_age: 2h, base_delay: 10s}\n")
    policy = DeliveryPolicy.from_config(load_config(path).delivery)
    assert policy.max_age.total_seconds() == 7200 and policy.base_delay.total_seconds() == 10
    path.write_text("delivery: {max_age: soon}\n")
    code, output = _run_check(tmp_path, {"audit-watch.yaml": "rules: [rules/]\ndelivery: {max_age: soon}\n"})
    assert code == 1 and "audit-watch.yaml:2: delivery.max_age" in output
