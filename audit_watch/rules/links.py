"""Links back to the exact rows in Auxot's Audit Logs page.

The scheme comes from ``links:`` in the config (documented in the README):
``row`` for one row and ``list`` for the filtered list, with ``{base_url}``,
``{tab}``, ``{id}`` and ``{query}`` filled in.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

from audit_watch.config.model import LinksConfig
from audit_watch.store.where import Condition


def _base(links: LinksConfig) -> str:
    return links.base_url.rstrip("/")


def row_link(links: LinksConfig, tab: str, row_id: str) -> str:
    return links.row.format(base_url=_base(links), tab=tab, id=quote(str(row_id), safe=""))


def list_link(
    links: LinksConfig,
    tab: str,
    filters: Iterable[tuple[str, Any]],
    start: datetime | None = None,
    end: datetime | None = None,
) -> str:
    """The filtered list: equality filters and the time range, as a query string."""
    params: list[tuple[str, str]] = [(key, _text(value)) for key, value in filters]
    if start is not None:
        params.append(("from", start.strftime("%Y-%m-%dT%H:%M:%SZ")))
    if end is not None:
        params.append(("to", end.strftime("%Y-%m-%dT%H:%M:%SZ")))
    return links.list.format(base_url=_base(links), tab=tab, query=urlencode(params, quote_via=_quote_plus))


def condition_filters(conditions: Iterable[Condition]) -> list[tuple[str, Any]]:
    """The where conditions a list URL can carry: equality and membership."""
    filters: list[tuple[str, Any]] = []
    for cond in conditions:
        if cond.op == "eq":
            filters.append((cond.column, cond.value))
        elif cond.op == "in":
            filters.append((cond.column, ",".join(_text(v) for v in cond.value)))
    return filters


@lru_cache(maxsize=4096)
def _quote_plus(text: str, safe: str = "", encoding: str | None = None, errors: str | None = None) -> str:
    """``quote_plus``, remembered: the keys and the time range repeat in every link of an
    evaluation (a thousand alerts of one rule differ only in their group's values)."""
    return quote_plus(text, safe, encoding, errors)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
