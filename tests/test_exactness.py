"""Where the engine once departed from the rule contract, on both backends.

- ``contains`` is case-insensitive beyond ASCII (Unicode's simple lowercase mapping);
- a ``metric`` count without ``group_by`` is 0 on an empty window, and fires on it;
- JSON numbers in event metadata compare as numbers, and ``eq``, ``in``, ``not``,
  ``not_in`` and the order operators agree with each other;
- the value of an alert is the value compared, not a rounded one;
- a SQLite file whose name holds ``#``, ``?`` or ``%`` is the file opened, read-only;
- a metadata key with ``"`` or ``\\`` is refused when the rule loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, literal, select, text
from sqlalchemy.exc import OperationalError

from audit_watch.cli.main import main
from audit_watch.rules.loader import RULE_ADAPTER
from audit_watch.store.rows import insert_rows
from audit_watch.store.schema import create_reference_tables
from audit_watch.store.source import AuditSource
from audit_watch.store.text_match import PG_COLLATIONS, unicode_lower

from conftest import NOW

# --- 1. contains beyond ASCII -------------------------------------------------------------


def test_contains_matches_a_non_ascii_capital_on_both_backends(insert, evaluate):
    """The minimal case of the issue: SQLite's lower() knew ASCII only."""
    insert({"jobs": [{"at": "-20h", "status": "failed", "error": "Über-Quota erreicht"}]})
    for needle in ("ÜBER", "Über", "über-quota", "QUOTA ERREICHT"):
        rule = {"kind": "threshold", "source": "jobs", "where": {"error": {"contains": needle}},
                "window": "1d", "threshold": {"op": ">=", "value": 1}}
        assert [a.value for a in evaluate(rule)] == [1], needle


@pytest.mark.parametrize(
    "stored, needle, matches",
    [
        ("ÜBER", "über", True),
        ("ΟΔΟΣ", "οδοσ", True),          # Σ lowers to σ
        ("ΟΔΟΣ", "οδος", False),         # no final-sigma rule: ς is another letter
        ("ẞ", "ß", True),                # capital sharp s lowers to ß
        ("STRASSE", "straße", False),    # ß is not "ss": that would be full case folding
        ("İstanbul", "istanbul", True),  # İ lowers to i (simple mapping, no combining dot)
        ("ISTANBUL", "ıstanbul", False),  # no Turkish rules: I lowers to i, not ı
        ("ǅ", "ǆ", True),                # title case lowers too
        ("ＡＢＣ", "ａｂｃ", True),          # full-width letters
        ("50% off", "%", True),
        ("a_b", "a_b", True),
        ("axb", "a_b", False),           # _ is literal
    ],
)
def test_contains_follows_the_simple_lowercase_mapping(insert, evaluate, stored, needle, matches):
    insert({"jobs": [{"at": "-5m", "error": stored}]})
    rule = {"kind": "any", "where": {"error": {"contains": needle}}, "window": "1h"}
    assert len(evaluate(rule)) == (1 if matches else 0)


def test_unicode_lower_is_the_simple_mapping():
    assert unicode_lower("İ") == "i" and "İ".lower() == "i\u0307"  # full mapping adds a combining dot
    assert unicode_lower("ΟΔΟΣ") == "οδοσ" and "ΟΔΟΣ".lower() == "οδος"  # no final-sigma context
    assert unicode_lower("ẞ ß SS ı") == "ß ß ss ı"


@pytest.mark.postgres
def test_postgresql_lowercase_agrees_with_the_definition_on_every_code_point(_postgres_source):
    """One query over all of Unicode: the collation picked gives exactly unicode_lower."""
    store = _postgres_source
    every = "".join(chr(cp) for cp in range(1, 0x110000) if not 0xD800 <= cp <= 0xDFFF)
    collation = store._lowercase_collation()
    if collation not in PG_COLLATIONS[:3]:
        pytest.skip(f"no simple-mapping collation here (got {collation!r}); ICU differs in U+0130 and final sigma")
    with store.connect() as conn:
        lowered = conn.execute(select(store.fold_case(literal(every)))).scalar_one()
    differing = [hex(ord(a)) for a, b in zip(every, lowered) if unicode_lower(a) != b]
    assert len(lowered) == len(every) and differing == []


# --- 2. metric count without group_by on an empty window ------------------------------


def test_metric_count_without_group_by_is_zero_on_an_empty_window(evaluate):
    """The minimal case of the issue: no threads at all, `count <= 0` fires with 0."""
    rule = {"kind": "metric", "source": "threads", "field": "message_count", "aggregate": "count",
            "window": "1d", "threshold": {"op": "<=", "value": 0}}
    alerts = evaluate(rule)
    assert [(a.group, a.value) for a in alerts] == [({}, 0)]
    # the same condition written as a threshold rule
    same = evaluate({"kind": "threshold", "source": "threads", "window": "1d", "threshold": {"op": "<=", "value": 0}})
    assert [(a.group, a.value) for a in same] == [({}, 0)]


@pytest.mark.parametrize("aggregate", ["sum", "avg", "min", "max", "p95"])
def test_metric_other_aggregates_of_nothing_do_not_fire(evaluate, insert, aggregate):
    insert({"threads": [{"at": "-2d", "message_count": 3}]})  # outside the window
    rule = {"kind": "metric", "source": "threads", "field": "message_count", "aggregate": aggregate,
            "window": "1d", "threshold": {"op": "<=", "value": 0}}
    assert evaluate(rule) == []


def test_metric_count_with_group_by_has_no_empty_groups(evaluate, insert):
    insert({"threads": [{"at": "-2d", "agent_id": "a1"}]})
    rule = {"kind": "metric", "source": "threads", "field": "message_count", "aggregate": "count",
            "group_by": ["agent_id"], "window": "1d", "threshold": {"op": "<=", "value": 0}}
    assert evaluate(rule) == []


def test_metric_count_baseline_without_group_by_compares_an_empty_window_as_zero(evaluate, insert):
    rule = {"kind": "metric", "source": "threads", "field": "message_count", "aggregate": "count",
            "window": "1h", "baseline": {"periods": 3, "factor": 2}, "min_value": 0}
    assert [(a.value, a.baseline) for a in evaluate(rule)] == [(0, None)]  # no baseline period: min_value 0 met
    insert({"threads": [{"at": "-90m"}]})
    assert evaluate(rule) == []  # a baseline of 1: 0 is not above 2


# --- 3. JSON numbers compare as numbers ---------------------------------------------------


@pytest.fixture
def metadata_ids(insert, evaluate):
    insert({"events": [
        {"id": "zero", "at": "-5m", "metadata": {"latency_ms": 0.0}},
        {"id": "int", "at": "-5m", "metadata": {"latency_ms": 197}},
        {"id": "float", "at": "-5m", "metadata": {"latency_ms": 197.0}},
        {"id": "half", "at": "-5m", "metadata": {"latency_ms": 197.5}},
        {"id": "text", "at": "-5m", "metadata": {"latency_ms": "197"}},
        {"id": "word", "at": "-5m", "metadata": {"latency_ms": "slow"}},
        {"id": "true", "at": "-5m", "metadata": {"latency_ms": True}},
        {"id": "null", "at": "-5m", "metadata": {"latency_ms": None}},
        {"id": "object", "at": "-5m", "metadata": {"latency_ms": {"p50": 197}}},
        {"id": "missing", "at": "-5m", "metadata": {}},
    ]})

    def _ids(condition):
        alerts = evaluate({"kind": "any", "source": "events", "where": {"metadata.latency_ms": condition},
                           "window": "1h", "max_alerts": 100})
        return sorted(a.group["id"] for a in alerts)

    return _ids


ALL_IDS = sorted(["zero", "int", "float", "half", "text", "word", "true", "null", "object", "missing"])


def test_a_json_number_equals_a_number_of_the_same_value(metadata_ids):
    """The minimal case of the issue: 0.0 and 197.0 were compared as text."""
    assert metadata_ids(0.0) == ["zero"]
    assert metadata_ids(0) == ["zero"]
    assert metadata_ids(197) == ["float", "int", "text"]       # and the string "197" by its text
    assert metadata_ids(197.0) == ["float", "int"]             # 197.0 as text is "197.0"
    assert metadata_ids("197") == ["float", "int", "text"]     # numeric text is the number too
    assert metadata_ids({"in": [197.0]}) == ["float", "int"]
    assert metadata_ids({"in": [0, 197.5]}) == ["half", "zero"]
    assert metadata_ids({"gte": 0, "lte": 0}) == ["zero"]
    assert metadata_ids({"not": 197}) == sorted(set(ALL_IDS) - {"float", "int", "text"})
    assert metadata_ids({"not_in": [197.0, 0]}) == sorted(set(ALL_IDS) - {"float", "int", "zero"})
    assert metadata_ids("slow") == ["word"]
    assert metadata_ids(True) == ["true"]
    assert metadata_ids(None) == ["missing", "null"]
    assert metadata_ids({"in": [None, "slow"]}) == ["missing", "null", "word"]
    assert metadata_ids({"not_in": [None, "slow"]}) == sorted(set(ALL_IDS) - {"missing", "null", "word"})
    assert metadata_ids({"contains": "SLO"}) == ["word"]
    assert metadata_ids({"contains": "97"}) == ["text"]          # contains reads JSON strings only


@pytest.mark.parametrize("number", [0, 0.0, 197, 197.0, 197.5, -1])
def test_metadata_operators_agree_with_each_other(metadata_ids, number):
    equal = metadata_ids(number)
    numeric_equal = sorted(set(metadata_ids({"gte": number, "lte": number})))
    assert set(numeric_equal) <= set(equal)                     # the numbers among them
    assert metadata_ids({"in": [number]}) == equal
    assert metadata_ids({"not": number}) == sorted(set(ALL_IDS) - set(equal))
    assert metadata_ids({"not_in": [number]}) == sorted(set(ALL_IDS) - set(equal))
    assert sorted(metadata_ids({"lt": number}) + numeric_equal + metadata_ids({"gt": number})) == sorted(
        ["zero", "int", "float", "half"])                       # every JSON number, once


def test_order_operator_on_a_metadata_key_takes_a_number():
    with pytest.raises(ValueError, match="takes a number"):
        RULE_ADAPTER.validate_python({"name": "r", "kind": "any", "source": "events",
                                      "where": {"metadata.latency_ms": {"gt": "slow"}}})


# --- 4. exact values, rounded only for display ----------------------------------------------


def test_ratio_and_metric_values_are_exact_in_alerts_and_json(insert, evaluate):
    insert({"jobs": [
        {"at": "-5m", "status": "failed", "input_tokens": 1},
        {"at": "-5m", "status": "complete", "input_tokens": 1},
        {"at": "-5m", "status": "complete", "input_tokens": 2},
    ]})
    ratio = evaluate({"kind": "ratio", "where": {"status": "failed"}, "window": "1h",
                      "ratio": {"op": ">", "value": 0.3}})
    assert [a.value for a in ratio] == [1 / 3]
    assert ratio[0].to_json()["value"] == 1 / 3
    avg = evaluate({"kind": "metric", "field": "input_tokens", "aggregate": "avg", "window": "1h",
                    "threshold": {"op": ">", "value": 1.3333}})
    assert [a.value for a in avg] == [4 / 3]


def test_baselines_are_exact(insert, evaluate):
    insert({"jobs": [{"at": "-5m", "count": 9}, {"at": "-90m", "count": 7}]})
    spike = evaluate({"kind": "spike", "window": "1h", "reference": "3h", "factor": 3, "min_current": 1})
    assert [(a.value, a.baseline) for a in spike] == [(9, 7 / 3)]
    insert({"jobs": [{"id": "older-1", "at": "-150m"}, {"id": "older-2", "at": "-210m"}]})
    metric = evaluate({"kind": "metric", "field": "input_tokens", "aggregate": "count", "window": "1h",
                       "baseline": {"periods": 3, "factor": 2}})
    assert [(a.value, a.baseline) for a in metric] == [(9, 3.0)]  # (7 + 1 + 1) / 3
    assert metric[0].details["ratio"] == 3.0


def test_test_rule_json_carries_the_exact_value(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    src = AuditSource.from_url(url, readonly=False)
    create_reference_tables(src.engine, src.tables)
    insert_rows(src.engine, src.tables, {"jobs": [
        {"at": "-5m", "status": "failed"}, {"at": "-5m", "status": "complete", "count": 2},
    ]}, NOW)
    src.engine.dispose()
    rule = tmp_path / "rule.yaml"
    rule.write_text("name: r\nkind: ratio\nwhere: {status: failed}\nwindow: 1h\nratio: {op: '>', value: 0.3}\n")
    result = CliRunner().invoke(main, ["test-rule", str(rule), "--source", url, "--now", NOW.isoformat(), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["alerts"][0]["value"] == 1 / 3


# --- 5. SQLite file names with URI characters (#11) ---------------------------------------


@pytest.mark.parametrize("name", ["a#b.db", "a?b.db", "a%20b.db", "x y#?%.db"])
def test_a_sqlite_file_named_with_uri_characters_is_the_file_read_read_only(tmp_path: Path, name: str):
    path = tmp_path / name
    writer = AuditSource.from_url(f"sqlite:///{quote(str(path))}", readonly=False)
    create_reference_tables(writer.engine, writer.tables)
    insert_rows(writer.engine, writer.tables, {"jobs": [{"at": "-5m", "status": "failed"}]}, NOW)
    writer.engine.dispose()
    before = sorted(os.listdir(tmp_path))
    assert before == [name]

    src = AuditSource.from_url(f"sqlite:///{quote(str(path))}")  # read-only, as the daemon opens it
    rule = RULE_ADAPTER.validate_python({"name": "r", "kind": "threshold", "where": {"status": "failed"},
                                         "window": "1h", "threshold": {"op": ">=", "value": 1}})
    from audit_watch.rules.evaluate import evaluate_rule

    evaluation = evaluate_rule(rule, src, NOW)
    assert evaluation.error is None and [a.value for a in evaluation.alerts] == [1]
    with pytest.raises(OperationalError, match="readonly"), src.engine.begin() as conn:
        conn.execute(insert(src.tables["teams"]).values(id="t9", name="x"))
    src.engine.dispose()
    assert sorted(os.listdir(tmp_path)) == before  # no other file created beside it


def test_a_missing_sqlite_store_is_an_error_not_a_new_file(tmp_path: Path):
    src = AuditSource.from_url(f"sqlite:///{quote(str(tmp_path / 'absent#1.db'))}")
    with pytest.raises(OperationalError), src.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert os.listdir(tmp_path) == []


# --- 6. metadata keys with quotes or backslashes (#11) ------------------------------------


@pytest.mark.parametrize("key", ['metadata.a"b', "metadata.a\\b"])
@pytest.mark.parametrize("place", ["where", "group_by", "field"])
def test_a_metadata_key_with_a_quote_or_backslash_is_refused_at_load(tmp_path: Path, key: str, place: str):
    (tmp_path / "rules").mkdir()
    (tmp_path / "audit-watch.yaml").write_text("rules: [rules/]\n")
    lines = ["name: r", "source: events", "window: 1h"]
    if place == "where":
        lines += ["kind: any", "where:", f"  {json.dumps(key)}: x"]
    elif place == "group_by":
        lines += ["kind: threshold", "threshold: {op: '>=', value: 1}", f"group_by: [{json.dumps(key)}]"]
    else:
        lines += ["kind: new_value", "lookback: 1d", f"field: {json.dumps(key)}"]
    (tmp_path / "rules" / "r.yaml").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "audit-watch.yaml"), "check"])
    assert result.exit_code == 1, result.output
    line = len(lines)  # the key is on the file's last line
    assert f"r.yaml:{line}: {place}" in result.output, result.output
    assert 'a metadata key cannot hold " or \\' in result.output


def test_a_metadata_key_with_other_punctuation_still_matches_on_both_backends(insert, evaluate):
    key = "weird key.with 'quotes' [and] $"
    insert({"events": [{"at": "-5m", "metadata": {key: "v"}}, {"at": "-5m", "metadata": {"other": "v"}}]})
    alerts = evaluate({"kind": "threshold", "source": "events", "where": {f"metadata.{key}": "v"},
                       "window": "1h", "threshold": {"op": ">=", "value": 0}})
    assert [a.value for a in alerts] == [1]



@pytest.mark.parametrize("written, passes", [("0.3333", True), ("0.333", True), ("0.3333333333333333", True),
                                             ("0.3334", False), ("0.33334", False)])
def test_a_rule_test_may_write_the_value_rounded(tmp_path: Path, written: str, passes: bool):
    (tmp_path / "rule.yaml").write_text(
        "name: share\nkind: ratio\nwhere: {status: failed}\nwindow: 1h\nratio: {op: '>', value: 0.3}\n")
    tests = tmp_path / "rule.test.yaml"
    tests.write_text(f"""\
rule_files: [rule.yaml]
tests:
  - name: one failed job in three
    now: 2026-11-20T12:00:00Z
    rows:
      jobs: [{{at: -1m, status: failed}}, {{at: -1m, status: complete, count: 2}}]
    expect:
      - rule: share
        alerts: [{{group: {{}}, value: {written}}}]
""")
    result = CliRunner().invoke(main, ["test-rules", str(tests)])
    assert result.exit_code == (0 if passes else 1), result.output
