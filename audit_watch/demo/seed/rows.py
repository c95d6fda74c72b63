"""Row-level helpers kept cheap for the hot loop: ids, timestamp text, columns.

Times inside the generator are integer Unix seconds. ``TimeText`` turns them
into the store's text form ('YYYY-MM-DD HH:MM:SS', UTC) with two list lookups,
which PostgreSQL's COPY reads as UTC (the writer sets the session time zone)
and SQLite keeps as is.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime

from audit_watch.store.schema import REFERENCE_COLUMNS

# Column order of every table the generator writes (the reference order).
COLUMNS: dict[str, tuple[str, ...]] = {
    table: tuple(name for name, _, _ in columns) for table, columns in REFERENCE_COLUMNS.items()
}
BULK_TABLES = ("jobs", "threads", "events")

_SECONDS = tuple(f"{s:02d}" for s in range(60))


class TimeText:
    """Unix seconds -> 'YYYY-MM-DD HH:MM:SS' via a per-minute prefix table."""

    def __init__(self, first: int, last: int) -> None:
        self.base = first - first % 60
        minutes = (last - self.base) // 60 + 2
        self.prefix = [
            datetime.fromtimestamp(self.base + 60 * i, UTC).strftime("%Y-%m-%d %H:%M:")
            for i in range(minutes)
        ]

    def __call__(self, ts: int) -> str:
        i = (ts - self.base) // 60
        if 0 <= i < len(self.prefix):
            return self.prefix[i] + _SECONDS[ts % 60]
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def uuid7_factory(rng: random.Random) -> Callable[[int], str]:
    """Time-ordered UUIDs (version 7) for a Unix second, random bits from ``rng``.

    Ordered ids keep the primary-key B-trees append-mostly on a 10-million-row
    load; the millisecond inside the second is random as well.
    """
    getrandbits = rng.getrandbits

    def make(ts: int) -> str:
        r = getrandbits(84)
        ms = ts * 1000 + (((r >> 74) * 1000) >> 10)
        h = "%032x" % ((ms << 80) | (0x7 << 76) | (((r >> 62) & 0xFFF) << 64)
                       | (0b10 << 62) | (r & 0x3FFFFFFFFFFFFFFF))
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    return make


def to_json(value: dict) -> str:
    return json.dumps(value, separators=(", ", ": "))


def epoch(value: datetime) -> int:
    return int(value.timestamp())


def event_row(make_id: Callable[[int], str], fmt: TimeText, ts: int, event_type: str,
              severity: str, description: str, metadata: dict, *, agent_id: str | None = None,
              user_id: str | None = None, team_id: str | None = None) -> tuple:
    """One events row in column order (metadata as JSON text)."""
    return (make_id(ts), event_type, severity, description, agent_id, user_id, team_id,
            to_json(metadata), fmt(ts))
