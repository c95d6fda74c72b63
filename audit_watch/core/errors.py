"""Errors as one short line, for logs, the ledger and the outbox."""

from __future__ import annotations

from audit_watch.core.secrets import scrub


def short_error(exc: BaseException) -> str:
    """``Type: first line of the message``, at most 500 characters, secrets scrubbed."""
    text = str(exc).strip().splitlines()
    return scrub(f"{type(exc).__name__}: {text[0] if text else ''}")[:500]
