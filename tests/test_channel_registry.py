"""The registry of channel types: config, senders, payloads and threading, asked of one place.

Includes a ``webhook`` type defined here as the registry's docstring says (one
module, one line), to show that the config and every dispatch pick it up.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field, SecretStr, ValidationError

from audit_watch.channels import registry
from audit_watch.channels.base import Channel, DeliveryResult, Notification
from audit_watch.channels.channel_type import ChannelSettings, ChannelType, ReportContent
from audit_watch.channels.email import EmailSender
from audit_watch.channels.file import FileSender
from audit_watch.channels.messages import Entry, MessageContext, rule_info
from audit_watch.channels.registry import (
    TYPES,
    ChannelConfig,
    channel_type,
    compose,
    compose_report,
    make_channel,
    root_update,
    threaded,
    updates_root,
)
from audit_watch.channels.render import Renderer
from audit_watch.channels.slack import SlackBotChannel, SlackWebhookSender
from audit_watch.config.model import Config

from test_state import T0, make_alert, make_rule

PACKAGE = Path(__file__).resolve().parent.parent / "audit_watch"
CONFIG = Config.model_validate({"channels": {
    "oncall": {"type": "slack", "token": "xoxb-test", "channel": "#ops"},
    "hook": {"type": "slack_webhook", "url": "https://hooks.slack.test/T/B/x"},
    "mail": {"type": "email", "host": "127.0.0.1", "from": "aw@example.com", "to": ["ops@example.com"]},
    "archive": {"type": "file", "path": "out"},
}, "base_dir": "/srv/audit-watch"})
REPORT = ReportContent(
    name="weekly-digest", title="Weekly digest", period="16 Nov – 23 Nov 2026 (UTC)", text="the text\n",
    html="<p>standalone</p>", email_html="<p>for mail</p>", slack="*Weekly digest*\n\nsecond paragraph",
    attachments=({"filename": "jobs.png", "content_type": "image/png", "cid": "jobs@aw", "data": "AA=="},
                 {"filename": "e.csv", "content_type": "text/csv", "cid": None, "data": "YQ=="}),
    evidence={"filename": "e.csv", "content_type": "text/csv", "cid": None, "data": "YQ=="},
    about={"name": "weekly-digest", "kind": "weekly-digest"},
)


def message(event: str = "firing", status: str = "firing") -> MessageContext:
    alert = make_alert()
    entry = Entry({**alert.to_json(), "group_label": alert.group_label}, status, T0, T0)
    return MessageContext(rule_info(make_rule()), event, [entry], T0)


def test_every_type_is_named_by_its_model_and_registered_once() -> None:
    names = [kind.name for kind in TYPES]
    assert names == ["slack", "slack_webhook", "email", "file"]
    for name, entry in CONFIG.channels.items():
        assert channel_type(entry).config_model is type(entry), name
        assert channel_type(entry).name == entry.type


def test_the_config_accepts_exactly_the_registered_types() -> None:
    with pytest.raises(ValidationError) as caught:
        Config.model_validate({"channels": {"x": {"type": "pagerduty", "key": "k"}}})
    [error] = caught.value.errors()
    assert error["type"] == "union_tag_invalid"
    assert error["ctx"]["expected_tags"] == ", ".join(repr(kind.name) for kind in TYPES)


@pytest.mark.parametrize(("name", "threads", "updates"), [
    ("oncall", True, True), ("hook", False, False), ("mail", True, False), ("archive", False, False),
])
def test_what_each_type_says_about_threads(name: str, threads: bool, updates: bool) -> None:
    assert threaded(CONFIG.channels[name]) is threads
    assert updates_root(CONFIG.channels[name]) is updates


@pytest.mark.parametrize(("name", "sender"), [
    ("oncall", SlackBotChannel), ("hook", SlackWebhookSender), ("mail", EmailSender), ("archive", FileSender),
])
def test_make_channel_builds_each_types_sender(name: str, sender: type[Channel]) -> None:
    built = make_channel(name, CONFIG.channels[name], CONFIG.base_dir)
    assert type(built) is sender and built.name == name


def test_senders_get_their_options_and_files_land_beside_the_config() -> None:
    context = ssl.create_default_context()
    mail = make_channel("mail", CONFIG.channels["mail"], CONFIG.base_dir, ssl_context=context)
    assert isinstance(mail, EmailSender) and mail.ssl_context is context
    archive = make_channel("archive", CONFIG.channels["archive"], CONFIG.base_dir)
    assert isinstance(archive, FileSender) and archive.folder == Path("/srv/audit-watch/out")


def test_alert_payloads_have_each_types_shape_and_the_common_keys() -> None:
    shapes = {"oncall": {"text", "blocks"}, "hook": {"text", "blocks"},
              "mail": {"subject", "text", "html", "message_id"}, "archive": {"text"}}
    for name, keys in shapes.items():
        payload = compose(CONFIG.channels[name], Renderer(), message())
        assert set(payload) == keys | {"alerts", "title"}, name
        assert payload["title"] == "failed-jobs: 1 alert firing"
        assert [a["fingerprint"] for a in payload["alerts"]] == [make_alert().fingerprint]


def test_only_a_type_that_updates_its_messages_renders_a_root_update() -> None:
    update = root_update(CONFIG.channels["oncall"], Renderer(), message("update", "resolved"))
    assert update["blocks"][0]["text"]["text"] == "✅ Resolved: failed-jobs"
    with pytest.raises(NotImplementedError, match="'email' does not update"):
        root_update(CONFIG.channels["mail"], Renderer(), message("update", "resolved"))


def test_report_payloads_have_each_types_shape() -> None:
    slack = compose_report(CONFIG.channels["oncall"], REPORT)
    assert slack["report"] == REPORT.about and slack["title"] == "Weekly digest"
    assert [b["type"] for b in slack["blocks"]] == ["header", "section", "section", "context"]
    assert slack["text"] == "Weekly digest · 16 Nov – 23 Nov 2026 (UTC)"
    mail = compose_report(CONFIG.channels["mail"], REPORT)
    assert mail["subject"] == "Weekly digest — 16 Nov – 23 Nov 2026 (UTC)" and mail["text"] == "the text\n"
    assert [a["filename"] for a in mail["attachments"]] == ["jobs.png", "e.csv"]
    files = compose_report(CONFIG.channels["archive"], REPORT)
    assert files == {"title": "Weekly digest", "text": "the text\n", "html": "<p>standalone</p>",
                     "attachments": [REPORT.evidence], "report": REPORT.about}


def test_no_module_tells_channel_types_apart_but_the_registry() -> None:
    """Code outside the channel type modules asks the registry, never ``isinstance``."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"isinstance\([^)]*Channel\b", line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert offenders == []


# --- a new type: one module (below) and one line in TYPES ---------------------------------


class WebhookChannel(ChannelSettings):
    type: Literal["webhook"]
    url: SecretStr
    max_rows: int = Field(default=5, ge=0)


class WebhookSender(Channel):
    def __init__(self, name: str, config: WebhookChannel) -> None:
        super().__init__(name)
        self.sent: list[Notification] = []

    def send(self, notification: Notification) -> DeliveryResult:
        self.sent.append(notification)
        return DeliveryResult.delivered()


class WebhookType(ChannelType[WebhookChannel]):
    config_model = WebhookChannel

    def sender(self, name: str, config: WebhookChannel, base_dir: Path | None, **options: Any) -> Channel:
        return WebhookSender(name, config)

    def alert_payload(self, config: WebhookChannel, renderer: Renderer, message: MessageContext) -> dict[str, Any]:
        return {"event": message.event, "count": len(message.entries)}

    def report_payload(self, config: WebhookChannel, report: ReportContent) -> dict[str, Any]:
        return {"text": report.text}


def test_a_type_added_to_the_registry_is_configured_and_dispatched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "TYPES", (*TYPES, WebhookType()))

    class Channels(BaseModel):  # the config's channels: built when the model is (Config is built at import)
        channels: dict[str, ChannelConfig]

    hook = Channels.model_validate({"channels": {"h": {"type": "webhook", "url": "https://x.test/in"}}}).channels["h"]
    assert isinstance(hook, WebhookChannel) and hook.max_rows == 5
    assert not threaded(hook) and not updates_root(hook)
    assert isinstance(make_channel("h", hook), WebhookSender)
    assert compose(hook, Renderer(), message())["count"] == 1
    assert compose_report(hook, REPORT) == {"text": "the text\n", "report": REPORT.about}
    with pytest.raises(ValidationError, match="'webhook'"):
        Channels.model_validate({"channels": {"h": {"type": "nope"}}})
