"""Templates: filters, escaping per medium, content rules, overrides, check, Block Kit limits."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from jinja2.exceptions import SecurityError

from audit_watch.alerting.notify import redact
from audit_watch.channels.escaping import Trusted as SlackSafe
from audit_watch.channels.escaping import mrkdwn_escape, slack_link
from audit_watch.channels.messages import Entry, MessageContext, rule_info
from audit_watch.channels.registry import compose
from audit_watch.channels.render import Renderer, check_templates, duration, number, percent, reltime
from audit_watch.channels.slack_blocks import MAX_BLOCKS, MAX_TEXT, Section, build_message, truncate_mrkdwn
from audit_watch.config.model import Config

from test_state import T0, make_alert, make_rule

EVIL_NAME = "<!channel> <https://evil.test|click> <@U123> & co"
EVIL_ERROR = "<script>alert(1)</script>"
CONFIG = Config.model_validate({"channels": {
    "oncall": {"type": "slack", "token": "xoxb-test", "channel": "#ops"},
    "mail": {"type": "email", "host": "127.0.0.1", "from": "aw@example.com", "to": ["ops@example.com"]},
    "archive": {"type": "file", "path": "out"},
}})


def context(rule: Any, *alerts: Any, event: str = "firing") -> MessageContext:
    entries = [Entry(redact({**a.to_json(), "group_label": a.group_label}, rule.include_content), "firing", T0, T0)
               for a in alerts]
    return MessageContext(rule_info(rule), event, entries, T0)


def all_text(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False)


def mrkdwn_texts(payload: dict[str, Any]) -> list[str]:
    """Every string Slack parses as mrkdwn: the top-level text and each mrkdwn object."""
    found = [payload["text"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(payload["blocks"])
    return found


def assert_no_slack_injection(payload: dict[str, Any]) -> None:
    for text in mrkdwn_texts(payload):
        assert "<!" not in text and "<@" not in text, text
        assert "evil.test|" not in text or "&lt;https://evil.test|click&gt;" in text, text
        # Every remaining <...> is one of our links, to our base URL.
        for target in re.findall(r"<([^>|]*)\|", text):
            assert target.startswith("https://auxot.example.com/"), text


# --- filters ----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "shown"), [
    (timedelta(seconds=45), "45s"), (timedelta(minutes=15), "15m"), (timedelta(hours=1, minutes=30), "1h 30m"),
    (timedelta(days=2, hours=3, minutes=4), "2d 3h"), (3600, "1h"), (None, ""),
])
def test_duration(value: Any, shown: str) -> None:
    assert duration(value) == shown


def test_numbers_percent_and_relative_times() -> None:
    assert number(1234567) == "1,234,567" and number(7.0) == "7" and number(0.12345) == "0.12" and number(None) == "-"
    assert percent(0.2346) == "23.5%" and percent(0.5) == "50%"
    assert reltime(T0 - timedelta(minutes=5), T0) == "5m ago" and reltime(T0 + timedelta(hours=2), T0) == "in 2h"
    assert reltime(None, T0) == "never" and reltime((T0 - timedelta(hours=1)).isoformat(), T0) == "1h ago"


# --- escaping ---------------------------------------------------------------------------


def test_slack_escapes_exactly_three_characters() -> None:
    assert mrkdwn_escape("a & b < c > d \"q\" 'q'") == "a &amp; b &lt; c &gt; d \"q\" 'q'"
    env = Renderer().env("slack")
    out = env.from_string("{{ x }} {{ link }}").render(x=EVIL_NAME, link=SlackSafe("<https://ok.test|ok>"))
    assert out == "&lt;!channel&gt; &lt;https://evil.test|click&gt; &lt;@U123&gt; &amp; co <https://ok.test|ok>"


def test_slack_links_escape_their_parts_and_refuse_other_schemes() -> None:
    assert slack_link("https://a.test/x?a=1&b=2", "<b>") == "<https://a.test/x?a=1&amp;b=2|&lt;b&gt;>"
    assert slack_link("https://a.test/x|y", "l") == "<https://a.test/x%7Cy|l>"
    assert slack_link("javascript:alert(1)", "click") == "click"
    assert slack_link("https://a.test/ x", "<!here>") == "&lt;!here&gt;"


def test_injection_reaches_slack_escaped() -> None:
    rule = make_rule()
    alert = make_alert(name=EVIL_NAME, details={"row": {"error": EVIL_ERROR}})
    payload = compose(CONFIG.channels["oncall"], Renderer(), context(rule, alert))
    assert_no_slack_injection(payload)
    assert "&lt;!channel&gt;" in payload["text"]


def test_any_rule_rows_are_escaped_everywhere() -> None:
    rule = make_rule(name="errors", kind="any", group_by=[])
    alert = make_alert(kind="any", rule="errors", name=None, group={"id": "job-1"},
                       details={"row": {"status": "failed", "job_type": "task", "error": EVIL_ERROR + EVIL_NAME}})
    slack = compose(CONFIG.channels["oncall"], Renderer(), context(rule, alert))
    assert_no_slack_injection(slack)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in all_text(slack)
    mail = compose(CONFIG.channels["mail"], Renderer(), context(rule, alert))
    assert "<script>" not in mail["html"] and "&lt;script&gt;alert(1)&lt;/script&gt;" in mail["html"]
    assert EVIL_ERROR in mail["text"]  # plain text is plain


def test_content_only_with_include_content() -> None:
    details = {"row": {"status": "failed", "job_type": "task", "prompt": "SECRET PROMPT", "response": "SECRET ANSWER"}}
    for include in (False, True):
        rule = make_rule(name="errors", kind="any", group_by=[], include_content=include)
        alert = make_alert(kind="any", rule="errors", group={"id": "job-1"}, details=details)
        for name in ("oncall", "mail", "archive"):
            shown = all_text(compose(CONFIG.channels[name], Renderer(), context(rule, alert)))
            assert ("SECRET PROMPT" in shown) is include, (name, include)
            assert ("SECRET ANSWER" in shown) is include, (name, include)


@pytest.mark.parametrize(("kind", "details", "expected"), [
    ("threshold", {}, "7 matching jobs in 15m"),
    ("ratio", {"matching": 3, "total": 10}, "matched (3 of 10)"),
    ("spike", {"direction": "up", "reference_count": 4, "reference_span_seconds": 21600}, "up from"),
    ("metric", {"aggregate": "sum", "field": "total_tokens", "ratio": 2.5}, "sum of total_tokens is 7"),
    ("absence", {"last_seen": (T0 - timedelta(hours=3)).isoformat()}, "last seen 3h ago"),
    ("cron_missed", {"cron_name": "nightly", "expected_at": T0.isoformat(), "schedule": "0 2 * * *",
                     "timezone": "UTC", "last_fired": None}, "cron nightly missed 7 runs"),
    ("new_value", {"field": "metadata.ip", "new_value": "10.0.0.9", "first_seen": T0.isoformat()}, "new metadata.ip 10.0.0.9"),
])
def test_every_kind_has_a_default(kind: str, details: dict[str, Any], expected: str) -> None:
    rule = make_rule()
    alert = make_alert(kind=kind, details=details, baseline=2.0 if kind == "spike" else None)
    ctx = context(rule, alert)
    ctx.rule["kind"] = kind
    for name in ("oncall", "mail", "archive"):
        payload = compose(CONFIG.channels[name], Renderer(), ctx)
        assert expected in all_text(payload).replace("\\n", "\n"), (name, all_text(payload)[:500])


# --- templates from the config ----------------------------------------------------------


def test_config_templates_come_first_and_a_broken_one_falls_back(tmp_path: Path) -> None:
    folder = tmp_path / "templates" / "alerts"
    folder.mkdir(parents=True)
    (folder / "failed_job_spike.slack.j2").write_text("CUSTOM {{ alert.group_label }} {{ alert.list_link|link('list') }}")
    (folder / "threshold.text.j2").write_text("BROKEN {{ alert.no_such_field }}")
    renderer = Renderer([tmp_path / "templates"])
    rule = make_rule(template="failed_job_spike")
    slack = compose(CONFIG.channels["oncall"], renderer, context(rule, make_alert(name="A & B")))
    assert "CUSTOM A &amp; B <https://auxot.example.com/audit-logs/jobs?status=failed&amp;agent_id=a1|list>" in all_text(slack)
    text = compose(CONFIG.channels["archive"], renderer, context(make_rule(), make_alert()))["text"]
    assert "BROKEN" not in text and "7 matching jobs" in text  # the bundled default took over


def test_check_reports_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "alerts").mkdir()
    (tmp_path / "alerts" / "bad.slack.j2").write_text("line one\n{% if alert %}\nno endif\n")
    (tmp_path / "alerts" / "filter.text.j2").write_text("ok\n\n{{ alert.value|no_such_filter }}\n")
    (tmp_path / "alerts" / "typo.text.j2").write_text("x\n{{ alrt.value }}\n")
    problems = [str(p) for p in check_templates([tmp_path], include_bundled=False)]
    assert any(p.startswith(f"{tmp_path / 'alerts' / 'bad.slack.j2'}:3: Unexpected end of template") for p in problems)
    assert any(p.startswith(f"{tmp_path / 'alerts' / 'filter.text.j2'}:3: ") and "no_such_filter" in p for p in problems)
    assert f"{tmp_path / 'alerts' / 'typo.text.j2'}:2: unknown variable 'alrt'" in problems


def test_bundled_templates_are_clean() -> None:
    assert [str(p) for p in check_templates()] == []


def test_templates_cannot_reach_outside_the_sandbox() -> None:
    env = Renderer().env("text")
    with pytest.raises(SecurityError, match="__class__"):
        env.from_string("{{ alert.__class__.__mro__ }}").render(alert={})
    # The immutable sandbox refuses to change what it is given (a plain sandbox would not).
    with pytest.raises(SecurityError, match="append"):
        env.from_string("{{ alerts.append(1) }}").render(alerts=[])


# --- Block Kit limits -------------------------------------------------------------------


def test_twelve_agents_make_one_message_and_sixty_are_truncated() -> None:
    rule = make_rule()
    twelve = [make_alert(f"a{i}", f"Agent {i}") for i in range(12)]
    payload = compose(CONFIG.channels["oncall"], Renderer(), context(rule, *twelve))
    assert payload["blocks"][0]["text"]["text"].endswith("failed-jobs: 12 alerts firing")
    assert sum(1 for b in payload["blocks"] if b.get("accessory")) == 12
    sixty = [make_alert(f"a{i:02d}", f"Agent {i:02d}") for i in range(60)]
    payload = compose(CONFIG.channels["oncall"], Renderer(), context(rule, *sixty))
    assert len(payload["blocks"]) == MAX_BLOCKS
    assert "and 14 more alerts" in all_text(payload)


def test_long_texts_are_cut_at_a_line_and_never_inside_an_escape() -> None:
    lines = [f"<https://auxot.example.com/audit-logs/jobs/{i}|row {i}> &amp; more" for i in range(200)]
    cut = truncate_mrkdwn("\n".join(lines))
    assert len(cut) <= MAX_TEXT and cut.endswith("more lines_") and cut.count("<") == cut.count(">")
    one_line = "x" * 2990 + "&amp;" + "<https://a.test|y>"
    cut = truncate_mrkdwn(one_line)
    assert len(cut) <= MAX_TEXT and "&am" not in cut.replace("&amp;", "") and not cut.rstrip("…").endswith("&")
    message = build_message("h" * 400, None, [Section("s" * 5000, "https://a.test")], ["c"], "t" * 5000)
    assert len(message["blocks"][0]["text"]["text"]) <= 150 and len(message["text"]) <= MAX_TEXT
    assert len(message["blocks"][1]["text"]["text"]) <= MAX_TEXT


def test_max_rows_limits_row_links_with_and_more() -> None:
    channel = Config.model_validate({"channels": {"s": {"type": "slack", "token": "x", "channel": "#c", "max_rows": 3}}}).channels["s"]
    payload = compose(channel, Renderer(), context(make_rule(), make_alert(rows=8)))
    section = payload["blocks"][2]["text"]["text"]
    assert section.count("|job-a1-") == 3 and "and 5 more" in section
