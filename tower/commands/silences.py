"""`tower silences add|list|expire`: silence known trouble, through the running tower's API.

    tower silences add --match rule=ship-cutoff --match warehouse=DAL --for 2h --comment "DAL dock closed"
    tower silences list [--status active]
    tower silences expire ID

Acting needs an operator or admin token (--token / TOWER_TOKEN; default: the generated admin token).
"""

from __future__ import annotations

import getpass
from typing import Any

import click
import orjson

from alerting.silences import parse_duration
from kernel.routing import ExceptionMatch
from tower.client import api_call as _call
from tower.commands.text import visible

MATCH_FIELDS = tuple(ExceptionMatch.model_fields)


def parse_matchers(pairs: tuple[str, ...]) -> dict[str, list[str]]:
    """`k=v` pairs (a value may list several, `k=a,b`; a key given twice adds values) as matchers."""
    found: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name or not value.strip():
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--match")
        if name not in MATCH_FIELDS:
            raise click.BadParameter(
                f"cannot match on {name!r}; fields are {', '.join(MATCH_FIELDS)}", param_hint="--match"
            )
        found.setdefault(name, []).extend(v.strip() for v in value.split(",") if v.strip())
    return found


def _show(item: dict[str, Any]) -> str:
    matchers = " ".join(f"{k}={','.join(v)}" for k, v in item.get("matchers", {}).items())
    ends = str(item.get("ends_at", ""))[:19].replace("T", " ")
    when = f"until {ends} UTC"
    if item.get("expired_at"):  # ended before its time: when, and by whom, not the end it was planned with
        when = f"expired {str(item['expired_at'])[:19].replace('T', ' ')} UTC by {item.get('expired_by')}"
    who = f"  by {item.get('created_by')}: {item.get('comment')}"
    # a comment may hold newlines (kept) and, stored before the API checked it, what a terminal would act on
    return visible(f"{item.get('id')}  {item.get('status')}  {when}  {matchers}\n{who}", keep="\n\t")


URL = click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
TOKEN = click.option("--token", help="Operator or admin API token (TOWER_TOKEN; default: the generated admin token).")


@click.group()
def silences() -> None:
    """Silence alerts matching conditions for a while (list and expire them)."""


@silences.command("add")
@click.option("--match", "matches", multiple=True, required=True, help="NAME=VALUE[,VALUE...]; repeat for more.")
@click.option("--for", "duration", required=True, help="How long: 30m, 2h, 1d, 1w.")
@click.option("--comment", required=True, help="Why (shown with the silence).")
@click.option("--by", "created_by", default=None, help="Who asks (default: your user name).")
@URL
@TOKEN
def add_command(
    matches: tuple[str, ...], duration: str, comment: str, created_by: str | None, url: str | None, token: str | None
) -> None:
    """Create a silence: alerts of exceptions matching every --match are held back until it ends."""
    matchers = parse_matchers(matches)
    try:
        parse_duration(duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--for") from exc
    body = {"matchers": matchers, "duration": duration, "comment": comment, "created_by": created_by or _user()}
    created = _call(url, token, "POST", "/api/silences", json=body)
    click.echo(f"silenced: {_show(created)}")


@silences.command("list")
@click.option("--status", type=click.Choice(["pending", "active", "expired"]), help="Only silences in this status.")
@click.option("--json", "as_json", is_flag=True, help="Print the silences as JSON.")
@URL
@TOKEN
def list_command(status: str | None, as_json: bool, url: str | None, token: str | None) -> None:
    """List silences, latest ending first."""
    page = _call(url, token, "GET", "/api/silences", params={"status": status} if status else {})
    items: list[dict[str, Any]] = page.get("items", [])
    if as_json:
        click.echo(orjson.dumps(page, option=orjson.OPT_INDENT_2).decode())
    elif not items:
        click.echo("no silences" + (f" {status}" if status else ""))
    else:
        for item in items:
            click.echo(_show(item))


@silences.command("expire")
@click.argument("silence_id")
@URL
@TOKEN
def expire_command(silence_id: str, url: str | None, token: str | None) -> None:
    """Expire a silence now; exceptions it held back that are still open are alerted next."""
    expired = _call(url, token, "DELETE", f"/api/silences/{silence_id}")
    click.echo(f"expired: {_show(expired)}")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"
