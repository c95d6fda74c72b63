"""The configuration file (``audit-watch.yaml``): models and loading.

Pydantic errors are turned into ``file:line: field: message`` problems using the
line map of :mod:`audit_watch.core.yaml_source`. Secrets are ``SecretStr`` so that
neither logs nor reprs show them.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from audit_watch.channels.registry import ChannelConfig
from audit_watch.core.durations import Duration
from audit_watch.core.validators import TimeZoneName
from audit_watch.core.yaml_source import InputError, LocatedDocument, Problem, interpolate_env, load_yaml
from audit_watch.store.settings import SourceConfig

DEFAULT_CONFIG_NAME = "audit-watch.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class StateConfig(_Strict):
    url: str = "sqlite:///audit-watch-state.db"


class LinksConfig(_Strict):
    """Where alerts link to. ``{base_url}``, ``{tab}`` (jobs/threads/events), ``{id}``
    and ``{query}`` (the filters as a URL query) are filled in."""

    base_url: str = "https://auxot.example.com"
    row: str = "{base_url}/audit-logs/{tab}/{id}"
    list: str = "{base_url}/audit-logs/{tab}?{query}"
    max_rows: int = Field(default=20, ge=0, le=20)


class HeartbeatConfig(_Strict):
    """The dead-man's switch: a sign of life every ``every``, to a channel or a URL
    (healthchecks.io, Dead Man's Snitch, an Uptime Kuma push monitor: a GET), so
    that someone notices when audit-watch itself stops."""

    channel: str | None = None
    url: SecretStr | None = None
    every: Duration = timedelta(minutes=5)

    @model_validator(mode="after")
    def _one_target(self) -> HeartbeatConfig:
        if (self.channel is None) == (self.url is None):
            raise ValueError("give either channel or url")
        if self.every < timedelta(seconds=1):
            raise ValueError("every must be at least 1s")
        return self


class FreshnessConfig(_Strict):
    """Alert when the audit store has had no new rows at all for ``max_silence``
    (the pipe from Auxot is broken); meanwhile rules that fire on missing rows are held."""

    enabled: bool = True
    max_silence: Duration = timedelta(hours=2)
    tables: tuple[Literal["jobs", "threads", "events"], ...] = ("jobs", "threads", "events")

    @field_validator("max_silence")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("max_silence must be at least 1s")
        return value

    @field_validator("tables")
    @classmethod
    def _some_tables(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one table (jobs, threads, events)")
        return value


class DaemonConfig(_Strict):
    """``audit-watch run``: its HTTP address, self-alerts, heartbeat, freshness, reload."""

    listen: str | None = "127.0.0.1:9464"        # /healthz and /metrics; null turns them off
    rule_error_alert_after: int = Field(default=5, ge=1)
    notify: tuple[str, ...] = ()                 # audit-watch's own alerts; default: the rules' channels
    heartbeat: HeartbeatConfig | None = None
    freshness: FreshnessConfig = Field(default_factory=FreshnessConfig)
    reload_watch: bool = True
    workers: int = Field(default=8, ge=1, le=64)  # rule evaluations at once
    # At least a day: a report's run stays claimed while it may still be sent late (catch_up <= 1d).
    ledger_retention: Duration = timedelta(days=3)

    @field_validator("ledger_retention")
    @classmethod
    def _keep_a_day(cls, value: timedelta) -> timedelta:
        if value < timedelta(days=1):
            raise ValueError("keep the run ledger at least 1d (a late report is recognised by its claim)")
        return value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value:
            host, sep, port = value.rpartition(":")
            if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
        return value or None


class DeliveryConfig(_Strict):
    """How hard the outbox tries: retries with exponential backoff and jitter until
    ``max_age`` after queueing, then the notification is kept as dead."""

    max_age: Duration = timedelta(hours=24)
    base_delay: Duration = timedelta(seconds=30)
    max_delay: Duration = timedelta(hours=1)


class Config(_Strict):
    source: SourceConfig = Field(default_factory=SourceConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    links: LinksConfig = Field(default_factory=LinksConfig)
    rules: tuple[str, ...] = ("rules/",)
    templates: tuple[str, ...] = ()
    reports: tuple[str, ...] = ("reports/",)   # report definitions: files or folders
    timezone: TimeZoneName = "UTC"
    channels: dict[str, ChannelConfig] = Field(default_factory=dict)   # one entry per registered type
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    # The folder relative paths in this file are resolved against.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    file: str | None = Field(default=None, exclude=True)

    @field_validator("daemon")
    @classmethod
    def _daemon_channels(cls, value: DaemonConfig, info: ValidationInfo) -> DaemonConfig:
        channels = info.data.get("channels")
        if channels is None:  # the channels themselves failed: reported there
            return value
        known = ", ".join(sorted(channels)) or "none are configured"
        for index, name in enumerate(value.notify):
            if name not in channels:
                raise PydanticCustomError("daemon", f"unknown channel {name!r} (channels: {known})",
                                          {"subpath": ["notify", index]})
        if value.heartbeat and value.heartbeat.channel and value.heartbeat.channel not in channels:
            raise PydanticCustomError("daemon", f"unknown channel {value.heartbeat.channel!r} (channels: {known})",
                                      {"subpath": ["heartbeat", "channel"]})
        return value

    def resolve(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    @property
    def rule_paths(self) -> list[Path]:
        return [self.resolve(p) for p in self.rules]

    @property
    def template_paths(self) -> list[Path]:
        return [self.resolve(p) for p in self.templates]

    @property
    def report_paths(self) -> list[Path]:
        """The report definitions' paths; the default reports/ folder may be absent."""
        paths = [self.resolve(p) for p in self.reports]
        return paths if "reports" in self.model_fields_set else [p for p in paths if p.exists()]


def problems_from_validation(doc: LocatedDocument, error: ValidationError, prefix: tuple = ()) -> list[Problem]:
    """Map pydantic errors onto ``file:line: field: message``."""
    problems = []
    for item in error.errors(include_url=False):
        ctx = item.get("ctx") or {}
        loc = list(item["loc"]) + list(ctx.get("subpath", []))
        if item["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc.append(str(ctx.get("discriminator", "")).strip("'"))
        problems.append(doc.problem(_written_path(doc, prefix, loc), _friendly_message(item)))
    return problems


def _written_path(doc: LocatedDocument, prefix: tuple, loc: list[Any]) -> tuple:
    """The path as the user wrote it, without the tags pydantic inserts for a
    discriminated union (``spike``, ``slack``) or the names of validators.

    A tag comes first when pydantic enters the union, so at each mapping the
    first part equal to its own ``kind``/``type`` value is the tag, even when a
    key has the same name (a threshold rule's ``threshold:``).
    """
    node: Any = doc.data
    for part in prefix:
        node = _child(node, part)
    path = tuple(prefix)
    tag_taken = False
    for part in loc:
        if isinstance(part, str) and part.startswith("function-"):
            continue
        if (
            not tag_taken
            and isinstance(node, dict)
            and isinstance(part, str)
            and part in (node.get("kind"), node.get("type"))
        ):
            tag_taken = True
            continue
        path += (part,)
        node = _child(node, part)
        tag_taken = False
    return path


def _child(node: Any, part: Any) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _friendly_message(item: Any) -> str:  # a pydantic ErrorDetails
    kind = item["type"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; README.md lists the keys)"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        tag = item.get("ctx", {}).get("tag")
        expected = item.get("ctx", {}).get("expected_tags", "")
        return f"unknown value {tag!r} (expected one of {expected})"
    if kind == "union_tag_not_found":
        return f"required key {item.get('ctx', {}).get('discriminator', '')} is missing"
    if kind == "literal_error":
        return f"{item['msg'].replace('Input should be', 'must be')}, got {item.get('input')!r}"
    message = item["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    return message


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Load ``path`` (or ./audit-watch.yaml when it exists, else the defaults).

    Raises InputError carrying every problem found.
    """
    config, problems = read_config(path, environ)
    if problems or config is None:
        raise InputError(problems)
    return config


def read_config(
    path: str | Path | None = None, environ: dict[str, str] | None = None
) -> tuple[Config | None, list[Problem]]:
    """The config and its problems. A config whose only problems are missing
    environment variables is still returned, so ``check`` can go on checking."""
    if path is None:
        default = Path.cwd() / DEFAULT_CONFIG_NAME
        if not default.exists():
            return Config(base_dir=Path.cwd()), []
        path = default
    path = Path(path)
    try:
        doc = load_yaml(path)
    except InputError as exc:
        return None, exc.problems
    base_dir = path.resolve().parent
    base: dict[str, Any] = {"base_dir": base_dir, "file": str(path)}
    if doc.data is None:
        return Config(base_dir=base_dir, file=str(path)), []
    if not isinstance(doc.data, dict):
        return None, [doc.problem((), "the configuration must be a mapping of keys")]
    problems = interpolate_env(doc, environ)
    data = _anchor_sqlite_urls(doc.data, base_dir)
    try:
        return Config.model_validate({**data, **base}), problems
    except ValidationError as exc:
        return None, problems + problems_from_validation(doc, exc)


def _anchor_sqlite_urls(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """A relative SQLite file in the config is relative to the config's folder, like
    every other path in it, so commands work from any working directory."""
    data = dict(data)
    for section in ("source", "state"):
        part = data.get(section)
        if isinstance(part, dict) and isinstance(part.get("url"), str):
            url = part["url"]
            prefix = "sqlite:///"
            rest = url[len(prefix):]
            if url.startswith(prefix) and rest and not rest.startswith(("/", ":memory:", "file:")):
                data[section] = {**part, "url": prefix + str((base_dir / rest).resolve())}
    return data
