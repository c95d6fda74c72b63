"""One pass from evaluations to delivered notifications: the entry points of ``run``.

* :func:`process` applies evaluations to the alert states and queues the
  notifications they cause, all in ONE transaction: either both the state change
  and its notifications are stored, or neither. Its stages are in
  :mod:`audit_watch.alerting.stages`, wired here in the order they run.
* :func:`deliver_due` sends what is due from the outbox and records each result
  (the sending stage: :mod:`audit_watch.alerting.senders`).

Time is always the ``now`` argument: the caller reads the clock once per tick.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from audit_watch.alerting.notify import decide
from audit_watch.alerting.outbox import DeliveryPolicy, claim, record
from audit_watch.alerting.senders import Senders, by_channel
from audit_watch.alerting.silences import active_silences
from audit_watch.alerting.stages import (
    enqueue_notification,
    failed,
    plan_notifications,
    render,
    stale,
    store_step,
    transitions,
)
from audit_watch.alerting.state import StateStore, load_states
from audit_watch.channels.base import Channel
from audit_watch.channels.render import Renderer
from audit_watch.config.model import Config
from audit_watch.core.outcomes import DeliveryOutcome
from audit_watch.rules.evaluate import Evaluation

MAX_ROUNDS = 20  # claim rounds per deliver_due: replies wait for their root, one round each


@dataclass
class ProcessSummary:
    evaluations: int = 0
    transitions: Counter[str] = field(default_factory=Counter)   # pending, firing, resolved, cleared
    notifications: list[int] = field(default_factory=list)       # outbox ids queued
    silenced: int = 0                                            # notifications held back
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (rule, why)


@dataclass(frozen=True)
class Outcome:
    id: int
    channel: str
    status: str
    error: str | None


@dataclass
class DeliverySummary:
    outcomes: list[Outcome] = field(default_factory=list)

    def _count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def attempted(self) -> int:
        return len(self.outcomes)

    @property
    def delivered(self) -> int:
        return self._count(DeliveryOutcome.DELIVERED)

    @property
    def retrying(self) -> int:
        return self._count(DeliveryOutcome.RETRYING)

    @property
    def dead(self) -> int:
        return self._count(DeliveryOutcome.DEAD)


def process(
    evaluations: Iterable[Evaluation], config: Config, state: StateStore, now: datetime,
    *, renderer: Renderer | None = None, policy: DeliveryPolicy | None = None,
) -> ProcessSummary:
    """Apply evaluations to the alert states and queue their notifications (one transaction).

    A failed evaluation changes nothing (a database outage must not resolve every
    alert); an evaluation older than the rule's last one is skipped as stale.
    """
    renderer = renderer or Renderer(config.template_paths, config.timezone)
    policy = policy or DeliveryPolicy.from_config(config.delivery)
    summary = ProcessSummary()
    with state.write() as conn:
        silences = active_silences(conn, now)
        for evaluation in evaluations:
            rule = evaluation.rule
            if why := failed(evaluation):
                summary.skipped.append((rule.name, why))
                continue
            prior = load_states(conn, rule.name, lock=True)
            if why := stale(evaluation, prior):
                summary.skipped.append((rule.name, why))
                continue
            step = decide(rule, prior, evaluation.alerts, evaluation.now, silences)
            store_step(conn, prior, step)
            summary.evaluations += 1
            summary.transitions.update(transitions(prior, step))
            summary.silenced += step.silenced
            planned = plan_notifications(conn, rule, step.events, config.channels)
            # Stages that choose among planned notifications slot in here, each taking and
            # returning the list: routing, inhibition, mute intervals, a cap per channel per tick.
            for notification in planned:
                channel = config.channels[notification.channel]
                payload = render(conn, notification, channel, renderer, evaluation.now)
                summary.notifications.append(enqueue_notification(conn, notification, payload, channel, policy, now))
            # Stages that follow what was queued (acknowledgement, escalation) slot in here.
    return summary


def deliver_due(
    config: Config, state: StateStore, now: datetime, *, policy: DeliveryPolicy | None = None,
    channels: Mapping[str, Channel] | None = None, rng: random.Random | None = None,
    channel_options: Mapping[str, Mapping[str, Any]] | None = None, only: Iterable[int] | None = None,
) -> DeliverySummary:
    """Send every notification due at ``now`` (``only``: just these outbox ids, as
    ``audit-watch report`` sends its own); failures are rescheduled or kept as dead.

    ``channels`` replaces senders by name (tests); ``channel_options`` passes
    options to the senders built from the config (e.g. ``{"mail": {"ssl_context": ctx}}``).
    """
    wanted = None if only is None else list(only)
    policy = policy or DeliveryPolicy.from_config(config.delivery)
    rng = rng or random.Random()
    summary = DeliverySummary()
    attempted: set[int] = set()
    with Senders(config, channels, channel_options) as senders:
        for _ in range(MAX_ROUNDS):
            claimed = claim(state, now, policy, exclude=attempted, only=wanted)
            if not claimed:
                break
            attempted.update(c.notification.id for c in claimed)
            for name, items in by_channel(claimed).items():
                for item, result in zip(items, senders.send(name, items)):
                    status = record(state, item, result, now, policy, rng)
                    summary.outcomes.append(Outcome(item.notification.id, name, status, result.error))
    return summary


__all__ = ["DeliveryPolicy", "DeliverySummary", "Outcome", "ProcessSummary", "deliver_due", "process"]
