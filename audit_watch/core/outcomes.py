"""Every status and outcome audit-watch stores or exports, one enum per kind.

The values are stored in the state database (``aw_run_ledger.status``,
``aw_outbox.status``) and shown by ``alerts --outbox``, ``run --once`` and the
labels of ``/metrics``: renaming one is a migration, not a refactoring. Each is a
``StrEnum``, so a member is its value wherever a string goes (SQL parameters,
metric labels, JSON, comparisons with what the database returns).
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """A run ledger row's status (``aw_run_ledger.status``): one per (job, tick)."""

    CLAIMED = "claimed"        # a replica is running it
    OK = "ok"
    ERROR = "error"
    HELD = "held"              # not evaluated on purpose: the audit store is silent
    ABANDONED = "abandoned"    # its replica died and the tick was no longer current


class RunOutcome(StrEnum):
    """What one replica's attempt at a rule tick or a report run came to: the status
    it recorded, or why it recorded none. The ``result`` label of
    ``audit_watch_evaluations_total`` and ``audit_watch_report_runs_total``."""

    OK = "ok"
    ERROR = "error"
    HELD = "held"
    ELSEWHERE = "elsewhere"    # another replica (or an earlier run) has the tick
    LATE = "late"              # a report run past its catch_up: neither claimed nor sent
    STOPPED = "stopped"        # the daemon stopped between a report's attempts: left claimed for a take-over


class OutboxStatus(StrEnum):
    """A notification's status in the outbox (``aw_outbox.status``; the transitions
    are told in ``alerting/outbox.py``)."""

    QUEUED = "queued"
    RETRYING = "retrying"      # failed, tried again at next_attempt_at
    SENDING = "sending"        # claimed by a delivery pass until claimed_until
    DELIVERED = "delivered"
    DEAD = "dead"              # a permanent error, or still failing after max_age: kept, not sent again


class DeliveryOutcome(StrEnum):
    """What one delivery attempt came to (``audit_watch_deliveries_total{result}``)."""

    DELIVERED = "delivered"
    RETRYING = "retrying"
    DEAD = "dead"
    LOST = "lost"              # the lease ran out and another pass took the row over: its answer counts


class TickResult(StrEnum):
    """The ``outcome`` label of ``audit_watch_ticks_total``: what became of a scheduled
    rule run. ``FAILED`` is also the ``result`` of a report run the state database failed."""

    EVALUATED = "evaluated"
    ELSEWHERE = "elsewhere"    # another replica had the tick
    HELD = "held"
    LATE = "late"              # started after a newer tick was due: evaluated that one
    BUSY = "busy"              # skipped: the rule's previous run was still going
    MISSED = "missed"          # skipped by the scheduler: started past its misfire grace time
    FAILED = "failed"          # the state database could not record it


class HeartbeatResult(StrEnum):
    """One tick of the dead-man's switch (``audit_watch_heartbeats_total{result}``,
    except ``ELSEWHERE``, which is not counted)."""

    SENT = "sent"
    WITHHELD = "withheld"      # this replica is not healthy: no "all is well" from it
    ELSEWHERE = "elsewhere"    # another replica signals for this tick
    ERROR = "error"
