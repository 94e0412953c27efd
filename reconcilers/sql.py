"""SQL pieces the reconcilers share. Values always bind as typed parameters; only identifiers the
code controls (staging table names, parameter names) are written into the text."""

from __future__ import annotations

import weakref
from datetime import datetime
from typing import Any

from kernel.store import Store
from kernel.store.base import stored_time, utc_text

T = "DateTime64(6, 'UTC')"


def parse_time(text: str | None) -> datetime | None:
    """A stored UTC timestamp ('YYYY-MM-DD HH:MM:SS.ffffff') as an aware datetime; None for none or the epoch."""
    if not text or text.startswith("1970-01-01"):
        return None
    return stored_time(text)


def iso(value: datetime | None) -> str | None:
    """An aware datetime as RFC 3339 UTC text (for contexts and details), or None."""
    return None if value is None else utc_text(value).replace(" ", "T") + "Z"


class Binder:
    """Collects typed parameters while a statement is written: `bind(value, type)` returns its placeholder."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def bind(self, value: Any, kind: str) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"{{{name}:{kind}}}"


def newest(time: str, received_at: str) -> str:
    """The order in which a document's versions supersede each other, as one UInt128 for `argMax`: the later
    business time, then the later arrival (a corrected snapshot or amended order re-sent with the same time
    replaces the first). Each part of a document (amount and currency, quantity and source) is taken by this
    one order, so a tie can never mix two versions, and the answer never depends on how the store's parts
    happen to be laid out or merged (which `argMax` of the time alone did). Packed into one number: a tuple
    would make the inventory comparison about 3x slower (bench/README.md)."""
    micros = "toUInt128(greatest(toUnixTimestamp64Micro({}), 0))"
    return f"bitOr(bitShiftLeft({micros.format(time)}, 64), {micros.format(received_at)})"


def source_condition(source: str, bind: Binder) -> str:
    """Rows of `source`: a system covers its paths (`wms` covers `wms/dallas`)."""
    if "/" not in source:
        return f"system = {bind.bind(source, 'String')}"
    return f"(source = {bind.bind(source, 'String')} OR startsWith(source, {bind.bind(source + '/', 'String')}))"


def watch_condition(key: str, rules: tuple[str, ...], bind: Binder) -> str:
    """`key` is watched by one of `rules`: it differed at the rule's last run (`recon_state`) or has an
    active exception. A run answers the current values of watched keys, so the loop can resolve what
    agrees now and end episodes of difference."""
    names = bind.bind(list(rules), "Array(String)")
    return (
        f"({key} IN (SELECT key FROM recon_state FINAL WHERE rule IN {names} AND differs = 1)"
        f" OR {key} IN (SELECT key FROM exceptions FINAL WHERE rule IN {names} AND status != 'resolved'))"
    )


_MATERIALIZED_CTE: weakref.WeakKeyDictionary[Store, bool] = weakref.WeakKeyDictionary()


def materialized_cte(store: Store) -> bool:
    """Whether the store's ClickHouse computes a `WITH name AS MATERIALIZED (...)` CTE once for all its
    references (setting `enable_materialized_cte`: recent ClickHouse releases, 26.x, and the embedded engine).
    Without it a CTE is inlined: computed again wherever it is read. Asked once per store."""
    known = _MATERIALIZED_CTE.get(store)
    if known is None:
        rows = store.query("SELECT count() AS n FROM system.settings WHERE name = 'enable_materialized_cte'")
        known = _MATERIALIZED_CTE[store] = bool(rows and int(rows[0]["n"]))
    return known
