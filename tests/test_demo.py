"""`audit-watch demo` runs the pass of `run --once` at the data's "now", and again the same.

The demo store is seeded once with a fixed end; the demo then evaluates every bundled
rule through the run ledger (a claim and an outcome per rule), the freshness check and
the outbox, and a second run shows the same alerts and sends the same notifications.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from audit_watch.alerting.state import StateStore
from audit_watch.core.outcomes import RunOutcome, RunStatus
from audit_watch.daemon import ledger
from audit_watch.daemon.freshness import FRESHNESS_JOB
from audit_watch.demo.run import run_demo
from audit_watch.demo.seed import seed_database
from audit_watch.rules.evaluate import evaluate_rules
from audit_watch.rules.loader import load_rules
from audit_watch.store.source import AuditSource

ROOT = Path(__file__).resolve().parent.parent
END = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    seed_database(f"sqlite:///{folder / 'audit.db'}", days=30, seed=42, scale=0.25, end=END)
    return folder


def _alerts(result) -> list[tuple[str, str, object]]:  # type: ignore[no-untyped-def]
    return sorted((a.rule, a.fingerprint, a.value) for e in result.evaluations for a in e.alerts)


def test_the_demo_runs_the_daemons_pass_and_shows_the_same_on_a_second_run(demo_folder: Path) -> None:
    rules = [item.rule for item in load_rules([ROOT / "rules"]).rules]
    src = AuditSource.from_url(f"sqlite:///{demo_folder / 'audit.db'}")
    try:
        expected = sorted((a.rule, a.fingerprint, a.value) for e in evaluate_rules(rules, src, END) for a in e.alerts)
    finally:
        src.engine.dispose()

    first = run_demo(demo_folder, say=lambda _: None)
    assert first.now == END and first.exit_code == 0 and not first.problems
    assert _alerts(first.result) == expected and len(expected) >= 10
    assert {o.status for o in first.result.outcomes} == {RunOutcome.OK}
    notifications = first.result.delivered.delivered
    assert notifications > 0 and first.result.delivered.dead == 0

    state = StateStore.open(f"sqlite:///{demo_folder / 'state.db'}")
    try:
        rows = ledger.history(state)
    finally:
        state.close()
    assert {(row.job, row.status) for row in rows} == {
        *((rule.name, RunStatus.OK) for rule in rules), (FRESHNESS_JOB, RunStatus.OK)}
    assert all(row.scheduled_for == END for row in rows if row.job != FRESHNESS_JOB)

    second = run_demo(demo_folder, say=lambda _: None)
    assert _alerts(second.result) == expected
    assert second.result.delivered.delivered == notifications
    assert {o.status for o in second.result.outcomes} == {RunOutcome.OK}   # a fresh ledger: not "elsewhere"
    files = sorted(p.name for p in (demo_folder / "outbox").glob("*.json"))
    assert len(files) == notifications   # the first run's notifications were cleared, not added to
