"""The `tower` command line."""

from __future__ import annotations

import click

from kernel.settings import Settings


class _Tower(click.Group):
    """The command group: settings the environment gets wrong end any command with one line per problem, naming
    the variable, instead of a traceback; so does a tokens file that cannot be read."""

    def invoke(self, ctx: click.Context) -> object:
        from kernel.settings import settings_problems
        from tower.bootstrap import TokensFileError

        try:
            return super().invoke(ctx)
        except TokensFileError as exc:
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:
            problems = settings_problems(exc)
            if problems is None:
                raise
            raise click.ClickException("invalid settings:\n  " + "\n  ".join(problems)) from exc


@click.group(cls=_Tower)
def main() -> None:
    """Control tower for distribution integrations."""


@main.command()
@click.option("--host", help="Bind address (TOWER_COLLECTOR_HOST).")
@click.option("--port", type=int, help="HTTP port (TOWER_COLLECTOR_HTTP_PORT).")
@click.option("--grpc-port", type=int, help="OTLP/gRPC port, 0 to disable (TOWER_COLLECTOR_GRPC_PORT).")
@click.option("--data-dir", type=click.Path(), help="Data directory (TOWER_STORE_DATA_DIR).")
@click.option(
    "--role",
    type=click.Choice(["all", "collector", "scheduler", "api"]),
    help="What this process runs (TOWER_ROLE, default all): collector = the doors, scheduler = the jobs under"
    " the store's lease, api = the API. Roles other than all need TOWER_STORE_BACKEND=server.",
)
@click.option(
    "--dashboard/--no-dashboard",
    default=None,
    help="Start the dashboard beside the tower (role all; default TOWER_DASHBOARD_ENABLED, on).",
)
@click.option(
    "--demo",
    is_flag=True,
    help="Also run the simulated distributor (tower demo --live) against this tower, a local Slack stand-in when"
    " no Slack token is set, and the jobs more often: exceptions, alerts and reports within two minutes.",
)
def serve(
    host: str | None,
    port: int | None,
    grpc_port: int | None,
    data_dir: str | None,
    role: str | None,
    dashboard: bool | None,
    demo: bool,
) -> None:
    """Run the tower: OTLP/HTTP and gRPC, CloudEvents, the API and the scheduled jobs on the configured store, and
    the dashboard beside it. Ctrl-C stops everything."""
    from pathlib import Path

    from tower.server import check_settings
    from tower.server import serve as run

    check_settings()  # every refused value named at once, before anything is created
    settings = Settings()
    if host:
        settings.collector.host = host
    if port is not None:
        settings.collector.http_port = port
    if grpc_port is not None:
        settings.collector.grpc_port = grpc_port
    if data_dir:
        settings.store.data_dir = Path(data_dir)
    from kernel.store import StoreUnavailable
    from sla_rules.loader import RuleFileError
    from tower.roles import RoleError, RoleSettings
    from tower.server import StartupError

    try:
        run(settings, role or RoleSettings().role, dashboard=dashboard, demo=demo)
    except RuleFileError as exc:
        raise click.ClickException(f"rule files do not load:\n{exc}") from exc
    except (RoleError, StartupError, StoreUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--data-dir", type=click.Path(), help="Data directory of the embedded store (TOWER_STORE_DATA_DIR).")
def migrate(data_dir: str | None) -> None:
    """Apply schema migrations and the retention settings (TOWER_RETENTION_*) to the configured store (both also
    run on every start). Every setting is read first, as by `tower serve`: a refused value migrates nothing."""
    import os
    from pathlib import Path

    from kernel.schema.migrations import migrate as run
    from kernel.schema.retention import RetentionSettings, apply_retention
    from kernel.store import StoreUnavailable, open_store
    from tower.bootstrap import owner_only
    from tower.server import check_settings

    check_settings()
    settings = Settings()
    if data_dir:
        settings.store.data_dir = Path(data_dir)
    previous = owner_only()  # a new embedded store (its tables' folders too) is its user's alone, as serve makes it
    try:
        try:
            store = open_store(settings.store)
        except StoreUnavailable as exc:
            raise click.ClickException(str(exc)) from exc
        try:
            applied = run(store)
            changes = apply_retention(store, RetentionSettings())
        finally:
            store.close()
    finally:
        os.umask(previous)
    click.echo(f"applied {applied}" if applied else "schema is up to date")
    for change in changes:
        click.echo(f"retention of {change.table}: {change.before or 'forever'} -> {change.after or 'forever'}")


def _register() -> None:
    from tower.commands import deadletters, demo, evaluate, events, rules

    main.add_command(events.import_command)
    main.add_command(deadletters.deadletters)
    main.add_command(demo.demo)
    main.add_command(evaluate.evaluate)
    main.add_command(rules.rules)
    from tower.commands import replay

    main.add_command(replay.replay)
    main.add_command(replay.replays)
    from tower.commands import report

    main.add_command(report.report)
    from tower.commands import alerts

    main.add_command(alerts.alerts)
    from tower.commands import silences

    main.add_command(silences.silences)
    from tower.commands import exceptions

    main.add_command(exceptions.exceptions)
    from tower.commands import timeline

    main.add_command(timeline.timeline)
    from tower.commands import status

    main.add_command(status.status)
    from tower.commands import dashboard

    main.add_command(dashboard.dashboard)
    from tower.commands import reconcile

    main.add_command(reconcile.reconcile)
    from tower.commands import backup

    main.add_command(backup.backup)
    main.add_command(backup.backups)
    main.add_command(backup.restore)
    from tower.commands import tokens

    main.add_command(tokens.tokens)


_register()
