"""Render report contexts with Jinja: HTML, plain text, Markdown and Slack mrkdwn.

Everything from the audit store (agent and thread names, errors, descriptions)
is untrusted. The environments come from the one factory alerts use too
(:func:`audit_watch.channels.templating.environment`: a sandbox with
StrictUndefined, each value escaped on output for its medium, links only to
http(s)/mailto), with ``one_line_values``: every medium folds untrusted values
to one line, so content cannot start new lines of its own (fake list items,
headings, table rows), and text drops control characters (no terminal escape
sequences). The filters below return ``Trusted`` text (numbers, dates, the links
we build), which the Markdown, Slack and text environments leave alone; HTML
escapes it anyway.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import pass_context
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from audit_watch.channels.escaping import Trusted, escape_markdown, one_line
from audit_watch.channels.templating import environment as sandboxed_environment
from audit_watch.channels.templating import link_filter
from audit_watch.config.model import Config
from audit_watch.core.paths import BUNDLED_TEMPLATES

MEDIA: dict[str, str] = {"html": "html", "text": "txt", "markdown": "md", "slack": "slack.txt"}


# --- filters: numbers, dates, links ---------------------------------------------------


def num(value: Any, digits: int = 0) -> Trusted:
    """1234 -> ``1,234``; a float is rounded to ``digits`` places (default: a whole number)."""
    if value is None:
        return Trusted("–")
    if digits:
        return Trusted(f"{float(value):,.{digits}f}")
    return Trusted(f"{round(value):,}")


def pct(value: Any, digits: int = 0) -> Trusted:
    return Trusted("–" if value is None else f"{value * 100:.{digits}f}%")


def signed_pct(value: Any) -> Trusted:
    if value is None:
        return Trusted("new")
    return Trusted(f"{'+' if value > 0 else '−' if value < 0 else '±'}{abs(value) * 100:.0f}%")


def delta(item: Mapping[str, Any]) -> Trusted:
    """``+35 (+12%)``, ``−3 (−20%)``, ``no change``, ``new`` from a change() dict."""
    if item.get("previous") is None:
        return Trusted("")
    difference = item["delta"]
    if difference == 0:
        return Trusted("no change")
    sign = "+" if difference > 0 else "−"
    if not item["previous"]:
        return Trusted(f"{sign}{abs(difference):,} (new)")
    return Trusted(f"{sign}{abs(difference):,} ({signed_pct(item['pct'])})")


def times(value: Any) -> Trusted:
    return Trusted("–" if value is None else f"{value:.1f}×")


def compact(value: Any) -> Trusted:
    if value is None:
        return Trusted("–")
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return Trusted(f"{value / size:.1f}".rstrip("0").rstrip(".") + suffix)
    return Trusted(f"{value:,.0f}")


def _zone(ctx: Context) -> ZoneInfo:
    period = ctx.get("period")
    return ZoneInfo(period["timezone"] if isinstance(period, Mapping) else "UTC")


@pass_context
def dt(ctx: Context, value: datetime | None, fmt: str = "%a %d %b %H:%M") -> Trusted:
    """A time in the report's time zone."""
    return Trusted("–" if value is None else value.astimezone(_zone(ctx)).strftime(fmt))


@pass_context
def day(ctx: Context, value: datetime | None) -> Trusted:
    return dt(ctx, value, "%a %d %b %Y")


def plural(count: Any, word: str, many: str | None = None) -> Trusted:
    return Trusted(f"{num(count)} {word if count == 1 else (many or word + 's')}")


def cell(value: Any, width: int, align: str = "left") -> Trusted:
    """A fixed-width column for plain-text tables (untrusted text is cleaned first)."""
    text = "–" if value is None else one_line(value)
    if len(text) > width:
        text = text[: width - 1] + "…"
    return Trusted(text.rjust(width) if align == "right" else text.ljust(width))


def trusted(value: Any) -> Any:
    """The output of one of our own macros: already escaped for the medium when it
    was rendered, so it must not be escaped a second time (Markup stays Markup)."""
    return value if isinstance(value, (Markup, Trusted)) else Trusted(value)


def md_cell(value: Any) -> Trusted:
    return Trusted(escape_markdown("–" if value is None else value))


def truncate_text(value: Any, limit: int = 80) -> str:
    text = "" if value is None else one_line(value)
    out = text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
    return Trusted(out) if isinstance(value, Trusted) else out


def para(value: Any, width: int = 0) -> Any:
    """A paragraph on one line (or wrapped at ``width``) from a block of template text.

    The block's values were already escaped for the medium when it was rendered,
    so the result keeps its type (``Markup`` in HTML) or becomes ``Trusted``.
    """
    text = re.sub(r"\s+", " ", str(value)).strip()
    text = re.sub(r" ([.,;:)])", r"\1", text)
    if width:
        text = textwrap.fill(text, width=width, break_long_words=False, break_on_hyphens=False)
    return Markup(text) if isinstance(value, Markup) else Trusted(text)


FILTERS: dict[str, Callable[..., Any]] = {
    "num": num, "pct": pct, "signed_pct": signed_pct, "delta": delta, "times": times, "compact": compact,
    "dt": dt, "day": day, "plural": plural, "cell": cell,
    "md_link": link_filter("markdown", one_line_labels=True), "slack_link": link_filter("slack", one_line_labels=True),
    "md_cell": md_cell, "shorten": truncate_text, "para": para, "trusted": trusted,
}


def template_folders(config: Config | None) -> tuple[str, ...]:
    """The configured template folders first, then the bundled ones."""
    folders = [str(p) for p in (config.template_paths if config else [])]
    return (*folders, str(BUNDLED_TEMPLATES))


@lru_cache(maxsize=32)
def environment(medium: str, folders: tuple[str, ...]) -> ImmutableSandboxedEnvironment:
    return sandboxed_environment(medium, folders, filters=FILTERS, one_line_values=True, keep_trailing_newline=True)


def template_name(base: str, medium: str) -> str:
    return f"reports/{base}.{MEDIA[medium]}"


def render(base: str, medium: str, context: Mapping[str, Any], folders: Sequence[str]) -> str:
    """Render ``templates/reports/<base>.<ext>`` for ``medium``."""
    env = environment(medium, tuple(folders))
    text = env.get_template(template_name(base, medium)).render(**context)
    # Templates are written for legibility; collapse the blank lines their blocks leave.
    if medium != "html":
        text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
    return text
