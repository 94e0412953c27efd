"""`tower alerts ...`: alerting through the running tower's API. `deliveries` shows the Slack delivery log;
other alerting commands (silences) attach to the `alerts` group."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
import orjson
from rich.console import Console
from rich.text import Text

from kernel.durations import parse_duration
from kernel.routing import AlertRoute
from kernel.settings import SlaSettings
from sla_rules.loader import default_routing_file, load_routing
from tower.client import api_call
from tower.commands.text import visible


@click.group()
def alerts() -> None:
    """Slack alerting: the delivery log."""


@alerts.command("deliveries")
@click.option("--exception", "exception_id", help="Only the attempts for this exception's messages.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="How many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option("--token", help="API token (TOWER_TOKEN; default: the generated admin token).")
def deliveries(exception_id: str | None, limit: int, as_json: bool, url: str | None, token: str | None) -> None:
    """Show the Slack delivery log, newest first: every attempt (ok, retry, failed) and the outbox's counts."""
    params: dict[str, Any] = {"limit": limit}
    if exception_id:
        params["exception_id"] = exception_id
    page = api_call(url, token, "GET", "/api/alerts/deliveries", params=params)
    if as_json:
        click.echo(orjson.dumps(page, option=orjson.OPT_INDENT_2).decode())
        return
    counts: dict[str, int] = page.get("outbox", {})
    console = Console(soft_wrap=True, highlight=False)
    console.print(Text("outbox: " + ", ".join(f"{n} {status}" for status, n in counts.items()), style="bold"))
    items: list[dict[str, Any]] = page.get("items", [])
    if not items:
        click.echo("no deliveries" + (f" for exception {exception_id}" if exception_id else " yet"))
        return
    styles = {"ok": "green", "retry": "yellow", "failed": "red"}
    for item in items:
        head = Text(f"{str(item.get('at', ''))[:19].replace('T', ' ')} UTC  ")
        head.append(f"{item.get('status', ''):<6}", style=styles.get(str(item.get("status")), ""))
        head.append(
            f"  {item.get('action', '')} #{item.get('attempt', 0)}  {item.get('channel', '')}  {item.get('key', '')}"
        )
        if item.get("http_status"):
            head.append(f"  HTTP {item['http_status']}")
        console.print(head)  # Text: no rich markup in what Slack answered
        detail = "; ".join(str(item[k]) for k in ("error", "note") if item.get(k))
        if detail:
            console.print(Text("    " + visible(detail)))


@alerts.command("resend")
@click.argument("channel")
@click.option(
    "--within",
    default="24h",
    show_default=True,
    help="Only messages enqueued within this long before now (90m, 24h, 7d).",
)
@click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option("--token", help="API token (TOWER_TOKEN; default: the generated admin token).")
def resend(channel: str, within: str, url: str | None, token: str | None) -> None:
    """Send CHANNEL's failed messages again, oldest first, once the channel is fixed (created, the bot invited):
    what a `slack-delivery` exception names. Operator or admin token."""
    try:
        span = parse_duration(within)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--within") from exc
    since = datetime.now(UTC) - span
    answer = api_call(url, token, "POST", "/api/alerts/resend", json={"channel": channel, "since": since.isoformat()})
    if answer.get("known_channel") is False:
        routed = routed_channels()
        if routed is not None and channel not in routed:
            raise click.ClickException(
                f"{channel!r} is not a channel the routing file sends alerts to ({', '.join(sorted(routed))}):"
                " check the name, as alerts write it (with its #, or the channel id)"
            )
        click.echo(f"nothing has been addressed to {channel} yet, so there is nothing to resend")
        return
    click.echo(f"{answer['requeued']} failed messages to {channel} queued again; alerts-send delivers them in order")
    if answer.get("left_failed"):
        click.echo(
            f"{answer['left_failed']} failed posts left: a later message of each already took its place in the channel"
        )


def routed_channels() -> set[str] | None:
    """The channels the routing file (TOWER_SLA_ROUTING_FILE, else the shipped one, as read here) sends alerts to:
    its owners' and its alert routes'; None when it cannot be read."""
    try:
        routing = load_routing(SlaSettings().routing_file or default_routing_file())
    except Exception:  # a CLI on another machine, a file it cannot read: say nothing about the routing
        return None
    found = {owner.channel for owner in routing.owners.values() if owner.channel}
    routes: list[AlertRoute] = list(routing.alerts.routes)
    while routes:
        route = routes.pop()
        found.update(route.channel or [])
        routes.extend(route.routes)
    found.update(routing.alerts.default.channel or [])
    return found
