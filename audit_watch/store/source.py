"""The audit store: engine, renamed tables, read-only connections, dialect helpers.

Everything that differs between PostgreSQL and SQLite lives here, so that rule
kinds build one portable SQLAlchemy select:

- time comparisons: SQLite keeps ISO text with or without an offset, so exact
  comparisons go through ``julianday`` (which applies the offset; SQLite keeps the
  instant in whole milliseconds, so equal instants give equal numbers), next to a
  coarse comparison on the raw column that can still use its index;
- JSON metadata keys: ``->>`` on PostgreSQL, ``json_extract`` on SQLite, as text,
  as a number (JSON numbers only) and by their JSON type;
- text: lower-casing for ``contains`` (Unicode's simple mapping on both backends,
  :mod:`audit_watch.store.text_match`) and ordering by code point;
- read-only transactions (the engines: :mod:`audit_watch.store.engine`);
- moments of an evaluation (``now - offset``) as named bound parameters, so that a
  rule's statement is built once and executed at every ``now`` (:class:`Moment`,
  :class:`StatementCache`).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    DateTime,
    Float,
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    event,
    func,
    literal,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from audit_watch.core.timestamps import as_utc, parse_timestamp
from audit_watch.store.columns import JSON_COLUMN, is_json_key, json_key
from audit_watch.store.engine import make_engine
from audit_watch.store.schema import TIME_COLUMN, build_tables
from audit_watch.store.settings import SourceConfig
from audit_watch.store.text_match import SQLITE_FUNCTION, pick_pg_collation, register_sqlite_functions

_UNIX_EPOCH_JULIAN_DAY = 2440587.5

# SQLite's coarse, index-friendly date range around an exact time range: text of any
# UTC offset lies within a day of its UTC instant, so the range runs from the day
# before the start's UTC date to (exclusive) two days after the end's.
_COARSE_LOW_SHIFT = timedelta(days=-1)
_COARSE_HIGH_SHIFT = timedelta(days=2)

# JSON types by the names PostgreSQL's jsonb_typeof gives, and SQLite's json_type names for them.
_SQLITE_JSON_TYPES = {
    "number": ("integer", "real"),
    "string": ("text",),
    "boolean": ("true", "false"),
    "null": ("null",),
    "object": ("object",),
    "array": ("array",),
}

_Built = TypeVar("_Built")


@dataclass(frozen=True)
class Moment:
    """The instant ``now - offset`` of an evaluation, as named bound parameters.

    A statement that compares times with Moments instead of datetimes does not depend
    on ``now``: it is built once, and :meth:`AuditSource.moment_values` gives the
    parameter values for each evaluation. The names derive from the offset, so one
    instant used in several places of a statement is one value.
    """

    offset: timedelta

    @property
    def key(self) -> str:
        """The exact instant's parameter (a timestamp; ISO text for ``julianday`` on SQLite)."""
        micros = self.offset // timedelta(microseconds=1)
        return f"now_minus_{micros}us" if micros >= 0 else f"now_plus_{-micros}us"

    @property
    def coarse_low_key(self) -> str:
        """SQLite: the date text where a coarse range starting at this instant begins."""
        return f"{self.key}_day_before"

    @property
    def coarse_high_key(self) -> str:
        """SQLite: the date text where a coarse range ending at this instant ends (exclusive)."""
        return f"{self.key}_days_after"


TimeBound = datetime | Moment
"""An instant to compare a time column with: fixed, or ``now - offset`` bound at execution."""


class StatementCache:
    """What a rule's evaluation builds once and reuses (statements, clauses), by rule.

    Keyed by the owner object's identity (a rule: an immutable model, so the same
    object always builds the same thing; rules are not hashable, their labels are a
    dict) and a variant. A weak reference checks that an id still names the object
    it was cached for, as Python reuses the ids of collected objects, and drops the
    entries of a rule once it is gone (a reload retires every rule object); the LRU
    bound caps what live owners can pile up. Thread-safe: a value built twice by two
    threads at once is harmless (the second one wins).
    """

    def __init__(self, capacity: int = 2048) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[int, Hashable], tuple[Callable[[], object | None], Any]] = OrderedDict()
        self._lock = threading.Lock()
        # Keys of collected owners. Appended by the weak references' callbacks, which
        # run inside garbage collection, possibly while this thread holds the lock:
        # they must not take it, so the entries go at the next access.
        self._collected: list[tuple[tuple[int, Hashable], Callable[[], object | None]]] = []

    def get_or_build(self, owner: object, variant: Hashable, build: Callable[[], _Built]) -> _Built:
        key = (id(owner), variant)
        with self._lock:
            self._drop_collected()
            entry = self._entries.get(key)
            if entry is not None and entry[0]() is owner:
                self._entries.move_to_end(key)
                return entry[1]
        value = build()
        with self._lock:
            self._entries[key] = (self._reference(owner, key), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            self._drop_collected()
            return len(self._entries)

    def _reference(self, owner: object, key: tuple[int, Hashable]) -> Callable[[], object | None]:
        """A weak reference where the type allows one, else a strong one (the entry then
        keeps the owner alive, so its id cannot be reused while cached)."""
        collected = self._collected
        try:
            return weakref.ref(owner, lambda ref: collected.append((key, ref)))
        except TypeError:
            return lambda: owner

    def _drop_collected(self) -> None:
        while self._collected:
            key, ref = self._collected.pop()
            entry = self._entries.get(key)
            if entry is not None and entry[0] is ref:  # not an entry of a newer owner of that id
                del self._entries[key]


@dataclass
class AuditSource:
    """The audit store as rule kinds see it."""

    engine: Engine
    tables: dict[str, Table]
    # Statements and clauses of rule kinds, built once per rule for this engine's
    # dialect and these tables (see Moment).
    statements: StatementCache = field(default_factory=StatementCache, repr=False, compare=False)
    # PostgreSQL: the collation whose lower() is Unicode's simple mapping (probed once).
    _case_collation: tuple[str | None] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # An engine not made by make_engine (tests, tools) still needs the SQL functions.
        if self.dialect == "sqlite" and not event.contains(self.engine, "connect", register_sqlite_functions):
            event.listen(self.engine, "connect", register_sqlite_functions)

    @classmethod
    def from_config(cls, config: SourceConfig, url: str | None = None, readonly: bool = True) -> AuditSource:
        engine = make_engine(url or config.url, readonly=readonly, statement_timeout=config.statement_timeout)
        tables = build_tables(config.tables, config.columns, config.db_schema)
        return cls(engine, tables)

    @classmethod
    def from_url(cls, url: str, readonly: bool = True) -> AuditSource:
        return cls.from_config(SourceConfig(url=url), readonly=readonly)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A read-only transaction (PostgreSQL enforces it; SQLite is opened read-only)."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(postgresql_readonly=True)
            with conn.begin():
                yield conn

    # --- columns ---------------------------------------------------------------------

    def table(self, name: str) -> Table:
        return self.tables[name]

    def time_column(self, source: str) -> ColumnElement[Any]:
        return self.tables[source].c[TIME_COLUMN[source]]

    def column(self, source: str, name: str) -> ColumnElement[Any]:
        """A rule's column by logical name: real, computed or a JSON metadata key (as text)."""
        table = self.tables[source]
        if name == "total_tokens" and source == "jobs":
            return table.c.input_tokens + table.c.output_tokens
        if is_json_key(source, name):
            return self.json_text(table.c[JSON_COLUMN[source]], json_key(name))
        return table.c[name]

    def numeric_column(self, source: str, name: str) -> ColumnElement[Any]:
        """A column as a number; a JSON key only where it holds a JSON number, else NULL."""
        if is_json_key(source, name):
            return self.json_number(self.tables[source].c[JSON_COLUMN[source]], json_key(name))
        return self.column(source, name)

    def json_text(self, column: ColumnElement[Any], key: str) -> ColumnElement[Any]:
        """A JSON key as text, the same on both backends (true/false, 429 -> '429')."""
        if self.dialect == "sqlite":
            path = _json_path(key)
            kind = func.json_type(column, path)
            return case(
                (kind == "true", literal("true")),
                (kind == "false", literal("false")),
                else_=cast(func.json_extract(column, path), String),
            )
        return column[key].as_string()

    def json_number(self, column: ColumnElement[Any], key: str) -> ColumnElement[Any]:
        """A JSON key as a double where it holds a JSON number, else NULL.

        On PostgreSQL a bare cast would fail the whole query on one ``"status": "ok"``,
        and SQLite would compare such text as greater than any number; both compare in
        double precision (SQLite would keep a whole number exact).
        """
        if self.dialect == "sqlite":
            return case(
                (self.json_is(column, key, "number"), cast(func.json_extract(column, _json_path(key)), Float)),
                else_=None,
            )
        return case((self.json_is(column, key, "number"), cast(column[key].as_string(), Float)), else_=None)

    def json_is(self, column: ColumnElement[Any], key: str, *kinds: str) -> ColumnElement[bool]:
        """Whether the key holds a JSON value of one of ``kinds`` (``number``, ``string``,
        ``boolean``, ``null``, ``object``, ``array``). False, never NULL, for a missing key."""
        if self.dialect == "sqlite":
            names = [name for kind in kinds for name in _SQLITE_JSON_TYPES[kind]]
            return func.coalesce(func.json_type(column, _json_path(key)), "").in_(names)
        return func.coalesce(func.jsonb_typeof(column[key]), "").in_(list(kinds))

    def json_has_key(self, column: ColumnElement[Any], key: str) -> ColumnElement[bool]:
        if self.dialect == "sqlite":
            return func.json_type(column, _json_path(key)).is_not(None)
        return column.op("?", is_comparison=True)(literal(key, String))

    # --- text ------------------------------------------------------------------------

    def fold_case(self, text: ColumnElement[Any]) -> ColumnElement[Any]:
        """``text`` under Unicode's simple lowercase mapping (for ``contains``)."""
        if self.dialect == "sqlite":
            return getattr(func, SQLITE_FUNCTION)(text)
        if self.dialect == "postgresql":
            collation = self._lowercase_collation()
            return func.lower(text.collate(collation) if collation else text)
        return func.lower(text)

    def code_point_order(self, text: ColumnElement[Any]) -> ColumnElement[Any]:
        """``text`` ordered by code point, as SQLite orders (not by the database's locale)."""
        return text.collate("C") if self.dialect == "postgresql" else text

    def _lowercase_collation(self) -> str | None:
        if self._case_collation is None:
            with self.engine.connect() as conn:
                self._case_collation = (pick_pg_collation(conn),)
        return self._case_collation[0]

    # --- time ------------------------------------------------------------------------

    def time_value(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """A time column (or time text) in a form that compares and orders correctly.

        On SQLite a Julian day number: six times cheaper per row than normalising
        the text with ``strftime``, and exact to the millisecond.
        """
        if self.dialect == "sqlite":
            return func.julianday(column)
        return column

    def time_param(self, moment: TimeBound) -> ColumnElement[Any]:
        if isinstance(moment, Moment):
            if self.dialect == "sqlite":
                return func.julianday(bindparam(moment.key, type_=String))
            return bindparam(moment.key, type_=DateTime(timezone=True))
        moment = as_utc(moment)
        if self.dialect == "sqlite":
            return func.julianday(literal(_sqlite_time_text(moment), String))
        return literal(moment, DateTime(timezone=True))

    def after(self, column: ColumnElement[Any], moment: TimeBound) -> ColumnElement[bool]:
        return self.time_value(column) > self.time_param(moment)

    def at_or_before(self, column: ColumnElement[Any], moment: TimeBound) -> ColumnElement[bool]:
        return self.time_value(column) <= self.time_param(moment)

    def flag_between(self, column: ColumnElement[Any], start: TimeBound, end: TimeBound) -> ColumnElement[bool]:
        """``start < t <= end`` exactly (for CASE expressions inside aggregates)."""
        return and_(self.after(column, start), self.at_or_before(column, end))

    def between(self, column: ColumnElement[Any], start: TimeBound, end: TimeBound) -> ColumnElement[bool]:
        """``start < t <= end`` as a WHERE clause that can use an index on ``column``."""
        exact = self.flag_between(column, start, end)
        if self.dialect != "sqlite":
            return exact
        # Text of any UTC offset lies within a day of the UTC instant: a date range on
        # the raw column narrows by index, the exact test then decides.
        if isinstance(start, Moment):
            low: ColumnElement[Any] = bindparam(start.coarse_low_key, type_=String)
        else:
            low = literal(_coarse_day(start, _COARSE_LOW_SHIFT), String)
        if isinstance(end, Moment):
            high: ColumnElement[Any] = bindparam(end.coarse_high_key, type_=String)
        else:
            high = literal(_coarse_day(end, _COARSE_HIGH_SHIFT), String)
        return and_(column >= low, column < high, exact)

    def window(self, source: str, start: TimeBound, end: TimeBound) -> ColumnElement[bool]:
        return self.between(self.time_column(source), start, end)

    def moment_values(self, moments: Iterable[Moment], now: datetime) -> dict[str, Any]:
        """The bound values of ``moments`` at ``now`` (every parameter a Moment may use)."""
        now = as_utc(now)
        values: dict[str, Any] = {}
        sqlite = self.dialect == "sqlite"
        for moment in moments:
            at = now - moment.offset
            if sqlite:
                values[moment.key] = _sqlite_time_text(at)
                values[moment.coarse_low_key] = _coarse_day(at, _COARSE_LOW_SHIFT)
                values[moment.coarse_high_key] = _coarse_day(at, _COARSE_HIGH_SHIFT)
            else:
                values[moment.key] = at
        return values

    def read_time(self, value: Any) -> datetime | None:
        """A time value that came back from ``time_value`` or a raw column."""
        if value is None:
            return None
        if isinstance(value, str):
            return parse_timestamp(value)
        if isinstance(value, (int, float)):  # a Julian day from SQLite's time_value
            millis = round((value - _UNIX_EPOCH_JULIAN_DAY) * 86_400_000)
            return datetime.fromtimestamp(millis / 1000, tz=UTC)
        return as_utc(value)

def _sqlite_time_text(moment: datetime) -> str:
    """A UTC instant as the text ``julianday`` reads, to the millisecond."""
    moment = as_utc(moment)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _coarse_day(moment: datetime, shift: timedelta) -> str:
    """The UTC date of ``moment + shift`` (a bound of SQLite's coarse date range)."""
    return (as_utc(moment) + shift).strftime("%Y-%m-%d")


def _json_path(key: str) -> str:
    # Keys with " or \ are refused when rules load (store.columns): SQLite's paths cannot quote them.
    return '$."' + key + '"'
