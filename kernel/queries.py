"""Read helpers the rules and the API share; every one counts a redelivered record once.

Redeliveries are stored as they arrive and folded on read:
- business events by their idempotency key (source, id): `business_events` is a
  ReplacingMergeTree on that key, read with FINAL;
- spans by (TraceId, SpanId): `otel_traces` is the OpenTelemetry exporter's plain MergeTree,
  so reads keep one row per span (`LIMIT 1 BY TraceId, SpanId`, `uniqExact(TraceId, SpanId)`).

Time windows are half-open, `since <= t < until`; either bound may be left out. A key
matches an event's order_id, shipment_id, invoice_id or subject, and a span's `order.id`,
`shipment.id` or `invoice.id` attribute (the collector normalises aliases to these names).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from kernel.store.base import Store

SPAN_KEY_ATTRIBUTES = ("order.id", "shipment.id", "invoice.id")

# Far enough apart to cover any timestamp stored, close enough to be valid DateTime64 values.
_EARLIEST = datetime(1970, 1, 1)
_LATEST = datetime(2262, 1, 1)

# A page of a listing, its parameters from page(). Bound as UInt64 held below 2**63: a bound number past
# its type wraps around (offset 2**32 bound as UInt32 reads as 0, so it answered the first page again).
PAGE = " LIMIT {limit:UInt64} OFFSET {offset:UInt64}"
_MAX_ROWS = 2**63 - 1  # more rows than any table holds: a page past it is empty


def page(limit: int, offset: int) -> dict[str, int]:
    """The parameters of PAGE: at most `limit` rows after the first `offset`; a page past every row is empty."""
    return {"limit": min(limit, _MAX_ROWS), "offset": min(offset, _MAX_ROWS)}


_EVENT_COLUMNS = (
    "id, source, system, type, time, subject, order_id, shipment_id, invoice_id, customer_id, sku, location,"
    " warehouse, quantity, amount, currency, data, trace_id, span_id, door, received_at"
)

_SPAN_COLUMNS = (
    "Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, Duration, StatusCode,"
    " StatusMessage, SpanAttributes, ResourceAttributes"
)


def _window(since: datetime | None, until: datetime | None) -> dict[str, Any]:
    return {"since": since or _EARLIEST, "until": until or _LATEST}


def count_events(
    store: Store,
    type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    source: str | None = None,
) -> int:
    """Distinct business events (by source and id), optionally of one type or source, in a time window."""
    rows = store.query(
        "SELECT count() AS n FROM business_events FINAL"
        " WHERE ({type:String} = '' OR type = {type:String})"
        " AND ({source:String} = '' OR source = {source:String})"
        " AND time >= {since:DateTime64(6, 'UTC')} AND time < {until:DateTime64(6, 'UTC')}",
        {"type": type or "", "source": source or "", **_window(since, until)},
    )
    return int(rows[0]["n"])


def events_for_key(store: Store, key: str, limit: int = 10_000) -> list[dict[str, Any]]:
    """The business events of one key (order, shipment or invoice id, or subject), oldest first: the newest
    `limit` of them when it has more (an inventory key fed every 5 minutes has a week in 2,000).

    Each event appears once; `data` comes back as a dict.
    """
    if not key:
        return []
    rows = store.query(
        "SELECT * FROM ("
        f"SELECT {_EVENT_COLUMNS} FROM business_events FINAL"
        " WHERE order_id = {key:String} OR shipment_id = {key:String} OR invoice_id = {key:String}"
        " OR subject = {key:String}"
        " ORDER BY time DESC, received_at DESC, source DESC, id DESC LIMIT {limit:UInt32}"
        ") ORDER BY time, received_at, source, id",
        {"key": key, "limit": limit},
    )
    for row in rows:
        row["data"] = orjson.loads(row["data"]) if row.get("data") else {}
    return rows


def count_spans(
    store: Store,
    service: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Distinct spans (by TraceId and SpanId), optionally of one service, in a time window."""
    rows = store.query(
        "SELECT uniqExact(TraceId, SpanId) AS n FROM otel_traces"
        " WHERE ({service:String} = '' OR ServiceName = {service:String})"
        " AND Timestamp >= {since:DateTime64(9, 'UTC')} AND Timestamp < {until:DateTime64(9, 'UTC')}",
        {"service": service or "", **_window(since, until)},
    )
    return int(rows[0]["n"])


def spans_for_key(store: Store, key: str, limit: int = 10_000) -> list[dict[str, Any]]:
    """The spans whose `order.id`, `shipment.id` or `invoice.id` attribute is `key`, oldest first, each once: the
    newest `limit` of them when it has more."""
    if not key:
        return []
    matches = " OR ".join(f"SpanAttributes['{name}'] = {{key:String}}" for name in SPAN_KEY_ATTRIBUTES)
    return store.query(
        "SELECT * FROM ("
        f"SELECT {_SPAN_COLUMNS} FROM otel_traces"
        # the bloom filter on mapValues(SpanAttributes) skips granules without the key
        " WHERE has(mapValues(SpanAttributes), {key:String}) AND (" + matches + ")"
        " ORDER BY Timestamp DESC, TraceId DESC, SpanId DESC LIMIT 1 BY TraceId, SpanId LIMIT {limit:UInt32}"
        ") ORDER BY Timestamp, TraceId, SpanId",
        {"key": key, "limit": limit},
    )


@dataclass(frozen=True)
class SpanStats:
    """Distinct spans and error spans of one (service, span name) in a window."""

    service: str
    span_name: str
    spans: int
    errors: int

    @property
    def error_rate(self) -> float:
        """Errors over spans (0 when there are none)."""
        return self.errors / self.spans if self.spans else 0.0


def span_stats(store: Store, since: datetime | None = None, until: datetime | None = None) -> list[SpanStats]:
    """Spans and error spans per (service, span name) in a window, each span counted once."""
    rows = store.query(
        "SELECT ServiceName AS service, SpanName AS span_name, uniqExact(TraceId, SpanId) AS spans,"
        " uniqExactIf(TraceId, SpanId, StatusCode = 'Error') AS errors FROM otel_traces"
        " WHERE Timestamp >= {since:DateTime64(9, 'UTC')} AND Timestamp < {until:DateTime64(9, 'UTC')}"
        " GROUP BY service, span_name ORDER BY service, span_name",
        _window(since, until),
    )
    return [SpanStats(r["service"], r["span_name"], int(r["spans"]), int(r["errors"])) for r in rows]
