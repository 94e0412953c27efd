"""`tower deadletters` (placeholder)."""

import click


@click.group()
def deadletters() -> None:
    """List and replay dead letters."""
