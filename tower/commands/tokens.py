"""`tower tokens list|new`: the tokens this tower accepts, by id, and new random ones to configure.

Tokens are configuration (TOWER_INGEST_TOKENS, TOWER_API_TOKENS, else the first-run `<data dir>/tokens.json`):
these commands never print a configured token's value and never change the configuration. `list` answers which
token an audit trail's `token_id` names; `new` makes a token to add to a setting.
"""

from __future__ import annotations

import secrets
from typing import Any

import click
import orjson

from kernel.api_auth import ROLES, token_id
from kernel.model.events import SOURCE_SYSTEMS, checked_source
from kernel.settings import Settings
from tower.bootstrap import read_tokens, tokens_file

TOKEN_BYTES = 24  # 32 URL-safe characters, as the first-run tokens


@click.group()
def tokens() -> None:
    """The tokens this tower accepts (by id, never their values) and new ones to configure."""


def configured(settings: Settings) -> list[dict[str, Any]]:
    """Each token the tower accepts: kind (ingest or api), id, what it grants, and where it is set. The settings
    win over the tokens file, kind by kind, as at start."""
    path = tokens_file(settings)
    saved = read_tokens(path) if path.exists() else {"ingest": {}, "api": {}}
    found: list[dict[str, Any]] = []
    ingest, ingest_from = (
        (settings.ingest.tokens, "TOWER_INGEST_TOKENS") if settings.ingest.tokens else (saved["ingest"], str(path))
    )
    for token, sources in ingest.items():
        found.append({"kind": "ingest", "token_id": token_id(token), "grants": list(sources), "from": ingest_from})
    api, api_from = (settings.api.tokens, "TOWER_API_TOKENS") if settings.api.tokens else (saved["api"], str(path))
    for token, role in api.items():
        found.append({"kind": "api", "token_id": token_id(token), "grants": [role], "from": api_from})
    return found


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def list_command(as_json: bool) -> None:
    """List the tokens this tower accepts: kind, token id (the hash audit trails and dead letters name a token
    by), the sources an ingest token may send for or an API token's role, and where it is set. Values are never
    shown. Reads the settings and the data directory's tokens file; no tower needs to run."""
    found = configured(Settings())
    if as_json:
        click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
        return
    if not found:
        click.echo("no tokens: set TOWER_INGEST_TOKENS and TOWER_API_TOKENS, or start the tower once to generate some")
        return
    click.echo(f"{'KIND':<7} {'TOKEN ID':<13} {'GRANTS':<32} FROM")
    for entry in found:
        click.echo(f"{entry['kind']:<7} {entry['token_id']:<13} {', '.join(entry['grants']):<32} {entry['from']}")


@tokens.command("new")
@click.option("--role", type=click.Choice(ROLES), help="An API token with this role.")
@click.option(
    "--source",
    "sources",
    multiple=True,
    help=f"An ingest token that may send for this source (repeat for several): {', '.join(SOURCE_SYSTEMS)}, "
    "or a path below one (wms/dallas).",
)
def new_command(role: str | None, sources: tuple[str, ...]) -> None:
    """Make a new random token and print it with its id and the entry to add to TOWER_API_TOKENS (--role) or
    TOWER_INGEST_TOKENS (--source). Nothing is written: add the entry to the setting and restart the processes
    that serve it (docs/operations.md, "Rotating a token")."""
    if (role is None) == (not sources):
        raise click.UsageError("give either --role or at least one --source")
    for source in sources:
        try:
            checked_source(source)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--source") from None
    token = secrets.token_urlsafe(TOKEN_BYTES)
    setting, grant = ("TOWER_API_TOKENS", role) if role is not None else ("TOWER_INGEST_TOKENS", list(sources))
    click.echo(f"token     {token}")
    click.echo(f"token id  {token_id(token)}")
    click.echo(f"add to {setting}: {orjson.dumps({token: grant}).decode()[1:-1]}")
