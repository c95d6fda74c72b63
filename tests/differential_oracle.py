"""A plain-Python reading of the rule contract: what a rule finds in a handful of rows.

Written from the rule format's semantics (windows, the kinds, ``where``) and the
README's "Semantics worth knowing", not from the engine: rows are Python dicts,
every kind is a loop, numbers are exact fractions where the contract compares
them, and expected cron runs come from a minute-by-minute walk in the cron's
time zone. ``tests/test_differential.py`` compares the engine with it.

A finding is keyed by its group (``{column: value}``, values as text) and holds the
value compared and, where a kind has one, its baseline.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

TIME_COLUMN = {"jobs": "created_at", "threads": "last_activity_at", "events": "created_at"}
NUMBER_COLUMNS = {"input_tokens", "output_tokens", "total_tokens", "message_count"}
MISSING = object()  # a metadata key that is not there
GroupKey = tuple[tuple[str, str | None], ...]

_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Expected:
    value: float
    baseline: float | None = None


# --- values -------------------------------------------------------------------------------


def lower(text: str) -> str:
    """Unicode's simple lowercase mapping, character by character, no language rules."""
    return "".join("i" if char == "\u0130" else (char.lower() if len(char.lower()) == 1 else char) for char in text)


def json_type(value: Any) -> str | None:
    if value is MISSING:
        return None
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, dict) else "array"


def json_as_text(value: Any) -> str | None:
    """A metadata value as a group or a new value shows it: its JSON text, strings bare."""
    kind = json_type(value)
    if kind in (None, "null"):
        return None
    if kind == "string":
        return value
    return json.dumps(value)


def rule_number(value: Any) -> float | None:
    """A number in a rule, or text written as a JSON number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and _JSON_NUMBER.fullmatch(value.strip()):
        return float(value)
    return None


def rule_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def column_value(row: dict[str, Any], name: str) -> Any:
    if name == "total_tokens":
        return row["input_tokens"] + row["output_tokens"]
    if name.startswith("metadata."):
        return row["metadata"].get(name.split(".", 1)[1], MISSING)
    return row.get(name)


def group_text(row: dict[str, Any], name: str) -> str | None:
    value = column_value(row, name)
    if name.startswith("metadata."):
        return json_as_text(value)
    return None if value is None else str(value)


# --- where --------------------------------------------------------------------------------


def _metadata_equals(stored: Any, wanted: Any) -> bool:
    kind = json_type(stored)
    if wanted is None:
        return kind in (None, "null")
    number = rule_number(wanted)
    if kind == "number" and number is not None and float(stored) == number:
        return True
    if kind == "string":
        return stored == rule_text(wanted)
    if kind == "boolean":
        return ("true" if stored else "false") == rule_text(wanted)
    return False


def _equals(stored: Any, wanted: Any) -> bool:
    if wanted is None:
        return stored is None
    return stored is not None and stored == wanted


def _ordered(stored: Any, op: str, bound: Any) -> bool:
    return {"gt": stored > bound, "gte": stored >= bound, "lt": stored < bound, "lte": stored <= bound}[op]


def _as_column_type(column: str, value: Any) -> Any:
    """A rule value in its column's type (YAML reads an unquoted id as a number)."""
    if value is None or isinstance(value, datetime) or column in ("enabled",):
        return value
    if column in NUMBER_COLUMNS:
        return float(value) if isinstance(value, str) else value
    return rule_text(value)


def condition_holds(row: dict[str, Any], column: str, op: str, value: Any) -> bool:
    stored = column_value(row, column)
    metadata = column.startswith("metadata.")
    if not metadata and op not in ("exists", "contains"):
        value = [_as_column_type(column, v) for v in value] if op in ("in", "not_in") else _as_column_type(column, value)
    equals = _metadata_equals if metadata else _equals
    if op == "exists":
        present = stored is not MISSING if metadata else stored is not None
        return present == value
    if op == "eq":
        return equals(stored, value)
    if op == "not":
        return not equals(stored, value)
    if op == "in":
        return any(equals(stored, item) for item in value)
    if op == "not_in":
        return not any(equals(stored, item) for item in value)
    if op == "contains":
        if metadata:
            return json_type(stored) == "string" and lower(value) in lower(stored)
        return stored is not None and lower(value) in lower(stored)
    # gt, gte, lt, lte
    if metadata:
        return json_type(stored) == "number" and _ordered(float(stored), op, rule_number(value))
    return stored is not None and _ordered(stored, op, value)


def matches(row: dict[str, Any], conditions: dict[str, Any] | None) -> bool:
    for column, spec in (conditions or {}).items():
        ops = spec.items() if isinstance(spec, dict) else [("eq", spec)]
        if not all(condition_holds(row, column, op, value) for op, value in ops):
            return False
    return True


# --- windows and groups -------------------------------------------------------------------


def within(t: datetime, start: datetime, end: datetime) -> bool:
    """``start < t <= end``: the half-open window of the contract."""
    return start < t <= end


def group_key(row: dict[str, Any], group_by: list[str]) -> GroupKey:
    return tuple((name, group_text(row, name)) for name in group_by)


def key_of(group: dict[str, Any]) -> GroupKey:
    return tuple(sorted((k, None if v is None else str(v)) for k, v in group.items()))


def compare(value: Any, comparison: dict[str, Any]) -> bool:
    bound = comparison["value"]
    return {">": value > bound, ">=": value >= bound, "<": value < bound, "<=": value <= bound,
            "==": value == bound}[comparison["op"]]


def _by_group(rows: list[dict[str, Any]], group_by: list[str]) -> dict[GroupKey, list[dict[str, Any]]]:
    groups: dict[GroupKey, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(group_key(row, group_by), []).append(row)
    return groups


def _found(groups: dict[GroupKey, Expected]) -> dict[GroupKey, Expected]:
    return {tuple(sorted(key)): expected for key, expected in groups.items()}


# --- the kinds ----------------------------------------------------------------------------


def expect(rule: dict[str, Any], store: dict[str, list[dict[str, Any]]], now: datetime) -> dict[GroupKey, Expected]:
    """What ``rule`` fires at ``now`` over ``store`` ({table: rows}): {group: Expected}."""
    return KINDS[rule["kind"]](rule, store, now)


def _source_rows(rule: dict[str, Any], store: dict[str, list[dict[str, Any]]], start: datetime,
                 end: datetime, where: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    column = TIME_COLUMN[rule["source"]]
    conditions = rule.get("where") if where is None else where
    return [r for r in store[rule["source"]] if within(r[column], start, end) and matches(r, conditions)]


def threshold(rule: dict[str, Any], store: dict[str, list[dict[str, Any]]], now: datetime) -> dict[GroupKey, Expected]:
    rows = _source_rows(rule, store, now - rule["window"], now)
    group_by = rule.get("group_by", [])
    counts = {key: len(members) for key, members in _by_group(rows, group_by).items()}
    if not group_by:
        counts = {(): len(rows)}  # one group, whose count can be 0
    return _found({key: Expected(n) for key, n in counts.items() if compare(n, rule["threshold"])})


def ratio(rule: dict[str, Any], store: dict[str, list[dict[str, Any]]], now: datetime) -> dict[GroupKey, Expected]:
    denominator = _source_rows(rule, store, now - rule["window"], now, where=rule.get("of") or {})
    found = {}
    for key, members in _by_group(denominator, rule.get("group_by", [])).items():
        total = len(members)
        matching = sum(1 for r in members if matches(r, rule.get("where")))
        if total >= rule.get("min_total", 1) and compare(matching / total, rule["ratio"]):
            found[key] = Expected(matching / total)
    return _found(found)


def spike(rule: dict[str, Any], store: dict[str, list[dict[str, Any]]], now: datetime) -> dict[GroupKey, Expected]:
    window, reference = rule["window"], rule.get("reference") or rule["window"]
    time = TIME_COLUMN[rule["source"]]
    rows = _source_rows(rule, store, now - window - reference, now)
    factor = Fraction(rule.get("factor", 3))
    found = {}
    for key, members in _by_group(rows, rule.get("group_by", [])).items():
        current = sum(1 for r in members if within(r[time], now - window, now))
        scaled = Fraction(len(members) - current) * Fraction(window / timedelta(seconds=1)) / Fraction(
            reference / timedelta(seconds=1))
        up = current >= factor * scaled and current >= rule.get("min_current", 1)
        down = scaled >= Fraction(rule.get("min_reference", 1.0)) and current <= scaled / factor
        direction = rule.get("direction", "up")
        if (direction in ("up", "both") and up) or (direction in ("down", "both") and down):
            found[key] = Expected(current, float(scaled))
    return _found(found)


def _metric_value(row: dict[str, Any], rule: dict[str, Any]) -> Any:
    """The field as the aggregate sees it: set (count), or a number (the others)."""
    value = column_value(row, rule["field"])
    if rule["field"].startswith("metadata."):
        if rule.get("aggregate", "sum") == "count":
            return None if json_type(value) in (None, "null") else value
        return Fraction(value) if json_type(value) == "number" else None
    return value


def aggregate(values: list[Any], name: str) -> Any:
    if name == "count":
        return len(values)
    if not values:
        return None
    if name == "sum":
        return sum(Fraction(v) for v in values)
    if name == "avg":
        return Fraction(sum(Fraction(v) for v in values)) / len(values)
    if name == "min":
        return min(values)
    if name == "max":
        return max(values)
    ordered = sorted(values)  # p95: nearest rank, the ceil(0.95 n)-th smallest
    return ordered[math.ceil(Fraction(95, 100) * len(ordered)) - 1]


def metric(rule: dict[str, Any], store: dict[str, list[dict[str, Any]]], now: datetime) -> dict[GroupKey, Expected]:
    window, name, group_by = rule["window"], rule.get("aggregate", "sum"), rule.get("group_by", [])
    baseline = rule.get("baseline")
    periods = baseline["periods"] if baseline else 0
    time = TIME_COLUMN[rule["source"]]
    rows = [r for r in _source_rows(rule, store, now - window * (periods + 1), now) if _metric_value(r, rule) is not None]
    buckets: dict[GroupKey, dict[int, list[Any]]] = {}
    for row in rows:
        k = next(k for k in range(periods + 1) if within(row[time], now - window * (k + 1), now - window * k))
        buckets.setdefault(group_key(row, group_by), {}).setdefault(k, []).append(_metric_value(row, rule))
    if not group_by and name == "count":
        buckets.setdefault((), {}).setdefault(0, [])  # one group, whose count can be 0
    found = {}
    for key, by_bucket in buckets.items():
        if 0 not in by_bucket:
            continue  # with group_by, a group without rows in the window does not exist
        current = aggregate(by_bucket[0], name)
        if current is None:
            continue
        if not baseline:
            if compare(current, rule["threshold"]):
                found[key] = Expected(float(current))
            continue
        earlier = [aggregate(values, name) for k, values in by_bucket.items() if k > 0]
        if earlier:
            mean = Fraction(sum(Fraction(v) for v in earlier)) / len(earlier)
            if current > Fraction(baseline["factor"]) * mean:
                found[key] = Expected(float(current), float(mean))
        elif rule.get("min_value") is not None and current >= Fraction(rule["min_value"]):
            found[key] = Expected(float(current))
    return _found(found)


def absence(rule: dict[str, Any], store: dict[str, list[dict[str, Any]]], now: datetime) -> dict[GroupKey, Expected]:
    window, time = rule["window"], TIME_COLUMN[rule["source"]]
    rows = _source_rows(rule, store, now - window - rule["lookback"], now)
    found = {}
    for key, members in _by_group(rows, rule.get("group_by", [])).items():
        in_window = [r for r in members if within(r[time], now - window, now)]
        if not in_window:
            found[key] = Expected(0, float(len(members)))
    return _found(found)


def new_value(rule: dict[str, Any], store: dict[str, list[dict[str, Any]]], now: datetime) -> dict[GroupKey, Expected]:
    window, time, field = rule["window"], TIME_COLUMN[rule["source"]], rule["field"]
    rows = [r for r in _source_rows(rule, store, now - window - rule["lookback"], now) if group_text(r, field) is not None]
    seen: dict[GroupKey, list[dict[str, Any]]] = {}
    for row in rows:
        key = group_key(row, rule.get("group_by", [])) + ((field, group_text(row, field)),)
        seen.setdefault(key, []).append(row)
    found = {}
    for key, members in seen.items():
        if all(within(r[time], now - window, now) for r in members):  # first seen in the window
            found[key] = Expected(len(members))
    return _found(found)


def any_row(rule: dict[str, Any], store: dict[str, list[dict[str, Any]]], now: datetime) -> dict[GroupKey, Expected]:
    time = TIME_COLUMN[rule["source"]]
    rows = sorted(_source_rows(rule, store, now - rule["window"], now), key=lambda r: (r[time], r["id"]))
    found = {}
    for row in rows[: rule.get("max_alerts", 50)]:
        found[group_key(row, rule.get("group_by", [])) + (("id", row["id"]),)] = Expected(1)
    return _found(found)


# --- cron_missed --------------------------------------------------------------------------


def _field_matches(expression: str, value: int) -> bool:
    for part in expression.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/")
            step = int(step_text)
        if part == "*":
            low, high = 0, 10_000
        elif "-" in part:
            low, high = (int(x) for x in part.split("-"))
        else:
            low = high = int(part)
        if low <= value <= high and (value - (low if part != "*" else 0)) % step == 0:
            return True
    return False


def cron_matches(schedule: str, local: datetime) -> bool:
    """Five fields; day of month and day of week are never both restricted in the tests."""
    minute, hour, dom, month, dow = schedule.split()
    return (_field_matches(minute, local.minute) and _field_matches(hour, local.hour)
            and _field_matches(dom, local.day) and _field_matches(month, local.month)
            and _field_matches(dow, (local.weekday() + 1) % 7))


def expected_runs(schedule: str, tz_name: str, until: datetime, since: datetime) -> Iterator[datetime]:
    """The runs with ``since <= run <= until``, newest first: each UTC minute, read in the
    cron's time zone (no DST change lies near the tests' times)."""
    zone = ZoneInfo(tz_name)
    moment = until.replace(second=0, microsecond=0)
    while moment >= since:
        if cron_matches(schedule, moment.astimezone(zone)):
            yield moment
        moment -= timedelta(minutes=1)


def cron_missed(rule: dict[str, Any], store: dict[str, list[dict[str, Any]]], now: datetime) -> dict[GroupKey, Expected]:
    grace = rule.get("grace", timedelta(minutes=15))
    fires = [e for e in store["events"] if e["event_type"] == "cron.fired"]
    found = {}
    for cron in store["crons"]:
        if not cron["enabled"] or not matches(cron, rule.get("where")):
            continue
        streak = 0
        for run in expected_runs(cron["schedule"], cron["timezone"], now - grace, cron["created_at"]):
            fired = any(
                json_as_text(e["metadata"].get("cron_id", MISSING)) == cron["id"] and run <= e["created_at"] <= run + grace
                for e in fires
            )
            if fired or streak == rule.get("max_runs", 100):
                break
            streak += 1
        if streak:
            found[(("cron_id", cron["id"]),)] = Expected(streak)
    return found


KINDS: dict[str, Callable[[dict[str, Any], dict[str, list[dict[str, Any]]], datetime], dict[GroupKey, Expected]]] = {
    "threshold": threshold, "ratio": ratio, "spike": spike, "metric": metric, "absence": absence,
    "cron_missed": cron_missed, "new_value": new_value, "any": any_row,
}
