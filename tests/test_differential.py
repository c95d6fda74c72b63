"""The engine against a plain-Python reading of the contract, on SQLite and PostgreSQL.

Hypothesis generates small stores and one to four rules of any kind over each:
rows exactly on and a millisecond around the window's, reference's, baseline
periods' and lookback's edges, rows after ``now``, NULLs, non-ASCII text, JSON
metadata of every type, crons with their fires at and around the grace's edges, and
(on SQLite) times written with and without an offset. Conditions are drawn last, from
the values the rows hold (the same number as int, float or text; a piece of a text in
another case), so that they select some rows and not others (:mod:`differential_cases`).
Each rule's alerts (group, value, baseline) must equal what :mod:`differential_oracle`
computes from the same rows; every rule evaluated is one case.

``make test`` runs a small fixed-seed budget per backend. A larger run, by hand
(an example is one store, about two cases)::

    AUDIT_WATCH_DIFFERENTIAL_EXAMPLES=2500 AUDIT_WATCH_DIFFERENTIAL_SEED=1 \\
        .venv/bin/python -m pytest -q -s tests/test_differential.py
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from sqlalchemy import column, delete, insert, table
from sqlalchemy.engine import Engine

from audit_watch.rules.evaluate import evaluate_rule
from audit_watch.rules.loader import RULE_ADAPTER
from audit_watch.store.engine import make_engine
from audit_watch.store.schema import REFERENCE_COLUMNS, create_reference_tables
from audit_watch.store.source import AuditSource

from conftest import NOW
from differential_cases import SQLITE_TIME_FORMATS, TIME_COLUMNS, Case, cases
from differential_oracle import Expected, GroupKey, expect, key_of
from pg import temporary_postgres

EXAMPLES = int(os.environ.get("AUDIT_WATCH_DIFFERENTIAL_EXAMPLES", "60"))
SEED = int(os.environ.get("AUDIT_WATCH_DIFFERENTIAL_SEED", "20261120"))
VERBOSE = "AUDIT_WATCH_DIFFERENTIAL_EXAMPLES" in os.environ

# --- the stores ----------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    writer: Engine
    reader: AuditSource
    cases: Counter[str] = field(default_factory=Counter)
    firing: Counter[str] = field(default_factory=Counter)  # cases where something fired
    seconds: float = 0.0


def _sqlite_text(moment: datetime, form: int) -> str:
    if SQLITE_TIME_FORMATS[form] == "+05:30":
        local = moment + timedelta(hours=5, minutes=30)
        return local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}+05:30"
    return moment.strftime(SQLITE_TIME_FORMATS[form].replace("{ms}", f"{moment.microsecond // 1000:03d}"))


def load(backend: Backend, case: Case) -> None:
    tables = backend.reader.tables
    with backend.writer.begin() as conn:
        for name in ("events", "jobs", "threads", "crons"):
            conn.execute(delete(tables[name]))
        for name, rows in case.store.items():
            if not rows:
                continue
            columns = [c for c, _, _ in REFERENCE_COLUMNS[name]]
            prepared = [{c: row.get(c) for c in columns} for row in rows]
            if backend.name == "sqlite":
                # Raw text, so that each time keeps the form it was written in.
                target: Any = table(name, *(column(c) for c in columns))
                for row, raw in zip(rows, prepared):
                    for c in TIME_COLUMNS[name]:
                        if raw.get(c) is not None:
                            raw[c] = _sqlite_text(raw[c], case.time_formats.get((name, row["id"], c), 0))
                    if name == "events":
                        raw["metadata"] = json.dumps(raw["metadata"])
            else:
                target = tables[name]
            conn.execute(insert(target), prepared)


def engine_findings(backend: Backend, rule_dict: dict[str, Any]) -> dict[GroupKey, Expected]:
    rule = RULE_ADAPTER.validate_python(rule_dict)
    evaluation = evaluate_rule(rule, backend.reader, NOW)
    assert evaluation.error is None, f"{backend.name}: {evaluation.error}"
    found = {key_of(alert.group): Expected(alert.value, alert.baseline) for alert in evaluation.alerts}
    assert len(found) == len(evaluation.alerts), "two alerts for one group"
    return found


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-12)


def check(backend: Backend, case: Case) -> None:
    started = time.perf_counter()
    load(backend, case)
    for number, rule in enumerate(case.rules):
        actual = engine_findings(backend, rule)
        expected = expect(rule, case.store, NOW)
        backend.cases[rule["kind"]] += 1
        backend.firing[rule["kind"]] += bool(expected)
        where = f"{backend.name}, rule {number} ({rule['kind']})"
        assert set(actual) == set(expected), (
            f"{where}: groups differ\n  engine only: {sorted(set(actual) - set(expected), key=repr)}\n"
            f"  oracle only: {sorted(set(expected) - set(actual), key=repr)}"
        )
        for key, found in actual.items():
            wanted = expected[key]
            assert _same(found.value, wanted.value), f"{where}: {key}: value {found.value} != {wanted.value}"
            if wanted.baseline is not None or rule["kind"] in ("spike", "absence"):
                assert _same(found.baseline, wanted.baseline), (
                    f"{where}: {key}: baseline {found.baseline} != {wanted.baseline}")
    backend.seconds += time.perf_counter() - started


@pytest.fixture(scope="module")
def sqlite_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    path: Path = tmp_path_factory.mktemp("differential") / "audit.db"
    writer = make_engine(f"sqlite:///{path}")
    create_reference_tables(writer)
    reader = AuditSource.from_url(f"sqlite:///{path}")  # read-only, as the daemon opens it
    yield Backend("sqlite", writer, reader)
    reader.engine.dispose()
    writer.dispose()


@pytest.fixture(scope="module")
def postgresql_backend() -> Iterator[Backend]:
    with temporary_postgres("aw_differential") as url:
        writer = make_engine(url)
        create_reference_tables(writer)
        reader = AuditSource.from_url(url)
        try:
            yield Backend("postgresql", writer, reader)
        finally:
            reader.engine.dispose()
            writer.dispose()


def _report(backend: Backend) -> None:
    if VERBOSE:
        total = sum(backend.cases.values())
        print(f"\n{backend.name}: {total} cases, 0 disagreements, {backend.seconds:.1f} s in load+evaluate+oracle; "
              f"by kind (cases/firing): "
              + ", ".join(f"{kind} {n}/{backend.firing[kind]}" for kind, n in sorted(backend.cases.items())))


DIFFERENTIAL = settings(
    max_examples=EXAMPLES, deadline=None, database=None, derandomize=False, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


@seed(SEED)
@DIFFERENTIAL
@given(case=cases())
def _sqlite_case(backend: Backend, case: Case) -> None:
    check(backend, case)


@seed(SEED)
@DIFFERENTIAL
@given(case=cases())
def _postgresql_case(backend: Backend, case: Case) -> None:
    check(backend, case)


def test_sqlite_agrees_with_the_contract(sqlite_backend: Backend) -> None:
    _sqlite_case(sqlite_backend)
    _report(sqlite_backend)
    assert sum(sqlite_backend.cases.values()) >= EXAMPLES


@pytest.mark.postgres
def test_postgresql_agrees_with_the_contract(postgresql_backend: Backend) -> None:
    _postgresql_case(postgresql_backend)
    _report(postgresql_backend)
    assert sum(postgresql_backend.cases.values()) >= EXAMPLES
