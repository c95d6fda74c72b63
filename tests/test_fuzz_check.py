"""Property: whatever the rule files, config and report definitions say, ``check`` and
``test-rule`` answer without a traceback, and every problem is ``file:line: ...``.

Hypothesis generates valid inputs and breaks them: wrong types, unknown keys, bad
durations and crons, unicode and control characters, huge numbers, deep nesting,
missing environment variables, broken YAML, bytes that are not UTF-8.

``make test`` runs a small fixed-seed budget; a big run by hand::

    AUDIT_WATCH_FUZZ_EXAMPLES=10000 .venv/bin/python -m pytest -q tests/test_fuzz_check.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit_watch.cli.main import main
from audit_watch.store.schema import create_reference_tables
from audit_watch.store.source import AuditSource

EXAMPLES = int(os.environ.get("AUDIT_WATCH_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ENV = {"AW_FUZZ_SET": "set-value-from-env", "AW_FUZZ_NUMBER": "5"}   # AW_FUZZ_MISSING is never set
PROBLEM = re.compile(r"^(?P<file>.+?):(?P<line>[1-9]\d*): (?P<rest>\S.*)$")
NOW = "2026-11-20T12:00:00Z"

# --- values, good and bad ------------------------------------------------------------------------

UNITS = "smhdw"
good_duration = st.builds(lambda n, u: f"{n}{u}", st.integers(1, 500), st.sampled_from(UNITS))
bad_duration = st.one_of(
    st.sampled_from(["0s", "-5m", "15x", "", "1.5h", "m", "5 m", "1e9d", "99999999999999999999w", "∞", "5m5s"]),
    st.builds(lambda n, u: f"{n}{u}", st.integers(10**6, 10**30), st.sampled_from(UNITS)),
    st.integers(-10**20, 10**20), st.floats(allow_nan=True, allow_infinity=True),
)
weird_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
    st.sampled_from(["\r\nBcc: x@example.com", "\x00", "\u202e", "🔥", "${AW_FUZZ_MISSING}", "${AW_FUZZ_SET}",
                     "${AW_FUZZ_NUMBER}", "${", "$${x}", "{{ 7 * 7 }}", "{% raw %}", "'", '"', "\\", "..", "/"]),
)
scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**40, 10**40), st.floats(allow_nan=True), weird_text)


def nested(depth: int) -> Any:
    """A value nested ``depth`` levels deep (lists or mappings)."""
    value: Any = "x"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


junk = st.one_of(
    scalar,
    st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                 st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                 max_leaves=12),
    st.integers(50, 250).map(nested),     # deeper still: the "deep" files below (text)
)

# --- rules ------------------------------------------------------------------------------------------

OPS = [">", ">=", "<", "<=", "=="]
comparison = st.fixed_dictionaries({"op": st.sampled_from(OPS), "value": st.integers(0, 1000)})
COLUMNS = {
    "jobs": ["status", "agent_id", "model", "job_type", "error", "input_tokens", "total_tokens", "created_at"],
    "threads": ["agent_id", "source", "type", "message_count", "last_activity_at", "name"],
    "events": ["event_type", "severity", "agent_id", "metadata.ip", "metadata.cron_id", "metadata.a b", "created_at"],
}
value = st.one_of(st.sampled_from(["failed", "complete", "2026-11-20T10:00:00Z", "12", "x"]), st.integers(-5, 10**6),
                  st.floats(allow_nan=False), st.booleans(), st.none())
condition = st.one_of(
    value,
    st.fixed_dictionaries({"in": st.lists(value, min_size=1, max_size=3)}),
    st.fixed_dictionaries({"not_in": st.lists(value, min_size=1, max_size=3)}),
    st.fixed_dictionaries({"not": value}),
    st.dictionaries(st.sampled_from(["gt", "gte", "lt", "lte"]), value, min_size=1, max_size=2),
    st.fixed_dictionaries({"contains": st.text(max_size=10)}),
    st.fixed_dictionaries({"exists": st.booleans()}),
)


def where(source: str) -> Any:
    return st.dictionaries(st.sampled_from(COLUMNS[source]), condition, max_size=3)


KIND_KEYS: dict[str, Any] = {
    "threshold": st.fixed_dictionaries({"threshold": comparison}),
    "ratio": st.fixed_dictionaries({"ratio": st.fixed_dictionaries({"op": st.sampled_from(OPS),
                                                                     "value": st.floats(0, 1)}),
                                    "min_total": st.integers(1, 50)}, optional={"of": where("jobs")}),
    "spike": st.fixed_dictionaries({}, optional={"factor": st.floats(1, 10), "min_current": st.integers(1, 9),
                                                 "reference": good_duration,
                                                 "direction": st.sampled_from(["up", "down", "both"])}),
    "metric": st.one_of(
        st.fixed_dictionaries({"field": st.sampled_from(["input_tokens", "total_tokens"]), "threshold": comparison,
                               "aggregate": st.sampled_from(["sum", "avg", "min", "max", "p95", "count"])}),
        st.fixed_dictionaries({"field": st.just("total_tokens"),
                               "baseline": st.fixed_dictionaries({"periods": st.integers(1, 10),
                                                                  "factor": st.floats(0.1, 5)})}),
    ),
    "absence": st.fixed_dictionaries({"lookback": good_duration}),
    "cron_missed": st.fixed_dictionaries({}, optional={"grace": good_duration}),
    "new_value": st.fixed_dictionaries({"field": st.sampled_from(["model", "agent_id"]), "lookback": good_duration}),
    "any": st.fixed_dictionaries({}, optional={"max_alerts": st.integers(1, 100)}),
}
rule_name = st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,20}\Z")


@st.composite
def valid_rule(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(KIND_KEYS)))
    rule: dict[str, Any] = {"name": draw(rule_name), "kind": kind, **draw(KIND_KEYS[kind])}
    if kind in ("threshold", "spike", "absence", "any"):
        rule["source"] = draw(st.sampled_from(sorted(COLUMNS)))
    if kind != "cron_missed":
        source = rule.get("source", "jobs")
        rule["where"] = draw(where(source))
        rule["group_by"] = draw(st.lists(st.sampled_from(["agent_id", "model" if source == "jobs" else "team_id"]),
                                         max_size=2, unique=True))
    rule["window"] = draw(good_duration)
    if draw(st.booleans()):
        rule["every"] = draw(good_duration)
    elif draw(st.booleans()):
        rule["schedule"] = draw(st.sampled_from(["*/5 * * * *", "0 9 * * 1-5", "30 6 * * *"]))
    for key, values in {"severity": st.sampled_from(["info", "warning", "critical"]), "for": good_duration,
                        "repeat": good_duration, "notify": st.just(["archive"]),
                        "labels": st.dictionaries(rule_name, st.text(max_size=10), max_size=2),
                        "description": st.text(max_size=30).filter(lambda t: "${" not in t), "timezone": st.sampled_from(["UTC", "Europe/Berlin"])}.items():
        if draw(st.booleans()):
            rule[key] = draw(values)
    return rule


# Where the config names folders to search, junk stays inside the deployment: a "/" or
# ".." there would have check read every YAML file of the machine.
SAFE_PATHS = ["rules/", "rules", "./rules", "missing-folder/", "rules/nothing.yaml"]
PATH_KEYS = ("rules", "reports", "templates")
path_junk = st.one_of(st.lists(st.sampled_from(SAFE_PATHS), max_size=3), st.sampled_from(SAFE_PATHS), scalar.filter(
    lambda v: not isinstance(v, str)), st.dictionaries(st.sampled_from(SAFE_PATHS), st.none(), max_size=2))


@st.composite
def broken(draw: Any, base: Any) -> Any:
    """``base`` with up to three things wrong with it (or nothing: valid inputs too)."""
    item = draw(base)
    for _ in range(draw(st.integers(0, 3))):
        keys = sorted(item, key=str)
        action = draw(st.sampled_from(["replace", "drop", "add", "duration", "env", "text"]))
        if action in ("replace", "text") and keys:
            key = draw(st.sampled_from(keys))
            item[key] = draw(path_junk if key in PATH_KEYS else junk if action == "replace" else weird_text)
        elif action == "drop" and keys:
            item.pop(draw(st.sampled_from(keys)))
        elif action == "add":
            key = draw(st.one_of(st.text(max_size=12), st.sampled_from(["notfiy", "windw", "kind"])))
            if key not in PATH_KEYS:
                item[key] = draw(junk)
        elif action == "duration":
            item[draw(st.sampled_from(["window", "every", "for", "repeat", "lookback", "grace", "catch_up"]))] = \
                draw(bad_duration)
        elif action == "env" and keys:
            item[draw(st.sampled_from(keys))] = draw(st.sampled_from(["${AW_FUZZ_MISSING}", "${AW_FUZZ_SET}",
                                                                      "${AW_FUZZ_NUMBER}"]))   # none is a path
    return item


def as_yaml(value: Any) -> str:
    return yaml.safe_dump(value, allow_unicode=True, sort_keys=False)


@st.composite
def yaml_file(draw: Any, items: Any, list_key: str) -> str | bytes:
    """A file of one item, a list of items, or text that is broken as YAML or as UTF-8."""
    shape = draw(st.sampled_from(["one", "list", "list", "cut", "junk", "text", "bytes", "deep", "odd"]))
    if shape == "one":
        return as_yaml(draw(items))
    if shape == "list":
        return as_yaml({list_key: draw(st.lists(items, max_size=4))})
    if shape == "cut":                          # a valid file cut short, or with a character slipped in
        text = as_yaml({list_key: draw(st.lists(items, min_size=1, max_size=3))})
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from(["", "\t", ":", "[", "{", "- ", "&a *b", "!!python/object:os.system"]))
    if shape == "junk":
        return as_yaml(draw(junk))
    if shape == "bytes":
        return draw(st.binary(max_size=60)) + b"\xff\xfe"
    if shape == "deep":
        depth = draw(st.integers(100, 5000))
        return draw(st.sampled_from(["[" * depth + "]" * depth, "{a: " * depth + "1" + "}" * depth,
                                     "".join(f"{'  ' * i}k:\n" for i in range(min(depth, 400))) + "  " * 400 + "v\n"]))
    if shape == "odd":                          # YAML features a config never needs, used hostilely
        return draw(st.sampled_from([LAUGHS, "when: 2026-13-45\n", "a: !!binary '%%%'\n", "a: !!float x\n",
                                     "? [a, b]\n: 1\n", "a: &x {b: *x}\n", "%YAML 9.9\n---\na: 1\n",
                                     "a: 1\n---\nb: 2\n", "a: !!python/name:os.system\n", "<<: [1, 2]\n"]))
    return draw(st.text(max_size=200))


# Nine levels of nine aliases: a billion values if expanded.
LAUGHS = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))


# --- report definitions and the config ----------------------------------------------------------------

report_base = st.fixed_dictionaries(
    {"name": rule_name, "report": st.sampled_from(["weekly-digest", "compliance", "token-usage", "triage"])},
    optional={"schedule": st.sampled_from(["0 8 * * 1", "* * *", "61 * * * *", "0 8 * * mon"]),
              "channels": st.just(["archive"]), "period": st.sampled_from(["7d", "last_week", "yesterday", "0d", "x"]),
              "timezone": st.sampled_from(["UTC", "Europe/Berlin", "Mars/Olympus", "../../etc/passwd", "/etc/localtime"]),
              "scope": st.fixed_dictionaries({}, optional={"team": st.text(max_size=8), "user": st.text(max_size=8)}),
              "catch_up": st.one_of(good_duration, bad_duration), "top": st.integers(-3, 10**9),
              "working_hours": st.sampled_from(["07:00-20:00", "25:00-26:00", "9-5", "20:00-07:00"]),
              "working_days": st.lists(st.sampled_from(["mon", "fri", "Sun", "noday"]), max_size=3),
              "budgets": st.dictionaries(st.text(max_size=5), st.integers(-5, 10**30), max_size=2),
              "template": st.sampled_from(["weekly_digest", "../x", "a b"])},
)
channel = st.one_of(
    st.fixed_dictionaries({"type": st.just("file"), "path": st.just("./outbox")},
                          optional={"format": st.sampled_from(["json", "text", "both", "xml"])}),
    st.fixed_dictionaries({"type": st.just("slack"), "token": st.sampled_from(["xoxb-1", "${AW_FUZZ_SET}"]),
                           "channel": st.just("#ops")}, optional={"base_url": weird_text}),
    st.fixed_dictionaries({"type": st.just("slack_webhook"),
                           "url": st.sampled_from(["https://hooks.slack.com/services/T/B/x", "hooks.slack.com/x",
                                                   "${AW_FUZZ_MISSING}", "ftp://x/y", "https://"])}),
    st.fixed_dictionaries({"type": st.just("email"), "host": st.just("smtp.example.com"),
                           "from": st.just("a@example.com"), "to": st.just(["b@example.com"])},
                          optional={"port": st.one_of(st.integers(-1, 10**10), st.just("${AW_FUZZ_NUMBER}")),
                                    "timeout": st.one_of(good_duration, bad_duration)}),
)
config_base = st.fixed_dictionaries(
    {"rules": st.just(["rules/"]), "reports": st.just(["reports/"]),
     "channels": st.dictionaries(st.sampled_from(["archive", "hook", "mail", "x y"]), channel, max_size=3)
     .map(lambda c: {"archive": {"type": "file", "path": "./outbox"}, **c})},
    optional={"timezone": st.sampled_from(["UTC", "Nowhere/City", "Europe/Berlin"]),
              "templates": st.lists(st.sampled_from(SAFE_PATHS), max_size=2),
              "links": st.fixed_dictionaries({}, optional={"base_url": weird_text, "max_rows": st.integers(-1, 99)}),
              "state": st.fixed_dictionaries({"url": st.sampled_from(["sqlite:///state.db", "postgresql://u:p@h/db"])}),
              "source": st.fixed_dictionaries({}, optional={"statement_timeout": st.one_of(good_duration, bad_duration),
                                                            "tables": st.dictionaries(st.sampled_from(["jobs", "x"]),
                                                                                      st.text(max_size=5), max_size=2)}),
              "daemon": st.fixed_dictionaries({}, optional={
                  "listen": st.sampled_from(["127.0.0.1:9464", "nohost", ":99999", None]),
                  "workers": st.integers(-1, 1000), "notify": st.just(["archive", "nope"]),
                  "heartbeat": st.fixed_dictionaries({}, optional={"url": st.sampled_from(["https://hc/x", "hc/x"]),
                                                                   "channel": st.just("archive"),
                                                                   "every": st.one_of(good_duration, bad_duration)}),
                  "freshness": st.fixed_dictionaries({}, optional={"max_silence": bad_duration,
                                                                   "tables": st.lists(st.text(max_size=6))}),
                  "ledger_retention": st.one_of(good_duration, bad_duration)}),
              "delivery": st.fixed_dictionaries({}, optional={"max_age": st.one_of(good_duration, bad_duration)})},
)


@st.composite
def deployment(draw: Any) -> dict[str, str | bytes]:
    """The files of one deployment: config, rule files, report definitions."""
    files: dict[str, str | bytes] = {}
    config = draw(broken(config_base))
    files["audit-watch.yaml"] = draw(st.one_of(st.just(as_yaml(config)), yaml_file(st.just(config), "rules")))
    for index in range(draw(st.integers(0, 3))):
        files[f"rules/r{index}.yaml"] = draw(yaml_file(broken(valid_rule()), "rules"))
    for index in range(draw(st.integers(0, 2))):
        files[f"reports/d{index}.yaml"] = draw(yaml_file(broken(report_base), "reports"))
    return files


# --- running them -------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def bundled_templates_checked_once() -> Iterator[None]:
    """Templates are not what is fuzzed here, and compiling the bundled ones is most
    of a check's time: they are checked once, the config's own folders every time."""
    from audit_watch.channels.render import BUNDLED_TEMPLATES
    from audit_watch.cli import check

    real = check.check_template_dirs
    bundled = real([BUNDLED_TEMPLATES])
    assert bundled[0] > 0 and bundled[1] == []

    def cached(folders: list[Path]) -> tuple[int, list[Any]]:
        count, problems = real([f for f in folders if f != BUNDLED_TEMPLATES])
        return count + bundled[0], problems

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(check, "check_template_dirs", cached)
        yield


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("fuzz-store")
    url = f"sqlite:///{folder / 'audit.db'}"
    src = AuditSource.from_url(url, readonly=False)
    create_reference_tables(src.engine, src.tables)
    src.engine.dispose()
    return url


def write(folder: Path, files: dict[str, str | bytes]) -> None:
    for folder_name in ("rules", "reports"):
        (folder / folder_name).mkdir(exist_ok=True)
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")


def assert_problems_only(result: Result, folder: Path, allowed_codes: tuple[int, ...]) -> list[str]:
    """No exception, no traceback; every line of standard error a ``file:line: ...`` problem
    about one of the deployment's files (or the count of them). Returns those lines."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in allowed_codes, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    problems = [line for line in result.stderr.splitlines() if not re.fullmatch(r"\d+ problem\(s\)\.", line)]
    for line in problems:
        match = PROBLEM.match(line)
        assert match, f"not file:line: message: {line!r}"
        assert Path(match["file"]).resolve().is_relative_to(folder.resolve()), line
    return problems


def check_in(folder: Path) -> Result:
    return CliRunner().invoke(main, ["--config", str(folder / "audit-watch.yaml"), "check"], env=ENV)


@FUZZ
@given(files=deployment())
def test_check_never_fails_with_a_traceback(files: dict[str, str | bytes]) -> None:
    with tempfile.TemporaryDirectory(prefix="aw-fuzz-") as name:
        folder = Path(name)
        write(folder, files)
        result = check_in(folder)
        problems = assert_problems_only(result, folder, (0, 1))
        assert (result.exit_code == 1) == bool(problems), result.output


@FUZZ
@given(rule_file=yaml_file(broken(valid_rule()), "rules"))
def test_test_rule_never_fails_with_a_traceback(rule_file: str | bytes, empty_store: str) -> None:
    with tempfile.TemporaryDirectory(prefix="aw-fuzz-") as name:
        folder = Path(name)
        write(folder, {"audit-watch.yaml": as_yaml({"rules": [], "channels": {"archive": {"type": "file",
                                                                                          "path": "./outbox"}}}),
                       "rule.yaml": rule_file})
        result = CliRunner().invoke(main, ["--config", str(folder / "audit-watch.yaml"), "--source", empty_store,
                                           "test-rule", str(folder / "rule.yaml"), "--now", NOW, "--json"], env=ENV)
        if result.exit_code == 0:
            for line in result.stdout.splitlines():
                assert set(json.loads(line)) >= {"rule", "alerts"}
            return
        assert result.exit_code == 2
        if "holds no rule" in result.stderr:     # an empty file: click's usage error
            return
        assert "evaluation failed" not in result.stderr, result.stderr
        assert assert_problems_only(result, folder, (2,))


# A few through the real entry point, as a user runs them.
@settings(FUZZ, max_examples=max(3, EXAMPLES // 500))
@given(files=deployment())
def test_check_as_a_subprocess(files: dict[str, str | bytes]) -> None:
    with tempfile.TemporaryDirectory(prefix="aw-fuzz-") as name:
        folder = Path(name)
        write(folder, files)
        done = subprocess.run([sys.executable, "-m", "audit_watch", "--config", str(folder / "audit-watch.yaml"),
                               "check"], capture_output=True, text=True, env={**os.environ, **ENV}, timeout=60)
        assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
        for line in done.stderr.splitlines():
            assert PROBLEM.match(line) or re.fullmatch(r"\d+ problem\(s\)\.", line), line


def test_the_generators_make_valid_inputs_too() -> None:
    """The properties above would pass vacuously if nothing generated were valid: most
    rules from valid_rule() pass check (the rest meet a where value of the wrong type)."""
    codes: list[int] = []

    @settings(FUZZ, max_examples=30)
    @given(rule=valid_rule())
    def one(rule: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory(prefix="aw-fuzz-") as name:
            folder = Path(name)
            write(folder, {"audit-watch.yaml": as_yaml({"rules": ["rules/"], "channels": {
                "archive": {"type": "file", "path": "./outbox"}}}), "rules/r.yaml": as_yaml(rule)})
            codes.append(check_in(folder).exit_code)

    one()
    assert len(codes) == 30 and codes.count(0) >= 15, codes


# --- what the fuzzing found, one regression test each -------------------------------------------------

GOOD = 'name: r\nkind: threshold\nwindow: 15m\nthreshold: {op: ">=", value: 1}\n'
FOUND = [
    # (what, files, the problem expected in check's output)
    ("bytes that are not UTF-8 (a traceback)", {"rules/r.yaml": b"name: r\nkind: \xff\xfe\n"},
     "rules/r.yaml:2: not UTF-8 text"),
    ("a duration past what datetime holds (a traceback)",
     {"rules/r.yaml": GOOD.replace("15m", "99999999999999999999w")},
     "rules/r.yaml:3: window: '99999999999999999999w' is too long: at most 3650d"),
    ("nesting deeper than Python's stack (a traceback)", {"rules/r.yaml": "[" * 3000 + "]" * 3000},
     "rules/r.yaml:1: nested more than 40 levels deep"),
    ("an alias inside itself (a traceback)", {"rules/r.yaml": "name: r\nwhere: &x [*x]\n"},
     "rules/r.yaml:2: nested more than 40 levels deep (a YAML alias inside itself?)"),
    ("a billion values through aliases (would never finish)", {"reports/d.yaml": LAUGHS},
     "reports/d.yaml:1: more than 200000 values"),
    ("a control character (line 0 and a message over two lines)", {"audit-watch.yaml": "rules: [rules/]\n\x9f: 1\n"},
     "audit-watch.yaml:2: the character U+009F is not allowed in YAML"),
    ("a date that does not exist (a traceback)", {"rules/r.yaml": GOOD + "labels: {when: 2026-13-45}\n"},
     "rules/r.yaml:5: cannot read this value: month must be in 1..12"),
    ("a key with a line-breaking character (a problem over two lines)", {"rules/r.yaml": GOOD + '"a\\x1cb": 1\n'},
     "rules/r.yaml:5: 'a\\x1cb': unknown key"),
    ("a key starting with a space (the field ran into the line number)", {"rules/r.yaml": GOOD + '" x": 1\n'},
     "rules/r.yaml:5: ' x': unknown key"),
    ("text for a numeric column (failed at every evaluation)",
     {"rules/r.yaml": GOOD + 'where: {input_tokens: {gte: "g["}}\n'},
     "rules/r.yaml:5: where.input_tokens.gte: gte on input_tokens takes a number, got 'g['"),
    ("contains on a number (failed at every evaluation)", {"rules/r.yaml": GOOD + "where: {total_tokens: {contains: ''}}\n"},
     "rules/r.yaml:5: where.total_tokens.contains: contains needs a text column (total_tokens holds number values)"),
    ("a list of non-times (failed at every evaluation)",
     {"rules/r.yaml": GOOD + "source: threads\nwhere: {last_activity_at: {not_in: [442]}}\n"},
     "rules/r.yaml:6: where.last_activity_at.not_in: last_activity_at holds timestamps, got 442"),
    ("a time that is not a timestamp (failed at every evaluation)",
     {"rules/r.yaml": GOOD + "where: {created_at: {gte: yesterday}}\n"},
     "rules/r.yaml:5: where.created_at.gte: created_at holds timestamps, got 'yesterday'"),
]


@pytest.mark.parametrize("files, expected", [pytest.param(f, e, id=w) for w, f, e in FOUND])
def test_what_the_fuzzing_found(tmp_path: Path, files: dict[str, str | bytes], expected: str) -> None:
    files = {"audit-watch.yaml": "rules: [rules/]\nreports: [reports/]\n", **files}
    write(tmp_path, files)
    result = check_in(tmp_path)
    problems = assert_problems_only(result, tmp_path, (1,))
    assert any(line.startswith(f"{tmp_path}/{expected}") for line in problems), result.output


@pytest.mark.parametrize("condition", ["finished_at: null", "finished_at: {not: null}"])
def test_a_null_time_is_a_condition_test_rule_evaluates(tmp_path: Path, empty_store: str, condition: str) -> None:
    """Found reading the code the fuzzer pointed at: ``finished_at: null`` failed every evaluation."""
    write(tmp_path, {"audit-watch.yaml": "rules: []\n", "rule.yaml": GOOD + f"where: {{{condition}}}\n"})
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "audit-watch.yaml"), "--source", empty_store,
                                       "test-rule", str(tmp_path / "rule.yaml"), "--now", NOW, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["alerts"] == []


def test_a_broken_config_falls_back_to_the_rules_beside_it_not_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the fuzzer's slowness: with an unreadable config, check read rules/ and
    reports/ of the working directory (here, the repository's bundled ones)."""
    elsewhere = tmp_path / "cwd"
    (elsewhere / "rules").mkdir(parents=True)
    (elsewhere / "rules" / "not-mine.yaml").write_text("name: not mine\n")
    monkeypatch.chdir(elsewhere)
    deployment_folder = tmp_path / "deployment"
    deployment_folder.mkdir()
    write(deployment_folder, {"audit-watch.yaml": "rules: [\n", "rules/mine.yaml": "name: mine\n"})
    result = check_in(deployment_folder)
    problems = assert_problems_only(result, deployment_folder, (1,))
    assert any("/rules/mine.yaml:1: kind: required key" in line for line in problems), problems
    assert not any("not-mine" in line for line in problems)


def test_a_rules_folder_that_does_not_exist_is_a_problem_at_the_config_line(tmp_path: Path) -> None:
    """Found by the fuzzer: the problem named the missing folder, with no line."""
    write(tmp_path, {"audit-watch.yaml": "timezone: UTC\nrules:\n  - rules/\n  - missing-folder/\n"})
    problems = assert_problems_only(check_in(tmp_path), tmp_path, (1,))
    assert problems == [f"{tmp_path}/audit-watch.yaml:4: rules[1]: no such file or folder: missing-folder/"]
