"""What every channel shares: the notification it is handed and what it answers.

A channel only sends: it knows the rendered payload, never rules or states. It
answers whether a failure is worth retrying (and after how long, when the server
said so); the outbox decides when.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Notification:
    """One outbox row as a channel sees it."""

    id: int
    channel: str
    kind: str                                  # firing | repeat | resolved
    rule: str
    payload: dict[str, Any]                    # rendered for this channel's type
    created_at: datetime
    attempt: int = 1
    parent_ref: dict[str, Any] | None = None   # the thread root's remote_ref, once delivered
    remote_ref: dict[str, Any] | None = None   # progress of an earlier attempt (a reply posted, ...)


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    retryable: bool = False
    error: str | None = None
    retry_after: float | None = None           # seconds, when the server said (429 Retry-After)
    remote_ref: dict[str, Any] | None = None   # Slack {channel, ts}; email {message_id}

    @classmethod
    def delivered(cls, remote_ref: dict[str, Any] | None = None, note: str | None = None) -> DeliveryResult:
        return cls(ok=True, error=note, remote_ref=remote_ref)

    @classmethod
    def retry(cls, error: str, retry_after: float | None = None, remote_ref: dict[str, Any] | None = None) -> DeliveryResult:
        return cls(ok=False, retryable=True, error=error, retry_after=retry_after, remote_ref=remote_ref)

    @classmethod
    def permanent(cls, error: str, remote_ref: dict[str, Any] | None = None) -> DeliveryResult:
        return cls(ok=False, retryable=False, error=error, remote_ref=remote_ref)


class Channel(ABC):
    """A configured destination. ``send`` must never raise: it answers a result."""

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def send(self, notification: Notification) -> DeliveryResult:
        """Deliver one notification."""

    def send_batch(self, notifications: Sequence[Notification]) -> list[DeliveryResult]:
        """Deliver several (email overrides this to use one connection)."""
        return [self.send(n) for n in notifications]

    def close(self) -> None:  # noqa: B027 - optional for subclasses, a no-op by default
        """Release connections (nothing by default)."""
