"""Delivery channels: ``slack``, ``slack_webhook``, ``email``, ``file``.

Each type is one module (config model, sender, payloads) listed in
:mod:`audit_watch.channels.registry`, which says how to add one. A channel only
sends: it knows rendered payloads, never rules or states.
"""

from __future__ import annotations

from audit_watch.channels.base import Channel, DeliveryResult, Notification
from audit_watch.channels.registry import make_channel, threaded

__all__ = ["Channel", "DeliveryResult", "Notification", "make_channel", "threaded"]
