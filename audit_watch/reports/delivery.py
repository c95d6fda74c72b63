"""Reports through the outbox: the same durable delivery as alerts.

A report is rendered once (:func:`audit_watch.reports.build_report`); queueing
it asks each channel's type for its payload (:func:`audit_watch.channels.registry.compose_report`,
from :meth:`ReportResult.content`) and stores it in the outbox row (kind
``report``, rule = the report's name, no fingerprints), so a delivery retried
tomorrow sends what was built today. :func:`audit_watch.alerting.pipeline.deliver_due`
then sends it like any notification. Payloads, all plain JSON:

* slack / slack_webhook: ``{"title", "text", "blocks"}``: a header with the
  report's title, its short Slack rendering (mrkdwn, escaped by the templates)
  in sections within Slack's limits, and a context line with the period;
  ``text`` (the notification's fallback) is the title and the period;
* email: ``{"title", "subject", "text", "html", "message_id", "attachments"}``:
  the whole report e-mail (:func:`audit_watch.reports.output.email_payload`),
  HTML with CSS inlined, the charts inline by Content-ID and the evidence CSV
  attached (``attachments`` hold base64 data);
* file: ``{"title", "text", "html", "attachments"}``: the text, the standalone
  HTML (charts as ``data:`` URIs) and the evidence CSV when there is one.

Every payload also carries ``"report"``: the name, kind, period and scope.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from audit_watch.alerting.outbox import DeliveryPolicy, enqueue
from audit_watch.alerting.state import StateStore
from audit_watch.channels.channel_type import ChannelSettings
from audit_watch.channels.registry import compose_report
from audit_watch.config.model import Config
from audit_watch.reports.output import ReportResult


def report_payload(channel: ChannelSettings, result: ReportResult) -> dict[str, Any]:
    """What one channel receives for ``result`` (see the module doc)."""
    return compose_report(channel, result.content())


def check_report_channels(config: Config, channels: Sequence[str]) -> list[str]:
    """The channel names, each once; ValueError naming the unknown ones (and the configured)."""
    names = list(dict.fromkeys(channels))
    unknown = [name for name in names if name not in config.channels]
    if unknown:
        known = ", ".join(sorted(config.channels)) or "none are configured"
        listed = ", ".join(repr(name) for name in unknown)
        raise ValueError(f"unknown channel{'s' if len(unknown) > 1 else ''} {listed} (channels: {known})")
    return names


def report_payloads(config: Config, result: ReportResult, channels: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """(channel, payload) for each of ``channels`` (each once). Rendering happens here,
    outside any transaction: on SQLite a write transaction holds the database's lock.

    Raises ValueError naming the unknown channels (and the configured ones).
    """
    names = check_report_channels(config, channels)
    content = result.content()
    return [(name, compose_report(config.channels[name], content)) for name in names]


def enqueue_report(conn: Connection, name: str, payloads: Sequence[tuple[str, dict[str, Any]]], now: datetime,
                   policy: DeliveryPolicy) -> list[int]:
    """Queue the payloads of report ``name`` inside the caller's transaction: one
    outbox row per channel (kind ``report``, rule = the report's name, no
    fingerprints). Returns the outbox ids in the order of ``payloads``."""
    return [
        enqueue(conn, channel=channel, kind="report", rule=name, fingerprints=[], payload=payload, now=now,
                policy=policy)
        for channel, payload in payloads
    ]


def queue_report(state: StateStore, config: Config, result: ReportResult, channels: Sequence[str], now: datetime,
                 policy: DeliveryPolicy | None = None) -> list[int]:
    """Render and queue ``result`` for ``channels`` in one write transaction of its
    own; the policy defaults to the config's ``delivery:``."""
    policy = policy or DeliveryPolicy.from_config(config.delivery)
    payloads = report_payloads(config, result, channels)
    with state.write() as conn:
        return enqueue_report(conn, result.name, payloads, now, policy)
