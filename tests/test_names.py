"""Rule and report names match one pattern: letters, digits, '-', '_', '.', a letter or
digit first (they name e-mail subjects, files, metric labels and the run ledger's jobs).

The finding: a rule named with ``\\r\\nBcc:`` passed ``check``, and its e-mails then
went dead (a header with a line break in it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from audit_watch.cli.main import main
from audit_watch.daemon.freshness import FRESHNESS_RULE
from audit_watch.daemon.self_alerts import builtin_rule, failing_rule_name
from audit_watch.reports.model import WeeklyDigestDefinition
from audit_watch.rules.loader import RULE_ADAPTER

RULE = 'name: {name}\nkind: threshold\nwindow: 15m\nthreshold: {{op: ">=", value: 5}}\n'
REPORT = "name: {name}\nreport: weekly-digest\n"

BAD = [
    '"failed-jobs\\r\\nBcc: everyone@example.com"',   # the finding
    '"a b"', '"-leading-dash"', '".hidden"', '"_under"', '"report:weekly"', '"audit-watch: rule x failing"',
    '"a/b"', '"../../etc/passwd"', '"tab\\there"', '"nul\\0byte"', '"ünïcödé"', '"emoji-🔥"', '""', "x" * 129,
]
GOOD = ["a", "failed-jobs", "A_b.c-1", "9lives", "x" * 128]


def check(folder: Path, files: dict[str, str]) -> tuple[int, str]:
    (folder / "rules").mkdir()
    (folder / "reports").mkdir()
    (folder / "audit-watch.yaml").write_text("rules: [rules/]\nreports: [reports/]\n")
    for name, text in files.items():
        (folder / name).write_text(text)
    result = CliRunner().invoke(main, ["--config", str(folder / "audit-watch.yaml"), "check"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize("name", BAD)
def test_a_bad_rule_or_report_name_is_a_problem_with_its_line(tmp_path: Path, name: str) -> None:
    rules = "rules:\n  - " + RULE.format(name="good").replace("\n", "\n    ").rstrip() + \
            "\n  - " + RULE.format(name=name).replace("\n", "\n    ").rstrip() + "\n"
    code, output = check(tmp_path, {"rules/r.yaml": rules, "reports/d.yaml": REPORT.format(name=name)})
    assert code == 1
    lines = [line for line in output.splitlines() if "problem(s)" not in line]
    assert len(lines) == 2, output
    assert lines[0].startswith(f"{tmp_path}/reports/d.yaml:1: name: ")
    assert lines[1].startswith(f"{tmp_path}/rules/r.yaml:6: rules[1].name: ")
    for line in lines:
        assert "is not a valid name" in line or "at most 128 characters" in line
    assert "\r" not in output and "Bcc: everyone@example.com\n" not in output


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass(tmp_path: Path, name: str) -> None:
    code, output = check(tmp_path, {"rules/r.yaml": RULE.format(name=name), "reports/d.yaml": REPORT.format(name=name)})
    assert code == 0, output
    assert "ok: 1 rules" in output and "1 reports" in output


def test_the_models_refuse_a_header_injection() -> None:
    with pytest.raises(ValidationError):
        RULE_ADAPTER.validate_python({"name": "x\r\nBcc: a@example.com", "kind": "any"})
    with pytest.raises(ValidationError):
        WeeklyDigestDefinition.model_validate({"name": "x\nBcc: a@example.com", "report": "weekly-digest"})


def test_test_rule_refuses_a_bad_name_with_its_line(tmp_path: Path) -> None:
    rule = tmp_path / "r.yaml"
    rule.write_text(RULE.format(name='"x\\r\\nBcc: a@example.com"'))
    (tmp_path / "audit-watch.yaml").write_text("rules: []\n")
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "audit-watch.yaml"), "test-rule", str(rule)])
    assert result.exit_code == 2 and result.output.startswith(f"{rule}:1: name: "), result.output


def test_the_generated_names_of_audit_watchs_own_alerts_still_work() -> None:
    for name in (failing_rule_name("failed-jobs"), FRESHNESS_RULE, "an old rule name, from the state database"):
        assert builtin_rule(name, "about itself", ["oncall"]).name == name
