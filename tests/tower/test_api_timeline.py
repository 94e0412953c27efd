"""`GET /api/timeline/{key}`: a key's events from every system and its spans on one time axis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore, NewException
from kernel.store import Store
from tests.factories import event_row, make_event, span_row
from tests.support import RunningTower
from tower.routes import timeline


def test_timeline_of_a_key_merges_systems_and_spans(tower: RunningTower, store: Store) -> None:
    key = "SH-5"
    confirmed = make_event("shipment.confirmed", 5)  # wms 15:05, SH-5
    asn = make_event("asn.sent", 20, data={"shipment_id": key})  # edi 15:20
    delivered = make_event("shipment.delivered", 40, data={"shipment_id": key})  # tms 15:40
    store.insert("business_events", [event_row(e) for e in (confirmed, asn, delivered, make_event("asn.sent", 6))])
    at = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
    store.insert(
        "otel_traces",
        [
            span_row("1" * 32, "2" * 16, at + timedelta(minutes=10), "edi", "edi.send", "Error", shipment_id=key),
            span_row("1" * 32, "3" * 16, at + timedelta(minutes=15), "edi", "edi.send", "Ok", shipment_id=key),
            span_row("4" * 32, "5" * 16, at + timedelta(minutes=16), "edi", "edi.send", "Ok", shipment_id="SH-6"),
        ],
    )
    (raised,) = ExceptionStore(store, FixedClock(at + timedelta(hours=2))).open_many(
        [NewException("asn-sent", key, "business", "transportation", "high", at + timedelta(hours=1, minutes=5))]
    )
    with tower.api("viewer") as http:
        response = http.get(f"/api/timeline/{key}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["key"] == key and body["truncated"] is False
    assert [(e["at"][11:16], e["kind"], e["system"], e["name"], e["status"]) for e in body["timeline"]] == [
        ("15:05", "event", "wms", "shipment.confirmed", None),
        ("15:10", "span", "edi", "edi.send", "Error"),
        ("15:15", "span", "edi", "edi.send", "Ok"),
        ("15:20", "event", "edi", "asn.sent", None),
        ("15:40", "event", "tms", "shipment.delivered", None),
    ]
    assert body["timeline"][1]["ids"] == {"trace_id": "1" * 32, "span_id": "2" * 16}
    assert body["timeline"][0]["ids"]["shipment_id"] == key
    assert [(x["id"], x["rule"], x["status"]) for x in body["exceptions"]] == [(raised.id, "asn-sent", "open")]


def test_unknown_key_has_an_empty_timeline_and_keys_may_hold_slashes(tower: RunningTower, store: Store) -> None:
    subject = "erp/orders/SO-9"
    event = make_event("order.created", 9, subject=subject)
    store.insert("business_events", [event_row(event)])
    with tower.api("viewer") as http:
        empty = http.get("/api/timeline/NOPE-1")
        nested = http.get(f"/api/timeline/{subject}")
    assert empty.status_code == 200
    assert empty.json() == {
        "key": "NOPE-1",
        "exceptions": [],
        "exceptions_total": 0,
        "timeline": [],
        "truncated": False,
    }
    assert nested.status_code == 200, nested.text
    assert [(e["name"], e["ids"]["id"]) for e in nested.json()["timeline"]] == [("order.created", event["id"])]


def test_a_key_with_a_newline_is_an_unknown_key_behind_the_token(tower: RunningTower) -> None:
    """No stored key holds a control character (ingest refuses them), but the route still checks the token first
    and answers as for any unknown key, not with a 404 of the router."""
    assert httpx.get(f"{tower.http_url}/api/timeline/SO-1%0Ax").status_code == 401
    with tower.api("viewer") as http:
        answer = http.get("/api/timeline/%0ASO-1/x")
    assert answer.status_code == 200
    assert answer.json() == {
        "key": "\nSO-1/x",
        "exceptions": [],
        "exceptions_total": 0,
        "timeline": [],
        "truncated": False,
    }


def test_a_key_over_the_limit_shows_its_newest_entries(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeline, "TIMELINE_LIMIT", 2)
    events = [make_event("inventory.snapshot", n=i, data={"sku": "SKU-7", "location": "ATL"}) for i in range(3)]
    store.insert("business_events", [event_row(e) for e in events])
    entries, truncated = timeline.key_timeline(store, "SKU-7")
    assert truncated and [e.ids["id"] for e in entries] == [events[1]["id"], events[2]["id"]]


def test_an_empty_key_is_422_not_every_keys_exceptions(tower: RunningTower, store: Store) -> None:
    """`/api/timeline/` (a script's empty variable) listed every exception of every key as raised on the key."""
    ExceptionStore(store, FixedClock(datetime(2026, 11, 2, 16, tzinfo=UTC))).open_many(
        [NewException("asn-sent", "SH-1", "business", "transportation", "high")]
    )
    with tower.api("viewer") as http:
        answer = http.get("/api/timeline/")
    assert answer.status_code == 422, answer.text
    (problem,) = answer.json()["detail"]
    assert problem["loc"] == ["path", "key"] and "empty" in problem["msg"]


def test_a_key_with_more_exceptions_than_listed_says_how_many(
    tower: RunningTower, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exceptions of a key were cut at 100 without a word: a source-silence key reopened every week showed 100."""
    monkeypatch.setattr(timeline, "KEY_EXCEPTIONS", 2)
    clock = FixedClock(datetime(2026, 11, 2, 16, tzinfo=UTC))
    exceptions = ExceptionStore(store, clock)
    opened = []
    for _ in range(3):  # one source, silent three times
        (record,) = exceptions.open_many([NewException("source-silence", "wms", "technical", "integration", "high")])
        exceptions.resolve(record.id, "test")
        opened.append(record.id)
        clock.advance(timedelta(days=7))
    with tower.api("viewer") as http:
        body = http.get("/api/timeline/wms").json()
    assert [e["id"] for e in body["exceptions"]] == [opened[2], opened[1]]
    assert body["exceptions_total"] == 3
