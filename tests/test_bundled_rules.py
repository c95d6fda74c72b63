"""The bundled rules on the demo data: they find every planted incident and nothing else.

The demo store is seeded once (30 days, scale 0.25, a fixed end), then
- every rule evaluated at the data's "now" finds exactly the incidents active then
  (what `make demo` shows);
- every rule backtested at hourly steps over the 30 days (from the moment it has its
  full history inside the data) fires only for planted incidents, exactly inside their
  spans, and for every one of them;
- the rule unit tests in rules/tests/ pass.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from audit_watch.cli.main import main
from audit_watch.demo.seed import seed_database
from audit_watch.rules.backtest import backtest
from audit_watch.rules.evaluate import evaluate_rules
from audit_watch.rules.loader import load_rules
from audit_watch.store.source import AuditSource

ROOT = Path(__file__).resolve().parent.parent
END = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DAYS = 30
SCALE = 0.25


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'audit.db'}"
    summary = seed_database(url, days=DAYS, seed=42, scale=SCALE, end=END)
    src = AuditSource.from_url(url)
    yield src, summary
    src.engine.dispose()


@pytest.fixture(scope="module")
def rules():  # type: ignore[no-untyped-def]
    rule_set = load_rules([ROOT / "rules"])
    assert not rule_set.problems, rule_set.problems
    return [item.rule for item in rule_set.rules]


def _key(rule: str, group: dict) -> tuple:
    """(rule, group) as the incidents name it: `any` adds the row id and
    `new_value` the new value to the group; an incident names the group_by part."""
    extra = {"id", "metadata.ip"}
    return rule, tuple(sorted((k, str(v)) for k, v in group.items() if k not in extra))


def test_every_bundled_rule_has_unit_tests_that_pass() -> None:
    rule_files = sorted((ROOT / "rules").glob("*.yaml"))
    test_files = sorted((ROOT / "rules" / "tests").glob("*.test.yaml"))
    assert {p.name.removesuffix(".yaml") for p in rule_files} == {p.name.removesuffix(".test.yaml") for p in test_files}
    result = CliRunner().invoke(main, ["test-rules", *map(str, test_files)])
    assert result.exit_code == 0, result.output
    assert " 0 failed" in result.output


def test_at_the_data_now_exactly_the_active_incidents_fire(demo, rules) -> None:  # type: ignore[no-untyped-def]
    src, summary = demo
    evaluations = evaluate_rules(rules, src, END)
    assert all(e.ok for e in evaluations), [e.error for e in evaluations if e.error]
    fired = {_key(a.rule, a.group) for e in evaluations for a in e.alerts}
    expected = {_key(i.rule, i.group) for i in summary.incidents if i.first_fire <= END <= i.last_fire}
    assert fired == expected
    assert {i.rule for i in summary.incidents} == {r.name for r in rules}, "every bundled rule has an incident"


@pytest.mark.slow
def test_hourly_backtest_fires_only_for_planted_incidents(demo, rules) -> None:  # type: ignore[no-untyped-def]
    src, summary = demo
    data_start = END - timedelta(days=DAYS)
    incidents = {_key(i.rule, i.group): i for i in summary.incidents}
    seen: set[tuple] = set()
    problems: list[str] = []
    for rule in rules:
        first_step = data_start + rule.history_span()
        first_step = first_step.replace(minute=0, second=0, microsecond=0) + (
            timedelta(hours=1) if first_step.minute or first_step.second else timedelta(0))
        result = backtest(rule, src, first_step, END, timedelta(hours=1))
        assert not result.errors, result.errors[:3]
        for episode in result.episodes:
            key = _key(rule.name, episode.group)
            incident = incidents.get(key)
            if incident is None:
                problems.append(f"{rule.name}: unexpected firing for {episode.label} "
                                f"{episode.first:%m-%d %H:%M}..{episode.last:%m-%d %H:%M} (peak {episode.peak})")
                continue
            seen.add(key)
            if (episode.first, episode.last) != (max(incident.first_fire, first_step), incident.last_fire):
                problems.append(f"{rule.name}: {episode.label} fired {episode.first:%m-%d %H:%M}..{episode.last:%m-%d %H:%M}, "
                                f"planted {incident.first_fire:%m-%d %H:%M}..{incident.last_fire:%m-%d %H:%M}")
    missing = [f"{k[0]} {dict(k[1])}" for k in incidents if k not in seen]
    assert not problems and not missing, "\n".join(problems + [f"never fired: {m}" for m in missing])
