"""Reading CSV and NDJSON files into structured events, streamed, with line numbers."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from collector.fileimport import FileReader, detect_format, parse_number, row_to_event
from tests.factories import make_event


def test_format_from_extension_or_explicit(tmp_path: Path) -> None:
    assert detect_format(tmp_path / "a.CSV") == "csv"
    assert detect_format(tmp_path / "a.ndjson") == "ndjson"
    assert detect_format(tmp_path / "a.jsonl") == "ndjson"
    assert detect_format(tmp_path / "a.txt", "csv") == "csv"
    with pytest.raises(ValueError, match="--format"):
        detect_format(tmp_path / "a.txt")
    with pytest.raises(ValueError, match="unknown format"):
        detect_format(tmp_path / "a.csv", "xlsx")


def test_csv_columns_become_attributes_and_data(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_bytes(
        b"\xef\xbb\xbfid,source,type,time,subject,traceparent,order_id,data.customer_id,amount,quantity,currency,note\r\n"
        b'e1,erp,order.accepted,2026-11-02T09:00:00-06:00,,,SO-1,C-1,120.50,,USD,"multi\r\nline, quoted"\r\n'
        b"\r\n"
        b"e2,wms,shipment.confirmed,2026-11-02T10:00:00Z,SH-2,,SO-2,,,7,,\r\n"
    )
    reader = FileReader(path, "csv")
    records = list(reader)
    assert reader.bytes_read == reader.size == path.stat().st_size
    assert [r.line for r in records] == [2, 5]
    first, second = records
    assert first.event == {
        "specversion": "1.0",
        "id": "e1",
        "source": "erp",
        "type": "order.accepted",
        "time": "2026-11-02T09:00:00-06:00",
        "data": {
            "order_id": "SO-1",
            "customer_id": "C-1",
            "amount": 120.5,
            "currency": "USD",
            "note": "multi\r\nline, quoted",
        },
    }
    assert orjson.loads(first.payload) == first.event
    assert first.raw.startswith("e1,erp,") and first.raw.endswith('line, quoted"')
    assert second.event is not None and second.event["subject"] == "SH-2"
    assert second.event["data"] == {"order_id": "SO-2", "quantity": 7}
    assert second.source == "wms"


def test_csv_rows_with_the_wrong_cell_count_are_unreadable_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,source,type,time,order_id\ne1,erp,order.released,2026-11-02T09:00:00Z,SO-1,extra\ne2,erp\n")
    records = list(FileReader(path, "csv"))
    assert [(r.line, r.event, r.problems) for r in records] == [
        (2, None, ["the row has 6 cells, the header has 5 columns"]),
        (3, None, ["the row has 2 cells, the header has 5 columns"]),
    ]
    assert records[1].raw == "e2,erp"


def test_ndjson_lines_are_sent_as_written_and_bad_lines_kept(tmp_path: Path) -> None:
    event = make_event()
    path = tmp_path / "events.ndjson"
    good = orjson.dumps(event)
    path.write_bytes(good + b"\n\n{broken\n[1, 2]\n\xff\xfe\n" + good + b"\n")
    records = list(FileReader(path, "ndjson"))
    assert [r.line for r in records] == [1, 3, 4, 5, 6]
    assert records[0].event == event and records[0].payload == good.decode()
    assert records[1].raw == "{broken" and records[1].problems[0].startswith("not valid JSON")
    assert records[2].problems == ["not a JSON object (one event a line)"]
    assert records[3].problems == ["not UTF-8 text"]
    assert records[4].event == event


def test_numbers_and_text() -> None:
    assert (parse_number("12"), parse_number("-3.5"), parse_number("1e3"), parse_number("1,234")) == (
        12,
        -3.5,
        1000.0,
        "1,234",
    )
    assert row_to_event(["specversion", "id", "quantity"], ["1.0", "x", "abc"]) == {
        "specversion": "1.0",
        "id": "x",
        "data": {"quantity": "abc"},
    }
