"""Deterministic demo data for the reference audit store, with planted incidents.

``seed_database(url, days=30, seed=42, scale=1.0, end=None, progress=False)``
writes teams, users, agents, crons, jobs, threads and events; the incidents it
plants (and what each bundled rule should report) are in :mod:`.incidents`.
"""

from audit_watch.demo.seed.generator import (
    SeedRun,
    SeedSummary,
    default_end,
    read_seed_end,
    read_seed_run,
    seed_database,
)
from audit_watch.demo.seed.incidents import PlantedIncident, planted_incidents
from audit_watch.demo.seed.writer import SeedError

__all__ = [
    "PlantedIncident",
    "SeedError",
    "SeedRun",
    "SeedSummary",
    "default_end",
    "planted_incidents",
    "read_seed_end",
    "read_seed_run",
    "seed_database",
]
