"""Export of ~10 million jobs from PostgreSQL: peak memory, wall time, rows per second.

    .venv/bin/python benchmarks/bench_export.py [--url URL] [--formats csv,jsonl] [--keep]

Runs ``python -m audit_watch export jobs --from FROM --to TO --format FMT --out FILE``
as a subprocess over the whole seeded range of the benchmark store (read from its
``audit_watch_seed`` table: ``end_at - days`` to ``end_at``), once per format, and
measures what the acceptance item asks for: the child's peak resident set size
(``ru_maxrss`` of that child alone, from ``os.wait4``), its wall time and rows per
second. A sampler reads the child's ``VmRSS`` from /proc twice a second, so the
table also shows whether memory grows with the rows written (it should not: the
rows stream through a server-side cursor). A control run exports one day (about
a thirtieth of the rows); a bounded export peaks at about the same RSS for both.

The store is only read: ``audit_watch_bench`` is seeded by bench_rules.py
(``seed --scale 30``) and is not dropped or reseeded here. Output files go to a
temporary folder and are deleted after each run unless ``--keep``. Writes
benchmarks/EXPORT_RESULTS.md. Target: peak RSS under 150 MB.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit_watch.demo.seed import read_seed_run  # noqa: E402

from machine import machine  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/audit_watch_bench"
TARGET_MB = 150.0
TIMEOUT_S = 3600  # per export; the full range takes a few minutes here


def versions(url: str) -> str:
    import psycopg
    import sqlalchemy

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            server = conn.execute(text("SELECT version()")).scalar() or ""
    finally:
        engine.dispose()
    server = server.split(" on ")[0].split(",")[0]
    return f"{server}; psycopg {psycopg.__version__}, SQLAlchemy {sqlalchemy.__version__}"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def count_jobs(url: str, start: datetime, end: datetime) -> tuple[int, int]:
    """(jobs in start < created_at <= end, jobs in the table)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            in_range = conn.execute(text("SELECT count(*) FROM jobs WHERE created_at > :s AND created_at <= :e"),
                                    {"s": start, "e": end}).scalar()
            total = conn.execute(text("SELECT count(*) FROM jobs")).scalar()
    finally:
        engine.dispose()
    return int(in_range or 0), int(total or 0)


@dataclass
class Run:
    label: str
    fmt: str
    start: datetime
    end: datetime
    rows: int = 0
    expected: int = 0
    seconds: float = 0.0
    peak_mb: float = 0.0
    file_mb: float = 0.0
    exit_code: int = 0
    samples: list[tuple[float, float]] = field(default_factory=list)   # (seconds, VmRSS MB)
    stderr: str = ""

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def rss_at(self, fraction: float) -> float | None:
        """The sampled RSS nearest to ``fraction`` of the run's wall time."""
        if not self.samples:
            return None
        moment = self.seconds * fraction
        return min(self.samples, key=lambda s: abs(s[0] - moment))[1]


def _vm_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def export(url: str, run: Run, folder: Path, keep: bool) -> Run:
    out = folder / f"jobs-{run.label}.{run.fmt}"
    command = [sys.executable, "-m", "audit_watch", "export", "jobs", "--source", url,
               "--from", iso(run.start), "--to", iso(run.end), "--format", run.fmt, "--out", str(out)]
    # Run from the temporary folder so that no ./audit-watch.yaml of the checkout is read.
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = _vm_rss_mb(child.pid)
            if rss is not None:
                run.samples.append((time.perf_counter() - started, rss))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # Read stderr in a thread: os.wait4 reaps the child, so Popen.communicate cannot be used.
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(child.stderr.read() if child.stderr else ""), daemon=True)
    reader.start()
    deadline = started + TIMEOUT_S
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            child.kill()
            pid, status, usage = os.wait4(child.pid, 0)
            break
        time.sleep(0.05)
    run.seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)   # so Popen does not wait for it again
    stop.set()
    sampler.join()
    reader.join(timeout=10)
    run.exit_code = child.returncode
    run.peak_mb = usage.ru_maxrss / 1024          # Linux: kilobytes, this child alone
    run.stderr = "".join(chunks).strip()
    match = re.search(r"exported (\d+) jobs rows", run.stderr)
    run.rows = int(match.group(1)) if match else 0
    if out.exists():
        run.file_mb = out.stat().st_size / 1024 / 1024
        if not keep:
            out.unlink()
    return run


def report(path: Path, runs: list[Run], url: str, seed_line: str, total_jobs: int, command: str,
           load: str = "") -> None:
    full = [r for r in runs if r.label == "full"]
    verdict = all(r.peak_mb < TARGET_MB and r.exit_code == 0 and r.rows == r.expected for r in runs)
    lines = [
        "# Benchmark: export of 10 million jobs from PostgreSQL",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `{command}`.",
        "",
        f"- Machine: {machine()}" + (f"; load average (1 min) {load}" if load else ""),
        f"- Store: `{url}` ({versions(url)}); {seed_line}; {total_jobs:,} jobs in the table",
        "- Command: `python -m audit_watch export jobs --source URL --from FROM --to TO --format FMT --out FILE`,"
        " a subprocess per run, from an empty folder (no config file, so the default 30 s statement timeout,"
        " which applies to each FETCH of the server-side cursor, not to the whole export)",
        "- Peak RSS: `ru_maxrss` of that child alone (`os.wait4`), so it includes the interpreter, SQLAlchemy,"
        " psycopg and the CLI's imports. RSS at 25/50/100 % of the run: `VmRSS` sampled from /proc every 0.5 s.",
        f"- Target: peak RSS under {TARGET_MB:.0f} MB for the full range. "
        f"**{'Met' if verdict else 'NOT met'}.**",
        "",
        "| run | format | range (from < created_at <= to) | rows | seconds | rows/s | peak RSS MB "
        "| RSS at 25 % / 50 % / end MB | output MB | target |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in runs:
        marks = " / ".join(f"{v:.0f}" if v is not None else "–" for v in (r.rss_at(0.25), r.rss_at(0.5),
                                                                              r.samples[-1][1] if r.samples else None))
        ok = r.peak_mb < TARGET_MB and r.exit_code == 0 and r.rows == r.expected
        rows = f"{r.rows:,}" + ("" if r.rows == r.expected else f" (expected {r.expected:,})")
        lines.append(f"| {r.label} | {r.fmt} | {iso(r.start)} – {iso(r.end)} | {rows} | {r.seconds:.1f} | "
                     f"{r.rows_per_s:,.0f} | {r.peak_mb:.1f} | {marks} | {r.file_mb:,.0f} | "
                     f"{'< ' + str(int(TARGET_MB)) + ' MB: ok' if ok else 'FAILED'} |")
    failures = [r for r in runs if r.exit_code != 0]
    lines.append("")
    if full:
        day = [r for r in runs if r.label == "one day"]
        empty = [r for r in runs if r.label == "no rows"]
        if empty:
            lines.append(f"With no row to write the command peaks at {empty[0].peak_mb:.1f} MB: the interpreter, "
                         "SQLAlchemy, psycopg, the CLI's imports and one connection.")
        if day:
            lines.append(
                f"The one-day control run writes {day[0].rows:,} rows and peaks at {day[0].peak_mb:.1f} MB; the full "
                f"range writes {full[0].rows / max(day[0].rows, 1):.0f} times as many rows and peaks at "
                + " and ".join(f"{r.peak_mb:.1f} MB ({r.fmt})" for r in full)
                + ": memory does not grow with the number of rows (a server-side cursor, 1,000 rows a fetch, each "
                  "row written as it arrives).")
    for r in failures:
        lines += ["", f"Run {r.label} {r.fmt} exited with {r.exit_code}:", "", "```", r.stderr[-2000:], "```"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("AUDIT_WATCH_BENCH_URL", DEFAULT_URL))
    parser.add_argument("--formats", default="csv,jsonl")
    parser.add_argument("--no-control", action="store_true", help="skip the one-day control run")
    parser.add_argument("--keep", action="store_true", help="keep the exported files (several GB)")
    parser.add_argument("--tmp", default=None, help="folder for the exported files (default: a new temp folder)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "EXPORT_RESULTS.md"))
    args = parser.parse_args()

    seed = read_seed_run(args.url)
    if seed is None:
        print(f"{args.url} has no audit_watch_seed row: seed it with benchmarks/bench_rules.py first", file=sys.stderr)
        return 2
    start, end = seed.end - timedelta(days=seed.days), seed.end
    seed_line = f"seed {seed.seed}, {seed.days} days, scale {seed.scale:g}, ending {iso(seed.end)}"
    expected, total = count_jobs(args.url, start, end)
    print(f"{args.url}: {seed_line}; {expected:,} jobs in {iso(start)} – {iso(end)} ({total:,} in the table)",
          flush=True)

    plan: list[Run] = []
    if not args.no_control:
        # The CLI's own footprint (interpreter, imports, connection) with no row to write, then one day.
        plan.append(Run("no rows", "csv", end, end + timedelta(hours=1),
                        expected=count_jobs(args.url, end, end + timedelta(hours=1))[0]))
        day_end = start + timedelta(days=1)
        plan.append(Run("one day", "csv", start, day_end, expected=count_jobs(args.url, start, day_end)[0]))
    for fmt in args.formats.split(","):
        plan.append(Run("full", fmt.strip(), start, end, expected=expected))

    loads = [os.getloadavg()[0]]
    folder = Path(tempfile.mkdtemp(prefix="aw-export-bench-", dir=args.tmp))
    runs = []
    try:
        for run in plan:
            print(f"export {run.label} {run.fmt} ...", end=" ", flush=True)
            export(args.url, run, folder, args.keep)
            print(f"{run.rows:,} rows in {run.seconds:.1f} s ({run.rows_per_s:,.0f}/s), peak RSS {run.peak_mb:.1f} MB, "
                  f"{run.file_mb:,.0f} MB written, exit {run.exit_code}", flush=True)
            runs.append(run)
            loads.append(os.getloadavg()[0])
    finally:
        if args.keep:
            print(f"kept the exported files in {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    command = "benchmarks/bench_export.py" + "".join(f" {a}" for a in sys.argv[1:])
    load = (f"{min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} cores, read between runs (other work "
            "on the machine slows the wall times; it does not change the peak RSS)")
    report(Path(args.out), runs, args.url, seed_line, total, command, load)
    print(f"wrote {args.out}")
    return 0 if all(r.exit_code == 0 and r.rows == r.expected and r.peak_mb < TARGET_MB for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
