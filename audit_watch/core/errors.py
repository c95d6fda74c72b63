"""Errors as one short line, for logs, the ledger and the outbox."""

from __future__ import annotations


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]
