"""The ``email`` channel type: config, payloads, and sending through ``smtplib``.

Payloads: ``{"subject", "text", "html", "message_id"}`` with the HTML's CSS
inlined (mail clients drop ``<style>``); a report's also has ``attachments``.

:func:`build_message` turns a payload into the message, for alerts and reports
alike: text and HTML as alternatives (multipart/alternative) and, when the
payload has ``attachments`` (reports), the inline images related to the HTML
part and the other files attached (multipart/mixed). One connection per batch.

STARTTLS (``starttls: true``, usually port 587) or implicit TLS (``ssl: true``,
usually 465), login when a username is set, and always a ``timeout`` (the
default would wait forever). Repeats and resolutions carry ``In-Reply-To`` and
``References`` of the firing message, so mail clients thread them.

4xx answers and broken connections are retried; 5xx answers and a refused
login are permanent.
"""

from __future__ import annotations

import base64
import logging
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, Literal

import css_inline
from pydantic import Field, SecretStr

from audit_watch.channels.base import Channel, DeliveryResult, Notification
from audit_watch.channels.channel_type import ChannelSettings, ChannelType, ReportContent
from audit_watch.channels.messages import MessageContext, template_context, template_names
from audit_watch.channels.render import Renderer
from audit_watch.core.durations import Duration
from audit_watch.core.errors import short_error

log = logging.getLogger(__name__)

EMAIL_MAX_ROWS = 10
_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False)


class EmailChannel(ChannelSettings):
    type: Literal["email"]
    host: str
    port: int = 587
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: SecretStr | None = None
    from_: str = Field(alias="from")
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    timeout: Duration = timedelta(seconds=30)


def email_fields(subject: str, text: str, html: str, sender: str, inline_css: bool = True) -> dict[str, Any]:
    """What every e-mail payload holds: a one-line subject, the text, the HTML with its
    CSS inlined (mail clients drop <style>), a Message-ID in the sender's domain."""
    domain = sender.rpartition("@")[2] or "audit-watch.local"
    return {
        "subject": " ".join(subject.split())[:250],
        "text": text,
        "html": _INLINER.inline(html) if inline_css else html,
        "message_id": make_msgid("audit-watch", domain=domain),
    }


def report_email(report: ReportContent, sender: str, inline_css: bool = True) -> dict[str, Any]:
    """The e-mail of a report: subject, text, HTML (CSS inlined), a Message-ID in the
    sender's domain, and every attachment (the charts with their Content-IDs, the evidence CSV)."""
    fields = email_fields(f"{report.title} — {report.period}", report.text, report.email_html, sender, inline_css)
    return {"title": report.title, **fields, "attachments": [dict(a) for a in report.attachments]}


def build_message(
    payload: Mapping[str, Any], *, sender: str, to: Sequence[str], cc: Sequence[str] = (),
    date: datetime | None = None, headers: Mapping[str, str] | None = None,
) -> EmailMessage:
    """The message of a payload ``{"subject", "text", "html", "message_id"}``.

    A report's payload also has ``attachments``: ``[{"filename", "content_type",
    "cid", "data"}]`` with ``data`` in base64. One with a ``cid`` is shown by the
    HTML (``cid:`` references): it goes into a multipart/related with the HTML
    part. The others are attached, and the message becomes
    multipart/mixed( alternative( text, related( html, images ) ), files ).
    """
    message = EmailMessage()
    message["Subject"] = payload["subject"]
    message["From"] = sender
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    if date is not None:
        message["Date"] = format_datetime(date)
    if payload.get("message_id"):
        message["Message-ID"] = payload["message_id"]
    for key, value in (headers or {}).items():
        message[key] = value
    message.set_content(payload["text"])
    message.add_alternative(payload["html"], subtype="html")
    attachments = list(payload.get("attachments") or ())
    if attachments:
        html_part: EmailMessage = message.get_payload()[-1]  # type: ignore[index, assignment]
        for item in attachments:
            if item.get("cid"):
                maintype, subtype = _content_type(item)
                html_part.add_related(base64.b64decode(item["data"]), maintype, subtype, cid=f"<{item['cid']}>",
                                      filename=item["filename"], disposition="inline")
        for item in attachments:
            if not item.get("cid"):
                maintype, subtype = _content_type(item)
                message.add_attachment(base64.b64decode(item["data"]), maintype=maintype, subtype=subtype,
                                       filename=item["filename"])
    return message


def _content_type(item: Mapping[str, Any]) -> tuple[str, str]:
    maintype, _, subtype = str(item.get("content_type") or "application/octet-stream").partition("/")
    return maintype, subtype or "octet-stream"


class EmailSender(Channel):
    def __init__(self, name: str, config: EmailChannel, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(name)
        self.config = config
        self.ssl_context = ssl_context

    def build(self, notification: Notification) -> EmailMessage:
        headers: dict[str, str] = {}
        parent_id = (notification.parent_ref or {}).get("message_id")
        if parent_id and notification.kind != "firing":
            headers["In-Reply-To"] = parent_id
            headers["References"] = parent_id
        headers["Auto-Submitted"] = "auto-generated"
        if notification.kind == "report":
            headers["X-Audit-Watch-Report"] = notification.rule
        else:
            headers["X-Audit-Watch-Rule"] = notification.rule
        return build_message(notification.payload, sender=self.config.from_, to=self.config.to, cc=self.config.cc,
                             date=notification.created_at, headers=headers)

    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        timeout = cfg.timeout.total_seconds()
        context = self.ssl_context or ssl.create_default_context()
        smtp: smtplib.SMTP
        if cfg.ssl:
            smtp = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=timeout)
        try:
            smtp.ehlo()
            if cfg.starttls and not cfg.ssl:
                smtp.starttls(context=context)
                smtp.ehlo()
            if cfg.username:
                password = cfg.password.get_secret_value() if cfg.password else ""
                smtp.login(cfg.username, password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, notification: Notification) -> DeliveryResult:
        return self.send_batch([notification])[0]

    def send_batch(self, notifications: Sequence[Notification]) -> list[DeliveryResult]:
        if not notifications:
            return []
        try:
            smtp = self._connect()
        except smtplib.SMTPAuthenticationError as exc:
            error = f"SMTP login refused ({exc.smtp_code}): check username and password"
            log.error("email channel %s: %s", self.name, error)
            return [DeliveryResult.permanent(error)] * len(notifications)
        except (OSError, smtplib.SMTPException) as exc:
            error = f"cannot reach {self.config.host}:{self.config.port}: {short_error(exc)}"
            return [DeliveryResult.retry(error)] * len(notifications)
        results: list[DeliveryResult] = []
        try:
            for index, notification in enumerate(notifications):
                result = self._send_one(smtp, notification)
                results.append(result)
                if result.retryable and "disconnected" in (result.error or ""):
                    rest = len(notifications) - index - 1
                    results.extend([DeliveryResult.retry("SMTP connection lost earlier in the batch")] * rest)
                    break
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
        return results

    def _send_one(self, smtp: smtplib.SMTP, notification: Notification) -> DeliveryResult:
        try:
            message = self.build(notification)
        except Exception as exc:  # noqa: BLE001 - a payload that cannot become a message never will
            return DeliveryResult.permanent(f"cannot build the message: {short_error(exc)}")
        recipients = [*self.config.to, *self.config.cc]
        try:
            refused = smtp.send_message(message, from_addr=self.config.from_, to_addrs=recipients)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            error = f"all recipients refused: {exc.recipients}"
            return DeliveryResult.retry(error) if all(400 <= c < 500 for c in codes) else DeliveryResult.permanent(error)
        except smtplib.SMTPServerDisconnected as exc:
            return DeliveryResult.retry(f"SMTP server disconnected: {exc}")
        except smtplib.SMTPResponseException as exc:
            error = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
            return DeliveryResult.retry(error) if 400 <= exc.smtp_code < 500 else DeliveryResult.permanent(error)
        except (OSError, smtplib.SMTPException) as exc:
            return DeliveryResult.retry(f"SMTP server disconnected: {short_error(exc)}")
        note = f"some recipients refused: {refused}" if refused else None
        return DeliveryResult.delivered({"message_id": notification.payload.get("message_id")}, note=note)


class EmailType(ChannelType[EmailChannel]):
    """Repeats and resolutions carry In-Reply-To of the firing message: mail clients thread them."""

    config_model = EmailChannel
    threads = True

    def sender(self, name: str, config: EmailChannel, base_dir: Path | None, **options: Any) -> Channel:
        return EmailSender(name, config, **options)

    def alert_payload(self, config: EmailChannel, renderer: Renderer, message: MessageContext) -> dict[str, Any]:
        data = template_context(message, EMAIL_MAX_ROWS)
        names = template_names(message)
        return email_fields(renderer.render("subject", names, data), renderer.render("email_text", names, data) + "\n",
                            renderer.render("email_html", names, data), config.from_)

    def report_payload(self, config: EmailChannel, report: ReportContent) -> dict[str, Any]:
        return report_email(report, config.from_)


EMAIL = EmailType()
