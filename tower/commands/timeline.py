"""`tower timeline KEY`: a business key's events from every system, its spans and its exceptions, in a terminal."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click
import orjson
from rich.console import Console
from rich.text import Text

from tower.client import api_call
from tower.commands.text import short, utc


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def entry_line(entry: dict[str, Any]) -> str:
    """One timeline entry (event, span or change to an exception) on one line: when, what, who, why."""
    kind = str(entry.get("kind", ""))
    detail: dict[str, Any] = entry.get("detail") or {}
    ids: dict[str, Any] = entry.get("ids") or {}
    system, name = (short(str(entry.get(field, "")), 60) for field in ("system", "name"))
    head = f"{utc(entry.get('at'))}  {kind:<5}  {system:<14}  {name}"
    if kind == "event":
        extra = f"id {ids.get('id', '')}"
        received = detail.get("received_at")
        if received:
            extra += f", received {utc(received)}"
    elif kind == "span":
        extra = f"{entry.get('status') or 'Unset'}, {float(detail.get('duration_ms') or 0):g} ms"
        if detail.get("status_message"):
            extra += f", {detail['status_message']}"
        extra += f", trace {ids.get('trace_id', '')}"
    else:
        said = ", ".join(f"{name} {_compact(value)}" for name, value in detail.items())
        extra = f"by {entry.get('actor') or '?'}" + (f": {said}" if said else "")
    return f"{head}  ({short(extra, 300)})"


def print_timeline(console: Console, entries: list[dict[str, Any]], truncated: bool) -> None:
    """The entries oldest first, one per line; says so when the tower cut them."""
    if not entries:
        console.print(Text("  nothing recorded for this key"))
    for entry in entries:
        console.print(Text("  " + entry_line(entry)))  # Text: no rich markup in what senders wrote
    if truncated:
        console.print(
            Text(
                "  (cut: the key has more events or spans than the tower shows;"
                " the newest are listed, the oldest left out)"
            )
        )


@click.command("timeline")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print the timeline as the API gives it.")
@click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option("--token", help="Any API token (TOWER_TOKEN; default: the generated admin token).")
def timeline(key: str, as_json: bool, url: str | None, token: str | None) -> None:
    """Show what every system said about KEY (an order, shipment or invoice id, or an event subject), oldest
    first: business events, spans and the exceptions raised on it. Times are UTC."""
    if not key.strip():
        raise click.UsageError("KEY is empty")
    answer = api_call(url, token, "GET", f"/api/timeline/{quote(key, safe='')}")
    if as_json:
        click.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
        return
    console = Console(soft_wrap=True, highlight=False)
    raised: list[dict[str, Any]] = answer.get("exceptions", [])
    entries = len(answer.get("timeline", []))
    counted = f"{entries} {'entry' if entries == 1 else 'entries'} (events and spans)"
    total = int(answer.get("exceptions_total", len(raised)))
    listed = f"{total} exception{'' if total == 1 else 's'}"
    if total > len(raised):
        listed += f" (the newest {len(raised)} listed)"
    console.print(Text(f"{key}: {counted}, {listed}"))
    for item in raised:
        console.print(
            Text(f"  exception {item['id']}  {item['status']}  {item['rule']}  owner {item['owner']}", style="bold")
        )
    print_timeline(console, answer.get("timeline", []), bool(answer.get("truncated")))
