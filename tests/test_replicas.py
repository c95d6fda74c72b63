"""Three ``audit-watch run`` replicas on one PostgreSQL state, 20 rules at 1 s, in real time.

Every (rule, tick) must be claimed by exactly one replica and every notification
delivered exactly once, while one replica is killed with SIGKILL halfway.
"""

from __future__ import annotations

import math
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, select, text
from test_daemon import Deployment, live, postgres_pair, replica_id, stop, wait_for

from audit_watch.alerting.state import StateStore, alert_states, outbox
from audit_watch.daemon import ledger

RULES = 20
S = timedelta(seconds=1)


def agent_rule(index: int) -> dict[str, object]:
    return {"name": f"agent-{index:02d}-failing", "kind": "threshold", "source": "jobs",
            "where": {"status": "failed", "agent_id": f"agent-{index:02d}"}, "window": "3s", "every": "1s",
            "threshold": {"op": ">=", "value": 1}, "notify": ["oncall"]}


def kill_mid_tick(live: Deployment, victim: object) -> datetime:
    """SIGKILL ``victim`` while its runs of one tick are claimed but not finished: a
    lock on ``jobs`` held across that tick boundary makes every replica's evaluations
    wait; the victim dies waiting. Returns the tick."""
    boundary = math.ceil(time.time()) + 1
    time.sleep(boundary - 0.2 - time.time())
    engine = create_engine(live.source_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"))
            time.sleep(0.55)                                 # the tick's runs claim and block
            victim.send_signal(signal.SIGKILL)               # type: ignore[attr-defined]
            victim.wait()                                    # type: ignore[attr-defined]
            conn.rollback()                                  # the survivors carry on
    finally:
        engine.dispose()
    return datetime.fromtimestamp(boundary, UTC)


def burst(live: Deployment, agents: range) -> None:
    """One failed job per agent: each rule fires, and resolves 3 s later."""
    live.insert({"jobs": [{"status": "failed", "agent_id": f"agent-{i:02d}"} for i in agents]})


@pytest.mark.postgres
def test_three_replicas_share_the_ticks_and_lose_or_repeat_nothing_when_one_is_killed(live: Deployment) -> None:
    config = live.config({f"agent-{i:02d}": agent_rule(i) for i in range(RULES)})
    replicas = [live.start(config, f"replica-{n}") for n in range(3)]
    started = datetime.now(UTC)
    # About 60 s of three replicas, then two for the second half: each rule fires and
    # resolves 2 or 3 times.
    time.sleep(3)
    burst(live, range(0, 10))
    time.sleep(6)
    burst(live, range(10, 20))
    time.sleep(19)
    victim, _, victim_log = replicas[0]
    tick = kill_mid_tick(live, victim)           # halfway
    killed_at = datetime.now(UTC)
    burst(live, range(0, 20))
    time.sleep(6)
    burst(live, range(0, 20, 2))
    time.sleep(24)

    state = StateStore.open(live.state_url)
    try:
        def settled() -> bool:
            with state.read() as conn:
                open_rows = conn.execute(select(outbox.c.id).where(outbox.c.status != "delivered")).all()
                firing = conn.execute(select(alert_states.c.fingerprint).where(alert_states.c.state != "resolved")).all()
            return not open_rows and not firing

        wait_for(settled, 20, "every alert resolved and every notification delivered")
        ended = datetime.now(UTC)
        for proc, _, _ in replicas[1:]:
            assert stop(proc)[0] == 0
        rows = [r for r in ledger.history(state) if r.job.startswith("agent-")]
        with state.read() as conn:
            sent = conn.execute(select(outbox.c.rule, outbox.c.kind, outbox.c.status)).all()
    finally:
        state.close()

    # Every (rule, tick) from the first full second to the end: claimed exactly once
    # (the primary key forbids a second claim), with no tick left out.
    first = (started + 2 * S).replace(microsecond=0)
    last = (ended - 2 * S).replace(microsecond=0)
    by_rule: dict[str, list[datetime]] = {}
    for row in rows:
        by_rule.setdefault(row.job, []).append(row.scheduled_for)
    assert len(by_rule) == RULES
    expected = int((last - first) / S) + 1
    for name, ticks in by_rule.items():
        window = [t for t in ticks if first <= t <= last]
        assert len(window) == len(set(window)) == expected, (name, expected, len(window))
    statuses = Counter(r.status for r in rows)
    assert set(statuses) <= {"ok", "abandoned"}, statuses
    victim_id = replica_id(victim_log)
    # What the killed replica had in hand (its claims of the blocked tick) was settled
    # by a survivor: abandoned, since the next tick had already covered each rule.
    abandoned = [r for r in rows if r.status == "abandoned"]
    assert 1 <= len(abandoned) <= RULES and all(r.scheduled_for == tick for r in abandoned), abandoned
    assert all(r.replica != victim_id and victim_id in r.error and r.attempt == 2 for r in abandoned)
    assert all(r.finished_at is not None for r in rows)
    claimed_by = Counter(r.replica for r in rows if r.scheduled_for < killed_at - 2 * S)
    assert len(claimed_by) == 3 and min(claimed_by.values()) > len(rows) / 20, claimed_by   # the work is shared
    assert not any(r.scheduled_for > killed_at + 2 * S and r.replica == victim_id for r in rows)

    # Each rule fired and resolved in 2 or 3 episodes; each notification went out once.
    assert all(status == "delivered" for _, _, status in sent)
    kinds = Counter((rule, kind) for rule, kind, _ in sent)
    for i in range(RULES):
        name = f"agent-{i:02d}-failing"
        assert kinds[(name, "firing")] == kinds[(name, "resolved")] == (3 if i % 2 == 0 else 2), (name, kinds)
    posts = live.slack.calls("chat.postMessage")
    assert len(posts) == len(sent), (len(posts), len(sent))          # no duplicates at Slack
    for i in range(RULES):                                          # and each rule's own count
        name = f"agent-{i:02d}-failing"
        assert sum(1 for p in posts if f" {name}" in p["text"]) == kinds[(name, "firing")] + kinds[(name, "resolved")]
    assert len(live.slack.calls("chat.update")) == sum(v for (_, k), v in kinds.items() if k == "resolved")
