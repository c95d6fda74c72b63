"""What the differential test generates: small stores and rules of every kind.

Rows lie on, a millisecond or a second around, and between the edges of the rules'
spans (window, reference, baseline periods, lookback) and after ``now``; they hold
NULLs, text beyond ASCII, JSON metadata of every type; crons come with fires at and
around the edges of their grace. Conditions are drawn last, from what the rows hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from conftest import NOW
from differential_oracle import expected_runs, rule_number

MS = timedelta(milliseconds=1)
WINDOWS = [timedelta(minutes=15), timedelta(hours=1), timedelta(hours=6), timedelta(days=1)]
KINDS = ["threshold", "ratio", "spike", "metric", "absence", "cron_missed", "new_value", "any"]

# Text that tests case-insensitivity beyond ASCII and LIKE's special characters.
TEXTS = [None, "Über-Quota erreicht", "über-quota", "ÜBER", "Ärger", "quota_exceeded", "50% of budget",
         "STRASSE", "straße", "İstanbul", "ıi", "ΟΔΟΣ", "οδος", "", "Rate Limit", "ÉCHEC", "Ωmega"]
NEEDLES = ["über", "ÜBER", "Über", "quota", "%", "_", "ss", "ß", "ẞ", "i", "ı", "σ", "Σ", "ς", "", "rate LIMIT", "a_e"]
META_NUMBERS = [0, 0.0, 197, 197.0, 2.25, -3]
META_STRINGS = ["197", "0", "slow", "Über", ""]
META_SCALARS = META_NUMBERS + META_STRINGS + [True, False, None]
META_KEYS = {
    "status": META_SCALARS + META_NUMBERS,
    "latency": [0.0, 197, 197.0, 197.5, "197"],
    "ip": ["10.0.0.1", "10.0.0.2", "192.0.2.9", 1],
    "provider": ["openai", "anthropic", "Anthropic"],
    "detail": [{"p50": 1}, [1, 2], "x"],   # objects and arrays: never grouped by
}

TEXT_VALUES: dict[str, dict[str, list[Any]]] = {
    "jobs": {"status": ["failed", "complete", "cancelled"], "agent_id": ["a1", "a2", "a3"],
             "user_id": [None, "u1", "u2"], "job_type": ["task", "chat_reply"],
             "model": [None, "gpt-4o", "local-llama", "Über-Modell"], "provider": [None, "openai", "anthropic"],
             "error": TEXTS},
    "threads": {"source": ["app", "slack", "cron"], "agent_id": ["a1", "a2", "a3"], "user_id": [None, "u1"],
                "name": [t for t in TEXTS if t is not None], "snippet": TEXTS},
    "events": {"event_type": ["provider.error", "auth.login", "cron.fired"], "severity": ["info", "warning", "error"],
               "description": [t for t in TEXTS if t is not None], "agent_id": [None, "a1", "a2"]},
    "crons": {"agent_id": ["a1", "a2"], "name": ["Nightly Report", "hourly sync", "Über-Check"],
              "timezone": ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]},
}
NUMBER_COLUMNS = {"jobs": ["input_tokens", "output_tokens", "total_tokens"], "threads": ["message_count"],
                  "events": [], "crons": []}
TIME_COLUMNS = {"jobs": ["created_at", "started_at", "finished_at"], "threads": ["last_activity_at"],
                "events": ["created_at"], "crons": ["created_at"]}
GROUP_COLUMNS = {
    "jobs": ["agent_id", "status", "model", "user_id", "input_tokens"],
    "threads": ["agent_id", "source", "snippet"],
    "events": ["agent_id", "event_type", "metadata.provider", "metadata.status", "metadata.ip"],
}
NEW_VALUE_FIELDS = {"jobs": ["model", "status", "agent_id", "input_tokens"], "threads": ["source", "snippet"],
                    "events": ["metadata.ip", "metadata.status", "event_type"]}
METRIC_FIELDS = {"jobs": ["input_tokens", "output_tokens", "total_tokens"], "threads": ["message_count"],
                 "events": ["metadata.status", "metadata.latency"]}
COUNT_FIELDS = {"jobs": ["model", "error", "input_tokens"], "threads": ["snippet", "message_count"],
                "events": ["metadata.status", "metadata.detail", "agent_id"]}
SCHEDULES = ["*/15 * * * *", "0 * * * *", "30 9 * * *", "0 9 * * 1-5", "*/5 * * * *", "45 11 * * *", "0 0 * * *"]
# SQLite keeps times as text, written by Auxot with or without an offset: all read as one instant.
SQLITE_TIME_FORMATS = ["%Y-%m-%d %H:%M:%S.{ms}", "%Y-%m-%dT%H:%M:%S.{ms}Z", "%Y-%m-%d %H:%M:%S.{ms}+00:00", "+05:30"]


@dataclass
class Case:
    rules: list[dict[str, Any]]  # each evaluated over the same store: one case each
    store: dict[str, list[dict[str, Any]]]
    time_formats: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (table, id, column) -> format


# --- strategies ----------------------------------------------------------------------------


def _edges(rule: dict[str, Any]) -> list[timedelta]:
    """How long before ``now`` each edge of the rule's spans lies."""
    window = rule["window"]
    edges = [timedelta(0), window]
    if rule["kind"] == "spike":
        edges.append(window + (rule.get("reference") or window))
    if rule["kind"] == "metric" and "baseline" in rule:
        edges += [window * k for k in range(2, rule["baseline"]["periods"] + 2)]
    if "lookback" in rule:
        edges.append(window + rule["lookback"])
    return edges


def times(rules: list[dict[str, Any]]) -> st.SearchStrategy[datetime]:
    """Row times: on an edge of a rule or a millisecond or second from it, inside one of
    the spans between edges, anywhere up to a window before the oldest edge, or after
    ``now``."""
    edges = sorted({edge for rule in rules for edge in _edges(rule)})
    on_an_edge = st.builds(
        lambda edge, delta: NOW - edge + delta,
        st.sampled_from(edges),
        st.sampled_from([timedelta(0), MS, -MS, timedelta(seconds=1), -timedelta(seconds=1)]),
    )
    spans = list(zip(edges, edges[1:]))
    inside_a_span = st.sampled_from(spans).flatmap(
        lambda span: st.integers(span[0] // MS, span[1] // MS).map(lambda ms: NOW - ms * MS))
    oldest_ms = (edges[-1] + max(rule["window"] for rule in rules)) // MS
    anywhere = st.integers(0, oldest_ms).map(lambda ms: NOW - ms * MS)
    after_now = st.sampled_from([NOW + MS, NOW + timedelta(seconds=1), NOW + timedelta(hours=1)])
    return st.one_of(on_an_edge, inside_a_span, inside_a_span, anywhere, after_now)


def metadata() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={key: st.sampled_from(values) for key, values in META_KEYS.items()})


def _pool(source: str, name: str) -> list[Any]:
    """Values a condition on ``name`` may compare with, beside those the rows hold."""
    if name.startswith("metadata."):
        plain = [v for v in META_KEYS[name.split(".", 1)[1]] if not isinstance(v, (dict, list))]
        return plain + ["197.0", "0", None]
    if name in NUMBER_COLUMNS[source]:
        return list(range(8))
    return TEXT_VALUES[source][name] + ["zz"]


def _held(rows: list[dict[str, Any]], name: str) -> list[Any]:
    """What the rows hold in ``name`` (a metadata key's value; absent keys left out)."""
    if name.startswith("metadata."):
        key = name.split(".", 1)[1]
        return [row["metadata"][key] for row in rows if key in row["metadata"]]
    if name == "total_tokens":
        return [row["input_tokens"] + row["output_tokens"] for row in rows]
    return [row.get(name) for row in rows]


def _alike(value: Any) -> list[Any]:
    """Values a rule may write for what a row holds: the same number as int, float or
    numeric text; text in another case."""
    if isinstance(value, bool) or value is None:
        return [value]
    if isinstance(value, (int, float)):
        forms = [value, float(value), str(value)]
        return forms + [int(value)] if float(value).is_integer() else forms
    if isinstance(value, str):
        return [value, value.upper(), value.lower()]
    return ["x"]  # objects and arrays: nothing a rule can write equals them


@st.composite
def _value(draw: st.DrawFn, source: str, name: str, rows: list[dict[str, Any]]) -> Any:
    """Mostly a form of a value some row holds, else one from the pool."""
    held = [v for v in _held(rows, name) if not isinstance(v, (dict, list))]
    if held and draw(st.integers(0, 2)):
        return draw(st.sampled_from(_alike(draw(st.sampled_from(held)))))
    return draw(st.sampled_from(_pool(source, name)))


@st.composite
def _needle(draw: st.DrawFn, source: str, name: str, rows: list[dict[str, Any]]) -> str:
    """A piece of some row's text in another case (around a letter beyond ASCII where
    there is one), or a needle of the pool."""
    held = [v for v in _held(rows, name) if isinstance(v, str) and v]
    if held and draw(st.integers(0, 3)):
        text = draw(st.sampled_from(held))
        beyond_ascii = [i for i, char in enumerate(text) if not char.isascii()]
        start = draw(st.sampled_from(beyond_ascii or [0]) | st.integers(0, len(text) - 1))
        piece = text[start: draw(st.integers(start + 1, min(len(text), start + 4)))]
        return draw(st.sampled_from([piece.lower(), piece.upper(), piece.swapcase(), piece]))
    return draw(st.sampled_from(NEEDLES))


# Operators by how often they are drawn: equality and contains most, where the
# backends differ most.
_TEXT_OPS = ["contains"] * 4 + ["eq"] * 2 + ["in", "not", "not_in", "exists", "gt", "gte", "lt", "lte"]
_NUMBER_OPS = ["eq", "in", "not", "not_in", "exists", "gt", "gte", "lt", "lte"]
_METADATA_OPS = ["eq"] * 3 + ["in"] * 2 + ["not"] * 2 + ["not_in", "gt", "gte", "lt", "lte", "contains", "exists"]
_TIME_OPS = ["eq", "not", "gt", "gte", "lt", "lte", "exists"]


@st.composite
def condition(draw: st.DrawFn, source: str, rows: list[dict[str, Any]]) -> tuple[str, Any]:
    categories = {"text": 3, "number": 2 if NUMBER_COLUMNS[source] else 0, "time": 1,
                  "metadata": 4 if source == "events" else 0}
    category = draw(st.sampled_from([c for c, weight in categories.items() for _ in range(weight)]))
    if category == "time":
        name = draw(st.sampled_from(TIME_COLUMNS[source]))
        op = draw(st.sampled_from(_TIME_OPS))
        held = [t for t in _held(rows, name) if t is not None] or [NOW - timedelta(days=1)]
        moment = st.builds(lambda t, d: t + d, st.sampled_from(held), st.sampled_from([timedelta(0), MS, -MS]))
        return name, {op: draw(st.booleans() if op == "exists" else moment)}
    if category == "metadata":
        name = "metadata." + draw(st.sampled_from(["status", "status", "latency", "latency", "ip", "provider", "detail"]))
        ops = _METADATA_OPS
    elif category == "number":
        name, ops = draw(st.sampled_from(NUMBER_COLUMNS[source])), _NUMBER_OPS
    else:
        name, ops = draw(st.sampled_from(list(TEXT_VALUES[source]))), _TEXT_OPS
    spec: dict[str, Any] = {}
    for op in draw(st.lists(st.sampled_from(ops), min_size=1, max_size=draw(st.sampled_from([1, 1, 1, 2])), unique=True)):
        if op == "exists":
            spec[op] = draw(st.booleans())
        elif op == "contains":
            spec[op] = draw(_needle(source, name, rows))
        elif op in ("in", "not_in"):
            spec[op] = draw(st.lists(_value(source, name, rows), min_size=1, max_size=3))
        elif op in ("gt", "gte", "lt", "lte"):
            value = draw(_value(source, name, rows))
            if category in ("metadata", "number") and (value is None or isinstance(value, bool) or (
                    isinstance(value, str) and rule_number(value) is None)):
                value = draw(st.sampled_from([0, 1, 2.25, 3, 197, 197.5, "197"]))
            elif value is None:
                value = "m"
            spec[op] = value
        else:
            spec[op] = draw(_value(source, name, rows))
    if list(spec) == ["eq"]:
        return name, spec["eq"]  # the short form `column: value`
    return name, spec


@st.composite
def where(draw: st.DrawFn, source: str, rows: list[dict[str, Any]], max_size: int = 2) -> dict[str, Any]:
    size = draw(st.sampled_from([0, 0, 1, 1, 1, 2][: 3 + 3 * (max_size > 1)]))
    return dict(draw(st.lists(condition(source, rows), min_size=size, max_size=size, unique_by=lambda c: c[0])))


@st.composite
def rules(draw: st.DrawFn, source: str) -> dict[str, Any]:
    kind = draw(st.sampled_from([kind for kind in KINDS if kind != "cron_missed" or source == "events"]))
    window = draw(st.sampled_from(WINDOWS))
    rule: dict[str, Any] = {"name": "differential", "kind": kind, "source": source, "window": window}
    if kind not in ("cron_missed",):
        size = draw(st.sampled_from([0, 0, 1, 1, 2]))
        rule["group_by"] = draw(st.lists(st.sampled_from(GROUP_COLUMNS[source]), min_size=size, max_size=size, unique=True))
    if kind == "threshold":
        rule["threshold"] = {"op": draw(st.sampled_from([">", ">=", "<", "<=", "=="])), "value": draw(st.integers(0, 3))}
    elif kind == "ratio":
        rule["ratio"] = {"op": draw(st.sampled_from([">", ">=", "<", "<=", "=="])),
                         "value": draw(st.sampled_from([0, 0.25, 1 / 3, 0.5, 2 / 3, 0.75, 1]))}
        rule["min_total"] = draw(st.integers(1, 3))
    elif kind == "spike":
        rule.update(factor=draw(st.sampled_from([1, 1.5, 2, 3])), min_current=draw(st.integers(1, 3)),
                    direction=draw(st.sampled_from(["up", "down", "both"])),
                    min_reference=draw(st.sampled_from([0.5, 1, 2])))
        reference = draw(st.sampled_from([None, window, window * 2, window * 3, timedelta(hours=5)]))
        if reference is not None:
            rule["reference"] = reference
    elif kind == "metric":
        rule["aggregate"] = draw(st.sampled_from(["count", "count", "count", "sum", "avg", "min", "max", "p95"]))
        fields = COUNT_FIELDS if rule["aggregate"] == "count" else METRIC_FIELDS
        rule["field"] = draw(st.sampled_from(fields[source]))
        if draw(st.booleans()):
            rule["threshold"] = {"op": draw(st.sampled_from([">", ">=", "<", "<=", "=="])),
                                 "value": draw(st.sampled_from([0, 0, 1, 2, 2.5, 4, 197]))}
        else:
            rule["baseline"] = {"periods": draw(st.integers(1, 3)), "factor": draw(st.sampled_from([0.5, 1, 1.5, 2]))}
            min_value = draw(st.sampled_from([None, 0, 1, 3]))
            if min_value is not None:
                rule["min_value"] = min_value
    elif kind in ("absence", "new_value"):
        rule["lookback"] = draw(st.sampled_from([window, window * 2, timedelta(days=1)]))
        if kind == "new_value":
            rule["field"] = draw(st.sampled_from(NEW_VALUE_FIELDS[source]))
            rule["group_by"] = [name for name in rule["group_by"] if name != rule["field"]]
    elif kind == "any":
        rule["max_alerts"] = draw(st.sampled_from([1, 3, 50]))
    elif kind == "cron_missed":
        rule.update(grace=draw(st.sampled_from([timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1)])),
                    max_runs=draw(st.sampled_from([1, 3, 100])))
    return rule


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A store of one source's rows (and crons) and up to four rules over it."""
    source = draw(st.sampled_from(["jobs", "threads", "events", "events"]))
    rule_list = draw(st.lists(rules(source), min_size=1, max_size=4))
    moments = times(rule_list)
    store: dict[str, list[dict[str, Any]]] = {"jobs": [], "threads": [], "events": [], "crons": []}
    for i in range(draw(st.sampled_from([0, 1, 2, 3, 4, 6, 8, 12]))):
        store[source].append(draw(_row(source, i, moments)))
    graces = [rule["grace"] for rule in rule_list if rule["kind"] == "cron_missed"]
    if graces:
        _crons(draw, graces, store)
    # The conditions last, from what the rows hold, so that they select some rows and not others.
    for rule in rule_list:
        table_name = "crons" if rule["kind"] == "cron_missed" else source
        rule["where"] = draw(where(table_name, store[table_name]))
        if rule["kind"] == "ratio":
            rule["of"] = draw(where(source, store[source], max_size=1))
    formats = {}
    for name, rows in store.items():
        for row in rows:
            for column_name in TIME_COLUMNS[name]:
                if row.get(column_name) is not None:
                    formats[(name, row["id"], column_name)] = draw(st.integers(0, len(SQLITE_TIME_FORMATS) - 1))
    return Case(rule_list, store, formats)


@st.composite
def _row(draw: st.DrawFn, source: str, index: int, moments: st.SearchStrategy[datetime]) -> dict[str, Any]:
    values = {name: draw(st.sampled_from(pool)) for name, pool in TEXT_VALUES[source].items()}
    at = draw(moments)
    if source == "jobs":
        return {**values, "id": f"j{index:03d}", "team_id": "t1", "input_tokens": draw(st.integers(0, 6)),
                "output_tokens": draw(st.integers(0, 3)), "created_at": at,
                "started_at": draw(st.none() | moments), "finished_at": draw(st.none() | moments)}
    if source == "threads":
        return {**values, "id": f"t{index:03d}", "type": "chat", "team_id": "t1",
                "message_count": draw(st.integers(0, 5)), "created_at": at - timedelta(hours=1), "last_activity_at": at}
    return {**values, "id": f"e{index:03d}", "metadata": draw(metadata()), "created_at": at}


def _crons(draw: st.DrawFn, graces: list[timedelta], store: dict[str, list[dict[str, Any]]]) -> None:
    """Crons, and fires (or other events) at, around and after each grace's edge of their runs."""
    for index in range(draw(st.integers(1, 3))):
        cron = {name: draw(st.sampled_from(pool)) for name, pool in TEXT_VALUES["crons"].items()}
        cron.update(id=f"c{index}", schedule=draw(st.sampled_from(SCHEDULES)), enabled=draw(st.sampled_from([True, True, False])),
                    created_at=NOW - draw(st.sampled_from([timedelta(hours=2), timedelta(hours=7), timedelta(days=1),
                                                            timedelta(days=2)])) + draw(st.sampled_from([timedelta(0), MS])))
        store["crons"].append(cron)
        runs = list(expected_runs(cron["schedule"], cron["timezone"], NOW, cron["created_at"] - timedelta(hours=1)))[:6]
        for run in draw(st.lists(st.sampled_from(runs), max_size=4)) if runs else []:
            grace = draw(st.sampled_from(graces))
            delta = draw(st.sampled_from([timedelta(0), -MS, grace, grace, grace + MS, grace - MS, timedelta(minutes=1)]))
            fired_for = draw(st.sampled_from([cron["id"], cron["id"], "c9"]))
            event_type = draw(st.sampled_from(["cron.fired", "cron.fired", "cron.failed"]))
            store["events"].append({
                "id": f"f{len(store['events']):03d}", "event_type": event_type, "severity": "info",
                "description": "", "agent_id": cron["agent_id"], "metadata": {"cron_id": fired_for},
                "created_at": run + delta,
            })
