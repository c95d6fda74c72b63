"""Engine vs hand-written SQL, each bundled rule, on ~10 million jobs in PostgreSQL.

    .venv/bin/python benchmarks/bench_rules.py [--url URL] [--scale 30] [--repeat 5]

Seeds the database when it does not hold data of that scale yet, then, for every
bundled rule, times one full engine evaluation (the aggregate query, the row
samples and the name lookups: what the daemon does per tick) and the equivalent
query an expert would write by hand (`hand_sql.py`), interleaved so that both see
the same cache, and writes the medians and their ratio to RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_watch.demo.seed import read_seed_end, seed_database  # noqa: E402
from audit_watch.rules.evaluate import evaluate_rule  # noqa: E402
from audit_watch.rules.kinds import KINDS, EvalContext  # noqa: E402
from audit_watch.rules.loader import load_rules  # noqa: E402
from audit_watch.store.source import AuditSource  # noqa: E402

from hand_sql import HAND_SQL, load_crons  # noqa: E402
from machine import machine  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/audit_watch_bench"


def ensure_database(url: str) -> None:
    admin = create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    name = url.rsplit("/", 1)[1]
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


def seeded_scale(url: str) -> float | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return float(conn.execute(text("SELECT scale FROM audit_watch_seed ORDER BY end_at DESC LIMIT 1")).scalar())
    except Exception:  # noqa: BLE001 - no table yet
        return None
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("AUDIT_WATCH_BENCH_URL", DEFAULT_URL))
    parser.add_argument("--scale", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args()

    ensure_database(args.url)
    if seeded_scale(args.url) != args.scale:
        print(f"seeding scale {args.scale} into {args.url} ...", flush=True)
        started = time.perf_counter()
        engine = create_engine(args.url)
        with engine.begin() as conn:
            for table in ("events", "threads", "jobs", "crons", "agents", "memberships", "users", "teams", "audit_watch_seed"):
                conn.execute(text(f"DROP TABLE IF EXISTS {table} CASCADE"))
        engine.dispose()
        summary = seed_database(args.url, days=30, seed=42, scale=args.scale, progress=True)
        seed_seconds = time.perf_counter() - started
        print(f"{summary} in {seed_seconds:.0f}s", flush=True)
    now = read_seed_end(args.url)
    assert now is not None

    src = AuditSource.from_url(args.url)
    with src.engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
        jobs = conn.execute(text("SELECT count(*) FROM jobs")).scalar()
        version = conn.execute(text("SHOW server_version")).scalar()
        load_crons(conn)
    rule_set = load_rules([ROOT / "rules"])
    rows = []
    for loaded in rule_set.rules:
        rule = loaded.rule
        hand = HAND_SQL.get(rule.name)
        if hand is None:
            print(f"{rule.name}: no hand-written SQL, skipped", flush=True)
            continue
        kind = KINDS[rule.kind]
        query_ms, sql_ms, full_ms = [], [], []
        evaluation = evaluate_rule(rule, src, now)  # warm-up, and the result we compare
        sql, params = hand(rule, now)
        with src.connect() as conn:
            hand_rows = conn.execute(text(sql), params).all()
        for _ in range(args.repeat):
            # The engine's aggregate query and the hand-written one, on equal terms:
            # the same read-only transaction around each.
            with src.connect() as conn:
                started = time.perf_counter()
                found = kind.find(rule, EvalContext(src, conn, now))
                query_ms.append((time.perf_counter() - started) * 1000)
            with src.connect() as conn:
                started = time.perf_counter()
                sql, params = hand(rule, now)
                conn.execute(text(sql), params).all()
                sql_ms.append((time.perf_counter() - started) * 1000)
            # What a tick costs: connection, aggregate, row samples, names, links.
            started = time.perf_counter()
            evaluation = evaluate_rule(rule, src, now)
            full_ms.append((time.perf_counter() - started) * 1000)
        assert evaluation.error is None, evaluation.error
        q, s_, f = statistics.median(query_ms), statistics.median(sql_ms), statistics.median(full_ms)
        n_hand = _hand_count(rule, hand_rows)
        agree = len(evaluation.alerts) == n_hand == len(found.findings)
        rows.append((rule.name, rule.kind, q, s_, q / s_ if s_ else float("inf"), f, len(evaluation.alerts), n_hand, agree))
        print(f"{rule.name:24} query {q:9.1f} ms  hand {s_:9.1f} ms  ratio {q / s_:5.2f}  "
              f"full {f:9.1f} ms  alerts {len(evaluation.alerts)}/{n_hand}", flush=True)
    src.engine.dispose()
    write_results(Path(args.out), rows, jobs, version, now, args)
    return 0 if all(r[4] <= 1.2 and r[8] for r in rows) else 1


def _hand_count(rule: object, hand_rows: list) -> int:
    """Alerts the hand-written result amounts to (cron: a missed latest run per cron)."""
    if getattr(rule, "kind", "") != "cron_missed":
        return len(hand_rows)
    latest: dict[str, tuple] = {}
    for cron_id, expected_at, fired in hand_rows:
        if cron_id not in latest or expected_at > latest[cron_id][0]:
            latest[cron_id] = (expected_at, fired)
    return sum(1 for _, fired in latest.values() if fired == 0)


def write_results(path: Path, rows: list[tuple], jobs: int, version: str, now: datetime, args: argparse.Namespace) -> None:
    lines = [
        "# Benchmark: rule engine vs hand-written SQL",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/bench_rules.py --scale {args.scale:g} --repeat {args.repeat}`.",
        "",
        f"- Machine: {machine()}",
        f"- PostgreSQL {version}, {jobs:,} jobs (30 days, `seed --scale {args.scale:g}`), evaluated at {now:%Y-%m-%d %H:%M} UTC",
        "- Engine query: the rule kind's generated aggregate statement(s) (`find`); hand SQL: the equivalent",
        "  query written by hand (`benchmarks/hand_sql.py`); both inside the same read-only transaction, medians",
        "  of interleaved runs. Target: every ratio at most 1.2.",
        "- Full evaluation: what one tick of the rule costs end to end (connection, aggregate, the sample of up",
        "  to 20 row ids per firing group, name lookups, links). It does more than the hand query by design.",
        "",
        "| rule | kind | engine query ms | hand SQL ms | ratio | full evaluation ms | alerts (engine / hand) |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, kind, q, s, ratio, full, n_engine, n_sql, agree in rows:
        mark = "" if agree else " (differ!)"
        lines.append(f"| {name} | {kind} | {q:.1f} | {s:.1f} | {ratio:.2f} | {full:.1f} | {n_engine} / {n_sql}{mark} |")
    # Sections other benchmarks keep in the same file (from its first "## " heading on) stay.
    kept = path.read_text().split("\n## ", 1) if path.exists() else []
    tail = "\n## " + kept[1] if len(kept) == 2 else ""
    path.write_text("\n".join(lines) + "\n" + tail)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
