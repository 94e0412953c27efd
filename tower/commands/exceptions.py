"""`tower exceptions list|show|ack|assign|note|resolve`: the exception queue from a terminal, through the running
tower's API: what an on-call reaches over SSH, and what scripts call."""

from __future__ import annotations

import uuid
from typing import Any

import click
import orjson
from rich.console import Console
from rich.text import Text

from tower.client import ApiFailed, api_call
from tower.commands.text import short, utc, visible
from tower.commands.timeline import print_timeline

_URL = click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
_READ_TOKEN = click.option("--token", help="Any API token (TOWER_TOKEN; default: the generated admin token).")
_OPERATE_TOKEN = click.option(
    "--token", help="Operator or admin API token (TOWER_TOKEN; default: the generated admin token)."
)


def _filter_options(function: Any) -> Any:
    """The filters `list` and `resolve` share: --rule, --owner, --kind, --key, --customer, --warehouse, --older-than."""
    for option in reversed(
        (
            click.option("--rule", help="Only this rule's."),
            click.option("--owner", help="Only this owner's (warehouse, transportation, customer_service, ...)."),
            click.option(
                "--kind", type=click.Choice(["business", "technical"]), help="Only business or technical ones."
            ),
            click.option("--key", help="Only this business key's."),
            click.option("--customer", help="Only this customer's."),
            click.option("--warehouse", help="Only this warehouse's."),
            click.option(
                "--older-than",
                "min_age_hours",
                type=click.FloatRange(0),
                help="Only those opened this long ago or more.",
            ),
        )
    ):
        function = option(function)
    return function


# The context fields a listing shows beside each exception, in this order.
_CONTEXT_SHOWN = ("customer_id", "warehouse", "source")


@click.group()
def exceptions() -> None:
    """Exceptions: list, show, acknowledge, assign, note and resolve them (one, or many at once)."""


def _check_ids(ids: tuple[str, ...]) -> None:
    for ident in ids:
        try:
            uuid.UUID(ident)
        except ValueError as exc:
            shown = "`tower exceptions list` shows them"
            raise click.UsageError(f"{ident!r} is not an exception id (a UUID; {shown})") from exc


def _ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st."""
    suffix = "th" if number % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def _summary(item: dict[str, Any]) -> list[str]:
    """An exception as two lines: what and whose, then when and in which context."""
    first = f"{item['id']}  {item['status']}  {item['severity']}  {item['rule']}  {item['key']}"
    second = f"owner {item['owner']}, opened {utc(item['opened_at'])} UTC"
    if item.get("due_at"):
        second += f", due {utc(item['due_at'])} UTC"
    if item.get("assignee"):
        second += f", assigned to {item['assignee']}"
    if item.get("resolved_at"):
        second += f", resolved {utc(item['resolved_at'])} UTC ({item.get('resolution') or '?'})"
    context: dict[str, Any] = item.get("context") or {}
    shown = [f"{name} {context[name]}" for name in _CONTEXT_SHOWN if context.get(name)]
    if shown:
        second += ", " + ", ".join(shown)
    return [visible(first), "  " + short(second, 300)]


@exceptions.command("list")
@click.option(
    "--status",
    type=click.Choice(["active", "open", "acknowledged", "resolved", "all"]),
    default="active",
    show_default=True,
    help="active: open or acknowledged.",
)
@_filter_options
@click.option(
    "--newer-than", "max_age_hours", type=click.FloatRange(0), help="Only those opened this many hours ago or less."
)
@click.option(
    "--sort",
    type=click.Choice(["newest", "oldest", "due", "severity"]),
    default="newest",
    show_default=True,
    help="due: the soonest deadline first.",
)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option(
    "--offset",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Skip this many first, in the --sort order (the next page: --offset 50).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the page as the API gives it.")
@_URL
@_READ_TOKEN
def list_command(
    status: str,
    owner: str | None,
    rule: str | None,
    kind: str | None,
    key: str | None,
    customer: str | None,
    warehouse: str | None,
    min_age_hours: float | None,
    max_age_hours: float | None,
    sort: str,
    limit: int,
    offset: int,
    as_json: bool,
    url: str | None,
    token: str | None,
) -> None:
    """List exceptions (the active ones by default, newest first): id, status, severity, rule and key, then
    owner, times and context. Times are UTC. --offset pages on past the first --limit."""
    filters = {"owner": owner, "rule": rule, "kind": kind, "key": key, "customer": customer, "warehouse": warehouse}
    params: dict[str, Any] = {name: value for name, value in filters.items() if value}
    if status != "all":
        params["status"] = status
    for name, hours in (("min_age_hours", min_age_hours), ("max_age_hours", max_age_hours)):
        if hours is not None:
            params[name] = hours
    filtered = len(params) > (status != "all")
    page = api_call(
        url, token, "GET", "/api/exceptions", params={**params, "sort": sort, "limit": limit, "offset": offset}
    )
    if as_json:
        click.echo(orjson.dumps(page, option=orjson.OPT_INDENT_2).decode())
        return
    items: list[dict[str, Any]] = page.get("items", [])
    what = "" if status == "all" else f"{status} "
    total = page.get("total", len(items))
    if not items:
        if offset and total:  # the page is past the end, not the queue empty
            click.echo(f"no {what}exceptions past the first {offset} ({total} " + ("match)" if filtered else "in all)"))
        else:
            click.echo(f"no {what}exceptions" + (" match" if filtered else ""))
        return
    console = Console(soft_wrap=True, highlight=False)
    if offset:  # not the first (newest, oldest, ...) ones: say where in the order the page is
        last = offset + len(items)
        shown = _ordinal(offset + 1) + (f" to {_ordinal(last)}" if last > offset + 1 else "")
    else:
        shown = str(len(items))
    console.print(Text(f"{what}exceptions: {shown} of {total}, {sort} first", style="bold"))
    for item in items:
        first, second = _summary(item)
        console.print(Text(first, style="bold"))  # Text: no rich markup in keys the sources chose
        console.print(Text(second))


@exceptions.command("show")
@click.argument("exception_id")
@click.option("--json", "as_json", is_flag=True, help="Print the exception as the API gives it.")
@_URL
@_READ_TOKEN
def show_command(exception_id: str, as_json: bool, url: str | None, token: str | None) -> None:
    """Show one exception: its rule, owner, times, what the rule found (context), and the key's timeline across
    systems with every change to the exception. Times are UTC."""
    _check_ids((exception_id,))
    item = api_call(url, token, "GET", f"/api/exceptions/{exception_id}")
    if as_json:
        click.echo(orjson.dumps(item, option=orjson.OPT_INDENT_2).decode())
        return
    console = Console(soft_wrap=True, highlight=False)
    first, second = _summary(item)
    console.print(Text(first, style="bold"))
    console.print(Text(second))
    if item.get("rule_title"):
        console.print(Text(f"  rule: {item['rule_title']}"))
    if item.get("runbook"):
        console.print(Text(f"  runbook: {item['runbook']}"))
    detail: dict[str, Any] = item.get("resolution_detail") or {}
    if detail:
        console.print(Text("  resolution: " + short(orjson.dumps(detail).decode(), 300)))
    context: dict[str, Any] = item.get("context") or {}
    if context:
        console.print(Text("context:", style="bold"))
        for name, value in context.items():
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            console.print(Text(f"  {name}: {short(text, 300)}"))
    console.print(Text("timeline:", style="bold"))
    print_timeline(console, item.get("timeline", []), bool(item.get("truncated")))


def _each(ids: tuple[str, ...], url: str | None, token: str | None, path: str, body: Any, done: str) -> None:
    """POST `body` to /api/exceptions/{id}/`path` for each id, saying what happened to each; exit code 1 when
    any was refused (unknown, or not in a status the change applies to), after trying them all."""
    _check_ids(ids)
    refused = 0
    for ident in ids:
        try:
            item = api_call(url, token, "POST", f"/api/exceptions/{ident}/{path}", json=body)
        except ApiFailed as exc:
            if exc.status not in (404, 409):
                raise  # the tower is unreachable or refused the token: the others would fail alike
            refused += 1
            click.echo(f"{ident}: not {done}: {exc.detail}")
            continue
        click.echo(f"{ident}: {done}; now {item['status']} ({item['rule']} {item['key']})")
    if refused:
        click.get_current_context().exit(1)


@exceptions.command("ack")
@click.argument("ids", nargs=-1, required=True)
@_URL
@_OPERATE_TOKEN
def ack_command(ids: tuple[str, ...], url: str | None, token: str | None) -> None:
    """Acknowledge open exceptions: someone is on them (reminders and escalation stop). Exit code 1 when some were
    not open or not found."""
    _each(ids, url, token, "acknowledge", None, "acknowledged")


@exceptions.command("assign")
@click.argument("exception_id")
@click.argument("assignee")
@_URL
@_OPERATE_TOKEN
def assign_command(exception_id: str, assignee: str, url: str | None, token: str | None) -> None:
    """Assign an active exception to ASSIGNEE (a name or handle; "" clears it)."""
    _each((exception_id,), url, token, "assign", {"assignee": assignee}, f"assigned to {assignee or 'nobody'}")


@exceptions.command("note")
@click.argument("exception_id")
@click.argument("text")
@_URL
@_OPERATE_TOKEN
def note_command(exception_id: str, text: str, url: str | None, token: str | None) -> None:
    """Add TEXT to an exception's audit trail (any status)."""
    if not text.strip():
        raise click.UsageError("TEXT is empty")
    _each((exception_id,), url, token, "notes", {"text": text}, "noted")


@exceptions.command("resolve")
@click.argument("ids", nargs=-1)
@_filter_options
@click.option(
    "--status",
    type=click.Choice(["open", "acknowledged", "active"]),
    default="active",
    show_default=True,
    help="active: open or acknowledged.",
)
@click.option("--resolution", default="fixed", show_default=True, help="A short word: fixed, false_positive, ...")
@click.option("--note", help="Why, written into each exception's audit trail (required with filters).")
@click.option(
    "--max",
    "limit",
    type=click.IntRange(1, 100_000),
    default=10_000,
    show_default=True,
    help="With filters: resolve at most this many, the oldest first; run it again for the rest.",
)
@click.option("--yes", is_flag=True, help="With filters: resolve them; without it, only say how many would be.")
@_URL
@_OPERATE_TOKEN
def resolve(
    ids: tuple[str, ...],
    rule: str | None,
    owner: str | None,
    kind: str | None,
    key: str | None,
    customer: str | None,
    warehouse: str | None,
    status: str,
    min_age_hours: float | None,
    resolution: str,
    note: str | None,
    limit: int,
    yes: bool,
    url: str | None,
    token: str | None,
) -> None:
    """Resolve the exceptions IDS (with --resolution and an optional --note), or every active exception the filters
    match (at least one filter, and --note), oldest first, each with the note in its audit trail: the breaches an
    ERP outage caused, the exceptions of a rule switched off. With filters and without --yes, only counts them."""
    filters = {"rule": rule, "owner": owner, "kind": kind, "key": key, "customer": customer, "warehouse": warehouse}
    chosen = {name: value for name, value in filters.items() if value}
    if ids:
        if chosen or min_age_hours is not None:
            raise click.UsageError("give exception ids, or filters, not both")
        _each(ids, url, token, "resolve", {"resolution": resolution, "note": note or ""}, f"resolved ({resolution})")
        return
    if not chosen:
        raise click.UsageError(
            "give exception ids, or name at least one of --rule, --owner, --kind, --key, --customer, --warehouse"
        )
    if not note or not note.strip():
        raise click.UsageError("--note: say why they are resolved (it goes into each one's audit trail)")
    body: dict[str, Any] = {**chosen, "status": status, "resolution": resolution, "note": note, "max": limit}
    if min_age_hours is not None:
        body["min_age_hours"] = min_age_hours
    answer = api_call(url, token, "POST", "/api/exceptions/resolve", json={**body, "dry_run": not yes})
    what = ", ".join(f"{name} {value}" for name, value in chosen.items())
    if min_age_hours is not None:
        what += f", opened {min_age_hours:g} h ago or more"
    matched = int(answer["matched"])
    if not yes:
        would = len(answer["ids"])  # the oldest --max of them, on a dry run
        them = "them" if would >= matched else f"the oldest {would} of them"
        limited = "" if would >= matched else f", --max {limit}"
        click.echo(
            f"{matched} {status} exceptions match ({what}); pass --yes to resolve {them} ({resolution}{limited})"
        )
        return
    click.echo(f"resolved {answer['resolved']} of {matched} {status} exceptions ({what}) as {resolution}")
    if matched > int(answer["resolved"]):
        click.echo(f"{matched - int(answer['resolved'])} left (over --max, or changed meanwhile): run it again")
