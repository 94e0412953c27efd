"""Reading CSV and NDJSON files into structured events, streamed, with line numbers."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from collector.fileimport import (
    DELIMITERS,
    FileError,
    FileReader,
    Format,
    detect_format,
    parse_number,
    row_to_event,
)
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


def test_csv_header_names_are_trimmed_and_matched_without_regard_to_case(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        " ID ,Source,TYPE,Time,Order_ID,Data.Amount,Customer Name\n"
        "e1,erp,order.accepted,2026-11-02T09:00:00Z,SO-1,12.5,ACME\n"
    )
    reader = FileReader(path, "csv")
    [record] = list(reader)
    assert record.event == {
        "specversion": "1.0",
        "id": "e1",
        "source": "erp",
        "type": "order.accepted",
        "time": "2026-11-02T09:00:00Z",
        "data": {"order_id": "SO-1", "amount": 12.5, "Customer Name": "ACME"},  # other names as written
    }
    assert reader.columns == ["id", "source", "type", "time", "order_id", "data.amount", "Customer Name"]
    assert reader.notes == []


@pytest.mark.parametrize(("delimiter", "name"), [(";", ";"), ("\t", "tab")])
def test_the_delimiter_is_the_one_that_names_known_columns(tmp_path: Path, delimiter: str, name: str) -> None:
    path = tmp_path / "export.csv"
    cells = ["ID", "Source", "Type", "Time", "Order_ID", "Note"]
    row = ["e1", "wms", "order.released", "2026-11-02T09:00:00Z", "SO-1", "a, b"]
    path.write_text(delimiter.join(cells) + "\n" + delimiter.join(row) + "\n")
    reader = FileReader(path, "csv")
    [record] = list(reader)
    assert (reader.delimiter, DELIMITERS[reader.delimiter]) == (delimiter, name)
    assert record.event is not None and record.source == "wms"
    assert record.event["data"] == {"order_id": "SO-1", "Note": "a, b"}
    # a comma header keeps the comma, even with a ; in a column name
    path.write_text("id,source,type,time,note;comment\ne1,erp,order.released,2026-11-02T09:00:00Z,x\n")
    reader = FileReader(path, "csv")
    assert [r.event is not None for r in reader] == [True] and reader.delimiter == ","


@pytest.mark.parametrize(
    ("header", "column", "positions"),
    [
        ("id,source,type,time,order_id,order_id", "order_id", (5, 6)),
        ("id,source,type,time,data.order_id,Order_ID ", "order_id", (5, 6)),
        ("ID,source,id,type,time", "id", (1, 3)),
    ],
)
def test_a_header_naming_a_column_twice_refuses_the_file(
    tmp_path: Path, header: str, column: str, positions: tuple[int, int]
) -> None:
    path = tmp_path / "export.csv"
    path.write_text(f"{header}\ne1,erp,order.released,2026-11-02T09:00:00Z,SO-1,SO-2\n")
    with pytest.raises(FileError) as info:
        list(FileReader(path, "csv"))
    assert str(info.value).startswith(
        f"line 1: the header names the column {column!r} twice (columns {positions[0]} and {positions[1]})"
    )


def test_a_header_that_looks_wrong_is_noted(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("id,type,time,order_id\ne1,order.released,2026-11-02T09:00:00Z,SO-1\n")
    reader = FileReader(path, "csv")
    [record] = list(reader)
    assert record.event is not None and record.source is None
    assert len(reader.notes) == 1 and reader.notes[0].startswith("the header (line 1) has no source column")
    path.write_text("\n\nid,source,order_id\ne1,erp,SO-1\n")
    reader = FileReader(path, "csv")
    list(reader)
    assert reader.notes == ["the header (line 3) has no type, time columns: the tower refuses every event without one"]
    path.write_text("Nr;Quelle;Art\n1;erp;x\n")
    reader = FileReader(path, "csv")
    list(reader)
    assert reader.delimiter == ","
    assert reader.notes[0].startswith("line 1, the header, names no column the importer knows")
    assert "it looks ;-separated" in reader.notes[0] and reader.notes[0].endswith("It reads: Nr;Quelle;Art")
    assert reader.notes[1].startswith("the header (line 1) has no source column")


@pytest.mark.parametrize(
    ("content", "fmt", "message"),
    [
        (b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\n\x00\x01", "csv", "line 1 (the header) holds binary data"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\n", "csv", "line 1 (the header) is not UTF-8 text"),
        ("id,source\ne1,erp\n".encode("utf-16"), "csv", "line 1: the file is UTF-16 text"),
        (b"\n\x00\x00\x01\x00binary\n", "ndjson", "line 2 (the first record) holds binary data"),
    ],
)
def test_a_file_that_is_not_text_is_refused_whole_naming_the_line(
    tmp_path: Path, content: bytes, fmt: Format, message: str
) -> None:
    path = tmp_path / f"export.{fmt}"
    path.write_bytes(content)
    with pytest.raises(FileError, match="^" + re.escape(message)):
        list(FileReader(path, fmt))


def test_csv_rows_that_are_not_csv_say_why_in_words(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(
        b"id,source,type,time\n"
        b"e1,erp,order.released,2026-\r11-02T09:00:00Z\n"
        b"e2,erp,order.released,2026-11-02T09:00:00Z\x00\n"
        b"e3,erp,order.released,2026-11-02T09:00:00Z\n"
    )
    records = list(FileReader(path, "csv"))
    assert [(r.line, r.problems) for r in records] == [
        (2, ["not a CSV row: a carriage return inside a cell that is not quoted (binary data, or a cell to quote)"]),
        (3, ["binary data (a NUL byte), not CSV text"]),
        (4, []),
    ]
