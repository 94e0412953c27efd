"""Reading business events from files (CSV or NDJSON), streamed, for `tower import`.

CSV: a header row names the columns. `specversion`, `id`, `source`, `type`, `time`, `subject`,
`traceparent` and `datacontenttype` are CloudEvents attributes; every other column is a `data`
key (a `data.` prefix is dropped, so `data.order_id` and `order_id` are the same). Empty cells are
omitted; `quantity` and `amount` become numbers when they read as numbers (otherwise they stay
text and the tower refuses them with a reason). A row without `specversion` gets "1.0".

NDJSON: one structured CloudEvent (a JSON object) a line; blank lines are skipped; lines are sent
as written.

A record that cannot be read (a line that is not a JSON object, a CSV row whose cell count is not
the header's, bytes that are not UTF-8) comes back with `event=None` and its problems, never
silently skipped. Nothing here validates events: the tower does, with the token's grant.

Column names are trimmed, and matched without regard to case for the attributes and the keys the
tower reads (`Order_ID` is `order_id`; other columns keep their name as a `data` key). The
delimiter is `,` unless the header names more known columns split at `;` or a tab (an export in
a `;` locale). A file that cannot be imported as a whole (binary data or UTF-16 where the first
line should be, a header row naming one column twice) raises FileError before any record; a
header the importer can use but that looks wrong (no `source` column...) leaves `notes`.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson

from kernel.model.events import NUMBER_KEYS, SOURCE_SYSTEMS, STRING_KEYS

Format = Literal["csv", "ndjson"]

ATTRIBUTES = ("specversion", "id", "source", "type", "time", "subject", "traceparent", "datacontenttype")
NUMBER_COLUMNS = ("quantity", "amount")
REQUIRED = ("id", "source", "type", "time")  # attributes every event needs
DATA_KEYS = (*STRING_KEYS, *NUMBER_KEYS, "currency")  # data keys the tower reads: matched without regard to case
DELIMITERS = {",": ",", ";": ";", "\t": "tab"}  # a delimiter and its name in messages
EXTENSIONS: dict[str, Format] = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson"}

_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class FileError(ValueError):
    """The file cannot be imported at all (binary, UTF-16, a header naming a column twice); raised before any
    record is read, so nothing was sent. The message names the line."""


@dataclass
class FileRecord:
    """One record of a file: where it starts, the event read from it, and what to send.

    `raw` is the record's text as in the file; `payload` is the structured event (JSON) to send,
    empty when the record could not be read (then `problems` says why).
    """

    line: int
    raw: str
    event: dict[str, Any] | None
    payload: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def source(self) -> str | None:
        """The event's `source` when it is a string."""
        value = self.event.get("source") if self.event is not None else None
        return value if isinstance(value, str) else None


def detect_format(path: Path, explicit: str | None = None) -> Format:
    """The file's format: `explicit`, else from the extension; ValueError when unknown."""
    if explicit:
        if explicit not in ("csv", "ndjson"):
            raise ValueError(f"unknown format {explicit!r}: use csv or ndjson")
        return "csv" if explicit == "csv" else "ndjson"
    found = EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise ValueError(f"cannot tell the format of {path.name} from its extension: pass --format csv|ndjson")
    return found


class FileReader:
    """Iterates the records of a file without loading it whole; `bytes_read` tracks progress.

    Once the CSV header is read, `columns` holds the column names as used, `delimiter` the delimiter and
    `notes` what looks wrong about the header (each a sentence for the summary)."""

    def __init__(self, path: Path, fmt: Format) -> None:
        self.path = path
        self.format = fmt
        self.size = path.stat().st_size
        self.bytes_read = 0
        self.delimiter = ","
        self.columns: list[str] = []
        self.notes: list[str] = []
        self._bad_lines: set[int] = set()
        self._utf16 = False

    def __iter__(self) -> Iterator[FileRecord]:
        with self.path.open("rb") as fh:
            if self.format == "csv":
                yield from self._csv(fh)
            else:
                yield from self._ndjson(fh)

    def _lines(self, fh: BinaryIO) -> Iterator[tuple[int, str]]:
        """(line number, text) of each line, counting bytes; undecodable lines are noted."""
        for number, data in enumerate(fh, start=1):
            self.bytes_read += len(data)
            if number == 1 and data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
            elif number == 1 and data.startswith((b"\xff\xfe", b"\xfe\xff")):
                self._utf16 = True
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = data.decode("utf-8", "replace")
                self._bad_lines.add(number)
            yield number, text

    def _first_line(self, lines: Iterator[tuple[int, str]], utf8: bool) -> tuple[int, str] | None:
        """The first line that is not blank; FileError when it is binary or UTF-16 (or not UTF-8 with `utf8`)."""
        for number, text in lines:
            if not text.strip():
                continue
            what = "the header" if self.format == "csv" else "the first record"
            if self._utf16:
                raise FileError(f"line {number}: the file is UTF-16 text: save it as UTF-8 and import it again")
            if "\x00" in text:
                raise FileError(
                    f"line {number} ({what}) holds binary data (NUL bytes), not text: is it a {self.format.upper()}"
                    " file? A spreadsheet must be saved as CSV (UTF-8) first"
                )
            if utf8 and number in self._bad_lines:
                raise FileError(f"line {number} ({what}) is not UTF-8 text: save the file as UTF-8 and import it again")
            return number, text
        return None

    def _ndjson(self, fh: BinaryIO) -> Iterator[FileRecord]:
        lines = self._lines(fh)
        first = self._first_line(lines, utf8=False)
        if first is None:
            return
        for number, text in itertools.chain([first], lines):
            line = text.strip()
            if not line:
                continue
            if number in self._bad_lines:
                yield FileRecord(number, line, None, problems=["not UTF-8 text"])
                continue
            try:
                parsed = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield FileRecord(number, line, None, problems=[f"not valid JSON: {exc}"])
                continue
            if not isinstance(parsed, dict):
                yield FileRecord(number, line, None, problems=["not a JSON object (one event a line)"])
                continue
            yield FileRecord(number, line, parsed, payload=line)

    def _csv(self, fh: BinaryIO) -> Iterator[FileRecord]:
        consumed: list[tuple[int, str]] = []
        lines = self._lines(fh)
        first = self._first_line(lines, utf8=True)
        if first is None:
            return
        self.delimiter = sniff_delimiter(first[1])

        def feed() -> Iterator[str]:
            for number, text in itertools.chain([first], lines):
                consumed.append((number, text))
                yield text

        reader = csv.reader(feed(), delimiter=self.delimiter)
        header: list[str] | None = None
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                cells, error = None, csv_problem(exc)
            else:
                error = ""
            taken, consumed[:] = list(consumed), []
            start = taken[0][0] if taken else 0
            raw = "".join(text for _, text in taken).rstrip("\r\n")
            if header is None:
                if cells is None:
                    raise FileError(f"line {start}: the header row is {error}")
                if not any(c.strip() for c in cells):
                    continue
                header = self._header(start, raw, cells)
                continue
            if cells is not None and not any(c.strip() for c in cells):
                continue
            problems = [error] if error else []
            if any(number in self._bad_lines for number, _ in taken):
                problems.append("not UTF-8 text")
            if "\x00" in raw:
                problems.append("binary data (a NUL byte), not CSV text")
            if cells is not None and len(cells) != len(header):
                problems.append(f"the row has {len(cells)} cells, the header has {len(header)} columns")
            if problems or cells is None:
                yield FileRecord(start, raw, None, problems=problems)
                continue
            event = row_to_event(header, cells)
            yield FileRecord(start, raw, event, payload=orjson.dumps(event).decode())

    def _header(self, line: int, raw: str, cells: list[str]) -> list[str]:
        """The column names of the header row at `line`; FileError for a column named twice; notes what looks
        wrong."""
        header = [column_name(c) for c in cells]
        seen: dict[str, int] = {}
        for position, name in enumerate(header, start=1):
            if not name:
                continue
            key = name if name in ATTRIBUTES else _data_key(name)
            if key in seen:
                raise FileError(
                    f"line {line}: the header names the column {key!r} twice (columns {seen[key]} and {position}):"
                    " each row would keep one of the two values without a word; remove or rename one"
                )
            seen[key] = position
        self.columns = header
        shown = raw if len(raw) <= 200 else raw[:200] + "..."
        known = any(_known(name) for name in header)
        if not known:
            separated = " or ".join(DELIMITERS[d] for d in (";", "\t") if d in raw and d != self.delimiter)
            looks = f" it looks {separated}-separated, but no column split so is a known one either;"
            self.notes.append(
                f"line {line}, the header, names no column the importer knows (id, source, type, time, order_id...):"
                f"{looks if separated else ''} is it the header row? It reads: {shown}"
            )
        missing = [name for name in REQUIRED if name not in header]
        if "source" in missing:
            self.notes.append(
                f"the header (line {line}) has no source column: every event needs its source system"
                f" ({', '.join(SOURCE_SYSTEMS)}), so none of the records can be sent; add the column and import the"
                " file again"
            )
        others = [name for name in missing if name != "source"]
        if others and known:
            self.notes.append(
                f"the header (line {line}) has no {', '.join(others)} column{'s' if len(others) > 1 else ''}:"
                " the tower refuses every event without one"
            )
        return header


def column_name(cell: str) -> str:
    """A header cell as a column name: trimmed; the attributes and the data keys the tower reads lower-cased
    (`Order_ID` is `order_id`, `Data.Amount` is `data.amount`); other names as written."""
    name = cell.strip()
    lower = name.lower()
    if lower in ATTRIBUTES or lower in DATA_KEYS:
        return lower
    if lower.startswith("data."):
        key = name[5:].strip()
        return "data." + (key.lower() if key.lower() in DATA_KEYS else key)
    return name


def _data_key(name: str) -> str:
    return name[5:] if name.startswith("data.") else name


def _known(name: str) -> bool:
    return name in ATTRIBUTES or _data_key(name) in DATA_KEYS


def sniff_delimiter(line: str) -> str:
    """`,`, unless `;` or a tab splits the header `line` into more known columns (attributes, keys the tower
    reads)."""
    best, most = ",", _known_columns(line, ",")
    for delimiter in (";", "\t"):
        count = _known_columns(line, delimiter)
        if count > most:
            best, most = delimiter, count
    return best


def _known_columns(line: str, delimiter: str) -> int:
    try:
        cells = next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:
        return 0
    return sum(1 for cell in cells if _known(column_name(cell)))


def csv_problem(exc: csv.Error) -> str:
    """Why a row is not CSV, in words (not the csv module's)."""
    text = str(exc)
    if "new-line character seen in unquoted field" in text:
        return "not a CSV row: a carriage return inside a cell that is not quoted (binary data, or a cell to quote)"
    if "field larger than field limit" in text:
        return f"not a CSV row: a cell longer than {csv.field_size_limit():,} characters (a quote left open?)"
    return f"not a CSV row: {text}"


def row_to_event(header: list[str], cells: list[str]) -> dict[str, Any]:
    """The structured CloudEvent of one CSV row (see the module docstring for the columns)."""
    event: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for name, cell in zip(header, cells, strict=True):
        value = cell.strip()
        if not value or not name:
            continue
        key = name[5:] if name.startswith("data.") else name
        if name in ATTRIBUTES:
            event[name] = value
        elif key in NUMBER_COLUMNS:
            data[key] = parse_number(value)
        else:
            data[key] = value
    event.setdefault("specversion", "1.0")
    event["data"] = data
    return event


def parse_number(text: str) -> int | float | str:
    """An int or float for numeric text; the text itself otherwise (the tower names the problem)."""
    if _INT_RE.match(text):
        return int(text)
    if _FLOAT_RE.match(text):
        return float(text)
    return text
