"""OTLP/gRPC against a real tower: the OpenTelemetry SDK exporters, authentication, bad input, partial success."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from kernel.store.embedded import EmbeddedStore
from tests.collector.test_otlp_helpers import (
    START,
    assert_serving,
    event_log,
    letters,
    logs_request,
    make_log,
    make_span,
    query,
    trace_request,
)
from tests.support import RunningTower, start_in_process


def metadata(running: RunningTower, system: str = "erp") -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {running.token(system)}"),)


def traces(channel: grpc.Channel) -> Any:
    return TraceServiceStub(channel)  # type: ignore[no-untyped-call]


def logs_stub(channel: grpc.Channel) -> Any:
    return LogsServiceStub(channel)  # type: ignore[no-untyped-call]


@pytest.fixture
def channel(tower: RunningTower) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(tower.grpc_target) as open_channel:
        yield open_channel


def test_sdk_grpc_span_exporter_with_gzip(tower: RunningTower) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "wms-bridge"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("wms.pick")
    with tracer.start_as_current_span("pick", kind=SpanKind.PRODUCER, attributes={"wms.shipment.id": "SH-3"}) as span:
        span.add_event("picked")
    provider.shutdown()
    exporter = OTLPSpanExporter(
        endpoint=tower.grpc_target,
        insecure=True,
        headers={"authorization": f"Bearer {tower.token('wms')}"},
        compression=grpc.Compression.Gzip,
        timeout=10,
    )
    assert exporter.export(memory.get_finished_spans()) == SpanExportResult.SUCCESS
    exporter.shutdown()

    (row,) = query(tower, "SELECT * FROM otel_traces")
    context = span.get_span_context()
    assert (row["TraceId"], row["SpanId"]) == (format(context.trace_id, "032x"), format(context.span_id, "016x"))
    assert (row["SpanName"], row["SpanKind"], row["ServiceName"], row["ScopeName"]) == (
        "pick",
        "Producer",
        "wms-bridge",
        "wms.pick",
    )
    assert row["SpanAttributes"] == {"wms.shipment.id": "SH-3", "shipment.id": "SH-3"}
    assert row["ResourceAttributes"]["tower.source"] == "wms"
    assert row["Events.Name"] == ["picked"]


def test_sdk_grpc_log_exporter_stores_business_events(tower: RunningTower) -> None:
    memory = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider(resource=Resource.create({"service.name": "tms-bridge"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    provider.get_logger("tms").emit(
        event_name="shipment.delivered",
        timestamp=START,
        body={"shipment_id": "SH-4", "order_id": "SO-4"},
        attributes={"cloudevents.event_id": "tms-del-4"},
    )
    provider.shutdown()
    exporter = OTLPLogExporter(
        endpoint=tower.grpc_target,
        insecure=True,
        headers={"authorization": f"Bearer {tower.token('tms')}"},
        compression=grpc.Compression.Gzip,
        timeout=10,
    )
    assert exporter.export(memory.get_finished_logs()) == LogRecordExportResult.SUCCESS
    exporter.shutdown()

    events = query(tower, "SELECT id, source, type, shipment_id, door FROM business_events FINAL")
    assert events == [
        {"id": "tms-del-4", "source": "tms", "type": "shipment.delivered", "shipment_id": "SH-4", "door": "otlp_logs"}
    ]
    assert query(tower, "SELECT EventName, ServiceName FROM otel_logs") == [
        {"EventName": "shipment.delivered", "ServiceName": "tms-bridge"}
    ]


@pytest.mark.parametrize("auth", [(), (("authorization", "Bearer not-a-known-token-123"),)])
def test_without_a_valid_token_the_call_is_unauthenticated(
    tower: RunningTower, channel: grpc.Channel, auth: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        traces(channel).Export(trace_request(make_span()), metadata=auth, timeout=10)
    rpc: Any = error.value
    assert rpc.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "ingest token is required" in rpc.details()
    assert query(tower, "SELECT count() AS n FROM otel_traces") == [{"n": 0}]
    assert_serving(tower)


def test_bad_ids_are_a_partial_success(tower: RunningTower, channel: grpc.Channel) -> None:
    good = make_span("good")
    bad = make_span("bad-parent", parent=b"\x01\x02\x03")
    response = traces(channel).Export(trace_request(good, bad), metadata=metadata(tower), timeout=10)

    assert isinstance(response, ExportTraceServiceResponse)
    assert response.partial_success.rejected_spans == 1
    assert "'bad-parent'" in response.partial_success.error_message
    assert "parent_span_id must be empty or 8 bytes" in response.partial_success.error_message
    assert [r["SpanName"] for r in query(tower, "SELECT SpanName FROM otel_traces")] == ["good"]
    assert len(letters(tower, "otlp_traces")) == 1

    logs = logs_stub(channel).Export(
        logs_request(make_log(body="ok"), make_log(body="bad", trace_id=b"\x01")), metadata=metadata(tower), timeout=10
    )
    assert isinstance(logs, ExportLogsServiceResponse)
    assert logs.partial_success.rejected_log_records == 1
    assert "trace_id must be empty or 16 bytes" in logs.partial_success.error_message
    assert [r["Body"] for r in query(tower, "SELECT Body FROM otel_logs")] == ["ok"]


def test_an_undecodable_message_is_invalid_argument(tower: RunningTower, channel: grpc.Channel) -> None:
    export = channel.unary_unary(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    with pytest.raises(grpc.RpcError) as error:
        export(b"\xff\xff\xff garbage", metadata=metadata(tower), timeout=10)
    rpc: Any = error.value
    assert rpc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ExportTraceServiceRequest" in rpc.details()
    (letter,) = letters(tower, "otlp_traces")  # kept whole, as the sender's refused traffic
    assert letter["content_type"] == "application/x-protobuf; base64" and letter["source"] == ""
    assert base64.b64decode(letter["raw"]) == b"\xff\xff\xff garbage" and rpc.details() in letter["reason"]
    assert_serving(tower)


def test_overloaded_is_unavailable_with_retry_info(tower: RunningTower, channel: grpc.Channel) -> None:
    assert tower.tower is not None
    pipeline = tower.tower.pipeline
    pipeline.stop()
    try:
        with pytest.raises(grpc.RpcError) as error:
            logs_stub(channel).Export(logs_request(event_log("x", "1", {})), metadata=metadata(tower), timeout=10)
    finally:
        pipeline.start()
    rpc: Any = error.value
    assert rpc.code() == grpc.StatusCode.UNAVAILABLE
    trailers = dict(rpc.trailing_metadata())
    retry = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    assert retry.retry_delay.seconds == tower.settings.collector.retry_after_seconds
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0] and "overloaded" in status.message
    unpacked = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(unpacked) and unpacked == retry
    assert_serving(tower)


def test_a_message_over_the_limit_is_resource_exhausted(store: EmbeddedStore, tmp_path: Path) -> None:
    with start_in_process(tmp_path, store, max_decompressed_bytes=64 * 1024) as running:
        big = trace_request(*(make_span("x", attrs={"pad": "y" * 1000}) for _ in range(100)))
        with grpc.insecure_channel(running.grpc_target) as open_channel, pytest.raises(grpc.RpcError) as error:
            traces(open_channel).Export(big, metadata=metadata(running), timeout=10)
        rpc: Any = error.value
        assert rpc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert_serving(running)


def test_a_message_of_more_records_than_allowed_is_resource_exhausted_and_kept_whole(
    store: EmbeddedStore, tmp_path: Path
) -> None:
    with start_in_process(tmp_path, store, max_records_per_request=5) as running:
        many = logs_request(*(make_log(f"l{n}") for n in range(6)))
        with grpc.insecure_channel(running.grpc_target) as open_channel:
            with pytest.raises(grpc.RpcError) as error:
                logs_stub(open_channel).Export(many, metadata=metadata(running), timeout=10)
            rpc: Any = error.value
            assert rpc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "more than 5 log records" in rpc.details()
            assert "TOWER_COLLECTOR_MAX_RECORDS_PER_REQUEST" in rpc.details()
            (letter,) = letters(running, "otlp_logs")
            assert base64.b64decode(letter["raw"]) == many.SerializeToString()
            assert letter["reason"] == rpc.details()
            assert query(running, "SELECT count() AS n FROM otel_logs") == [{"n": 0}]
            five = logs_request(*(make_log(f"l{n}") for n in range(5)))
            answer = logs_stub(open_channel).Export(five, metadata=metadata(running), timeout=10)
            assert answer.partial_success.rejected_log_records == 0
            assert query(running, "SELECT count() AS n FROM otel_logs") == [{"n": 5}]
        assert_serving(running)


def test_calls_are_counted_by_method_and_code(tower: RunningTower, channel: grpc.Channel) -> None:
    assert tower.tower is not None
    metrics = tower.tower.metrics

    def count(method: str, code: str) -> float:
        return metrics.registry.get_sample_value("tower_grpc_requests_total", {"method": method, "code": code}) or 0.0

    before_ok, before_denied = count("TraceService/Export", "OK"), count("TraceService/Export", "UNAUTHENTICATED")
    traces(channel).Export(trace_request(make_span()), metadata=metadata(tower), timeout=10)
    with pytest.raises(grpc.RpcError):
        traces(channel).Export(trace_request(make_span()), timeout=10)  # no token
    with pytest.raises(grpc.RpcError):  # a method the tower does not serve: no series for it
        channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")(b"", timeout=10)
    assert count("TraceService/Export", "OK") - before_ok == 1
    assert count("TraceService/Export", "UNAUTHENTICATED") - before_denied == 1
    rendered = metrics.render().decode()
    assert "MetricsService" not in rendered
    assert 'tower_grpc_request_duration_seconds_count{method="TraceService/Export"}' in rendered
