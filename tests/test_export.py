"""``export_rows``: CSV and JSON Lines, half-open ranges, --where, streaming; SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert

from audit_watch.core.yaml_source import InputError
from audit_watch.store.export import export_columns, export_rows, parse_where

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
HOUR_AGO = NOW - timedelta(hours=1)


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def rows(insert: Any) -> None:
    insert({
        "jobs": [
            {"id": "at-start", "at": "-1h", "status": "failed"},                    # exactly --from: out
            {"id": "j1", "at": "-59m", "status": "failed", "agent_id": "a1", "input_tokens": 10,
             "error": 'He said "hi", then\nleft', "prompt": "PRIVATE", "response": "ALSO PRIVATE"},
            {"id": "j2", "at": "-30m", "status": "complete", "agent_id": "a2", "input_tokens": 0},
            {"id": "j3", "at": "-10m", "status": "cancelled", "agent_id": "a1"},
            {"id": "at-end", "at": "-0s", "status": "failed", "agent_id": "a2"},    # exactly --to: in
            {"id": "later", "at": "+1s", "status": "failed"},
        ],
        "events": [
            {"id": "e1", "at": "-5m", "event_type": "auth.login", "metadata": {"ip": "203.0.113.9"}},
            {"id": "e2", "at": "-4m", "event_type": "provider.error", "severity": "error",
             "metadata": {"provider": "openai", "status": 429}},
        ],
        "threads": [
            # Active in the range though created before it: in (a thread's time is its last activity).
            {"id": "t1", "at": "-20m", "created_at": "-3d", "name": "=SUM(A1)", "source": "slack"},
            # Created in the range, last active after it: out.
            {"id": "t2", "at": "+10m", "created_at": "-30m", "name": "later", "source": "slack"},
        ],
    })


def test_csv_export_of_a_half_open_range_oldest_first(store: Any, rows: None) -> None:
    out = io.StringIO()
    count = export_rows(store, "jobs", [], HOUR_AGO, NOW, "csv", out)
    data = _csv(out.getvalue())
    assert count == 4 and [r["id"] for r in data] == ["j1", "j2", "j3", "at-end"]
    assert list(data[0]) == export_columns("jobs") and "prompt" not in data[0] and "response" not in data[0]
    assert data[0]["error"] == 'He said "hi", then\nleft'            # quoted by the CSV writer, as stored
    assert data[0]["created_at"] == "2026-11-20T11:01:00Z" and data[0]["user_id"] == ""
    assert "PRIVATE" not in out.getvalue()


def test_where_filters_equal_repeated_negated_and_numeric(store: Any, rows: None) -> None:
    def ids(*where: str) -> list[str]:
        out = io.StringIO()
        export_rows(store, "jobs", list(where), HOUR_AGO, NOW, "csv", out)
        return [r["id"] for r in _csv(out.getvalue())]

    assert ids("status=failed") == ["j1", "at-end"]
    assert ids("status=failed", "status=cancelled") == ["j1", "j3", "at-end"]
    assert ids("agent_id!=a1") == ["j2", "at-end"]
    assert ids("input_tokens=10") == ["j1"]
    assert ids("status=failed", "agent_id=a2") == ["at-end"]


def test_jsonl_keeps_metadata_structured_and_filters_on_its_keys(store: Any, rows: None) -> None:
    out = io.StringIO()
    count = export_rows(store, "events", ["metadata.provider=openai", "metadata.status=429"], HOUR_AGO, NOW,
                        "jsonl", out)
    lines = out.getvalue().splitlines()
    assert count == 1 and len(lines) == 1
    row = json.loads(lines[0])
    assert row["id"] == "e2" and row["metadata"] == {"provider": "openai", "status": 429}
    assert row["created_at"] == "2026-11-20T11:56:00Z"


def test_threads_use_last_activity_and_content_only_when_asked(store: Any, rows: None, tmp_path: Path) -> None:
    target = tmp_path / "out" / "threads.csv"
    assert export_rows(store, "threads", {"source": "slack"}, HOUR_AGO, NOW, "csv", target) == 1
    [thread] = _csv(target.read_text())
    assert (thread["id"], thread["name"]) == ("t1", "=SUM(A1)")
    assert (thread["created_at"], thread["last_activity_at"]) == ("2026-11-17T12:00:00Z", "2026-11-20T11:40:00Z")
    out = io.StringIO()
    export_rows(store, "jobs", ["id=j1"], HOUR_AGO, NOW, "jsonl", out, include_content=True)
    assert json.loads(out.getvalue())["prompt"] == "PRIVATE"


@pytest.mark.parametrize("args, message", [
    (("users", []), "cannot export 'users'"),
    (("jobs", ["colour=red"]), "unknown column 'colour'"),
    (("jobs", ["status"]), "is not key=value"),
    (("jobs", ["input_tokens=many"]), "takes a whole number"),
])
def test_bad_input_is_an_input_error(store: Any, args: tuple[str, list[str]], message: str) -> None:
    with pytest.raises(InputError, match=message):
        export_rows(store, args[0], args[1], HOUR_AGO, NOW, "csv", io.StringIO())


def test_bad_format_and_range(store: Any) -> None:
    with pytest.raises(InputError, match="unknown format 'xml'"):
        export_rows(store, "jobs", [], HOUR_AGO, NOW, "xml", io.StringIO())
    with pytest.raises(InputError, match="--to must be after --from"):
        export_rows(store, "jobs", [], NOW, HOUR_AGO, "csv", io.StringIO())


def test_parse_where_merges_a_repeated_key_into_in() -> None:
    conditions = parse_where(["status=failed", "status=retrying", "model!=gpt-4o"], "jobs")
    assert [(c.column, c.op, c.value) for c in conditions] == [
        ("status", "in", ["failed", "retrying"]), ("model", "not", "gpt-4o")]


def _bulk_jobs(store: Any, count: int, error_size: int) -> None:
    jobs = store.table("jobs")
    start = NOW - timedelta(days=1)
    batch = [{"id": f"bulk-{i:06d}", "status": "failed", "agent_id": "a1", "team_id": "t1", "job_type": "task",
              "input_tokens": i, "output_tokens": 0, "error": "x" * error_size,
              "created_at": start + timedelta(seconds=i)} for i in range(count)]
    with store.engine.begin() as conn:
        conn.execute(insert(jobs), batch)


def test_export_streams_in_constant_memory(store: Any) -> None:
    """2,000 rows of 20 KB (over 40 MB if held at once) go out with a small, flat peak."""
    _bulk_jobs(store, 2_000, 20_000)
    seen = {"cursors": set()}

    @event.listens_for(store.engine, "before_cursor_execute")
    def _cursor(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen["cursors"].add(type(cursor).__name__)

    class CountingSink(io.TextIOBase):
        written = 0

        def write(self, text: str) -> int:
            self.written += len(text)
            return len(text)

    sink = CountingSink()
    tracemalloc.start()
    try:
        count = export_rows(store, "jobs", [], NOW - timedelta(days=2), NOW, "csv", sink, batch=100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        event.remove(store.engine, "before_cursor_execute", _cursor)
    assert count == 2_000 and sink.written > 40_000_000
    assert peak < 8_000_000, f"peak {peak:,} bytes"
    if store.dialect == "postgresql":
        assert "ServerCursor" in seen["cursors"], seen       # psycopg's named, server-side cursor
