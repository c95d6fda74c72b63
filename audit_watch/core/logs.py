"""Log output for the daemon: readable text, or one JSON object per line.

JSON lines carry ``time`` (UTC, ISO-8601), ``level``, ``logger``, ``message``,
any ``extra={...}`` fields (``rule``, ``tick``, ...) and, for an exception, its
traceback as one ``exception`` string, so a log shipper never sees a bare
traceback line. Python warnings and exceptions escaping a thread go through
logging too.

Every handler installed here carries :class:`SecretFilter`: the configured secrets
(:mod:`audit_watch.core.secrets`) are replaced by ``***`` in the message, its
arguments, ``extra`` fields and tracebacks, whoever logged them. Libraries that
print credentials at DEBUG (slack_sdk logs the whole webhook URL and the request
headers) are kept at INFO or above whatever level is asked for.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from audit_watch.core.secrets import scrub, scrub_data

# Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that are chatty at INFO (APScheduler logs every job run), or that print
# secrets at DEBUG (slack_sdk: webhook URLs, Authorization headers).
QUIET = {"apscheduler": logging.WARNING, "slack_sdk": logging.INFO}


class SecretFilter(logging.Filter):
    """Scrubs remembered secrets from a record before its handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: logging reports it itself
            return True
        record.msg, record.args = scrub(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and not key.startswith("_"):
                setattr(record, key, scrub_data(value))
        return True


def add_secret_filter(handler: logging.Handler) -> None:
    if not any(isinstance(f, SecretFilter) for f in handler.filters):
        handler.addFilter(SecretFilter())


def quiet_libraries(level: int) -> None:
    """Keep the libraries in QUIET at their floor, whatever ``level`` is asked for."""
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(max(quiet, level))


def configure_cli_logging(level: int) -> None:
    """The other commands: plain text on stderr, secrets scrubbed."""
    logging.basicConfig(level=level, format=TEXT_FORMAT)
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        add_secret_filter(handler)
    quiet_libraries(level)
    sys.excepthook = _print_scrubbed_exception


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
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
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
    add_secret_filter(handler)
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    quiet_libraries(level)
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_exception
    sys.excepthook = _print_scrubbed_exception


def _print_scrubbed_exception(exc_type: type[BaseException], exc: BaseException,
                              tb: TracebackType | None) -> None:
    """An exception nobody caught: its traceback as Python prints it, secrets scrubbed."""
    sys.stderr.write(scrub("".join(traceback.format_exception(exc_type, exc, tb))))


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread else "?"
    error = args.exc_value if args.exc_value is not None else args.exc_type()
    logging.getLogger("audit_watch").error("uncaught exception in thread %s", name,
                                           exc_info=(args.exc_type, error, args.exc_traceback))
