"""The dashboard as a process of its own: `tower dashboard` runs it alone, `tower serve` (role `all`) as a child.

The dashboard package sits beside `tower` (in the source tree and when installed). The composition root
starts it as its own process and never imports it: the dashboard is a client of the API only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


class DashboardProcessSettings(BaseSettings):
    """Where the dashboard listens and whether `tower serve` (role `all`) starts it beside the tower (the
    dashboard's own settings, same prefix, are below)."""

    model_config = SettingsConfigDict(env_prefix="TOWER_DASHBOARD_")

    enabled: bool = Field(
        True,
        description="`tower serve` (role `all`) starts the dashboard as a child process and stops it with the tower"
        " (`--no-dashboard` turns it off for one run).",
    )
    host: str = Field("127.0.0.1", description="Address the dashboard binds (`tower serve`, `tower dashboard`).")
    port: int = Field(8501, ge=1, le=65535, description="Port of the dashboard (`tower serve`, `tower dashboard`).")

    @property
    def url(self) -> str:
        """The dashboard's address as a browser on this machine opens it."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"


def streamlit_command(app: Path, host: str, port: int) -> list[str]:
    """The `streamlit run` command line of the dashboard: headless, no usage statistics, no file watcher."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.headless=true",
        f"--server.address={host}",
        f"--server.port={port}",
        "--server.fileWatcherType=none",
        "--browser.gatherUsageStats=false",
        "--client.toolbarMode=minimal",
    ]


def dashboard_settings_problems() -> list[str]:
    """What the environment gets wrong for the dashboard's own settings (`python -m dashboard.settings`, in a
    process of its own: the tower never imports the dashboard), one line per problem; empty when none."""
    done = subprocess.run(
        [sys.executable, "-m", "dashboard.settings"],
        cwd=APP.parents[1],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode == 0:
        return []
    return [line for line in done.stderr.splitlines() if line.strip()] or [f"the dashboard's settings: {done.stderr}"]
