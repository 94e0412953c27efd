"""The dashboard's settings (TOWER_DASHBOARD_*): where the tower's API is, the sign-in token, caching."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class DashboardSettings(BaseSettings):
    """How the dashboard reaches the tower. It holds no data of its own: everything comes from the API."""

    model_config = SettingsConfigDict(env_prefix="TOWER_DASHBOARD_")

    api_url: str = Field("http://127.0.0.1:4318", description="Base URL of the tower's HTTP API.")
    token: SecretStr | None = Field(
        None,
        description="An API token to sign in with on start (any role). No default: without one, each visitor "
        "signs in with a token in the sidebar, and sees nothing before.",
    )
    cache_ttl_seconds: float = Field(10.0, gt=0, description="How long an API answer is reused before asking again.")
    timeout_seconds: float = Field(30.0, gt=0, description="Timeout of one API call.")
    page_size: int = Field(
        50, ge=10, le=1000, description="Rows per page of the exception queue and of the dead letters."
    )
    slack_standin_url: str | None = Field(
        None,
        description="Address of a local Slack stand-in (alerting/standin.py; `tower serve --demo` sets it): the Slack"
        " page shows the messages it received. Unset: no Slack page (alerts are read in Slack).",
    )
    state_dir: Path = Field(
        Path("var/dashboard"),
        description="Where the dashboard remembers each token's last visit (what changed). `tower serve` sets"
        " `<data dir>/dashboard`; the default is for `tower dashboard` run alone (relative to its folder).",
    )


def settings_problems() -> list[str]:
    """What the environment gets wrong for the dashboard, one line per problem naming the variable (the value is
    not repeated for the token and the URLs); empty when the settings load."""
    try:
        DashboardSettings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = "TOWER_DASHBOARD_" + "_".join(str(part) for part in error["loc"]).upper()
            shown = "" if any(part in name for part in ("TOKEN", "URL")) else f"={error.get('input')!r}"
            lines.append(f"{name}{shown}: {error['msg']}")
        return lines
    return []


if __name__ == "__main__":  # `python -m dashboard.settings`: how `tower serve` checks them before it starts anything
    found = settings_problems()
    print("\n".join(found), file=sys.stderr)
    sys.exit(1 if found else 0)
