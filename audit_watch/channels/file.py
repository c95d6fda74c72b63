"""The ``file`` channel type: each notification as JSON and as rendered text in a folder.

Payloads: an alert's ``{"text"}`` (the ``text`` template); a report's
``{"title", "text", "html", "attachments"}`` (the standalone HTML, the evidence
CSV when there is one).

Names sort by time and stay stable across retries:
``20261120T093000Z-00000042-failed-job-spike-firing.json`` (queue time, outbox
id, rule, kind). A report (kind ``report``) also leaves its HTML
(``<stem>.html``) and, when it has one, its evidence CSV
(``<stem>.evidence.csv``). Files are written to a temporary name and renamed,
so a reader never sees half a file.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from audit_watch.channels.base import Channel, DeliveryResult, Notification
from audit_watch.channels.channel_type import ChannelSettings, ChannelType, ReportContent
from audit_watch.channels.messages import MessageContext, template_context, template_names
from audit_watch.channels.render import Renderer
from audit_watch.core.errors import short_error

FILE_MAX_ROWS = 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class FileChannel(ChannelSettings):
    type: Literal["file"]
    path: str
    format: Literal["json", "text", "both"] = "both"


def file_stem(notification: Notification) -> str:
    rule = _UNSAFE.sub("-", notification.rule).strip("-.")[:80] or "rule"
    moment = notification.created_at.strftime("%Y%m%dT%H%M%SZ")
    return f"{moment}-{notification.id:08d}-{rule}-{notification.kind}"


class FileSender(Channel):
    def __init__(self, name: str, config: FileChannel, folder: Path) -> None:
        super().__init__(name)
        self.config = config
        self.folder = folder

    def send(self, notification: Notification) -> DeliveryResult:
        stem = file_stem(notification)
        payload = notification.payload
        written: list[str] = []
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if self.config.format in ("json", "both"):
                document: dict[str, Any] = {
                    "id": notification.id, "channel": notification.channel, "rule": notification.rule,
                    "kind": notification.kind, "created_at": notification.created_at.isoformat(),
                    "title": payload.get("title"), "alerts": payload.get("alerts", []),
                }
                if "report" in payload:
                    document["report"] = payload["report"]
                written.append(self._write(stem + ".json", json.dumps(document, indent=2, ensure_ascii=False) + "\n"))
            if self.config.format in ("text", "both"):
                written.append(self._write(stem + ".txt", payload.get("text", "").rstrip("\n") + "\n"))
            if notification.kind == "report" and payload.get("html"):   # alerts are read as JSON and text
                written.append(self._write(stem + ".html", payload["html"]))
            for item in payload.get("attachments") or ():
                written.append(self._write(stem + _attachment_suffix(item), base64.b64decode(item["data"])))
        except OSError as exc:
            return DeliveryResult.retry(f"cannot write to {self.folder}: {short_error(exc)}")
        return DeliveryResult.delivered({"files": written})

    def _write(self, name: str, content: str | bytes) -> str:
        target = self.folder / name
        temporary = self.folder / f".{name}.tmp"
        if isinstance(content, str):
            temporary.write_text(content, encoding="utf-8")
        else:
            temporary.write_bytes(content)
        os.replace(temporary, target)
        return str(target)


def _attachment_suffix(item: dict[str, Any]) -> str:
    """``.evidence.csv`` for a report's evidence, else ``.`` and the file's own (safe) name."""
    if item.get("content_type") == "text/csv":
        return ".evidence.csv"
    return "." + (_UNSAFE.sub("-", str(item.get("filename") or "")).strip("-.")[:80] or "attachment")


class FileType(ChannelType[FileChannel]):
    config_model = FileChannel

    def sender(self, name: str, config: FileChannel, base_dir: Path | None, **options: Any) -> Channel:
        """Writes under ``path``; a relative one is relative to the config file's folder."""
        folder = Path(config.path).expanduser()
        if not folder.is_absolute() and base_dir is not None:
            folder = base_dir / folder
        return FileSender(name, config, folder)

    def alert_payload(self, config: FileChannel, renderer: Renderer, message: MessageContext) -> dict[str, Any]:
        return {"text": renderer.render("text", template_names(message), template_context(message, FILE_MAX_ROWS))}

    def report_payload(self, config: FileChannel, report: ReportContent) -> dict[str, Any]:
        return {"title": report.title, "text": report.text, "html": report.html,
                "attachments": [dict(report.evidence)] if report.evidence is not None else []}


FILE = FileType()
