"""The CloudEvents door: `POST /v1/events` (structured, batch, binary and NDJSON; see collector/cloudevents.py).

Response contract (every body is JSON):

- 200 `{"accepted": n, "rejected": [...]}` when at least one record was stored, or the request held
  no record at all (an empty batch). Each rejected item is `{"index": i, "id": "...", "errors": [...]}`
  (`index` counts records from 0 in the request; NDJSON items also carry `line`, 1-based). At most
  TOWER_COLLECTOR_MAX_REJECTIONS_LISTED (1,000) are listed: past it the answer also carries
  `"rejected_total": n, "rejected_truncated": true` (the dead letters keep every one).
- 400 with the same body plus `"error"` when records were sent and none was stored.
- 400 `{"error": "..."}` when the body cannot be split into records (structured or batch body that is
  not JSON, a batch that is not an array); a non-empty body is dead-lettered whole with that reason.
  In NDJSON a line that is not JSON, and in binary mode a body that is not JSON, is one refused record.
- 401 `{"error": ...}` without a known ingest token; 413 over the body or decompression limits, or a batch
  or NDJSON body of more than TOWER_COLLECTOR_MAX_RECORDS_PER_REQUEST (50,000) records (counted before any is
  read; nothing is stored and the body is dead-lettered whole: a replay stores all its records, under the limit
  of the moment, or none);
  415 for other content types or encodings; 503 + `Retry-After` (and `"retry_after"`) when the
  tower cannot take more right now (nothing of the request was stored: send it again);
  500 when the store refused the rows.

Every refused record is dead-lettered (door `events`) with its raw text and the reason, in the
same durable write as the accepted ones: a 2xx or a 400 with `rejected` means both are durable.
The same (source, id) sent twice is stored at most twice physically and counts once (queries read
`business_events` with FINAL), so a client may safely resend after a 503 or a lost answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from collector.auth import Grant
from collector.body import BodyError, read_body
from collector.cloudevents import (
    BATCH,
    NDJSON_TYPES,
    STRUCTURED,
    BodyRefused,
    ParsedBody,
    detect_mode,
    media_type,
    parse_body,
)
from collector.deadletters import Refusal
from collector.http_deps import IngestDep
from collector.pipeline import NotStored, Overloaded
from collector.service import IngestService, Outcome, Replay

DOOR = "events"
_PROBLEMS_SHOWN = 10  # reasons a replay of a body refused whole names, of its records still refused

router = APIRouter(tags=["events"])

_MODES = """Modes, by Content-Type: `application/cloudevents+json` (structured: one event),
`application/cloudevents-batch+json` (batch: a JSON array of events), `application/x-ndjson` (one structured
event a line, blank lines ignored), or binary mode: `ce-id`, `ce-source`, `ce-type`, `ce-time`,
`ce-specversion`, `ce-subject`, `ce-traceparent` (or `traceparent`) headers with the event's `data` as a JSON
body. `Content-Encoding: gzip` or `deflate` is accepted. Authorization: `Bearer <ingest token>`; an event
whose `source` the token may not send is refused.
"""


class RejectedRecord(BaseModel):
    """One record of the request that was not stored (it is in dead letters)."""

    index: int
    id: str | None
    errors: list[str]
    line: int | None = None


class EventsResult(BaseModel):
    """What the request's records became."""

    accepted: int
    rejected: list[RejectedRecord]
    rejected_total: int | None = None
    rejected_truncated: bool | None = None
    error: str | None = None


class ErrorBody(BaseModel):
    """A request refused as a whole."""

    error: str
    retry_after: int | None = None


_JSON_SCHEMA_BODY: dict[str, Any] = {"type": "object", "description": "one CloudEvent"}
_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            STRUCTURED: {"schema": _JSON_SCHEMA_BODY},
            BATCH: {"schema": {"type": "array", "items": _JSON_SCHEMA_BODY}},
            NDJSON_TYPES[0]: {"schema": {"type": "string", "description": "one CloudEvent (JSON) a line"}},
            "application/json": {"schema": {"type": "object", "description": "binary mode: `data`, with ce-* headers"}},
        },
    }
}


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
    """A readable JSON error: {"error": message, ...extra}."""
    return JSONResponse({"error": message, **extra}, status_code=status, headers=dict(headers or {}))


@router.post(
    "/v1/events",
    summary="Receive CloudEvents business events (structured, batch, binary, NDJSON)",
    description=_MODES + (__doc__ or "").split("\n", 1)[1],
    response_model=EventsResult,
    responses={
        400: {"model": EventsResult, "description": "no record stored, or the body is not JSON"},
        401: {"model": ErrorBody, "description": "no known ingest token"},
        413: {"model": ErrorBody, "description": "body over the size or decompression limit, or too many records"},
        415: {"model": ErrorBody, "description": "content type or encoding not accepted"},
        503: {"model": ErrorBody, "description": "overloaded: retry after Retry-After seconds"},
    },
    openapi_extra=_OPENAPI_BODY,
)
async def receive_events(request: Request, ingest: IngestDep) -> JSONResponse:
    grant = ingest.tokens.authenticate(request.headers.get("authorization"))
    if grant is None:
        return error_response(
            401,
            "a valid ingest token is required (Authorization: Bearer <token>)",
            {"WWW-Authenticate": "Bearer"},
        )
    headers = dict(request.headers)
    content_type = request.headers.get("content-type")
    try:
        mode = detect_mode(content_type, headers)
        body = await read_body(request, ingest.pipeline.settings)
    except (BodyRefused, BodyError) as exc:
        return error_response(exc.status, exc.message)
    return await run_in_threadpool(_ingest, ingest, grant, mode, body, content_type, headers)


def _ingest(
    ingest: IngestService,
    grant: Grant,
    mode: str,
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, str],
) -> JSONResponse:
    """Parse and store (blocking: runs in a worker thread)."""
    try:
        try:
            settings = ingest.pipeline.settings
            parsed = parse_body(mode, body, content_type, headers, settings.max_records_per_request)
        except BodyRefused as exc:
            if exc.dead_letter:
                raw = body.decode("utf-8", "replace")
                ingest.refuse([Refusal(DOOR, exc.message, raw, content_type=content_type or "")], grant)
            return error_response(exc.status, exc.message)
        outcome = ingest.accept_events(parsed.records, grant, DOOR)
        return _answer(parsed, outcome, settings.max_rejections_listed)
    except Overloaded as exc:
        return error_response(503, str(exc), {"Retry-After": str(exc.retry_after)}, retry_after=exc.retry_after)
    except NotStored as exc:
        return error_response(500, str(exc))


def _answer(parsed: ParsedBody, outcome: Outcome, listed: int) -> JSONResponse:
    """The answer: the first `listed` rejections with their reasons; past them only counted."""
    rejected: list[dict[str, Any]] = []
    for rejection in outcome.rejected[:listed]:
        item = rejection.as_dict()
        if parsed.lines is not None:
            item["line"] = parsed.lines[rejection.index]
        rejected.append(item)
    total = len(outcome.rejected)
    content: dict[str, Any] = {"accepted": outcome.accepted, "rejected": rejected}
    if total > len(rejected):
        content.update(rejected_total=total, rejected_truncated=True)
    if outcome.accepted == 0 and total:
        content["error"] = f"none of the {total} records was stored; each is in dead letters with its reason"
        return JSONResponse(content, status_code=400)
    return JSONResponse(content)


def register_replayers(service: IngestService) -> None:
    """Register the events door's dead-letter replayer.

    It validates the stored raw event again, against the current grant of the token that sent
    it, so a replay succeeds once the event or the configuration has been fixed.
    """

    def replay(raw: str, content_type: str, grant: Grant) -> Replay:
        if media_type(content_type) in (BATCH, *NDJSON_TYPES):  # a body refused whole (too many records)
            return _replay_body(service, raw, content_type, grant)
        try:
            parsed = orjson.loads(raw.removeprefix("\ufeff"))  # a body refused whole keeps the BOM it was sent with
        except orjson.JSONDecodeError as exc:
            return Replay({}, [f"not valid JSON: {exc}"])
        if not isinstance(parsed, dict):
            return Replay({}, ["event must be a JSON object"])
        event, problems = service.check_event(parsed, grant)
        if event is None:
            return Replay({}, problems)
        return Replay({"business_events": [event.to_row(DOOR, service.clock.now())]}, [])

    service.register_replayer(DOOR, replay)


def _replay_body(service: IngestService, raw: str, content_type: str, grant: Grant) -> Replay:
    """Run a batch or NDJSON body refused whole through the door again (the records per request limit of the
    moment applies): every record's row, or the reasons of those still refused (the letter is replayed whole)."""
    try:
        parsed = parse_body(
            detect_mode(content_type, {}),
            raw.encode(),
            content_type,
            {},
            service.pipeline.settings.max_records_per_request,
        )
    except BodyRefused as exc:
        return Replay({}, [exc.message])
    now = service.clock.now()
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    given: dict[tuple[str, str], dict[str, Any]] = {}
    for index, (record, _, parse_problems) in enumerate(parsed.records):
        event, found = (
            (None, parse_problems) if record is None or parse_problems else service.check_event(record, grant)
        )
        if event is not None:
            row = event.to_row(DOOR, now)
            if given.setdefault((event.source, event.id), row) == row:
                rows.append(row)
                continue
            found = [f"id: {event.id!r} is also the id of an earlier, different event of this request"]
        where = f"line {parsed.lines[index]}" if parsed.lines is not None else f"record {index}"
        problems.extend(p if p.startswith(where + ":") else f"{where}: {p}" for p in found)
    if len(problems) > _PROBLEMS_SHOWN:  # the letter's reason holds them: a body refused whole can be 32 MiB
        problems[_PROBLEMS_SHOWN:] = [f"and {len(problems) - _PROBLEMS_SHOWN:,} more records refused"]
    if problems:
        return Replay({}, problems)
    return Replay({"business_events": rows} if rows else {}, [])
