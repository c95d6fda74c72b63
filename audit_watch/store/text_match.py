"""Case-insensitive matching (``contains``): one definition, the same on both backends.

Text is compared after **Unicode's simple lowercase mapping**, one character at a
time and without language rules: ``Ü`` matches ``ü``, ``Σ`` matches ``σ``, ``İ``
and ``I`` match ``i``; ``ß`` and ``ss`` stay different (that is full case folding),
so do ``ı`` (dotless i) and ``i``, and ``ς`` (final sigma) and ``σ``.

Why this mapping rather than ``casefold``: PostgreSQL's ``lower()`` implements it
exactly under a UTF-8 ``C`` collation (``pg_c_utf8`` from PostgreSQL 17,
``C.utf8`` from the C library before), whatever the database's own locale, while
full case folding exists only from PostgreSQL 18. SQLite's ``lower()`` knows ASCII
only, so every SQLite connection audit-watch opens gets :data:`SQLITE_FUNCTION`, a
deterministic function with this definition.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

SQLITE_FUNCTION = "aw_unicode_lower"

# The one character whose full lowercase mapping (what str.lower() applies) differs
# from its simple mapping (UnicodeData.txt): U+0130 LATIN CAPITAL LETTER I WITH DOT
# ABOVE lowers to "i" followed by U+0307 under the full mapping. str.lower() also
# applies the contextual final-sigma rule, which the simple mapping does not have.
_SIMPLE_EXCEPTIONS = {"\u0130": "i"}

# Collations whose lower() is the simple mapping for all of Unicode, best first:
# PostgreSQL's own (17+, no dependency on the operating system), then glibc's.
# ICU's full mapping differs only in U+0130 and the final sigma.
PG_COLLATIONS = ("pg_c_utf8", "C.utf8", "C.UTF-8", "und-x-icu")


def unicode_lower(value: str) -> str:
    """``value`` under Unicode's simple lowercase mapping (see the module's doc)."""
    if value.isascii():
        return value.lower()
    return "".join(_SIMPLE_EXCEPTIONS.get(char) or _lower_char(char) for char in value)


def _lower_char(char: str) -> str:
    lowered = char.lower()
    return lowered if len(lowered) == 1 else char


def _sqlite_unicode_lower(value: Any) -> Any:
    """The SQLite function: text is lowered, anything else (NULL, numbers, blobs) kept."""
    return unicode_lower(value) if isinstance(value, str) else value


def register_sqlite_functions(dbapi_connection: Any, _record: Any = None) -> None:
    """Install :data:`SQLITE_FUNCTION` on a new sqlite3 connection (a ``connect`` event)."""
    dbapi_connection.create_function(SQLITE_FUNCTION, 1, _sqlite_unicode_lower, deterministic=True)


def pick_pg_collation(conn: Connection) -> str | None:
    """The best collation of :data:`PG_COLLATIONS` this database has, or None (then
    ``lower()`` follows the database's locale, and a warning says so)."""
    rows = conn.execute(
        text(
            "SELECT collname FROM pg_collation WHERE collname IN :names AND collencoding IN "
            "(-1, (SELECT encoding FROM pg_database WHERE datname = current_database()))"
        ).bindparams(bindparam("names", expanding=True)),
        {"names": list(PG_COLLATIONS)},
    )
    available = {row[0] for row in rows}
    for name in PG_COLLATIONS:
        if name in available:
            return name
    log.warning(
        "the audit store has none of the collations %s: `contains` lower-cases text by the "
        "database's locale, which may differ from SQLite beyond ASCII", ", ".join(PG_COLLATIONS)
    )
    return None
