"""The report files hold what the integrations sent as text: never a formula, never a failed workbook; an XLSX
never holds more rows than Excel opens, and carries the tower's time."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook

from sla_rules.breaches import Breach
from tower.reports import files
from tower.reports.files import Summary, TooManyRows, breaches_csv, summary_csv, write_xlsx

UTC_ZONE = ZoneInfo("UTC")
CET = ZoneInfo("Europe/Berlin")


def make_breach(**overrides: Any) -> Breach:
    """A late order-release breach of SO-1; keyword arguments replace fields."""
    fields: dict[str, Any] = {
        "rule": "order-release",
        "key": "SO-1",
        "customer_id": "C-ACME",
        "warehouse": "DAL",
        "source": "erp",
        "status": "late",
        "opened": datetime(2026, 11, 4, 10, tzinfo=UTC),
        "due": datetime(2026, 11, 4, 12, tzinfo=UTC),
        "closed": datetime(2026, 11, 4, 15, tzinfo=UTC),
        "hours_late": Decimal("3.00"),
        "owner": "customer_service",
        "resolution": "late",
        "exception_id": "e-1",
        "flagged": None,
        "order_id": "SO-1",
        "order_amount": Decimal("100.00"),
        "order_currency": "USD",
        "penalty": Decimal("26.00"),
        "penalty_currency": "USD",
        "note": "",
    }
    return Breach(**(fields | overrides))


HOSTILE = [
    make_breach(key='=HYPERLINK("http://x.example","SO-2")', order_id="=1+1", customer_id="+C-2"),
    make_breach(key="SO-\x003", customer_id="C-\x1b[31m", warehouse="-DAL", note="@SUM(A1)"),
    make_breach(key="SO-4", customer_id="C-\u00e9t\u00e9"),  # ordinary non-ASCII text stays as sent
]


def test_xlsx_writes_formula_like_text_as_text_and_control_characters_as_a_mark() -> None:
    target = io.BytesIO()
    info = write_xlsx(HOSTILE, target, UTC_ZONE)  # raised IllegalCharacterError for SO-\x003 before
    assert info.breaches == 3
    sheet = load_workbook(io.BytesIO(target.getvalue()))["Breaches"]
    header = [c.value for c in sheet[1]]
    rows = [dict(zip(header, (c for c in row), strict=True)) for row in sheet.iter_rows(min_row=2)]
    assert [r["Key"].value for r in rows] == ['=HYPERLINK("http://x.example","SO-2")', "SO-\ufffd3", "SO-4"]
    assert {r["Key"].data_type for r in rows} == {"s"}  # a formula would be "f"
    assert (rows[0]["Order"].value, rows[0]["Order"].data_type) == ("=1+1", "s")
    assert [r["Customer"].value for r in rows] == ["+C-2", "C-\ufffd[31m", "C-\u00e9t\u00e9"]
    assert (rows[1]["Warehouse"].value, rows[1]["Note"].value) == ("-DAL", "@SUM(A1)")
    assert rows[0]["Hours late"].value == 3 and rows[0]["Hours late"].data_type == "n"
    summary = load_workbook(io.BytesIO(target.getvalue()))["Summary"]
    assert sorted(c.value for c in summary["B"][1:]) == sorted(["+C-2", "C-\ufffd[31m", "C-\u00e9t\u00e9"])


def test_csv_prefixes_text_a_spreadsheet_would_run_as_a_formula() -> None:
    text = b"".join(breaches_csv(HOSTILE, UTC_ZONE)).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["key"] for r in rows] == ['\'=HYPERLINK("http://x.example","SO-2")', "SO-\x003", "SO-4"]
    assert [r["order_id"] for r in rows] == ["'=1+1", "SO-1", "SO-1"]
    assert [r["customer_id"] for r in rows] == ["'+C-2", "C-\x1b[31m", "C-\u00e9t\u00e9"]
    assert (rows[1]["warehouse"], rows[1]["note"]) == ("'-DAL", "'@SUM(A1)")
    # numbers and times are written as before, unprefixed
    assert (rows[0]["hours_late"], rows[0]["due"]) == ("3.00", "2026-11-04T12:00:00+00:00")


def test_xlsx_refuses_more_breaches_than_a_sheet_holds_before_writing_a_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "XLSX_MAX_ROWS", 3)  # the header and two breaches
    target = io.BytesIO()
    assert write_xlsx([make_breach(key="SO-1"), make_breach(key="SO-2")], target, UTC_ZONE).breaches == 2
    assert load_workbook(io.BytesIO(target.getvalue()))["Breaches"].max_row == 3
    three = io.BytesIO()
    with pytest.raises(TooManyRows, match="more breaches than an XLSX sheet holds \\(2 rows under its header\\)"):
        write_xlsx([make_breach(key=f"SO-{n}") for n in range(3)], three, UTC_ZONE)
    assert three.getvalue() == b""
    files.check_rows(2)
    with pytest.raises(TooManyRows, match="the report has 3 breaches, more than an XLSX sheet holds"):
        files.check_rows(3)


def test_xlsx_properties_carry_the_time_given_not_the_host_clock() -> None:
    target = io.BytesIO()
    write_xlsx([make_breach()], target, UTC_ZONE, created=datetime(2026, 12, 1, 7, 30, 15, 123, tzinfo=CET))
    properties = load_workbook(io.BytesIO(target.getvalue())).properties
    assert (properties.created, properties.modified) == (datetime(2026, 12, 1, 6, 30, 15),) * 2  # UTC


def test_summary_csv_writes_the_month_of_year_one_with_four_digits() -> None:
    summary = Summary(UTC_ZONE)
    summary.add(make_breach(due=datetime(1, 1, 2, tzinfo=UTC)))
    rows = list(csv.DictReader(io.StringIO(b"".join(summary_csv(summary)).decode())))
    assert [r["month"] for r in rows] == ["0001-01"]
