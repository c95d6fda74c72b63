"""``audit-watch demo``: the whole pipeline on an embedded SQLite store.

Seeds ``demo/audit.db`` when absent (30 days of activity with planted
incidents), writes ``demo/audit-watch.yaml`` so every other command can be tried
on the same data, then runs the pass of ``run --once`` at the data's "now" on an
empty state: the freshness check, then each bundled rule's tick claimed in the
run ledger and evaluated (held, were the store silent; counted towards its "rule
failing" alert, were it to fail), alert states, the outbox, and delivery to the
file channel in ``demo/outbox/``. The
scheduled reports are not queued: every report is rendered into
``demo/outbox/reports/`` instead. It shows what fired, with links; run again,
it shows the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from audit_watch.config.model import Config, load_config
from audit_watch.core.paths import REPO_ROOT
from audit_watch.daemon.once import OncePass, once_pass, once_runtime
from audit_watch.store.source import AuditSource

DEMO_CONFIG = """\
# Written by `audit-watch demo`. Try: audit-watch --config {folder}/audit-watch.yaml check
source:
  url: sqlite:///audit.db            # relative paths are relative to this file's folder
state:
  url: sqlite:///state.db
links:
  base_url: https://auxot.example.com
rules: [{rules}]
reports: [{reports}]
timezone: UTC
channels:
  archive: {{type: file, path: outbox}}   # relative to this file's folder
"""


def write_demo_config(folder: Path) -> Path:
    path = folder / "audit-watch.yaml"
    path.write_text(DEMO_CONFIG.format(
        folder=folder.as_posix(), rules=(REPO_ROOT / "rules").as_posix(), reports=(REPO_ROOT / "reports").as_posix()
    ))
    return path


def ensure_demo_store(folder: Path, scale: float, fresh: bool,
                      say: Callable[[str], None] = print) -> tuple[str, datetime]:
    """Seed the demo store when absent; returns its URL and the data's "now"."""
    from audit_watch.demo.seed import read_seed_end, seed_database

    db = folder / "audit.db"
    url = f"sqlite:///{db.as_posix()}"
    if fresh and db.exists():
        db.unlink()
    end = read_seed_end(url) if db.exists() else None
    if end is None:
        if db.exists():
            db.unlink()
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        say(f"Seeding {db} (30 days, scale {scale}) ...")
        started = time.perf_counter()
        summary = seed_database(url, days=30, seed=42, scale=scale, end=end, progress=True)
        say(f"{summary} in {time.perf_counter() - started:.1f}s")
    return url, end


def reset_demo_state(folder: Path) -> None:
    """Each demo run starts from an empty state (alerts, outbox, run ledger), so it
    evaluates every rule again and shows every message."""
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (folder / name).unlink(missing_ok=True)
    outbox = folder / "outbox"
    if outbox.is_dir():
        for item in outbox.iterdir():
            if item.is_file():
                item.unlink()


@dataclass
class DemoResult:
    """What one demo run did, for the command line to show."""

    now: datetime
    folder: Path
    outbox: Path
    result: OncePass
    problems: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    reports: list[Path] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.result.failed or self.problems else 0


def run_demo(folder: Path, scale: float = 0.25, fresh: bool = False,
             say: Callable[[str], None] = print) -> DemoResult:
    folder.mkdir(parents=True, exist_ok=True)
    url, now = ensure_demo_store(folder, scale, fresh, say)
    config_path = write_demo_config(folder)
    config = load_config(config_path)
    reset_demo_state(folder)
    with once_runtime(config, str(config_path), url, now) as (runtime, watch, problems):
        started = time.perf_counter()
        result = once_pass(runtime, watch, now, reports=False)
        elapsed = time.perf_counter() - started
    written = render_demo_reports(config, url, now, folder / "outbox" / "reports")
    return DemoResult(now, folder, config.resolve("outbox"), result, [str(p) for p in problems], elapsed, written)


# The planted user of the demo data: the compliance summary tells their story.
DEMO_COMPLIANCE_USER = "daniel.reyes@brightline.io"


def render_demo_reports(config: Config, url: str, now: datetime, out: Path) -> list[Path]:
    """Every built-in report at the data's now, as HTML and text (compliance with evidence)."""
    from audit_watch.reports import run_report, write_report

    out.mkdir(parents=True, exist_ok=True)
    src = AuditSource.from_config(config.source, url)
    written: list[Path] = []
    try:
        for name in ("weekly-digest", "token-usage", "triage", "compliance"):
            user = DEMO_COMPLIANCE_USER if name == "compliance" else None
            result = run_report(name, src, config, now=now, user=user)
            if name == "compliance":
                written += list(write_report(result, "html", out / f"{name}/"))
            else:
                for fmt, suffix in (("html", "html"), ("text", "txt")):
                    written += list(write_report(result, fmt, out / f"{name}.{suffix}"))
    finally:
        src.engine.dispose()
    return written
