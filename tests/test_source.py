"""The audit store as audit-watch opens it: read only, with a statement timeout, under
renamed tables and columns; on SQLite and PostgreSQL.

The other tests open their stores writable (to insert rows); these open them the way
``run``, ``test-rule`` and ``report`` do (``AuditSource.from_config``, read only).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from audit_watch.cli.check import check_source_tables
from audit_watch.config.model import Config
from audit_watch.rules.evaluate import evaluate_rule
from audit_watch.rules.loader import RULE_ADAPTER
from audit_watch.store.rows import insert_rows
from audit_watch.store.schema import build_tables, create_reference_tables
from audit_watch.store.settings import SourceConfig
from audit_watch.store.source import AuditSource, make_engine

from conftest import NOW
from pg import temporary_postgres

RULE = RULE_ADAPTER.validate_python({
    "name": "failed-jobs", "kind": "threshold", "where": {"status": "failed"}, "group_by": ["agent_id"],
    "threshold": {"op": ">=", "value": 3}, "window": "15m",
})
ROWS = {"jobs": [{"at": "-5m", "status": "failed", "agent_id": "a1", "count": 3},
                 {"at": "-5m", "status": "complete", "agent_id": "a2", "count": 5}]}
RENAMES = {"tables": {"jobs": "agent_jobs"}, "columns": {"jobs": {"status": "job_status", "created_at": "ts"}}}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of its own (renamed tables need one)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}"
        return
    with temporary_postgres("aw_source") as url:
        yield url


def seeded(url: str, renames: dict[str, Any] | None = None) -> SourceConfig:
    """Create the reference tables (renamed) at ``url``, insert ROWS; the config to read them."""
    config = SourceConfig(url=url, **(renames or {}))
    engine, tables = make_engine(url), build_tables(config.tables, config.columns)   # not the reading path
    try:
        create_reference_tables(engine, tables)
        insert_rows(engine, tables, ROWS, NOW)
    finally:
        engine.dispose()
    return config


def test_the_source_is_opened_read_only_and_refuses_a_write(empty_url: str) -> None:
    # Catches a source opened writable: SQLite without mode=ro, PostgreSQL without a
    # read-only transaction (the evaluations would then be able to change the audit store).
    src = AuditSource.from_config(seeded(empty_url))
    try:
        with pytest.raises(DBAPIError, match="read-only|readonly"):
            with src.connect() as conn:
                conn.execute(text("DELETE FROM jobs"))
        with src.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 8     # nothing was deleted
        evaluation = evaluate_rule(RULE, src, NOW)      # and rules are evaluated through it
        assert evaluation.error is None and [(a.group, a.value) for a in evaluation.alerts] == [({"agent_id": "a1"}, 3)]
    finally:
        src.engine.dispose()


def test_a_query_over_the_statement_timeout_is_cancelled(empty_url: str) -> None:
    # Real time by nature: the timeout is the database's (PostgreSQL) or a progress
    # handler's (SQLite) wall clock. 300 ms, against a query of several seconds that
    # ends by itself (so that a missing timeout fails the test instead of hanging it).
    config = seeded(empty_url).model_copy(update={"statement_timeout": timedelta(milliseconds=300)})
    src = AuditSource.from_config(config)
    slow = {
        "postgresql": "SELECT pg_sleep(10)",
        "sqlite": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 20000000) "
                  "SELECT count(*) FROM n",
    }[src.dialect]
    try:
        with pytest.raises(DBAPIError, match="statement timeout|interrupted"):
            with src.connect() as conn:
                conn.execute(text(slow))
        with src.connect() as conn:                     # the connection is usable again
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        src.engine.dispose()


def test_renamed_tables_and_columns_are_read_under_their_own_names(empty_url: str) -> None:
    config = seeded(empty_url, RENAMES)
    src = AuditSource.from_config(config)
    try:
        with src.connect() as conn:     # the physical table and columns really are renamed
            assert conn.execute(text("SELECT count(*) FROM agent_jobs WHERE job_status = 'failed'")).scalar() == 3
        evaluation = evaluate_rule(RULE, src, NOW)
        assert evaluation.error is None and [(a.group, a.value) for a in evaluation.alerts] == [({"agent_id": "a1"}, 3)]
        assert evaluation.alerts[0].window_end == NOW
    finally:
        src.engine.dispose()
    # Without the renames the same store has no "jobs" table: the evaluation fails, it
    # does not find nothing.
    plain = AuditSource.from_config(SourceConfig(url=empty_url))
    try:
        failed = evaluate_rule(RULE, plain, NOW)
        assert failed.error is not None and "jobs" in failed.error
    finally:
        plain.engine.dispose()


def test_check_connect_finds_missing_tables_and_columns(empty_url: str, tmp_path: Path) -> None:
    seeded(empty_url, RENAMES)
    config_file = str(tmp_path / "audit-watch.yaml")
    good = Config.model_validate({"source": {"url": empty_url, **RENAMES}, "file": config_file})
    assert check_source_tables(good, None) == []
    wrong = Config.model_validate({"source": {"url": empty_url, "tables": {"jobs": "agent_jobs"},
                                              "columns": {"jobs": {"status": "state"}}}, "file": config_file})
    problems = [(p.field, p.message) for p in check_source_tables(wrong, None)]
    # The store has no "threads" etc. under these names either way; the jobs problems are the renamed ones.
    assert ("source.columns.jobs.status", "column 'state' not found in agent_jobs") in problems
    assert ("source.columns.jobs.created_at", "column 'created_at' not found in agent_jobs") in problems
