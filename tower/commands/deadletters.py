"""`tower deadletters list|show|replay|discard`: refused records, through the running tower's API (admin token)."""

from __future__ import annotations

import uuid
from typing import Any

import click
import orjson
from rich.console import Console
from rich.text import Text

from tower.client import api_call as _call
from tower.commands.text import short


@click.group()
def deadletters() -> None:
    """List, replay and discard dead letters (records the tower refused, with their reasons)."""


@deadletters.command("list")
@click.option(
    "--status", type=click.Choice(["pending", "replayed", "discarded"]), help="Only dead letters with this status."
)
@click.option("--door", help="Only those of this door (events, otlp_traces, otlp_logs, ...).")
@click.option("--source", help="Only those claiming this source or one of its paths (wms: wms/dallas too).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="How many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the dead letters as JSON (with the raw records).")
@click.option("--url", help="The tower's URL (TOWER_URL, default http://127.0.0.1:4318).")
@click.option("--token", help="Admin API token (TOWER_TOKEN; default: the generated admin token).")
def list_command(
    status: str | None,
    door: str | None,
    source: str | None,
    limit: int,
    as_json: bool,
    url: str | None,
    token: str | None,
) -> None:
    """List dead letters, newest first."""
    params: dict[str, Any] = {"limit": limit}
    for name, value in (("status", status), ("door", door), ("source", source)):
        if value:
            params[name] = value
    page = _call(url, token, "GET", "/api/deadletters", params=params)
    items: list[dict[str, Any]] = page.get("items", [])
    if as_json:
        click.echo(orjson.dumps(page, option=orjson.OPT_INDENT_2).decode())
        return
    if not items:
        click.echo("no dead letters" + (" match" if status or door or source else ""))
        return
    # One block per letter, not a table: ids must stay whole (they are what `replay` takes) and
    # a table of seven columns is unreadable in an 80-column terminal.
    console = Console(soft_wrap=True, highlight=False)
    console.print(Text(f"dead letters: {len(items)} of {page.get('total', len(items))}", style="bold"))
    for item in items:
        head = (
            "  ".join(str(item.get(k, "")) for k in ("id", "door", "source", "status"))
            + f"  {str(item.get('received_at', ''))[:19]} UTC"
        )
        console.print(Text(head, style="bold"))  # Text: no rich markup in what senders wrote
        console.print(Text("  reason: " + short(str(item.get("reason", "")), 300)))
        if item.get("status") == "discarded":
            console.print(Text("  note:   " + short(str(item.get("status_note", "")), 300)))
        console.print(Text("  raw:    " + short(str(item.get("raw", "")), 200)))


@deadletters.command("show")
@click.argument("letter_id")
@click.option("--json", "as_json", is_flag=True, help="The whole dead letter as JSON, not only its raw record.")
@click.option("--url", help="The tower's URL (TOWER_URL, default http://127.0.0.1:4318).")
@click.option("--token", help="Admin API token (TOWER_TOKEN; default: the generated admin token).")
def show_command(letter_id: str, as_json: bool, url: str | None, token: str | None) -> None:
    """Print one dead letter's raw record whole, as it was sent (a listing shows the first 4,000 characters)."""
    try:
        uuid.UUID(letter_id)
    except ValueError as exc:
        raise click.UsageError(f"{letter_id!r} is not a dead letter id (a UUID)") from exc
    letter = _call(url, token, "GET", f"/api/deadletters/{letter_id}")
    if as_json:
        click.echo(orjson.dumps(letter, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(str(letter.get("raw", "")))


@deadletters.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--door", help="Replay every pending dead letter of this door.")
@click.option("--source", help="Replay every pending dead letter claiming this source or one of its paths.")
@click.option(
    "--all", "replay_all", is_flag=True, help="Replay every pending dead letter (of --door / --source, if given)."
)
@click.option("--url", help="The tower's URL (TOWER_URL, default http://127.0.0.1:4318).")
@click.option("--token", help="Admin API token (TOWER_TOKEN; default: the generated admin token).")
def replay_command(
    ids: tuple[str, ...], door: str | None, source: str | None, replay_all: bool, url: str | None, token: str | None
) -> None:
    """Replay dead letters through their door after a fix: the IDS given, or --all / --door / --source.

    Exit code 0 when every one was replayed, 1 when some still fail (they stay pending with the new
    reason), 2 on usage or connection errors.
    """
    if ids and (replay_all or door or source):
        raise click.UsageError("give dead letter ids, or --all / --door / --source, not both")
    if not ids and not (replay_all or door or source):
        raise click.UsageError("name the dead letters to replay, or pass --all (optionally with --door / --source)")
    for ident in ids:
        try:
            uuid.UUID(ident)
        except ValueError as exc:
            raise click.UsageError(f"{ident!r} is not a dead letter id (a UUID)") from exc
    body: dict[str, Any] = {"ids": list(ids)} if ids else {"door": door, "source": source}
    result = _call(url, token, "POST", "/api/deadletters/replay", json=body)
    failing: list[dict[str, Any]] = result.get("still_failing", [])
    replayed = int(result.get("replayed", 0))
    click.echo(f"replayed: {replayed}")
    if ids and len(set(ids)) > replayed + len(failing):
        click.echo(f"not pending (already replayed or unknown): {len(set(ids)) - replayed - len(failing)}")
    if failing:
        click.echo(f"still failing: {len(failing)}")
        for item in failing:
            click.echo(f"  {item.get('id')}: {'; '.join(str(e) for e in item.get('errors', []))}")
        click.get_current_context().exit(1)


@deadletters.command("discard")
@click.argument("ids", nargs=-1, required=True)
@click.option("--note", required=True, help="Why they are given up on; kept with each dead letter.")
@click.option("--url", help="The tower's URL (TOWER_URL, default http://127.0.0.1:4318).")
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
