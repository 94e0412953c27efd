"""The `tower` command line."""

from __future__ import annotations

import click

from kernel.settings import Settings


@click.group()
def main() -> None:
    """Control tower for distribution integrations."""


@main.command()
@click.option("--host", help="Bind address (TOWER_COLLECTOR_HOST).")
@click.option("--port", type=int, help="HTTP port (TOWER_COLLECTOR_HTTP_PORT).")
@click.option("--grpc-port", type=int, help="OTLP/gRPC port, 0 to disable (TOWER_COLLECTOR_GRPC_PORT).")
@click.option("--data-dir", type=click.Path(), help="Data directory (TOWER_STORE_DATA_DIR).")
def serve(host: str | None, port: int | None, grpc_port: int | None, data_dir: str | None) -> None:
    """Run the tower: OTLP/HTTP and gRPC, CloudEvents and the API, on the configured store."""
    from pathlib import Path

    from tower.server import serve as run

    settings = Settings()
    if host:
        settings.collector.host = host
    if port is not None:
        settings.collector.http_port = port
    if grpc_port is not None:
        settings.collector.grpc_port = grpc_port
    if data_dir:
        settings.store.data_dir = Path(data_dir)
    from sla_rules.loader import RuleFileError

    try:
        run(settings)
    except RuleFileError as exc:
        raise click.ClickException(f"rule files do not load:\n{exc}") from exc


@main.command()
def migrate() -> None:
    """Apply schema migrations to the configured store (they also run on every start)."""
    from kernel.schema.migrations import migrate as run
    from kernel.store import open_store

    store = open_store(Settings().store)
    try:
        applied = run(store)
    finally:
        store.close()
    click.echo(f"applied {applied}" if applied else "schema is up to date")


def _register() -> None:
    from tower.commands import deadletters, demo, evaluate, events, rules

    main.add_command(events.import_command)
    main.add_command(deadletters.deadletters)
    main.add_command(demo.demo)
    main.add_command(evaluate.evaluate)
    main.add_command(rules.rules)


_register()
