"""Peak memory with 50,000 firing groups: ``run --once`` and daemon ticks.

    nice .venv/bin/python benchmarks/bench_groups_memory.py [--groups 50000] [--before PATH]

The store (``--url``, default aw_bench_groups, built here when absent or a day old):
50,000 failed jobs in the ten minutes before it was built. The rule
``group_by: [id]``, ``threshold: >= 1``, ``window: 1d`` makes every job a firing group.
Measured, each in a fresh state database with a file channel:

- ``run --once`` with the default ``max_groups`` (1,000) and with the ceiling (10,000):
  peak RSS (``/usr/bin/time``), wall time, notifications, state database size;
- the daemon (``audit-watch run``) with the rule ``every: 10s``: peak RSS (VmHWM)
  after three ticks;
- ``--before``: ``run --once`` of another checkout's ``audit-watch`` (e.g. the code
  before ``max_groups``) on the same store, for comparison.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import load_average, replace_section, settle  # noqa: E402

from audit_watch.store.schema import create_reference_tables  # noqa: E402
from audit_watch.store.source import AuditSource  # noqa: E402

from machine import machine  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432"
TITLE = "Incident scale: memory with 50,000 firing groups"
AUDIT_WATCH = str(Path(sys.executable).with_name("audit-watch"))


def build_store(url: str, groups: int) -> datetime:
    """The store's build time (its newest job); rebuilt when absent, of another size or a day old."""
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    name = url.rsplit("/", 1)[1]
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
        if exists:
            engine = create_engine(url)
            try:
                with engine.connect() as store:
                    count, newest = store.execute(text("SELECT count(*), max(created_at) FROM jobs")).one()
                if count == groups and newest > datetime.now(UTC) - timedelta(hours=20):
                    return newest
            except Exception:  # noqa: BLE001 - half built: start again
                pass
            finally:
                engine.dispose()
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    built = datetime.now(UTC).replace(microsecond=0)
    src = AuditSource.from_url(url, readonly=False)
    create_reference_tables(src.engine)
    raw = src.engine.raw_connection()
    try:
        cursor = raw.cursor()
        with cursor.copy("COPY jobs (id, status, agent_id, team_id, job_type, error, created_at) FROM STDIN") as copy:
            for i in range(groups):
                copy.write_row((f"job-{i:06d}", "failed", f"agent-{i % 50}", "team-1", "task",
                                "provider returned 503", built - timedelta(seconds=600 * i / groups)))
        raw.commit()
        cursor.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
        src.engine.dispose()
    return built


def write_config(folder: Path, url: str, max_groups: int | None, every: str = "1m") -> Path:
    rule: dict[str, Any] = {"name": "every-failed-job", "kind": "threshold", "source": "jobs",
                            "where": {"status": "failed"}, "group_by": ["id"], "window": "1d",
                            "threshold": {"op": ">=", "value": 1}, "every": every, "notify": ["archive"]}
    if max_groups is not None:
        rule["max_groups"] = max_groups
    (folder / "rules").mkdir(exist_ok=True)
    (folder / "rules" / "rule.yaml").write_text(json.dumps(rule))
    config = folder / "audit-watch.yaml"
    config.write_text(json.dumps({
        "source": {"url": url}, "state": {"url": f"sqlite:///{folder / 'state.db'}"}, "rules": ["rules/"],
        "reports": [], "channels": {"archive": {"type": "file", "path": str(folder / "out")}},
        "daemon": {"freshness": {"enabled": False}, "reload_watch": False},
    }))
    return config


def run_once(executable: str, url: str, max_groups: int | None, now: datetime) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-groups-") as tmp:
        folder = Path(tmp)
        config = write_config(folder, url, max_groups)
        report = folder / "time.txt"
        started = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(report), executable, "run", "--once",
                               "--config", str(config), "--now", now.isoformat()],
                              capture_output=True, text=True, cwd=folder)
        seconds = time.perf_counter() - started
        state = folder / "state.db"
        with sqlite3.connect(state) as db:
            states = db.execute("SELECT count(*) FROM aw_alert_state").fetchone()[0]
            outbox = db.execute("SELECT count(*), max(length(payload)) FROM aw_outbox").fetchone()
        return {"rss_mb": int(report.read_text().split()[-1]) / 1024, "seconds": seconds, "exit": done.returncode,
                "states": states, "notifications": outbox[0], "largest_payload_kb": (outbox[1] or 0) / 1024,
                "state_mb": state.stat().st_size / 1024 / 1024, "summary": done.stdout.strip().splitlines()[:1]}


def run_daemon(url: str, ticks: int = 3, timeout: float = 180) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-groups-daemon-") as tmp:
        folder = Path(tmp)
        config = write_config(folder, url, None, every="10s")
        log = (folder / "daemon.log").open("wb")
        proc = subprocess.Popen([AUDIT_WATCH, "run", "--config", str(config), "--listen", "127.0.0.1:19467"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=folder)
        hwm, done, started = 0, 0, time.monotonic()
        try:
            while time.monotonic() - started < timeout and proc.poll() is None:
                time.sleep(1)
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        hwm = int(line.split()[1])
                try:
                    with sqlite3.connect(folder / "state.db") as db:
                        done = db.execute("SELECT count(*) FROM aw_run_ledger WHERE job = 'every-failed-job' "
                                          "AND status = 'ok'").fetchone()[0]
                except sqlite3.Error:
                    continue
                if done >= ticks:
                    break
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        return {"rss_mb": hwm / 1024, "ticks": done}


def checkout_commit(executable: str) -> str:
    """The commit of the checkout whose virtualenv holds ``executable`` (``.venv/bin/audit-watch``)."""
    checkout = Path(executable).resolve().parent.parent.parent
    done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=f"{SERVER}/aw_bench_groups")
    parser.add_argument("--groups", type=int, default=50_000)
    parser.add_argument("--before", help="the audit-watch executable of another checkout (its virtualenv's bin/), "
                                         "e.g. of the code before max_groups, to compare")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--max-load", type=float, default=2.0, help="wait for the 1-minute load average to fall to this")
    parser.add_argument("--load-wait", type=float, default=900, help="seconds to wait for it at most")
    args = parser.parse_args()

    built = build_store(args.url, args.groups)
    now = built + timedelta(minutes=1)
    settle(args.max_load, args.load_wait)
    load_before = load_average()
    rows = []
    for label, max_groups in (("default (1,000)", None), ("10,000 (the ceiling)", 10_000)):
        result = run_once(AUDIT_WATCH, args.url, max_groups, now)
        print(label, result, flush=True)
        rows.append(f"| `run --once`, max_groups {label} | {result['rss_mb']:.0f} | {result['seconds']:.1f} | "
                    f"{result['states']:,} | {result['notifications']} | {result['largest_payload_kb']:.0f} | "
                    f"{result['state_mb']:.1f} | {result['exit']} |")
    daemon = run_daemon(args.url)
    print("daemon", daemon, flush=True)
    rows.append(f"| daemon, max_groups default, every 10 s, {daemon['ticks']} ticks | {daemon['rss_mb']:.0f} | | | | | | |")
    if args.before:
        result = run_once(args.before, args.url, None, now)
        print("before", result, flush=True)
        rows.append(f"| `run --once` of commit {checkout_commit(args.before)} (before max_groups) | {result['rss_mb']:.0f} | "
                    f"{result['seconds']:.1f} | {result['states']:,} | {result['notifications']} | "
                    f"{result['largest_payload_kb']:.0f} | {result['state_mb']:.1f} | {result['exit']} |")
    body = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/bench_groups_memory.py --groups {args.groups}`, "
        f"niced; load average (1 / 5 / 15 min) {load_before} at the start, {load_average()} at the end.",
        "",
        f"- Machine: {machine()}.",
        f"- Store: {args.groups:,} failed jobs in ten minutes (PostgreSQL); the rule `group_by: [id]`, "
        "`threshold: >= 1` fires for every one of them. State: a fresh SQLite file; channel: `file`.",
        "- Peak RSS: `/usr/bin/time` (maximum resident set) of the whole process; the daemon's is VmHWM after its "
        "ticks.",
        "",
        "| run | peak RSS MB | wall s | alert states | notifications | largest payload KB | state DB MB | exit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    replace_section(Path(args.out), TITLE, body)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
