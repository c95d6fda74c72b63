"""How an alert's group reads for people."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def group_noun(keys: Sequence[str]) -> str:
    """What a rule's groups are, in the plural: ``agents``, ``user and ip pairs``, ``groups``."""
    labels = [_key_label(key) for key in keys]
    if len(labels) == 1:
        return f"{labels[0]}s"
    if len(labels) == 2:
        return f"{labels[0]} and {labels[1]} pairs"
    return "groups"


def groups_summary(firing: int, tracked: int, noun: str) -> str:
    """``3,000 agents firing; the 1,000 most severe are tracked`` (``all 12 agents
    firing are tracked`` when none were left out)."""
    if tracked >= firing:
        return f"all {firing:,} {noun} firing are tracked"
    return f"{firing:,} {noun} firing; the {tracked:,} most severe are tracked"
