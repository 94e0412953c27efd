"""The read helpers count every record once, however often it was delivered."""

from __future__ import annotations

import secrets
from datetime import timedelta

from kernel.clock import SystemClock
from kernel.queries import SpanStats, count_events, count_spans, events_for_key, span_stats, spans_for_key
from kernel.store import Store
from tests.factories import BASE_TIME, RECEIVED, event_row, make_event, span_row


def ids() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


def test_a_redelivered_event_counts_once(store: Store) -> None:
    accepted = make_event("order.accepted", n=1)
    released = make_event("order.released", n=1, time="2026-11-02T15:01:00.5Z")
    shipped = make_event("shipment.confirmed", n=1, time="2026-11-02T15:01:00.7Z")
    store.insert("business_events", [event_row(accepted), event_row(released), event_row(accepted)])
    # a later delivery of the same events, in another batch (another part until merged)
    store.insert("business_events", [event_row(released, RECEIVED + timedelta(minutes=5)), event_row(shipped)])
    # the duplicate inside one insert folds on insert; the one in another insert stays until a merge
    assert store.query("SELECT count() AS n FROM business_events") == [{"n": 4}]

    assert count_events(store) == 3
    assert count_events(store, type="order.released") == 1
    assert count_events(store, source="erp") == 2
    since, until = BASE_TIME + timedelta(minutes=1), BASE_TIME + timedelta(minutes=1, seconds=1)
    assert count_events(store, since=since, until=until) == 3  # make_event(n=1) is at BASE_TIME + 1 minute
    assert count_events(store, since=until) == 0
    assert count_events(store, until=since) == 0

    timeline = events_for_key(store, "SO-1")
    assert [e["type"] for e in timeline] == ["order.accepted", "order.released", "shipment.confirmed"]
    assert [e["id"] for e in timeline] == [accepted["id"], released["id"], shipped["id"]]
    assert timeline[0]["data"] == accepted["data"]
    assert [e["id"] for e in events_for_key(store, "SH-1")] == [shipped["id"]]
    assert events_for_key(store, "SO-2") == []
    assert events_for_key(store, "") == []


def test_events_of_a_key_are_ordered_by_time_whatever_the_arrival(store: Store) -> None:
    later = make_event("invoice.posted", n=7, time="2026-11-03T10:00:00-06:00")
    earlier = make_event("order.accepted", n=7, time="2026-11-03T09:00:00-06:00", subject="SO-7")
    store.insert("business_events", [event_row(later), event_row(earlier), event_row(later)])
    assert [e["id"] for e in events_for_key(store, "SO-7")] == [earlier["id"], later["id"]]
    assert [e["id"] for e in events_for_key(store, "IN-7")] == [later["id"]]
    assert events_for_key(store, "SO-7")[1]["time"] == "2026-11-03 16:00:00.000000"


def test_a_key_with_more_events_or_spans_than_the_limit_keeps_its_newest(store: Store) -> None:
    snapshots = [make_event("inventory.snapshot", n=i, data={"sku": "SKU-1", "location": "DAL"}) for i in range(5)]
    store.insert("business_events", [event_row(e) for e in reversed(snapshots)])
    kept = events_for_key(store, "SKU-1", limit=3)
    assert [e["id"] for e in kept] == [e["id"] for e in snapshots[2:]]  # the newest three, oldest first
    at = SystemClock().now().replace(microsecond=0)
    spans = [span_row(*ids(), at + timedelta(seconds=i), order_id="SO-11") for i in range(4)]
    store.insert("otel_traces", [*spans, spans[3]])
    assert [s["SpanId"] for s in spans_for_key(store, "SO-11", limit=2)] == [s["SpanId"] for s in spans[2:]]


def test_the_same_id_from_two_sources_is_two_events(store: Store) -> None:
    one = make_event("inventory.snapshot", n=3, id="snap-1", source="erp")
    other = make_event("inventory.snapshot", n=3, id="snap-1", source="wms")
    store.insert("business_events", [event_row(one), event_row(other), event_row(one)])
    assert count_events(store) == 2
    assert count_events(store, type="inventory.snapshot", source="wms") == 1


def test_a_redelivered_span_counts_once(store: Store) -> None:
    at = SystemClock().now().replace(microsecond=0)
    trace, first = ids()
    _, second = ids()
    _, other = ids()
    rows = [
        span_row(trace, first, at, order_id="SO-9"),
        span_row(trace, second, at + timedelta(seconds=1), service="erp", name="erp.invoice", invoice_id="IN-9"),
        span_row(*ids(), at, shipment_id="SH-9", status="Error"),
    ]
    store.insert("otel_traces", rows)
    store.insert("otel_traces", rows[:2])  # the exporter retried the first two
    store.insert("otel_traces", [span_row(trace, other, at + timedelta(seconds=2), order_id="SO-10")])
    assert store.query("SELECT count() AS n FROM otel_traces") == [{"n": 6}]

    assert count_spans(store) == 4
    assert count_spans(store, service="wms") == 3
    assert count_spans(store, service="erp") == 1
    assert count_spans(store, since=at + timedelta(seconds=1)) == 2
    assert count_spans(store, until=at + timedelta(seconds=1)) == 2
    assert count_spans(store, since=at, until=at + timedelta(microseconds=1)) == 2

    so9 = spans_for_key(store, "SO-9")
    assert [(s["TraceId"], s["SpanId"]) for s in so9] == [(trace, first)]
    assert so9[0]["SpanAttributes"] == {"order.id": "SO-9"}
    assert [s["SpanId"] for s in spans_for_key(store, "IN-9")] == [second]
    assert [s["StatusCode"] for s in spans_for_key(store, "SH-9")] == ["Error"]
    assert spans_for_key(store, "SO-404") == []
    assert spans_for_key(store, "") == []


def test_span_stats_count_each_span_once(store: Store) -> None:
    at = SystemClock().now()
    ok = [span_row(*ids(), at, service="edi", name="edi.asn") for _ in range(3)]
    failed = [span_row(*ids(), at, service="edi", name="edi.asn", status="Error") for _ in range(2)]
    store.insert("otel_traces", ok + failed)
    store.insert("otel_traces", failed)
    store.insert("otel_traces", [span_row(*ids(), at, service="tms", name="tms.track")])
    stats = span_stats(store, since=at - timedelta(minutes=15), until=at + timedelta(seconds=1))
    assert stats == [SpanStats("edi", "edi.asn", 5, 2), SpanStats("tms", "tms.track", 1, 0)]
    assert stats[0].error_rate == 0.4
    assert span_stats(store, since=at + timedelta(seconds=1)) == []
