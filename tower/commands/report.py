"""`tower report`: download the SLA breach report of a period (CSV or XLSX) from the running tower's API."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import closing, nullcontext
from datetime import datetime
from pathlib import Path
from typing import IO

import click
import httpx
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

from tower.client import client, resolve_admin_token, tower_url

REPORT_PATH = "/api/reports/sla-breaches"
_FILENAME = re.compile(r'filename="([^"/\\]+)"')


class ReportFailed(click.ClickException):
    """The tower could not be reached or refused the report, or the file cannot be written."""

    exit_code = 2


def _when(value: str | None, name: str) -> str | None:
    """Check a --from/--to value (a date, or a date and time with or without offset) and pass it on as typed."""
    if value is None:
        return None
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is not a date (2026-10-01) or a time (2026-10-01T06:00:00Z)", param_hint=name
        ) from exc
    return value


def filename_of(response: httpx.Response, fallback: str) -> str:
    """The file name the tower suggests (Content-Disposition), else `fallback`."""
    found = _FILENAME.search(response.headers.get("content-disposition", ""))
    return found.group(1) if found else fallback


def download(
    url: str | None,
    token: str | None,
    params: dict[str, str],
    output: str | None,
    console: Console,
    show_progress: bool = True,
) -> tuple[str, int, int | None]:
    """Stream the report to `output` (a file, `-` for stdout, a folder for the suggested name in it, or the
    suggested name in the current folder).

    A file is written next to its target and renamed when complete, so a failed download leaves
    nothing half-written. The folder must exist and be writable: that is checked before the tower is asked
    to build the report. Returns (where it went, bytes, breaches when the tower says: the XLSX's count)."""
    folder = writable_folder(output)
    with client(url, resolve_admin_token(token), timeout=600) as http:
        try:
            request = http.build_request("GET", REPORT_PATH, params=params)
            # the tower builds an XLSX before its first byte: say so while waiting for the answer
            waiting = console.status("the tower is building the report…") if show_progress else nullcontext()
            with waiting:
                response = http.send(request, stream=True)
            with closing(response):
                if response.status_code != 200:
                    response.read()
                    raise ReportFailed(f"the tower answered {response.status_code}: {_detail(response)}")
                total = int(response.headers["content-length"]) if "content-length" in response.headers else None
                name = filename_of(response, f"sla-breaches.{params.get('format', 'csv')}")
                counted = response.headers.get("x-report-breaches")
                breaches = int(counted) if counted and counted.isdigit() else None
                if output == "-":
                    return "stdout", _copy(response, sys.stdout.buffer, total, name, console, show_progress), breaches
                target = folder / name if output is None or folder == Path(output) else Path(output)
                try:
                    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (renamed or removed below)
                        dir=target.parent, prefix=f".{target.name}.", delete=False
                    )
                except OSError as exc:
                    raise ReportFailed(f"cannot write in {target.parent}: {exc.strerror or exc}") from exc
                try:
                    with handle:
                        size = _copy(response, handle, total, name, console, show_progress)
                    os.chmod(handle.name, 0o666 & ~current_umask())  # a temporary file is private; the report is not
                    os.replace(handle.name, target)
                except OSError as exc:
                    Path(handle.name).unlink(missing_ok=True)
                    raise ReportFailed(f"cannot write {target}: {exc.strerror or exc}") from exc
                except BaseException:
                    Path(handle.name).unlink(missing_ok=True)
                    raise
                return str(target), size, breaches
        except httpx.HTTPError as exc:
            raise ReportFailed(f"cannot reach the tower at {tower_url(url)}: {exc}") from exc


def writable_folder(output: str | None) -> Path:
    """The folder a report goes to: `output` itself when it is a folder, else its parent (the current folder
    for none or `-`), which must exist and be writable; ReportFailed says which it is not."""
    if output is None or output == "-":
        return Path.cwd()
    given = Path(output)
    folder = given if given.is_dir() else given.parent
    if not folder.is_dir():
        raise ReportFailed(f"cannot write {given}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ReportFailed(f"cannot write {given}: the folder {folder} is not writable")
    return folder


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back: the CLI is single-threaded)."""
    current = os.umask(0)
    os.umask(current)
    return current


def _copy(response: httpx.Response, out: IO[bytes], total: int | None, name: str, console: Console, show: bool) -> int:
    written = 0
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not show, transient=False) as progress:
        task = progress.add_task(name, total=total)
        for chunk in response.iter_bytes():
            out.write(chunk)
            written += len(chunk)
            progress.update(task, advance=len(chunk))
        progress.update(task, total=written, completed=written)
    return written


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, list):  # a validation error: where and what
            return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', ()))}: {d.get('msg')}" for d in detail)
        return str(detail)
    return response.text[:300]


@click.command("report")
@click.option("--from", "since", help="Start of the period: a date (2026-10-01) or a time; default: see --to.")
@click.option(
    "--to", "until", help="End of the period, excluded (2026-11-01). With neither: the previous calendar month."
)
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="xlsx", show_default=True)
@click.option("--summary", is_flag=True, help="CSV only: the summary (per rule, customer and month), not the rows.")
@click.option(
    "--output",
    "-o",
    help="File to write, a folder (the tower's file name in it), or - for stdout; default: the tower's file name here.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option(
    "--token", help="API token of a finance user or an admin (TOWER_TOKEN; default: the generated admin token)."
)
def report(
    since: str | None,
    until: str | None,
    fmt: str,
    summary: bool,
    output: str | None,
    quiet: bool,
    url: str | None,
    token: str | None,
) -> None:
    """Download the SLA breach report of a period: one row per breach whose deadline is in [--from, --to),
    with hours late, owner, resolution and the estimated penalty; the XLSX adds a Summary sheet.

    Dates without an offset are in the report time zone (TOWER_REPORTS_TIMEZONE on the tower,
    default UTC). Exit code 0 when the file is written, 2 when the tower cannot be reached or
    refuses the request.
    """
    if summary and fmt != "csv":
        raise click.UsageError("--summary applies to --format csv (the XLSX has a Summary sheet)")
    params = {"format": fmt}
    for name, value in (("from", _when(since, "--from")), ("to", _when(until, "--to"))):
        if value is not None:
            params[name] = value
    if summary:
        params["sheet"] = "summary"
    console = Console(stderr=True)
    where, size, breaches = download(url, token, params, output, console, show_progress=not quiet)
    if where != "stdout":
        counted = "" if breaches is None else f", {breaches:,} breach{'' if breaches == 1 else 'es'}"
        console.print(f"wrote {where} ({size:,} bytes{counted})", soft_wrap=True, highlight=False, markup=False)
        if breaches == 0:
            console.print("no breach's deadline falls in the period", soft_wrap=True, highlight=False, markup=False)
