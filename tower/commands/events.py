"""`tower import` (placeholder until the file import lands)."""

import click


@click.command("import")
def import_command() -> None:
    """Import business events from a CSV or NDJSON file."""
    raise click.ClickException("not built yet")
