"""The sending stage of :func:`audit_watch.alerting.pipeline.deliver_due`: claimed
notifications, grouped by channel, handed to each channel's sender.

Senders are built from the config once per delivery run, when first needed, and
closed at its end. Whatever a sender does, the stage answers one
:class:`~audit_watch.channels.base.DeliveryResult` per notification: a sender
that raises, or a channel no longer configured, becomes a result the outbox
records like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from audit_watch.alerting.outbox import Claimed
from audit_watch.channels.base import Channel, DeliveryResult
from audit_watch.channels.registry import make_channel
from audit_watch.config.model import Config
from audit_watch.core.errors import short_error

log = logging.getLogger(__name__)


def by_channel(claimed: Iterable[Claimed]) -> dict[str, list[Claimed]]:
    """Claimed notifications per channel, in claim order (a channel sends its batch at once)."""
    grouped: dict[str, list[Claimed]] = {}
    for item in claimed:
        grouped.setdefault(item.notification.channel, []).append(item)
    return grouped


class Senders:
    """The senders of one delivery run (a context manager: closes what it built).

    ``overrides`` replace senders by name (tests); ``options`` reach the senders
    built from the config (``{"mail": {"ssl_context": ctx}}``).
    """

    def __init__(self, config: Config, overrides: Mapping[str, Channel] | None = None,
                 options: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.config = config
        self.overrides = overrides or {}
        self.options = options or {}
        self.built: dict[str, Channel] = {}

    def __enter__(self) -> Senders:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for sender in self.built.values():
            sender.close()
        self.built.clear()

    def sender(self, name: str) -> Channel | None:
        """The sender of channel ``name``, None when it is no longer configured."""
        sender = self.overrides.get(name) or self.built.get(name)
        if sender is None:
            channel_config = self.config.channels.get(name)
            if channel_config is None:
                return None
            sender = self.built[name] = make_channel(name, channel_config, self.config.base_dir,
                                                     **self.options.get(name, {}))
        return sender

    def send(self, name: str, items: list[Claimed]) -> list[DeliveryResult]:
        """One result per item, in order."""
        sender = self.sender(name)
        if sender is None:
            log.error("outbox: channel %r is no longer configured", name)
            return [DeliveryResult.permanent(f"channel {name!r} is not configured")] * len(items)
        try:
            results = sender.send_batch([i.notification for i in items])
        except Exception as exc:
            log.exception("channel %s raised while sending", name)
            return [DeliveryResult.retry(short_error(exc))] * len(items)
        if len(results) != len(items):  # pragma: no cover - a sender contract breach
            return [DeliveryResult.retry("sender returned a wrong number of results")] * len(items)
        return results
