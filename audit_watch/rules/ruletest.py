"""Rule unit tests in YAML, in the spirit of ``promtool test rules``.

```yaml
rule_files: [../failed_job_spike.yaml]      # relative to this file
tests:
  - name: a burst of failures fires
    now: "2026-11-20T12:00:00Z"
    rows:
      jobs: [{at: -5m, status: failed, agent_id: a1, count: 12}]
    expect:
      - rule: failed-job-spike
        alerts: [{group: {agent_id: a1}, value: 12}]   # the exact set; [] = nothing fires
```
Each test runs on a fresh in-memory SQLite store of the reference schema.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from audit_watch.core.timestamps import parse_timestamp
from audit_watch.core.yaml_source import InputError, LocatedDocument, load_yaml
from audit_watch.rules.alert import Alert
from audit_watch.rules.evaluate import evaluate_rule
from audit_watch.rules.loader import load_rules
from audit_watch.rules.model import RuleBase
from audit_watch.store.rows import RowError, insert_rows
from audit_watch.store.schema import create_reference_tables
from audit_watch.store.source import AuditSource


@dataclass
class CaseResult:
    file: str
    name: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def run_test_file(path: str | Path) -> list[CaseResult]:
    """Run every test of one file. Bad input raises InputError (exit 2)."""
    doc = load_yaml(path)
    if not isinstance(doc.data, dict) or not isinstance(doc.data.get("tests"), list):
        raise InputError([doc.problem((), "a rule test file needs rule_files: [...] and tests: [...]")])
    unknown = set(doc.data) - {"rule_files", "tests"}
    if unknown:
        raise InputError([doc.problem((sorted(unknown)[0],), "unknown key (use rule_files and tests)")])
    rules = _load_rules(doc, Path(path))
    return [_run_case(doc, index, case, rules) for index, case in enumerate(doc.data["tests"])]


def _load_rules(doc: LocatedDocument, path: Path) -> dict[str, RuleBase]:
    files = doc.data.get("rule_files") or []
    if not isinstance(files, list) or not files:
        raise InputError([doc.problem(("rule_files",), "a non-empty list of rule files is required")])
    loaded = load_rules([path.parent / f for f in files])
    if loaded.problems:
        raise InputError(loaded.problems)
    return {item.rule.name: item.rule for item in loaded.rules}


def _run_case(doc: LocatedDocument, index: int, case: Any, rules: dict[str, RuleBase]) -> CaseResult:
    where = ("tests", index)
    if not isinstance(case, dict):
        raise InputError([doc.problem(where, "a test is a mapping with name, now, rows and expect")])
    unknown = set(case) - {"name", "now", "rows", "expect"}
    if unknown:
        raise InputError([doc.problem(where + (sorted(unknown)[0],), "unknown key (use name, now, rows, expect)")])
    name = str(case.get("name") or f"test {index + 1}")
    result = CaseResult(doc.file, name)
    now = _now(doc, where, case.get("now"))
    src = AuditSource.from_url("sqlite://", readonly=False)
    try:
        create_reference_tables(src.engine, src.tables)
        try:
            insert_rows(src.engine, src.tables, case.get("rows") or {}, now)
        except (RowError, ValueError) as exc:
            raise InputError([doc.problem(where + ("rows",), str(exc))]) from None
        for e_index, expectation in enumerate(case.get("expect") or []):
            _check_expectation(doc, where + ("expect", e_index), expectation, rules, src, now, result)
    finally:
        src.engine.dispose()
    return result


def _now(doc: LocatedDocument, where: tuple, raw: Any) -> datetime:
    if raw is None:
        raise InputError([doc.problem(where, "now is required (an ISO-8601 time, e.g. 2026-11-20T12:00:00Z)")])
    try:
        return parse_timestamp(raw.isoformat() if isinstance(raw, datetime) else str(raw))
    except ValueError:
        raise InputError([doc.problem(where + ("now",), f"{raw!r} is not an ISO-8601 time")]) from None


def _check_expectation(
    doc: LocatedDocument, where: tuple, expectation: Any, rules: dict[str, RuleBase],
    src: AuditSource, now: datetime, result: CaseResult,
) -> None:
    if not isinstance(expectation, dict) or "rule" not in expectation:
        raise InputError([doc.problem(where, "an expectation needs rule: NAME and alerts: [...]")])
    rule = rules.get(expectation["rule"])
    if rule is None:
        raise InputError([doc.problem(where + ("rule",), f"no rule named {expectation['rule']!r} in rule_files")])
    evaluation = evaluate_rule(rule, src, now)
    if evaluation.error:
        result.failures.append(f"{rule.name}: evaluation failed: {evaluation.error}")
        return
    expected = expectation.get("alerts") or []
    for item in expected:
        if not isinstance(item, dict) or not isinstance(item.get("group", {}), dict):
            raise InputError([doc.problem(where + ("alerts",), "each alert is {group: {...}, value: N}")])
    # An expected group matches an alert whose group contains it, so that the ids
    # that `any` and `new_value` add need not be spelled out; each alert matches once.
    unmatched = list(evaluation.alerts)
    for item in sorted(expected, key=lambda i: -len(i.get("group") or {})):
        wanted = {str(k): str(v) for k, v in (item.get("group") or {}).items()}
        candidates = [a for a in unmatched if wanted.items() <= {str(k): str(v) for k, v in a.group.items()}.items()]
        if "value" in item:
            exact = [a for a in candidates if _same_value(a, item["value"])]
            if candidates and not exact:
                alert = candidates[0]
                result.failures.append(
                    f"{rule.name}: {_show(alert.group)}: expected value {item['value']}, got {alert.value}"
                )
                unmatched.remove(alert)
                continue
            candidates = exact
        if not candidates:
            result.failures.append(f"{rule.name}: expected an alert for {_show(item.get('group') or {})}, got none")
            continue
        unmatched.remove(candidates[0])
    for alert in unmatched:
        result.failures.append(
            f"{rule.name}: unexpected alert for {_show(alert.group)} (value {alert.value}, {alert.threshold})"
        )


def _same_value(alert: Alert, expected: Any) -> bool:
    """The value, or the value rounded to the decimals written (``0.3333`` for 1/3)."""
    try:
        actual, wanted = float(alert.value), float(expected)
    except (TypeError, ValueError):
        return False
    if math.isclose(actual, wanted, rel_tol=1e-6, abs_tol=1e-6):
        return True
    exponent = Decimal(repr(wanted)).as_tuple().exponent
    return isinstance(exponent, int) and exponent < 0 and round(actual, -exponent) == wanted


def _show(group: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in group.items()) + "}" if group else "{}"
