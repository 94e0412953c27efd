"""`tower import FILE` against a real tower: summary, stored rows, refusals with line numbers, retries."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from hashlib import sha256
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from collector.fileimport import FileReader
from kernel.store.embedded import EmbeddedStore
from tests.factories import make_event
from tests.support import RunningTower, free_port, start_in_process
from tower.cli import main
from tower.commands import events as import_module

CLEAN_ENV: dict[str, str | None] = {"TOWER_INGEST_TOKEN": None, "TOWER_URL": None, "TOWER_INGEST_TOKENS": None}


def run(args: list[str], env: Mapping[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, args, env={**CLEAN_ENV, **(env or {})}, catch_exceptions=False)


def stored(running: RunningTower) -> list[dict[str, Any]]:
    assert running.tower is not None
    return running.tower.store.query("SELECT * FROM business_events FINAL ORDER BY id")


def letters(running: RunningTower) -> list[dict[str, Any]]:
    assert running.tower is not None
    return running.tower.store.query("SELECT door, source, reason, raw, status FROM dead_letters FINAL")


def progress_lines(tower: RunningTower, path: Path, width: int) -> list[str]:
    """The plain progress lines an import of `path` (NDJSON, 2 records a batch) writes on a console `width` wide."""
    console = Console(file=io.StringIO(), width=width)
    sender = import_module.Sender(tower.http_url, tower.token("erp"))
    try:
        import_module.run_import(FileReader(path, "ndjson"), sender, 2, console, every=0)
    finally:
        sender.close()
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined,no-any-return]


def test_import_csv_stores_rows_and_reports_refused_lines(tower: RunningTower, tmp_path: Path) -> None:
    path = tmp_path / "erp-export.csv"
    path.write_text(
        "id,source,type,time,order_id,customer_id,amount,currency,warehouse\n"
        "a-1,erp,order.accepted,2026-11-02T08:00:00-06:00,SO-1,C-1,1200.50,USD,DAL\n"
        "a-2,erp,order.accepted,2026-11-02T08:05:00-06:00,SO-2,C-2,99,USD,DAL\n"
        "r-1,erp,order.released,2026-11-02T09:00:00-06:00,,,,,DAL\n"
        "a-3,erp,order.accepted,2026-11-02T08:10:00-06:00,SO-3,C-3,12,USD\n"
        "\n"
        "r-2,erp,order.released,2026-11-02T09:30:00-06:00,SO-1,,,,DAL\n"
    )
    result = run(["import", str(path), "--url", tower.http_url, "--token", tower.token("erp"), "--batch-size", "2"])
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "erp-export.csv (csv): 5 records read" in out
    assert "stored:  3" in out
    assert "refused: 2 (1 by the tower, 1 unreadable, not sent)" in out
    assert "line 4: data.order_id: required for order.released" in out
    assert "line 5: the row has 8 cells, the header has 9 columns (not sent)" in out
    assert "Refused by the tower: in dead letters (door events)" in out and "Unreadable: not sent" in out
    rows = stored(tower)
    assert [r["id"] for r in rows] == ["a-1", "a-2", "r-2"]
    assert (float(rows[0]["amount"]), rows[0]["time"], rows[0]["warehouse"]) == (
        1200.5,
        "2026-11-02 14:00:00.000000",
        "DAL",
    )
    assert {r["door"] for r in rows} == {"events"}
    [letter] = letters(tower)
    assert orjson.loads(letter["raw"])["id"] == "r-1"
    assert letter["reason"] == "data.order_id: required for order.released"


def test_an_id_given_to_two_different_events_is_not_sent_twice(tower: RunningTower, tmp_path: Path) -> None:
    """An export that takes the order number as every event's id: the tower would keep one event per id."""
    path = tmp_path / "erp-export.csv"
    released = "SO-1,erp,order.released,2026-11-02T09:00:00-06:00,SO-1,,DAL"
    path.write_text(
        "id,source,type,time,order_id,customer_id,warehouse\n"
        "SO-1,erp,order.accepted,2026-11-02T08:00:00-06:00,SO-1,C-1,DAL\n"
        f"{released}\n"  # the same id, another event
        "SO-1,erp,order.accepted,2026-11-02T08:00:00-06:00,SO-1,C-1,DAL\n"  # the first again: counts once
        "SO-2,erp,order.accepted,2026-11-02T08:30:00-06:00,SO-2,C-2,DAL\n"
    )
    rejects = tmp_path / "rejects.ndjson"
    result = run(
        ["import", str(path), "--url", tower.http_url, "--token", tower.token("erp"), "--rejects", str(rejects)]
    )
    out = result.stdout
    assert result.exit_code == 1, out
    assert "stored:  3" in out and "refused: 1 (0 by the tower, 0 unreadable, 1 reusing an id, not sent)" in out
    reason = (
        "id: 'SO-1' of source 'erp' is already the id of another event, line 2 (order.accepted): the tower keeps one"
        " event per source and id, so one of the two would be lost. Give each event its own id (a UUID, or type and"
        " key together: order.released:SO-1001)"
    )
    assert f"line 3: {reason} (not sent)" in out and "Reusing an id: not sent" in out
    assert [(r["id"], r["type"]) for r in stored(tower)] == [("SO-1", "order.accepted"), ("SO-2", "order.accepted")]
    assert [orjson.loads(line) for line in rejects.read_text().splitlines()] == [
        {"line": 3, "errors": [reason], "sent": False, "raw": released}
    ]


def test_import_ndjson_groups_sources_by_token(tower: RunningTower, tmp_path: Path) -> None:
    records = [
        make_event("order.accepted", 1),
        make_event("shipment.confirmed", 1),
        make_event("shipment.delivered", 1),
        make_event("order.released", 1),
        make_event("asn.sent", 1, source="edi/partner-x"),
    ]
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    env = {"TOWER_INGEST_TOKENS": orjson.dumps(tower.settings.ingest.tokens).decode()}
    result = run(["import", str(path), "--url", tower.http_url, "--batch-size", "3"], env)
    assert result.exit_code == 0, result.output
    assert "mixed.ndjson (ndjson): 5 records read" in result.stdout
    assert "stored:  5" in result.stdout and "refused: 0" in result.stdout
    assert [r["id"] for r in stored(tower)] == sorted(r["id"] for r in records)
    assert letters(tower) == []
    # importing the same file again stores nothing new as far as queries are concerned
    again = run(["import", str(path), "--url", tower.http_url, "--batch-size", "3"], env)
    assert again.exit_code == 0
    assert len(stored(tower)) == 5


def test_import_ndjson_bad_lines_and_wrong_sources(tower: RunningTower, tmp_path: Path) -> None:
    good = make_event("order.released", 1)
    foreign = make_event("shipment.confirmed", 2)  # source wms, token of erp
    unknown = make_event("order.released", 3, source="sap")
    path = tmp_path / "events.jsonl"
    path.write_bytes(orjson.dumps(good) + b"\n{oops\n" + orjson.dumps(foreign) + b"\n" + orjson.dumps(unknown) + b"\n")
    rejects = tmp_path / "rejects.ndjson"
    result = run(
        ["import", str(path), "--url", tower.http_url, "--token", tower.token("erp"), "--rejects", str(rejects)]
    )
    assert result.exit_code == 1
    out = result.stdout
    assert "stored:  1" in out and "refused: 3 (1 by the tower, 1 unreadable, 1 with no source system, not sent)" in out
    assert "line 2: not valid JSON" in out
    assert "line 3: source: 'wms' is not allowed for this token (it may send erp)" in out
    # no token may send 'sap', whatever --token says: refused here, with the tower's words, and not dead-lettered
    assert "line 4: source: 'sap' is not one of erp, wms, tms, crm, ecommerce, edi, middleware" in out
    assert "No source system: not sent" in out
    assert [r["id"] for r in stored(tower)] == [good["id"]]
    assert [orjson.loads(d["raw"])["id"] for d in letters(tower)] == [foreign["id"]]
    written = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [(w["line"], w["sent"]) for w in written] == [(2, False), (3, True), (4, False)]
    assert written[0]["raw"] == "{oops"


def test_import_retries_after_503_honouring_retry_after(
    tower: RunningTower, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tower.tower is not None
    pipeline = tower.tower.pipeline
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        pipeline.start()  # the tower recovers while the importer waits

    monkeypatch.setattr(import_module, "sleep", wait)
    path = tmp_path / "e.ndjson"
    path.write_bytes(orjson.dumps(make_event("order.released", 1)) + b"\n")
    pipeline.stop()
    result = run(["import", str(path), "--url", tower.http_url, "--token", tower.token("erp")])
    assert result.exit_code == 0, result.output
    assert waits == [2.0]
    assert len(stored(tower)) == 1


def test_import_splits_a_batch_the_tower_finds_too_large(store: EmbeddedStore, tmp_path: Path) -> None:
    with start_in_process(tmp_path, store, max_decompressed_bytes=2500) as small:
        path = tmp_path / "e.ndjson"
        path.write_bytes(b"\n".join(orjson.dumps(make_event("order.released", n)) for n in range(12)))
        result = run(["import", str(path), "--url", small.http_url, "--token", small.token("erp")])
        assert result.exit_code == 0, result.output
        assert "stored:  12" in result.stdout
        assert len(stored(small)) == 12


def test_progress_comes_as_lines_when_not_on_a_terminal(tower: RunningTower, tmp_path: Path) -> None:
    path = tmp_path / "e.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(make_event("order.released", n)) for n in range(6)))
    result = run(["import", str(path), "--url", tower.http_url, "--token", tower.token("erp"), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    size = path.stat().st_size / 1e6
    # a line every 10 s, and the last: this import is quick, so only the last (a bar would be cut to 80 columns)
    assert re.fullmatch(
        rf"importing e\.ndjson: {size:,.1f} of {size:,.1f} MB \(100%\), 6 read, 6 stored, [\d,]+ records/s, done\n",
        result.stderr,
    )
    lines = progress_lines(tower, path, width=80)
    assert [re.sub(r", \S+ records/s", "", line.split(" MB ", 1)[1]) for line in lines] == [
        "(33%), 2 read, 2 stored",
        "(67%), 4 read, 4 stored",
        "(100%), 6 read, 6 stored",
        "(100%), 6 read, 6 stored, done",
    ]


def test_import_usage_and_connection_errors_exit_2(tower: RunningTower, tmp_path: Path) -> None:
    path = tmp_path / "events.txt"
    path.write_text("x\n")
    result = run(["import", str(path), "--url", tower.http_url, "--token", tower.token("erp")])
    assert result.exit_code == 2 and "--format" in result.output
    ndjson = tmp_path / "e.ndjson"
    ndjson.write_bytes(orjson.dumps(make_event("order.released", 1)) + b"\n")
    down = run(["import", str(ndjson), "--url", f"http://127.0.0.1:{free_port()}", "--token", "x" * 20])
    assert down.exit_code == 2 and "cannot reach the tower" in down.output
    assert "nothing was sent" in down.output and "batch in flight" not in down.output
    unknown_token = run(["import", str(ndjson), "--url", tower.http_url, "--token", "y" * 20])
    assert unknown_token.exit_code == 2 and "refused the ingest token" in unknown_token.output
    assert stored(tower) == []


def as_csv(columns: list[str], events: list[dict[str, Any]], sep: str = ",") -> str:
    """A CSV export of `events` under these header cells (each the attribute or data key it names, in any case)."""
    lines = [sep.join(columns)]
    for event in events:
        values = {**event["data"], **{k: v for k, v in event.items() if k != "data"}}
        lines.append(sep.join(str(values.get(column.strip().lower(), "")) for column in columns))
    return "\n".join(lines) + "\n"


def granted(running: RunningTower) -> dict[str, str]:
    """The environment of an import without --token: a token per source, as `tower serve` generates them."""
    return {"TOWER_INGEST_TOKENS": orjson.dumps(running.settings.ingest.tokens).decode()}


COLUMNS = ["id", "source", "type", "time", "order_id", "warehouse"]


def test_records_with_no_source_system_are_refused_alone_and_the_rest_goes_on(
    tower: RunningTower, tmp_path: Path
) -> None:
    """No token may send them: they used to stop the import ("no ingest token for ''") with "refused: 0"."""
    sap = [make_event("order.released", n, source="sap") for n in (1, 2)]  # the whole first batch
    blank = make_event("order.released", 3, source="")
    good = [make_event("order.released", n) for n in (4, 5)]
    path = tmp_path / "orders.csv"
    path.write_text(as_csv(COLUMNS, [*sap, blank, *good]))
    rejects = tmp_path / "rejects.ndjson"
    args = ["import", str(path), "--url", tower.http_url, "--batch-size", "2", "--rejects", str(rejects)]
    result = run(args, granted(tower))
    out = result.stdout
    assert result.exit_code == 1, result.output
    assert "stored:  2" in out and "refused: 3 (0 by the tower, 0 unreadable, 3 with no source system, not sent)" in out
    assert "line 2: source: 'sap' is not one of erp, wms, tms, crm, ecommerce, edi, middleware" in out
    assert "line 4: source: required (not sent)" in out and "No source system: not sent" in out
    assert sorted(r["id"] for r in stored(tower)) == sorted(e["id"] for e in good)
    assert letters(tower) == []  # nothing for the on-call: the file is at fault
    assert [(w["line"], w["sent"]) for w in map(orjson.loads, rejects.read_text().splitlines())] == [
        (2, False),
        (3, False),
        (4, False),
    ]


def test_a_csv_without_a_source_column_says_so(tower: RunningTower, tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(as_csv(["id", "type", "time", "order_id"], [make_event("order.released", n) for n in (1, 2)]))
    rejects = tmp_path / "rejects.ndjson"
    result = run(["import", str(path), "--url", tower.http_url, "--rejects", str(rejects)], granted(tower))
    out = result.stdout
    assert result.exit_code == 1, result.output
    assert "refused: 2 (0 by the tower, 0 unreadable, 2 with no source system, not sent)" in out
    assert "line 2: source: required (not sent)" in out and "line 3: source: required (not sent)" in out
    assert "Note: the header (line 1) has no source column: every event needs its source system" in out
    assert len(rejects.read_text().splitlines()) == 2
    assert stored(tower) == [] and letters(tower) == []


@pytest.mark.parametrize(("sep", "shown"), [(",", "csv"), (";", "csv, ;-separated"), ("\t", "csv, tab-separated")])
def test_csv_header_names_are_matched_without_regard_to_case_and_the_delimiter_is_found(
    tower: RunningTower, tmp_path: Path, sep: str, shown: str
) -> None:
    path = tmp_path / "orders.csv"
    events = [make_event("order.released", n) for n in (1, 2)]
    path.write_text(as_csv(["ID", "Source", "Type", " Time ", "Order_ID", "Warehouse"], events, sep))
    result = run(["import", str(path), "--url", tower.http_url], granted(tower))
    assert result.exit_code == 0, result.output
    assert f"orders.csv ({shown}): 2 records read" in result.stdout and "stored:  2" in result.stdout
    assert [(r["order_id"], r["warehouse"]) for r in stored(tower)] == [("SO-1", "DAL"), ("SO-2", "DAL")]


def test_a_csv_naming_a_column_twice_is_refused_before_anything_is_sent(tower: RunningTower, tmp_path: Path) -> None:
    """The last of the two used to win without a word."""
    path = tmp_path / "orders.csv"
    path.write_text("id,source,type,time,order_id,order_id\ne1,erp,order.released,2026-11-02T09:00:00Z,SO-1,SO-2\n")
    result = run(["import", str(path), "--url", tower.http_url, "--token", tower.token("erp")])
    assert result.exit_code == 2, result.output
    assert "orders.csv: line 1: the header names the column 'order_id' twice (columns 5 and 6)" in result.output
    assert "nothing was sent" in result.output and "records read" not in result.output
    assert stored(tower) == []


def test_a_binary_file_is_refused_naming_the_file_and_line(tower: RunningTower, tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"  # an Excel workbook (a zip) saved under a .csv name
    path.write_bytes(b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00b\xee\x9dh^\x01\r\n\x90\x04\x00\x00")
    result = run(["import", str(path), "--url", tower.http_url, "--token", tower.token("erp")])
    assert result.exit_code == 2, result.output
    assert "orders.csv: line 1 (the header) holds binary data (NUL bytes), not text: is it a CSV file?" in result.output
    assert "new-line character" not in result.output and "batch in flight" not in result.output


def test_rejects_in_a_missing_folder_is_refused_before_anything_is_sent(tower: RunningTower, tmp_path: Path) -> None:
    path = tmp_path / "e.ndjson"
    path.write_bytes(orjson.dumps(make_event("order.released", 1)) + b"\n")
    rejects = tmp_path / "nodir" / "rejects.ndjson"
    result = run(
        ["import", str(path), "--url", tower.http_url, "--token", tower.token("erp"), "--rejects", str(rejects)]
    )
    assert result.exit_code == 2, result.output
    assert "--rejects" in result.output and f"cannot write {rejects}: No such file or directory" in result.output
    assert stored(tower) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device that is always full)")
def test_the_summary_survives_rejects_that_cannot_be_written(tower: RunningTower, tmp_path: Path) -> None:
    path = tmp_path / "e.ndjson"
    path.write_bytes(orjson.dumps(make_event("order.released", 1)) + b"\n{oops\n")
    result = run(
        ["import", str(path), "--url", tower.http_url, "--token", tower.token("erp"), "--rejects", "/dev/full"]
    )
    assert result.exit_code == 2, result.output
    assert "stored:  1" in result.stdout and "line 2: not valid JSON" in result.stdout
    assert "The refused records could not be written to /dev/full: No space left on device." in result.stdout
    assert "Every refused record is in" not in result.stdout
    assert len(stored(tower)) == 1


def test_a_record_too_large_even_alone_is_refused_by_size(store: EmbeddedStore, tmp_path: Path) -> None:
    """It used to count as unreadable, with advice to fix the file's syntax."""
    large = make_event("order.released", 2, data={"note": "".join(sha256(bytes([n])).hexdigest() for n in range(64))})
    events = [make_event("order.released", 1), large, make_event("order.released", 3)]
    with start_in_process(tmp_path, store, max_body_bytes=1500) as small:
        path = tmp_path / "e.ndjson"
        path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
        result = run(["import", str(path), "--url", small.http_url, "--token", small.token("erp")])
        out = result.stdout
        assert result.exit_code == 1, result.output
        assert (
            "stored:  2" in out
            and "refused: 1 (0 by the tower, 0 unreadable, not sent; 1 too large for the tower)" in out
        )
        assert re.search(
            r"line 2: too large for the tower, even alone: body of \d+ bytes is over the limit of 1500 bytes"
            r" \(TOWER_COLLECTOR_MAX_BODY_BYTES\) \(not stored\)",
            out,
        )
        assert "Too large for the tower: not stored" in out and "Unreadable" not in out
        assert sorted(r["id"] for r in stored(small)) == sorted([events[0]["id"], events[2]["id"]])


def test_progress_lines_are_never_wrapped(tower: RunningTower, tmp_path: Path) -> None:
    """A cron job's log gets one line per tick, however long (rich wraps at 80 columns when not on a terminal)."""
    path = tmp_path / "erp-orders-export-2026-11-02-the-whole-history-of-the-dallas-warehouse.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(make_event("order.released", n)) for n in range(3)))
    result = run(["import", str(path), "--url", tower.http_url, "--token", tower.token("erp")])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"importing {re.escape(path.name)}: [^\n]+, 3 read, 3 stored, [^\n]+, done\n", result.stderr)
    lines = progress_lines(tower, path, width=40)
    assert len(lines) == 3 and all(line.startswith(f"importing {path.name}: ") for line in lines)


def test_refusals_beyond_what_an_answer_lists_are_each_reported(store: EmbeddedStore, tmp_path: Path) -> None:
    """The tower lists at most TOWER_COLLECTOR_MAX_REJECTIONS_LISTED refusals an answer: the import sends the halves
    again until every refused line is named, and counts what was stored once."""
    with start_in_process(tmp_path, store, max_rejections_listed=2) as small:
        good = [make_event("order.released", n) for n in (1, 2)]
        foreign = [make_event("shipment.confirmed", n) for n in range(3, 8)]  # source wms, token of erp
        path = tmp_path / "e.ndjson"
        path.write_bytes(b"\n".join(orjson.dumps(e) for e in [good[0], *foreign, good[1]]))
        result = run(["import", str(path), "--url", small.http_url, "--token", small.token("erp")])
        assert result.exit_code == 1, result.output
        assert "stored:  2" in result.stdout and "refused: 5 (5 by the tower" in result.stdout
        for line in range(2, 7):
            assert f"line {line}: source: 'wms' is not allowed for this token" in result.stdout
        assert len(stored(small)) == 2
