"""The half-open window ``now - W < t <= now`` for every kind that reads a window,
and SQLite timestamps written with and without an offset."""

from __future__ import annotations

from datetime import UTC, datetime, timezone

import pytest
from sqlalchemy import text

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def ids(alerts):
    return sorted(rid for alert in alerts for rid in alert.row_ids)


def test_threshold_window_excludes_start_includes_now_ignores_future(insert, evaluate):
    insert({"jobs": [
        {"id": "before", "at": "-901s", "status": "failed"},
        {"id": "at-start", "at": "-15m", "status": "failed"},
        {"id": "just-in", "at": "-899s", "status": "failed"},
        {"id": "at-now", "at": "-0s", "status": "failed"},
        {"id": "future", "at": "+1s", "status": "failed"},
    ]})
    alerts = evaluate({"kind": "threshold", "where": {"status": "failed"}, "window": "15m",
                       "threshold": {"op": ">=", "value": 1}})
    assert [a.value for a in alerts] == [2]
    assert ids(alerts) == ["at-now", "just-in"]


def test_ratio_window_bounds_apply_to_numerator_and_denominator(insert, evaluate):
    insert({"jobs": [
        {"at": "-1h", "status": "failed", "count": 5},      # at the start: out
        {"at": "-1h", "status": "complete", "count": 5},
        {"at": "-0s", "status": "failed"},                  # at now: in
        {"at": "-30m", "status": "complete", "count": 3},
        {"at": "+1m", "status": "failed", "count": 5},      # future: ignored
        {"at": "+1m", "status": "complete", "count": 5},
    ]})
    alerts = evaluate({"kind": "ratio", "where": {"status": "failed"}, "window": "1h",
                       "ratio": {"op": ">", "value": 0}})
    assert len(alerts) == 1
    assert alerts[0].value == 0.25
    assert alerts[0].details["matching"] == 1 and alerts[0].details["total"] == 4


def test_spike_row_at_window_start_is_reference_and_row_at_reference_start_is_out(insert, evaluate):
    insert({"jobs": [
        {"at": "-2h", "status": "failed", "count": 5},   # reference start: out of everything
        {"at": "-1h", "status": "failed"},               # window start = reference end: reference
        {"at": "-0s", "status": "failed", "count": 3},   # now: current
        {"at": "+1m", "status": "failed", "count": 10},  # future: ignored
    ]})
    alerts = evaluate({"kind": "spike", "where": {"status": "failed"}, "window": "1h", "reference": "1h",
                       "factor": 3, "min_current": 3})
    assert [(a.value, a.baseline) for a in alerts] == [(3, 1.0)]


def test_metric_buckets_are_half_open_and_future_rows_ignored(insert, evaluate):
    insert({"jobs": [
        {"at": "-2h", "input_tokens": 1000},   # start of the baseline period: out
        {"at": "-1h", "input_tokens": 5},      # window start: baseline period 1
        {"at": "-0s", "input_tokens": 11},     # now: current
        {"at": "+1m", "input_tokens": 1000},   # future: ignored
    ]})
    threshold = evaluate({"kind": "metric", "field": "input_tokens", "aggregate": "sum", "window": "1h",
                          "threshold": {"op": ">=", "value": 0}})
    assert [a.value for a in threshold] == [11]
    baseline = evaluate({"kind": "metric", "field": "input_tokens", "aggregate": "sum", "window": "1h",
                         "baseline": {"periods": 1, "factor": 2}})
    assert [(a.value, a.baseline) for a in baseline] == [(11, 5.0)]


def test_absence_window_and_lookback_are_half_open(insert, evaluate):
    insert({"jobs": [
        {"agent_id": "at-window-start", "at": "-1h"},                     # lookback only: absent
        {"agent_id": "active-at-now", "at": "-1h"},
        {"agent_id": "active-at-now", "at": "-0s"},                       # in the window: present
        {"agent_id": "only-future", "at": "-2h"},
        {"agent_id": "only-future", "at": "+1m"},                         # future: still absent
        {"agent_id": "at-lookback-start", "at": "-25h"},                  # out of the lookback
    ]})
    alerts = evaluate({"kind": "absence", "group_by": ["agent_id"], "window": "1h", "lookback": "1d"})
    assert sorted(a.group["agent_id"] for a in alerts) == ["at-window-start", "only-future"]


def test_new_value_window_and_lookback_are_half_open(insert, evaluate):
    insert({"jobs": [
        {"model": "seen-at-window-start", "at": "-1h"},
        {"model": "seen-at-window-start", "at": "-0s"},
        {"model": "new-at-now", "at": "-0s"},
        {"model": "only-future", "at": "+1m"},
        {"model": "seen-at-lookback-start", "at": "-25h"},   # out of the lookback: still new
        {"model": "seen-at-lookback-start", "at": "-10m"},
    ]})
    alerts = evaluate({"kind": "new_value", "field": "model", "window": "1h", "lookback": "1d"})
    assert sorted(a.group["model"] for a in alerts) == ["new-at-now", "seen-at-lookback-start"]


def test_any_window_excludes_start_includes_now_ignores_future(insert, evaluate):
    insert({"events": [
        {"id": "at-start", "at": "-1h"},
        {"id": "at-now", "at": "-0s"},
        {"id": "future", "at": "+1s"},
    ]})
    alerts = evaluate({"kind": "any", "source": "events", "window": "1h"})
    assert [a.group["id"] for a in alerts] == ["at-now"]


# --- SQLite: ISO text with and without an offset ------------------------------------------

SQLITE_TIMES = {
    # id: (created_at text, in the 1h window ending 2026-11-20 12:00 UTC?)
    "plain": ("2026-11-20 11:30:00", True),
    "plain-T": ("2026-11-20T11:30:00", True),
    "utc-offset": ("2026-11-20T11:30:00+00:00", True),
    "zulu": ("2026-11-20T11:30:00Z", True),
    "fraction-zulu": ("2026-11-20T11:00:00.500Z", True),
    "plus-two-in": ("2026-11-20T13:30:00+02:00", True),        # 11:30 UTC; text looks future
    "plus-two-at-now": ("2026-11-20T14:00:00+02:00", True),    # 12:00 UTC = now: in
    "plus-two-old": ("2026-11-20T12:30:00+02:00", False),      # 10:30 UTC; text looks in-window
    "plus-one-at-start": ("2026-11-20T12:00:00+01:00", False),  # 11:00 UTC = window start: out
    "plain-at-start": ("2026-11-20 11:00:00", False),
    "zulu-at-start": ("2026-11-20T11:00:00Z", False),
    "minus-two-future": ("2026-11-20T10:30:00-02:00", False),  # 12:30 UTC; text looks in-window
    "plus-14-next-day": ("2026-11-21T01:30:00+14:00", True),   # 11:30 UTC on the 20th
    "minus-12-day-before": ("2026-11-19T23:30:00-12:00", True),  # 11:30 UTC on the 20th
    "plain-future": ("2026-11-20 12:00:01", False),
}


# Raw timestamp text is a SQLite matter (PostgreSQL stores timestamptz): these run on SQLite only.
sqlite_only = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


@pytest.fixture
def sqlite_texts(store):
    assert store.dialect == "sqlite"
    with store.engine.begin() as conn:
        for row_id, (stamp, _) in SQLITE_TIMES.items():
            conn.execute(
                text("INSERT INTO jobs (id, status, agent_id, team_id, job_type, created_at) "
                     "VALUES (:id, 'failed', 'a1', 't1', 'task', :at)"),
                {"id": row_id, "at": stamp},
            )
    return store


@sqlite_only
def test_sqlite_timestamps_with_and_without_offset_compare_as_utc_instants(sqlite_texts, evaluate):
    alerts = evaluate({"kind": "threshold", "where": {"status": "failed"}, "window": "1h",
                       "threshold": {"op": ">=", "value": 0}})
    expected = sorted(row_id for row_id, (_, inside) in SQLITE_TIMES.items() if inside)
    assert alerts[0].value == len(expected)
    assert ids(alerts) == expected


@sqlite_only
def test_sqlite_offset_timestamps_read_back_as_utc_in_any_alerts(sqlite_texts, evaluate):
    alerts = evaluate({"kind": "any", "where": {"status": "failed"}, "window": "1h", "max_alerts": 100})
    at = {a.group["id"]: a.details["at"] for a in alerts}
    assert at["plus-two-in"] == "2026-11-20T11:30:00+00:00"
    assert at["plus-14-next-day"] == "2026-11-20T11:30:00+00:00"
    assert at["plus-two-at-now"] == "2026-11-20T12:00:00+00:00"
    assert at["fraction-zulu"] == "2026-11-20T11:00:00.500000+00:00"
    assert sorted(at) == sorted(row_id for row_id, (_, inside) in SQLITE_TIMES.items() if inside)


@sqlite_only
def test_sqlite_offset_timestamps_split_spike_periods_by_utc_instant(sqlite_texts, evaluate):
    # window 30m (11:30, 12:00], reference 30m (11:00, 11:30]
    alerts = evaluate({"kind": "spike", "where": {"status": "failed"}, "window": "30m", "factor": 3,
                       "direction": "down"})
    # current: plus-two-at-now (12:00); reference: every 11:30 row and fraction-zulu (11:00:00.5)
    assert [(a.value, a.details["reference_count"]) for a in alerts] == [(1, 8)]
