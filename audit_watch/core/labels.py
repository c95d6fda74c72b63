"""How an alert's group reads for people."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def group_label(group: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """``Support Triage`` (one key) or ``agent Support Triage, user Ana``; ``all``
    without a group. ``names`` holds display names of ids where known."""
    if not group:
        return "all"
    parts = []
    for key, value in group.items():
        shown = names.get(key) or str(value)
        parts.append(shown if len(group) == 1 else f"{_key_label(key)} {shown}")
    return ", ".join(parts)


def _key_label(key: str) -> str:
    return key.removesuffix("_id").replace("metadata.", "").replace("_", " ")
