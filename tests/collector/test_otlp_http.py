"""OTLP/HTTP against a real tower: the OpenTelemetry SDK exporters, every bad input, partial success, replay."""

from __future__ import annotations

import base64
import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from google.rpc import code_pb2, error_details_pb2
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode

from collector.auth import TokenRegistry
from collector.otlp.convert import otlp_json
from collector.otlp.receiver import replay_traces
from kernel.settings import IngestSettings
from kernel.store.embedded import EmbeddedStore
from tests.collector.test_otlp_helpers import (
    JSON,
    PROTOBUF,
    START,
    assert_serving,
    event_log,
    letters,
    logs_request,
    make_log,
    make_span,
    query,
    rpc_status,
    trace_request,
)
from tests.support import RunningTower, start_in_process


def bearer(running: RunningTower, system: str = "erp") -> dict[str, str]:
    return {"authorization": f"Bearer {running.token(system)}"}


def post(running: RunningTower, path: str, body: bytes, headers: dict[str, str], system: str = "erp") -> httpx.Response:
    return httpx.post(running.http_url + path, content=body, headers={**bearer(running, system), **headers}, timeout=30)


@pytest.fixture
def small_tower(store: EmbeddedStore, tmp_path: Path) -> Iterator[RunningTower]:
    """A tower with small body limits (64 KiB as sent, 256 KiB inflated)."""
    with start_in_process(tmp_path, store, max_body_bytes=64 * 1024, max_decompressed_bytes=256 * 1024) as running:
        yield running


# --- the real OpenTelemetry SDK exporters -----------------------------------------------------


def sdk_spans() -> tuple[Any, ...]:
    """Spans made by the OpenTelemetry SDK: a server span with a child client span and a link."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "erp-adapter", "deployment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("erp.sync", "2.1")
    with tracer.start_as_current_span("other") as other:
        pass
    with tracer.start_as_current_span(
        "POST /orders",
        kind=SpanKind.SERVER,
        attributes={"erp.order.id": "SO-77", "customer_id": "C-9", "lines": 3, "ratio": 0.25, "tags": ["a", "b"]},
    ) as parent:
        parent.add_event("order.validated", {"lines": 3})
        with tracer.start_as_current_span(
            "call WMS", kind=SpanKind.CLIENT, links=[Link(other.get_span_context(), {"reason": "batch"})]
        ) as child:
            child.set_status(StatusCode.ERROR, "WMS timed out")
    provider.shutdown()
    return memory.get_finished_spans()


def test_sdk_http_span_exporter_with_gzip_stores_every_column(tower: RunningTower) -> None:
    spans = sdk_spans()
    exporter = OTLPSpanExporter(
        endpoint=tower.http_url + "/v1/traces", headers=bearer(tower), compression=Compression.Gzip, timeout=10
    )
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()  # type: ignore[no-untyped-call]

    other, child, parent = spans  # finished order: other, child, parent
    rows = {
        r["SpanName"]: r
        for r in query(
            tower,
            "SELECT *, toUnixTimestamp64Nano(Timestamp) AS start_ns FROM otel_traces WHERE TraceId IN"
            " {ids:Array(String)}",
            {"ids": [format(other.context.trace_id, "032x"), format(parent.context.trace_id, "032x")]},
        )
    }
    assert set(rows) == {"other", "POST /orders", "call WMS"}
    p, c = rows["POST /orders"], rows["call WMS"]
    assert p["TraceId"] == format(parent.context.trace_id, "032x") == c["TraceId"]
    assert p["SpanId"] == format(parent.context.span_id, "016x")
    assert c["ParentSpanId"] == p["SpanId"] and p["ParentSpanId"] == ""
    assert (p["SpanKind"], c["SpanKind"], rows["other"]["SpanKind"]) == ("Server", "Client", "Internal")
    assert (p["StatusCode"], c["StatusCode"], c["StatusMessage"]) == ("Unset", "Error", "WMS timed out")
    assert p["Duration"] == parent.end_time - parent.start_time and p["start_ns"] == parent.start_time
    assert (p["ServiceName"], p["ScopeName"], p["ScopeVersion"]) == ("erp-adapter", "erp.sync", "2.1")
    assert p["ResourceAttributes"]["tower.source"] == "erp" and p["ResourceAttributes"]["deployment"] == "test"
    attrs = p["SpanAttributes"]
    assert (attrs["erp.order.id"], attrs["order.id"], attrs["customer.id"]) == ("SO-77", "SO-77", "C-9")
    assert (attrs["lines"], attrs["ratio"], attrs["tags"]) == ("3", "0.25", '["a","b"]')
    assert p["Events.Name"] == ["order.validated"] and p["Events.Attributes"] == [{"lines": "3"}]
    assert c["Links.TraceId"] == [format(other.context.trace_id, "032x")]
    assert c["Links.SpanId"] == [format(other.context.span_id, "016x")]
    assert c["Links.Attributes"] == [{"reason": "batch"}]


def test_sdk_http_log_exporter_stores_logs_and_business_events(tower: RunningTower) -> None:
    memory = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider(resource=Resource.create({"service.name": "erp-adapter"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("erp.events")
    logger.emit(body="nightly sync started", severity_number=SeverityNumber.INFO, severity_text="INFO")
    logger.emit(
        event_name="order.accepted",
        timestamp=START,
        body={"order_id": "SO-5", "customer_id": "C-5", "amount": 99.5, "currency": "EUR", "warehouse": "DAL"},
        attributes={"event.id": "erp-acc-5", "cloudevents.event_subject": "SO-5"},
    )
    logger.emit(
        timestamp=START + 1_000_000_000,
        body={"order_id": "SO-5"},
        attributes={"event.name": "order.released", "cloudevents.event_id": "erp-rel-5", "data.warehouse": "DAL"},
    )
    provider.shutdown()
    exporter = OTLPLogExporter(endpoint=tower.http_url + "/v1/logs", headers=bearer(tower), timeout=10)
    assert exporter.export(memory.get_finished_logs()) == LogRecordExportResult.SUCCESS
    exporter.shutdown()  # type: ignore[no-untyped-call]

    logs = query(tower, "SELECT EventName, Body, SeverityText, ServiceName, ResourceAttributes FROM otel_logs")
    assert sorted(r["EventName"] for r in logs) == ["", "", "order.accepted"]
    assert {r["ServiceName"] for r in logs} == {"erp-adapter"}
    assert all(r["ResourceAttributes"]["tower.source"] == "erp" for r in logs)
    events = query(tower, "SELECT * FROM business_events FINAL ORDER BY time")
    assert [(e["id"], e["type"], e["source"], e["door"]) for e in events] == [
        ("erp-acc-5", "order.accepted", "erp", "otlp_logs"),
        ("erp-rel-5", "order.released", "erp", "otlp_logs"),
    ]
    accepted, released = events
    assert (accepted["time"], accepted["subject"], accepted["order_id"]) == (
        "2026-11-02 15:00:00.000000",
        "SO-5",
        "SO-5",
    )
    assert (accepted["amount"], accepted["currency"], accepted["warehouse"]) == (99.5, "EUR", "DAL")
    assert (released["subject"], released["warehouse"]) == ("SO-5", "DAL")


# --- partial success --------------------------------------------------------------------------


def test_bad_trace_ids_are_rejected_and_dead_lettered_while_valid_spans_are_stored(tower: RunningTower) -> None:
    good = make_span("good")
    zero = make_span("zero-trace", trace_id=bytes(16))
    short = make_span("short-span", span_id=b"\x01\x02")
    response = post(tower, "/v1/traces", trace_request(good, zero, short).SerializeToString(), PROTOBUF)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 2
    message = answer.partial_success.error_message
    assert message.startswith("2 of 3 spans rejected")
    assert "'zero-trace'" in message and "trace_id must be 16 bytes and not all zero" in message
    assert "'short-span'" in message and "span_id must be 8 bytes" in message
    assert [r["SpanName"] for r in query(tower, "SELECT SpanName FROM otel_traces")] == ["good"]
    dead = letters(tower, "otlp_traces")
    assert [(d["source"], d["status"], d["content_type"]) for d in dead] == [("erp", "pending", "application/json")] * 2
    assert sorted(orjson.loads(d["raw"])["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"] for d in dead) == [
        "short-span",
        "zero-trace",
    ]
    assert_serving(tower)


def test_invalid_log_events_are_rejected_whole_and_counted_once(tower: RunningTower) -> None:
    valid = event_log("order.released", "rel-1", {"order_id": "SO-1", "warehouse": "DAL"})
    no_id = make_log(body={"order_id": "SO-2"}, event_name="order.released")
    foreign = event_log(
        "shipment.confirmed", "wms-1", {"order_id": "SO-1", "shipment_id": "SH-1"}, **{"event.source": "wms"}
    )
    plain = make_log(body="hello")
    response = post(tower, "/v1/logs", otlp_json(logs_request(valid, no_id, foreign, plain)).encode(), JSON)

    assert response.status_code == 200, response.text
    answer = response.json()["partialSuccess"]
    assert int(answer["rejectedLogRecords"]) == 2
    assert (
        "log record resourceLogs[0].scopeLogs[0].logRecords[1] (event 'order.released'): id: required"
        in (answer["errorMessage"])
    )
    assert "cloudevents.event_id or event.id" in answer["errorMessage"]
    assert "source: 'wms' is not allowed for this token" in answer["errorMessage"]
    assert sorted(r["Body"] for r in query(tower, "SELECT Body FROM otel_logs")) == [
        "hello",
        '{"order_id":"SO-1","warehouse":"DAL"}',
    ]
    assert [e["id"] for e in query(tower, "SELECT id FROM business_events FINAL")] == ["rel-1"]
    dead = letters(tower, "otlp_logs")
    assert sorted(d["source"] for d in dead) == ["erp", "wms"]


def test_a_log_event_reusing_an_id_of_the_request_is_rejected_whole_with_a_replayable_letter(
    tower: RunningTower,
) -> None:
    plain = make_log(body="sync started")
    first = event_log("order.released", "rel-7", {"order_id": "SO-7", "warehouse": "DAL"})
    again = event_log("order.released", "rel-7", {"order_id": "SO-7", "warehouse": "DAL"})  # the same event
    other = event_log("order.released", "rel-7", {"order_id": "SO-7", "warehouse": "HOU"})  # another, same id
    response = post(tower, "/v1/logs", logs_request(plain, first, again, other).SerializeToString(), PROTOBUF)

    assert response.status_code == 200, response.text
    answer = ExportLogsServiceResponse.FromString(response.content).partial_success
    assert answer.rejected_log_records == 1
    assert (
        "logRecords[3] (event 'order.released'): id: 'rel-7' is also the id of log record"
        " resourceLogs[0].scopeLogs[0].logRecords[1] of this request, a different event" in answer.error_message
    )
    bodies = sorted(r["Body"] for r in query(tower, "SELECT Body FROM otel_logs"))
    assert bodies == ["sync started"] + ['{"order_id":"SO-7","warehouse":"DAL"}'] * 2, "the rejected row is not kept"
    assert query(tower, "SELECT warehouse FROM business_events FINAL") == [{"warehouse": "DAL"}]
    (dead,) = letters(tower, "otlp_logs")
    record = orjson.loads(dead["raw"])["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert [r["body"] for r in record] == [
        {
            "kvlistValue": {
                "values": [
                    {"key": "order_id", "value": {"stringValue": "SO-7"}},
                    {"key": "warehouse", "value": {"stringValue": "HOU"}},
                ]
            }
        }
    ], "the letter holds the refused record, to replay"


# --- replay -----------------------------------------------------------------------------------


def test_replay_stores_a_refused_log_event_once_after_the_token_is_fixed(tower: RunningTower) -> None:
    assert tower.tower is not None
    ingest = tower.tower.ingest
    event = event_log(
        "shipment.confirmed", "wms-9", {"order_id": "SO-9", "shipment_id": "SH-9"}, **{"event.source": "wms"}
    )
    bad_span = make_span("never-valid", trace_id=bytes(16))
    assert post(tower, "/v1/logs", logs_request(event).SerializeToString(), PROTOBUF).status_code == 200
    assert post(tower, "/v1/traces", trace_request(bad_span).SerializeToString(), PROTOBUF).status_code == 200
    assert query(tower, "SELECT count() AS n FROM otel_logs") == [{"n": 0}]

    report = ingest.replay(door="otlp_logs")
    assert report.replayed == 0 and "is not allowed for this token" in report.still_failing[0]["errors"][0]

    # The fix: the erp integration's token may now also send for the WMS.
    tokens = dict(tower.settings.ingest.tokens)
    tokens[tower.token("erp")] = ["erp", "wms"]
    ingest.tokens = TokenRegistry(IngestSettings(tokens=tokens))
    report = ingest.replay()
    assert report.replayed == 1
    (failing,) = report.still_failing
    assert "trace_id must be 16 bytes and not all zero" in failing["errors"][0]

    assert ingest.replay(door="otlp_logs").replayed == 0, "a replayed dead letter is not replayed again"
    events = query(tower, "SELECT id, source, shipment_id, door FROM business_events FINAL")
    assert events == [{"id": "wms-9", "source": "wms", "shipment_id": "SH-9", "door": "otlp_logs"}]
    assert query(tower, "SELECT EventName, count() AS n FROM otel_logs GROUP BY EventName") == [
        {"EventName": "shipment.confirmed", "n": 1}
    ]
    statuses = {d["status"] for d in letters(tower, "otlp_logs")}
    assert statuses == {"replayed"}


# --- bad input: status code, a readable google.rpc.Status, and the server keeps serving -------


def valid_traces() -> bytes:
    return trace_request(make_span("a"), make_span("b")).SerializeToString()


def gzip_bomb() -> bytes:
    """200 MiB of zeros, gzipped to about 200 KiB (built in 1 MiB steps to keep memory low)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    return b"".join(deflate.compress(zeros) for _ in range(200)) + deflate.flush()


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code", "message"),
    [
        ("/v1/traces", valid_traces()[:-7], PROTOBUF, 400, code_pb2.INVALID_ARGUMENT, "not a valid protobuf"),
        ("/v1/logs", b"not a protobuf at all", PROTOBUF, 400, code_pb2.INVALID_ARGUMENT, "ExportLogsServiceRequest"),
        ("/v1/traces", b'{"resourceSpans": [', JSON, 400, code_pb2.INVALID_ARGUMENT, "not valid JSON"),
        (
            "/v1/traces",
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"not-hex"}]}]}]}',
            JSON,
            400,
            code_pb2.INVALID_ARGUMENT,
            "resourceSpans[0].scopeSpans[0].spans[0].traceId: 'not-hex' is not hex",
        ),
        ("/v1/traces", b"{}", {"Content-Type": "text/plain"}, 415, code_pb2.INVALID_ARGUMENT, "is not supported"),
        (
            "/v1/traces",
            b"\x1f\x8b\x08\x00garbage-after-the-gzip-magic",
            {**PROTOBUF, "Content-Encoding": "gzip"},
            400,
            code_pb2.INVALID_ARGUMENT,
            "not valid gzip",
        ),
        (
            "/v1/traces",
            "gzip-bomb",
            {**PROTOBUF, "Content-Encoding": "gzip"},
            413,
            code_pb2.RESOURCE_EXHAUSTED,
            "inflates past the limit",
        ),
        ("/v1/traces", valid_traces(), {**PROTOBUF, "Content-Encoding": "br"}, 415, code_pb2.INVALID_ARGUMENT, "br"),
    ],
    ids=[
        "truncated-protobuf",
        "garbage-protobuf",
        "invalid-json",
        "non-hex-id",
        "wrong-type",
        "corrupt-gzip",
        "gzip-bomb",
        "brotli",
    ],
)
def test_bad_input_is_refused_with_a_status_and_the_server_keeps_serving(
    tower: RunningTower, path: str, body: bytes | str, headers: dict[str, str], status: int, code: int, message: str
) -> None:
    response = post(tower, path, gzip_bomb() if isinstance(body, str) else body, headers)

    assert response.status_code == status, response.text
    expected_type = (
        "application/x-protobuf" if headers.get("Content-Type") == PROTOBUF["Content-Type"] else "application/json"
    )
    assert response.headers["content-type"] == expected_type
    rpc = rpc_status(response)
    assert rpc.code == code
    assert message in rpc.message
    assert query(tower, "SELECT count() AS n FROM otel_traces") == [{"n": 0}]
    dead = letters(tower, "otlp_logs" if path == "/v1/logs" else "otlp_traces")
    if status == 400:  # undecodable: the body is dead-lettered whole, so a sender refused this way is seen
        (letter,) = dead
        assert letter["reason"].startswith("the request body cannot be decoded: ") and message in letter["reason"]
        as_sent = gzip_bomb() if isinstance(body, str) else body
        if letter["content_type"] == "application/json":
            assert letter["raw"].encode() == as_sent
        else:
            assert letter["content_type"].endswith("; base64") and base64.b64decode(letter["raw"]) == as_sent
    else:  # a size limit or a format the door does not take: refused with a status, nothing kept
        assert dead == []
    assert_serving(tower)


def test_a_dead_lettered_protobuf_body_replays_through_its_door(tower: RunningTower) -> None:
    assert tower.tower is not None
    grant = tower.tower.ingest.tokens.authenticate(f"Bearer {tower.token('erp')}")
    assert grant is not None
    settings = tower.settings.collector
    body = base64.b64encode(valid_traces()).decode()
    answer = replay_traces(settings, body, grant, "application/x-protobuf; base64")
    assert answer.problems == [] and len(answer.tables["otel_traces"]) == 2
    answer = replay_traces(settings, base64.b64encode(b"junk").decode(), grant, "application/x-protobuf; base64")
    assert answer.tables == {} and "not a valid protobuf" in answer.problems[0]


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token-0123456789", "Basic abc"])
def test_without_a_valid_token_the_answer_is_401(tower: RunningTower, authorization: str | None) -> None:
    headers = {**PROTOBUF, **({"authorization": authorization} if authorization else {})}
    response = httpx.post(tower.http_url + "/v1/traces", content=valid_traces(), headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    rpc = rpc_status(response)
    assert rpc.code == code_pb2.UNAUTHENTICATED and "ingest token is required" in rpc.message
    assert query(tower, "SELECT count() AS n FROM otel_traces") == [{"n": 0}]
    assert_serving(tower)


def test_oversize_bodies_are_refused_with_413(small_tower: RunningTower) -> None:
    big = trace_request(*(make_span("x" * 100, attrs={"pad": "y" * 200}) for _ in range(300))).SerializeToString()
    assert len(big) > 64 * 1024

    declared = post(small_tower, "/v1/traces", big, PROTOBUF)
    assert declared.status_code == 413
    assert "over the limit of 65536" in rpc_status(declared).message

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while streaming
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    streamed = httpx.post(
        small_tower.http_url + "/v1/traces", content=chunks(), headers={**bearer(small_tower), **JSON}, timeout=30
    )
    assert streamed.status_code == 413
    assert streamed.headers["content-type"] == "application/json"
    assert rpc_status(streamed).code == code_pb2.RESOURCE_EXHAUSTED

    inflated = post(
        small_tower, "/v1/traces", gzip.compress(b"{}" + b" " * 300 * 1024), {**JSON, "Content-Encoding": "gzip"}
    )
    assert inflated.status_code == 413 and "inflates past the limit of 262144" in rpc_status(inflated).message
    assert_serving(small_tower)


def test_a_request_of_more_records_than_allowed_is_refused_whole_with_413(store: EmbeddedStore, tmp_path: Path) -> None:
    """100,000 empty log records in a 240-byte gzip body were 100,000 otel_logs rows and 300 MB: past
    TOWER_COLLECTOR_MAX_RECORDS_PER_REQUEST, counted before decoding, the request is one 413 and one dead
    letter (protobuf as base64); at the limit it is read as before."""
    with start_in_process(tmp_path, store, max_records_per_request=5) as running:
        spans = trace_request(*(make_span(f"s{n}") for n in range(6))).SerializeToString()
        logs = otlp_json(logs_request(*(make_log(f"l{n}") for n in range(6)))).encode()
        gzipped = {"Content-Encoding": "gzip"}
        refused = [
            post(running, "/v1/traces", gzip.compress(spans), {**PROTOBUF, **gzipped}),
            post(running, "/v1/logs", logs, JSON),
        ]
        assert [r.status_code for r in refused] == [413, 413]
        messages = [rpc_status(r).message for r in refused]
        assert all(rpc_status(r).code == code_pb2.RESOURCE_EXHAUSTED for r in refused)
        assert "more than 5 spans" in messages[0] and "more than 5 log records" in messages[1]
        assert all("TOWER_COLLECTOR_MAX_RECORDS_PER_REQUEST" in m for m in messages)
        (traces_letter,) = letters(running, "otlp_traces")
        (logs_letter,) = letters(running, "otlp_logs")
        assert base64.b64decode(traces_letter["raw"]) == spans and traces_letter["reason"] == messages[0]
        assert logs_letter["raw"] == logs.decode() and logs_letter["reason"] == messages[1]
        assert query(running, "SELECT count() AS n FROM otel_traces") == [{"n": 0}]
        assert query(running, "SELECT count() AS n FROM otel_logs") == [{"n": 0}]
        # replayed under the same limit, the letter still fails with the reason
        assert running.tower is not None
        grant = running.tower.ingest.tokens.authenticate(f"Bearer {running.token('erp')}")
        assert grant is not None
        again = replay_traces(running.settings.collector, traces_letter["raw"], grant, traces_letter["content_type"])
        assert again.problems == [messages[0]]

        five = trace_request(*(make_span(f"s{n}") for n in range(5))).SerializeToString()
        assert post(running, "/v1/traces", five, PROTOBUF).status_code == 200
        assert query(running, "SELECT count() AS n FROM otel_traces") == [{"n": 5}]
        assert_serving(running)


def test_json_quirks_are_accepted(tower: RunningTower) -> None:
    trace_id, span_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "tms-bridge"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "bridge", "someNewField": 1},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": "int64-as-string",
                                "kind": 3,
                                "startTimeUnixNano": str(START),
                                "endTimeUnixNano": str(START + 2_000),
                                "attributes": [{"key": "shipment_id", "value": {"intValue": "12345678901"}}],
                                "status": {"code": "STATUS_CODE_OK"},
                                "notInTheSpec": {"x": [1, 2]},
                            },
                            {
                                "trace_id": trace_id,
                                "span_id": "eee19b7ec3c1b175",
                                "parent_span_id": span_id,
                                "name": "int64-as-number",
                                "kind": "SPAN_KIND_PRODUCER",
                                "start_time_unix_nano": START,
                                "end_time_unix_nano": START + 3_000,
                                "status": {"code": 2},
                            },
                        ],
                    }
                ],
            }
        ]
    }
    response = post(tower, "/v1/traces", orjson.dumps(body), {"Content-Type": "application/json; charset=utf-8"})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json" and response.json() == {}
    rows = query(
        tower,
        "SELECT SpanName, SpanId, ParentSpanId, SpanKind, StatusCode, Duration, ServiceName, ScopeName,"
        " SpanAttributes FROM otel_traces WHERE TraceId = {t:String} ORDER BY SpanName",
        {"t": trace_id},
    )
    assert rows == [
        {
            "SpanName": "int64-as-number",
            "SpanId": "eee19b7ec3c1b175",
            "ParentSpanId": span_id,
            "SpanKind": "Producer",
            "StatusCode": "Error",
            "Duration": 3_000,
            "ServiceName": "tms-bridge",
            "ScopeName": "bridge",
            "SpanAttributes": {},
        },
        {
            "SpanName": "int64-as-string",
            "SpanId": span_id,
            "ParentSpanId": "",
            "SpanKind": "Client",
            "StatusCode": "Ok",
            "Duration": 2_000,
            "ServiceName": "tms-bridge",
            "ScopeName": "bridge",
            "SpanAttributes": {"shipment_id": "12345678901", "shipment.id": "12345678901"},
        },
    ]


def test_overloaded_answers_503_with_retry_after(tower: RunningTower) -> None:
    assert tower.tower is not None
    pipeline = tower.tower.pipeline
    pipeline.stop()  # a stopped pipeline refuses submits with Overloaded
    try:
        response = post(tower, "/v1/logs", logs_request(make_log(body="x")).SerializeToString(), PROTOBUF)
    finally:
        pipeline.start()

    assert response.status_code == 503
    assert response.headers["retry-after"] == str(tower.settings.collector.retry_after_seconds)
    rpc = rpc_status(response)
    assert rpc.code == code_pb2.UNAVAILABLE and "overloaded" in rpc.message
    retry = error_details_pb2.RetryInfo()
    assert rpc.details[0].Unpack(retry) and retry.retry_delay.seconds == tower.settings.collector.retry_after_seconds
    assert_serving(tower)
