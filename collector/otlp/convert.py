"""OTLP requests to `otel_traces` / `otel_logs` rows, and log records to business events.

Row values mirror the OpenTelemetry Collector's ClickHouse exporter: hex ids, `SpanKind` and
`StatusCode` as its names, attribute values as strings (arrays and maps as JSON), `Events.*` and
`Links.*` as parallel arrays. `ResourceAttributes['tower.source']` is the ingest token's source
(a value the sender set is overwritten), and span attributes named by a business-key alias
(`erp.order.id`) are also recorded under the business key (`order.id`) unless already set.
Timestamps are written as text ClickHouse reads into DateTime64(9)
('seconds.nanoseconds', or the calendar form before 1973, where ClickHouse would misread the
short number).

This is the ingest hot path: spans are read straight off the protobuf messages into plain
dicts; shared values (resource attributes, empty arrays) are built once per resource and
reused by every row. JSON bodies are turned into the same protobuf request first, so both
encodings share one converter.

Validation follows the OTLP data model: a span needs a 16-byte non-zero trace id, an 8-byte
non-zero span id, an empty or 8-byte parent id, end >= start, and timestamps DateTime64(9) can
hold. A span that fails is a refusal (dead-lettered with its resource and scope as OTLP JSON,
so a replay runs it through this door again); the rest of the request is stored. In OTLP
JSON an id that is not hex makes the whole body undecodable (400, as in the Collector); hex of
the wrong length is a refusal of that span only.

Exporters from before OTLP 1.0 (2021) send the scopes as `instrumentation_library_spans` /
`instrumentation_library_logs` (protobuf field 1000, JSON `instrumentationLibrarySpans`), each with an
`instrumentation_library`. The current schema no longer has them, so a decoder drops them without a word: they are
read here as the scopes they are (the same fields under the same numbers), counted against the request's limit
like them, and stored.
"""

from __future__ import annotations

import base64
import codecs
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from collector.deadletters import Refusal

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

TRACES_DOOR = "otlp_traces"
LOGS_DOOR = "otlp_logs"

SOURCE_ATTRIBUTE = "tower.source"

SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODES = ("Unset", "Ok", "Error")

# DateTime64(9) holds nanoseconds since the epoch in an Int64.
MAX_NANOS = 2**63 - 1
_FAST_TEXT_FROM = 10**17  # 1973-03-03: from here 'seconds.nanos' has the 9+ digit seconds ClickHouse expects
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_EMPTY: tuple[()] = ()

RequestT = TypeVar("RequestT", ExportTraceServiceRequest, ExportLogsServiceRequest)


class DecodeFailure(Exception):
    """The body is not a valid OTLP request in its content type (answer 400 / INVALID_ARGUMENT)."""


class TooManyRecords(Exception):
    """The request carries more spans or log records than one may (answer 413 / RESOURCE_EXHAUSTED); counted
    before the request is decoded, so its refusal costs no more than the count."""


MAX_RECORDS_SETTING = "TOWER_COLLECTOR_MAX_RECORDS_PER_REQUEST"


def too_many(what: str, limit: int) -> TooManyRecords:
    """The refusal of a request of more than `limit` `what` (spans, log records)."""
    return TooManyRecords(
        f"the request carries more than {limit:,} {what}, the limit of one request ({MAX_RECORDS_SETTING});"
        " nothing of it was stored: export smaller batches (the SDK's max_export_batch_size, the Collector's"
        " send_batch_max_size)"
    )


class UnsupportedContentType(Exception):
    """The content type is neither OTLP protobuf nor OTLP JSON (answer 415)."""


def media_type(content_type: str | None) -> str | None:
    """PROTOBUF or JSON for a Content-Type header value, None for anything else."""
    if not content_type:
        return None
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind if kind in (PROTOBUF, JSON) else None


# --- decoding -------------------------------------------------------------------------------


def decode_traces(body: bytes, content_type: str, max_records: int | None = None) -> ExportTraceServiceRequest:
    """An ExportTraceServiceRequest from an OTLP/HTTP body (protobuf or OTLP JSON); TooManyRecords past
    `max_records` spans."""
    limit = (max_records, "spans") if max_records is not None else None
    return _decode(body, content_type, ExportTraceServiceRequest(), _trace_ids, limit)


def decode_logs(body: bytes, content_type: str, max_records: int | None = None) -> ExportLogsServiceRequest:
    """An ExportLogsServiceRequest from an OTLP/HTTP body (protobuf or OTLP JSON); TooManyRecords past
    `max_records` log records."""
    limit = (max_records, "log records") if max_records is not None else None
    return _decode(body, content_type, ExportLogsServiceRequest(), _log_ids, limit)


IdWalker = Callable[[dict[str, Any], Callable[[str, str], str]], None]

# Where the records are, in both requests: field 1 (resource_*), then 2 (scope_*, or the pre-1.0 scopes' 1000), then 2
# (spans, log_records); the same in OTLP JSON, under either spelling json_format accepts.
LEGACY_SCOPES = 1000
RECORDS_PATH: tuple[tuple[int, ...], ...] = ((1,), (2, LEGACY_SCOPES), (2,))
_JSON_PATHS = {
    "spans": (("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"), ("spans",)),
    "log records": (("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"), ("logRecords", "log_records")),
}
# Pre-1.0 OTLP JSON: the resource's scopes, the scope itself, and (logs before 0.15) the records, by their old names.
_LEGACY_JSON = {
    "spans": (("instrumentationLibrarySpans", "instrumentation_library_spans"), None),
    "log records": (("instrumentationLibraryLogs", "instrumentation_library_logs"), ("logs",)),
}
_LEGACY_SCOPE_JSON = ("instrumentationLibrary", "instrumentation_library")


def check_records(body: bytes, limit: int, what: str) -> None:
    """TooManyRecords when a protobuf request carries more than `limit` records (`what`: spans, log records).

    The wire is walked, not decoded (decoding 16 million empty records takes 2 GB): at most `limit` records and
    8 fields around each are read, more is refused too. A malformed body passes: the decoder refuses it."""
    budget = [8 * limit + 1024]  # fields read, records included
    try:
        if _count(body, 0, len(body), 0, limit, budget) > limit:
            raise too_many(what, limit)
    except _Malformed:
        return


class _Malformed(Exception):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _count(buf: bytes, pos: int, end: int, depth: int, limit: int, budget: list[int]) -> int:
    """Records (fields along RECORDS_PATH) in buf[pos:end], the message at `depth`; past `limit` (or the budget of
    fields read) a count over `limit`."""
    count = 0
    while pos < end:
        budget[0] -= 1
        if budget[0] < 0:
            return limit + 1
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise _Malformed
            if number in RECORDS_PATH[depth]:
                if depth == len(RECORDS_PATH) - 1:
                    count += 1
                else:
                    count += _count(buf, pos, pos + length, depth + 1, limit - count, budget)
                if count > limit:
                    return count
            pos += length
        elif wire == 0:
            _, pos = _varint(buf, pos)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:  # groups: not in OTLP
            raise _Malformed
    return count


def _check_json_records(document: dict[str, Any], limit: int, what: str) -> None:
    """TooManyRecords when an OTLP JSON document carries more than `limit` records (before json_format reads it)."""
    outer, middle, inner = _JSON_PATHS[what]
    count = 0
    for _, resource in _items(document, *outer):
        for _, scope in _items(resource, *middle):
            count += next((len(value) for name in inner if isinstance(value := scope.get(name), list)), 0)
            if count > limit:
                raise too_many(what, limit)


def _upgrade_json(document: dict[str, Any], what: str) -> None:
    """Move a pre-1.0 OTLP JSON document's scopes (`instrumentationLibrarySpans`, with `instrumentationLibrary`) to
    where OTLP 1.0 puts them, after the resource's current ones."""
    outer, middle, inner = _JSON_PATHS[what]
    legacy, legacy_records = _LEGACY_JSON[what]
    for _, resource in _items(document, *outer):
        old = [scope for name in legacy if isinstance(found := resource.pop(name, None), list) for scope in found]
        if not old:
            continue
        current = next((resource[name] for name in middle if isinstance(resource.get(name), list)), None)
        if current is None:
            current = resource[middle[0]] = []
        for scope in old:
            if isinstance(scope, dict):
                library = next((scope.pop(name) for name in _LEGACY_SCOPE_JSON if name in scope), None)
                if library is not None and "scope" not in scope:
                    scope["scope"] = library
                if legacy_records and not any(name in scope for name in inner):
                    records = next((scope.pop(name) for name in legacy_records if name in scope), None)
                    if records is not None:
                        scope[inner[0]] = records
            current.append(scope)


def parse_protobuf(message: Message, body: bytes) -> None:
    """`message.ParseFromString(body)`, with a pre-1.0 exporter's scopes (field 1000 of each resource, which the
    current schema does not know) read as the scopes they are, after the resource's current ones."""
    message.ParseFromString(body)
    for resource in getattr(message, "resource_spans", None) or getattr(message, "resource_logs", None) or ():
        unknown = UnknownFieldSet(resource)
        fields = [unknown[i] for i in range(len(unknown))]
        legacy = [f.data for f in fields if f.field_number == LEGACY_SCOPES and f.wire_type == 2]
        if not legacy:
            continue
        scopes = resource.scope_spans if isinstance(resource, ResourceSpans) else resource.scope_logs
        resource.DiscardUnknownFields()
        for data in legacy:
            scopes.add().MergeFromString(data)


def _decode(
    body: bytes, content_type: str, message: RequestT, walk_ids: IdWalker, limit: tuple[int, str] | None = None
) -> RequestT:
    kind = media_type(content_type)
    name = message.DESCRIPTOR.name
    if kind == PROTOBUF:
        if limit is not None:
            check_records(body, *limit)
        try:
            parse_protobuf(message, body)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise DecodeFailure(f"body is not a valid protobuf {name}: {exc}") from exc
        return message
    if kind != JSON:
        raise UnsupportedContentType(f"content type {content_type!r} is not {PROTOBUF} or {JSON}")
    try:
        document = orjson.loads(body.removeprefix(codecs.BOM_UTF8))  # PowerShell and .NET senders write one
    except orjson.JSONDecodeError as exc:
        raise DecodeFailure(f"body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise DecodeFailure(f"body must be a JSON object ({name}), got {type(document).__name__}")
    _upgrade_json(document, "spans" if isinstance(message, ExportTraceServiceRequest) else "log records")
    if limit is not None:
        _check_json_records(document, *limit)
    walk_ids(document, _hex_to_base64)
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise DecodeFailure(f"body is not a valid OTLP JSON {name}: {exc}") from exc
    except (RecursionError, ValueError, TypeError) as exc:  # malformed values json_format does not wrap
        raise DecodeFailure(f"body is not a valid OTLP JSON {name}: {exc}") from exc
    return message


# OTLP JSON writes trace and span ids as hex where ProtoJSON would use base64; these walkers
# visit exactly the id fields (both spellings json_format accepts) to translate them.
_ID_KEYS = (
    ("traceId", "trace_id"),
    ("spanId", "span_id"),
    ("parentSpanId", "parent_span_id"),
)


def _items(obj: dict[str, Any], *names: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for name in names:
        value = obj.get(name)
        if isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    yield index, item
            return


def _map_ids(obj: dict[str, Any], convert: Callable[[str, str], str], path: str) -> None:
    for spellings in _ID_KEYS:
        for key in spellings:
            value = obj.get(key)
            if isinstance(value, str) and value:
                obj[key] = convert(value, f"{path}.{key}")


def _trace_ids(document: dict[str, Any], convert: Callable[[str, str], str]) -> None:
    for i, rs in _items(document, "resourceSpans", "resource_spans"):
        for j, ss in _items(rs, "scopeSpans", "scope_spans"):
            for k, span in _items(ss, "spans"):
                path = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                _map_ids(span, convert, path)
                for n, link in _items(span, "links"):
                    _map_ids(link, convert, f"{path}.links[{n}]")


def _log_ids(document: dict[str, Any], convert: Callable[[str, str], str]) -> None:
    for i, rl in _items(document, "resourceLogs", "resource_logs"):
        for j, sl in _items(rl, "scopeLogs", "scope_logs"):
            for k, record in _items(sl, "logRecords", "log_records"):
                _map_ids(record, convert, f"resourceLogs[{i}].scopeLogs[{j}].logRecords[{k}]")


def _hex_to_base64(value: str, path: str) -> str:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise DecodeFailure(f"{path}: {value[:80]!r} is not hex (OTLP JSON encodes ids as hex)") from None
    return base64.b64encode(raw).decode()


def _base64_to_hex(value: str, path: str) -> str:
    return base64.b64decode(value).hex()


def otlp_json(message: Message) -> str:
    """A request as OTLP JSON (hex ids, integer enums), decodable by `decode_traces`/`decode_logs`."""
    document = json_format.MessageToDict(message, use_integers_for_enums=True)
    if isinstance(message, ExportTraceServiceRequest):
        _trace_ids(document, _base64_to_hex)
    elif isinstance(message, ExportLogsServiceRequest):
        _log_ids(document, _base64_to_hex)
    return orjson.dumps(document).decode()


# --- values ---------------------------------------------------------------------------------


def ns_text(nanos: int) -> str:
    """A Unix time in nanoseconds as text a DateTime64(9) column reads exactly."""
    seconds, fraction = divmod(nanos, 1_000_000_000)
    if nanos >= _FAST_TEXT_FROM:
        return f"{seconds}.{fraction:09d}"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}"


def rfc3339(nanos: int) -> str:
    """A Unix time in nanoseconds as RFC 3339 UTC with microseconds."""
    seconds, fraction = divmod(nanos, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction // 1000:06d}Z"


def float_text(value: float) -> str:
    """A double as the Collector writes it (ES6 number formatting: `100`, `0.5`, `1e-7`)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        mantissa, _, exponent = repr(value).partition("e")
        sign = exponent[0] if exponent[:1] in "+-" else "+"
        return f"{mantissa}e{sign}{int(exponent.lstrip('+-') or 0)}"
    if value.is_integer():
        return str(int(value))
    text = repr(value)
    if "e" in text:  # repr uses exponents from 1e16 and below 1e-4; the Collector does not
        text = format(Decimal(text), "f")
    return text


def any_text(value: AnyValue) -> str:
    """An AnyValue as a string, as pcommon's Value.AsString does (arrays and maps as JSON)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind is None:
        return ""
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return float_text(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return orjson.dumps(any_raw(value), option=orjson.OPT_SORT_KEYS).decode()


def any_raw(value: AnyValue) -> Any:
    """An AnyValue as a plain Python value (bytes as base64 text, maps as dicts)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "array_value":
        return [any_raw(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_raw(kv.value) for kv in value.kvlist_value.values}
    return None


def attributes(values: Sequence[KeyValue]) -> dict[str, str]:
    """Attributes as the Map(String, String) the ClickHouse exporter writes."""
    # A non-empty string_value means the value is a string (the others are in the same oneof),
    # which spares the WhichOneof call for the common case.
    return {kv.key: kv.value.string_value or any_text(kv.value) for kv in values}


def alias_index(aliases: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """alias -> business key, from CollectorSettings.key_aliases (business key -> aliases)."""
    return {alias: key for key, names in aliases.items() for alias in names if alias != key}


def _resource(attrs: Sequence[KeyValue], source: str) -> tuple[dict[str, str], str]:
    values = attributes(attrs)
    values[SOURCE_ATTRIBUTE] = source
    return values, values.get("service.name", "")


# --- traces ---------------------------------------------------------------------------------


def trace_rows(
    request: ExportTraceServiceRequest, grant_source: str, aliases: Mapping[str, Sequence[str]]
) -> tuple[list[dict[str, Any]], list[Refusal]]:
    """`otel_traces` rows of the valid spans, and a refusal for each invalid span."""
    index = alias_index(aliases)
    rows: list[dict[str, Any]] = []
    refusals: list[Refusal] = []
    append = rows.append
    for i, rs in enumerate(request.resource_spans):
        resource_attrs, service = _resource(rs.resource.attributes, grant_source)
        for j, ss in enumerate(rs.scope_spans):
            scope_name = ss.scope.name
            scope_version = ss.scope.version
            for k, span in enumerate(ss.spans):
                problem = span_problem(span)
                if problem is not None:
                    where = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                    refusals.append(
                        Refusal(
                            door=TRACES_DOOR,
                            reason=f"span {span.name[:100]!r} ({where}): {problem}",
                            raw=span_request_json(rs, ss, span),
                            source=grant_source,
                        )
                    )
                    continue
                span_attrs = attributes(span.attributes)
                if index:
                    for alias, key in index.items():
                        if alias in span_attrs and key not in span_attrs:
                            span_attrs[key] = span_attrs[alias]
                start = span.start_time_unix_nano
                kind = span.kind
                code = span.status.code
                row = {
                    "Timestamp": ns_text(start),
                    "TraceId": span.trace_id.hex(),
                    "SpanId": span.span_id.hex(),
                    "ParentSpanId": span.parent_span_id.hex(),
                    "TraceState": span.trace_state,
                    "SpanName": span.name,
                    "SpanKind": SPAN_KINDS[kind] if 0 <= kind < 6 else "",
                    "ServiceName": service,
                    "ResourceAttributes": resource_attrs,
                    "ScopeName": scope_name,
                    "ScopeVersion": scope_version,
                    "SpanAttributes": span_attrs,
                    "Duration": span.end_time_unix_nano - start,
                    "StatusCode": STATUS_CODES[code] if 0 <= code < 3 else "",
                    "StatusMessage": span.status.message,
                }
                events = span.events
                if events:
                    row["Events.Timestamp"] = [ns_text(e.time_unix_nano) for e in events]
                    row["Events.Name"] = [e.name for e in events]
                    row["Events.Attributes"] = [attributes(e.attributes) for e in events]
                else:
                    row["Events.Timestamp"] = row["Events.Name"] = row["Events.Attributes"] = _EMPTY
                links = span.links
                if links:
                    row["Links.TraceId"] = [link.trace_id.hex() for link in links]
                    row["Links.SpanId"] = [link.span_id.hex() for link in links]
                    row["Links.TraceState"] = [link.trace_state for link in links]
                    row["Links.Attributes"] = [attributes(link.attributes) for link in links]
                else:
                    row["Links.TraceId"] = row["Links.SpanId"] = row["Links.TraceState"] = _EMPTY
                    row["Links.Attributes"] = _EMPTY
                append(row)
    return rows, refusals


def span_problem(span: Span) -> str | None:
    """Why a span cannot be stored, or None when it can."""
    trace_id = span.trace_id
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
        return f"trace_id must be 16 bytes and not all zero, got {_describe(trace_id)}"
    span_id = span.span_id
    if len(span_id) != 8 or span_id == _ZERO_SPAN:
        return f"span_id must be 8 bytes and not all zero, got {_describe(span_id)}"
    parent = span.parent_span_id
    if parent and len(parent) != 8:
        return f"parent_span_id must be empty or 8 bytes, got {_describe(parent)}"
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if end < start:
        return f"end_time_unix_nano ({end}) is before start_time_unix_nano ({start})"
    if end > MAX_NANOS:
        return f"end_time_unix_nano ({end}) is past 2262-04-11, the latest time the store holds"
    for n, event in enumerate(span.events):
        if event.time_unix_nano > MAX_NANOS:
            return f"events[{n}].time_unix_nano ({event.time_unix_nano}) is past 2262-04-11"
    for n, link in enumerate(span.links):
        if len(link.trace_id) != 16:
            return f"links[{n}].trace_id must be 16 bytes, got {_describe(link.trace_id)}"
        if len(link.span_id) != 8:
            return f"links[{n}].span_id must be 8 bytes, got {_describe(link.span_id)}"
    return None


def _describe(value: bytes) -> str:
    if not value:
        return "none"
    return f"{len(value)} bytes ({value[:32].hex()})"


def span_request_json(rs: ResourceSpans, ss: ScopeSpans, span: Span) -> str:
    """One span with its resource and scope, as an OTLP JSON ExportTraceServiceRequest."""
    request = ExportTraceServiceRequest()
    out_rs = request.resource_spans.add()
    out_rs.resource.CopyFrom(rs.resource)
    out_rs.schema_url = rs.schema_url
    out_ss = out_rs.scope_spans.add()
    out_ss.scope.CopyFrom(ss.scope)
    out_ss.schema_url = ss.schema_url
    out_ss.spans.append(span)
    return otlp_json(request)


# --- logs -----------------------------------------------------------------------------------


@dataclass(slots=True)
class LogItem:
    """One converted log record: its row, its business event (when it is one), what is wrong."""

    row: dict[str, Any]
    event: dict[str, Any] | None
    problems: list[str]
    location: tuple[int, int, int]

    @property
    def where(self) -> str:
        """The record's place in the request, for messages."""
        i, j, k = self.location
        return f"resourceLogs[{i}].scopeLogs[{j}].logRecords[{k}]"

    def label(self) -> str:
        """The record named for a person: where it is and which event it carries."""
        if self.event is not None:
            return f"log record {self.where} (event {str(self.event.get('type'))[:100]!r})"
        return f"log record {self.where}"


def log_items(request: ExportLogsServiceRequest, grant_source: str) -> list[LogItem]:
    """Every log record of the request as an `otel_logs` row, plus a CloudEvent for event records."""
    items: list[LogItem] = []
    for i, rl in enumerate(request.resource_logs):
        resource_attrs, service = _resource(rl.resource.attributes, grant_source)
        resource_schema = rl.schema_url
        for j, sl in enumerate(rl.scope_logs):
            scope = sl.scope
            scope_attrs = attributes(scope.attributes) if scope.attributes else {}
            for k, record in enumerate(sl.log_records):
                problems = log_problems(record)
                log_attrs = attributes(record.attributes)
                stamp = record.time_unix_nano or record.observed_time_unix_nano
                trace_id = record.trace_id
                span_id = record.span_id
                row = {
                    "Timestamp": ns_text(stamp if stamp <= MAX_NANOS else 0),
                    "TraceId": "" if trace_id == _ZERO_TRACE else trace_id.hex(),
                    "SpanId": "" if span_id == _ZERO_SPAN else span_id.hex(),
                    "TraceFlags": record.flags & 0xFF,
                    "SeverityText": record.severity_text,
                    "SeverityNumber": record.severity_number & 0xFF,
                    "ServiceName": service,
                    "Body": any_text(record.body) if record.HasField("body") else "",
                    "ResourceSchemaUrl": resource_schema,
                    "ResourceAttributes": resource_attrs,
                    "ScopeSchemaUrl": sl.schema_url,
                    "ScopeName": scope.name,
                    "ScopeVersion": scope.version,
                    "ScopeAttributes": scope_attrs,
                    "LogAttributes": log_attrs,
                    "EventName": record.event_name,
                }
                name = record.event_name or log_attrs.get("event.name", "")
                event = log_event(record, name, log_attrs, grant_source, problems) if name else None
                items.append(LogItem(row, event, problems, (i, j, k)))
    return items


def log_problems(record: LogRecord) -> list[str]:
    """Why a log record cannot be stored at all (bad ids or times); empty when it can."""
    problems: list[str] = []
    if record.trace_id and len(record.trace_id) != 16:
        problems.append(f"trace_id must be empty or 16 bytes, got {_describe(record.trace_id)}")
    if record.span_id and len(record.span_id) != 8:
        problems.append(f"span_id must be empty or 8 bytes, got {_describe(record.span_id)}")
    for field in ("time_unix_nano", "observed_time_unix_nano"):
        value = getattr(record, field)
        if value > MAX_NANOS:
            problems.append(f"{field} ({value}) is past 2262-04-11, the latest time the store holds")
    return problems


def log_event(
    record: LogRecord, name: str, log_attrs: Mapping[str, str], grant_source: str, problems: list[str]
) -> dict[str, Any]:
    """The structured CloudEvent a log record with an event name stands for.

    id: attribute `cloudevents.event_id` or `event.id`; source: `cloudevents.event_source` or
    `event.source`, else the token's source; time: the record's time (or observed time);
    subject: `cloudevents.event_subject`; data: the body when it is a map (or a JSON object
    string), completed by attributes named `data.<key>`; traceparent: the record's ids.
    Problems found on the way (a body that looks like JSON but is not) go to `problems`.
    """
    event: dict[str, Any] = {
        "specversion": "1.0",
        "type": name,
        "source": log_attrs.get("cloudevents.event_source") or log_attrs.get("event.source") or grant_source,
        "datacontenttype": JSON,
    }
    event_id = log_attrs.get("cloudevents.event_id") or log_attrs.get("event.id")
    if event_id:
        event["id"] = event_id
    stamp = record.time_unix_nano or record.observed_time_unix_nano
    if 0 < stamp <= MAX_NANOS:
        event["time"] = rfc3339(stamp)
    subject = log_attrs.get("cloudevents.event_subject")
    if subject:
        event["subject"] = subject
    data: dict[str, Any] = {}
    body = record.body
    kind = body.WhichOneof("value") if record.HasField("body") else None
    if kind == "kvlist_value":
        data = {kv.key: any_raw(kv.value) for kv in body.kvlist_value.values}
    elif kind == "string_value" and body.string_value.lstrip().startswith("{"):
        try:
            parsed = orjson.loads(body.string_value)
        except orjson.JSONDecodeError:
            problems.append("data: the log body looks like a JSON object but is not valid JSON")
        else:
            if isinstance(parsed, dict):
                data = parsed
    for kv in record.attributes:
        if kv.key.startswith("data.") and len(kv.key) > 5:
            data.setdefault(kv.key[5:], any_raw(kv.value))
    event["data"] = data
    trace_id, span_id = record.trace_id, record.span_id
    if len(trace_id) == 16 and len(span_id) == 8 and trace_id != _ZERO_TRACE and span_id != _ZERO_SPAN:
        event["traceparent"] = f"00-{trace_id.hex()}-{span_id.hex()}-{record.flags & 0xFF:02x}"
    return event


# Where a log record carries each CloudEvents attribute, added to validation problems.
_EVENT_HINTS = {
    "id": "set log attribute cloudevents.event_id or event.id",
    "time": "set the log record's time_unix_nano or observed_time_unix_nano",
    "source": "log attribute cloudevents.event_source or event.source; default: the token's source",
    "type": "the log record's EventName or attribute event.name",
    "subject": "log attribute cloudevents.event_subject",
}


def explain_event_problems(problems: list[str]) -> list[str]:
    """Event validation problems with where the log record carries the attribute at fault."""
    explained: list[str] = []
    for problem in problems:
        hint = _EVENT_HINTS.get(problem.split(":", 1)[0])
        explained.append(f"{problem} ({hint})" if hint else problem)
    return explained


def log_request_json(request: ExportLogsServiceRequest, location: tuple[int, int, int]) -> str:
    """One log record with its resource and scope, as an OTLP JSON ExportLogsServiceRequest."""
    i, j, k = location
    rl: ResourceLogs = request.resource_logs[i]
    sl: ScopeLogs = rl.scope_logs[j]
    out = ExportLogsServiceRequest()
    out_rl = out.resource_logs.add()
    out_rl.resource.CopyFrom(rl.resource)
    out_rl.schema_url = rl.schema_url
    out_sl = out_rl.scope_logs.add()
    out_sl.scope.CopyFrom(sl.scope)
    out_sl.schema_url = sl.schema_url
    out_sl.log_records.append(sl.log_records[k])
    return otlp_json(out)
