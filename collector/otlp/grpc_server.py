"""OTLP/gRPC receiver: TraceService/Export and LogsService/Export on `settings.grpc_port`.

It shares the conversion and the ingest service with the HTTP door. Status codes,
as the OTLP specification says:

| code | when |
| --- | --- |
| OK | stored (possibly in part: `partial_success` counts and explains rejected records) |
| UNAUTHENTICATED | no valid `authorization: Bearer <token>` metadata |
| INVALID_ARGUMENT | the message is not a valid Export*ServiceRequest (dead-lettered whole) |
| RESOURCE_EXHAUSTED | the message (compressed or inflated) is over `max_decompressed_bytes` (gRPC itself) |
| RESOURCE_EXHAUSTED | more spans / log records than `max_records_per_request` (counted undecoded; dead-lettered) |
| UNAVAILABLE | overloaded: retryable, with a google.rpc.RetryInfo detail |
| INTERNAL | the store refused rows the receiver produced (a bug; logged) |

Requests arrive as raw bytes (no deserializer) so a bad message is INVALID_ARGUMENT rather
than gRPC's generic deserialization failure. gzip is accepted (gRPC decompresses).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from collector.auth import Grant
from collector.otlp import receiver
from collector.otlp.convert import LOGS_DOOR, PROTOBUF, TRACES_DOOR, TooManyRecords, check_records, parse_protobuf
from collector.pipeline import NotStored, Overloaded
from collector.service import IngestService
from kernel.metrics import TowerMetrics
from kernel.settings import CollectorSettings

log = logging.getLogger(__name__)

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"

# Each worker may block on a durable submit; the pipeline's queue limit bounds the work anyway.
_WORKERS = 16


def _refused(
    service: IngestService, grant: Grant, door: str, body: bytes, reason: str, undecodable: bool = True
) -> receiver.Partial:
    receiver.refuse_body(service, grant, door, body, PROTOBUF, reason, undecodable)
    return receiver.Partial()


class _Receiver:
    """The Export methods of both services."""

    def __init__(self, service: IngestService, settings: CollectorSettings) -> None:
        self.service = service
        self.settings = settings

    def export_traces(self, body: bytes, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        grant = self._grant(context)
        request = ExportTraceServiceRequest()
        self._parse(body, request, context, grant, TRACES_DOOR)
        partial = self._run(
            context, lambda: receiver.accept_traces(self.service, grant, request, self.settings.key_aliases)
        )
        response = ExportTraceServiceResponse()
        if partial.rejected:
            response.partial_success.rejected_spans = partial.rejected
            response.partial_success.error_message = partial.message
        return response

    def export_logs(self, body: bytes, context: grpc.ServicerContext) -> ExportLogsServiceResponse:
        grant = self._grant(context)
        request = ExportLogsServiceRequest()
        self._parse(body, request, context, grant, LOGS_DOOR)
        partial = self._run(context, lambda: receiver.accept_logs(self.service, grant, request))
        response = ExportLogsServiceResponse()
        if partial.rejected:
            response.partial_success.rejected_log_records = partial.rejected
            response.partial_success.error_message = partial.message
        return response

    def _grant(self, context: grpc.ServicerContext) -> Grant:
        authorization = next((v for k, v in context.invocation_metadata() if k == "authorization"), None)
        grant = self.service.tokens.authenticate(authorization if isinstance(authorization, str) else None)
        if grant is None:
            _abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "a valid ingest token is required (metadata authorization: Bearer <token>)",
            )
        return grant

    def _parse(self, body: bytes, message: Message, context: grpc.ServicerContext, grant: Grant, door: str) -> None:
        """Decode the request; one that cannot be decoded, or carries too many records, is dead-lettered whole,
        then refused."""
        what = "spans" if door == TRACES_DOOR else "log records"
        try:
            check_records(body, self.settings.max_records_per_request, what)
        except TooManyRecords as exc:
            reason = str(exc)
            self._run(context, lambda: _refused(self.service, grant, door, body, reason, undecodable=False))
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, reason)
        try:
            parse_protobuf(message, body)
        except (DecodeError, RecursionError, ValueError) as exc:
            reason = f"request is not a valid {message.DESCRIPTOR.name}: {exc}"
            self._run(context, lambda: _refused(self.service, grant, door, body, reason))
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, reason)

    @staticmethod
    def _run(context: grpc.ServicerContext, accept: Callable[[], receiver.Partial]) -> receiver.Partial:
        try:
            return accept()
        except Overloaded as exc:
            retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=exc.retry_after))
            _abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                f"the tower is overloaded, retry after {exc.retry_after} s: {exc}",
                retry,
            )
        except NotStored as exc:
            log.error("OTLP/gRPC: rows not stored: %s", exc)
            _abort(context, grpc.StatusCode.INTERNAL, f"the records were not stored: {exc}")


def _abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    retry: error_details_pb2.RetryInfo | None = None,
) -> NoReturn:
    """End the call with `code`; the google.rpc.Status (with RetryInfo) travels in the trailers."""
    status = status_pb2.Status(code=code.value[0], message=message)
    trailers: list[tuple[str, bytes]] = []
    if retry is not None:
        status.details.add().Pack(retry)
        # The OpenTelemetry Python exporter reads this trailer; other clients read grpc-status-details-bin.
        trailers.append(("google.rpc.retryinfo-bin", retry.SerializeToString()))
    trailers.append(("grpc-status-details-bin", status.SerializeToString()))
    context.set_trailing_metadata(tuple(trailers))
    context.abort(code, message)
    raise AssertionError("grpc context.abort returned")  # abort always raises


class _Metrics(grpc.ServerInterceptor):  # type: ignore[misc]
    """Counts each answered call by method and status code, and times it (the service's TowerMetrics).
    Only the two Export methods have handlers: a call to any other method is not counted (no new series)."""

    def __init__(self, metrics: TowerMetrics) -> None:
        self.metrics = metrics

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = str(details.method).rsplit(".", 1)[-1]  # TraceService/Export
        inner = handler.unary_unary

        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            began = time.perf_counter()
            code = "OK"
            try:
                return inner(request, context)
            except BaseException:
                found = context.code()
                code = found.name if isinstance(found, grpc.StatusCode) else "UNKNOWN"
                raise
            finally:
                self.metrics.grpc_answered(method, code, time.perf_counter() - began)

        return grpc.unary_unary_rpc_method_handler(
            timed, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )


def start_grpc_server(service: IngestService, settings: CollectorSettings) -> grpc.Server:
    """Start the OTLP/gRPC server on settings.host:settings.grpc_port; returns the started grpc.Server."""
    rpc = _Receiver(service, settings)
    limit = settings.max_decompressed_bytes
    server = grpc.server(
        ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="tower-otlp-grpc"),
        interceptors=[_Metrics(service.metrics)] if service.metrics is not None else None,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            # Without this a second tower on the same port would silently share its traffic.
            ("grpc.so_reuseport", 0),
        ],
    )
    server.add_generic_rpc_handlers(
        (
            _service(TRACE_SERVICE, rpc.export_traces),
            _service(LOGS_SERVICE, rpc.export_logs),
        )
    )
    address = f"{settings.host}:{settings.grpc_port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot bind the OTLP/gRPC server to {address}")
    server.start()
    log.info("OTLP/gRPC listening on %s", address)
    return server


def _service(name: str, export: Callable[[bytes, grpc.ServicerContext], Message]) -> Any:
    handler = grpc.unary_unary_rpc_method_handler(
        export, request_deserializer=None, response_serializer=lambda m: m.SerializeToString()
    )
    return grpc.method_handlers_generic_handler(name, {"Export": handler})
