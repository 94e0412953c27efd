"""Validation of the business event model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kernel.model.events import source_covers, validate_event
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
        ({"data": [1, 2]}, "data: must be a JSON object"),
        ({"data": {"amount": "12,5"}}, "data.amount: '12,5' is not a number"),
        ({"data": {"currency": "dollars"}}, "data.currency: 'dollars' is not an ISO 4217 code"),
        ({"data": {"order_id": None}}, "data.order_id: required for order.accepted"),
        ({"data": {"order_id": {"nested": 1}}}, "data.order_id: must be a string"),
        ({"traceparent": "00-xyz-01"}, "traceparent: '00-xyz-01' is not a W3C traceparent"),
    ],
)
def test_each_problem_is_named(change: dict[str, Any], expected: str) -> None:
    event, problems = validate_event(make_event("order.accepted", **change))
    assert event is None
    assert any(expected in p for p in problems), problems


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
