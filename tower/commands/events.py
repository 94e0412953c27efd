"""`tower import FILE`: send the business events of a CSV or NDJSON file to the running tower.

The file is streamed and sent in batches as NDJSON (gzip) to `/v1/events`, one request per source
of the batch, each with an ingest token that may send that source (--token, TOWER_INGEST_TOKEN, or
the generated one from the data directory). 503/429 answers are retried after their Retry-After;
a 413 splits the request in two.

Where refused records go, as the summary says: records the tower refused are in dead letters
(door `events`, with the reason and the event), to replay after a fix. Lines that cannot be read
(not JSON, a CSV row with the wrong number of cells, not UTF-8) are not sent: they are listed with
their line numbers (and written to --rejects), to fix in the file and import again, which is safe
because an event sent twice counts once. Nor is a record whose (source, id) an earlier, different event of the
file already has: the tower keeps one event per (source, id), so one of the two would be lost without a word. Nor
is a record with no source, or one that is not a source system (erp, wms, ...): no ingest token may send it and the
tower would refuse it. A record the tower finds too large even alone (a 413) is not stored either: the summary says
which setting to raise. A file that cannot be imported at all (binary, UTF-16, a header naming a column twice) is
refused before anything is sent; a header that looks wrong (no `source` column, `;`-separated with no known
column) is noted in the summary.

Exit code: 0 when every record was stored, 1 when some were refused or unreadable, 2 on usage or
connection errors, or when --rejects cannot be written.
"""

from __future__ import annotations

import gzip
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import click
import httpx
import orjson
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from collector.fileimport import DELIMITERS, FileError, FileReader, FileRecord, detect_format
from kernel.model.events import SOURCE_SYSTEMS
from tower.client import client, resolve_ingest_token, tower_url

MAX_ATTEMPTS = 10
SHOWN_REASONS = 10
ID_CHECK_LIMIT = 5_000_000  # ids of a file checked for reuse (about 0.5 GB of digests at most)

# Waiting between retries; a module attribute so tests can observe it instead of waiting.
sleep: Callable[[float], None] = time.sleep


class ImportFailed(click.ClickException):
    """The import could not go on (the tower is unreachable or refuses the request as a whole)."""

    exit_code = 2


# Why a record was not stored: refused by the tower (in dead letters); not sent, as unreadable, reusing another
# event's id, or with no source system a token may send; or too large for the tower even alone (a 413).
Kind = Literal["tower", "unreadable", "reused", "source", "size"]


@dataclass
class Refused:
    """A record that was not stored: its line, why, and where it went."""

    line: int
    errors: list[str]
    raw: str
    kind: Kind

    @property
    def sent(self) -> bool:
        """Whether the tower has it (in dead letters)."""
        return self.kind == "tower"


@dataclass
class ImportReport:
    """What an import did so far."""

    rows: int = 0
    stored: int = 0
    refused: list[Refused] = field(default_factory=list)
    ids_unchecked: int = 0  # records past the id reuse check's limit
    notes: list[str] = field(default_factory=list)  # what looks wrong about the file as a whole

    def count(self, kind: Kind) -> int:
        return sum(1 for r in self.refused if r.kind == kind)

    @property
    def unreadable(self) -> int:
        return self.count("unreadable")

    @property
    def reused(self) -> int:
        return self.count("reused")


class Sender:
    """Posts batches to /v1/events with the right token per source, retrying when told to."""

    def __init__(self, url: str | None, token: str | None) -> None:
        self.url = url
        self.explicit = token
        self._tokens: dict[str, str] = {}
        self._clients: dict[str, httpx.Client] = {}
        self.reached = False  # whether a request reached the tower (then a batch may be stored in part)

    def close(self) -> None:
        for http in self._clients.values():
            http.close()

    def token_for(self, source: str) -> str:
        """The token to send `source` (one of the source systems, `batches` sees to it) with; click.UsageError
        when there is none."""
        if source not in self._tokens:
            self._tokens[source] = resolve_ingest_token(self.explicit, source)
        return self._tokens[source]

    def send_batch(self, records: list[FileRecord], report: ImportReport) -> None:
        """Send one batch, a request per token; record what was stored and refused."""
        groups: dict[str, list[FileRecord]] = {}
        for record in records:
            groups.setdefault(self.token_for(record.source or ""), []).append(record)
        for token, group in groups.items():
            self._send(token, group, report)

    def _send(self, token: str, group: list[FileRecord], report: ImportReport) -> None:
        body = gzip.compress("\n".join(r.payload for r in group).encode(), compresslevel=5)
        response = self._post(token, body)
        if response.status_code == 413 and len(group) > 1:
            half = len(group) // 2
            self._send(token, group[:half], report)
            self._send(token, group[half:], report)
            return
        if response.status_code == 413:
            report.refused.append(Refused(group[0].line, [_too_large(_error_of(response))], group[0].raw, "size"))
            return
        if response.status_code == 401:
            raise ImportFailed(f"the tower refused the ingest token: {_error_of(response)}")
        if response.status_code not in (200, 400) or "accepted" not in _json(response):
            raise ImportFailed(f"the tower answered {response.status_code}: {_error_of(response)}")
        result = _json(response)
        if result.get("rejected_truncated") and len(group) > 1:
            # more refusals than the answer lists (TOWER_COLLECTOR_MAX_REJECTIONS_LISTED): send the halves again to
            # learn each refused line; what was stored folds away as a redelivery
            half = len(group) // 2
            self._send(token, group[:half], report)
            self._send(token, group[half:], report)
            return
        report.stored += int(result["accepted"])
        for item in result.get("rejected", []):
            record = group[int(item["index"])]
            report.refused.append(Refused(record.line, list(item.get("errors") or []), record.payload, "tower"))

    def _post(self, token: str, body: bytes) -> httpx.Response:
        http = self._clients.get(token)
        if http is None:
            http = self._clients[token] = client(self.url, token)
        headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                response = http.post("/v1/events", content=body, headers=headers)
            except httpx.HTTPError as exc:
                self.reached = self.reached or not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                raise ImportFailed(f"cannot reach the tower at {tower_url(self.url)}: {exc}") from exc
            self.reached = True
            if response.status_code not in (429, 503) or attempt == MAX_ATTEMPTS:
                return response
            sleep(_retry_after(response))
        raise AssertionError("unreachable")


def source_problem(record: FileRecord) -> str | None:
    """Why `record` cannot be sent for its source (none, or not a source system: no token may send it, and the
    tower would refuse it with these words), or None."""
    source = record.source
    if not source:
        return "source: required"
    if source.split("/", 1)[0] not in SOURCE_SYSTEMS:
        return f"source: {source!r} is not one of {', '.join(SOURCE_SYSTEMS)} (optionally followed by /path)"
    return None


def _too_large(error: str) -> str:
    """The reason for a record the tower refuses as too large even alone, naming the setting to raise."""
    setting = "MAX_DECOMPRESSED_BYTES" if "inflates" in error else "MAX_BODY_BYTES"
    return f"too large for the tower, even alone: {error} (TOWER_COLLECTOR_{setting})"


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _error_of(response: httpx.Response) -> str:
    body = _json(response)
    return str(body.get("error") or body.get("detail") or response.text[:300] or response.reason_phrase)


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "")
    return float(value) if value.strip().isdigit() else 1.0


class IdReuse:
    """The (source, id) pairs of a file so far, to catch an id given to two different events: the tower keeps one
    event per (source, id) (a redelivery counts once), so the second would replace the first, or be replaced by it,
    without a word. Exports that take the order number as every event's id do this. Kept as 64-bit digests (an id
    and a content digest with the line), about 100 bytes a record, for the first `limit` ids."""

    def __init__(self, limit: int = ID_CHECK_LIMIT) -> None:
        self.limit = limit
        self._seen: dict[int, tuple[int, int, str]] = {}  # id digest -> (content digest, line, type)
        self.unchecked = 0  # records past the limit

    def problem(self, record: FileRecord) -> str | None:
        """Why `record` cannot be sent (its id already names another event of the file), or None."""
        event = record.event or {}
        source, event_id = event.get("source"), event.get("id")
        if not isinstance(source, str) or not isinstance(event_id, str) or not event_id:
            return None  # the tower refuses it with the reason
        key = _digest(f"{source}\0{event_id}".encode())
        content = _digest(orjson.dumps(event, option=orjson.OPT_SORT_KEYS))
        first = self._seen.get(key)
        if first is None:
            if len(self._seen) < self.limit:
                self._seen[key] = (content, record.line, str(event.get("type", "")))
            else:
                self.unchecked += 1
            return None
        if first[0] == content:
            return None  # the same event twice: counts once
        return (
            f"id: {event_id!r} of source {source!r} is already the id of another event, line {first[1]}"
            f" ({first[2] or 'no type'}): the tower keeps one event per source and id, so one of the two would be"
            " lost. Give each event its own id (a UUID, or type and key together: order.released:SO-1001)"
        )


def _digest(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def batches(
    records: Iterable[FileRecord], size: int, report: ImportReport, ids: IdReuse | None = None
) -> Iterable[list[FileRecord]]:
    """Readable records in batches of `size`; unreadable ones, and ones reusing an earlier event's id (`ids`), go
    straight to the report."""
    ids = ids if ids is not None else IdReuse()
    batch: list[FileRecord] = []
    for record in records:
        report.rows += 1
        if record.event is None:
            report.refused.append(Refused(record.line, record.problems, record.raw, "unreadable"))
            continue
        unsourced = source_problem(record)
        if unsourced is not None:
            report.refused.append(Refused(record.line, [unsourced], record.raw, "source"))
            continue
        reused = ids.problem(record)
        if reused is not None:
            report.refused.append(Refused(record.line, [reused], record.raw, "reused"))
            continue
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_import(
    reader: FileReader,
    sender: Sender,
    batch_size: int,
    console: Console,
    report: ImportReport | None = None,
    every: float = 10.0,
) -> ImportReport:
    """Read, batch and send the whole file with a progress bar (a line every `every` seconds when the console is
    not a terminal); returns the report. The reader's notes on the file go into the report, even when sending
    fails."""
    report = report or ImportReport()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]} rows"),
        TimeRemainingColumn(),
    )
    ids = IdReuse()
    try:
        if not console.is_terminal:  # a log or a cron mail: a line now and then, not a bar's last frame
            ticker = Ticker(console, reader, report, every)
            for batch in batches(reader, batch_size, report, ids):
                sender.send_batch(batch, report)
                ticker.tick()
            ticker.tick(last=True)
        else:
            with Progress(*columns, console=console, transient=False) as progress:
                task = progress.add_task(f"importing {reader.path.name}", total=reader.size or None, rows=0)
                for batch in batches(reader, batch_size, report, ids):
                    sender.send_batch(batch, report)
                    progress.update(task, completed=reader.bytes_read, rows=report.rows)
                progress.update(task, completed=reader.bytes_read, rows=report.rows)
    finally:
        report.ids_unchecked = ids.unchecked
        report.notes = list(reader.notes)
    return report


class Ticker:
    """An import's progress as plain lines, at most one per `every` seconds and one at the end: how far into the
    file, how many records read and stored, and the rate. A line is never wrapped at the console's width (80
    columns when it is not a terminal): a log or a cron mail gets one line per tick."""

    def __init__(self, console: Console, reader: FileReader, report: ImportReport, every: float) -> None:
        self.console, self.reader, self.report, self.every = console, reader, report, every
        self.begun = self.last = time.monotonic()

    def tick(self, last: bool = False) -> None:
        """Print a line if `every` seconds passed since the last one (always when `last`)."""
        now = time.monotonic()
        if not last and now - self.last < self.every:
            return
        self.last = now
        done, size = self.reader.bytes_read, self.reader.size
        where = f"{done / 1e6:,.1f} of {size / 1e6:,.1f} MB ({done / size:.0%})" if size else f"{done / 1e6:,.1f} MB"
        elapsed = now - self.begun
        rate = f", {self.report.rows / elapsed:,.0f} records/s" if elapsed > 0 else ""
        self.console.print(
            f"importing {self.reader.path.name}: {where}, {self.report.rows:,} read, {self.report.stored:,} stored"
            f"{rate}{', done' if last else ''}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def summary(
    path: Path, fmt: str, report: ImportReport, rejects: Path | None, rejects_error: str | None = None
) -> list[str]:
    """The summary lines printed after an import (`fmt` as shown: `csv`, `csv, ;-separated`); `rejects_error` is
    why the refused records could not be written to `rejects`."""
    by_tower, sources, size = report.count("tower"), report.count("source"), report.count("size")
    not_sent = (
        [f"{report.unreadable} unreadable"]
        + ([f"{report.reused} reusing an id"] if report.reused else [])
        + ([f"{sources} with no source system"] if sources else [])
    )
    too_large = f"; {size} too large for the tower" if size else ""
    lines = [
        f"{path.name} ({fmt}): {report.rows} records read",
        f"  stored:  {report.stored}",
        f"  refused: {len(report.refused)}"
        + (f" ({by_tower} by the tower, {', '.join(not_sent)}, not sent{too_large})" if report.refused else ""),
    ]
    for refused in sorted(report.refused, key=lambda r: r.line)[:SHOWN_REASONS]:
        where = {"tower": "", "size": " (not stored)"}.get(refused.kind, " (not sent)")
        lines.append(f"    line {refused.line}: {'; '.join(refused.errors)}{where}")
    if len(report.refused) > SHOWN_REASONS:
        lines.append(f"    ... and {len(report.refused) - SHOWN_REASONS} more")
    lines.extend(f"Note: {note}." for note in report.notes)
    if by_tower:
        lines.append(
            "Refused by the tower: in dead letters (door events) with their reasons, see"
            " `tower deadletters list --door events`; after a fix, `tower deadletters replay --door events`."
        )
    if report.unreadable:
        lines.append(
            "Unreadable: not sent; fix those lines in the file and import it again (events already stored count once)."
        )
    if report.reused:
        lines.append(
            "Reusing an id: not sent, since the tower would keep only one of the two events; give each its own id in"
            " the file and import it again (the events already stored count once)."
        )
    if sources:
        lines.append(
            f"No source system: not sent, since no ingest token may send them and the tower takes only"
            f" {', '.join(SOURCE_SYSTEMS)} (optionally followed by /path); give each record its source in the file"
            " and import it again (the events already stored count once)."
        )
    if size:
        lines.append(
            "Too large for the tower: not stored, even sent alone; make those records smaller, or raise the setting"
            " named (TOWER_COLLECTOR_MAX_BODY_BYTES for the gzip'd body) on the tower and import the file again"
            " (the events already stored count once)."
        )
    if report.ids_unchecked:
        lines.append(f"The last {report.ids_unchecked} records were not checked for reused ids (file too large).")
    if rejects_error is not None:
        lines.append(f"The refused records could not be written to {rejects}: {rejects_error}.")
    elif rejects is not None and report.refused:
        lines.append(f"Every refused record is in {rejects} (line, errors, raw).")
    return lines


def write_rejects(path: Path, refused: list[Refused]) -> None:
    """Write refused records as NDJSON: {line, errors, sent, raw} (`sent`: whether the tower has it, in dead
    letters)."""
    with path.open("wb") as out:
        for r in sorted(refused, key=lambda r: r.line):
            out.write(orjson.dumps({"line": r.line, "errors": r.errors, "sent": r.sent, "raw": r.raw}) + b"\n")


def check_writable(path: Path) -> None:
    """click.BadParameter unless `path` can be written (its folder exists, and it or the folder is writable);
    checked before anything is sent, so a typo does not cost the refused records of a long import."""
    try:
        with path.open("ab"):
            pass
    except OSError as exc:
        raise click.BadParameter(f"cannot write {path}: {exc.strerror or exc}", param_hint="--rejects") from exc


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson"]), help="File format (default: from extension).")
@click.option("--batch-size", type=click.IntRange(1, 50_000), default=500, show_default=True, help="Events a request.")
@click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option("--token", help="Ingest token (TOWER_INGEST_TOKEN; default: the generated token of each source).")
@click.option("--rejects", type=click.Path(dir_okay=False, path_type=Path), help="Write refused records here (NDJSON).")
def import_command(
    file: Path, fmt: str | None, batch_size: int, url: str | None, token: str | None, rejects: Path | None
) -> None:
    """Import business events from a CSV or NDJSON file into the running tower.

    CSV: a header row; id, source, type, time, subject, traceparent (and specversion) are
    CloudEvents attributes, every other column is a data key; names are matched without regard to
    case, and a header split at ; or a tab is read so. NDJSON: one structured CloudEvent a line.
    Exit code 0 when all were stored, 1 when some were refused, 2 on usage or connection errors.
    """
    try:
        file_format = detect_format(file, fmt)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if rejects is not None:
        check_writable(rejects)
    reader = FileReader(file, file_format)
    sender = Sender(url, token)
    report = ImportReport()
    failure: click.ClickException | None = None
    unusable = False  # the file as a whole: nothing was read or sent, no summary
    try:
        run_import(reader, sender, batch_size, Console(stderr=True), report)
    except click.ClickException as exc:
        failure = exc
    except FileError as exc:
        failure, unusable = ImportFailed(f"{file.name}: {exc}; nothing was sent"), True
    finally:
        sender.close()
    rejects_error: str | None = None
    if rejects is not None:  # written every time: a file left by an earlier import would mislead
        try:
            write_rejects(rejects, report.refused)
        except OSError as exc:
            rejects_error = exc.strerror or str(exc)
    if unusable and failure is not None:
        raise failure
    shown = file_format if reader.delimiter == "," else f"{file_format}, {DELIMITERS[reader.delimiter]}-separated"
    for line in summary(file, shown, report, rejects, rejects_error):
        click.echo(line)
    if failure is not None:
        click.echo(
            f"The import stopped after {report.rows} records read; "
            + ("the batch in flight may not be stored." if sender.reached else "nothing was sent.")
            + " Import the file again once this is fixed: events already stored count once."
        )
        raise failure
    if rejects_error is not None:
        raise ImportFailed(f"cannot write the refused records to {rejects}: {rejects_error}")
    if report.refused:
        click.get_current_context().exit(1)
