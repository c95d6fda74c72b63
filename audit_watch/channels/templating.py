"""The one factory of Jinja environments, for alert and report templates alike.

Every environment :func:`environment` builds is the same sandbox with the same
escaping for its medium:

* an ``ImmutableSandboxedEnvironment``: templates come from the config's folders;
  they may read what they are given, never change it or reach Python's internals;
* ``StrictUndefined``: a misspelt variable is an error, not an empty string;
* the config's template folders first, then the bundled ones (the caller's list);
* each ``{{ value }}`` escaped on output for its medium, by ``finalize`` or autoescape:

  - ``slack``: mrkdwn-escaped (``&``, ``<``, ``>``), except :class:`Trusted` text and numbers;
  - ``html``: autoescaped, in every template and partial rendered for HTML (by
    medium, not by file name: a shared partial included from a text template
    must not be HTML-escaped);
  - ``markdown``: Markdown's punctuation backslash-escaped, except :class:`Trusted` text;
  - ``text``: as it is;

* a ``link`` filter (and global) for its medium that links only http(s) and
  mailto targets (:func:`audit_watch.channels.escaping.safe_url`).

``one_line_values=True`` (reports) also folds every untrusted value, link labels included,
onto one line: control characters and line breaks become spaces (in HTML only the
controls: whitespace means nothing there). The callers add their own filters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from audit_watch.channels.escaping import LINKS, Trusted, escape_markdown, mrkdwn_escape, one_line, strip_controls

MEDIA = ("slack", "html", "markdown", "text")


def _passes(value: Any) -> bool:
    """Our own text and numbers go out as they are."""
    return isinstance(value, (Trusted, int, float))


def _finalizer(medium: str, fold: bool) -> Callable[[Any], Any]:
    def slack(value: Any) -> Any:
        if value is None:
            return ""
        if _passes(value):
            return value
        return mrkdwn_escape(one_line(value) if fold else value)

    def markdown(value: Any) -> Any:
        if value is None:
            return ""
        return value if _passes(value) else escape_markdown(value)

    def html(value: Any) -> Any:
        if value is None:
            return ""
        if fold and isinstance(value, str) and not isinstance(value, Markup):
            return strip_controls(value)      # then autoescaped
        return value

    def text(value: Any) -> Any:
        if value is None:
            return ""
        if fold and isinstance(value, str) and not isinstance(value, Trusted):
            return one_line(value)
        return value

    return {"slack": slack, "markdown": markdown, "html": html, "text": text}[medium]


def link_filter(medium: str, one_line_labels: bool = False) -> Callable[..., Any]:
    """The ``link`` builder of ``medium``; with ``one_line_labels`` an untrusted label
    is folded onto one line before the builder escapes it."""
    build = LINKS[medium]
    if not one_line_labels:
        return build

    def link(url: Any, label: Any = None) -> Any:
        if label is not None and not isinstance(label, Trusted):
            label = one_line(label)
        return build(url, label)

    return link


def environment(
    medium: str, folders: Sequence[str | Path], *, filters: Mapping[str, Callable[..., Any]] | None = None,
    one_line_values: bool = False, keep_trailing_newline: bool = False,
) -> ImmutableSandboxedEnvironment:
    """A sandboxed environment rendering for ``medium`` (one of :data:`MEDIA`) from ``folders``."""
    if medium not in MEDIA:
        raise ValueError(f"unknown medium {medium!r} (media: {', '.join(MEDIA)})")
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader([str(f) for f in folders]),
        autoescape=medium == "html",
        undefined=StrictUndefined,
        finalize=_finalizer(medium, one_line_values),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=keep_trailing_newline,
    )
    env.filters["link"] = env.globals["link"] = link_filter(medium, one_line_values)
    env.filters.update(filters or {})
    return env
