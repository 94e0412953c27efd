"""Exporters from before OTLP 1.0 (2021): their scopes are `instrumentation_library_spans` / `_logs` (protobuf field
1000 of a resource, JSON `instrumentationLibrarySpans`), which the current schema no longer has. The doors read them as
scopes and store their records, and count them against the request's limit; before, the request was answered as a
success and nothing was stored."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from collector.otlp.convert import decode_logs, decode_traces
from kernel.store.embedded import EmbeddedStore
from tests.collector.test_otlp_helpers import event_log, logs_request, make_span, query, trace_request
from tests.support import RunningTower, start_in_process

PROTOBUF = {"content-type": "application/x-protobuf"}
JSON = {"content-type": "application/json"}
LEGACY_SCOPES = 1000  # the field number of a resource's InstrumentationLibrarySpans / Logs in OTLP 0.x


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return bytes(out + bytes([low]))
        out.append(low | 0x80)


def _field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def legacy_protobuf(request: ExportTraceServiceRequest | ExportLogsServiceRequest, keep: int = 0) -> bytes:
    """`request` as a pre-1.0 exporter encodes it: each resource's scopes (after the first `keep`) under field 1000,
    where InstrumentationLibrarySpans / InstrumentationLibraryLogs were (the same fields under the same numbers)."""
    spans = isinstance(request, ExportTraceServiceRequest)
    scope_field = "scope_spans" if spans else "scope_logs"
    body = b""
    for resource in getattr(request, "resource_spans" if spans else "resource_logs"):
        scopes = list(getattr(resource, scope_field))
        bare: Message = type(resource)()
        bare.CopyFrom(resource)
        bare.ClearField(scope_field)
        current = b"".join(_field(2, scope.SerializeToString()) for scope in scopes[:keep])
        old = b"".join(_field(LEGACY_SCOPES, scope.SerializeToString()) for scope in scopes[keep:])
        body += _field(1, bare.SerializeToString() + current + old)
    return body


def legacy_json(request: ExportTraceServiceRequest | ExportLogsServiceRequest) -> dict[str, Any]:
    """`request` as pre-1.0 OTLP JSON: `instrumentationLibrarySpans` with an `instrumentationLibrary`; log records
    under `logs` (their name before OTLP 0.15)."""
    spans = isinstance(request, ExportTraceServiceRequest)
    document = json_format.MessageToDict(request)
    for resource in document["resourceSpans" if spans else "resourceLogs"]:
        scopes = resource.pop("scopeSpans" if spans else "scopeLogs")
        for scope in scopes:
            scope["instrumentationLibrary"] = scope.pop("scope")
            if not spans:
                scope["logs"] = scope.pop("logRecords")
        resource["instrumentationLibrarySpans" if spans else "instrumentationLibraryLogs"] = scopes
    return document


def hex_ids(document: dict[str, Any]) -> bytes:
    """OTLP JSON writes ids as hex (ProtoJSON as base64)."""
    for resource in document.get("resourceSpans", []):
        for scope in resource["instrumentationLibrarySpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId"):
                    span[key] = base64.b64decode(span[key]).hex()
    return orjson.dumps(document)


def two_scopes() -> ExportTraceServiceRequest:
    request = trace_request(make_span("first"), make_span("second"))
    second = request.resource_spans[0].scope_spans.add()
    second.scope.name, second.scope.version = "old.library", "0.9"
    second.spans.append(make_span("third"))
    return request


def post(running: RunningTower, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    auth = {"authorization": f"Bearer {running.token('erp')}"}
    return httpx.post(running.http_url + path, content=body, headers={**auth, **headers}, timeout=30)


def stored_spans(running: RunningTower) -> list[tuple[str, str, str, str]]:
    rows = query(running, "SELECT SpanName, ScopeName, ScopeVersion, ServiceName FROM otel_traces ORDER BY SpanName")
    return [(r["SpanName"], r["ScopeName"], r["ScopeVersion"], r["ServiceName"]) for r in rows]


EXPECTED = [
    ("first", "tests", "1.0", "erp-adapter"),
    ("second", "tests", "1.0", "erp-adapter"),
    ("third", "old.library", "0.9", "erp-adapter"),
]


def test_the_decoders_read_legacy_scopes_as_the_current_ones() -> None:
    request = two_scopes()
    assert decode_traces(legacy_protobuf(request), "application/x-protobuf") == request
    assert decode_traces(legacy_protobuf(request, keep=1), "application/x-protobuf") == request  # both in one
    assert decode_traces(hex_ids(legacy_json(request)), "application/json") == request
    logs = logs_request(event_log("order.accepted", "a-1", {"order_id": "SO-1"}))
    assert decode_logs(legacy_protobuf(logs), "application/x-protobuf") == logs
    assert decode_logs(orjson.dumps(legacy_json(logs)), "application/json") == logs


def test_legacy_protobuf_spans_are_stored_through_the_http_door(tower: RunningTower) -> None:
    answer = post(tower, "/v1/traces", legacy_protobuf(two_scopes(), keep=1), PROTOBUF)
    assert answer.status_code == 200, answer.text
    assert ExportTraceServiceResponse.FromString(answer.content).partial_success.rejected_spans == 0
    assert stored_spans(tower) == EXPECTED


def test_legacy_json_spans_and_log_events_are_stored_through_the_http_door(tower: RunningTower) -> None:
    assert post(tower, "/v1/traces", hex_ids(legacy_json(two_scopes())), JSON).status_code == 200
    assert stored_spans(tower) == EXPECTED
    logs = logs_request(event_log("order.accepted", "acc-legacy", {"order_id": "SO-9", "customer_id": "C-9"}))
    assert post(tower, "/v1/logs", orjson.dumps(legacy_json(logs)), JSON).status_code == 200
    events = query(tower, "SELECT id, type, order_id FROM business_events FINAL")
    assert [(e["id"], e["type"], e["order_id"]) for e in events] == [("acc-legacy", "order.accepted", "SO-9")]


def test_legacy_spans_are_stored_through_the_grpc_door(tower: RunningTower) -> None:
    with grpc.insecure_channel(tower.grpc_target) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=lambda body: body,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        metadata = (("authorization", f"Bearer {tower.token('erp')}"),)
        answer = export(legacy_protobuf(two_scopes()), metadata=metadata, timeout=10)
    assert answer.partial_success.rejected_spans == 0
    assert stored_spans(tower) == EXPECTED


def test_legacy_records_count_against_the_limit_of_a_request(store: EmbeddedStore, tmp_path: Path) -> None:
    with start_in_process(tmp_path, store, max_records_per_request=2) as running:
        for body, headers in [
            (legacy_protobuf(two_scopes()), PROTOBUF),
            (legacy_protobuf(two_scopes(), keep=1), PROTOBUF),
            (hex_ids(legacy_json(two_scopes())), JSON),
        ]:
            answer = post(running, "/v1/traces", body, headers)
            assert answer.status_code == 413, answer.text
        assert stored_spans(running) == []
