"""The Store protocol and the helpers both backends share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import orjson

Row = dict[str, Any]
Params = Mapping[str, Any]


class StoreError(Exception):
    """A query or insert the store refused (bad SQL, bad data)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or is not accepting writes right now."""


class Store(Protocol):
    """A ClickHouse database: typed-parameter queries and batch inserts."""

    backend: str

    def query(self, sql: str, params: Params | None = None) -> list[Row]:
        """Run a SELECT; values bind to `{name:Type}` placeholders. Returns rows as dicts."""
        ...

    def command(self, sql: str, params: Params | None = None) -> None:
        """Run a statement that returns nothing (DDL, ALTER, INSERT ... SELECT)."""
        ...

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert rows (column name -> value) into a table as one batch, all or none; returns how many."""
        ...

    def ping(self) -> bool:
        """True when the store answers a trivial query."""
        ...

    def close(self) -> None:
        """Release the connection (and, embedded, the data directory)."""
        ...


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} for insert")


def encode_rows(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Encode rows as one JSON array, which ClickHouse reads with FORMAT JSONEachRow."""
    return orjson.dumps(rows if isinstance(rows, list) else list(rows), default=_default)


def decode_rows(data: bytes) -> list[Row]:
    """Decode JSONEachRow output (one object a line)."""
    return [orjson.loads(line) for line in data.splitlines() if line]


def quote_literal(value: Any) -> str:
    """Render a Python value as a ClickHouse literal for a query parameter's text form.

    Used only for composite parameters (arrays) whose text form the engine parses as a
    literal; scalars are passed through as text and parsed by the engine against the type
    declared in the placeholder.
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ",".join(quote_literal(v) for v in value) + "]"
    text = utc_text(value) if isinstance(value, datetime) else str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# The engine reads a scalar parameter in its escaped text form (as a TSV field): a backslash
# starts an escape sequence and a raw tab or newline ends the value, so strings are escaped
# and NULL is `\N`.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n"})


def param_text(value: Any) -> str:
    """The text form of a parameter value, as ClickHouse's parameter binding expects it."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_ESCAPES)
    if isinstance(value, (list, tuple, set, frozenset)):
        return quote_literal(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime):
        return utc_text(value)
    return str(value)


def utc_text(value: datetime) -> str:
    """A datetime as ClickHouse's text form in UTC (naive datetimes are taken as UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    # isoformat pads the year to four digits; strftime's %Y does not (year 11 became '11-...', which fails to parse)
    return value.isoformat(" ", "microseconds")


def stored_time(text: str) -> datetime:
    """A timestamp as the store returns it ('YYYY-MM-DD HH:MM:SS[.ffffff]', UTC) as an aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def stored_time_or_none(text: str | None) -> datetime | None:
    """`stored_time` for a nullable column: None (or empty text) stays None."""
    return stored_time(text) if text else None
