"""Render report contexts with Jinja: HTML, plain text, Markdown and Slack mrkdwn.

Everything from the audit store (agent and thread names, errors, descriptions)
is untrusted. Each medium escapes it on output, in a sandboxed environment with
StrictUndefined (a misspelt variable is an error, not an empty string):

- HTML: autoescape (every template and partial rendered for HTML);
- Markdown: ``finalize`` backslash-escapes Markdown's punctuation in every value;
- Slack: ``finalize`` escapes exactly ``&``, ``<`` and ``>`` (so content cannot
  write ``<!channel>`` or a disguised ``<url|label>`` link);
- text: ``finalize`` drops control characters (no terminal escape sequences).

Every medium folds whitespace in values to single spaces, so content cannot
start new lines of its own (fake list items, headings, table rows). The filters
below return ``Trusted`` text (numbers, dates, the links we build), which the
Markdown, Slack and text environments leave alone; HTML escapes it anyway.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import FileSystemLoader, StrictUndefined, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from audit_watch.config.model import Config
from audit_watch.core.paths import BUNDLED_TEMPLATES

MEDIA: dict[str, str] = {"html": "html", "text": "txt", "markdown": "md", "slack": "slack.txt"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
# Characters that format or link anywhere in a line; the others matter only where a
# value starts a line (a heading, list item or quote), which _LINE_START handles.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")
_LINE_START = re.compile(r"^(\s*\d*)([#+=!.)-])")


class Trusted(str):
    """Text audit-watch produced itself: not escaped again (except in HTML)."""


def _one_line(value: Any) -> str:
    return re.sub(r"\s+", " ", _CONTROL.sub(" ", str(value)))


def _finalize_text(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Trusted) or not isinstance(value, str):
        return value
    return _one_line(value)


def escape_markdown(value: Any) -> str:
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", _one_line(value))
    return _LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped)


def _finalize_markdown(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Trusted) or isinstance(value, (int, float)):
        return value
    return escape_markdown(value)


def escape_slack(value: Any) -> str:
    return _one_line(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _finalize_slack(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Trusted) or isinstance(value, (int, float)):
        return value
    return escape_slack(value)


def _finalize_html(value: Any) -> Any:
    from markupsafe import Markup

    if value is None:
        return ""
    if isinstance(value, str) and not isinstance(value, Markup):
        return _CONTROL.sub(" ", value)      # then autoescaped
    return value


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
    text = "–" if value is None else _one_line(value)
    if len(text) > width:
        text = text[: width - 1] + "…"
    return Trusted(text.rjust(width) if align == "right" else text.ljust(width))


def md_link(url: str, label: Any) -> Trusted:
    text = label if isinstance(label, Trusted) else escape_markdown(label)
    return Trusted(f"[{text}](<{str(url).replace('>', '%3E').replace(' ', '%20')}>)")


def slack_link(url: str, label: Any) -> Trusted:
    safe_url = str(url).replace("|", "%7C").replace("<", "%3C").replace(">", "%3E")
    text = label if isinstance(label, Trusted) else escape_slack(label)
    return Trusted(f"<{safe_url}|{text}>")


def trusted(value: Any) -> Any:
    """The output of one of our own macros: already escaped for the medium when it
    was rendered, so it must not be escaped a second time (Markup stays Markup)."""
    from markupsafe import Markup

    return value if isinstance(value, (Markup, Trusted)) else Trusted(value)


def md_cell(value: Any) -> Trusted:
    return Trusted(escape_markdown("–" if value is None else value))


def truncate_text(value: Any, limit: int = 80) -> str:
    text = "" if value is None else _one_line(value)
    out = text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
    return Trusted(out) if isinstance(value, Trusted) else out


def para(value: Any, width: int = 0) -> Any:
    """A paragraph on one line (or wrapped at ``width``) from a block of template text.

    The block's values were already escaped for the medium when it was rendered,
    so the result keeps its type (``Markup`` in HTML) or becomes ``Trusted``.
    """
    from markupsafe import Markup

    text = re.sub(r"\s+", " ", str(value)).strip()
    text = re.sub(r" ([.,;:)])", r"\1", text)
    if width:
        text = textwrap.fill(text, width=width, break_long_words=False, break_on_hyphens=False)
    return Markup(text) if isinstance(value, Markup) else Trusted(text)


FILTERS = {
    "num": num, "pct": pct, "signed_pct": signed_pct, "delta": delta, "times": times, "compact": compact,
    "dt": dt, "day": day, "plural": plural, "cell": cell, "md_link": md_link, "slack_link": slack_link,
    "md_cell": md_cell, "shorten": truncate_text, "para": para, "trusted": trusted,
}


def template_folders(config: Config | None) -> tuple[str, ...]:
    """The configured template folders first, then the bundled ones."""
    folders = [str(p) for p in (config.template_paths if config else [])]
    return (*folders, str(BUNDLED_TEMPLATES))


@lru_cache(maxsize=32)
def environment(medium: str, folders: tuple[str, ...]) -> ImmutableSandboxedEnvironment:
    finalize = {"html": _finalize_html, "text": _finalize_text, "markdown": _finalize_markdown,
                "slack": _finalize_slack}[medium]
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader([Path(f) for f in folders]),
        # By medium, not by file name: a shared partial (``_*.j2``) included from an
        # HTML template must be escaped for HTML, and from a text template must not.
        autoescape=medium == "html",
        undefined=StrictUndefined,
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(FILTERS)
    return env


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
