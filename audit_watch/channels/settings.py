"""The configuration of each channel type (entries of the config's ``channels:``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from audit_watch.core.durations import Duration
from audit_watch.core.validators import SecretHttpUrl


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SlackChannel(_Strict):
    type: Literal["slack"]
    token: SecretStr
    channel: str
    base_url: str | None = None
    max_rows: int = Field(default=10, ge=0, le=20)


class SlackWebhookChannel(_Strict):
    type: Literal["slack_webhook"]
    url: SecretHttpUrl
    max_rows: int = Field(default=10, ge=0, le=20)


class EmailChannel(_Strict):
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


class FileChannel(_Strict):
    type: Literal["file"]
    path: str
    format: Literal["json", "text", "both"] = "both"


Channel = Annotated[
    SlackChannel | SlackWebhookChannel | EmailChannel | FileChannel, Field(discriminator="type")
]
