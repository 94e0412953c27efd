"""`tower deadletters list|show|replay|discard`: refused records, through the running tower's API (admin token)."""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from collector.deadletters import REPLAY_FAILED
from tower.client import ApiFailed
from tower.client import api_call as _call
from tower.commands.text import short, utc, visible


@click.group()
def deadletters() -> None:
    """List, replay and discard dead letters (records the tower refused, with their reasons)."""


TOKEN_ID_HELP = (
    "Only those sent by the ingest token with this id (the letters' `token_id`; not the token itself), whatever "
    "source they claimed: what an ingest-refusals exception's next step names when its token's records claimed "
    "another system's source."
)


@deadletters.command("list")
@click.option(
    "--status", type=click.Choice(["pending", "replayed", "discarded"]), help="Only dead letters with this status."
)
@click.option("--door", help="Only those of this door (events, otlp_traces, otlp_logs, ...).")
@click.option(
    "--source",
    help="Only those claiming this source or one of its paths (wms: wms/dallas too), and those that claimed no "
    "source (a body that could not be read) sent by a token granted it.",
)
@click.option("--token-id", "token_id", help=TOKEN_ID_HELP)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="How many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the dead letters as JSON (with the raw records).")
@click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option("--token", help="Admin API token (TOWER_TOKEN; default: the generated admin token).")
def list_command(
    status: str | None,
    door: str | None,
    source: str | None,
    token_id: str | None,
    limit: int,
    as_json: bool,
    url: str | None,
    token: str | None,
) -> None:
    """List dead letters, newest first."""
    params: dict[str, Any] = {"limit": limit}
    for name, value in (("status", status), ("door", door), ("source", source), ("token_id", token_id)):
        if value:
            params[name] = value
    page = _call(url, token, "GET", "/api/deadletters", params=params)
    items: list[dict[str, Any]] = page.get("items", [])
    if as_json:
        click.echo(orjson.dumps(page, option=orjson.OPT_INDENT_2).decode())
        return
    if not items:
        click.echo("no dead letters" + (" match" if status or door or source or token_id else ""))
        return
    # One block per letter, not a table: ids must stay whole (they are what `replay` takes) and
    # a table of seven columns is unreadable in an 80-column terminal.
    console = Console(soft_wrap=True, highlight=False)
    console.print(Text(f"dead letters: {len(items)} of {page.get('total', len(items))}", style="bold"))
    for item in items:
        source = str(item.get("source") or "") or f"(no source; token {item.get('token_id', '')})"
        head = (
            "  ".join((str(item.get("id", "")), str(item.get("door", "")), source, str(item.get("status", ""))))
            + f"  {utc(item.get('received_at'))} UTC"
        )
        console.print(Text(head, style="bold"))  # Text: no rich markup in what senders wrote
        for line in letter_lines(item):
            console.print(Text("  " + line))
        console.print(Text("  raw:    " + short(str(item.get("raw", "")), 200)))


def letter_lines(item: dict[str, Any]) -> list[str]:
    """Why a letter was refused, and, when a replay failed since (it stays pending), when and why; a discarded
    letter's note (who gave up on it and why)."""
    lines = ["reason: " + short(str(item.get("reason", "")), 300)]
    note = str(item.get("status_note") or "")
    if item.get("status") == "pending" and note.startswith(REPLAY_FAILED):
        latest = str(item.get("latest_reason") or note[len(REPLAY_FAILED) :])
        lines.append(f"replay failed {utc(item.get('status_at'))} UTC: " + short(latest, 300))
    elif item.get("status") == "discarded":
        lines.append("note:   " + short(note, 300))
    return lines


@deadletters.command("show")
@click.argument("letter_id")
@click.option("--json", "as_json", is_flag=True, help="The whole dead letter as JSON, not only its raw record.")
@click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option("--token", help="Admin API token (TOWER_TOKEN; default: the generated admin token).")
def show_command(letter_id: str, as_json: bool, url: str | None, token: str | None) -> None:
    """Print one dead letter's raw record whole, as it was sent (a listing shows the first 4,000 characters), on
    standard output; its status and why it was refused (and why its last replay failed) on standard error."""
    try:
        uuid.UUID(letter_id)
    except ValueError as exc:
        raise click.UsageError(f"{letter_id!r} is not a dead letter id (a UUID)") from exc
    letter = _call(url, token, "GET", f"/api/deadletters/{letter_id}")
    if as_json:
        click.echo(orjson.dumps(letter, option=orjson.OPT_INDENT_2).decode())
        return
    err = Console(stderr=True, soft_wrap=True, highlight=False)
    source = str(letter.get("source") or "") or "(no source)"
    err.print(Text(f"{letter.get('id')}  {letter.get('door')}  {source}  {letter.get('status')}", style="bold"))
    for line in letter_lines(letter):
        err.print(Text(line))
    raw = str(letter.get("raw", ""))
    # whole and as sent into a file or a pipe (color=True: click would strip ANSI sequences from a record that holds
    # some); in a terminal, nothing the sender wrote may act on it
    click.echo(visible(raw, keep="\n\t") if sys.stdout.isatty() else raw, color=True)


PER_REQUEST = 1000  # pending letters one replay request takes (well under a second of the tower's time)
IDS_PER_REQUEST = 1000  # ids named in one replay request
FAILING_SHOWN = 100  # letters still failing listed one by one; the rest are counted
BUSY_RETRIES = 10  # times a replay request answered 503 (the writer overloaded) is sent again, BUSY_WAIT apart
BUSY_WAIT = 2.0


@deadletters.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--door", help="Replay every pending dead letter of this door.")
@click.option(
    "--source",
    help="Replay every pending dead letter claiming this source or one of its paths (and those that claimed none "
    "sent by a token granted it).",
)
@click.option("--token-id", "token_id", help="Replay every pending dead letter sent by this ingest token id.")
@click.option(
    "--all",
    "replay_all",
    is_flag=True,
    help="Replay every pending dead letter (of --door / --source / --token-id, if given).",
)
@click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option("--token", help="Admin API token (TOWER_TOKEN; default: the generated admin token).")
def replay_command(
    ids: tuple[str, ...],
    door: str | None,
    source: str | None,
    token_id: str | None,
    replay_all: bool,
    url: str | None,
    token: str | None,
) -> None:
    """Replay dead letters through their door after a fix: the IDS given, or --all / --door / --source /
    --token-id (the id of the ingest token that sent them, whatever source they claimed; filters combine).

    Every pending letter selected is replayed, a thousand per request to the tower, with the progress on
    standard error. Exit code 0 when every one was replayed, 1 when some still fail (they stay pending
    with the new reason), some IDS were not pending (already replayed, discarded or unknown) or a --door /
    --source / --token-id selection matched no pending letter (nothing was replayed), 2 on usage or connection
    errors.
    """
    selection = {"door": door, "source": source, "token_id": token_id}
    if ids and (replay_all or any(selection.values())):
        raise click.UsageError("give dead letter ids, or --all / --door / --source / --token-id, not both")
    if not ids and not (replay_all or any(selection.values())):
        raise click.UsageError(
            "name the dead letters to replay, or pass --all (optionally with --door / --source / --token-id)"
        )
    for ident in ids:
        try:
            uuid.UUID(ident)
        except ValueError as exc:
            raise click.UsageError(f"{ident!r} is not a dead letter id (a UUID)") from exc
    total = Replayed()
    matched = -1  # not known: letters named by id
    if ids:
        named = list(dict.fromkeys(ids))
        for start in range(0, len(named), IDS_PER_REQUEST):
            total.add(_replay(url, token, {"ids": named[start : start + IDS_PER_REQUEST]}))
    else:
        matched = _replay_pending(url, token, {**selection, "limit": PER_REQUEST}, total)
    click.echo(f"replayed: {total.replayed}")
    given = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in selection.items() if value)
    if matched == 0 and not given:
        click.echo("no dead letter is pending: nothing was replayed")
    elif matched == 0:
        # said, and no success: a filter that names the wrong letters must not look like "nothing left to do"
        click.echo(
            f"no pending dead letter matches {given}: nothing was replayed"
            f" (`tower deadletters list {given}` lists them whatever their status)"
        )
        click.get_current_context().exit(1)
    if total.not_pending:
        click.echo(f"not pending: {len(total.not_pending)}")
        for item in total.not_pending:
            click.echo(f"  {item.get('id')}: {item.get('status')}")
    if total.failing:
        click.echo(f"still failing: {len(total.failing)}")
        for item in total.failing[:FAILING_SHOWN]:
            click.echo(f"  {item.get('id')}: {'; '.join(str(e) for e in item.get('errors', []))}")
        if len(total.failing) > FAILING_SHOWN:
            click.echo(
                f"  ... and {len(total.failing) - FAILING_SHOWN:,} more (tower deadletters list --status pending)"
            )
    if total.failing or total.not_pending:
        click.get_current_context().exit(1)


@dataclass
class Replayed:
    """What the replay requests of one command answered, added up."""

    replayed: int = 0
    failing: list[dict[str, Any]] = field(default_factory=list)
    not_pending: list[dict[str, Any]] = field(default_factory=list)

    def add(self, answer: dict[str, Any]) -> None:
        self.replayed += int(answer.get("replayed", 0))
        self.failing.extend(answer.get("still_failing", []))
        self.not_pending.extend(answer.get("not_pending", []))


def _replay(url: str | None, token: str | None, body: dict[str, Any]) -> dict[str, Any]:
    """One replay request; sent again a while later when the tower's writer is overloaded (503)."""
    for attempt in range(BUSY_RETRIES + 1):
        try:
            return _call(url, token, "POST", "/api/deadletters/replay", json=body)
        except ApiFailed as exc:
            if exc.status != 503 or attempt == BUSY_RETRIES:
                raise
            time.sleep(BUSY_WAIT)
    raise AssertionError("unreachable")


def _replay_pending(url: str | None, token: str | None, selection: dict[str, Any], total: Replayed) -> int:
    """Replay every pending letter of `selection` (a door, a source, a token id), a request at a time, each going on
    from the previous one's cursor until none remain; progress on standard error (plain lines when it is no
    terminal). Returns how many pending letters the selection matched when it began."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    begun, done = time.monotonic(), 0
    body = {name: value for name, value in selection.items() if value is not None}
    matched = -1
    with Progress(
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=True,
    ) as progress:
        task = progress.add_task("replay", total=None)
        while True:
            answer = _replay(url, token, body)
            total.add(answer)
            if matched < 0:  # the first answer's: how many matched before any cursor
                matched = int(answer.get("matched", 0))
            done += int(answer.get("replayed", 0)) + len(answer.get("still_failing", []))
            remaining = int(answer.get("remaining", 0))
            progress.update(task, completed=done, total=done + remaining)
            if not err.is_terminal and (remaining or done):
                err.print(
                    Text(
                        f"[{time.monotonic() - begun:6.1f} s] {done:,} of {done + remaining:,} letters: "
                        f"{total.replayed:,} replayed, {len(total.failing):,} still failing"
                    )
                )
            cursor = answer.get("cursor")
            if not remaining or not cursor:
                return matched
            body["after"] = cursor


@deadletters.command("discard")
@click.argument("ids", nargs=-1, required=True)
@click.option("--note", required=True, help="Why they are given up on; kept with each dead letter.")
@click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option("--token", help="Admin API token (TOWER_TOKEN; default: the generated admin token).")
def discard_command(ids: tuple[str, ...], note: str, url: str | None, token: str | None) -> None:
    """Give up on pending dead letters (test data, a record no fix will make valid), saying why.

    Each stays listed (status `discarded`, with who and the note) until retention removes it, and is never
    replayed. Exit code 0 when every one named was discarded, 1 when some were not pending, 2 on usage or
    connection errors.
    """
    for ident in ids:
        try:
            uuid.UUID(ident)
        except ValueError as exc:
            raise click.UsageError(f"{ident!r} is not a dead letter id (a UUID)") from exc
    if not note.strip():
        raise click.UsageError("--note: say why the records are given up on")
    result = _call(url, token, "POST", "/api/deadletters/discard", json={"ids": list(ids), "note": note})
    click.echo(f"discarded: {int(result.get('discarded', 0))}")
    skipped: list[dict[str, Any]] = result.get("not_pending", [])
    if skipped:
        click.echo(f"not pending: {len(skipped)}")
        for item in skipped:
            click.echo(f"  {item.get('id')}: {item.get('status')}")
        click.get_current_context().exit(1)
