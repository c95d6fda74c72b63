"""Validators shared by rules, report definitions and the config: time zones,
cron expressions, channel names."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, ValidationInfo
from pydantic_core import PydanticCustomError

from audit_watch.core.cron import check_expression


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


# Types for schedules and time zones, shared by rules and report definitions.
# A schedule is checked by building it as the scheduler will (audit_watch.core.cron).
CronExpression = Annotated[str, AfterValidator(check_expression)]
TimeZoneName = Annotated[str, AfterValidator(_checked_timezone)]
