"""The ``slack`` (bot token) and ``slack_webhook`` channel types: config, senders, payloads.

``slack``: ``chat.postMessage`` / ``chat.update`` with a bot token; ``slack_webhook``:
an incoming webhook. Both send the payloads of :mod:`audit_watch.channels.slack_messages`.

slack-sdk's own retry handlers are switched off (``retry_handlers=[]``): a sleeping
retry would block the scheduler's thread, while the outbox reschedules for free.
So a 429 answers ``retry_after`` from its ``Retry-After`` header, 5xx and
connection errors answer "retry", and ``invalid_auth``, ``channel_not_found``,
``not_in_channel`` (and similar) are permanent: the notification is dead at once.

With a bot token a notification can thread: repeats and resolutions are posted
as replies under the firing message (``thread_ts``), and a resolution also
updates that message (``chat.update``) to show what is resolved. A retry after
the reply went out but the update failed does not post the reply again: the
progress travels in ``remote_ref``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from audit_watch.channels.base import Channel, DeliveryResult, Notification
from audit_watch.channels.channel_type import ChannelSettings, ChannelType, ReportContent
from audit_watch.channels.messages import MessageContext
from audit_watch.channels.render import Renderer
from audit_watch.channels.slack_messages import alert_message, report_message
from audit_watch.core.errors import short_error

log = logging.getLogger(__name__)


class SlackChannel(ChannelSettings):
    type: Literal["slack"]
    token: SecretStr
    channel: str
    base_url: str | None = None
    max_rows: int = Field(default=10, ge=0, le=20)


class SlackWebhookChannel(ChannelSettings):
    type: Literal["slack_webhook"]
    url: SecretStr
    max_rows: int = Field(default=10, ge=0, le=20)


# Errors that the same request will always get again: the notification is kept as dead at once
# (`alerts --outbox` shows it with its hint) and is not sent again; after the config is fixed, the
# alert's next notification (a repeat, its resolution) goes out.
PERMANENT_ERRORS = frozenset({
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "no_permission",
    "missing_scope", "channel_not_found", "not_in_channel", "is_archived", "restricted_action",
    "invalid_blocks", "invalid_blocks_format", "msg_too_long", "invalid_arguments", "too_many_attachments",
    "ekm_access_denied", "team_access_not_granted", "no_text", "invalid_auth_type",
})
HINTS = {
    "invalid_auth": "the token is wrong or revoked: check the channel's token",
    "not_authed": "no token was sent: check the channel's token",
    "channel_not_found": "check the channel name (or id) in the config",
    "not_in_channel": "invite the bot to the channel (/invite @your-app)",
    "missing_scope": "the app needs the chat:write scope",
}
# chat.update errors that leave the reply delivered: the original message just stays as it was.
UPDATE_GIVE_UP = frozenset({"message_not_found", "cant_update_message", "edit_window_closed", "channel_not_found"})
DEFAULT_RETRY_AFTER = 30.0


def _retry_after(headers: Any) -> float:
    for key in ("Retry-After", "retry-after"):
        value = (headers or {}).get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            try:
                return max(float(value), 0.0)
            except ValueError:
                break
    return DEFAULT_RETRY_AFTER


def classify_api_error(channel: str, exc: SlackApiError, remote_ref: dict[str, Any] | None = None) -> DeliveryResult:
    response = exc.response
    status = getattr(response, "status_code", 0) or 0
    data = response.data if isinstance(getattr(response, "data", None), dict) else {}
    code = str(data.get("error") or f"HTTP {status}")
    if status == 429 or code == "ratelimited":
        return DeliveryResult.retry("rate limited (429)", _retry_after(response.headers), remote_ref)
    if code in PERMANENT_ERRORS:
        hint = HINTS.get(code, "the request will not succeed as it is")
        log.error("slack channel %s: permanent error %s: %s", channel, code, hint)
        return DeliveryResult.permanent(f"slack error {code}: {hint}", remote_ref)
    return DeliveryResult.retry(f"slack error {code} (HTTP {status})", None, remote_ref)


class SlackBotChannel(Channel):
    """A ``slack`` channel: Web API with a bot token."""

    def __init__(self, name: str, config: SlackChannel, client: WebClient | None = None, timeout: int = 15) -> None:
        super().__init__(name)
        self.config = config
        options: dict[str, Any] = {"token": config.token.get_secret_value(), "timeout": timeout, "retry_handlers": []}
        if config.base_url:
            options["base_url"] = config.base_url if config.base_url.endswith("/") else config.base_url + "/"
        self.client = client or WebClient(**options)

    def send(self, notification: Notification) -> DeliveryResult:
        payload = notification.payload
        ref = dict(notification.remote_ref or {})
        parent = notification.parent_ref if notification.parent_ref and notification.parent_ref.get("ts") else None
        thread = parent if notification.kind != "firing" else None   # repeats and resolutions reply
        try:
            if "ts" not in ref:
                args: dict[str, Any] = {
                    "channel": thread["channel"] if thread else self.config.channel,
                    "text": payload["text"], "blocks": payload["blocks"],
                    "unfurl_links": False, "unfurl_media": False,
                }
                if thread:
                    args["thread_ts"] = thread["ts"]
                response = self.client.chat_postMessage(**args)
                ref = {"channel": response["channel"], "ts": response["ts"]}
                if thread:
                    ref["thread_ts"] = thread["ts"]
            if thread and notification.kind == "resolved" and payload.get("update") and "updated" not in ref:
                return self._update_root(notification, thread, ref)
        except SlackApiError as exc:
            return classify_api_error(self.name, exc, ref or None)
        except Exception as exc:  # noqa: BLE001 - connection errors, timeouts: try again later
            return DeliveryResult.retry(short_error(exc), None, ref or None)
        return DeliveryResult.delivered(ref)

    def _update_root(self, notification: Notification, parent: dict[str, Any], ref: dict[str, Any]) -> DeliveryResult:
        update = notification.payload["update"]
        try:
            self.client.chat_update(channel=parent["channel"], ts=parent["ts"], text=update["text"], blocks=update["blocks"])
        except SlackApiError as exc:
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            code = str(data.get("error", ""))
            if code in UPDATE_GIVE_UP:
                log.warning("slack channel %s: could not update message %s (%s); the reply is posted",
                            self.name, parent["ts"], code)
                return DeliveryResult.delivered({**ref, "updated": False}, note=f"chat.update failed: {code}")
            return classify_api_error(self.name, exc, ref)
        return DeliveryResult.delivered({**ref, "updated": True})


class SlackWebhookSender(Channel):
    """A ``slack_webhook`` channel: no threads, no updates, every notification a message."""

    def __init__(self, name: str, config: SlackWebhookChannel, client: WebhookClient | None = None,
                 timeout: int = 15) -> None:
        super().__init__(name)
        self.client = client or WebhookClient(config.url.get_secret_value(), timeout=timeout, retry_handlers=[])

    def send(self, notification: Notification) -> DeliveryResult:
        payload = notification.payload
        try:
            response = self.client.send(
                text=payload["text"], blocks=payload["blocks"], unfurl_links=False, unfurl_media=False
            )
        except Exception as exc:  # noqa: BLE001 - connection errors, timeouts
            return DeliveryResult.retry(short_error(exc))
        status, body = response.status_code, (response.body or "").strip()[:200]
        if status == 200:
            return DeliveryResult.delivered()
        if status == 429:
            return DeliveryResult.retry("rate limited (429)", _retry_after(response.headers))
        if status >= 500:
            return DeliveryResult.retry(f"webhook answered HTTP {status}: {body}")
        log.error("slack webhook %s: permanent error HTTP %s %s: check the webhook URL", self.name, status, body)
        return DeliveryResult.permanent(f"webhook answered HTTP {status}: {body}")


class SlackType(ChannelType[SlackChannel]):
    """A bot token: repeats and resolutions reply in the firing message's thread, and
    a resolution also updates that message to show what is resolved."""

    config_model = SlackChannel
    threads = True
    updates_root = True

    def sender(self, name: str, config: SlackChannel, base_dir: Path | None, **options: Any) -> Channel:
        return SlackBotChannel(name, config, **options)

    def alert_payload(self, config: SlackChannel, renderer: Renderer, message: MessageContext) -> dict[str, Any]:
        return alert_message(renderer, message, config.max_rows)

    def report_payload(self, config: SlackChannel, report: ReportContent) -> dict[str, Any]:
        return report_message(report)

    def root_update(self, config: SlackChannel, renderer: Renderer, message: MessageContext) -> dict[str, Any]:
        return alert_message(renderer, message, config.max_rows)


class SlackWebhookType(ChannelType[SlackWebhookChannel]):
    """An incoming webhook: every notification a message of its own."""

    config_model = SlackWebhookChannel

    def sender(self, name: str, config: SlackWebhookChannel, base_dir: Path | None, **options: Any) -> Channel:
        return SlackWebhookSender(name, config, **options)

    def alert_payload(self, config: SlackWebhookChannel, renderer: Renderer, message: MessageContext) -> dict[str, Any]:
        return alert_message(renderer, message, config.max_rows)

    def report_payload(self, config: SlackWebhookChannel, report: ReportContent) -> dict[str, Any]:
        return report_message(report)


SLACK = SlackType()
SLACK_WEBHOOK = SlackWebhookType()
