"""OTLP requests to otel_traces / otel_logs rows and business events, stored in the real embedded store."""

from __future__ import annotations

import orjson
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.otlp.convert import (
    DecodeFailure,
    TooManyRecords,
    check_records,
    decode_logs,
    decode_traces,
    float_text,
    log_items,
    media_type,
    ns_text,
    otlp_json,
    trace_rows,
)
from kernel.settings import CollectorSettings
from kernel.store.embedded import EmbeddedStore
from tests.collector.test_otlp_helpers import START, event_log, kv, logs_request, make_log, make_span, trace_request

ALIASES = CollectorSettings().key_aliases


def test_span_row_mirrors_the_clickhouse_exporter(store: EmbeddedStore) -> None:
    trace_id, parent = bytes.fromhex("0af7651916cd43dd8448eb211c80319c"), bytes.fromhex("b7ad6b7169203331")
    span = make_span(
        "POST /orders",
        trace_id=trace_id,
        span_id=bytes.fromhex("00f067aa0ba902b7"),
        parent=parent,
        kind=Span.SPAN_KIND_CONSUMER,
        duration=1_234_567,
        status=Status.STATUS_CODE_ERROR,
        attrs={
            "erp.order.id": "SO-1",
            "shipment.id": "SH-9",
            "wms.shipment.id": "ignored-because-shipment.id-is-set",
            "retries": 3,
            "ok": True,
            "ratio": 100.0,
            "tags": ["a", 1],
            "nested": {"b": 2, "a": "x"},
            "blob": b"\x00\x01",
        },
    )
    span.status.message = "ERP said no"
    span.trace_state = "vendor=1"
    event = span.events.add(time_unix_nano=START + 10, name="validated")
    event.attributes.append(kv("lines", 4))
    link = span.links.add(trace_id=bytes(range(16)), span_id=bytes(range(1, 9)), trace_state="l=1")
    link.attributes.append(kv("why", "batch"))
    request = trace_request(span)
    request.resource_spans[0].resource.attributes.append(kv("tower.source", "spoofed"))

    rows, refusals = trace_rows(request, "erp", ALIASES)

    assert refusals == []
    (row,) = rows
    assert row["TraceId"] == "0af7651916cd43dd8448eb211c80319c"
    assert row["SpanId"] == "00f067aa0ba902b7"
    assert row["ParentSpanId"] == "b7ad6b7169203331"
    assert (row["SpanKind"], row["StatusCode"], row["StatusMessage"]) == ("Consumer", "Error", "ERP said no")
    assert (row["ServiceName"], row["ScopeName"], row["ScopeVersion"]) == ("erp-adapter", "tests", "1.0")
    assert row["ResourceAttributes"] == {"service.name": "erp-adapter", "tower.source": "erp"}
    assert row["Duration"] == 1_234_567
    attrs = row["SpanAttributes"]
    assert attrs["order.id"] == attrs["erp.order.id"] == "SO-1"
    assert attrs["shipment.id"] == "SH-9"
    assert (attrs["retries"], attrs["ok"], attrs["ratio"]) == ("3", "true", "100")
    assert orjson.loads(attrs["tags"]) == ["a", 1]
    assert attrs["nested"] == '{"a":"x","b":2}'
    assert attrs["blob"] == "AAE="

    store.insert("otel_traces", rows)
    (stored,) = store.query(
        "SELECT Timestamp, TraceId, ParentSpanId, TraceState, Duration, Events.Timestamp AS et, Events.Name AS en,"
        " Events.Attributes AS ea, Links.TraceId AS lt, Links.SpanId AS ls, Links.TraceState AS lts,"
        " Links.Attributes AS la, SpanAttributes['order.id'] AS order_id FROM otel_traces"
    )
    assert stored["Timestamp"] == "2026-11-02 15:00:00.000000000"
    assert stored["et"] == ["2026-11-02 15:00:00.000000010"]
    assert (stored["en"], stored["ea"]) == (["validated"], [{"lines": "4"}])
    assert stored["lt"] == [bytes(range(16)).hex()]
    assert (stored["ls"], stored["lts"], stored["la"]) == ([bytes(range(1, 9)).hex()], ["l=1"], [{"why": "batch"}])
    assert (stored["order_id"], stored["TraceState"], stored["Duration"]) == ("SO-1", "vendor=1", 1_234_567)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"trace_id": bytes(16)}, "trace_id must be 16 bytes and not all zero"),
        ({"trace_id": b"\x01\x02\x03\x04"}, "trace_id must be 16 bytes and not all zero, got 4 bytes (01020304)"),
        ({"span_id": b""}, "span_id must be 8 bytes and not all zero, got none"),
        ({"span_id": bytes(8)}, "span_id must be 8 bytes and not all zero"),
        ({"parent_span_id": b"\x01"}, "parent_span_id must be empty or 8 bytes, got 1 bytes (01)"),
        ({"end_time_unix_nano": START - 1}, "is before start_time_unix_nano"),
        ({"end_time_unix_nano": 2**63}, "is past 2262-04-11"),
    ],
)
def test_invalid_spans_are_refused_with_a_reason_and_replayable_json(change: dict[str, object], reason: str) -> None:
    good, bad = make_span("good"), make_span("bad")
    for field, value in change.items():
        setattr(bad, field, value)
    request = trace_request(good, bad)

    rows, refusals = trace_rows(request, "wms", ALIASES)

    assert [r["SpanName"] for r in rows] == ["good"]
    (refusal,) = refusals
    assert refusal.door == "otlp_traces" and refusal.source == "wms" and refusal.content_type == "application/json"
    assert refusal.reason.startswith("span 'bad' (resourceSpans[0].scopeSpans[0].spans[1]): ")
    assert reason in refusal.reason
    again = decode_traces(refusal.raw.encode(), "application/json")
    assert again == trace_request(bad), "the dead letter holds the span with its resource and scope"


def test_early_and_zero_timestamps_are_stored_exactly(store: EmbeddedStore) -> None:
    assert ns_text(0) == "1970-01-01 00:00:00.000000000"
    assert ns_text(START + 7) == "1793631600.000000007"
    spans = [make_span("epoch", start=0, duration=0), make_span("1972", start=63_072_000_000_000_123)]
    rows, _ = trace_rows(trace_request(*spans), "erp", ALIASES)
    store.insert("otel_traces", rows)
    stored = store.query("SELECT SpanName, toUnixTimestamp64Nano(Timestamp) AS ns FROM otel_traces ORDER BY ns")
    assert stored == [{"SpanName": "epoch", "ns": 0}, {"SpanName": "1972", "ns": 63_072_000_000_000_123}]


def test_json_and_protobuf_decode_to_the_same_request() -> None:
    span = make_span("same", parent=bytes.fromhex("b7ad6b7169203331"), attrs={"n": 2**40, "d": 0.5})
    span.links.add(trace_id=bytes(range(16)), span_id=bytes(range(8)))
    request = trace_request(span)
    text = otlp_json(request)
    document = orjson.loads(text)
    sent = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert sent["traceId"] == span.trace_id.hex() and sent["parentSpanId"] == "b7ad6b7169203331"
    assert sent["kind"] == 2, "OTLP JSON enums are integers"

    assert decode_traces(text.encode(), "application/json; charset=utf-8") == request
    assert decode_traces(request.SerializeToString(), "application/x-protobuf") == request


def test_json_quirks_are_accepted() -> None:
    tid, sid = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    body = {
        "resource_spans": [  # snake_case is accepted as well as lowerCamelCase
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "tms"}}]},
                "futureField": {"x": 1},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": tid,
                                "spanId": sid,
                                "name": "quirky",
                                "kind": "SPAN_KIND_CLIENT",
                                "startTimeUnixNano": str(START),
                                "endTimeUnixNano": START + 9,
                                "status": {"code": 2},
                                "attributes": [{"key": "n", "value": {"intValue": "42"}}],
                                "unknownThing": True,
                            }
                        ]
                    }
                ],
            }
        ]
    }
    request = decode_traces(orjson.dumps(body), "application/json")
    (row,), _ = trace_rows(request, "tms", ALIASES)
    assert (row["TraceId"], row["SpanId"], row["SpanKind"], row["StatusCode"]) == (tid, sid, "Client", "Error")
    assert (row["Duration"], row["SpanAttributes"], row["ServiceName"]) == (9, {"n": "42"}, "tms")


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}', "application/json", "is not hex"),
        (b"{nope", "application/json", "not valid JSON"),
        (b"[]", "application/json", "must be a JSON object"),
        (b'{"resourceSpans": 3}', "application/json", "not a valid OTLP JSON"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": {}}]}]}]}', "application/json", "OTLP JSON"),
        (b"\xff\xff\xff", "application/x-protobuf", "not a valid protobuf ExportTraceServiceRequest"),
    ],
)
def test_undecodable_bodies_raise_decode_failure(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(DecodeFailure, match=message):
        decode_traces(body, content_type)


def test_media_types() -> None:
    assert media_type("Application/JSON; charset=utf-8") == "application/json"
    assert media_type("application/x-protobuf") == "application/x-protobuf"
    assert media_type("application/protobuf") is None
    assert media_type(None) is None


def test_float_text_matches_the_collector() -> None:
    assert [float_text(v) for v in (100.0, 0.5, 1e-7, 1.5e-5, 1.5e17, 1e21, -2.25)] == [
        "100",
        "0.5",
        "1e-7",
        "0.000015",
        "150000000000000000",
        "1e+21",
        "-2.25",
    ]


def test_log_rows_and_business_events(store: EmbeddedStore) -> None:
    trace_id, span_id = bytes.fromhex("0af7651916cd43dd8448eb211c80319c"), bytes.fromhex("b7ad6b7169203331")
    plain = make_log(body="order SO-1 synced", attrs={"order.id": "SO-1"}, trace_id=bytes(16))
    kvlist = event_log(
        "order.accepted",
        "erp-1",
        {"order_id": "SO-1", "customer_id": "C-1", "amount": 12.5},
        **{"data.currency": "USD", "data.order_id": "loses-to-body", "cloudevents.event_subject": "SO-1"},
    )
    kvlist.trace_id, kvlist.span_id, kvlist.flags = trace_id, span_id, 1
    json_body = make_log(
        body='{"shipment_id": "SH-1", "order_id": "SO-1"}',
        attrs={"event.name": "asn.sent", "cloudevents.event_id": "edi-7", "cloudevents.event_source": "edi/x12"},
        time=0,
        observed=START + 1_000,
    )
    bad_json = make_log(body="{oops", event_name="order.released", attrs={"event.id": "e-3"})

    items = log_items(logs_request(plain, kvlist, json_body, bad_json), "erp")

    assert [i.event is None for i in items] == [True, False, False, False]
    assert items[1].event == {
        "specversion": "1.0",
        "type": "order.accepted",
        "source": "erp",
        "datacontenttype": "application/json",
        "id": "erp-1",
        "time": "2026-11-02T15:00:00.000000Z",
        "subject": "SO-1",
        "data": {"order_id": "SO-1", "customer_id": "C-1", "amount": 12.5, "currency": "USD"},
        "traceparent": f"00-{trace_id.hex()}-{span_id.hex()}-01",
    }
    second = items[2].event
    assert second is not None
    assert (second["type"], second["id"], second["source"]) == ("asn.sent", "edi-7", "edi/x12")
    assert second["time"] == "2026-11-02T15:00:00.000001Z", "observed time stands in for a missing time"
    assert second["data"] == {"shipment_id": "SH-1", "order_id": "SO-1"}
    assert items[3].problems == ["data: the log body looks like a JSON object but is not valid JSON"]

    row = items[0].row
    assert (row["TraceId"], row["SpanId"], row["Body"], row["SeverityText"], row["SeverityNumber"]) == (
        "",
        "",
        "order SO-1 synced",
        "INFO",
        9,
    )
    assert row["ResourceAttributes"]["tower.source"] == "erp" and row["ServiceName"] == "erp-adapter"
    assert items[1].row["EventName"] == "order.accepted" and items[1].row["TraceFlags"] == 1
    assert orjson.loads(items[1].row["Body"]) == {"amount": 12.5, "customer_id": "C-1", "order_id": "SO-1"}
    store.insert("otel_logs", [i.row for i in items])
    stored = store.query("SELECT EventName, TraceId, Timestamp FROM otel_logs ORDER BY Timestamp, EventName")
    assert {r["Timestamp"] for r in stored} == {"2026-11-02 15:00:00.000000000", "2026-11-02 15:00:00.000001000"}
    assert sorted(r["EventName"] for r in stored) == ["", "", "order.accepted", "order.released"]


def test_log_records_with_bad_ids_have_problems() -> None:
    record = make_log(trace_id=b"\x01\x02", span_id=b"\x03")
    (item,) = log_items(logs_request(record), "erp")
    assert item.problems == [
        "trace_id must be empty or 16 bytes, got 2 bytes (0102)",
        "span_id must be empty or 8 bytes, got 1 bytes (03)",
    ]
    assert decode_logs(b"{}", "application/json") == logs_request().__class__()


def test_otlp_json_starting_with_a_utf8_byte_order_mark_is_decoded() -> None:
    """Windows senders (PowerShell, .NET) start JSON text with a BOM: the body was refused 'BOM is not supported'."""
    logs = logs_request(event_log("order.released", "e-1", {"order_id": "SO-1"}))
    spans = trace_request(make_span("s"))
    assert decode_logs(b"\xef\xbb\xbf" + otlp_json(logs).encode(), "application/json") == logs
    assert decode_traces(b"\xef\xbb\xbf" + otlp_json(spans).encode(), "application/json") == spans


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    out, length = bytearray([number << 3 | 2]), len(payload)
    while length > 0x7F:
        out.append(length & 0x7F | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out) + payload


def test_records_are_counted_on_the_wire_before_decoding() -> None:
    """Decoding 16 million empty log records took 2 GB: the wire is walked first, at most the limit's worth."""
    spans = trace_request(*(make_span(f"s{n}") for n in range(4))).SerializeToString()
    check_records(spans, 4, "spans")
    with pytest.raises(TooManyRecords, match="more than 3 spans"):
        check_records(spans, 3, "spans")
    for resources in (1, 2):  # records of several resources and scopes add up
        request = logs_request(*(make_log(n) for n in range(2)))
        for _ in range(resources):
            request.resource_logs.append(logs_request(*(make_log(n) for n in range(2))).resource_logs[0])
        body = request.SerializeToString()
        check_records(body, 2 + 2 * resources, "log records")
        with pytest.raises(TooManyRecords):
            check_records(body, 1 + 2 * resources, "log records")
    with pytest.raises(TooManyRecords):  # 16 million empty records in 32 MB: refused within the limit's reading
        check_records(_field(1, _field(2, b"\x12\x00" * 16_000_000)), 50_000, "log records")
    with pytest.raises(TooManyRecords):  # fields that are not records count against a budget too
        check_records(_field(1, b"\x18\x01" * 10_000), 100, "spans")
    check_records(b"\xff\xff\xff garbage", 1, "spans")  # malformed: left to the decoder
    with pytest.raises(TooManyRecords, match="more than 1 log records"):
        decode_logs(otlp_json(logs_request(make_log(1), make_log(2))).encode(), "application/json", 1)
