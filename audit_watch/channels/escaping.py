"""Escaping for every medium audit-watch writes, and the links it builds.

Everything from the audit store (agent and thread names, errors, descriptions)
is untrusted. The template environments (:mod:`audit_watch.channels.templating`)
escape every value on output with these helpers; the rest of the code uses them
where it builds text itself (Slack headers, context lines, fallbacks).

* Slack mrkdwn: exactly ``&``, ``<`` and ``>`` (:func:`mrkdwn_escape`), so nothing
  can write ``<!channel>``, ``<@U123>`` or a disguised ``<https://evil|label>``.
* Markdown: backslashes before Markdown's punctuation (:func:`escape_markdown`).
* HTML: Jinja's autoescape (markupsafe).
* Links: only ``http``, ``https`` and ``mailto`` targets without whitespace or
  control characters (:func:`safe_url`); any other target shows its label only.

:class:`Trusted` marks text audit-watch built and escaped itself (the links
below, numbers, our own macros): the Slack, Markdown and text environments
leave it as it is; HTML escapes it anyway unless it is ``Markup``.

:func:`one_line` folds control characters and line breaks to single spaces: the
report environments apply it to every untrusted value, so content cannot start
lines of its own (fake list items, headings, table rows).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from markupsafe import Markup, escape

SAFE_SCHEMES = ("http", "https", "mailto")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
# Characters that format or link anywhere in a line; the others matter only where a
# value starts a line (a heading, list item or quote), which _LINE_START handles.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")
_LINE_START = re.compile(r"^(\s*\d*)([#+=!.)-])")


class Trusted(str):
    """Text audit-watch produced and escaped itself: not escaped again (except in HTML)."""


def mrkdwn_escape(text: Any) -> str:
    """Slack's escaping: exactly ``&``, ``<``, ``>`` (quotes would show literally)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def strip_controls(value: Any) -> str:
    """Control and bidirectional-override characters become spaces (no terminal escapes)."""
    return CONTROL.sub(" ", str(value))


def one_line(value: Any) -> str:
    """Controls and every run of whitespace (line breaks included) become one space."""
    return re.sub(r"\s+", " ", strip_controls(value))


def escape_slack(value: Any) -> str:
    """mrkdwn-escaped and on one line."""
    return mrkdwn_escape(one_line(value))


def escape_markdown(value: Any) -> str:
    """Markdown punctuation backslash-escaped, on one line, with nothing that starts a block."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", one_line(value))
    return _LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped)


def safe_url(url: Any) -> str | None:
    """The URL when it is http(s)/mailto and has no whitespace or controls, else None."""
    text = str(url or "").strip()
    if not text or any(ch.isspace() or ord(ch) < 32 for ch in text):
        return None
    return text if urlsplit(text).scheme.lower() in SAFE_SCHEMES else None


def _label(url: Any, label: Any) -> Any:
    return label if label not in (None, "") else url


def slack_link(url: Any, label: Any = None) -> Trusted:
    """``<url|label>`` with both parts escaped; ``|`` in the URL percent-encoded.
    A target that is not :func:`safe_url` shows the label alone."""
    shown = _label(url, label)
    if not isinstance(shown, Trusted):
        shown = mrkdwn_escape(shown)
    checked = safe_url(url)
    if checked is None:
        return Trusted(shown)
    target = mrkdwn_escape(checked).replace("|", "%7C")
    return Trusted(f"<{target}|{shown.replace('|', '¦')}>")


def markdown_link(url: Any, label: Any = None) -> Trusted:
    """``[label](<url>)`` with the label escaped; the label alone for an unsafe target."""
    shown = _label(url, label)
    if not isinstance(shown, Trusted):
        shown = escape_markdown(shown)
    checked = safe_url(url)
    if checked is None:
        return Trusted(shown)
    return Trusted(f"[{shown}](<{checked.replace('>', '%3E')}>)")


def html_link(url: Any, label: Any = None) -> Markup:
    checked = safe_url(url)
    shown = _label(url, label)
    if checked is None:
        return escape(shown)
    return Markup('<a href="{}">{}</a>').format(checked, shown)


def text_link(url: Any, label: Any = None) -> str:
    """``label: url``; the URL alone without a label, the label alone for an unsafe target."""
    checked = safe_url(url)
    if checked is None:
        return "" if label in (None, "") else str(label)
    if label in (None, "") or label == checked:
        return checked
    return f"{label}: {checked}"


# The ``link`` filter of each medium.
LINKS = {"slack": slack_link, "markdown": markdown_link, "html": html_link, "text": text_link}
