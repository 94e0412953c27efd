"""CloudEvents 1.0 over HTTP: turning a request into records, one per event, for the ingest service.

Modes (HTTP protocol binding of CloudEvents 1.0, plus NDJSON for bulk loads):
- structured: `Content-Type: application/cloudevents+json`, the body is one event (a JSON object).
- batch: `Content-Type: application/cloudevents-batch+json`, the body is a JSON array of events.
- NDJSON: `Content-Type: application/x-ndjson` (or `application/ndjson`), one structured event a line;
  blank lines are ignored and a line that is not JSON is one refused record, not a refused body.
- binary: any `ce-*` header and a JSON Content-Type (or none): the attributes come from the `ce-*`
  headers (percent-decoded), the body is `data`; the plain `traceparent` header stands in for a
  missing `ce-traceparent`.

Parsing never raises for a bad record: each record is (parsed mapping or None, raw text, problems),
and the raw text of a binary event is its structured JSON form, so every dead letter of this door
is one structured event and can be replayed as such. `BodyRefused` is for requests that cannot be
split into records at all (wrong content type, a body that is not JSON), or that carries more records than a
request may (`max_records`: counted before any record is read, refused with 413 and dead-lettered whole).
"""

from __future__ import annotations

import codecs
import itertools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson")
BINARY = "binary"
NDJSON = "ndjson"

Record = tuple[Mapping[str, Any] | None, str, list[str]]

NOT_AN_OBJECT = "event must be a JSON object"
MAX_RECORDS_SETTING = "TOWER_COLLECTOR_MAX_RECORDS_PER_REQUEST"

# A leading UTF-8 byte-order mark, which PowerShell and .NET senders write and RFC 8259 lets a parser skip.
BOM = codecs.BOM_UTF8

# Decodes one element of a batch at a time, to count them before orjson builds them all.
_ELEMENT = json.JSONDecoder()

# A line of an NDJSON body that is not blank (bytes.strip() whitespace), from its start to its end.
_LINE = re.compile(rb"^[ \t\r\f\v]*\S[^\n]*", re.MULTILINE)


class BodyRefused(Exception):
    """A request that cannot be split into records; `status` is the HTTP answer.

    `dead_letter` says whether the body is worth keeping as a dead letter (it was read and
    authenticated, but is not what the mode requires).
    """

    def __init__(self, status: int, message: str, dead_letter: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.dead_letter = dead_letter


@dataclass
class ParsedBody:
    """The records of one request; `lines` holds each record's 1-based line in NDJSON mode."""

    mode: str
    records: list[Record] = field(default_factory=list)
    lines: list[int] | None = None


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, lower case, without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json_type(mtype: str) -> bool:
    """True for JSON media types: application/json, text/json and any `+json` suffix."""
    return mtype in ("application/json", "text/json") or mtype.endswith("+json")


def detect_mode(content_type: str | None, headers: Mapping[str, str]) -> str:
    """The mode of a request, or BodyRefused(415) when it is none of them."""
    mtype = media_type(content_type)
    if mtype == STRUCTURED:
        return STRUCTURED
    if mtype == BATCH:
        return BATCH
    if mtype in NDJSON_TYPES:
        return NDJSON
    if any(name.lower().startswith("ce-") for name in headers):
        if mtype and not is_json_type(mtype):
            raise BodyRefused(415, f"binary mode: data of type {mtype!r} is not accepted; business event data is JSON")
        return BINARY
    shown = mtype or "none"
    raise BodyRefused(
        415,
        f"Content-Type {shown!r} is not accepted: use {STRUCTURED} (one event), {BATCH} (a JSON array),"
        f" application/x-ndjson (one event a line), or binary mode (ce-* headers with a JSON body)",
    )


def parse_body(
    mode: str, body: bytes, content_type: str | None, headers: Mapping[str, str], max_records: int | None = None
) -> ParsedBody:
    """Split a request body into records; BodyRefused(400) when the body is not the mode's JSON, BodyRefused(413,
    dead-lettered) when a batch or NDJSON body carries more than `max_records` (counted before any is read)."""
    body = body.removeprefix(BOM)
    if mode == STRUCTURED:
        return ParsedBody(mode, [_structured(body)])
    if mode == BATCH:
        return ParsedBody(mode, _batch(body, max_records))
    if mode == NDJSON:
        return _ndjson(body, max_records)
    return ParsedBody(mode, [binary_record(headers, body, content_type)])


def too_many_records(count: str, max_records: int) -> BodyRefused:
    """The refusal of a request carrying `count` records, over `max_records`."""
    return BodyRefused(
        413,
        f"the request carries {count} records, over the limit of {max_records:,} a request ({MAX_RECORDS_SETTING});"
        " nothing of it was stored: send the records in smaller requests",
        dead_letter=True,
    )


def _loads(body: bytes, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyRefused(400, f"{what} is not valid JSON: {exc}", dead_letter=bool(body.strip())) from exc


def _structured(body: bytes) -> Record:
    parsed = _loads(body, "body")
    raw = body.decode("utf-8", "replace")
    if not isinstance(parsed, dict):
        return None, raw, [f"{NOT_AN_OBJECT} (structured mode carries one event; send arrays as {BATCH})"]
    return parsed, raw, []


def _elements_over(body: bytes, limit: int) -> int | None:
    """How many elements a JSON array body holds when that is more than `limit` (counting stops at limit + 1),
    else None; None too for a body that is not an array (the full parse says why).

    orjson builds every element before the batch can be counted: a few MB of `[{},{},...]` are millions of
    dicts. Counting first decodes one element at a time and keeps none, so such a body is refused for a
    fraction of that memory. An array of at most `limit` elements holds fewer than `limit` commas: most bodies
    are passed by one bytes.count."""
    if body.count(b",") < limit:
        return None
    text = body.decode("utf-8", "replace")
    end = len(text)
    at = _skip_space(text, 0)
    if at >= end or text[at] != "[":
        return None
    at, count = _skip_space(text, at + 1), 0
    if at < end and text[at] == "]":
        return None
    while True:
        try:
            _, at = _ELEMENT.raw_decode(text, at)
        except (ValueError, RecursionError):
            return None
        count += 1
        if count > limit:
            return count
        at = _skip_space(text, at)
        if at >= end or text[at] != ",":
            return None
        at = _skip_space(text, at + 1)


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\n\r":
        at += 1
    return at


def _batch(body: bytes, max_records: int | None) -> list[Record]:
    if max_records is not None and _elements_over(body, max_records) is not None:
        raise too_many_records(f"more than {max_records:,}", max_records)
    parsed = _loads(body, "body")
    if not isinstance(parsed, list):
        raise BodyRefused(400, f"a {BATCH} body must be a JSON array of events", dead_letter=True)
    if max_records is not None and len(parsed) > max_records:
        raise too_many_records(f"{len(parsed):,}", max_records)
    records: list[Record] = []
    for item in parsed:
        raw = orjson.dumps(item).decode()
        records.append((item, raw, []) if isinstance(item, dict) else (None, raw, [NOT_AN_OBJECT]))
    return records


def _ndjson(body: bytes, max_records: int | None) -> ParsedBody:
    lines = itertools.islice(_LINE.finditer(body), max_records + 1) if max_records is not None else ()
    if max_records is not None and sum(1 for _ in lines) > max_records:
        raise too_many_records(f"more than {max_records:,}", max_records)
    result = ParsedBody(NDJSON, lines=[])
    assert result.lines is not None
    for number, line in _lines(body):
        result.lines.append(number)
        raw = line.decode("utf-8", "replace")
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            result.records.append((None, raw, [f"line {number}: not valid JSON: {exc}"]))
            continue
        if isinstance(parsed, dict):
            result.records.append((parsed, raw, []))
        else:
            result.records.append((None, raw, [f"line {number}: {NOT_AN_OBJECT}"]))
    return result


def _lines(body: bytes) -> Iterator[tuple[int, bytes]]:
    """The lines of `body` that are not blank, each stripped, with its 1-based number (blank lines cost no object)."""
    number, at = 1, 0
    for match in _LINE.finditer(body):
        number += body.count(b"\n", at, match.start())
        at = match.start()
        yield number, match.group().strip()


def binary_record(headers: Mapping[str, str], body: bytes, content_type: str | None) -> Record:
    """The one event of a binary-mode request, in structured form.

    A body that is not JSON stays in the event as text, so the refusal reason names `data` and
    the dead letter keeps what was sent.
    """
    event: dict[str, Any] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("ce-") and len(lower) > 3:
            event[lower[3:]] = unquote(value, errors="replace")
    if "traceparent" not in event and headers.get("traceparent"):
        event["traceparent"] = headers["traceparent"]
    event["datacontenttype"] = media_type(content_type) or "application/json"
    problems: list[str] = []
    if body.strip():
        try:
            event["data"] = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            event["data"] = body.decode("utf-8", "replace")
            problems.append(f"data: the body is not valid JSON: {exc}")
    return event, orjson.dumps(event).decode(), problems
