"""The OTLP receiver's logic, shared by the HTTP and gRPC transports.

Traces: valid spans go to `otel_traces`; each invalid span is dead-lettered (door
`otlp_traces`) in the same durable submit and counted in `partial_success.rejected_spans`.

Logs: every log record goes to `otel_logs`. A record whose EventName (or older `event.name`
attribute) is set is also a business event (door `otlp_logs`), written with its log row in one
durable submit.

A log record is rejected as a whole, never half-stored: when its business event is invalid
(or not allowed for the token), or the record itself is (bad ids, times out of range), neither
its `otel_logs` row nor its event is stored. It is counted once in
`partial_success.rejected_log_records` with its reasons and dead-lettered as a one-record OTLP
JSON request. Replaying that dead letter stores the log row and the event together, in the
same submit that marks the dead letter replayed, so after a replay the record exists exactly
once in `otel_logs` and once in `business_events` (whose (source, id) key also absorbs any
redelivery of the event). Records that are not events only fail on bad ids or times. A log record
itself has no identity: an export the client sends again (after a lost answer, a 503) stores its
`otel_logs` rows again, while their events count once.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.auth import Grant
from collector.deadletters import Refusal
from collector.otlp.convert import (
    JSON,
    LOGS_DOOR,
    TRACES_DOOR,
    DecodeFailure,
    TooManyRecords,
    decode_logs,
    decode_traces,
    explain_event_problems,
    log_items,
    log_request_json,
    trace_rows,
)
from collector.pipeline import Rows
from collector.service import IngestService, Replay
from kernel.settings import CollectorSettings

_MESSAGES_SHOWN = 10


@dataclass(frozen=True)
class Partial:
    """What partial_success reports: how many records were rejected, and why."""

    rejected: int = 0
    message: str = ""


def summarize(kind: str, total: int, reasons: Sequence[str]) -> Partial:
    """A partial_success for `reasons` (one per rejected record) out of `total` records."""
    if not reasons:
        return Partial()
    shown = "; ".join(reasons[:_MESSAGES_SHOWN])
    more = f"; and {len(reasons) - _MESSAGES_SHOWN} more" if len(reasons) > _MESSAGES_SHOWN else ""
    return Partial(
        len(reasons),
        f"{len(reasons)} of {total} {kind} rejected (kept in dead letters for replay): {shown}{more}",
    )


def accept_traces(
    service: IngestService, grant: Grant, request: ExportTraceServiceRequest, aliases: Mapping[str, Sequence[str]]
) -> Partial:
    """Store the request's valid spans and dead-letter the others, in one durable submit."""
    rows, refusals = trace_rows(request, grant.primary_source, aliases)
    service.refuse(refusals, grant, extra={"otel_traces": rows} if rows else None)
    return summarize("spans", len(rows) + len(refusals), [r.reason for r in refusals])


def accept_logs(service: IngestService, grant: Grant, request: ExportLogsServiceRequest) -> Partial:
    """Store log rows and business events; dead-letter rejected records whole (see module doc)."""
    items = log_items(request, grant.primary_source)
    rows: list[dict[str, Any]] = []
    records: list[tuple[Mapping[str, Any] | None, str, list[str]]] = []
    labels: list[str] = []
    now = service.clock.now()
    # (source, id) -> (row, place) of the first event of the request under that id: a different event under it is
    # refused here, whole, as accept_events would refuse it (after its log row was taken, with no raw to replay)
    given: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
    for item in items:
        problems = item.problems
        if not problems and item.event is None:
            rows.append(item.row)
            continue
        if not problems and item.event is not None:
            event, problems = service.check_event(item.event, grant)
            problems = explain_event_problems(problems)
            if event is not None:
                row = event.to_row(LOGS_DOOR, now)
                first = given.setdefault((event.source, event.id), (row, item.where))
                if first[0] != row:
                    problems = [
                        f"id: {event.id!r} is also the id of log record {first[1]} of this request, a different event"
                        " (the tower keeps one event per source and id: give each event its own id)"
                    ]
        if problems:
            # `parsed` names the claimed source (and id) for the dead letter; with problems given,
            # accept_events refuses the record without validating it again.
            claimed = item.event if item.event is not None else {"source": grant.primary_source}
            records.append((claimed, log_request_json(request, item.location), problems))
        else:
            rows.append(item.row)
            records.append((item.event, "", []))
        labels.append(item.label())
    if not records:
        service.refuse([], grant, extra={"otel_logs": rows} if rows else None)
        return Partial()
    outcome = service.accept_events(records, grant, LOGS_DOOR, extra={"otel_logs": rows} if rows else None)
    reasons = [f"{labels[r.index]}: {'; '.join(r.reasons)}" for r in outcome.rejected]
    return summarize("log records", len(items), reasons)


# The content type of a dead letter whose raw text is a request body in base64 (protobuf, or bytes that are not
# UTF-8): "<media type>; base64".
BASE64 = "; base64"


def refuse_body(
    service: IngestService, grant: Grant, door: str, body: bytes, kind: str, reason: str, undecodable: bool = True
) -> None:
    """Dead-letter a whole request body the door could not decode (or refused whole: `undecodable` False, too many
    records), with the reason, so that a sender whose every request is refused shows in dead letters and in the
    refusal counts (the `ingest-refusals` rule). OTLP JSON that is UTF-8 is kept as text; anything else
    (protobuf, a corrupt gzip stream) as base64."""
    if kind == JSON:
        try:
            raw, content_type = body.decode("utf-8"), JSON
        except UnicodeDecodeError:
            raw, content_type = base64.b64encode(body).decode("ascii"), JSON + BASE64
    else:
        raw, content_type = base64.b64encode(body).decode("ascii"), kind + BASE64
    why = f"the request body cannot be decoded: {reason}" if undecodable else reason
    service.refuse([Refusal(door, why, raw, "", content_type)], grant)


def _letter_body(raw: str, content_type: str) -> tuple[bytes, str]:
    """A dead letter's raw text and content type as the body and media type to decode."""
    if content_type.endswith(BASE64):
        return base64.b64decode(raw), content_type.removesuffix(BASE64)
    return raw.encode(), JSON


def replay_traces(settings: CollectorSettings, raw: str, grant: Grant, content_type: str = JSON) -> Replay:
    """Run a dead-lettered span (OTLP JSON with its resource and scope), or a whole request body the door could
    not decode or refused whole, through the traces door (the records per request limit of the moment applies)."""
    try:
        request = decode_traces(*_letter_body(raw, content_type), settings.max_records_per_request)
    except (DecodeFailure, TooManyRecords) as exc:
        return Replay({}, [str(exc)])
    rows, refusals = trace_rows(request, grant.primary_source, settings.key_aliases)
    if refusals:
        return Replay({}, [r.reason for r in refusals])
    return Replay({"otel_traces": rows}, [])


def replay_logs(service: IngestService, raw: str, grant: Grant, content_type: str = JSON) -> Replay:
    """Run a dead-lettered log record (or a whole request body) through the logs door: its rows, or why not."""
    try:
        request = decode_logs(*_letter_body(raw, content_type), service.pipeline.settings.max_records_per_request)
    except (DecodeFailure, TooManyRecords) as exc:
        return Replay({}, [str(exc)])
    now = service.clock.now()
    tables: Rows = {}
    problems: list[str] = []
    for item in log_items(request, grant.primary_source):
        if item.problems:
            problems.extend(f"{item.label()}: {p}" for p in item.problems)
            continue
        if item.event is not None:
            event, event_problems = service.check_event(item.event, grant)
            if event is None:
                problems.extend(f"{item.label()}: {p}" for p in explain_event_problems(event_problems))
                continue
            tables.setdefault("business_events", []).append(event.to_row(LOGS_DOOR, now))
        tables.setdefault("otel_logs", []).append(item.row)
    if problems:
        return Replay({}, problems)
    return Replay(tables, [])


def register_replayers(service: IngestService, settings: CollectorSettings) -> None:
    """Let `otlp_traces` and `otlp_logs` dead letters be replayed through their door."""
    service.register_replayer(TRACES_DOOR, lambda raw, ct, grant: replay_traces(settings, raw, grant, ct))
    service.register_replayer(LOGS_DOOR, lambda raw, ct, grant: replay_logs(service, raw, grant, ct))
