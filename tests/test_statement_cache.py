"""Statements built once per rule and reused at every evaluation (rule_kinds.base,
source.Moment, source.StatementCache).

A rule's statement binds its instants (``now - offset``) at execution, so the
statement cached at the first evaluation must give, at any later ``now``, what a
statement built fresh for that ``now`` gives: no value of an earlier evaluation
may stick.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from audit_watch.rules.alert import Alert
from audit_watch.rules.evaluate import evaluate_rule
from audit_watch.rules.kinds import KINDS, EvalContext
from audit_watch.rules.loader import RULE_ADAPTER
from audit_watch.rules.model import RuleBase
from audit_watch.store.source import AuditSource, Moment, StatementCache

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

# Before, between and after the rows below: each rule's answer changes across them.
NOWS = [NOW, NOW - timedelta(minutes=45), NOW - timedelta(hours=3), NOW - timedelta(days=1),
        NOW + timedelta(hours=2), NOW]


def fired(at: str, cron_id: str = "c1") -> dict[str, Any]:
    return {"at": at, "event_type": "cron.fired", "metadata": {"cron_id": cron_id}}


ROWS: dict[str, list[dict[str, Any]]] = {
    "jobs": [
        {"at": "-5m", "status": "failed", "agent_id": "a1", "input_tokens": 300, "count": 3},
        {"at": "-40m", "status": "failed", "agent_id": "a1", "input_tokens": 50, "count": 2},
        {"at": "-90m", "status": "failed", "agent_id": "a1", "input_tokens": 20},
        {"at": "-3h", "status": "failed", "agent_id": "a1", "input_tokens": 10, "count": 2},
        {"at": "-1d", "status": "failed", "agent_id": "a1", "input_tokens": 40, "count": 4},
        {"at": "-10m", "agent_id": "a2", "input_tokens": 5, "count": 5},
        {"at": "-70m", "agent_id": "a2", "input_tokens": 500, "count": 5},
        {"at": "-2h", "agent_id": "a2", "input_tokens": 7},
        {"at": "-25h", "agent_id": "a3", "input_tokens": 1},
        {"at": "-2h", "agent_id": "a3", "input_tokens": 1},
    ],
    "events": [
        {"at": "-3d", "user_id": "u1", "metadata": {"ip": "1.1.1.1"}},
        {"at": "-2h", "user_id": "u1", "metadata": {"ip": "1.1.1.1"}},
        {"at": "-20m", "user_id": "u1", "metadata": {"ip": "2.2.2.2"}},
        {"at": "-50m", "user_id": "u2", "metadata": {"ip": "3.3.3.3"}},
        {"at": "-1d", "user_id": "u2", "metadata": {"ip": "4.4.4.4"}},
        {"at": "-5m", "event_type": "provider.error", "metadata": {"provider": "openai", "status": 429}, "count": 3},
        {"at": "-1h", "event_type": "provider.error", "metadata": {"provider": "openai", "status": 429}, "count": 2},
        {"at": "-3h", "event_type": "provider.error", "metadata": {"provider": "anthropic", "status": 429}},
        {"at": "-2h", "event_type": "provider.error", "metadata": {"provider": "anthropic", "status": 500}},
        fired("2026-11-18T09:01:00Z"),
        fired("2026-11-19T09:01:00Z"),
        fired("2026-11-20T11:30:00Z"),  # long after today's 09:00 run's grace: still a miss
    ],
    "crons": [{"id": "c1", "name": "Nightly digest", "schedule": "0 9 * * *", "created_at": "-30d"}],
    "agents": [{"id": "a1", "name": "Support Triage"}, {"id": "a2", "name": "Digest"}],
    "users": [{"id": "u1", "name": "Ana"}, {"id": "u2", "name": "Ben"}],
}

RULES: dict[str, dict[str, Any]] = {
    "threshold": {"kind": "threshold", "where": {"status": "failed"}, "group_by": ["agent_id"], "window": "1h",
                  "threshold": {"op": ">=", "value": 1}},
    "threshold-json": {"kind": "threshold", "source": "events",
                       "where": {"event_type": "provider.error", "metadata.status": 429},
                       "group_by": ["metadata.provider"], "window": "30m", "threshold": {"op": ">=", "value": 1}},
    "ratio": {"kind": "ratio", "where": {"status": "failed"}, "group_by": ["agent_id"], "window": "1h",
              "ratio": {"op": ">", "value": 0}},
    "spike": {"kind": "spike", "where": {"status": "failed"}, "group_by": ["agent_id"], "window": "1h",
              "reference": "3h", "factor": 1.5, "min_current": 1, "direction": "both"},
    "metric-threshold": {"kind": "metric", "field": "input_tokens", "aggregate": "sum", "group_by": ["agent_id"],
                         "window": "1h", "threshold": {"op": ">=", "value": 1}},
    "metric-baseline": {"kind": "metric", "field": "input_tokens", "aggregate": "sum", "group_by": ["agent_id"],
                        "window": "1h", "baseline": {"periods": 3, "factor": 0.5}, "min_value": 1},
    "absence": {"kind": "absence", "group_by": ["agent_id"], "window": "1h", "lookback": "1d"},
    "new-value": {"kind": "new_value", "source": "events", "where": {"event_type": "auth.login"},
                  "field": "metadata.ip", "group_by": ["user_id"], "window": "1h", "lookback": "1d"},
    "any": {"kind": "any", "where": {"status": "failed"}, "group_by": ["agent_id"], "window": "1h"},
    "cron-missed": {"kind": "cron_missed", "grace": "15m"},
}


def rule_of(spec: dict[str, Any]) -> RuleBase:
    return RULE_ADAPTER.validate_python({"name": "rule-under-test", **spec})


def alerts_at(rule: RuleBase, store: AuditSource, now: datetime) -> list[Alert]:
    evaluation = evaluate_rule(rule, store, now)
    assert evaluation.error is None, f"{store.dialect}: {evaluation.error}"
    return evaluation.alerts


@pytest.mark.parametrize("name", sorted(RULES))
def test_cached_statement_gives_what_a_fresh_build_gives_at_every_now(
    name: str, store: AuditSource, insert: Callable[..., Any]
) -> None:
    insert(ROWS)
    rule = rule_of(RULES[name])
    cached = [alerts_at(rule, store, now) for now in NOWS]  # built at the first, reused after
    # A copy is another object: its statements are built anew, for this now only.
    fresh = [alerts_at(rule.model_copy(), store, now) for now in NOWS]
    for now, from_cache, from_fresh in zip(NOWS, cached, fresh):
        assert from_cache == from_fresh, f"{store.dialect} at {now.isoformat()}"
    # The data makes every rule's answer change with now (else a stale value would pass).
    assert len({repr(alerts) for alerts in cached}) > 1


def test_statement_is_built_once_and_reused(
    store: AuditSource, insert: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    insert(ROWS)
    kind = KINDS["threshold"]
    builds: list[datetime] = []
    build = kind.statement  # type: ignore[attr-defined]

    def counting_build(*args: Any) -> Any:
        builds.append(NOW)
        return build(*args)

    monkeypatch.setattr(kind, "statement", counting_build)
    rule = rule_of(RULES["threshold"])
    for now in NOWS:
        alerts_at(rule, store, now)
    assert len(builds) == 1
    alerts_at(rule.model_copy(), store, NOW)  # another rule object: its own statement
    assert len(builds) == 2


def test_rule_evaluated_at_two_times_gives_the_right_answer_at_each(
    store: AuditSource, insert: Callable[..., Any]
) -> None:
    insert(ROWS)
    threshold = rule_of(RULES["threshold"])
    counts = {now: [(a.group["agent_id"], a.value) for a in alerts_at(threshold, store, now)]
              for now in (NOW, NOW - timedelta(minutes=45), NOW, NOW + timedelta(hours=2))}
    assert counts[NOW] == [("a1", 5)]
    assert counts[NOW - timedelta(minutes=45)] == [("a1", 1)]   # -90m lies in (-105m, -45m]
    assert counts[NOW + timedelta(hours=2)] == []

    new_value = rule_of(RULES["new-value"])
    assert sorted((a.group["user_id"], a.group["metadata.ip"]) for a in alerts_at(new_value, store, NOW)) == [
        ("u1", "2.2.2.2"), ("u2", "3.3.3.3")]
    # 20 minutes earlier 2.2.2.2 had not been seen yet; 3.3.3.3 was new then too
    assert [a.group for a in alerts_at(new_value, store, NOW - timedelta(minutes=21))] == [
        {"user_id": "u2", "metadata.ip": "3.3.3.3"}]
    # a day later both are in the lookback, neither in the window
    assert alerts_at(new_value, store, NOW + timedelta(days=1)) == []

    cron = rule_of(RULES["cron-missed"])
    assert [(a.value, a.details["last_fired"]) for a in alerts_at(cron, store, NOW)] == [
        (1, "2026-11-20T11:30:00+00:00")]
    assert alerts_at(cron, store, NOW - timedelta(hours=3)) == []   # 09:00 today is still within grace
    before_the_late_fire = alerts_at(cron, store, NOW - timedelta(minutes=45))
    assert [(a.value, a.details["last_fired"]) for a in before_the_late_fire] == [(1, "2026-11-19T09:01:00+00:00")]
    late = alerts_at(cron, store, NOW + timedelta(days=1))
    assert [(a.value, a.details["last_fired"]) for a in late] == [(2, "2026-11-20T11:30:00+00:00")]


def test_cached_statement_binds_times_as_parameters(store: AuditSource) -> None:
    rule = rule_of(RULES["spike"])
    with store.connect() as conn:
        ctx = EvalContext(store, conn, NOW)
        prepared = ctx.prepared(rule, ("spike", "find"), lambda moments: KINDS["spike"].statement(  # type: ignore[attr-defined]
            rule, store, moments))
        compiled = prepared.built.compile(dialect=store.engine.dialect)
    assert {m.offset for m in prepared.moments} == {timedelta(0), timedelta(hours=1), timedelta(hours=4)}
    assert "2026" not in str(compiled)
    for moment in prepared.moments:
        assert moment.key in compiled.binds and compiled.binds[moment.key].value is None
    values = store.moment_values(prepared.moments, NOW)
    exact = values[Moment(timedelta(hours=4)).key]
    if store.dialect == "sqlite":
        assert exact == "2026-11-20 08:00:00.000"
        assert values[Moment(timedelta(hours=4)).coarse_low_key] == "2026-11-19"
        assert values[Moment(timedelta(0)).coarse_high_key] == "2026-11-22"
    else:
        assert exact == datetime(2026, 11, 20, 8, tzinfo=UTC)


def test_between_with_moments_matches_between_with_datetimes(store: AuditSource, insert: Callable[..., Any]) -> None:
    insert(ROWS)
    from sqlalchemy import func, select

    jobs = store.table("jobs")
    start, end = Moment(timedelta(hours=3)), Moment(timedelta(minutes=5))
    with store.connect() as conn:
        for now in NOWS:
            by_moment = conn.execute(
                select(func.count()).where(store.between(jobs.c.created_at, start, end)),
                store.moment_values([start, end], now),
            ).scalar()
            by_datetime = conn.execute(
                select(func.count()).where(store.between(jobs.c.created_at, now - start.offset, now - end.offset))
            ).scalar()
            assert by_moment == by_datetime, now


class Owner:
    """Stands for a rule: any object, compared by identity."""


def test_statement_cache_keys_by_identity_and_survives_id_reuse() -> None:
    cache = StatementCache()
    first = Owner()
    assert cache.get_or_build(first, "v", lambda: "built for first") == "built for first"
    assert cache.get_or_build(first, "v", lambda: "rebuilt") == "built for first"
    assert cache.get_or_build(first, "w", lambda: "other variant") == "other variant"
    first_id = id(first)
    del first
    gc.collect()
    # CPython reuses the freed id at once, for an object of the same size, most of the time.
    for _ in range(100):
        second = Owner()
        if id(second) == first_id:
            break
    assert cache.get_or_build(second, "v", lambda: "built for second") == "built for second"


def test_statement_cache_is_bounded() -> None:
    cache = StatementCache(capacity=3)
    owners = [Owner() for _ in range(5)]
    for index, owner in enumerate(owners):
        cache.get_or_build(owner, "v", lambda index=index: index)
    assert len(cache) == 3
    assert cache.get_or_build(owners[0], "v", lambda: "rebuilt") == "rebuilt"   # evicted first
    assert cache.get_or_build(owners[4], "v", lambda: "rebuilt") == 4


def test_statement_cache_drops_the_entries_of_a_collected_owner() -> None:
    cache = StatementCache()
    kept, dropped = Owner(), Owner()
    cache.get_or_build(kept, "v", lambda: 1)
    cache.get_or_build(dropped, "v", lambda: 2)
    cache.get_or_build(dropped, "w", lambda: 3)
    del dropped
    gc.collect()
    assert len(cache) == 1
    assert cache.get_or_build(kept, "v", lambda: "rebuilt") == 1
