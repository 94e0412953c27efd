"""Validation of the business event model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kernel.model.events import is_source, parse_time, source_covers, validate_event
from tests.factories import make_event


def test_valid_event_becomes_a_row() -> None:
    raw = make_event("shipment.confirmed", n=7, source="wms/dallas", time="2026-03-08T08:30:00-06:00")
    raw["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    event, problems = validate_event(raw)
    assert problems == [] and event is not None
    assert event.system == "wms" and event.subject == "SH-7"
    assert event.time == datetime(2026, 3, 8, 14, 30, tzinfo=UTC)
    row = event.to_row("events", datetime(2026, 3, 8, 15, 0, tzinfo=UTC))
    assert row["time"] == "2026-03-08 14:30:00.000000"
    assert (row["order_id"], row["shipment_id"], row["quantity"], row["warehouse"]) == ("SO-7", "SH-7", 3.0, "DAL")
    assert (row["trace_id"], row["span_id"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"id": ...}, "id: required"),
        ({"id": ""}, "id: required"),
        ({"source": ...}, "source: required"),
        ({"source": "sap"}, "source: 'sap' is not one of"),
        ({"type": ...}, "type: required"),
        ({"specversion": "0.3"}, "specversion: must be '1.0'"),
        ({"time": ...}, "time: required"),
        ({"time": "2026-03-08T08:30:00"}, "is not RFC 3339 with an offset"),
        ({"time": "yesterday"}, "is not RFC 3339 with an offset"),
        # year 1 was stored as 2001 before the range was checked ('1-01-01' read as a two-digit year)
        ({"time": "0001-01-01T00:00:00Z"}, "time: '0001-01-01T00:00:00Z' is before 1970-01-01, the earliest time"),
        ({"time": "1969-12-31T23:59:59.999999Z"}, "is before 1970-01-01"),
        ({"time": "1970-01-01T00:30:00+01:00"}, "is before 1970-01-01"),
        ({"time": "2262-04-11T00:00:00Z"}, "is past 2262-04-11, the latest time the store holds"),
        ({"time": "9999-12-31T23:59:59-14:00"}, "is past 2262-04-11"),
        ({"data": [1, 2]}, "data: must be a JSON object, got an array"),
        ({"id": 5}, "id: must be a string, got a number (5)"),
        ({"data": "hello"}, "data: must be a JSON object, got a string that is not JSON text ('hello')"),
        ({"data": ..., "data_base64": "e30="}, "data_base64: binary data is not taken; send `data` as a JSON object"),
        ({"data": {"amount": "12,5"}}, "data.amount: '12,5' is not a number"),
        ({"data": {"currency": "dollars"}}, "data.currency: 'dollars' is not an ISO 4217 code"),
        ({"data": {"order_id": None}}, "data.order_id: required for order.accepted"),
        ({"data": {"order_id": {"nested": 1}}}, "data.order_id: must be a string"),
        ({"traceparent": "00-xyz-01"}, "traceparent: '00-xyz-01' is not a W3C traceparent"),
        ({"data": {"order_id": "SO-\x005"}}, "data.order_id: 'SO-\\x005' contains the control character U+0000"),
        (
            {"data": {"customer_id": "C-\x1b[31m"}},
            "data.customer_id: 'C-\\x1b[31m' contains the control character U+001B",
        ),
        ({"data": {"order_id": " \t "}}, "data.order_id: required for order.accepted"),
        ({"subject": "SO-1\x7f"}, "subject: 'SO-1\\x7f' contains the control character U+007F"),
        ({"id": "evt-\x001"}, "id: 'evt-\\x001' contains the control character U+0000"),
        ({"id": "evt-1\n"}, "id: 'evt-1\\n' contains the control character U+000A"),
        ({"id": "x" * 257}, "id: longer than 256 characters"),
    ],
)
def test_each_problem_is_named(change: dict[str, Any], expected: str) -> None:
    event, problems = validate_event(make_event("order.accepted", **change))
    assert event is None
    assert any(expected in p for p in problems), problems


def test_unreadable_data_is_one_problem_not_a_list_of_missing_keys() -> None:
    event, problems = validate_event(make_event("order.accepted", data="hello"))
    assert event is None and problems == [
        "data: must be a JSON object, got a string that is not JSON text ('hello')"
    ], problems


def test_data_sent_as_json_text_is_read() -> None:
    event, problems = validate_event(make_event("order.released", data='{"order_id": "SO-9"}'))
    assert problems == [] and event is not None and event.data["order_id"] == "SO-9"


@pytest.mark.parametrize("time", ["1970-01-01T00:00:00Z", "1970-01-01T01:00:00+01:00", "2262-04-10T23:59:59Z"])
def test_the_ends_of_the_stored_range_are_accepted(time: str) -> None:
    event, problems = validate_event(make_event("order.accepted", time=time))
    assert problems == [] and event is not None


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        ("2026-11-02T15:00:00Z", datetime(2026, 11, 2, 15, 0, tzinfo=UTC)),
        ("2026-11-02t15:00:00z", datetime(2026, 11, 2, 15, 0, tzinfo=UTC)),
        ("2026-11-02 15:00:00Z", datetime(2026, 11, 2, 15, 0, tzinfo=UTC)),  # RFC 3339 section 5.6 allows a space
        ("2026-11-02 09:00:00-06:00", datetime(2026, 11, 2, 15, 0, tzinfo=UTC)),
        ("2026-11-02T17:00:00.5+02:00", datetime(2026, 11, 2, 15, 0, 0, 500000, tzinfo=UTC)),
        # nanoseconds (OTLP, RFC senders) are taken, cut to the microsecond the store holds
        ("2026-11-02T09:00:00.123456789-06:00", datetime(2026, 11, 2, 15, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-02T15:00:00-00:00", datetime(2026, 11, 2, 15, 0, tzinfo=UTC)),
        # a leap second (RFC 3339 section 5.7) is the last microsecond of its minute
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2016-12-31T23:59:60.5Z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2016-12-31T18:59:60-05:00", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2017-01-01T05:29:60+05:30", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ],
)
def test_rfc_3339_date_times_are_read(time: str, expected: datetime) -> None:
    assert parse_time(time) == expected
    event, problems = validate_event(make_event("order.accepted", time=time))
    assert problems == [] and event is not None and event.time == expected


@pytest.mark.parametrize(
    "time",
    [
        "2026-W45-1T15:00:00Z",  # ISO week date
        "2026-306T15:00:00Z",  # ISO ordinal date
        "20261102T150000Z",  # ISO basic format
        "2026-11-02T15:00:00+0200",  # offset without a colon
        "2026-11-02T15:00:00+02",
        "2026-11-02T15:00:00+02:00:30",
        "2026-11-02T15:00:00+24:00",
        "2026-11-02T15:00:00 Z",
        "2026-11-02T15:00:00,5Z",
        "2026-11-02T15:00:00.Z",
        "2026-11-02T15:00Z",
        "2026-11-02_15:00:00Z",
        "2026-11-02T15:00:00",
        "\uff12\uff10\uff12\uff16-11-02T15:00:00Z",  # full-width digits
        "2026-02-30T15:00:00Z",
        "2026-11-02T24:00:00Z",
        "2026-11-02T15:59:60Z",  # a second 60 is only the last of a UTC day
        "2016-12-31T23:59:60+01:00",
        "2026-11-02T15:59:61Z",
    ],
)
def test_times_that_are_not_rfc_3339_are_refused(time: str) -> None:
    assert parse_time(time) is None
    event, problems = validate_event(make_event("order.accepted", time=time))
    assert event is None and problems == [f"time: {time!r} is not RFC 3339 with an offset"], problems


def test_keys_padded_with_whitespace_are_trimmed() -> None:
    raw = make_event("shipment.confirmed", 8, subject=" SH-8 ", data={"order_id": "SO-8   ", "warehouse": "\tDAL "})
    event, problems = validate_event(raw)
    assert problems == [] and event is not None
    row = event.to_row("events", datetime(2026, 11, 2, tzinfo=UTC))
    assert (row["subject"], row["order_id"], row["warehouse"], row["shipment_id"]) == ("SH-8", "SO-8", "DAL", "SH-8")
    assert (event.data["order_id"], event.data["warehouse"]) == ("SO-8", "DAL")
    assert raw["data"]["order_id"] == "SO-8   "  # the sender's mapping is not changed


def test_ids_without_control_characters_are_kept_as_sent() -> None:
    for event_id in ("évt 1/2:3", "x" * 256, "0af7651916cd43dd8448eb211c80319c"):
        event, problems = validate_event(make_event("order.accepted", id=event_id))
        assert problems == [] and event is not None and event.id == event_id


def test_unicode_keys_are_kept_as_sent() -> None:
    event, problems = validate_event(
        make_event("order.accepted", data={"order_id": "SO-\u00e9-1", "customer_id": "Ｃ-1"})
    )
    assert problems == [] and event is not None and event.data["order_id"] == "SO-\u00e9-1"


def test_all_problems_are_reported_at_once() -> None:
    _, problems = validate_event({"specversion": "1.0", "data": {}})
    assert [p.split(":")[0] for p in problems] == ["id", "source", "type", "time"]


def test_unknown_types_are_accepted_without_required_keys() -> None:
    event, problems = validate_event(make_event("carrier.pickup", data={"shipment_id": "SH-1"}))
    assert problems == [] and event is not None and event.subject == ""


def test_source_grants_cover_sub_paths() -> None:
    event, _ = validate_event(make_event("shipment.confirmed", source="wms/dallas"))
    assert event is not None
    assert source_covers("wms", event.source) and source_covers("wms/dallas", event.source)
    assert not source_covers("wms/reno", event.source) and not source_covers("erp", event.source)
    assert not source_covers("wms", "wmsx")  # a prefix of the name is not a parent path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"source": "wms\n"}, "source: 'wms\\n' is not one of"),
        ({"source": "wms/dallas\n"}, "source: 'wms/dallas\\n' is not one of"),
        ({"type": "order.accepted\n"}, "type: 'order.accepted\\n' is not a valid event type"),
        ({"data": {"currency": "USD\n"}}, "data.currency: 'USD\\n' is not an ISO 4217 code"),
        (
            {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n"},
            "is not a W3C traceparent",
        ),
    ],
)
def test_a_trailing_newline_is_not_part_of_a_valid_value(change: dict[str, Any], expected: str) -> None:
    """Python's `$` matches before a final newline: every whole value is checked with fullmatch."""
    event, problems = validate_event(make_event("order.accepted", **change))
    assert event is None and any(expected in p for p in problems), problems


def test_is_source_takes_whole_sources_only() -> None:
    assert is_source("wms") and is_source("wms/dallas")
    assert not any(is_source(s) for s in ("wms\n", "wms/dallas\n", "sap", "wms/", ""))
