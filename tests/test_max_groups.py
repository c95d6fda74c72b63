"""max_groups: every kind keeps at most that many firing groups, the most severe first,
and counts every firing group; what is left out is summarised, never resolved by mistake."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from audit_watch.alerting.notify import decide
from audit_watch.alerting.pipeline import process
from audit_watch.alerting.state import StateStore
from audit_watch.alerting.views import alerts_table
from audit_watch.cli.main import main
from audit_watch.cli.terminal import states_view
from audit_watch.config.model import Config
from audit_watch.core.yaml_source import InputError
from audit_watch.rules.evaluate import Evaluation, evaluate_rule
from audit_watch.rules.loader import RULE_ADAPTER, load_rule_file, load_rules
from audit_watch.rules.model import DEFAULT_MAX_GROUPS, MAX_GROUPS_CEILING
from audit_watch.store.rows import insert_rows
from audit_watch.store.schema import create_reference_tables
from audit_watch.store.source import AuditSource

from conftest import NOW
from test_state import make_alert, make_rule, state, state_url

AGENTS = [f"a{i}" for i in range(1, 6)]


def jobs_per_agent(**row: Any) -> list[dict[str, Any]]:
    """Agent a<i> gets i rows (a5 the most)."""
    return [{"agent_id": f"a{i}", "count": i, **row} for i in range(1, 6)]


# Each case: (rule, rows) where groups a1..a5 (u1..u5, c1..c5) fire and the expected two
# most severe are the "5" and the "4" ones.
CASES: dict[str, tuple[dict[str, Any], dict[str, list[dict[str, Any]]], list[Any]]] = {
    "threshold": (
        {"kind": "threshold", "where": {"status": "failed"}, "group_by": ["agent_id"],
         "threshold": {"op": ">=", "value": 1}},
        {"jobs": jobs_per_agent(at="-5m", status="failed")},
        [("a5", 5), ("a4", 4)],
    ),
    "threshold below": (  # for "<" the most severe is the smallest count
        {"kind": "threshold", "group_by": ["agent_id"], "threshold": {"op": "<", "value": 10}},
        {"jobs": jobs_per_agent(at="-5m")},
        [("a1", 1), ("a2", 2)],
    ),
    "ratio": (
        {"kind": "ratio", "where": {"status": "failed"}, "group_by": ["agent_id"],
         "ratio": {"op": ">=", "value": 0.05}},
        {"jobs": jobs_per_agent(at="-5m", status="failed")
         + [{"agent_id": a, "count": 10 - int(a[1:]), "at": "-5m", "status": "complete"} for a in AGENTS]},
        [("a5", 0.5), ("a4", 0.4)],
    ),
    "spike": (
        {"kind": "spike", "group_by": ["agent_id"], "factor": 2, "min_current": 1, "reference": "1h"},
        {"jobs": jobs_per_agent(at="-5m")},
        [("a5", 5), ("a4", 4)],
    ),
    "metric": (
        {"kind": "metric", "field": "input_tokens", "aggregate": "sum", "group_by": ["agent_id"],
         "threshold": {"op": ">", "value": 0}},
        {"jobs": [{"agent_id": a, "input_tokens": 100 * int(a[1:]), "at": "-5m"} for a in AGENTS]},
        [("a5", 500), ("a4", 400)],
    ),
    "metric baseline": (  # the largest multiple of the baseline first, not the largest value
        {"kind": "metric", "field": "input_tokens", "aggregate": "sum", "group_by": ["agent_id"],
         "baseline": {"periods": 1, "factor": 1}},
        {"jobs": [{"agent_id": a, "input_tokens": 1000, "at": "-5m"} for a in AGENTS]
         + [{"agent_id": a, "input_tokens": 1000 // (int(a[1:]) + 1), "at": "-20m"} for a in AGENTS]},
        [("a5", 1000), ("a4", 1000)],
    ),
    "absence": (  # the longest silence first
        {"kind": "absence", "group_by": ["agent_id"], "lookback": "1d"},
        {"jobs": [{"agent_id": a, "at": f"-{int(a[1:])}h"} for a in AGENTS]},
        [("a5", 0), ("a4", 0)],
    ),
    "new_value": (  # the busiest new value first
        {"kind": "new_value", "source": "events", "where": {"event_type": "auth.login"}, "group_by": ["user_id"],
         "field": "metadata.ip", "lookback": "7d"},
        {"events": [{"user_id": f"u{i}", "event_type": "auth.login", "metadata": {"ip": f"10.0.0.{i}"},
                     "at": "-5m", "count": i} for i in range(1, 6)]},
        [("u5", 5), ("u4", 4)],
    ),
    "cron_missed": (  # the longest silence first: stopped five days ago
        {"kind": "cron_missed"},
        {"crons": [{"id": f"c{i}", "name": f"cron {i}", "schedule": "0 9 * * *", "created_at": "-30d"}
                   for i in range(1, 6)],
         "events": [{"event_type": "cron.fired", "metadata": {"cron_id": f"c{i}"}, "at": f"-{24 * i + 3}h"}
                    for i in range(1, 6)]},   # the 09:00 run i days ago
        [("c5", 5), ("c4", 4)],
    ),
}


def _key(alert: Any) -> Any:
    group = alert.group
    return group.get("agent_id") or group.get("user_id") or group.get("cron_id")


@pytest.mark.parametrize("case", list(CASES))
def test_each_kind_keeps_the_most_severe_groups_and_counts_them_all(case: str, insert: Any, evaluate: Any,
                                                                     store: AuditSource) -> None:
    rule, rows, expected = CASES[case]
    insert(rows)
    everything = evaluate({**rule, "max_groups": 100})
    assert len({_key(a) for a in everything}) == 5
    assert {(a.firing_groups, a.tracked_groups, a.groups_summary) for a in everything} == {(5, 5, None)}
    validated = RULE_ADAPTER.validate_python({"name": "rule-under-test", **rule, "max_groups": 2})
    evaluation = evaluate_rule(validated, store, NOW)
    assert evaluation.error is None
    assert [(_key(a), a.value) for a in evaluation.alerts] == expected
    assert evaluation.firing_groups == 5 and evaluation.left_out == 3 and not evaluation.complete
    assert {(a.firing_groups, a.tracked_groups) for a in evaluation.alerts} == {(5, 2)}


def test_the_summary_names_the_groups() -> None:
    alert = make_alert(firing_groups=3000, tracked_groups=1000)
    assert alert.groups_summary == "3,000 agents firing; the 1,000 most severe are tracked"
    assert make_alert(firing_groups=12, tracked_groups=12).groups_summary is None
    assert make_alert().groups_summary is None   # a record written before the counts existed
    pair = make_alert(group={"user_id": "u1", "metadata.ip": "1.2.3.4"}, firing_groups=5, tracked_groups=2)
    assert pair.groups_summary == "5 user and ip pairs firing; the 2 most severe are tracked"


def test_ties_keep_the_same_groups_at_every_evaluation(insert: Any, evaluate: Any) -> None:
    insert({"jobs": [{"agent_id": f"a{i:02d}", "at": "-5m", "status": "failed"} for i in range(20)]})
    rule = {"kind": "threshold", "where": {"status": "failed"}, "group_by": ["agent_id"],
            "threshold": {"op": ">=", "value": 1}, "max_groups": 5}
    first = [a.group["agent_id"] for a in evaluate(rule)]
    assert first == ["a00", "a01", "a02", "a03", "a04"]
    assert [a.group["agent_id"] for a in evaluate(rule, now=NOW + timedelta(minutes=1))] == first


# --- the key ------------------------------------------------------------------------------


def test_max_groups_defaults_and_bounds() -> None:
    threshold = {"name": "r", "kind": "threshold", "threshold": {"op": ">=", "value": 1}}
    assert RULE_ADAPTER.validate_python(threshold).max_groups == DEFAULT_MAX_GROUPS == 1000
    assert RULE_ADAPTER.validate_python({"name": "r", "kind": "any"}).max_groups == 50
    assert RULE_ADAPTER.validate_python({"name": "r", "kind": "any", "max_alerts": 7}).max_groups == 7
    assert RULE_ADAPTER.validate_python({**threshold, "max_groups": MAX_GROUPS_CEILING}).max_groups == 10_000


@pytest.mark.parametrize(
    "extra, message",
    [
        ("max_groups: 0", "rule.yaml:5: max_groups: Input should be greater than or equal to 1"),
        ("max_groups: 10001", "rule.yaml:5: max_groups: Input should be less than or equal to 10000"),
        ("max_groups: lots", "rule.yaml:5: max_groups: Input should be a valid integer, unable to parse string as an integer"),
    ],
)
def test_bad_max_groups_is_a_file_line_problem(tmp_path: Path, extra: str, message: str) -> None:
    path = tmp_path / "rule.yaml"
    path.write_text(f"name: r\nkind: threshold\nthreshold: {{op: '>=', value: 1}}\nwindow: 15m\n{extra}\n")
    problems = [str(p) for p in load_rules([path]).problems]
    assert len(problems) == 1 and problems[0].endswith(message), problems


def test_max_alerts_and_max_groups_together_must_agree(tmp_path: Path) -> None:
    path = tmp_path / "rule.yaml"
    path.write_text("name: r\nkind: any\nmax_alerts: 5\nmax_groups: 6\n")
    with pytest.raises(InputError) as caught:
        load_rule_file(path)
    assert "rule.yaml:3: max_alerts: max_alerts is the older name of max_groups" in str(caught.value)
    path.write_text("name: r\nkind: any\nmax_alerts: 5\nmax_groups: 5\n")
    assert load_rule_file(path)[0].max_groups == 5


# --- what is left out is not resolved -------------------------------------------------------


def test_an_incomplete_evaluation_holds_the_alerts_below_the_cut() -> None:
    rule = make_rule()
    a1, a2 = make_alert("a1", value=9), make_alert("a2", value=8)
    first = decide(rule, {}, [a1, a2], NOW, [])
    prior = {s.fingerprint: s for s in first.changed}
    assert {s.state for s in prior.values()} == {"firing"}
    # a2 ranked below the cut: 3 groups fire, only a1 and a3 are kept
    later = NOW + timedelta(minutes=1)
    held = decide(rule, prior, [make_alert("a1", value=9, now=later), make_alert("a3", value=8, now=later)],
                  later, [], complete=False)
    states = {s.group["agent_id"]: s for s in held.changed}
    assert states["a2"].state == "firing" and states["a2"].last_evaluated_at == later
    assert states["a2"].last_seen_at == NOW and states["a2"].alert["value"] == 8
    assert [c.kind for c in held.events] == ["firing"]          # only a3 is news
    # once every firing group is kept again, a2's absence means it stopped
    prior = {s.fingerprint: s for s in held.changed}
    done = decide(rule, prior, [make_alert("a1", now=later + timedelta(minutes=1))], later + timedelta(minutes=1), [])
    resolved = {s.group["agent_id"] for s in done.changed if s.state == "resolved"}
    assert resolved == {"a2", "a3"}


def test_alerts_shows_the_rule_total(state: StateStore) -> None:
    config = Config.model_validate({"channels": {"archive": {"type": "file", "path": "/nonexistent"}}})
    rule = make_rule(notify=[])
    alerts = [make_alert(f"a{i}", firing_groups=3000, tracked_groups=2) for i in (1, 2)]
    process([Evaluation(rule, NOW, alerts, firing_groups=3000, complete=False)], config, state, NOW)
    rows = alerts_table(state)
    assert {(r.firing_groups, r.tracked_groups) for r in rows} == {(3000, 2)}
    assert rows[0].groups_summary == "3,000 agents firing; the 2 most severe are tracked"
    caption = states_view(rows).caption
    assert caption is not None and str(caption).startswith("failed-jobs: 3,000 agents firing; the 2 most severe")


# --- test-rule -----------------------------------------------------------------------------


def test_test_rule_json_states_the_true_total(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    src = AuditSource.from_url(url, readonly=False)
    create_reference_tables(src.engine, src.tables)
    insert_rows(src.engine, src.tables, {"jobs": jobs_per_agent(at="-5m", status="failed")}, NOW)
    src.engine.dispose()
    rule = tmp_path / "rule.yaml"
    rule.write_text("name: failing\nkind: threshold\nwhere: {status: failed}\ngroup_by: [agent_id]\n"
                    "threshold: {op: '>=', value: 2}\nmax_groups: 3\n")
    args = ["test-rule", str(rule), "--source", url, "--now", NOW.isoformat()]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["firing_groups"], data["max_groups"], len(data["alerts"])) == (4, 3, 3)
    assert data["groups_summary"] == "4 agents firing; the 3 most severe are tracked"
    assert [a["group"]["agent_id"] for a in data["alerts"]] == ["a5", "a4", "a3"]
    table = CliRunner().invoke(main, args)
    assert "4 agents firing; the 3 most severe are tracked" in table.output
