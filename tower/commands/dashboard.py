"""`tower dashboard`: run the Streamlit dashboard against the running tower's API."""

from __future__ import annotations

import os
import sys

import click
import httpx

from tower.client import tower_url
from tower.dashboard_process import APP, DashboardProcessSettings, dashboard_settings_problems, streamlit_command


def dashboard_url(url: str | None) -> str:
    """The API URL the dashboard uses: --url, TOWER_DASHBOARD_API_URL, TOWER_URL or the local default."""
    return (url or os.environ.get("TOWER_DASHBOARD_API_URL") or tower_url(None)).rstrip("/")


@click.command("dashboard")
@click.option("--url", help="The tower's URL (TOWER_DASHBOARD_API_URL, TOWER_URL, else the local port).")
@click.option("--host", help="Address the dashboard binds (TOWER_DASHBOARD_HOST, default 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(1, 65535), help="Port of the dashboard (TOWER_DASHBOARD_PORT, default 8501)."
)
def dashboard(url: str | None, host: str | None, port: int | None) -> None:
    """Run the dashboard (Streamlit) against the tower's API.

    Visitors sign in with an API token of any role in the sidebar; TOWER_DASHBOARD_TOKEN signs every
    visitor in with one token (a single-user setup). The process becomes Streamlit's: Ctrl-C stops it.
    `tower serve` starts the dashboard by itself; this command runs it alone (another machine, another tower).
    """
    configured = DashboardProcessSettings()
    problems = dashboard_settings_problems()  # one line each, not a traceback in every visitor's page
    if problems:
        raise click.ClickException("invalid settings:\n  " + "\n  ".join(problems))
    host = host or configured.host
    port = port or configured.port
    api = dashboard_url(url)
    if not APP.is_file():
        raise click.ClickException(f"the dashboard is not installed: {APP} is missing")
    try:
        reachable = httpx.get(f"{api}/healthz", timeout=3).status_code == 200
    except httpx.HTTPError:
        reachable = False
    if not reachable:
        click.echo(f"warning: the tower does not answer at {api}; the dashboard will say so until it does", err=True)
    click.echo(f"dashboard: http://{host}:{port}  (tower API: {api})")
    sys.stdout.flush()
    env = {**os.environ, "TOWER_DASHBOARD_API_URL": api}
    command = streamlit_command(APP, host, port)
    os.execve(command[0], command, env)
