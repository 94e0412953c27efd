"""Builders and checks shared by the OTLP tests (this module holds no tests itself)."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import orjson
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.support import RunningTower

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
START = 1_793_631_600_000_000_000  # 2026-11-02 15:00:00 UTC in ns


def new_trace_id() -> bytes:
    return secrets.token_bytes(16)


def new_span_id() -> bytes:
    return secrets.token_bytes(8)


def any_value(value: Any) -> AnyValue:
    """An AnyValue from a Python value."""
    out = AnyValue()
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, bytes):
        out.bytes_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, list):
        out.array_value.values.extend(any_value(v) for v in value)
    elif isinstance(value, dict):
        out.kvlist_value.values.extend(kv(k, v) for k, v in value.items())
    return out


def kv(key: str, value: Any) -> KeyValue:
    return KeyValue(key=key, value=any_value(value))


def make_span(
    name: str = "op",
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
    parent: bytes = b"",
    start: int = START,
    duration: int = 5_000_000,
    kind: int = Span.SPAN_KIND_SERVER,
    attrs: dict[str, Any] | None = None,
    status: int = Status.STATUS_CODE_UNSET,
) -> Span:
    """A span (random ids unless given)."""
    return Span(
        trace_id=new_trace_id() if trace_id is None else trace_id,
        span_id=new_span_id() if span_id is None else span_id,
        parent_span_id=parent,
        name=name,
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration,
        attributes=[kv(k, v) for k, v in (attrs or {}).items()],
        status=Status(code=status),  # type: ignore[arg-type]
    )


def trace_request(*spans: Span, service: str = "erp-adapter") -> ExportTraceServiceRequest:
    """One resource, one scope, these spans."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", service))
    ss = rs.scope_spans.add()
    ss.scope.name = "tests"
    ss.scope.version = "1.0"
    ss.spans.extend(spans)
    return request


def make_log(
    body: Any = None,
    event_name: str = "",
    attrs: dict[str, Any] | None = None,
    time: int = START,
    observed: int | None = None,
    trace_id: bytes = b"",
    span_id: bytes = b"",
) -> LogRecord:
    record = LogRecord(
        time_unix_nano=time,
        observed_time_unix_nano=time + 1_000 if observed is None else observed,
        severity_number=9,  # type: ignore[arg-type]
        severity_text="INFO",
        attributes=[kv(k, v) for k, v in (attrs or {}).items()],
        trace_id=trace_id,
        span_id=span_id,
        event_name=event_name,
    )
    if body is not None:
        record.body.CopyFrom(any_value(body))
    return record


def event_log(event_type: str, event_id: str, data: dict[str, Any], **attrs: Any) -> LogRecord:
    """A log record that is a business event (EventName set, id attribute, data in the body)."""
    return make_log(body=data, event_name=event_type, attrs={"event.id": event_id, **attrs})


def logs_request(*records: LogRecord, service: str = "erp-adapter") -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.append(kv("service.name", service))
    sl = rl.scope_logs.add()
    sl.scope.name = "tests"
    sl.log_records.extend(records)
    return request


def rpc_status(response: httpx.Response) -> Any:
    """The google.rpc.Status of an error answer, decoded per its content type."""
    status = status_pb2.Status()
    if response.headers["content-type"].startswith("application/x-protobuf"):
        status.ParseFromString(response.content)
    else:
        json_format.ParseDict(orjson.loads(response.content), status)
    return status


def query(running: RunningTower, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    assert running.tower is not None
    return running.tower.store.query(sql, params or {})


def letters(running: RunningTower, door: str) -> list[dict[str, Any]]:
    return query(
        running,
        "SELECT toString(id) AS id, door, source, reason, raw, content_type, status FROM dead_letters FINAL"
        " WHERE door = {door:String} ORDER BY received_at, raw",
        {"door": door},
    )


def assert_serving(running: RunningTower) -> None:
    """The server still answers and still stores a valid span."""
    assert httpx.get(running.http_url + "/healthz").status_code == 200
    span = make_span("still-serving")
    with running.client("erp") as http:
        response = http.post("/v1/traces", content=trace_request(span).SerializeToString(), headers=PROTOBUF)
    assert response.status_code == 200, response.text
    rows = query(running, "SELECT count() AS n FROM otel_traces WHERE SpanId = {s:String}", {"s": span.span_id.hex()})
    assert rows == [{"n": 1}]
