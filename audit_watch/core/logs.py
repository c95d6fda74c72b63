"""Log output for the daemon: readable text, or one JSON object per line.

JSON lines carry ``time`` (UTC, ISO-8601), ``level``, ``logger``, ``message``,
any ``extra={...}`` fields (``rule``, ``tick``, ...) and, for an exception, its
traceback as one ``exception`` string, so a log shipper never sees a bare
traceback line. Python warnings and exceptions escaping a thread go through
logging too.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

# Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that are chatty at INFO: APScheduler logs every job run.
QUIET = {"apscheduler": logging.WARNING}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = record.stack_info
        return json.dumps(data, default=str, ensure_ascii=False)


def configure_logging(log_format: str = "text", level: int | None = None, stream: TextIO | None = None) -> None:
    """Send every log record (ours, libraries', warnings) to one handler on ``stream``.

    ``level`` defaults to INFO, or to the root logger's level when that is more verbose.
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"log format must be text or json, got {log_format!r}")
    root = logging.getLogger()
    if level is None:
        level = min(root.level or logging.INFO, logging.INFO)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(max(quiet, level))
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_exception


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread else "?"
    error = args.exc_value if args.exc_value is not None else args.exc_type()
    logging.getLogger("audit_watch").error("uncaught exception in thread %s", name,
                                           exc_info=(args.exc_type, error, args.exc_traceback))
