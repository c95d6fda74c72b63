"""Durations as config and rule files write them: ``30s``, ``15m``, ``6h``, ``7d``, ``2w``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PATTERN = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


def parse_duration(value: object) -> timedelta:
    """Parse a duration; a timedelta passes through. Raises ValueError with a hint."""
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError("a duration cannot be negative")
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"expected a duration such as 15m, got {value!r}")
    if isinstance(value, int) or (isinstance(value, str) and value.strip() == "0"):
        if int(value) == 0:
            return timedelta(0)
        raise ValueError(f"{value!r} has no unit: write e.g. {value}s, {value}m or {value}h")
    match = _PATTERN.match(value)
    if not match:
        if value.strip().startswith("-"):
            raise ValueError(f"{value!r}: a duration cannot be negative")
        raise ValueError(
            f"{value!r} is not a duration: use a whole number and one unit of s, m, h, d, w (e.g. 15m)"
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def format_duration(value: timedelta) -> str:
    """The shortest exact form: 90m -> ``90m``, 86400s -> ``1d``."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
