"""Fixtures: an audit store on SQLite and on PostgreSQL, rows, rule evaluation.

``store`` is parametrized: every test that uses it (directly or through
``insert`` / ``evaluate``) runs once on a temp-file SQLite database and once on
a PostgreSQL database created for the test session on 127.0.0.1:5432 (override
the server with ``AUDIT_WATCH_TEST_PG``, an admin URL). Without a reachable
server the PostgreSQL half is skipped loudly, unless ``CI`` is set: then it fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timezone
from typing import Any

import pytest
from sqlalchemy import delete

from audit_watch.config.model import LinksConfig
from audit_watch.rules.alert import Alert
from audit_watch.rules.evaluate import evaluate_rule
from audit_watch.rules.loader import RULE_ADAPTER
from audit_watch.store.rows import insert_rows
from audit_watch.store.schema import create_reference_tables
from audit_watch.store.source import AuditSource

# The fixed "now" of every test (no test reads the wall clock).
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

from pg import SKIPPED, temporary_postgres  # noqa: E402  (tests/ is on sys.path)

# Children before parents, so that a store with foreign keys could be cleared too.
_CLEAR_ORDER = ("memberships", "events", "jobs", "threads", "crons", "agents", "users", "teams")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from smtp_server import SKIPPED_TLS

    if SKIPPED_TLS:
        terminalreporter.write_sep("!", "THE TLS TESTS WERE SKIPPED", red=True, bold=True)
        terminalreporter.write_line(SKIPPED_TLS[0] + "; with CI set it is installed or the tests fail.", red=True)
    if SKIPPED:
        terminalreporter.write_sep("!", "THE POSTGRESQL HALF OF THE TESTS WAS SKIPPED", red=True, bold=True)
        terminalreporter.write_line(SKIPPED[0], red=True)
        terminalreporter.write_line("Start PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) or set "
                                    "AUDIT_WATCH_TEST_PG to an admin URL; with CI set this is a failure.")


@pytest.fixture(scope="session")
def _postgres_source() -> Iterator[AuditSource]:
    """A fresh PostgreSQL database for the session, dropped afterwards."""
    with temporary_postgres("aw_test") as url:
        src = AuditSource.from_url(url, readonly=False)
        try:
            create_reference_tables(src.engine, src.tables)
            yield src
        finally:
            src.engine.dispose()


def _clear(src: AuditSource) -> None:
    with src.engine.begin() as conn:
        for table in _CLEAR_ORDER:
            conn.execute(delete(src.tables[table]))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[AuditSource]:
    """An empty audit store with the reference tables, on each backend."""
    if request.param == "sqlite":
        src = AuditSource.from_url(f"sqlite:///{tmp_path / 'audit.db'}", readonly=False)
        create_reference_tables(src.engine, src.tables)
        try:
            yield src
        finally:
            src.engine.dispose()
        return
    src = request.getfixturevalue("_postgres_source")
    _clear(src)  # also covers a previous test that failed half-way
    try:
        yield src
    finally:
        _clear(src)


@pytest.fixture
def insert(store: AuditSource) -> Callable[..., dict[str, int]]:
    """``insert({"jobs": [{"at": "-5m", "status": "failed"}]}, now=NOW)`` (audit_watch.store.rows)."""

    def _insert(data: Mapping[str, list[Mapping[str, Any]]], now: datetime = NOW) -> dict[str, int]:
        return insert_rows(store.engine, store.tables, data, now)

    return _insert


@pytest.fixture
def evaluate(store: AuditSource) -> Callable[..., list[Alert]]:
    """Validate a rule dict, evaluate it at ``now`` (default NOW) and return its alerts.

    The evaluation must not fail: ``evaluation.error`` is asserted to be None.
    """

    def _evaluate(rule: Mapping[str, Any], now: datetime = NOW, links: LinksConfig | None = None) -> list[Alert]:
        validated = RULE_ADAPTER.validate_python({"name": "rule-under-test", **rule})
        evaluation = evaluate_rule(validated, store, now, links)
        assert evaluation.error is None, f"{store.dialect}: {evaluation.error}"
        return evaluation.alerts

    return _evaluate
