"""Validators shared by rules, report definitions and the config: time zones,
cron expressions, channel names, names, secret URLs."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, SecretStr, ValidationInfo
from pydantic_core import PydanticCustomError

from audit_watch.core.cron import check_expression

# Rule and report names: they name files, e-mail subjects, metric labels and command
# arguments, so nothing that could break a line, a path or a header.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
NAME_MAX_LENGTH = 128
# Set in the validation context while ${NAME}s are missing: their values are empty,
# and the missing variable is the problem already reported.
ENV_MISSING = "env_missing"


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)") from exc


def _checked_timezone(value: str) -> str:
    check_timezone(value)
    return value


def check_channel_names(value: tuple[str, ...], info: ValidationInfo, field_name: str) -> tuple[str, ...]:
    """Channel names against the config's channels (passed as validation context)."""
    channels = (info.context or {}).get("channels")
    if channels is not None:
        for index, name in enumerate(value):
            if name not in channels:
                known = ", ".join(sorted(channels)) or "none are configured"
                raise PydanticCustomError(
                    field_name, f"unknown channel {name!r} (channels: {known})", {"subpath": [index]}
                )
    return value


def check_name(value: str) -> str:
    """A rule's or report's name: letters, digits, ``-``, ``_`` and ``.``, a letter
    or digit first, at most NAME_MAX_LENGTH characters."""
    if not NAME_PATTERN.fullmatch(value):
        shown = repr(value[:60]) + ("..." if len(value) > 60 else "")
        raise ValueError(f"{shown} is not a valid name: use letters, digits, '-', '_' and '.', "
                         "starting with a letter or digit")
    if len(value) > NAME_MAX_LENGTH:
        raise ValueError(f"a name has at most {NAME_MAX_LENGTH} characters (this one has {len(value)})")
    return value


def check_secret_http_url(value: SecretStr, info: ValidationInfo) -> SecretStr:
    """An http(s) URL that carries a secret: the messages never show it."""
    url = value.get_secret_value()
    if not url and (info.context or {}).get(ENV_MISSING):
        return value
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        raise ValueError("the URL contains spaces or control characters (a newline at the end of a secrets file?); "
                         "the value is not shown")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError("not a valid URL (the value is not shown)") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL (the value is not shown)")
    if not parts.hostname:
        raise ValueError("the URL has no host (the value is not shown)")
    return value


# Types for schedules and time zones, shared by rules and report definitions.
# A schedule is checked by building it as the scheduler will (audit_watch.core.cron).
CronExpression = Annotated[str, AfterValidator(check_expression)]
TimeZoneName = Annotated[str, AfterValidator(_checked_timezone)]
# A URL that carries a secret (a Slack webhook, a heartbeat URL): http(s) only, never shown.
SecretHttpUrl = Annotated[SecretStr, AfterValidator(check_secret_http_url)]
