"""Delivery channels: ``slack``, ``slack_webhook``, ``email``, ``file``.

:func:`make_channel` turns a channel's config into a sender; :func:`threaded`
says whether a channel can put repeats and resolutions under the first message
(Slack with a bot token: replies and ``chat.update``; email: In-Reply-To).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audit_watch.channels.base import Channel, DeliveryResult, Notification
from audit_watch.channels.settings import EmailChannel, FileChannel, SlackChannel, SlackWebhookChannel

__all__ = ["Channel", "DeliveryResult", "Notification", "make_channel", "threaded"]


def threaded(config: Any) -> bool:
    return isinstance(config, (SlackChannel, EmailChannel))


def make_channel(name: str, config: Any, base_dir: Path | None = None, **options: Any) -> Channel:
    """A sender for one configured channel. ``options`` reach the sender (tests:
    ``ssl_context`` for email, ``timeout`` for Slack)."""
    if isinstance(config, SlackChannel):
        from audit_watch.channels.slack import SlackBotChannel

        return SlackBotChannel(name, config, **options)
    if isinstance(config, SlackWebhookChannel):
        from audit_watch.channels.slack import SlackWebhookSender

        return SlackWebhookSender(name, config, **options)
    if isinstance(config, EmailChannel):
        from audit_watch.channels.email import EmailSender

        return EmailSender(name, config, **options)
    if isinstance(config, FileChannel):
        from audit_watch.channels.file import FileSender

        folder = Path(config.path).expanduser()
        if not folder.is_absolute() and base_dir is not None:
            folder = base_dir / folder
        return FileSender(name, config, folder)
    raise TypeError(f"channel {name!r}: unknown type {type(config).__name__}")
