"""Secret values, and scrubbing them from text that leaves the process.

Every configured secret is remembered here when its configuration is loaded:
``SecretStr`` values of the config (tokens, passwords, the webhook and heartbeat
URLs), passwords in database URLs, and every value taken from the environment
through ``${NAME}``. :func:`scrub` replaces each of them with ``***`` in a text;
the log filter (:mod:`audit_watch.core.logs`), one-line errors
(:func:`audit_watch.core.errors.short_error`), the outbox, ``alerts`` and the
HTTP endpoint all go through it.

A value is remembered as written, percent-encoded (as it appears inside a URL)
and JSON-escaped (as it appears in a JSON log line). Values shorter than
:data:`MIN_SECRET_LENGTH` (declared secrets) or :data:`MIN_ENV_LENGTH` (other
environment values: ports, flags, channel names) are not scrubbed: masking them
would garble every line that happens to contain ``587`` or ``true``.

The set is process-wide on purpose: logging is.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from pydantic import BaseModel, SecretStr

MASK = "***"
MIN_SECRET_LENGTH = 4        # a declared secret (SecretStr, a URL's password)
MIN_ENV_LENGTH = 8           # any other value taken from the environment


class SecretSet:
    """The values to scrub, and one compiled pattern that finds any of them."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str | None, min_length: int = MIN_SECRET_LENGTH) -> None:
        if not value or len(value) < min_length:
            return
        forms = {value, quote(value, safe=""), quote(value, safe="/:@"), json.dumps(value)[1:-1]}
        if _is_url(value):
            # The path and query of a secret URL are the secret part (a webhook's
            # token, a ping URL's key); errors often print them without the host.
            parts = urlsplit(value)
            rest = parts.path + (f"?{parts.query}" if parts.query else "")
            if len(rest) >= MIN_ENV_LENGTH:
                forms.add(rest)
            if parts.password:
                forms.add(parts.password)
                forms.add(unquote(parts.password))
        forms = {form for form in forms if len(form) >= min_length}
        with self._lock:
            if forms <= self._values:
                return
            self._values |= forms
            # Longest first, so that a value containing another is masked whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None

    def __len__(self) -> int:
        return len(self._values)


SECRETS = SecretSet()


def remember(value: str | SecretStr | None, min_length: int = MIN_SECRET_LENGTH) -> None:
    """Scrub ``value`` from every text that leaves the process from now on."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    SECRETS.add(value, min_length)


def remember_environment_value(value: str) -> None:
    """A value substituted for ``${NAME}``: a secret when long enough to be one."""
    SECRETS.add(value, MIN_ENV_LENGTH)


def remember_url_password(url: str | None) -> None:
    """The password in a database URL (``postgresql://user:PASSWORD@host/db``)."""
    if not url or "@" not in url:
        return
    try:
        password = urlsplit(url).password
    except ValueError:
        return
    if password:
        SECRETS.add(password)
        SECRETS.add(unquote(password))


def remember_model_secrets(model: Any) -> None:
    """Every ``SecretStr`` in a pydantic model, its nested models, lists and maps."""
    for value in _walk(model):
        if isinstance(value, SecretStr):
            SECRETS.add(value.get_secret_value())


def _walk(value: Any) -> Iterable[Any]:
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk(getattr(value, name, None))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _walk(item)
    else:
        yield value


def scrub(text: str) -> str:
    """``text`` with every remembered secret replaced by ``***``."""
    return SECRETS.scrub(text)


def scrub_data(value: Any) -> Any:
    """A copy of ``value`` (strings, dicts, lists, tuples, dataclasses) with every
    string scrubbed; other values are returned as they are."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {key: scrub_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub_data(item) for item in value]
    if isinstance(value, tuple):
        return tuple(scrub_data(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: scrub_data(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    return value


def _is_url(value: str) -> bool:
    return "://" in value[:16]
