"""``audit-watch demo``: the whole pipeline on an embedded SQLite store.

Seeds ``demo/audit.db`` when absent (30 days of activity with planted
incidents), writes ``demo/audit-watch.yaml`` so every other command can be tried
on the same data, evaluates every bundled rule at the data's "now" through the
same pass the daemon runs (state, outbox, file channel into ``demo/outbox/``)
and shows what fired, with links.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from audit_watch.config.model import Config, load_config
from audit_watch.core.paths import REPO_ROOT
from audit_watch.store.source import AuditSource
from audit_watch.alerting.state import StateStore
from audit_watch.daemon.tick import PassResult, load_rule_set, run_pass

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
        end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        say(f"Seeding {db} (30 days, scale {scale}) ...")
        started = time.perf_counter()
        summary = seed_database(url, days=30, seed=42, scale=scale, end=end, progress=True)
        say(f"{summary} in {time.perf_counter() - started:.1f}s")
    return url, end


def reset_demo_state(folder: Path) -> None:
    """Each demo run starts from an empty alert state, so it shows every message."""
    (folder / "state.db").unlink(missing_ok=True)
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
    result: PassResult
    problems: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    reports: list[Path] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.result.failed_rules or self.problems else 0


def run_demo(folder: Path, scale: float = 0.25, fresh: bool = False,
             say: Callable[[str], None] = print) -> DemoResult:
    folder.mkdir(parents=True, exist_ok=True)
    url, now = ensure_demo_store(folder, scale, fresh, say)
    config = load_config(write_demo_config(folder))
    rule_set = load_rule_set(config)
    reset_demo_state(folder)
    src = AuditSource.from_config(config.source, url)
    state = StateStore.from_config(config)
    started = time.perf_counter()
    try:
        result = run_pass(config, [r.rule for r in rule_set.rules], src, state, now)
    finally:
        state.close()
        src.engine.dispose()
    elapsed = time.perf_counter() - started
    written = render_demo_reports(config, url, now, folder / "outbox" / "reports")
    return DemoResult(now, folder, config.resolve("outbox"), result, [str(p) for p in rule_set.problems], elapsed,
                      written)


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
