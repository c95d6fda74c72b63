"""A ``file`` channel: each notification as JSON and as rendered text in a folder.

Names sort by time and stay stable across retries:
``20261120T093000Z-00000042-failed-job-spike-firing.json`` (queue time, outbox
id, rule, kind). Files are written to a temporary name and renamed, so a reader
never sees half a file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from audit_watch.channels.base import Channel, DeliveryResult, Notification, short_error
from audit_watch.config import FileChannel

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


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
        written: list[str] = []
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if self.config.format in ("json", "both"):
                document: dict[str, Any] = {
                    "id": notification.id, "channel": notification.channel, "rule": notification.rule,
                    "kind": notification.kind, "created_at": notification.created_at.isoformat(),
                    "title": notification.payload.get("title"), "alerts": notification.payload.get("alerts", []),
                }
                written.append(self._write(stem + ".json", json.dumps(document, indent=2, ensure_ascii=False) + "\n"))
            if self.config.format in ("text", "both"):
                written.append(self._write(stem + ".txt", notification.payload.get("text", "").rstrip("\n") + "\n"))
        except OSError as exc:
            return DeliveryResult.retry(f"cannot write to {self.folder}: {short_error(exc)}")
        return DeliveryResult.delivered({"files": written})

    def _write(self, name: str, content: str) -> str:
        target = self.folder / name
        temporary = self.folder / f".{name}.tmp"
        temporary.write_text(content, encoding="utf-8")
        os.replace(temporary, target)
        return str(target)
