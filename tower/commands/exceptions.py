"""`tower exceptions resolve`: resolve an incident's worth of exceptions at once through the running tower's API."""

from __future__ import annotations

from typing import Any

import click

from tower.client import api_call


@click.group()
def exceptions() -> None:
    """Exceptions: act on many at once."""


@exceptions.command("resolve")
@click.option("--rule", help="Only this rule's exceptions.")
@click.option("--owner", help="Only this owner's.")
@click.option("--kind", type=click.Choice(["business", "technical"]), help="Only business or technical ones.")
@click.option("--key", help="Only this business key's.")
@click.option("--customer", help="Only this customer's.")
@click.option("--warehouse", help="Only this warehouse's.")
@click.option(
    "--status",
    type=click.Choice(["open", "acknowledged", "active"]),
    default="active",
    show_default=True,
    help="active: open or acknowledged.",
)
@click.option(
    "--older-than", "min_age_hours", type=click.FloatRange(0), help="Only those opened this many hours ago or more."
)
@click.option("--resolution", default="fixed", show_default=True, help="A short word: fixed, false_positive, ...")
@click.option("--note", required=True, help="Why, written into each exception's audit trail.")
@click.option("--max", "limit", type=click.IntRange(1, 100_000), default=10_000, show_default=True)
@click.option("--yes", is_flag=True, help="Resolve them; without it, only say how many would be.")
@click.option("--url", help="The tower's URL (TOWER_URL, default http://127.0.0.1:4318).")
@click.option("--token", help="Operator or admin API token (TOWER_TOKEN; default: the generated admin token).")
def resolve(
    rule: str | None,
    owner: str | None,
    kind: str | None,
    key: str | None,
    customer: str | None,
    warehouse: str | None,
    status: str,
    min_age_hours: float | None,
    resolution: str,
    note: str,
    limit: int,
    yes: bool,
    url: str | None,
    token: str | None,
) -> None:
    """Resolve every active exception the filters match (at least one filter), oldest first, each with NOTE in its
    audit trail: the breaches an ERP outage caused, the exceptions of a rule switched off. Without --yes, only
    counts them."""
    filters = {"rule": rule, "owner": owner, "kind": kind, "key": key, "customer": customer, "warehouse": warehouse}
    chosen = {name: value for name, value in filters.items() if value}
    if not chosen:
        raise click.UsageError("name at least one of --rule, --owner, --kind, --key, --customer, --warehouse")
    body: dict[str, Any] = {**chosen, "status": status, "resolution": resolution, "note": note, "max": limit}
    if min_age_hours is not None:
        body["min_age_hours"] = min_age_hours
    answer = api_call(url, token, "POST", "/api/exceptions/resolve", json={**body, "dry_run": not yes})
    what = ", ".join(f"{name} {value}" for name, value in chosen.items())
    if min_age_hours is not None:
        what += f", opened {min_age_hours:g} h ago or more"
    matched = int(answer["matched"])
    if not yes:
        click.echo(f"{matched} {status} exceptions match ({what}); pass --yes to resolve them ({resolution})")
        return
    click.echo(f"resolved {answer['resolved']} of {matched} {status} exceptions ({what}) as {resolution}")
    if matched > int(answer["resolved"]):
        click.echo(f"{matched - int(answer['resolved'])} left (over --max, or changed meanwhile): run it again")
