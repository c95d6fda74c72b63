"""The registry of channel types: the one place that tells ``slack`` from ``email``.

Everything else asks the registry about a channel's config: its sender
(:func:`make_channel`), an alert's payload (:func:`compose`), a report's payload
(:func:`compose_report`), whether it threads (:func:`threaded`) and whether a
resolution also updates the firing message (:func:`updates_root`, :func:`root_update`).
The config's ``channels:`` accepts exactly the registered types (:data:`ChannelConfig`).

Adding a channel type (say ``webhook``) takes one module and one line here (plus its import):

1. ``audit_watch/channels/webhook.py`` holds

   * its config model: ``class WebhookChannel(ChannelSettings)`` with
     ``type: Literal["webhook"]`` and its keys (secrets as ``SecretStr``);
   * its sender: a :class:`~audit_watch.channels.base.Channel` whose ``send``
     never raises and answers a ``DeliveryResult`` saying whether a failure is
     worth retrying (the outbox decides when);
   * ``WEBHOOK = WebhookType()``: a :class:`~audit_watch.channels.channel_type.ChannelType`
     with ``config_model = WebhookChannel``, ``sender``, ``alert_payload``
     (build it from :mod:`audit_watch.channels.messages`; escape what comes from
     the audit store with :mod:`audit_watch.channels.escaping`), ``report_payload``
     (from :class:`~audit_watch.channels.channel_type.ReportContent`), and
     ``threads`` / ``updates_root`` (with ``root_update``) when it can reply
     under or edit the message that announced the firing;

2. ``WEBHOOK`` (imported from it) joins :data:`TYPES` below.

Payloads are plain JSON: the outbox stores them when the notification is queued.
Then document the type's keys in the README and give it tests of its payloads
and of its sender's answers (see ``tests/test_channel_registry.py``).
"""

from __future__ import annotations

import functools
import operator
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, GetPydanticSchema

from audit_watch.channels.base import Channel
from audit_watch.channels.channel_type import ChannelSettings, ChannelType, ReportContent
from audit_watch.channels.email import EMAIL
from audit_watch.channels.file import FILE
from audit_watch.channels.messages import MessageContext, title
from audit_watch.channels.render import Renderer
from audit_watch.channels.slack import SLACK, SLACK_WEBHOOK

TYPES: tuple[ChannelType[Any], ...] = (
    SLACK,
    SLACK_WEBHOOK,
    EMAIL,
    FILE,
)


def _channel_union() -> Any:
    """``SlackChannel | SlackWebhookChannel | ...`` discriminated by ``type``, built from TYPES."""
    union = functools.reduce(operator.or_, [kind.config_model for kind in TYPES])
    return Annotated[union, Field(discriminator="type")]


# A channel's entry in the config: validated as one of the registered models (chosen
# by its ``type``), seen by the type checker as their common base.
ChannelConfig = Annotated[
    ChannelSettings, GetPydanticSchema(lambda _source, handler: handler(_channel_union()))
]


def channel_type(config: ChannelSettings) -> ChannelType[Any]:
    """The type of a configured channel."""
    for kind in TYPES:
        if kind.name == config.type:
            return kind
    raise TypeError(f"unknown channel type {config.type!r} (types: {', '.join(k.name for k in TYPES)})")


def make_channel(name: str, config: ChannelSettings, base_dir: Path | None = None, **options: Any) -> Channel:
    """A sender for one configured channel. ``options`` reach the sender (tests:
    ``ssl_context`` for email, ``timeout`` for Slack)."""
    return channel_type(config).sender(name, config, base_dir, **options)


def threaded(config: ChannelSettings) -> bool:
    """Whether repeats and resolutions go under the message that announced the firing
    (Slack with a bot token: replies; email: In-Reply-To)."""
    return channel_type(config).threads


def updates_root(config: ChannelSettings) -> bool:
    """Whether a resolution also re-renders the message that announced the firing."""
    return channel_type(config).updates_root


def compose(config: ChannelSettings, renderer: Renderer, message: MessageContext) -> dict[str, Any]:
    """The payload of one alert notification for this channel. Every payload also
    carries ``"alerts"`` (``Alert.to_json()``, content redacted) and ``"title"``."""
    payload = channel_type(config).alert_payload(config, renderer, message)
    payload["alerts"] = [e.alert for e in message.entries]
    payload["title"] = title(message)
    return payload


def root_update(config: ChannelSettings, renderer: Renderer, message: MessageContext) -> dict[str, Any]:
    """The firing message re-rendered with each alert's current status (``message.event``
    is ``update``), for a channel that :func:`updates_root`."""
    return channel_type(config).root_update(config, renderer, message)


def compose_report(config: ChannelSettings, report: ReportContent) -> dict[str, Any]:
    """The payload of one report for this channel. Every payload also carries
    ``"report"``: its name, kind, period and scope."""
    payload = channel_type(config).report_payload(config, report)
    payload["report"] = dict(report.about)
    return payload
