"""Incident scale: cron_missed with 5,000 crons (all missing, all healthy) and new_value
(new login IP per user, 1 h against 30 days), each beside its hand-written SQL.

    nice .venv/bin/python benchmarks/bench_incident.py [--repeat 7]

The cron store (``--crons-url``, default aw_bench_crons) is generated here when absent:
5,000 hourly crons at every minute of the hour in four time zones that fired on time
(up to four minutes late) for three days and then all stopped at the same moment.
Evaluated three hours after the stop every cron is missing (three runs each);
evaluated five minutes before it every cron is healthy.

Hand SQL for cron_missed: the last ``cron.fired`` per cron over the lookback, one
aggregate, with the tightest lookback that answers the question: from the oldest
expected run the answer depends on (the latest run due, or for a stopped cron the
last run before it stopped) to now. Hand SQL for new_value: ``NOT EXISTS`` over the
window's logins. The new_value store is ``--url`` (default aw_bench10m, seeded with
``audit-watch seed --scale 30`` when absent).

Engine: the kind's ``find`` (every statement it runs, cron maths included); full:
``evaluate_rule`` (what ``test-rule`` computes: also names, links and the evidence
rows of the kept groups). Interleaved medians of ``--repeat`` runs, in one run of
this script, so that load on the machine weighs on both sides. Targets: cron_missed
at most 3x the hand query + 50 ms; new_value at most 1.2x, with the same answer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import load_average, replace_section, settle  # noqa: E402

from audit_watch.demo.seed import read_seed_end, seed_database  # noqa: E402
from audit_watch.rules.evaluate import evaluate_rule  # noqa: E402
from audit_watch.rules.kinds import KINDS, EvalContext  # noqa: E402
from audit_watch.rules.loader import RULE_ADAPTER  # noqa: E402
from audit_watch.store.schema import create_reference_tables  # noqa: E402
from audit_watch.store.source import AuditSource  # noqa: E402

from machine import machine  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432"
CRONS = 5_000
ZONES = ("UTC", "Asia/Kolkata", "America/New_York", "Europe/Berlin")
STOPPED = datetime(2026, 11, 20, 9, 0, 40, tzinfo=UTC)
HISTORY = timedelta(days=3)
GRACE = timedelta(minutes=15)
STORE_VERSION = 2   # fires written in time order
TITLE = "Incident scale: cron_missed and new_value against hand-written SQL"


def ensure_database(url: str) -> bool:
    """Create the database when absent; True when it was created."""
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    name = url.rsplit("/", 1)[1]
    try:
        with admin.connect() as conn:
            if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar():
                return False
            conn.execute(text(f'CREATE DATABASE "{name}"'))
            return True
    finally:
        admin.dispose()


def drop_database(url: str) -> None:
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    finally:
        admin.dispose()


# --- the cron store ------------------------------------------------------------------------


def cron_specs() -> list[tuple[str, str, str]]:
    return [(f"cron-{i:05d}", f"{(i * 7) % 60} * * * *", ZONES[i % len(ZONES)]) for i in range(CRONS)]


def build_cron_store(url: str) -> None:
    src = AuditSource.from_url(url, readonly=False)
    create_reference_tables(src.engine)  # with the reference indexes
    created = STOPPED - HISTORY - timedelta(days=1)
    raw = src.engine.raw_connection()
    try:
        cursor = raw.cursor()
        with cursor.copy("COPY agents (id, name, team_id, created_at) FROM STDIN") as copy:
            copy.write_row(("agent-1", "Scheduler", "team-1", created))
        with cursor.copy("COPY crons (id, agent_id, name, schedule, timezone, enabled, created_at) FROM STDIN") as copy:
            for cron_id, schedule, zone in cron_specs():
                copy.write_row((cron_id, "agent-1", f"job {cron_id}", schedule, zone, True, created))
        fires = []
        for n, (cron_id, schedule, zone) in enumerate(cron_specs()):
            for k, run in enumerate(CronSim(schedule, (STOPPED - HISTORY).astimezone(ZoneInfo(zone)))):
                at = run.astimezone(UTC) + timedelta(seconds=(n * 37 + k * 13) % 240)
                if at >= STOPPED:
                    break
                fires.append((at, f"fire-{cron_id}-{k}", cron_id))
        fires.sort()   # written as they happen, as an audit store is
        with cursor.copy("COPY events (id, event_type, severity, description, agent_id, metadata, created_at) "
                         "FROM STDIN") as copy:
            for at, event_id, cron_id in fires:
                copy.write_row((event_id, "cron.fired", "info", "cron fired", "agent-1",
                                json.dumps({"cron_id": cron_id}), at))
        cursor.execute("CREATE TABLE bench_cron_store (crons integer, stopped timestamptz, version integer)")
        cursor.execute("INSERT INTO bench_cron_store VALUES (%s, %s, %s)", (CRONS, STOPPED, STORE_VERSION))
        raw.commit()
        cursor.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
        src.engine.dispose()


def cron_store_ready(url: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(text("SELECT crons, stopped, version FROM bench_cron_store")).one()
            return tuple(found) == (CRONS, STOPPED, STORE_VERSION)
    except Exception:  # noqa: BLE001 - not built yet
        return False
    finally:
        engine.dispose()


def answer_since(now: datetime) -> datetime:
    """The oldest expected run the answer depends on: per cron the latest run due by
    ``now - grace``, or for a cron that had stopped by then its last run before the stop."""
    oldest = now
    for schedule, zone in {(s, z) for _, s, z in cron_specs()}:
        until = min(now - GRACE, STOPPED - timedelta(minutes=4))   # fires are up to 4 minutes late
        start = (until.replace(microsecond=0) + timedelta(seconds=1)).astimezone(ZoneInfo(zone))
        oldest = min(oldest, next(iter(CronSim(schedule, start, reverse=True))).astimezone(UTC))
    return oldest


HAND_LAST_FIRED = """
    SELECT metadata->>'cron_id' AS cron_id, max(created_at) AS last_fired
    FROM events
    WHERE event_type = 'cron.fired' AND created_at >= :since AND created_at <= :now
    GROUP BY metadata->>'cron_id'
"""

# --- new_value ------------------------------------------------------------------------------

NEW_VALUE_RULE = {"name": "new-login-ip-30d", "kind": "new_value", "source": "events",
                  "where": {"event_type": "auth.login"}, "group_by": ["user_id"], "field": "metadata.ip",
                  "lookback": "30d", "window": "1h", "max_groups": 10_000}

HAND_NEW_VALUE = """
    SELECT w.user_id, w.metadata->>'ip' AS ip, count(*) AS current, min(w.created_at) AS first_seen
    FROM events w
    WHERE w.event_type = 'auth.login' AND w.created_at > :ws AND w.created_at <= :now AND w.metadata ? 'ip'
      AND NOT EXISTS (
          SELECT 1 FROM events p
          WHERE p.event_type = 'auth.login' AND p.created_at > :ls AND p.created_at <= :ws
            AND p.user_id = w.user_id AND p.metadata->>'ip' = w.metadata->>'ip')
    GROUP BY w.user_id, w.metadata->>'ip'
"""


# --- measuring --------------------------------------------------------------------------------


def measure(src: AuditSource, rule: Any, now: datetime, hand: str, params: dict[str, Any],
            repeat: int) -> dict[str, Any]:
    kind = KINDS[rule.kind]
    timings: dict[str, list[float]] = {"engine": [], "hand": [], "full": []}

    def timed(name: str, work: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = work()
        timings[name].append((time.perf_counter() - started) * 1000)
        return result

    evaluation = evaluate_rule(rule, src, now)   # warm-up
    assert evaluation.error is None, evaluation.error
    for _ in range(repeat):
        with src.connect() as conn:
            found = timed("engine", lambda: kind.find(rule, EvalContext(src, conn, now)))
        with src.connect() as conn:
            hand_rows = timed("hand", lambda: conn.execute(text(hand), params).all())
        evaluation = timed("full", lambda: evaluate_rule(rule, src, now))
        assert evaluation.error is None, evaluation.error
    medians = {name: statistics.median(values) for name, values in timings.items()}
    return {**medians, "found": found, "hand_rows": hand_rows, "evaluation": evaluation}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=f"{SERVER}/aw_bench10m", help="the 10-million-job store (new_value)")
    parser.add_argument("--crons-url", default=f"{SERVER}/aw_bench_crons")
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--max-load", type=float, default=2.0, help="wait for the 1-minute load average to fall to this")
    parser.add_argument("--load-wait", type=float, default=900, help="seconds to wait for it at most")
    args = parser.parse_args()

    if not ensure_database(args.crons_url) and not cron_store_ready(args.crons_url):
        drop_database(args.crons_url)
        ensure_database(args.crons_url)
    if not cron_store_ready(args.crons_url):
        print(f"generating {CRONS:,} crons into {args.crons_url} ...", flush=True)
        build_cron_store(args.crons_url)
    if ensure_database(args.url) or read_seed_end(args.url) is None:
        print(f"seeding {args.url} at scale 30 ...", flush=True)
        seed_database(args.url, days=30, seed=42, scale=30, progress=True)

    settle(args.max_load, args.load_wait)
    load_before = load_average()
    rows: list[str] = []
    ok = True
    crons = AuditSource.from_url(args.crons_url)
    with crons.engine.connect() as conn:
        fires = conn.execute(text("SELECT count(*) FROM events WHERE event_type = 'cron.fired'")).scalar()
    for label, now, expected in (("all missing", STOPPED + timedelta(hours=3, minutes=10), CRONS),
                                 ("all healthy", STOPPED - timedelta(minutes=5), 0)):
        rule = RULE_ADAPTER.validate_python({"name": "crons", "kind": "cron_missed", "grace": "15m"})
        since = answer_since(now)
        result = measure(crons, rule, now, HAND_LAST_FIRED, {"since": since, "now": now}, args.repeat)
        engine, hand, full = result["engine"], result["hand"], result["full"]
        bound = 3 * hand + 50
        found = result["found"]
        agree = found.total == expected and len(result["hand_rows"]) == CRONS
        ok = ok and agree and engine <= bound and full <= bound
        rows.append(f"| cron_missed, {CRONS:,} crons {label} | {engine:.1f} | {full:.1f} | {hand:.1f} "
                    f"(lookback {(now - since) / timedelta(minutes=1):.0f} min) | {bound:.1f} | "
                    f"{'yes' if engine <= bound and full <= bound else 'NO'} | "
                    f"{found.total:,} firing, {len(found.findings):,} kept{'' if agree else ' (unexpected!)'} |")
        print(rows[-1], flush=True)
    crons.engine.dispose()

    big = AuditSource.from_url(args.url)
    now = read_seed_end(args.url)
    assert now is not None
    with big.engine.connect() as conn:
        jobs = conn.execute(text("SELECT count(*) FROM jobs")).scalar()
        events = conn.execute(text("SELECT count(*) FROM events")).scalar()
        version = conn.execute(text("SHOW server_version")).scalar()
    rule = RULE_ADAPTER.validate_python(NEW_VALUE_RULE)
    params = {"ws": now - rule.window, "ls": now - rule.window - rule.lookback, "now": now}
    # Milliseconds each: more runs for a stable median.
    result = measure(big, rule, now, HAND_NEW_VALUE, params, max(args.repeat, 41))
    engine_pairs = sorted((f.group["user_id"], f.group["metadata.ip"]) for f in result["found"].findings)
    hand_pairs = sorted((r.user_id, r.ip) for r in result["hand_rows"])
    same = engine_pairs == hand_pairs
    ratio = result["engine"] / result["hand"]
    ok = ok and same and ratio <= 1.2
    rows.append(f"| new_value, new login IP per user, 1 h against 30 days | {result['engine']:.1f} | "
                f"{result['full']:.1f} | {result['hand']:.1f} (`NOT EXISTS`) | {1.2 * result['hand']:.1f} (1.2x) | "
                f"{'yes' if ratio <= 1.2 else 'NO'} (ratio {ratio:.2f}) | {len(engine_pairs)} / {len(hand_pairs)} pairs, "
                f"{'same' if same else 'DIFFERENT'} |")
    print(rows[-1], flush=True)
    big.engine.dispose()

    body = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/bench_incident.py --repeat {args.repeat}`, "
        f"niced; load average (1 / 5 / 15 min) {load_before} at the start, {load_average()} at the end.",
        "",
        f"- Machine: {machine()}; PostgreSQL {version} on the same machine.",
        f"- cron_missed: a generated store of {CRONS:,} hourly crons (every minute of the hour, four time zones) "
        f"with {fires:,} `cron.fired` events over three days, all stopped at once; evaluated 3 h 10 min after the "
        "stop (every cron missing, three runs each) and 5 min before it (every cron healthy). Hand SQL: the last "
        "`cron.fired` per cron, one aggregate over the lookback from the oldest expected run the answer depends on.",
        f"- new_value: {jobs:,} jobs and {events:,} events (`seed --scale 30`), evaluated at the store's end "
        f"({now:%Y-%m-%d %H:%M} UTC). Hand SQL: the window's logins `NOT EXISTS` in the 30 days before.",
        "- engine: the kind's `find` (every statement, cron maths included); full: `evaluate_rule`, what "
        "`test-rule` computes (names, links, evidence of the kept groups too). Medians of interleaved runs.",
        "",
        "| case | engine ms | full ms | hand SQL ms | bound ms | within | answer |",
        "|---|---:|---:|---:|---:|---|---|",
        *rows,
    ]
    replace_section(Path(args.out), TITLE, body)
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
