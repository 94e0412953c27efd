"""`tower demo` (placeholder)."""

import click


@click.command()
def demo() -> None:
    """Run a simulated distributor against the tower."""
    raise click.ClickException("not built yet")
