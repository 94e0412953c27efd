"""`tower backup`, `tower backups` and `tower restore`: online backups of the embedded store (kernel/backups.py).

`tower backup` asks the running tower to take one (admin) and follows it to the end; `tower restore` needs no
tower: it restores a backup folder into a new data directory, to start a tower on.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from tower.client import api_json

POLL_SECONDS = 0.5


def size(n: int) -> str:
    """Bytes for a person: 4.3 MB."""
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def line(backup: dict[str, Any]) -> str:
    """One backup as a line: name, status, files and size, folder (and the error of a failed one)."""
    counted = f"{backup['files']:>6} files  {size(backup['bytes']):>9}"
    text = f"{backup['name']}  {backup['status']:<10}  {counted}  {backup['path']}"
    return text + (f"\n  {backup['error']}" if backup.get("error") else "")


@click.command("backup")
@click.option("--no-wait", is_flag=True, help="Start it and return; follow it with `tower backups`.")
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=3600.0, show_default=True, help="Seconds to wait for it."
)
@click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option("--token", help="API token of an admin (TOWER_TOKEN; default: the generated admin token).")
def backup(no_wait: bool, timeout: float, url: str | None, token: str | None) -> None:
    """Back up the running tower's embedded store, while it runs, into its backups folder
    (TOWER_STORE_BACKUP_DIR, default <data dir>/backups).

    Exit code 0 when the backup is created, 1 when it failed, 2 when the tower cannot be reached or refuses.
    """
    began = time.monotonic()
    found = api_json(url, token, "POST", "/api/backups", expect=(202,))
    click.echo(f"backup {found['name']} started into {found['path']}")
    if no_wait:
        return
    shown = ""
    while found["status"] == "creating" and time.monotonic() - began < timeout:
        progress = f"{found['files']} files, {size(found['bytes'])}"
        if progress != shown and found["files"]:
            click.echo(f"  {progress}")
            shown = progress
        time.sleep(POLL_SECONDS)
        found = api_json(url, token, "GET", f"/api/backups/{found['name']}")
    seconds = time.monotonic() - began
    if found["status"] == "created":
        click.echo(f"backup {found['name']} created in {seconds:.1f} s: {found['files']} files, {size(found['bytes'])}")
        return
    if found["status"] == "creating":
        click.echo(f"backup {found['name']} still running after {timeout:g} s; follow it with `tower backups`")
    else:
        click.echo(f"backup {found['name']} {found['status']}: {found['error']}")
    click.get_current_context().exit(1)


@click.command("backups")
@click.option("--url", help="The tower's URL (TOWER_URL, else TOWER_COLLECTOR_HTTP_PORT here).")
@click.option("--token", help="API token of an admin (TOWER_TOKEN; default: the generated admin token).")
def backups(url: str | None, token: str | None) -> None:
    """List the store's backups, newest first: name, status, files, size, folder."""
    found = api_json(url, token, "GET", "/api/backups")
    if not found:
        click.echo("no backups yet (tower backup takes one)")
    for item in found:
        click.echo(line(item))


@click.command("restore")
@click.argument("backup_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(path_type=Path),
    help="A new data directory to restore into; start the tower on it (--data-dir, TOWER_STORE_DATA_DIR).",
)
def restore(backup_dir: Path, data_dir: Path) -> None:
    """Restore BACKUP_DIR (a folder `tower backup` made) into a new data directory. Needs no running tower.

    The generated tokens (tokens.json) are not in a backup: configured tokens come from the environment as
    before; copy tokens.json beside the restored store to keep generated ones.
    """
    from kernel.backups import BackupError
    from kernel.backups import restore as run
    from tower.bootstrap import owner_only

    # the restored store is a tower's data directory: its user's alone, as `tower serve` makes it
    previous = owner_only()
    began = time.monotonic()
    try:
        counts = run(backup_dir, data_dir)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        os.umask(previous)
    click.echo(f"restored {backup_dir} into {data_dir / 'clickhouse'} in {time.monotonic() - began:.1f} s")
    for table, rows in counts.items():
        click.echo(f"  {table:<16} {rows:>12,} rows")
    click.echo(f"start the tower on it: tower serve --data-dir {data_dir}")
