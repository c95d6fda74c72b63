"""Alert states and silences, on SQLite and PostgreSQL.

This module also holds what the other delivery tests share (they import it):
the ``state`` fixture on both backends, ``make_rule``/``make_alert`` and ``T0``.
PostgreSQL: one uniquely named database per test module on 127.0.0.1:5432
(``AUDIT_WATCH_TEST_PG`` overrides the admin URL), dropped afterwards; when the
server is unreachable the PostgreSQL half is skipped loudly, or fails under CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import MetaData, delete, select, update

from audit_watch.alerting import silences
from audit_watch.alerting.notify import decide
from audit_watch.alerting.state import (
    SCHEMA_VERSION,
    StateError,
    StateStore,
    alert_states,
    alert_threads,
    metadata,
    outbox,
    schema_version,
)
from audit_watch.rules.alert import Alert
from audit_watch.rules.evaluate import Evaluation
from audit_watch.rules.loader import RULE_ADAPTER
from audit_watch.rules.model import RuleBase

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
from pg import PG_ADMIN_URL, temporary_postgres  # noqa: E402  (re-exported for other test modules)

BASE = "https://auxot.example.com"


# --- shared fixtures and builders ---------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('state') / 'state.db'}"
        return
    with temporary_postgres("aw_state") as url:
        yield url


def emptied_state(url: str, *more: MetaData) -> Iterator[StateStore]:
    """The state database at ``url`` with its tables (and ``more``'s) emptied, closed after."""
    store = StateStore.open(url)
    with store.write() as conn:
        for table in [*(t for m in more for t in reversed(m.sorted_tables)), *reversed(metadata.sorted_tables)]:
            if table is not schema_version:
                conn.execute(delete(table))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def state(state_url: str) -> Iterator[StateStore]:
    """An empty state database (tables cleared between tests of a module)."""
    yield from emptied_state(state_url)


def make_rule(**overrides: Any) -> RuleBase:
    data: dict[str, Any] = {
        "name": "failed-jobs", "kind": "threshold", "threshold": {"op": ">=", "value": 5},
        "group_by": ["agent_id"], "window": "15m", "notify": ["oncall"], "description": "Failed jobs per agent",
    }
    data.update(overrides)
    if data["kind"] != "threshold":
        data.pop("threshold")
    return RULE_ADAPTER.validate_python(data)


def make_alert(agent: str = "a1", name: str | None = "Support Triage", value: float = 7, now: datetime = T0,
               rule: str = "failed-jobs", kind: str = "threshold", rows: int = 2, **extra: Any) -> Alert:
    row_ids = [f"job-{agent}-{i}" for i in range(1, rows + 1)]
    fields: dict[str, Any] = dict(
        rule=rule, kind=kind, severity="warning", source="jobs", description="Failed jobs per agent",
        group={"agent_id": agent}, group_names={"agent_id": name} if name else {}, value=value,
        threshold=">= 5", baseline=None, window_start=now - timedelta(minutes=15), window_end=now,
        row_ids=row_ids, links=[f"{BASE}/audit-logs/jobs/{r}" for r in row_ids],
        list_link=f"{BASE}/audit-logs/jobs?status=failed&agent_id={agent}",
    )
    fields.update(extra)
    return Alert(**fields)


def evaluation(rule: RuleBase, now: datetime, *alerts: Alert, error: str | None = None) -> Evaluation:
    return Evaluation(rule, now, list(alerts), error=error)


# --- schema -----------------------------------------------------------------------------


def test_schema_is_created_versioned_and_reopening_is_harmless(state: StateStore, state_url: str) -> None:
    again = StateStore.open(state_url)
    with again.read() as conn:
        assert conn.execute(schema_version.select()).all() == [(1, SCHEMA_VERSION)]
    again.close()


@pytest.mark.postgres
def test_replicas_starting_together_create_the_schema_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from audit_watch.daemon import ledger

    def start(url: str) -> None:
        store = StateStore.open(url)
        ledger.ensure_ledger_schema(store)
        store.close()

    with temporary_postgres("aw_race") as url:
        with ThreadPoolExecutor(6) as pool:
            for future in [pool.submit(start, url) for _ in range(6)]:
                future.result()        # a race on CREATE TABLE would raise here
        store = StateStore.open(url)
        try:
            with store.read() as conn:
                assert conn.execute(select(schema_version.c.version)).scalars().all() == [SCHEMA_VERSION]
        finally:
            store.close()


def test_a_newer_schema_is_refused(state: StateStore, state_url: str) -> None:
    with state.write() as conn:
        conn.execute(update(schema_version).values(version=SCHEMA_VERSION + 1))
    try:
        with pytest.raises(StateError, match="newer"):
            StateStore.open(state_url)
    finally:
        with state.write() as conn:
            conn.execute(update(schema_version).values(version=SCHEMA_VERSION))


# --- the policy (pure) -------------------------------------------------------------------


def test_pending_until_for_then_firing_once() -> None:
    rule = make_rule(**{"for": "5m"})
    step = decide(rule, {}, [make_alert()], T0, [])
    assert [s.state for s in step.changed] == ["pending"] and not step.events
    prior = {s.fingerprint: s for s in step.changed}
    step = decide(rule, prior, [make_alert()], T0 + timedelta(minutes=4), [])
    assert step.changed[0].state == "pending" and not step.events
    prior = {s.fingerprint: s for s in step.changed}
    step = decide(rule, prior, [make_alert()], T0 + timedelta(minutes=5), [])
    assert step.changed[0].state == "firing" and [e.kind for e in step.events] == ["firing"]
    assert step.changed[0].fired_at == T0 + timedelta(minutes=5)


def test_a_pending_alert_that_clears_is_forgotten_without_a_message() -> None:
    rule = make_rule(**{"for": "5m"})
    step = decide(rule, {}, [make_alert()], T0, [])
    prior = {s.fingerprint: s for s in step.changed}
    step = decide(rule, prior, [], T0 + timedelta(minutes=1), [])
    assert step.removed == list(prior) and not step.events and not step.changed


def test_keep_firing_for_holds_a_flapping_alert() -> None:
    rule = make_rule(keep_firing_for="10m")
    prior = {s.fingerprint: s for s in decide(rule, {}, [make_alert()], T0, []).changed}
    step = decide(rule, prior, [], T0 + timedelta(minutes=5), [])
    assert step.changed[0].state == "firing" and not step.events
    prior = {s.fingerprint: s for s in step.changed}
    step = decide(rule, prior, [make_alert()], T0 + timedelta(minutes=6), [])   # back: same episode
    assert step.changed[0].state == "firing" and not step.events and step.changed[0].episode == 1
    prior = {s.fingerprint: s for s in step.changed}
    step = decide(rule, prior, [], T0 + timedelta(minutes=16), [])
    assert step.changed[0].state == "resolved" and [e.kind for e in step.events] == ["resolved"]


def test_notify_resolved_false_resolves_quietly() -> None:
    rule = make_rule(notify_resolved=False)
    prior = {s.fingerprint: s for s in decide(rule, {}, [make_alert()], T0, []).changed}
    step = decide(rule, prior, [], T0 + timedelta(minutes=1), [])
    assert step.changed[0].state == "resolved" and not step.events


def test_repeat_only_after_the_interval_and_not_at_all_when_off() -> None:
    rule = make_rule(repeat="1h")
    prior = {s.fingerprint: s for s in decide(rule, {}, [make_alert()], T0, []).changed}
    step = decide(rule, prior, [make_alert()], T0 + timedelta(minutes=59), [])
    assert not step.events
    step = decide(rule, prior, [make_alert()], T0 + timedelta(hours=1), [])
    assert [e.kind for e in step.events] == ["repeat"]
    never = make_rule(repeat="0s")
    prior = {s.fingerprint: s for s in decide(never, {}, [make_alert()], T0, []).changed}
    assert not decide(never, prior, [make_alert()], T0 + timedelta(days=3), []).events


def test_recent_values_are_capped_and_content_is_redacted() -> None:
    rule = make_rule()
    alert = make_alert(details={"row": {"prompt": "SECRET PROMPT", "response": "SECRET ANSWER", "status": "failed"}})
    prior: dict[str, Any] = {}
    for minute in range(25):
        step = decide(rule, prior, [alert], T0 + timedelta(minutes=minute), [])
        prior = {s.fingerprint: s for s in step.changed}
    item = next(iter(prior.values()))
    assert len(item.recent_values) == 20 and item.recent_values[-1][0] == (T0 + timedelta(minutes=24)).isoformat()
    assert item.alert["details"]["row"] == {"status": "failed"}
    included = make_rule(include_content=True)
    kept = decide(included, {}, [alert], T0, []).changed[0]
    assert kept.alert["details"]["row"]["prompt"] == "SECRET PROMPT"


# --- silences ---------------------------------------------------------------------------


def test_silence_add_list_expire(state: StateStore) -> None:
    first = silences.add(state, "failed-jobs", timedelta(hours=2), "deploying", T0,
                         matchers={"agent_id": "a1"}, created_by="ana")
    second = silences.add(state, "failed-*", timedelta(minutes=30), "noisy", T0)
    listed = silences.list_silences(state, T0)
    assert [s.id for s in listed] == [second.id, first.id]
    assert listed[1].matchers == {"agent_id": "a1"} and listed[1].created_by == "ana"
    assert listed[1].ends_at == T0 + timedelta(hours=2)
    # Silences end by themselves.
    assert [s.id for s in silences.list_silences(state, T0 + timedelta(hours=1))] == [first.id]
    expired = silences.expire(state, first.id, T0 + timedelta(minutes=10))
    assert expired.expired_at == T0 + timedelta(minutes=10)
    assert [s.id for s in silences.list_silences(state, T0 + timedelta(minutes=11))] == [second.id]
    assert len(silences.list_silences(state, T0 + timedelta(hours=3), include_ended=True)) == 2
    with pytest.raises(silences.SilenceError, match="already ended"):
        silences.expire(state, first.id, T0 + timedelta(minutes=20))
    with pytest.raises(silences.SilenceError, match="no silence"):
        silences.expire(state, 9999, T0)


def test_silence_input_is_checked() -> None:
    assert silences.parse_matchers(["agent_id=a1", "model = gpt-4o"]) == {"agent_id": "a1", "model": "gpt-4o"}
    with pytest.raises(silences.SilenceError, match="key=value"):
        silences.parse_matchers(["agent_id"])


@pytest.mark.parametrize(("rule", "matchers", "matches"), [
    ("failed-jobs", {}, True),
    ("failed-*", {"agent_id": "a1"}, True),
    ("failed-jobs", {"agent_id": "Support Triage"}, True),   # the name shown works too
    ("failed-jobs", {"team": "ops"}, True),                   # labels
    ("failed-jobs", {"agent_id": "a2"}, False),
    ("other-rule", {}, False),
])
def test_silence_matching(rule: str, matchers: dict[str, str], matches: bool) -> None:
    silence = silences.Silence(1, rule, matchers, T0, T0 + timedelta(hours=1), "c", None, T0, None)
    assert silence.matches(make_alert(labels={"team": "ops"})) is matches


def test_silence_validation(state: StateStore) -> None:
    with pytest.raises(silences.SilenceError, match="positive"):
        silences.add(state, "failed-jobs", timedelta(0), "x", T0)
    with pytest.raises(silences.SilenceError, match="comment"):
        silences.add(state, "failed-jobs", timedelta(hours=1), " ", T0)


def test_states_survive_in_the_database(state: StateStore) -> None:
    """process() writes what decide() said; a second store object reads it back."""
    from audit_watch.alerting.pipeline import process
    from audit_watch.alerting.views import alerts_table
    from audit_watch.config.model import Config

    config = Config.model_validate({"channels": {"oncall": {"type": "file", "path": "unused"}}})
    rule = make_rule(**{"for": "5m"})
    process([evaluation(rule, T0, make_alert("a1"), make_alert("a2", "Billing"))], config, state, T0)
    rows = alerts_table(state)
    assert {(r.group, r.state) for r in rows} == {("Support Triage", "pending"), ("Billing", "pending")}
    with state.read() as conn:
        assert len(conn.execute(alert_states.select()).all()) == 2
        assert conn.execute(outbox.select()).all() == []
        assert conn.execute(alert_threads.select()).all() == []
