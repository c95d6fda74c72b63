"""The daemon under load: 1,000 rules every minute over a large store.

    .venv/bin/python benchmarks/bench_daemon.py [--url URL] [--scale 30] [--rules 1000] [--minutes 5] [--mix bundled]

Runs ``audit-watch run`` as a subprocess on a fresh PostgreSQL state database, samples
its resident memory and CPU time from /proc, then reads the run ledger: for every
full tick, how long until the last rule of the tick was evaluated (the ticks keep
up when that stays well under the minute), the evaluations missed, the errors, and
evaluation times per rule kind. Writes benchmarks/DAEMON_RESULTS.md.

The store: ``--url``, or by default aw_daemon_bench, seeded here with ``--scale``
(30: about 10 million jobs, the size of bench_rules.py's audit_watch_bench) and
activity until six hours ahead, so that every window holds rows at wall-clock ticks;
it is seeded again (then vacuumed) when its scale differs or its activity ends within
the hour. Before each run the script waits up to ``--load-wait`` seconds for the
1-minute load average to fall to ``--max-load`` (other work on a small machine skews
the figures) and records the load average at the start and end of the run.
Rules: copies of the bundled rules, all at ``every: 1m`` (``--mix bundled``), or only
the ones with windows up to an hour (``--mix short``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rules import machine  # noqa: E402

from audit_watch.alerting.state import StateStore  # noqa: E402
from audit_watch.daemon import ledger  # noqa: E402
from audit_watch.demo.seed import read_seed_end, seed_database  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432"
BIG_STORE = f"{SERVER}/audit_watch_bench"
OWN_STORE = f"{SERVER}/aw_daemon_bench"
STATE = f"{SERVER}/aw_daemon_bench_state"
LONG_WINDOWS = {"token-budget", "token-overrun", "webhook-silent", "failed-job-spike", "cron-not-firing"}


def database_exists(url: str) -> bool:
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return bool(conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                     {"n": url.rsplit("/", 1)[1]}).scalar())
    finally:
        admin.dispose()


def recreate(url: str) -> None:
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    name = url.rsplit("/", 1)[1]
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()


def choose_store(url: str | None, scale: float) -> tuple[str, str]:
    """The store URL and how it came to be (for the report).

    The daemon evaluates at wall-clock time, so the store needs rows up to (and past)
    the benchmark's ticks: bench_rules.py's store ends at the hour it was seeded,
    which leaves every window shorter than the time since then empty.
    """
    if url:
        return url, "given with --url"
    if not (database_exists(OWN_STORE) and _seeded_ahead(OWN_STORE, scale)):
        recreate(OWN_STORE)
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=6)
        print(f"seeding {OWN_STORE} at scale {scale} ...", flush=True)
        print(seed_database(OWN_STORE, days=30, seed=42, scale=scale, end=end, progress=True), flush=True)
        vacuum = create_engine(OWN_STORE, isolation_level="AUTOCOMMIT")   # not autovacuum during a run
        try:
            with vacuum.connect() as conn:
                conn.execute(text("VACUUM (ANALYZE)"))
        finally:
            vacuum.dispose()
    big = " (audit_watch_bench is absent)" if not database_exists(BIG_STORE) else (
        " (audit_watch_bench ends at the hour it was seeded: its short windows are empty at wall-clock ticks)")
    return OWN_STORE, f"seeded by seed_database at scale {scale:g} with activity until 6 h ahead{big}"


def _seeded_ahead(url: str, scale: float) -> bool:
    """Seeded at ``scale`` with activity at least an hour past now."""
    end = read_seed_end(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            seeded = conn.execute(text("SELECT scale FROM audit_watch_seed ORDER BY end_at DESC LIMIT 1")).scalar()
    except Exception:  # noqa: BLE001 - not seeded
        return False
    finally:
        engine.dispose()
    return end is not None and float(seeded) == scale and end > datetime.now(UTC) + timedelta(hours=1)


def store_facts(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
            return {
                "jobs": conn.execute(text("SELECT count(*) FROM jobs")).scalar(),
                "events": conn.execute(text("SELECT count(*) FROM events")).scalar(),
                "threads": conn.execute(text("SELECT count(*) FROM threads")).scalar(),
                "newest": conn.execute(text("SELECT max(created_at) FROM jobs")).scalar(),
                "server": conn.execute(text("SHOW server_version")).scalar(),
            }
    finally:
        engine.dispose()


def write_rules(folder: Path, count: int, mix: str) -> dict[str, str]:
    """``count`` copies of the bundled rules at ``every: 1m``; returns {name: kind}."""
    bases = []
    for path in sorted((ROOT / "rules").glob("*.yaml")):
        rule = yaml.safe_load(path.read_text())
        if mix == "short" and rule["name"] in LONG_WINDOWS:
            continue
        rule.pop("schedule", None)
        bases.append({**rule, "every": "1m", "notify": ["archive"]})
    kinds: dict[str, str] = {}
    batch: list[dict[str, Any]] = []
    for index in range(count):
        base = bases[index % len(bases)]
        rule = {**base, "name": f"{base['name']}-{index:04d}"}
        kinds[rule["name"]] = rule["kind"]
        batch.append(rule)
        if len(batch) == 100 or index == count - 1:
            (folder / f"rules-{index // 100:02d}.yaml").write_text(yaml.safe_dump({"rules": batch}))
            batch = []
    return kinds


def sample(pid: int) -> tuple[int, float]:
    """(resident KiB, CPU seconds) of a process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, cpu


def settle(max_load: float, wait: float) -> tuple[float, float]:
    """Wait up to ``wait`` seconds for the 1-minute load average to fall to ``max_load``;
    returns (seconds waited, 1-minute load average then)."""
    started = time.monotonic()
    while os.getloadavg()[0] > max_load and time.monotonic() - started < wait:
        print(f"  load average {os.getloadavg()[0]:.2f} > {max_load:g}, waiting ...", flush=True)
        time.sleep(15)
    return time.monotonic() - started, os.getloadavg()[0]


def run(store: str, rules: int, minutes: float, mix: str, workers: int, env: dict[str, str]) -> dict[str, Any]:
    recreate(STATE)
    StateStore.open(STATE).close()
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
        folder = Path(tmp)
        (folder / "rules").mkdir()
        kinds = write_rules(folder / "rules", rules, mix)
        config = folder / "audit-watch.yaml"
        config.write_text(json.dumps({
            "source": {"url": store, "statement_timeout": "30s"}, "state": {"url": STATE}, "rules": ["rules/"],
            "channels": {"archive": {"type": "file", "path": str(folder / "out")}},
            "daemon": {"workers": workers, "reload_watch": False},
        }))
        listen = "127.0.0.1:19465"
        log = (folder / "daemon.log").open("wb")
        started = datetime.now(UTC)
        load_start = os.getloadavg()
        proc = subprocess.Popen([sys.executable, "-m", "audit_watch", "run", "--config", str(config), "--listen",
                                 listen], stdout=log, stderr=subprocess.STDOUT, cwd=folder, env={**os.environ, **env})
        samples: list[tuple[float, int, float]] = []
        try:
            deadline = time.monotonic() + minutes * 60
            while time.monotonic() < deadline and proc.poll() is None:
                rss, cpu = sample(proc.pid)
                samples.append((time.monotonic(), rss, cpu))
                time.sleep(1)
            try:
                with urllib.request.urlopen(f"http://{listen}/healthz", timeout=5) as response:
                    healthz = json.loads(response.read())
            except urllib.error.HTTPError as exc:   # 503: some rules are late
                healthz = json.loads(exc.read())
            metrics = urllib.request.urlopen(f"http://{listen}/metrics", timeout=5).read().decode()
        finally:
            stop_started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            stop_seconds = time.monotonic() - stop_started
        ended = datetime.now(UTC)
        load_end = os.getloadavg()
        log.close()
        errors_logged = [line for line in (folder / "daemon.log").read_text().splitlines() if " ERROR " in line]
    state = StateStore.open(STATE)
    try:
        rows = [r for r in ledger.history(state) if r.job in kinds]
    finally:
        state.close()
    return {"rules": rules, "mix": mix, "workers": workers, "env": env, "kinds": kinds, "rows": rows, "samples": samples,
            "started": started, "ended": ended, "exit": code, "stop_seconds": stop_seconds, "healthz": healthz,
            "errors_logged": errors_logged[:5], "load_start": load_start, "load_end": load_end,
            "ticks_metric": {line.split('"')[1]: float(line.split()[-1]) for line in metrics.splitlines()
                             if line.startswith("audit_watch_ticks_total{")}}


def analyse(result: dict[str, Any]) -> dict[str, Any]:
    rows, kinds = result["rows"], result["kinds"]
    first = result["started"].replace(second=0, microsecond=0) + timedelta(minutes=2)   # after the catch-up
    ticks = defaultdict(list)
    for row in rows:
        if first <= row.scheduled_for and row.scheduled_for + timedelta(seconds=60) <= result["ended"]:
            ticks[row.scheduled_for].append(row)
    per_tick = []
    for tick in sorted(ticks):
        items = ticks[tick]
        done = [r for r in items if r.finished_at]
        per_tick.append({
            "tick": tick, "evaluated": len(items), "missed": len(kinds) - len(items),
            "errors": sum(1 for r in items if r.status == "error"),
            "last_done_s": max((r.finished_at - tick).total_seconds() for r in done) if done else None,
            "busy_s": sum(r.seconds or 0 for r in items),
        })
    by_kind: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.seconds is not None:
            by_kind[kinds[row.job]].append(row.seconds)
    rss = [s[1] for s in result["samples"]]
    cpu = result["samples"][-1][2] - result["samples"][0][2] if len(result["samples"]) > 1 else 0.0
    span = result["samples"][-1][0] - result["samples"][0][0] if len(result["samples"]) > 1 else 1.0
    return {"per_tick": per_tick, "by_kind": by_kind, "rss_max_mb": max(rss) / 1024, "rss_end_mb": rss[-1] / 1024,
            "cpu_share": cpu / span, "statuses": Counter(r.status for r in rows)}


def report(store: str, origin: str, facts: dict[str, Any], results: list[tuple[dict[str, Any], dict[str, Any]]],
           out: Path) -> None:
    lines = [
        "# Daemon benchmark: many rules every minute", "",
        f"Machine: {machine()}; PostgreSQL {facts['server']} on the same machine.", "",
        f"Store: `{store.rsplit('/', 1)[1]}` ({origin}): {facts['jobs']:,} jobs, {facts['events']:,} events, "
        f"{facts['threads']:,} threads; newest job {facts['newest']:%Y-%m-%d %H:%M} UTC (activity runs past the "
        "benchmark, so every window holds rows).", "",
        "Each run: `audit-watch run` as a subprocess on a fresh PostgreSQL state, rules copied from the bundled "
        "ones with `every: 1m`; the figures come from the run ledger (what the daemon recorded) and /proc. "
        "'Last done' is the time from a tick to the end of its last evaluation: the ticks keep up while it "
        "stays under 60 s. The first two minutes (start-up catch-up) are left out.", "",
        "Load average: the machine's 1-, 5- and 15-minute load averages (2 cores) when the daemon started and "
        "when it was stopped; during a run they include the daemon's and PostgreSQL's own work.", "",
        "| rules | mix | workers | environment | ticks | evaluations | missed | errors | last done, median / max | "
        "evaluation time per tick (sum) | daemon CPU | RSS max / end | SIGTERM to exit | load average at start; "
        "at end |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result, stats in results:
        ticks = stats["per_tick"]
        done = [t["last_done_s"] for t in ticks if t["last_done_s"] is not None]
        busy = [t["busy_s"] for t in ticks]
        lines.append(
            f"| {result['rules']} | {result['mix']} | {result['workers']} | "
            f"{' '.join(f'{k}={v}' for k, v in result['env'].items()) or '-'} | {len(ticks)} | "
            f"{sum(t['evaluated'] for t in ticks)} | {sum(t['missed'] for t in ticks)} | "
            f"{sum(t['errors'] for t in ticks)} | "
            + (f"{statistics.median(done):.1f} s / {max(done):.1f} s | " if done else "n/a | ")
            + (f"{statistics.median(busy):.0f} s | " if busy else "n/a | ")
            + f"{stats['cpu_share'] * 100:.0f}% of a core | "
            f"{stats['rss_max_mb']:.0f} / {stats['rss_end_mb']:.0f} MB | {result['stop_seconds']:.1f} s "
            f"(exit {result['exit']}) | {' / '.join(f'{v:.2f}' for v in result['load_start'])}; "
            f"{' / '.join(f'{v:.2f}' for v in result['load_end'])} |")
    lines += ["", "Scheduled runs by outcome (`audit_watch_ticks_total` at the end of each run; `late`: started "
              "after a newer tick was due, so evaluated that one; `busy`: skipped, the rule's previous run was still "
              "going; `elsewhere`: another replica had the tick):", ""]
    for result, _ in results:
        counts = ", ".join(f"{k} {v:.0f}" for k, v in sorted(result["ticks_metric"].items()))
        lines.append(f"- {result['rules']} rules ({result['mix']}): {counts}; /healthz at the end: "
                     f"{result['healthz']['status']} ({result['healthz']['late_count']} rules late)")
    lines += ["", "Evaluation time by rule kind (all evaluations of the largest run):", "",
              "| kind | evaluations | median | p95 |", "|---|---|---|---|"]
    by_kind = results[-1][1]["by_kind"]
    for kind, values in sorted(by_kind.items(), key=lambda kv: -statistics.median(kv[1])):
        values = sorted(values)
        lines.append(f"| {kind} | {len(values)} | {statistics.median(values) * 1000:.0f} ms | "
                     f"{values[int(len(values) * 0.95) - 1] * 1000:.0f} ms |")
    for result, stats in results:
        lines += ["", f"Per tick, {result['rules']} rules ({result['mix']}):", "",
                  "| tick | evaluated | missed | errors | last done |", "|---|---|---|---|---|"]
        for t in stats["per_tick"]:
            lines.append(f"| {t['tick']:%H:%M} | {t['evaluated']} | {t['missed']} | {t['errors']} | "
                         + (f"{t['last_done_s']:.1f} s |" if t["last_done_s"] is not None else "- |"))
        if result["errors_logged"]:
            lines += ["", "First errors logged:", "", *[f"    {e[:200]}" for e in result["errors_logged"]]]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="the audit store (default: see above)")
    parser.add_argument("--scale", type=float, default=30.0, help="seed scale of our own store (1 = 333k jobs; 30 = 10M)")
    parser.add_argument("--rules", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--minutes", type=float, default=7.0, help="per run (runs under 100 rules: 3)")
    parser.add_argument("--mix", choices=["bundled", "short"], default="short")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="for the daemon, e.g. MALLOC_ARENA_MAX=2 (repeatable)")
    parser.add_argument("--max-load", type=float, default=2.5,
                        help="before each run, wait for the 1-minute load average to fall to this")
    parser.add_argument("--load-wait", type=float, default=180.0, help="... for at most this many seconds")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "DAEMON_RESULTS.md"))
    args = parser.parse_args()
    store, origin = choose_store(args.url, args.scale)
    facts = store_facts(store)
    results = []
    for count in args.rules:
        waited, load = settle(args.max_load, args.load_wait)
        print(f"running {count} rules ({args.mix}); load average {load:.2f} after waiting {waited:.0f} s ...",
              flush=True)
        env = dict(item.split("=", 1) for item in args.env)
        result = run(store, count, args.minutes if count >= 100 else min(args.minutes, 3.0), args.mix, args.workers, env)
        results.append((result, analyse(result)))
    report(store, origin, facts, results, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
