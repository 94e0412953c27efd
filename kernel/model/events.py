"""The business event: one model behind every door (CloudEvents, OTLP logs, file import).

An event is a CloudEvents 1.0 record whose `data` carries our business keys. `validate_event`
turns a raw mapping into a `BusinessEvent` or a list of readable problems; it never raises
for bad input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

SOURCE_SYSTEMS = ("erp", "wms", "tms", "crm", "ecommerce", "edi", "middleware")

STRING_KEYS = ("order_id", "shipment_id", "invoice_id", "customer_id", "sku", "location", "warehouse")
NUMBER_KEYS = ("quantity", "amount")

# Event types the default rules read, with the data keys each must carry.
EVENT_TYPES: dict[str, tuple[str, ...]] = {
    "order.created": ("order_id", "customer_id"),
    "order.accepted": ("order_id", "customer_id"),
    "order.released": ("order_id",),
    "shipment.confirmed": ("order_id", "shipment_id"),
    "asn.sent": ("shipment_id",),
    "shipment.delivered": ("shipment_id",),
    "invoice.posted": ("invoice_id", "order_id"),
    "inventory.snapshot": ("sku", "location", "quantity"),
}

# The key an event of each type is about, used as `subject` when the sender gives none.
PRIMARY_KEY: dict[str, str] = {
    "order.created": "order_id",
    "order.accepted": "order_id",
    "order.released": "order_id",
    "shipment.confirmed": "shipment_id",
    "asn.sent": "shipment_id",
    "shipment.delivered": "shipment_id",
    "invoice.posted": "invoice_id",
    "inventory.snapshot": "sku",
}

# Every pattern here validates a whole value: always `fullmatch` (Python's `$` also matches before a trailing
# newline, so `match` took "wms\n" for a source).
_SOURCE_RE = re.compile("^(" + "|".join(SOURCE_SYSTEMS) + r")(/[A-Za-z0-9._~-]+)*$")
# A valid `source` for SQL's match() (RE2, whose `$` is the end of the text): a refused record's claim may not be one.
# In Python use `is_source`.
SOURCE_PATTERN = _SOURCE_RE.pattern
_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TRACEPARENT_RE = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# RFC 3339 section 5.6 date-time, with the space its note allows; ASCII digits only (`\d` takes any Unicode digit).
_TIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_MAX_ID = 256
_LAST_MICROSECOND = (23, 59, 59, 999_999)  # of a UTC day: where a leap second is kept
# The times the store holds for every door: spans are nanoseconds since the epoch in DateTime64(9), which ends
# on 2262-04-11; events share the range so that a time one door takes, the other takes too.
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2262, 4, 11, tzinfo=UTC)


def source_system(source: str) -> str:
    """The system part of a source: `wms` for `wms/dallas`."""
    return source.split("/", 1)[0]


def is_source(value: str) -> bool:
    """Whether `value` is a whole source: a system, optionally with a path (`wms/dallas`); not `wms\\n`."""
    return _SOURCE_RE.fullmatch(value) is not None


def checked_source(value: str) -> str:
    """`value` when it is a whole source (is_source), else ValueError saying why: a validator for configured sources
    (rule sides, routing), where `wms/` or `wms//dallas` would match no event."""
    if source_system(value) not in SOURCE_SYSTEMS:
        raise ValueError(f"unknown source {value!r}; systems are {', '.join(SOURCE_SYSTEMS)}")
    if not is_source(value):
        raise ValueError(
            f"{value!r} is not a source an event can have: a system, optionally followed by /path"
            " (letters, digits, '.', '_', '~', '-'), e.g. wms/dallas"
        )
    return value


def is_event_type(value: str) -> bool:
    """Whether `value` is a type an event may have (`order.released`): what the doors accept."""
    return _TYPE_RE.fullmatch(value) is not None


def source_covers(grant: str, source: str) -> bool:
    """True when `grant` covers `source`: itself or a path below it (`wms` covers `wms/dallas`)."""
    return source == grant or source.startswith(grant + "/")


class BusinessEvent(BaseModel):
    """One business event, validated."""

    model_config = ConfigDict(frozen=True)

    id: str
    source: str
    type: str
    time: datetime
    subject: str
    data: dict[str, Any]
    trace_id: str = ""
    span_id: str = ""

    @property
    def system(self) -> str:
        """The system part of `source` (`wms` for `wms/dallas`)."""
        return source_system(self.source)

    def to_row(self, door: str, received_at: datetime) -> dict[str, Any]:
        """The `business_events` row of this event."""
        d = self.data
        amount = d.get("amount")
        quantity = d.get("quantity")
        return {
            "id": self.id,
            "source": self.source,
            "system": self.system,
            "type": self.type,
            "time": _ts(self.time),
            "subject": self.subject,
            **{k: str(d.get(k, "") or "") for k in STRING_KEYS},
            "quantity": None if quantity is None else float(quantity),
            "amount": None if amount is None else str(amount),
            "currency": str(d.get("currency", "") or ""),
            "data": orjson.dumps(d, default=str).decode(),
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "door": door,
            "received_at": _ts(received_at),
        }


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 date-time (`T` or a space, `Z` or `+hh:mm`), a fraction cut to the microsecond; None otherwise.

    A leap second (second 60 of 23:59 UTC: `23:59:60Z`, `18:59:60-05:00`, `05:29:60+05:30`) is the last microsecond
    of its minute: a datetime cannot hold second 60, and so the event stays after the minute's other events and
    before the next minute's."""
    if not isinstance(value, str):
        return None
    match = _TIME_RE.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    micros = int((match.group(7) or "")[:6].ljust(6, "0"))
    leap = second == 60
    if leap:
        second, micros = 59, 999_999
    sign, offset_hours, offset_minutes = match.group(8, 9, 10)
    zone = UTC
    if sign:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            return None
        offset = timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
        zone = timezone(-offset if sign == "-" else offset)
    try:
        parsed = datetime(year, month, day, hour, minute, second, micros, tzinfo=zone)
    except ValueError:  # a day or hour out of range: 2026-02-30, 24:00:00
        return None
    if leap:
        try:
            utc = parsed.astimezone(UTC)
        except OverflowError:  # past year 9999 in UTC: out of the stored range anyway
            return None
        if (utc.hour, utc.minute, utc.second, utc.microsecond) != _LAST_MICROSECOND:
            return None
    return parsed


def validate_event(raw: Mapping[str, Any]) -> tuple[BusinessEvent | None, list[str]]:
    """Validate a structured CloudEvent (attributes plus `data`) into a BusinessEvent.

    Returns the event and no problems, or None and every problem found, each naming the
    attribute or data key at fault.
    """
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        return None, ["event must be a JSON object"]
    specversion = raw.get("specversion")
    if specversion != "1.0":
        problems.append(f"specversion: must be '1.0', got {specversion!r}")
    event_id = raw.get("id")
    if event_id is not None and not isinstance(event_id, str):
        problems.append(f"id: must be a string, got {_json_kind(event_id)} ({event_id!r})")
    elif not isinstance(event_id, str) or not event_id.strip():
        problems.append("id: required, a non-empty string")
    elif id_problem := key_problem(event_id):
        problems.append(f"id: {id_problem}")
    source = raw.get("source")
    if not isinstance(source, str) or not source:
        problems.append("source: required")
    elif not is_source(source):
        problems.append(f"source: {source!r} is not one of {', '.join(SOURCE_SYSTEMS)} (optionally followed by /path)")
    event_type = raw.get("type")
    if not isinstance(event_type, str) or not event_type:
        problems.append("type: required")
    elif not _TYPE_RE.fullmatch(event_type):
        problems.append(f"type: {event_type!r} is not a valid event type")
    time_raw = raw.get("time")
    time = parse_time(time_raw)
    if time_raw is None:
        problems.append("time: required (RFC 3339 with an offset)")
    elif time is None:
        problems.append(f"time: {time_raw!r} is not RFC 3339 with an offset")
    elif time < EARLIEST_TIME:
        problems.append(f"time: {time_raw!r} is before 1970-01-01, the earliest time the store holds")
    elif time >= LATEST_TIME:
        problems.append(f"time: {time_raw!r} is past 2262-04-11, the latest time the store holds")
    data = raw.get("data", {})
    data_ok = True
    if "data_base64" in raw and "data" not in raw:
        problems.append("data_base64: binary data is not taken; send `data` as a JSON object")
        data_ok = False
    elif isinstance(data, (str, bytes)) and raw.get("datacontenttype", "application/json").endswith("json"):
        try:  # some senders encode the object twice: '{"order_id": ...}' as a string
            data = orjson.loads(data)
        except orjson.JSONDecodeError:
            problems.append(f"data: must be a JSON object, got a string that is not JSON text ({_cut(data)!r})")
            data, data_ok = {}, False
    if data is None:
        data = {}
    if not isinstance(data, dict):
        if data_ok:
            problems.append(f"data: must be a JSON object, got {_json_kind(data)}")
        data, data_ok = {}, False
    data = dict(data)
    if data_ok:  # with no readable data, "data.order_id: required" would only repeat the problem
        problems.extend(_check_data(event_type if isinstance(event_type, str) else "", data))
    subject = raw.get("subject")
    if subject is not None and not isinstance(subject, str):
        problems.append("subject: must be a string")
    elif isinstance(subject, str):
        subject = subject.strip()
        subject_problem = key_problem(subject, limit=False)
        if subject_problem:
            problems.append(f"subject: {subject_problem}")
    trace_id = span_id = ""
    traceparent = raw.get("traceparent")
    if traceparent is not None:
        match = _TRACEPARENT_RE.fullmatch(traceparent) if isinstance(traceparent, str) else None
        if match is None or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
            problems.append(f"traceparent: {traceparent!r} is not a W3C traceparent")
        else:
            trace_id, span_id = match.group(1), match.group(2)
    if problems:
        return None, problems
    assert isinstance(event_id, str) and isinstance(source, str) and isinstance(event_type, str) and time
    if not subject:
        key = PRIMARY_KEY.get(event_type)
        subject = str(data.get(key, "")) if key else ""
    return (
        BusinessEvent(
            id=event_id,
            source=source,
            type=event_type,
            time=time,
            subject=subject or "",
            data=data,
            trace_id=trace_id,
            span_id=span_id,
        ),
        [],
    )


def _json_kind(value: Any) -> str:
    """What a JSON value is, as a sender would call it."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, (str, bytes)):
        return "a string"
    return "an object" if isinstance(value, Mapping) else type(value).__name__


def _cut(value: str | bytes, limit: int = 40) -> str:
    text = value if isinstance(value, str) else value.decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit] + "…"


def key_problem(value: str, limit: bool = True) -> str | None:
    """Why a business key cannot be stored as given: too long (when `limit`), or a control character (NUL, ESC...)
    that no system of record puts in a key and that would garble the dashboard, Slack and the report files."""
    if limit and len(value) > _MAX_ID:
        return f"longer than {_MAX_ID} characters"
    if value.isascii() and value.isprintable():  # the usual key, checked in C: no control character
        return None
    found = _CONTROL_RE.search(value)
    if found:
        return f"{value!r} contains the control character U+{ord(found.group()):04X}"
    return None


def number_problem(value: Any) -> str | None:
    """Why a quantity or amount cannot be stored: not a number, not finite, or 10^14 or more in size (beyond
    what a Float64 quantity holds to the unit and far beyond any real stock or invoice)."""
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return f"{value!r} is not a number"
    if not number.is_finite() or abs(number) >= Decimal(10) ** 14:
        return f"{value!r} is out of range"
    return None


def _check_data(event_type: str, data: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for key in STRING_KEYS:
        if key in data and data[key] is not None:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                problems.append(f"data.{key}: must be a string")
            elif isinstance(value, int):
                data[key] = str(value)
            else:
                # fixed-width exports pad keys: 'SO-1   ' from one system is 'SO-1' from another
                data[key] = value = value.strip()
                problem = key_problem(value)
                if problem:
                    problems.append(f"data.{key}: {problem}")
    for key in NUMBER_KEYS:
        if key in data and data[key] is not None:
            value = data[key]
            if isinstance(value, bool):
                problems.append(f"data.{key}: must be a number")
                continue
            problem = number_problem(value)
            if problem:
                problems.append(f"data.{key}: {problem}")
    currency = data.get("currency")
    if currency is not None and not (isinstance(currency, str) and _CURRENCY_RE.fullmatch(currency)):
        problems.append(f"data.currency: {currency!r} is not an ISO 4217 code")
    for key in EVENT_TYPES.get(event_type, ()):
        if data.get(key) in (None, ""):
            problems.append(f"data.{key}: required for {event_type}")
    return problems
