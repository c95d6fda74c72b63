"""The day every cron stops: 2,000 hourly crons (three time zones, every minute of the
hour) fired on time for two days and then stopped one to six hours ago, some with a
late fire after they stopped. ``test-rule`` names every cron with its exact number of
consecutive missed runs, checked against a separate computation with cronsim."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from cronsim import CronSim

from audit_watch.cli.main import main
from audit_watch.store.schema import create_reference_tables
from audit_watch.store.source import AuditSource

from pg import temporary_postgres

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 20, 12, 7, 30, tzinfo=UTC)
CRONS = 2_000
HISTORY = timedelta(days=2)
GRACE = timedelta(minutes=15)
ZONES = ("UTC", "Asia/Kolkata", "America/New_York")   # whole, half and negative offsets


def spec(i: int) -> dict[str, Any]:
    return {
        "id": f"cron-{i:05d}",
        "schedule": f"{(i * 7) % 60} * * * *",
        "timezone": ZONES[i % len(ZONES)],
        "stopped": NOW - timedelta(hours=1 + i % 6, minutes=20 + (i * 11) % 40),
        "late_fire": i % 20 == 0,   # one fire half an hour after a missed run: still missed
    }


def fires_of(cron: dict[str, Any]) -> list[datetime]:
    zone = ZoneInfo(cron["timezone"])
    fires = []
    for run in CronSim(cron["schedule"], (NOW - HISTORY).astimezone(zone)):
        run = run.astimezone(UTC)
        if run >= cron["stopped"]:
            if cron["late_fire"] and run + timedelta(minutes=30) < NOW:
                fires.append(run + timedelta(minutes=30))
            break
        fires.append(run + timedelta(seconds=int(cron["id"][-3:]) % 240))   # up to 4 minutes late
    return fires


def missed_runs(cron: dict[str, Any], fires: list[datetime], max_runs: int = 100) -> int:
    """Counted without audit-watch: cronsim back from the last run due, fire by fire."""
    zone = ZoneInfo(cron["timezone"])
    due_by = NOW - GRACE
    start = (due_by.replace(microsecond=0) + timedelta(seconds=1)).astimezone(zone)
    missed = 0
    for run in CronSim(cron["schedule"], start, reverse=True):
        run = run.astimezone(UTC)
        if run < NOW - HISTORY - timedelta(days=1) or missed >= max_runs:   # created_at
            break
        if any(run <= fire <= run + GRACE for fire in fires):
            break
        missed += 1
    return missed


def _copy(cursor: Any, table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


@pytest.fixture(scope="module")
def outage() -> Iterator[tuple[str, dict[str, int], dict[str, str | None], dict[str, datetime]]]:
    """The store's URL, each cron's missed runs, its last fire, and its last fire in time."""
    crons = [spec(i) for i in range(CRONS)]
    fires = {c["id"]: fires_of(c) for c in crons}
    with temporary_postgres("aw_cron_outage") as url:
        src = AuditSource.from_url(url, readonly=False)
        create_reference_tables(src.engine)  # with the reference indexes
        created = NOW - HISTORY - timedelta(days=1)
        raw = src.engine.raw_connection()
        try:
            cursor = raw.cursor()
            _copy(cursor, "agents", "id, name, team_id, created_at", [("agent-1", "Scheduler", "team-1", created)])
            _copy(cursor, "crons", "id, agent_id, name, schedule, timezone, enabled, created_at",
                  [(c["id"], "agent-1", f"job {c['id']}", c["schedule"], c["timezone"], True, created) for c in crons])
            events = sorted(((f"fire-{cron_id}-{n}", "cron.fired", "info", "cron fired", "agent-1",
                              json.dumps({"cron_id": cron_id}), at)
                             for cron_id, times in fires.items() for n, at in enumerate(times)),
                            key=lambda row: row[-1])   # written as they happen
            _copy(cursor, "events", "id, event_type, severity, description, agent_id, metadata, created_at", events)
            cursor.execute("ANALYZE")
            raw.commit()
        finally:
            raw.close()
            src.engine.dispose()
        expected = {c["id"]: missed_runs(c, fires[c["id"]]) for c in crons}
        last = {cron_id: max(times).isoformat() if times else None for cron_id, times in fires.items()}
        in_time = {c["id"]: max(fires[c["id"]][:-1] if c["late_fire"] else fires[c["id"]]) for c in crons}
        yield url, expected, last, in_time


def _test_rule(tmp_path: Path, url: str, rule: str) -> dict[str, Any]:
    path = tmp_path / "rule.yaml"
    path.write_text(rule)
    result = CliRunner().invoke(main, ["test-rule", str(path), "--source", url, "--now", NOW.isoformat(), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


RULE = "name: crons-stopped\nkind: cron_missed\ngrace: 15m\n"


def test_every_cron_is_named_with_its_exact_number_of_missed_runs(outage: Any, tmp_path: Path) -> None:
    url, expected, last, _ = outage
    assert all(count >= 1 for count in expected.values())            # every cron stopped
    assert len(set(expected.values())) >= 5                          # streaks of several lengths
    data = _test_rule(tmp_path, url, RULE + "max_groups: 5000\n")
    found = {a["group"]["cron_id"]: a["value"] for a in data["alerts"]}
    assert found == expected
    assert data["firing_groups"] == CRONS and data["groups_summary"] is None
    details = {a["group"]["cron_id"]: a["details"] for a in data["alerts"]}
    assert {cron_id: d["last_fired"] for cron_id, d in details.items()} == last
    assert all(a["row_ids"] for a in data["alerts"])                   # each names its last fire


def test_the_default_keeps_the_longest_silences_and_states_the_total(outage: Any, tmp_path: Path) -> None:
    url, expected, _, in_time = outage
    data = _test_rule(tmp_path, url, RULE)
    assert data["firing_groups"] == CRONS and data["max_groups"] == 1000 and len(data["alerts"]) == 1000
    assert data["groups_summary"] == "2,000 crons firing; the 1,000 most severe are tracked"
    kept = {a["group"]["cron_id"]: a["value"] for a in data["alerts"]}
    assert all(expected[cron_id] == value for cron_id, value in kept.items())
    # the longest silence first: the oldest last fire in time
    longest = sorted(expected, key=lambda cron_id: (in_time[cron_id], cron_id))[:1000]
    assert list(kept) == longest
    left_out = set(expected) - set(kept)
    assert min(expected[c] for c in kept) >= max(expected[c] for c in left_out)

