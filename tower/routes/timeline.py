"""Timelines: a business key's events from every system and its spans on one time axis."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.convertors import Convertor, register_url_convertor

from kernel.api_auth import AUTH_RESPONSES, ReadDep
from kernel.exceptions import ExceptionFilter
from kernel.queries import events_for_key, spans_for_key
from kernel.store import Store
from kernel.store.base import stored_time
from tower.routes.deps import ExceptionsDep, StoreDep, invalid
from tower.routes.models import ExceptionOut, ValidationErrors

# Per source (events, spans): a key with more than this many shows its newest (and says so in `truncated`).
TIMELINE_LIMIT = 2000
# Exceptions listed with a key's timeline, newest first (`exceptions_total` counts them all).
KEY_EXCEPTIONS = 100

router = APIRouter(prefix="/api", tags=["timeline"], responses=AUTH_RESPONSES)

_EVENT_IDS = ("order_id", "shipment_id", "invoice_id", "customer_id", "subject", "trace_id", "span_id")


class TimelineEntry(BaseModel):
    """One thing that happened to a key: a business event, a span, or a change to its exception."""

    at: datetime = Field(description="When: the event's time, the span's start, the change's time (UTC).")
    kind: Literal["event", "span", "audit"]
    system: str = Field(description="The event's source system, the span's service, or `tower` for a change.")
    name: str = Field(description="The event type, the span name, or the change (opened, acknowledged, ...).")
    ids: dict[str, str] = Field(description="Identifiers: event id, source and business keys; trace and span ids.")
    status: str | None = Field(None, description="The span's status code (Unset, Ok, Error); null otherwise.")
    actor: str | None = Field(None, description="Who made the change (audit entries): a token id, `engine`, ...")
    detail: dict[str, Any] = Field(
        default_factory=dict,
        description="Event: data, door, received_at. Span: kind, duration_ms, status_message, attributes. "
        "Change: what changed.",
    )


class KeyTimeline(BaseModel):
    """Everything known about one business key."""

    key: str
    exceptions: list[ExceptionOut] = Field(
        description=f"Exceptions raised on this key, newest first: the newest {KEY_EXCEPTIONS} when it has more."
    )
    exceptions_total: int = Field(description="How many exceptions were raised on this key in all.")
    timeline: list[TimelineEntry] = Field(description="Events and spans of the key, oldest first.")
    truncated: bool = Field(
        description=f"True when the key has more than {TIMELINE_LIMIT} events or spans: the newest are shown."
    )


def _event_entry(row: dict[str, Any]) -> TimelineEntry:
    ids = {"id": row["id"], "source": row["source"]} | {k: row[k] for k in _EVENT_IDS if row.get(k)}
    return TimelineEntry(
        at=stored_time(row["time"]),
        kind="event",
        system=row["system"],
        name=row["type"],
        ids=ids,
        detail={"data": row["data"], "door": row["door"], "received_at": stored_time(row["received_at"])},
    )


def _span_entry(row: dict[str, Any]) -> TimelineEntry:
    ids = {"trace_id": row["TraceId"], "span_id": row["SpanId"]}
    if row.get("ParentSpanId"):
        ids["parent_span_id"] = row["ParentSpanId"]
    return TimelineEntry(
        at=stored_time(row["Timestamp"]),
        kind="span",
        system=row["ServiceName"],
        name=row["SpanName"],
        ids=ids,
        status=row["StatusCode"],
        detail={
            "kind": row["SpanKind"],
            "duration_ms": int(row["Duration"]) / 1e6,
            "status_message": row["StatusMessage"],
            "attributes": row["SpanAttributes"],
        },
    )


# The store's own text of a time ('2026-11-02 15:00:00.000000', UTC without saying so), as some changes keep it.
_STORED_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?$")


def _detail(detail: Any) -> Any:
    """A change's detail as answered: a time (a key ending in `_at`) kept in the store's text, without an offset
    (the `opened` entry's `due_at`), is answered in UTC as RFC 3339, as every other time of the API."""
    if not isinstance(detail, dict):
        return detail
    return {
        name: stored_time(value)
        if name.endswith("_at") and isinstance(value, str) and _STORED_TIME.fullmatch(value)
        else value
        for name, value in detail.items()
    }


def audit_entries(exception_id: str, rows: Iterable[dict[str, Any]]) -> list[TimelineEntry]:
    """An exception's audit trail as timeline entries."""
    return [
        TimelineEntry(
            at=stored_time(row["at"]),
            kind="audit",
            system="tower",
            name=row["action"],
            ids={"exception_id": exception_id},
            actor=row["actor"],
            detail=_detail(row["detail"]),
        )
        for row in rows
    ]


def key_timeline(store: Store, key: str, extra: Iterable[TimelineEntry] = ()) -> tuple[list[TimelineEntry], bool]:
    """The key's events and spans (and `extra` entries) in time order, and whether they were cut."""
    events = events_for_key(store, key, limit=TIMELINE_LIMIT + 1)
    spans = spans_for_key(store, key, limit=TIMELINE_LIMIT + 1)
    truncated = len(events) > TIMELINE_LIMIT or len(spans) > TIMELINE_LIMIT
    entries = [
        *(_event_entry(r) for r in events[-TIMELINE_LIMIT:]),  # oldest first: the one too many is the first
        *(_span_entry(r) for r in spans[-TIMELINE_LIMIT:]),
        *extra,
    ]
    # sorted() is stable: at the same instant, events come before spans before changes.
    return sorted(entries, key=lambda e: e.at), truncated


class _KeyConvertor(Convertor[str]):
    """The rest of the path as the key, slashes and newlines included: Starlette's `path` stops at a newline, so
    a key with one was a 404 before its token was checked, not the empty timeline of an unknown key."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("key", _KeyConvertor())


@router.get(
    "/timeline/{key:key}",
    summary="Timeline of a business key: its events from every system and its spans",
    description="A key is an order, shipment or invoice id, or an event subject. An unknown key has an empty "
    "timeline; an empty key is a 422. Roles: viewer, operator, finance, admin.",
    responses={422: {"model": ValidationErrors, "description": "The key is empty."}},
)
def get_timeline(key: str, _: ReadDep, store: StoreDep, exceptions: ExceptionsDep) -> KeyTimeline:
    if not key:  # an empty key filters nothing: every exception of every key would be listed as this key's
        raise invalid(("path", "key"), "the key is empty: name an order, shipment or invoice id, or a subject")
    timeline, truncated = key_timeline(store, key)
    raised, total = exceptions.search(ExceptionFilter(key=key), limit=KEY_EXCEPTIONS)
    return KeyTimeline(
        key=key,
        exceptions=[ExceptionOut.of(r) for r in raised],
        exceptions_total=total,
        timeline=timeline,
        truncated=truncated,
    )
