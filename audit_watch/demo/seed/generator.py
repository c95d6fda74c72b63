"""``seed_database``: deterministic demo activity with the planted incidents.

For a given (seed, days, scale, end) the output is identical: one
``random.Random`` per concern, all derived from ``seed``; the wall clock is read
only for the default ``end``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, inspect, text

from audit_watch.demo.seed.activity import Background
from audit_watch.demo.seed.events import (
    cron_created_at,
    cron_fired_row,
    cron_runs,
    logins,
    provider_errors,
)
from audit_watch.demo.seed.incidents import (
    PlantedIncident,
    build_plan,
    planted_events,
    planted_incidents,
)
from audit_watch.demo.seed.rows import TimeText, epoch, uuid7_factory
from audit_watch.demo.seed.text import CRON_TEXT, pools
from audit_watch.demo.seed.world import PROMOTED_USER, World, build_world
from audit_watch.demo.seed.writer import (
    SEED_TABLE,
    BulkWriter,
    bulk_writer,
    create_indexes,
    prepare,
)


@dataclass(frozen=True)
class SeedSummary:
    seed: int
    days: int
    scale: float
    start: datetime
    end: datetime
    counts: dict[str, int]             # rows written per table
    seconds: float
    incidents: list[PlantedIncident] = field(default_factory=list)

    def __str__(self) -> str:
        c = self.counts
        return (f"{c['jobs']:,} jobs, {c['threads']:,} threads and {c['events']:,} events "
                f"from {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC "
                f"(seed {self.seed}, scale {self.scale:g}), "
                f"{len(self.incidents)} planted incidents")

    def describe(self) -> str:
        """A few lines: the volume, then each planted incident and when its rule fires."""
        lines = [str(self) + ":"]
        for i in self.incidents:
            span = f"{i.first_fire:%m-%d %H:%M}"
            if i.last_fire != i.first_fire:
                span += f" .. {i.last_fire:%m-%d %H:%M}"
            lines.append(f"  {i.rule:<21} {span:<26} {i.description}")
        return "\n".join(lines)


@dataclass(frozen=True)
class SeedRun:
    seed: int
    days: int
    scale: float
    end: datetime


def default_end() -> datetime:
    """The current time floored to the hour (the only use of the wall clock)."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def seed_database(url: str, *, days: int = 30, seed: int = 42, scale: float = 1.0,
                  end: datetime | None = None, progress: bool = False) -> SeedSummary:
    """Write ``days`` days of activity ending at ``end`` into the database at ``url``.

    Creates the reference tables (and their indexes) where absent; refuses a
    database whose activity tables already hold rows. ``scale=1`` is about
    333,000 jobs for 30 days. The run is recorded in ``audit_watch_seed``; the
    summary lists the planted incidents that start inside the data.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    if not scale > 0:
        raise ValueError("scale must be positive")
    if end is None:
        end = default_end()
    elif end.tzinfo is None:
        raise ValueError("end must be timezone-aware (UTC)")
    end = end.astimezone(UTC)
    started = time.monotonic()
    engine = create_engine(url)
    try:
        prepare(engine)
        with bulk_writer(engine) as writer:
            _generate(writer, build_world(seed), seed, days, scale, end, progress)
            writer.write_seed_row(seed, days, scale, end.isoformat())
        create_indexes(engine)
    finally:
        engine.dispose()
    start = end - timedelta(days=days)
    incidents = [i for i in planted_incidents(end, seed=seed, scale=scale)
                 if i.started_at >= start]           # a short run holds only the late ones
    return SeedSummary(seed, days, scale, start, end, dict(writer.counts),
                       time.monotonic() - started, incidents)


def read_seed_run(url: str) -> SeedRun | None:
    """The latest seed run recorded in the database, or None."""
    engine = create_engine(url)
    try:
        if not inspect(engine).has_table(SEED_TABLE):
            return None
        with engine.connect() as conn:
            row = conn.execute(text(f"SELECT seed, days, scale, end_at FROM {SEED_TABLE} "
                                    "ORDER BY end_at DESC LIMIT 1")).first()
    finally:
        engine.dispose()
    if row is None:
        return None
    end = datetime.fromisoformat(row.end_at).astimezone(UTC)
    return SeedRun(int(row.seed), int(row.days), float(row.scale), end)


def read_seed_end(url: str) -> datetime | None:
    """The data's "now" (the ``end`` of the latest seed run), or None if never seeded."""
    run = read_seed_run(url)
    return run.end if run else None


def _generate(writer: BulkWriter, world: World, seed: int, days: int, scale: float,
              end_dt: datetime, progress: bool) -> None:
    end = epoch(end_dt)
    start = end - days * 86400
    master = random.Random(seed)
    streams = {name: random.Random(master.getrandbits(64))
               for name in ("ids", "activity", "crons", "logins", "errors", "misc")}
    make_id = uuid7_factory(streams["ids"])
    earliest = min(cron_created_at(c, start) for c in world.crons.values())
    fmt = TimeText(earliest, end)
    plan = build_plan(world, end_dt, scale)
    texts = pools(streams["misc"])
    _write_roster(writer, world, streams["misc"], start, fmt)

    writer.add("events", logins(world, streams["logins"], start, end, make_id, fmt))
    writer.add("events", provider_errors(world, streams["errors"], start, end, scale,
                                         make_id, fmt))
    writer.add("events", planted_events(world, end_dt, make_id, fmt, start))

    background = Background(world, streams["activity"], texts, start=start, end=end,
                            scale=scale, plan=plan, fmt=fmt, make_id=make_id)
    runs = cron_runs(world, streams["crons"], start, end, plan.cron_stop)
    next_run = 0
    jobs: list[tuple] = []
    threads: list[tuple] = []
    events: list[tuple] = []
    background.spike_retries(jobs)
    with _progress(progress, background.hours) as advance:
        for i in range(background.hours):
            hour_end = start + 3600 * (i + 1)
            while next_run < len(runs) and runs[next_run][0] < hour_end:
                fired, _expected, cron = runs[next_run]
                next_run += 1
                events.append(cron_fired_row(world, cron, fired, make_id, fmt))
                day = datetime.fromtimestamp(fired, UTC).strftime("%b %d")
                background.cron_run(background.agents[cron.agent], cron.id,
                                    f"{cron.name} {day}", fired, CRON_TEXT[cron.key],
                                    jobs, threads, events)
            background.hour(i, jobs, threads, events)
            writer.add("jobs", jobs)
            writer.add("threads", threads)
            writer.add("events", events)
            jobs.clear()
            threads.clear()
            events.clear()
            advance(writer.counts["jobs"] + len(writer.buffers["jobs"]))


def _write_roster(writer: BulkWriter, world: World, rng: random.Random, start: int,
                  fmt: TimeText) -> None:
    """Teams, users (as of the end: the promoted member is an owner), agents, crons."""
    writer.add("teams", [(t.id, t.name) for t in world.teams.values()])
    writer.add("users", [(u.id, u.name, u.email, "owner" if key == PROMOTED_USER else u.role)
                         for key, u in world.users.items()])
    writer.add("memberships", [(u.id, world.teams[team].id)
                               for u in world.users.values() for team in u.teams])
    writer.add("agents", [(a.id, a.name, world.teams[a.team].id,
                           fmt(start - rng.randrange(20, 120) * 86400 - rng.randrange(86400)))
                          for a in world.agents.values()])
    writer.add("crons", [(c.id, world.agents[c.agent].id, c.name, c.schedule, c.timezone,
                          c.enabled, fmt(cron_created_at(c, start)))
                         for c in world.crons.values()])


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator:
    if not enabled:
        yield lambda jobs: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("[bold]seeding[/] {task.fields[jobs]:>12,} jobs"), BarColumn(),
               MofNCompleteColumn(), TextColumn("hours"), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("seed", total=total, jobs=0)
        yield lambda jobs: bar.update(task, advance=1, jobs=jobs)
