"""OTLP/HTTP receiver: POST /v1/traces and /v1/logs, as the OTLP specification says.

Bodies are `application/x-protobuf` or `application/json` (OTLP JSON: hex ids, enums as
integers or names, int64 as strings or numbers, unknown fields ignored), optionally gzip or
deflate (`Content-Encoding`). Answers, each in the request's encoding (JSON when the content
type is unknown):

| status | when | body |
| --- | --- | --- |
| 200 | stored (possibly in part) | Export*ServiceResponse; `partial_success` counts and explains rejected records |
| 400 | the body cannot be decoded (bad protobuf, JSON, gzip, a non-hex id in JSON): dead-lettered | google.rpc.Status |
| 401 | no valid ingest token (`Authorization: Bearer <token>`) | google.rpc.Status |
| 413 | the body, as sent or inflated, is over the limit; too many records (dead-lettered) | google.rpc.Status |
| 415 | another content type or content encoding | google.rpc.Status |
| 503 | the tower is overloaded: retry after `Retry-After` seconds | google.rpc.Status + RetryInfo |
| 500 | the store refused rows the receiver produced (a bug; logged) | google.rpc.Status |

Decompression, decoding, conversion and the blocking durable submit run in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from google.protobuf import duration_pb2, json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.concurrency import run_in_threadpool

from collector.auth import Grant
from collector.body import BodyError, decompress, read_raw
from collector.otlp import receiver
from collector.otlp.convert import (
    JSON,
    LOGS_DOOR,
    PROTOBUF,
    TRACES_DOOR,
    DecodeFailure,
    TooManyRecords,
    decode_logs,
    decode_traces,
    media_type,
)
from collector.pipeline import NotStored, Overloaded
from collector.service import IngestService
from kernel.settings import CollectorSettings

log = logging.getLogger(__name__)

router = APIRouter(tags=["otlp"])


Handler = Callable[[bytes, str, IngestService, Grant, CollectorSettings], Message]

_HTTP_TO_RPC = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    500: code_pb2.INTERNAL,
    503: code_pb2.UNAVAILABLE,
}

_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
            JSON: {"schema": {"type": "object", "description": "OTLP JSON"}},
        },
    }
}
_OPENAPI_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Undecodable body (google.rpc.Status)"},
    401: {"description": "No valid ingest token (google.rpc.Status)"},
    413: {"description": "Body over the size limit, as sent or inflated, or too many records (google.rpc.Status)"},
    415: {"description": "Unsupported content type or encoding (google.rpc.Status)"},
    503: {"description": "Overloaded; retry after Retry-After seconds (google.rpc.Status)"},
}


def register_replayers(service: IngestService, settings: CollectorSettings) -> None:
    """Register the OTLP doors' dead-letter replayers."""
    receiver.register_replayers(service, settings)


def _handle_traces(
    body: bytes, content_type: str, service: IngestService, grant: Grant, settings: CollectorSettings
) -> Message:
    request = decode_traces(body, content_type, settings.max_records_per_request)
    partial = receiver.accept_traces(service, grant, request, settings.key_aliases)
    response = ExportTraceServiceResponse()
    if partial.rejected:
        response.partial_success.rejected_spans = partial.rejected
        response.partial_success.error_message = partial.message
    return response


def _handle_logs(
    body: bytes, content_type: str, service: IngestService, grant: Grant, settings: CollectorSettings
) -> Message:
    partial = receiver.accept_logs(service, grant, decode_logs(body, content_type, settings.max_records_per_request))
    response = ExportLogsServiceResponse()
    if partial.rejected:
        response.partial_success.rejected_log_records = partial.rejected
        response.partial_success.error_message = partial.message
    return response


@router.post(
    "/v1/traces",
    summary="OTLP/HTTP traces export (protobuf or JSON, gzip)",
    response_class=Response,
    responses=_OPENAPI_RESPONSES,
    openapi_extra=_OPENAPI_BODY,
)
async def export_traces(request: Request) -> Response:
    """Store spans; invalid spans are dead-lettered and reported in partial_success."""
    return await _export(request, _handle_traces, TRACES_DOOR)


@router.post(
    "/v1/logs",
    summary="OTLP/HTTP logs export; records with an EventName are business events",
    response_class=Response,
    responses=_OPENAPI_RESPONSES,
    openapi_extra=_OPENAPI_BODY,
)
async def export_logs(request: Request) -> Response:
    """Store log records and the business events among them; rejected records are dead-lettered."""
    return await _export(request, _handle_logs, LOGS_DOOR)


async def _export(request: Request, handler: Handler, door: str) -> Response:
    content_type = request.headers.get("content-type", "")
    kind = media_type(content_type)
    answer_as = kind or JSON
    service: IngestService = request.app.state.ingest
    grant = service.tokens.authenticate(request.headers.get("authorization"))
    if grant is None:
        return status_response(
            401,
            "a valid ingest token is required (Authorization: Bearer <token>)",
            answer_as,
            {"WWW-Authenticate": "Bearer"},
        )
    if kind is None:
        return status_response(415, f"content type {content_type!r} is not supported; use {PROTOBUF} or {JSON}", JSON)
    settings = service.pipeline.settings
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    try:
        raw = await read_raw(request, settings.max_body_bytes)
        reply = await run_in_threadpool(_process, handler, raw, encoding, kind, service, grant, settings, door)
    except BodyError as exc:
        return status_response(exc.status, exc.message, answer_as)
    except DecodeFailure as exc:
        return status_response(400, str(exc), answer_as)
    except Overloaded as exc:
        return status_response(
            503,
            f"the tower is overloaded, retry after {exc.retry_after} s: {exc}",
            answer_as,
            {"Retry-After": str(exc.retry_after)},
            retry_after=exc.retry_after,
        )
    except NotStored as exc:
        log.error("OTLP %s: rows not stored: %s", request.url.path, exc)
        return status_response(500, f"the records were not stored: {exc}", answer_as)
    except Exception:
        log.exception("OTLP %s failed", request.url.path)
        return status_response(500, "internal error while receiving the request", answer_as)
    return Response(_encode(reply, kind), media_type=kind)


def _process(
    handler: Handler,
    raw: bytes,
    encoding: str,
    kind: str,
    service: IngestService,
    grant: Grant,
    settings: CollectorSettings,
    door: str,
) -> Message:
    """Inflate, decode and store; a body that cannot be inflated or decoded, or carries too many records, is
    dead-lettered whole (and refused)."""
    try:
        body = decompress(raw, encoding, settings.max_decompressed_bytes)
    except BodyError as exc:
        if exc.status == 400:  # a corrupt stream (not an encoding refused, nor a size limit)
            receiver.refuse_body(service, grant, door, raw, kind, exc.message)
        raise
    try:
        return handler(body, kind, service, grant, settings)
    except DecodeFailure as exc:
        receiver.refuse_body(service, grant, door, body, kind, str(exc))
        raise
    except TooManyRecords as exc:
        receiver.refuse_body(service, grant, door, body, kind, str(exc), undecodable=False)
        raise BodyError(413, str(exc)) from exc


def _encode(message: Message, kind: str) -> bytes:
    if kind == PROTOBUF:
        return message.SerializeToString()
    return orjson.dumps(json_format.MessageToDict(message))


def status_response(
    http_status: int,
    message: str,
    kind: str,
    headers: dict[str, str] | None = None,
    retry_after: int | None = None,
) -> Response:
    """An error answer: a google.rpc.Status in `kind` (protobuf or JSON)."""
    status = status_pb2.Status(code=_HTTP_TO_RPC.get(http_status, code_pb2.UNKNOWN), message=message)
    if retry_after is not None:
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_after)))
    return Response(_encode(status, kind), status_code=http_status, media_type=kind, headers=headers)
