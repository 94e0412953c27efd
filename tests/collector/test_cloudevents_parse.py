"""Splitting CloudEvents requests into records: modes, framing errors, binary headers."""

from __future__ import annotations

import tracemalloc

import orjson
import pytest

from collector.cloudevents import (
    BATCH,
    BINARY,
    NDJSON,
    STRUCTURED,
    BodyRefused,
    binary_record,
    detect_mode,
    parse_body,
)
from tests.factories import make_event


@pytest.mark.parametrize(
    ("content_type", "headers", "mode"),
    [
        ("application/cloudevents+json; charset=utf-8", {}, STRUCTURED),
        ("Application/CloudEvents-Batch+JSON", {}, BATCH),
        ("application/x-ndjson", {}, NDJSON),
        ("application/ndjson", {}, NDJSON),
        ("application/json", {"ce-id": "1"}, BINARY),
        ("application/vnd.acme+json", {"ce-specversion": "1.0"}, BINARY),
        (None, {"ce-id": "1"}, BINARY),
        # a structured content type wins over stray ce- headers, as the HTTP binding says
        ("application/cloudevents+json", {"ce-id": "1"}, STRUCTURED),
        ("application/x-ndjson", {"ce-id": "1"}, NDJSON),
    ],
)
def test_modes_are_detected(content_type: str | None, headers: dict[str, str], mode: str) -> None:
    assert detect_mode(content_type, headers) == mode


@pytest.mark.parametrize(
    ("content_type", "headers", "fragment"),
    [
        ("text/plain", {}, "'text/plain' is not accepted"),
        ("application/json", {}, "binary mode (ce-* headers"),
        (None, {}, "'none' is not accepted"),
        ("text/csv", {"ce-id": "1"}, "business event data is JSON"),
    ],
)
def test_other_content_types_are_415(content_type: str | None, headers: dict[str, str], fragment: str) -> None:
    with pytest.raises(BodyRefused) as info:
        detect_mode(content_type, headers)
    assert info.value.status == 415
    assert fragment in info.value.message


def test_undecodable_bodies_are_400_and_worth_a_dead_letter() -> None:
    with pytest.raises(BodyRefused) as info:
        parse_body(STRUCTURED, b'{"id": ', STRUCTURED, {})
    assert (info.value.status, info.value.dead_letter) == (400, True)
    assert "not valid JSON" in info.value.message
    with pytest.raises(BodyRefused) as info:
        parse_body(BATCH, orjson.dumps(make_event()), BATCH, {})
    assert (info.value.status, info.value.dead_letter) == (400, True)
    assert "must be a JSON array" in info.value.message


def test_a_leading_utf8_byte_order_mark_is_skipped_in_every_json_mode() -> None:
    """PowerShell and .NET start JSON text with one; orjson refused the body ('BOM is not supported')."""
    event = make_event()
    text = orjson.dumps(event)
    bom = b"\xef\xbb\xbf"
    assert parse_body(STRUCTURED, bom + text, STRUCTURED, {}).records == [(event, text.decode(), [])]
    assert parse_body(BATCH, bom + orjson.dumps([event]), BATCH, {}).records == [(event, text.decode(), [])]
    parsed = parse_body(NDJSON, bom + text + b"\n" + text + b"\n", "application/x-ndjson", {})
    assert parsed.records == [(event, text.decode(), [])] * 2 and parsed.lines == [1, 2]
    [(binary, _, problems)] = parse_body(
        BINARY, bom + b'{"order_id": "SO-1"}', "application/json", {"ce-id": "1"}
    ).records
    assert problems == [] and binary is not None and binary["data"] == {"order_id": "SO-1"}
    with pytest.raises(BodyRefused, match="not valid JSON"):  # only at the start: it is not JSON whitespace
        parse_body(STRUCTURED, b" " + bom + text, STRUCTURED, {})


def test_batch_records_keep_their_raw_text_and_non_objects_are_refused_records() -> None:
    event = make_event()
    parsed = parse_body(BATCH, orjson.dumps([event, 42, "x"]), BATCH, {})
    assert [r[0] for r in parsed.records] == [event, None, None]
    assert orjson.loads(parsed.records[0][1]) == event
    assert [r[1] for r in parsed.records[1:]] == ["42", '"x"']
    assert parsed.records[1][2] == ["event must be a JSON object"]


def test_ndjson_skips_blank_lines_and_refuses_bad_lines_alone() -> None:
    good = orjson.dumps(make_event()).decode()
    body = f"{good}\n\n  \n{{not json\r\n[1]\n{good}\n".encode()
    parsed = parse_body(NDJSON, body, "application/x-ndjson", {})
    assert parsed.lines == [1, 4, 5, 6]
    assert [r[0] is not None for r in parsed.records] == [True, False, False, True]
    assert parsed.records[1][1] == "{not json"
    assert parsed.records[1][2][0].startswith("line 4: not valid JSON")
    assert parsed.records[2][2] == ["line 5: event must be a JSON object"]


def test_binary_event_from_headers_with_percent_decoding_and_plain_traceparent() -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "b-1",
        "ce-source": "wms/dallas",
        "ce-type": "shipment.confirmed",
        "ce-time": "2026-11-02T09:00:00-06:00",
        "ce-subject": "SH-%C3%A9",
        "traceparent": traceparent,
        "content-type": "application/json",
    }
    event, raw, problems = binary_record(headers, b'{"order_id": "SO-1", "shipment_id": "SH-1"}', "application/json")
    assert problems == []
    assert event == {
        "specversion": "1.0",
        "id": "b-1",
        "source": "wms/dallas",
        "type": "shipment.confirmed",
        "time": "2026-11-02T09:00:00-06:00",
        "subject": "SH-é",
        "traceparent": traceparent,
        "datacontenttype": "application/json",
        "data": {"order_id": "SO-1", "shipment_id": "SH-1"},
    }
    assert orjson.loads(raw) == event
    # ce-traceparent wins over the plain header
    event, _, _ = binary_record({**headers, "ce-traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}, b"", None)
    assert event is not None and event["traceparent"].startswith("00-111")
    assert "data" not in event


def test_binary_body_that_is_not_json_is_a_refused_record_keeping_the_text() -> None:
    event, raw, problems = binary_record({"ce-id": "b-2"}, b"{oops", "application/json")
    assert event is not None and event["data"] == "{oops"
    assert problems[0].startswith("data: the body is not valid JSON")
    assert orjson.loads(raw)["data"] == "{oops"


def test_a_body_of_more_records_than_allowed_is_refused_before_any_is_read() -> None:
    """A batch or NDJSON body over `max_records` is one 413 worth a dead letter, counted before any record is
    parsed: a small gzip body of a million `{}` was a million rejections (gigabytes)."""
    for mode, body, count in (
        (BATCH, orjson.dumps([{}] * 4), "more than 3 records"),
        (BATCH, b' [ {"a": [1, 2]} ,\n{}, 7, "x" , {"b": "}"}]', "more than 3 records"),
        (NDJSON, b"{}\n" * 3 + b"not json\n", "more than 3 records"),
    ):
        with pytest.raises(BodyRefused) as info:
            parse_body(mode, body, mode, {}, max_records=3)
        assert (info.value.status, info.value.dead_letter) == (413, True)
        assert count in info.value.message and "TOWER_COLLECTOR_MAX_RECORDS_PER_REQUEST" in info.value.message
    # blank lines are not records; at the limit every record is read, with its line
    parsed = parse_body(NDJSON, b"\n \r\n{}\n\t\n[1]\n\n{}", NDJSON, {}, max_records=3)
    assert (len(parsed.records), parsed.lines) == (3, [3, 5, 7])
    assert len(parse_body(BATCH, b"[{}, {}, {}]", BATCH, {}, max_records=3).records) == 3
    # commas inside elements are not elements
    assert len(parse_body(BATCH, b'[{"a": "1,2,3,4"}, {"b": [5, 6, 7]}]', BATCH, {}, max_records=3).records) == 2


@pytest.mark.parametrize(
    "body",
    [
        b'[{}, {}, {}, {"a": 1,}]',
        b"[{}, {}, {},",
        b'{"a": 1, "b": 2, "c": 3, "d": 4}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_a_batch_that_is_not_a_json_array_is_refused_as_such_not_counted(body: bytes) -> None:
    # the count gives up on what is not an array of JSON values: the full parse names the problem (400)
    with pytest.raises(BodyRefused) as info:
        parse_body(BATCH, body, BATCH, {}, max_records=3)
    assert info.value.status == 400


def test_counting_a_batch_keeps_no_element() -> None:
    # a few MB of `[{},{},...]` are refused without building millions of dicts
    body = b"[" + b",".join([b"{}"] * 2_000_000) + b"]"
    tracemalloc.start()
    try:
        with pytest.raises(BodyRefused) as info:
            parse_body(BATCH, body, BATCH, {}, max_records=50_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.status == 413
    assert peak < 3 * len(body)  # the decoded text (one copy of the body), not 2,000,000 dicts (~130 MB)
