"""Reports on hand-made rows: periods, definitions, escaping, outputs, both backends.

The golden tests on generated data are in test_report_golden.py.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, time, timedelta, timezone
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from jinja2 import UndefinedError

from audit_watch.channels.escaping import escape_markdown, escape_slack
from audit_watch.config.model import Config
from audit_watch.core.yaml_source import InputError
from audit_watch.reports import (
    REPORT_NAMES,
    AlertActivity,
    build_report,
    email_message,
    find_report,
    period_for,
    report_definitions,
    report_period,
    run_report,
    write_report,
)
from audit_watch.reports.charts import daily_jobs_png, safe_label, tokens_by_agent_png
from audit_watch.reports.periods import off_hours_spans

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
UTC = UTC

# --- periods ------------------------------------------------------------------------------------


def test_duration_period_is_half_open_and_steps_back_by_its_length() -> None:
    period = report_period("7d", now=NOW)
    assert (period.start, period.end) == (NOW - timedelta(days=7), NOW)
    assert period.previous().end == period.start
    assert [p.start for p in period.history(2)] == [NOW - timedelta(days=14), NOW - timedelta(days=21)]
    assert period.name == "the last 7 days"


def test_last_week_is_monday_to_monday_in_the_time_zone_across_dst() -> None:
    # Friday 6 Nov 2026 in Berlin; the week before holds the end of summer time (25 Oct).
    period = report_period("last_week", now=datetime(2026, 10, 30, 9, tzinfo=UTC), timezone_name="Europe/Berlin")
    assert period.start == datetime(2026, 10, 18, 22, tzinfo=UTC)      # Mon 19 Oct 00:00 CEST
    assert period.end == datetime(2026, 10, 25, 23, tzinfo=UTC)        # Mon 26 Oct 00:00 CET
    assert period.length == timedelta(days=7, hours=1)
    before = period.previous()
    assert (before.start, before.end) == (datetime(2026, 10, 11, 22, tzinfo=UTC), period.start)
    assert [b.label for b in period.buckets()] == ["Oct 19", "Oct 20", "Oct 21", "Oct 22", "Oct 23", "Oct 24", "Oct 25"]
    assert period.buckets()[-1].end - period.buckets()[-1].start == timedelta(hours=25)


def test_last_month_and_its_history_follow_the_calendar() -> None:
    period = report_period("last_month", now=datetime(2026, 3, 10, tzinfo=UTC))
    assert (period.start, period.end) == (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
    assert [(p.start.month, p.end.month) for p in period.history(2)] == [(1, 2), (12, 1)]
    assert period.history(2)[1].start.year == 2025


def test_yesterday_and_custom_ranges() -> None:
    period = report_period("yesterday", now=datetime(2026, 11, 20, 3, tzinfo=UTC), timezone_name="America/New_York")
    assert period.start == datetime(2026, 11, 18, 5, tzinfo=UTC) and period.end == datetime(2026, 11, 19, 5, tzinfo=UTC)
    custom = report_period(start=datetime(2026, 11, 1, tzinfo=UTC), end=datetime(2026, 11, 3, tzinfo=UTC))
    assert custom.spec == "custom" and custom.previous().end == custom.start


@pytest.mark.parametrize("kwargs, message", [
    ({"spec": "fortnight", "now": NOW}, "not a period"),
    ({"start": NOW, "end": NOW}, "after --from"),
    ({"start": NOW}, "both --from and --to"),
    ({"spec": "7d"}, "--now"),
])
def test_bad_periods_say_what_is_wrong(kwargs: dict[str, Any], message: str) -> None:
    spec = kwargs.pop("spec", None)
    with pytest.raises(ValueError, match=message):
        report_period(spec, **kwargs)


def test_buckets_are_hours_for_short_windows_and_rolling_days_otherwise() -> None:
    assert len(report_period("1d", now=NOW).buckets()) == 24
    rolling = report_period("7d", now=NOW).buckets()
    assert len(rolling) == 7 and rolling[-1].end == NOW and rolling[0].start == NOW - timedelta(days=7)


def test_off_hours_are_the_complement_of_working_hours_in_local_time() -> None:
    period = report_period("last_week", now=NOW, timezone_name="Europe/Berlin")   # Mon 9 - Mon 16 Nov
    spans = off_hours_spans(period, time(7), time(20), frozenset(range(5)))
    assert spans[0].start == period.start and spans[0].end == datetime(2026, 11, 9, 6, tzinfo=UTC)
    assert spans[-1].start == datetime(2026, 11, 13, 19, tzinfo=UTC) and spans[-1].end == period.end
    off = sum((s.end - s.start for s in spans), timedelta())
    assert off == timedelta(days=7) - 5 * timedelta(hours=13)


# --- definitions ----------------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bundled_example_definitions_load_without_problems() -> None:
    root = Path(__file__).resolve().parent.parent
    loaded, problems = report_definitions([root / "reports"], channels={"archive": object()})
    assert problems == []
    assert {item.definition.report for item in loaded} == set(REPORT_NAMES)


def test_definition_problems_carry_file_line_and_field(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "name: weekly\nreport: weekly-digest\nperiod: fortnight\ntopp: 3\n")
    _write(tmp_path, "b.yaml", "reports:\n  - name: c\n    report: compliance\n    scope: {user: a@b.c}\n"
                               "    schedule: '61 * * * *'\n  - name: d\n    report: nonsense\n")
    _write(tmp_path, "c.yaml", "name: weekly\nreport: triage\nchannels: [pager]\n")
    loaded, problems = report_definitions([tmp_path], channels={"archive": object()})
    text = sorted(str(p) for p in problems)
    assert any(t.startswith(f"{tmp_path / 'a.yaml'}:3: period: 'fortnight' is not a period") for t in text)
    assert any(t.startswith(f"{tmp_path / 'a.yaml'}:4: topp: unknown key") for t in text)
    assert any(t.startswith(f"{tmp_path / 'b.yaml'}:5: reports[0].schedule:") for t in text)
    assert any(t.startswith(f"{tmp_path / 'b.yaml'}:7: reports[1].report: unknown report 'nonsense'") for t in text)
    assert any(t.startswith(f"{tmp_path / 'c.yaml'}:3: channels[0]: unknown channel 'pager'") for t in text)
    assert [item.definition.name for item in loaded] == []


def test_duplicate_names_and_compliance_without_subject_are_problems(tmp_path: Path) -> None:
    _write(tmp_path, "s.yaml", "name: two\nreport: compliance\nschedule: '0 7 1 * *'\nchannels: [archive]\n")
    _write(tmp_path, "n.yaml", "name: three\nreport: triage\nschedule: '0 7 * * *'\n")
    _, problems = report_definitions([tmp_path / "s.yaml", tmp_path / "n.yaml"])
    assert [str(p) for p in problems] == [
        f"{tmp_path / 's.yaml'}:1: scope: a scheduled compliance report needs scope.user or scope.team",
        f"{tmp_path / 'n.yaml'}:1: channels: a scheduled report needs channels to deliver to"]
    _write(tmp_path, "a.yaml", "name: one\nreport: triage\n")
    _write(tmp_path, "b.yaml", "name: one\nreport: token-usage\nbudgets: {Sync: 0}\n")
    loaded, problems = report_definitions([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    assert [item.definition.report for item in loaded] == ["triage"]
    assert any("budgets.Sync: a budget is a positive number" in str(p) for p in problems)
    _write(tmp_path, "b.yaml", "name: one\nreport: token-usage\n")
    _, problems = report_definitions([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    assert any("duplicate report name 'one'" in str(p) for p in problems)


def test_find_report_falls_back_to_the_built_in_with_defaults() -> None:
    digest = find_report("weekly-digest")
    assert digest.report == "weekly-digest" and digest.top == 5 and digest.period == "7d"
    with pytest.raises(InputError, match="no report named 'weekly'"):
        find_report("weekly")


def test_period_for_uses_the_definition_time_zone(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "name: w\nreport: weekly-digest\nperiod: last_week\ntimezone: Asia/Tokyo\n")
    loaded, _ = report_definitions([tmp_path])
    period = period_for(loaded[0].definition, Config(), now=NOW)
    assert period.timezone == "Asia/Tokyo" and period.start == datetime(2026, 11, 8, 15, tzinfo=UTC)


# --- escaping -------------------------------------------------------------------------------------

HOSTILE_AGENT = "<script>alert('x')</script> *Bot* [click](http://evil.example) <!channel>"
HOSTILE_ERROR = "<img src=x onerror=alert(1)>\n# Heading\n\x1b[31mred\x1b[0m | cell"


@pytest.fixture
def hostile(store: Any, insert: Any) -> Any:
    """A small store whose names and texts try every trick, and whose prompts hold secrets."""
    insert({
        "teams": [{"id": "t1", "name": "Ops <b>team</b>"}],
        "users": [{"id": "u1", "name": "Mallory <i>", "email": "mallory@example.com", "role": "admin"}],
        "memberships": [{"user_id": "u1", "team_id": "t1"}],
        "agents": [{"id": "a1", "name": HOSTILE_AGENT, "team_id": "t1"}],
        "jobs": [
            {"at": "-1h", "status": "failed", "agent_id": "a1", "user_id": "u1", "error": HOSTILE_ERROR,
             "prompt": "SECRET-PROMPT-TEXT", "response": "SECRET-RESPONSE-TEXT", "input_tokens": 100, "count": 6},
            {"at": "-2d", "status": "complete", "agent_id": "a1", "user_id": "u1", "input_tokens": 50,
             "prompt": "SECRET-PROMPT-TEXT", "count": 3},
        ],
        "threads": [{"at": "-30m", "agent_id": "a1", "user_id": "u1", "name": "=cmd|' /C calc'!A0 <!here>",
                     "snippet": "SECRET-SNIPPET"}],
        "events": [
            {"at": "-20m", "event_type": "user.role_changed", "severity": "warning", "user_id": "u1", "team_id": "t1",
             "description": "Mallory made <@U123> an owner\n- [x](http://evil.example)",
             "metadata": {"target_user_id": "u1", "from": "member", "to": "owner"}},
            {"at": "-25m", "event_type": "auth.login", "user_id": "u1", "team_id": "t1", "metadata": {"ip": "203.0.113.5"}},
        ],
    })
    return store


def _all_reports(src: Any) -> list[Any]:
    return [run_report(name, src, Config(), now=NOW, user="mallory@example.com" if name == "compliance" else None)
            for name in REPORT_NAMES]


def test_untrusted_content_is_escaped_in_every_medium_and_prompts_never_appear(hostile: Any) -> None:
    for result in _all_reports(hostile):
        every = [result.text, result.html, result.email_html, result.markdown, result.slack]
        if result.evidence is not None:
            every.append(result.evidence.data.decode())
        for output in every:
            assert "SECRET-PROMPT-TEXT" not in output and "SECRET-RESPONSE-TEXT" not in output
            assert "SECRET-SNIPPET" not in output
            assert "\x1b" not in output
        for html in (result.html, result.email_html):
            assert "<script>" not in html and "<img src=x" not in html and "<b>team</b>" not in html
        assert "<!channel>" not in result.slack and "<!here>" not in result.slack and "<@U123>" not in result.slack
        assert "<script>" not in result.markdown
        assert not re.search(r"(?<!\\)\]\(http://evil", result.markdown)      # no live link from content
        assert "\n# Heading" not in result.markdown + result.text
    digest = _all_reports(hostile)[0]
    assert "&lt;script&gt;alert" in digest.html
    assert "&lt;script&gt;alert" in digest.slack
    assert "\\<script\\>" in digest.markdown and "\\[click\\]" in digest.markdown


def test_evidence_csv_neutralises_formulas(hostile: Any) -> None:
    result = run_report("compliance", hostile, Config(), now=NOW, user="u1")
    rows = list(csv.DictReader(io.StringIO(result.evidence.data.decode())))
    thread = next(r for r in rows if r["section"] == "thread")
    assert thread["detail"].startswith("'=cmd")


def test_escape_helpers() -> None:
    assert escape_slack("a & <b> > c\nd") == "a &amp; &lt;b&gt; &gt; c d"
    assert escape_markdown("# x_y [z]") == "\\# x\\_y \\[z\\]"
    assert safe_label("$x^2$ cost") == r"\$x^2\$ cost"


# --- rendering details ------------------------------------------------------------------------------


def test_a_configured_template_wins_and_a_misspelt_variable_is_an_error(hostile: Any, tmp_path: Path) -> None:
    folder = tmp_path / "templates" / "reports"
    folder.mkdir(parents=True)
    for ext in ("html", "md", "slack.txt"):
        (folder / f"triage.{ext}").write_text("{{ report.title }}\n")
    (folder / "triage.txt").write_text("Custom: {{ overview.jobs }} jobs\n")
    config = Config(templates=(str(tmp_path / "templates"),), base_dir=tmp_path)
    assert run_report("triage", hostile, config, now=NOW).text == "Custom: 6 jobs\n"
    (folder / "triage.txt").write_text("{{ overveiw.jobs }}\n")
    with pytest.raises(UndefinedError):
        run_report("triage", hostile, config, now=NOW)


def test_digest_lists_alerts_passed_in(hostile: Any) -> None:
    alerts = [
        AlertActivity("failed-job-spike", "Support Triage", "critical", NOW - timedelta(days=1), NOW - timedelta(hours=20)),
        AlertActivity.from_mapping({"rule": "cron-not-firing", "group": "Nightly", "severity": "warning",
                                    "fired_at": NOW - timedelta(hours=3)}),
        AlertActivity("old", "x", "info", NOW - timedelta(days=30), NOW - timedelta(days=29)),
    ]
    period = report_period("7d", now=NOW)
    result = build_report("weekly-digest", hostile, Config(), period, alerts=alerts)
    section = result.context["alerts"]
    assert (section["available"], section["fired"], section["resolved"], section["still_firing"]) == (True, 2, 1, 1)
    assert "failed-job-spike" in result.text and "old" not in [row["rule"] for row in section["rows"]]
    empty = build_report("weekly-digest", hostile, Config(), period)
    assert "No alert history was available" in empty.text


def test_scope_errors_are_input_errors(hostile: Any) -> None:
    with pytest.raises(InputError, match="no user with the e-mail"):
        run_report("weekly-digest", hostile, Config(), now=NOW, user="nobody@example.com")
    with pytest.raises(InputError, match="needs --user EMAIL or --team NAME"):
        run_report("compliance", hostile, Config(), now=NOW)
    with pytest.raises(InputError, match="not both"):
        run_report("compliance", hostile, Config(), now=NOW, user="u1", team="t1")


def test_every_report_renders_on_an_empty_store(store: Any) -> None:
    for name in ("weekly-digest", "token-usage", "triage"):
        result = run_report(name, store, Config(), now=NOW)
        assert result.text and result.html and result.markdown and result.slack
    with pytest.raises(InputError, match="no team"):
        run_report("compliance", store, Config(), now=NOW, team="Nobody")


# --- outputs ------------------------------------------------------------------------------------------


def test_write_report_to_stdout_a_file_and_a_folder(hostile: Any, tmp_path: Path) -> None:
    result = run_report("compliance", hostile, Config(), now=NOW, user="mallory@example.com")
    assert write_report(result, "markdown") == result.markdown
    written = write_report(result, "html", tmp_path / "out.html")
    assert [p.name for p in written] == ["out.html", "out.evidence.csv"]
    folder = write_report(result, "text", tmp_path / "bundle")          # no extension: a folder
    names = sorted(p.name for p in folder)
    base = "compliance-mallory-i-2026-11-20"
    assert names == sorted([f"{base}.html", f"{base}.txt", f"{base}.evidence.csv"])
    assert (tmp_path / "bundle" / f"{base}.evidence.csv").read_bytes() == result.evidence.data


def test_email_message_embeds_the_charts_by_content_id(hostile: Any) -> None:
    result = run_report("weekly-digest", hostile, Config(), now=NOW)
    assert [c.filename for c in result.charts] == ["daily-jobs.png", "tokens-by-agent.png"]
    message = message_from_bytes(email_message(result, "aw@example.com", ["a@example.com"]).as_bytes())
    html_part = next(p for p in message.walk() if p.get_content_type() == "text/html")
    html = html_part.get_payload(decode=True).decode()
    images = [p for p in message.walk() if p.get_content_type() == "image/png"]
    assert len(images) == 2
    for image in images:
        assert f"cid:{image['Content-ID'].strip('<>')}" in html
    assert "data:image/png" in result.html and "data:image/png" not in result.email_html
    assert 'style="' in html          # CSS inlined for mail clients


def test_charts_are_small_deterministic_pngs() -> None:
    first = daily_jobs_png(["Nov 14", "Nov 15"], [10, 12], [1, 0])
    assert first.startswith(b"\x89PNG") and first == daily_jobs_png(["Nov 14", "Nov 15"], [10, 12], [1, 0])
    assert tokens_by_agent_png(["$a$ bot"], [100], [10]).startswith(b"\x89PNG")


def test_cron_health_counts_expected_fired_missed_and_pending(store: Any, insert: Any) -> None:
    insert({
        "agents": [{"id": "a1", "name": "Reporter"}],
        "crons": [{"id": "c1", "agent_id": "a1", "name": "hourly", "schedule": "0 * * * *", "at": "-10d"},
                  {"id": "c2", "agent_id": "a1", "name": "off", "schedule": "0 * * * *", "enabled": False}],
        "events": [{"at": at, "event_type": "cron.fired", "metadata": {"cron_id": "c1"}, "agent_id": "a1"}
                   for at in ("2026-11-20T07:01:00Z", "2026-11-20T08:02:00Z", "2026-11-20T10:20:00Z",
                              "2026-11-20T11:05:00Z", "2026-11-20T05:00:30Z")],
    })
    # Runs at 07:00 ... 12:00: 07 and 08 fired in time, 09 never, 10 fired 20 minutes late
    # (after the 15-minute grace: missed), 11 fired, 12 is still within its grace (pending).
    result = build_report("weekly-digest", store, Config(), report_period(start=NOW - timedelta(hours=6), end=NOW))
    (cron,) = result.context["crons"]["rows"]
    assert (cron["id"], cron["expected"], cron["fired"], cron["missed"], cron["pending"]) == ("c1", 6, 4, 2, 1)
    assert cron["first_missed"] == NOW - timedelta(hours=3) and cron["last_missed"] == NOW - timedelta(hours=2)
    assert cron["last_fired"] == NOW - timedelta(minutes=55)
    assert "Cron 'hourly' missed 2 of 6 runs." in result.text
