"""Reports through the outbox: `audit-watch report` queues and delivers to Slack, e-mail and files.

Real parts on 127.0.0.1: slack-sdk against the fake Slack (``base_url``), smtplib
against aiosmtpd, the file channel in a temp folder; the reports are built on the
golden tests' generated data (fixed dates), the outbox on both state backends.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from test_email import smtp
from test_report_golden import DANIEL, END, digest, seeded
from test_slack import fake

from audit_watch.alerting.outbox import list_entries
from audit_watch.alerting.pipeline import deliver_due
from audit_watch.alerting.state import StateStore
from audit_watch.alerting.views import outbox_summary
from audit_watch.channels.slack_blocks import MAX_BLOCKS, MAX_TEXT
from audit_watch.cli.main import main
from audit_watch.config.model import Config, load_config
from audit_watch.reports import ReportResult, queue_report, report_definitions, report_payload, run_report
from audit_watch.store.source import AuditSource

from fake_slack import FakeSlack, rate_limited, slack_error
from smtp_server import SmtpServer
from test_state import state, state_url

NOW = "2026-11-20T12:00:00Z"     # END of the generated data
DIGEST = "weekly-digest-admins"
DEFINITION = f"""\
name: {DIGEST}
report: weekly-digest
period: 7d
channels: [slack, mail, archive]
"""


@pytest.fixture
def config_file(tmp_path: Path, seeded: Any, state_url: str, fake: FakeSlack, smtp: SmtpServer,
                monkeypatch: pytest.MonkeyPatch) -> Path:
    """audit-watch.yaml: the generated store, the state under test, the three kinds of channel.
    The command's wall clock (when it queues and delivers) is the end of the data."""
    monkeypatch.setattr("audit_watch.cli.options.wall_clock", lambda: END)
    _, db = seeded
    source = db.execute("PRAGMA database_list").fetchone()[2]
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "digest.yaml").write_text(DEFINITION)
    path = tmp_path / "audit-watch.yaml"
    path.write_text(json.dumps({
        "source": {"url": f"sqlite:///{source}"},
        "state": {"url": state_url},
        "reports": ["reports/"],
        "channels": {
            "slack": {"type": "slack", "token": "xoxb-test", "channel": "#reports", "base_url": fake.base_url},
            "hook": {"type": "slack_webhook", "url": fake.webhook_url},
            "mail": {"type": "email", "host": "127.0.0.1", "port": smtp.port, "from": "audit-watch@example.com",
                     "to": ["security@example.com"], "timeout": "5s"},
            "archive": {"type": "file", "path": "outbox"},
        },
    }))
    return path


def report(config_file: Path, *args: str) -> Result:
    result = CliRunner().invoke(main, ["--config", str(config_file), "report", *args, "--now", NOW])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def expected(config_file: Path, name: str, **scope: Any) -> ReportResult:
    """The report as the command builds it (no alert history: the state is empty)."""
    config = load_config(config_file)
    definitions, problems = report_definitions(config.report_paths, config.channels)
    assert problems == []
    src = AuditSource.from_config(config.source)
    try:
        return run_report(name, src, config, now=END, definitions=definitions, **scope)
    finally:
        src.engine.dispose()


def section_texts(blocks: list[dict[str, Any]]) -> str:
    return "\n".join(b["text"]["text"] for b in blocks if b["type"] == "section")


# --- through the command line ------------------------------------------------------------------


def test_weekly_digest_goes_to_slack_email_and_files(config_file: Path, fake: FakeSlack, smtp: SmtpServer,
                                                    state: StateStore) -> None:
    result = report(config_file, DIGEST)
    assert result.exit_code == 0, result.output
    want = expected(config_file, DIGEST)
    assert result.stdout == want.text + "\n"
    for channel in ("slack", "mail", "archive"):
        assert f"{DIGEST} to {channel}: delivered" in result.stderr
    period = want.period.describe()
    jobs = want.context["jobs"]

    [post] = fake.calls("chat.postMessage")
    assert post["channel"] == "#reports" and post["text"] == f"Weekly digest · {period}"
    header, *sections, context = post["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "Weekly digest", "emoji": True}}
    body = section_texts(sections)
    assert body == want.slack.strip()
    assert f"{jobs['total']['current']:,} jobs" in body and f"{jobs['failed']['current']:,} failed" in body
    assert context["type"] == "context"
    assert context["elements"][0]["text"] == f"Report *{DIGEST}* · {period} · audit-watch"

    [received] = smtp.received
    message = received.message
    assert received.rcpt_tos == ["security@example.com"] and message.is_multipart()
    assert message["Subject"] == f"Weekly digest — {period}"
    assert message["X-Audit-Watch-Report"] == DIGEST and message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"].endswith("@example.com>") and message["Date"]
    text = message.get_body(("plain",)).get_content()
    assert f"{jobs['total']['current']:,} jobs" in text
    html = message.get_body(("html",)).get_content()
    images = {str(p["Content-ID"]).strip("<>"): p.get_payload(decode=True)
              for p in message.walk() if p.get_content_type() == "image/png"}
    referenced = set(re.findall(r'src="cid:([^"]+)"', html))
    assert len(images) == 2 and referenced == set(images)
    assert sorted(images.values()) == sorted(chart.data for chart in want.charts)
    assert 'style="' in html and "data:image/png" not in html

    files = sorted((config_file.parent / "outbox").iterdir())
    assert [f.name.rsplit("-report", 1)[1] for f in files] == [".html", ".json", ".txt"]
    assert all(f.name.startswith("20261120T120000Z-") and f"-{DIGEST}-report" in f.name for f in files)
    html_file, json_file, text_file = files
    assert html_file.read_text() == want.html and text_file.read_text() == want.text
    document = json.loads(json_file.read_text())
    assert document["kind"] == "report" and document["report"]["name"] == DIGEST and document["alerts"] == []

    delivered = list_entries(state, ["delivered"])
    assert sorted(e.channel for e in delivered) == ["archive", "mail", "slack"]
    assert all((e.kind, e.rule, e.title, e.alerts) == ("report", DIGEST, "Weekly digest", 0) for e in delivered)
    assert list_entries(state) == []


def test_compliance_for_a_user_carries_its_evidence_csv(config_file: Path, fake: FakeSlack, smtp: SmtpServer,
                                                       state: StateStore) -> None:
    result = report(config_file, "compliance", "--user", DANIEL, "--channel", "mail", "--channel", "archive",
                    "--out", str(config_file.parent / "evidence") + "/")
    assert result.exit_code == 0, result.output
    want = expected(config_file, "compliance", user=DANIEL)
    assert want.evidence is not None and len(want.evidence.data) > 10_000
    assert "compliance to mail: delivered" in result.stderr and "compliance to archive: delivered" in result.stderr

    [received] = smtp.received
    message = received.message
    assert message.get_content_type() == "multipart/mixed" and message["X-Audit-Watch-Report"] == "compliance"
    [csv_part] = [p for p in message.walk() if p.get_content_type() == "text/csv"]
    assert csv_part.get_content_disposition() == "attachment"
    assert csv_part.get_filename() == want.evidence.filename
    assert csv_part.get_payload(decode=True) == want.evidence.data
    assert "Daniel Reyes" in message.get_body(("plain",)).get_content()

    [evidence] = (config_file.parent / "outbox").glob("*-compliance-report.evidence.csv")
    assert evidence.read_bytes() == want.evidence.data
    assert (config_file.parent / "evidence" / want.evidence.filename).read_bytes() == want.evidence.data
    assert fake.received == []                                       # only the channels asked for
    assert sorted(e.channel for e in list_entries(state, ["delivered"])) == ["archive", "mail"]


def test_slack_rate_limit_leaves_it_retrying_then_one_post(config_file: Path, fake: FakeSlack,
                                                           state: StateStore) -> None:
    fake.script("chat.postMessage", rate_limited(2))
    result = report(config_file, "weekly-digest", "--channel", "slack")
    assert result.exit_code == 0, result.output
    assert "weekly-digest to slack: retrying at 2026-11-20 12:00:02 UTC (rate limited (429))" in result.stderr
    assert "`audit-watch run` delivers it later" in result.stderr
    [entry] = list_entries(state)
    assert (entry.status, entry.kind, entry.attempts) == ("retrying", "report", 1)
    config = load_config(config_file)
    assert deliver_due(config, state, END + timedelta(seconds=1), rng=random.Random(1)).attempted == 0
    assert deliver_due(config, state, END + timedelta(seconds=3), rng=random.Random(1)).delivered == 1
    assert deliver_due(config, state, END + timedelta(hours=1), rng=random.Random(1)).attempted == 0
    assert len(fake.calls("chat.postMessage")) == 2
    [post] = fake.calls("chat.postMessage", ok_only=True)
    assert post["blocks"][0]["text"]["text"] == "Weekly digest"
    assert [e.status for e in list_entries(state, ["delivered"])] == ["delivered"]


def test_a_report_of_an_old_period_is_queued_at_the_wall_clock(config_file: Path, fake: FakeSlack,
                                                               state: StateStore) -> None:
    # --now places the period; the delivery's own times (and its give-up time) run from now.
    fake.script("chat.postMessage", rate_limited(2))
    result = CliRunner().invoke(main, ["--config", str(config_file), "report", "weekly-digest", "--channel", "slack",
                                       "--now", "2026-10-01T00:00:00Z"])
    assert result.exit_code == 0, result.output
    [entry] = list_entries(state)
    assert entry.status == "retrying" and entry.created_at == END
    assert entry.give_up_at == END + load_config(config_file).delivery.max_age


def test_a_permanent_slack_error_is_dead_and_fails_the_command(config_file: Path, fake: FakeSlack,
                                                               state: StateStore) -> None:
    fake.script("chat.postMessage", slack_error("channel_not_found"))
    result = report(config_file, "weekly-digest", "--channel", "slack", "--channel", "archive")
    assert result.exit_code == 1
    assert "weekly-digest to slack: dead: slack error channel_not_found" in result.stderr
    assert "weekly-digest to archive: delivered" in result.stderr


def test_dry_run_queues_and_sends_nothing(config_file: Path, fake: FakeSlack, smtp: SmtpServer,
                                          state: StateStore) -> None:
    result = report(config_file, DIGEST, "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"dry run: {DIGEST} not queued for slack, mail, archive" in result.stderr
    assert result.stdout.startswith("WEEKLY DIGEST\n")
    assert set(outbox_summary(state).values()) == {0}
    assert fake.received == [] and smtp.received == [] and not (config_file.parent / "outbox").exists()


def test_the_command_sends_its_own_report_not_the_rest_of_the_outbox(config_file: Path, state: StateStore) -> None:
    from audit_watch.alerting.outbox import DeliveryPolicy, enqueue

    with state.write() as conn:     # an alert waiting for the daemon
        waiting = enqueue(conn, channel="archive", kind="firing", rule="some-rule", fingerprints=[],
                          payload={"title": "t", "text": "t"}, now=END, policy=DeliveryPolicy())
    result = report(config_file, "weekly-digest", "--channel", "archive")
    assert result.exit_code == 0, result.output
    entries = {e.id: e.status for e in list_entries(state, ["queued", "delivered"])}
    assert entries.pop(waiting) == "queued" and list(entries.values()) == ["delivered"]


def test_a_built_in_report_without_a_definition_queues_nothing(config_file: Path, state: StateStore) -> None:
    result = report(config_file, "triage")
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and result.stdout.strip()
    assert set(outbox_summary(state).values()) == {0}


def test_an_unknown_channel_is_a_clear_error(config_file: Path, fake: FakeSlack, state: StateStore,
                                            digest: ReportResult) -> None:
    result = report(config_file, "weekly-digest", "--channel", "pager")
    assert result.exit_code == 2
    assert "unknown channel 'pager' (channels: archive, hook, mail, slack)" in result.stderr
    config = load_config(config_file)
    with pytest.raises(ValueError, match=r"unknown channels 'pager', 'nowhere' \(channels: archive, hook, mail, slack\)"):
        queue_report(state, config, digest, ["slack", "pager", "nowhere"], END)
    assert set(outbox_summary(state).values()) == {0} and fake.received == []


# --- the library: queueing and payloads ------------------------------------------------------------


def test_queue_report_to_a_webhook_then_deliver(config_file: Path, fake: FakeSlack, state: StateStore,
                                                digest: ReportResult) -> None:
    config = load_config(config_file)
    ids = queue_report(state, config, digest, ["hook", "hook"], END)
    assert len(ids) == 1
    assert deliver_due(config, state, END).delivered == 1
    [body] = fake.calls("webhook")
    assert body["blocks"][0]["text"]["text"] == "Weekly digest" and body["text"].startswith("Weekly digest · ")


def test_payloads_are_json_and_within_slack_limits(digest: ReportResult) -> None:
    config = Config.model_validate({"channels": {
        "slack": {"type": "slack", "token": "t", "channel": "#c"},
        "mail": {"type": "email", "host": "h", "from": "aw@example.com", "to": ["a@example.com"]},
        "archive": {"type": "file", "path": "out"},
    }})
    for channel in config.channels.values():
        payload = report_payload(channel, digest)
        assert json.loads(json.dumps(payload)) == payload
        assert payload["report"]["name"] == "weekly-digest" and payload["title"] == "Weekly digest"
    # A long paragraph is cut at lines, nothing lost; too many paragraphs end in "and N more".
    long_paragraph = "\n".join(f"• line {i} " + "x" * 90 for i in range(80))
    payload = report_payload(config.channels["slack"], dataclasses.replace(digest, slack=long_paragraph))
    sections = [b["text"]["text"] for b in payload["blocks"] if b["type"] == "section"]
    assert len(sections) == 3 and all(len(s) <= MAX_TEXT for s in sections)
    assert "\n".join(sections) == long_paragraph
    many = "\n\n".join(f"paragraph {i}" for i in range(80))
    blocks = report_payload(config.channels["slack"], dataclasses.replace(digest, slack=many))["blocks"]
    assert len(blocks) == MAX_BLOCKS and blocks[-2]["text"]["text"] == "_…and 33 more sections_"
