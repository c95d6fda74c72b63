"""Jinja templates for alert notifications: rendering by medium, the filters, ``check``.

The environments come from :func:`audit_watch.channels.templating.environment`
(the same sandbox and escaping as reports; see there): ``slack`` for mrkdwn,
``html`` for e-mail HTML, ``text`` for e-mail text, subjects and the file
channel's plain text. They search the config's template folders before the
bundled ``templates/``. Template names: ``alerts/<name>.<medium>.j2`` where
``<name>`` is the rule's ``template``, else its kind, else ``default``; the
mediums are ``slack`` (one alert's section), ``email.html``, ``email.txt``,
``subject`` and ``text``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import TemplateError, TemplateSyntaxError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from audit_watch.channels.templating import environment
from audit_watch.core.numbers import number as plain_number
from audit_watch.core.paths import BUNDLED_TEMPLATES
from audit_watch.core.timestamps import parse_timestamp

log = logging.getLogger(__name__)

MEDIA = {  # medium -> (environment, file suffix)
    "slack": ("slack", "slack.j2"),
    "email_html": ("html", "email.html.j2"),
    "email_text": ("text", "email.txt.j2"),
    "subject": ("text", "subject.j2"),
    "text": ("text", "text.j2"),
}
# The names templates may use; check() warns about any other top-level name.
CONTEXT_NAMES = frozenset({"rule", "event", "alerts", "alert", "count", "now", "timezone", "title", "status"})


# --- filters ------------------------------------------------------------------------


def duration(value: Any) -> str:
    """``timedelta`` or seconds -> ``1h 30m`` (at most two units)."""
    if value is None:
        return ""
    seconds = int(value.total_seconds() if isinstance(value, timedelta) else float(value))
    if seconds < 60:
        return f"{seconds}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(p for p in parts if not p.startswith("0"))


def number(value: Any, digits: int = 2) -> str:
    """``1234`` -> ``1,234``; ``0.12345`` -> ``0.12``; None -> ``-``."""
    if value is None or value == "":
        return "-"
    try:
        shown = plain_number(float(value))
    except (TypeError, ValueError):
        return str(value)
    if isinstance(shown, int):
        return f"{shown:,}"
    return f"{shown:,.{digits}f}".rstrip("0").rstrip(".")


def percent(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{float(value) * 100:.{digits}f}".rstrip("0").rstrip(".") + "%"


def _moment(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    return parse_timestamp(str(value))


def reltime(value: Any, now: datetime) -> str:
    """``5m ago`` / ``in 2h`` relative to ``now`` (always passed, never the clock)."""
    moment = _moment(value)
    if moment is None:
        return "never"
    delta = now - moment
    if abs(delta) < timedelta(seconds=1):
        return "just now"
    return f"{duration(delta)} ago" if delta > timedelta(0) else f"in {duration(-delta)}"


def _time_filter(zone: ZoneInfo) -> Callable[..., str]:
    def time(value: Any, fmt: str = "%Y-%m-%d %H:%M %Z") -> str:
        moment = _moment(value)
        return "" if moment is None else moment.astimezone(zone).strftime(fmt)

    return time


# --- environments -------------------------------------------------------------------


def _environment(kind: str, folders: list[Path], zone: ZoneInfo) -> ImmutableSandboxedEnvironment:
    filters: dict[str, Callable[..., Any]] = {
        "duration": duration, "number": number, "percent": percent, "reltime": reltime, "time": _time_filter(zone),
    }
    return environment(kind, folders, filters=filters)


class Renderer:
    """Renders templates by medium; user templates first, bundled as the fallback."""

    def __init__(self, template_dirs: Iterable[Path] = (), timezone: str = "UTC") -> None:
        self.zone = ZoneInfo(timezone)
        user = [Path(p) for p in template_dirs if Path(p).is_dir()]
        self.folders = [*user, BUNDLED_TEMPLATES]
        self._envs = {kind: _environment(kind, self.folders, self.zone) for kind in ("slack", "html", "text")}
        self._bundled = None if not user else Renderer((), timezone)

    def env(self, kind: str) -> ImmutableSandboxedEnvironment:
        return self._envs[kind]

    def candidates(self, medium: str, names: Iterable[str | None]) -> list[str]:
        suffix = MEDIA[medium][1]
        return [f"alerts/{name}.{suffix}" for name in names if name] + [f"alerts/default.{suffix}"]

    def render(self, medium: str, names: Iterable[str | None], context: dict[str, Any]) -> str:
        """Render the first existing template of ``names`` for ``medium``.

        A user template that fails at render time falls back to the bundled one
        (logged): a broken override must not swallow the notification.
        """
        names = list(names)
        env = self._envs[MEDIA[medium][0]]
        try:
            template = env.select_template(self.candidates(medium, names))
            return template.render(context).strip()
        except TemplateError as exc:
            if self._bundled is None:
                raise
            log.warning("template for %s (%s) failed, using the bundled one: %s", medium, names, exc)
            return self._bundled.render(medium, names, context)


# --- check --------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateProblem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


def check_templates(template_dirs: Iterable[Path] = (), include_bundled: bool = True) -> list[TemplateProblem]:
    """Compile every alert template (``alerts/**/*.j2`` under each folder): syntax
    errors, unknown filters and unknown top-level variables, as ``file:line: message``.

    Only ``alerts/``: other folders (``reports/``) have their own context and filters.
    """
    folders = [Path(p) for p in template_dirs]
    if include_bundled:
        folders.append(BUNDLED_TEMPLATES)
    problems: list[TemplateProblem] = []
    zone = ZoneInfo("UTC")
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted((folder / "alerts").rglob("*.j2")):
            kind = "html" if path.name.endswith(".html.j2") else "slack" if path.name.endswith(".slack.j2") else "text"
            env = _environment(kind, [folder], zone)
            try:
                source = path.read_text(encoding="utf-8")
                tree = env.parse(source, name=path.name, filename=str(path))
                env.compile(source, name=path.name, filename=str(path))  # unknown filters
            except TemplateSyntaxError as exc:
                problems.append(TemplateProblem(str(path), exc.lineno or 1, exc.message or str(exc)))
                continue
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(TemplateProblem(str(path), 1, f"cannot read: {exc}"))
                continue
            for name in sorted(meta.find_undeclared_variables(tree) - CONTEXT_NAMES - set(env.globals)):
                problems.append(TemplateProblem(str(path), _line_of(source, name), f"unknown variable {name!r}"))
    return problems


def _line_of(source: str, name: str) -> int:
    match = re.search(rf"\b{re.escape(name)}\b", source)
    return source.count("\n", 0, match.start()) + 1 if match else 1
