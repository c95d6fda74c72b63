"""How numbers are stored and shown."""

from __future__ import annotations


def number(value: float | int | None) -> float | int | None:
    """Counts print as integers, other values keep their fraction."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def format_number(value: float | int | None) -> str:
    """How thresholds and baselines read: ``2,000,000``, ``0.25``, ``3,024,021.43``."""
    if value is None:
        return "?"
    value = float(value)
    if value.is_integer():
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.2f}"
    return f"{value:.4g}"
