"""SLA breach report files: CSV (breaches, or the summary) and XLSX (sheets "Breaches" and "Summary").

Both are written while the breaches stream from the store: the CSV a chunk at a time, the XLSX
with openpyxl's write-only workbook (rows go to temporary files, not memory). The summary is
added up from the very rows written, so its sums always match the breach rows. Numbers are
numbers (hours to 0.01, money to cents, both `Decimal`), dates are dates in the report time zone:
in the XLSX real date cells (Excel has no time zones: the column title names it), in the CSV
ISO 8601 with the zone's offset.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any, NamedTuple, cast
from zipfile import ZIP_DEFLATED, ZipFile
from zoneinfo import ZoneInfo

from sla_rules.breaches import Breach

if TYPE_CHECKING:
    from openpyxl import Workbook
    from openpyxl.cell.cell import Cell
    from openpyxl.styles import Font
    from openpyxl.worksheet._write_only import WriteOnlyWorksheet
    from openpyxl.writer.excel import ExcelWriter

CSV_TYPE = "text/csv; charset=utf-8"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
DATE_FORMAT = "yyyy-mm-dd hh:mm:ss"
MONTH_FORMAT = "yyyy-mm"
HOURS_FORMAT = "0.00"
MONEY_FORMAT = "#,##0.00"
# The rows of an Excel worksheet, its header row included.
XLSX_MAX_ROWS = 1_048_576

# (CSV name, XLSX title, kind) per breach column, in file order; kind picks the cell format.
BREACH_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("rule", "Rule", "text"),
    ("key", "Key", "text"),
    ("customer_id", "Customer", "text"),
    ("warehouse", "Warehouse", "text"),
    ("opened", "Opened", "time"),
    ("due", "Due", "time"),
    ("closed", "Closed", "time"),
    ("hours_late", "Hours late", "hours"),
    ("open", "Open", "bool"),
    ("owner", "Owner", "text"),
    ("resolution", "Resolution", "text"),
    ("status", "Status", "text"),
    ("exception_id", "Exception", "text"),
    ("flagged", "Flagged", "time"),
    ("order_id", "Order", "text"),
    ("order_amount", "Order amount", "money"),
    ("order_currency", "Order currency", "text"),
    ("penalty", "Penalty (est.)", "money"),
    ("penalty_currency", "Penalty currency", "text"),
    ("note", "Note", "text"),
    ("source", "Source", "text"),
)
SUMMARY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("rule", "Rule", "text"),
    ("customer_id", "Customer", "text"),
    ("month", "Month", "month"),
    ("breaches", "Breaches", "count"),
    ("open", "Open", "count"),
    ("hours_late", "Hours late", "hours"),
    ("exposure", "Exposure (est.)", "money"),
    ("currency", "Currency", "text"),
)
# A text cell starting with one of these opens as a formula in a spreadsheet (CSV injection, OWASP): keys, customers
# and notes come from the integrations and from people, never from the tower.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_WIDTHS = {"text": 16, "time": 20, "month": 10, "hours": 11, "money": 14, "bool": 7, "count": 10}
_FORMATS = {"time": DATE_FORMAT, "month": MONTH_FORMAT, "hours": HOURS_FORMAT, "money": MONEY_FORMAT}


@dataclass
class SummaryRow:
    """The breaches of one rule and customer whose deadline fell in one month, added up."""

    rule: str
    customer_id: str
    month: date  # the first day of the month, in the report time zone
    currency: str
    breaches: int = 0
    open: int = 0
    hours_late: Decimal = Decimal(0)
    exposure: Decimal = Decimal(0)

    def values(self) -> dict[str, Any]:
        """Column name -> value."""
        return {
            "rule": self.rule,
            "customer_id": self.customer_id,
            "month": self.month,
            "breaches": self.breaches,
            "open": self.open,
            "hours_late": self.hours_late,
            "exposure": self.exposure,
            "currency": self.currency,
        }


@dataclass
class Summary:
    """Breaches added up per (rule, customer, month of the deadline, penalty currency), as they are written."""

    zone: ZoneInfo
    rows: dict[tuple[str, str, date, str], SummaryRow] = field(default_factory=dict)

    def add(self, breach: Breach) -> None:
        """Count one breach."""
        due = breach.due.astimezone(self.zone)
        month = date(due.year, due.month, 1)
        group = (breach.rule, breach.customer_id, month, breach.penalty_currency)
        row = self.rows.get(group)
        if row is None:
            row = self.rows[group] = SummaryRow(breach.rule, breach.customer_id, month, breach.penalty_currency)
        row.breaches += 1
        row.open += breach.is_open
        row.hours_late += breach.hours_late
        row.exposure += breach.penalty

    def sorted_rows(self) -> list[SummaryRow]:
        """By rule, customer, month."""
        return [self.rows[k] for k in sorted(self.rows)]

    @property
    def breaches(self) -> int:
        """Breaches counted."""
        return sum(r.breaches for r in self.rows.values())

    @property
    def open(self) -> int:
        """Of which still open."""
        return sum(r.open for r in self.rows.values())

    @property
    def hours_late(self) -> Decimal:
        """Hours late, added up."""
        return sum((r.hours_late for r in self.rows.values()), Decimal(0))

    def exposure(self) -> dict[str, Decimal]:
        """Estimated exposure per currency (breaches of rules without a penalty add nothing)."""
        totals: dict[str, Decimal] = {}
        for row in self.rows.values():
            if row.currency:
                totals[row.currency] = totals.get(row.currency, Decimal(0)) + row.exposure
        return dict(sorted(totals.items()))


def breach_values(breach: Breach) -> dict[str, Any]:
    """Column name -> value of one breach."""
    return {
        "rule": breach.rule,
        "key": breach.key,
        "customer_id": breach.customer_id,
        "warehouse": breach.warehouse,
        "opened": breach.opened,
        "due": breach.due,
        "closed": breach.closed,
        "hours_late": breach.hours_late,
        "open": breach.is_open,
        "owner": breach.owner,
        "resolution": breach.resolution,
        "status": breach.status,
        "exception_id": breach.exception_id,
        "flagged": breach.flagged,
        "order_id": breach.order_id,
        "order_amount": breach.order_amount,
        "order_currency": breach.order_currency,
        "penalty": breach.penalty,
        "penalty_currency": breach.penalty_currency,
        "note": breach.note,
        "source": breach.source,
    }


# --- CSV --------------------------------------------------------------------------------------


def _csv_value(value: Any, zone: ZoneInfo) -> Any:
    if value is None:
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_START) else value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(zone).replace(microsecond=0).isoformat()
    if isinstance(value, date):
        return f"{value.year:04d}-{value.month:02d}"
    return value


def csv_chunks(
    rows: Iterable[dict[str, Any]], columns: tuple[tuple[str, str, str], ...], zone: ZoneInfo, every: int = 1_000
) -> Iterator[bytes]:
    """A CSV (header row, then `rows`) as UTF-8 chunks of about `every` rows each."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([name for name, _, _ in columns])
    for count, row in enumerate(rows, start=1):
        writer.writerow([_csv_value(row[name], zone) for name, _, _ in columns])
        if count % every == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def breaches_csv(breaches: Iterable[Breach], zone: ZoneInfo, summary: Summary | None = None) -> Iterator[bytes]:
    """The breaches as CSV chunks; each breach is also added to `summary` when given."""

    def rows() -> Iterator[dict[str, Any]]:
        for breach in breaches:
            if summary is not None:
                summary.add(breach)
            yield breach_values(breach)

    return csv_chunks(rows(), BREACH_COLUMNS, zone)


def summary_csv(summary: Summary) -> Iterator[bytes]:
    """The summary as CSV chunks (month as YYYY-MM)."""
    return csv_chunks((row.values() for row in summary.sorted_rows()), SUMMARY_COLUMNS, summary.zone)


# --- XLSX -------------------------------------------------------------------------------------


class _Openpyxl(NamedTuple):
    """What the XLSX writer takes from openpyxl."""

    Workbook: type[Workbook]
    ExcelWriter: type[ExcelWriter]
    WriteOnlyCell: Callable[..., Cell]
    Font: type[Font]
    get_column_letter: Callable[[int], str]
    illegal_characters: re.Pattern[str]


@functools.cache
def _openpyxl() -> _Openpyxl:
    # imported when a workbook is first written, not at start-up: openpyxl (and the numpy it pulls in) is most of a
    # second of every `tower` command's start, and only report files need it; once, not in every row's _cells
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter
    from openpyxl.writer.excel import ExcelWriter

    return _Openpyxl(Workbook, ExcelWriter, WriteOnlyCell, Font, get_column_letter, ILLEGAL_CHARACTERS_RE)


def _sheet(book: Workbook, title: str, columns: tuple[tuple[str, str, str], ...], zone: ZoneInfo) -> WriteOnlyWorksheet:
    xl = _openpyxl()
    sheet: WriteOnlyWorksheet = book.create_sheet(title)
    dimensions = cast(Any, sheet).column_dimensions  # set up by write-only sheets too; the stubs omit it
    for index, (_, _, kind) in enumerate(columns, start=1):
        dimensions[xl.get_column_letter(index)].width = _WIDTHS[kind]
    sheet.freeze_panes = "A2"
    bold = xl.Font(bold=True)
    header = []
    for _, name, kind in columns:
        cell = xl.WriteOnlyCell(sheet, value=f"{name} ({zone.key})" if kind == "time" else name)
        cell.font = bold
        header.append(cell)
    sheet.append(header)
    return sheet


def _cells(
    sheet: WriteOnlyWorksheet, values: dict[str, Any], columns: tuple[tuple[str, str, str], ...], zone: ZoneInfo
) -> list[Any]:
    xl = _openpyxl()
    cells: list[Any] = []
    for name, _, kind in columns:
        value = values[name]
        if value is None or value == "":
            cells.append(None)
            continue
        if isinstance(value, str):
            # control characters (a worksheet cannot hold them, and openpyxl refuses them, failing the whole report)
            # become U+FFFD; a string openpyxl would write as a formula (a leading "=") is made a string cell
            value = xl.illegal_characters.sub("\ufffd", value)
            if value.startswith("="):
                text = xl.WriteOnlyCell(sheet, value=value)
                text.data_type = "s"
                value = text
            cells.append(value)
            continue
        if isinstance(value, datetime):
            value = value.astimezone(zone).replace(tzinfo=None, microsecond=0)  # Excel has no time zones
        number_format = _FORMATS.get(kind)
        if number_format is None:
            cells.append(value)
            continue
        cell = xl.WriteOnlyCell(sheet, value=value)
        cell.number_format = number_format
        cells.append(cell)
    return cells


class TooManyRows(ValueError):
    """More breaches than an XLSX worksheet holds."""

    def __init__(self, breaches: int | None = None) -> None:
        count = "more breaches" if breaches is None else f"{breaches:,} breaches, more"
        super().__init__(
            f"the report has {count} than an XLSX sheet holds ({XLSX_MAX_ROWS - 1:,} rows under its header): "
            "download it as CSV, or ask for a shorter period"
        )


def check_rows(breaches: int) -> None:
    """Raise TooManyRows when `breaches` rows do not fit a worksheet (under its header)."""
    if breaches > XLSX_MAX_ROWS - 1:
        raise TooManyRows(breaches)


@dataclass(frozen=True)
class XlsxInfo:
    """What went into a workbook: the summary (its totals) and the breach count."""

    summary: Summary

    @property
    def breaches(self) -> int:
        """Breach rows written."""
        return self.summary.breaches


def write_xlsx(
    breaches: Iterable[Breach],
    target: IO[bytes],
    zone: ZoneInfo,
    title: str = "",
    description: str = "",
    created: datetime | None = None,
) -> XlsxInfo:
    """Write the workbook (sheets "Breaches" and "Summary") to `target`; the summary adds up the rows written.
    `created` (default: the host's now) is the workbook's created and modified time. Raises TooManyRows, with
    nothing written to `target`, when the breaches do not fit a worksheet."""
    xl = _openpyxl()
    book = xl.Workbook(write_only=True)
    book.properties.title = title or None
    book.properties.description = description or None
    book.properties.creator = "control tower"
    rows = _sheet(book, "Breaches", BREACH_COLUMNS, zone)
    summary_sheet = _sheet(book, "Summary", SUMMARY_COLUMNS, zone)
    summary = Summary(zone)
    try:
        for written, breach in enumerate(breaches):
            if written + 2 > XLSX_MAX_ROWS:  # this row would be past the sheet's last (the header is row 1)
                raise TooManyRows()
            summary.add(breach)
            rows.append(_cells(rows, breach_values(breach), BREACH_COLUMNS, zone))
        for row in summary.sorted_rows():
            summary_sheet.append(_cells(summary_sheet, row.values(), SUMMARY_COLUMNS, zone))
    except BaseException:
        for sheet in (rows, summary_sheet):  # finish the sheets' temporary files; the workbook is abandoned
            with contextlib.suppress(Exception):
                sheet.close()
        raise
    stamp = (created or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None, microsecond=0)  # UTC, no zone
    book.properties.created = book.properties.modified = stamp
    # Workbook.save would set `modified` from the host's clock: save as it does, with our time
    xl.ExcelWriter(book, ZipFile(target, "w", ZIP_DEFLATED, allowZip64=True)).save()
    return XlsxInfo(summary)
