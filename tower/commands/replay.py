"""`tower replay EXCEPTION_ID` and `tower replays`: ask a source to resend what an exception lost, and list
the requests, through the running tower's API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
import orjson

from tower.client import api_call as _call
from tower.commands.text import visible

# 2026-11-02T17:20:00Z, 2026-11-02T11:20:00-06:00, 2026-11-02T17:20:00 (UTC) or 2026-11-02 (midnight UTC)
TIME = click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"])


def describe(replay: dict[str, Any]) -> list[str]:
    """A replay request as a few readable lines."""
    keys: list[str] = replay.get("keys", [])
    what = f"{len(keys)} keys ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})" if keys else "every event"
    lines = [
        f"replay {replay.get('id')}  {replay.get('status')}  source {replay.get('source')}",
        f"  asks for {what} in [{replay.get('from')}, {replay.get('to')})",
        f"  exceptions: {', '.join(replay.get('exception_ids', []))}",
        f"  attempts: {replay.get('attempts')}"
        + (f", next at {replay['next_attempt_at']}" if replay.get("next_attempt_at") else "")
        + (f", accepted at {replay['sent_at']}, waiting until {replay['wait_until']}" if replay.get("sent_at") else ""),
    ]
    responses: list[dict[str, Any]] = replay.get("responses", [])
    if responses:
        last = responses[-1]
        answer = f"HTTP {last['status']}" if last.get("status") else f"no answer ({last.get('error', '')})"
        lines.append(f"  last webhook answer: {answer}")
    detail: dict[str, Any] = replay.get("detail", {})
    for name in ("escalation", "failure"):
        if detail.get(name):
            lines.append(f"  {name}: {detail[name]}")
    for name in ("supersedes", "superseded_by"):
        if detail.get(name):
            lines.append(f"  {name.replace('_', ' ')}: {detail[name]}")
    return lines


@click.command("replay")
@click.argument("exception_id")
@click.option("--key", "keys", multiple=True, help="A business key or event id to resend (repeatable).")
@click.option(
    "--from",
    "since",
    type=TIME,
    metavar="TIME",
    help="Start of the range (UTC unless an offset is given). Default: where the gap began.",
)
@click.option(
    "--to",
    "until",
    type=TIME,
    metavar="TIME",
    help="End of the range, exclusive. Default: when the exception opened.",
)
@click.option("--no-dead-letters", is_flag=True, help="Without --key, do not ask for the dead letters' events.")
@click.option("--note", default="", help="Why, for the source's team (sent in the reason).")
@click.option(
    "--again",
    is_flag=True,
    help="Ask anew when the last request for the same source, keys and range failed or escalated (refused while it "
    "is requested or sent, or once satisfied).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the tower's answer as JSON.")
@click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option("--token", help="API token of an operator or admin (TOWER_TOKEN; default: the generated admin token).")
def replay(
    exception_id: str,
    keys: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    no_dead_letters: bool,
    note: str,
    again: bool,
    as_json: bool,
    url: str | None,
    token: str | None,
) -> None:
    """Ask the source of a technical exception to resend what was lost (signed webhook call).

    The same source, keys and range asked again return the existing request and send nothing; --again
    asks anew once that request failed or escalated. Exit code 0 when the request is recorded (sent, or
    to be retried), 1 when the webhook refused it (or the request returned had failed), 2 when the tower
    cannot be reached or refuses (unknown exception, not replayable, no webhook for the source, --again
    while the last request is requested, sent or satisfied).
    """
    body: dict[str, Any] = {"keys": list(keys), "dead_letters": not no_dead_letters, "note": note}
    if again:
        body["again"] = True
    if since:
        body["from"] = since.isoformat()
    if until:
        body["to"] = until.isoformat()
    answer = _call(url, token, "POST", f"/api/exceptions/{exception_id}/replay", json=body)
    request: dict[str, Any] = answer.get("replay", {})
    if as_json:
        click.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo("requested:" if answer.get("created") else "already requested (the same source, keys and range):")
        for line in describe(request):
            click.echo(visible(line, keep="\n\t"))
        if not answer.get("created") and answer.get("message"):
            click.echo(answer["message"])
    if request.get("status") == "failed":
        click.get_current_context().exit(1)


@click.command("replays")
@click.option(
    "--status", type=click.Choice(["requested", "sent", "failed", "satisfied", "escalated"]), help="Only this status."
)
@click.option("--source", help="Only this source (and its paths).")
@click.option("--exception", "exception_id", help="Only the requests answering this exception.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="How many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON.")
@click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option("--token", help="API token (TOWER_TOKEN; default: the generated admin token).")
def replays(
    status: str | None,
    source: str | None,
    exception_id: str | None,
    limit: int,
    as_json: bool,
    url: str | None,
    token: str | None,
) -> None:
    """List replay requests, newest first (escalated and failed ones need a person)."""
    params: dict[str, Any] = {"limit": limit}
    for name, value in (("status", status), ("source", source), ("exception_id", exception_id)):
        if value:
            params[name] = value
    page = _call(url, token, "GET", "/api/replays", params=params)
    if as_json:
        click.echo(orjson.dumps(page, option=orjson.OPT_INDENT_2).decode())
        return
    items: list[dict[str, Any]] = page.get("items", [])
    if not items:
        click.echo("no replay requests" + (" match" if len(params) > 1 else ""))
        return
    click.echo(f"replay requests: {len(items)} of {page.get('total', len(items))}")
    for item in items:
        for line in describe(item):
            click.echo(visible(line, keep="\n\t"))
