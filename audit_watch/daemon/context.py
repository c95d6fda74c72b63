"""What every job of the daemon runs with: the loaded config's tick context, the clock."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from audit_watch.alerting.outbox import DeliveryPolicy
from audit_watch.alerting.state import StateStore
from audit_watch.channels.render import Renderer
from audit_watch.config.model import Config
from audit_watch.rules.model import RuleBase
from audit_watch.store.source import AuditSource

REPLICA_HEARTBEAT = 1.0    # seconds between a replica's signs of life


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class TickContext:
    """What a tick runs with; the daemon builds a new one on every reload."""

    config: Config
    src: AuditSource
    state: StateStore
    renderer: Renderer
    replica: str
    clock: Callable[[], datetime]
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    hold: Callable[[RuleBase], bool] | None = None     # True: do not evaluate now (the store is silent)
    channel_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def self_alert_channels(self, fallback: Iterable[str]) -> tuple[str, ...]:
        return self.config.daemon.notify or tuple(dict.fromkeys(fallback))
