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
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson

Format = Literal["csv", "ndjson"]

ATTRIBUTES = ("specversion", "id", "source", "type", "time", "subject", "traceparent", "datacontenttype")
NUMBER_COLUMNS = ("quantity", "amount")
EXTENSIONS: dict[str, Format] = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson"}

_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


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
    """Iterates the records of a file without loading it whole; `bytes_read` tracks progress."""

    def __init__(self, path: Path, fmt: Format) -> None:
        self.path = path
        self.format = fmt
        self.size = path.stat().st_size
        self.bytes_read = 0
        self._bad_lines: set[int] = set()

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
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = data.decode("utf-8", "replace")
                self._bad_lines.add(number)
            yield number, text

    def _ndjson(self, fh: BinaryIO) -> Iterator[FileRecord]:
        for number, text in self._lines(fh):
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

        def feed() -> Iterator[str]:
            for number, text in lines:
                consumed.append((number, text))
                yield text

        reader = csv.reader(feed())
        header: list[str] | None = None
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                cells, error = None, f"not a CSV row: {exc}"
            else:
                error = ""
            taken, consumed[:] = list(consumed), []
            start = taken[0][0] if taken else 0
            raw = "".join(text for _, text in taken).rstrip("\r\n")
            if header is None:
                if cells is None:
                    raise ValueError(f"line {start}: the header row is not CSV: {error}")
                if not any(c.strip() for c in cells):
                    continue
                header = [c.strip() for c in cells]
                continue
            if cells is not None and not any(c.strip() for c in cells):
                continue
            problems = [error] if error else []
            if any(number in self._bad_lines for number, _ in taken):
                problems.append("not UTF-8 text")
            if cells is not None and len(cells) != len(header):
                problems.append(f"the row has {len(cells)} cells, the header has {len(header)} columns")
            if problems or cells is None:
                yield FileRecord(start, raw, None, problems=problems)
                continue
            event = row_to_event(header, cells)
            yield FileRecord(start, raw, event, payload=orjson.dumps(event).decode())


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
