"""`tower serve --demo`: the whole loop on one machine, for a first look.

On top of what `tower serve` runs, the demo

- starts a Slack stand-in (alerting/standin.py) in this process when no Slack bot token or webhook is
  configured, and points the sender at it: alerts land in its channels, the dashboard's Slack page shows
  them, and its Acknowledge / Resolve buttons reach `/slack/interactions` signed with a signing secret
  generated for this run (written, with the stand-in's address and the demo Slack user, to
  `<data dir>/slack-standin.json`, mode 0600);
- runs the jobs more often, so exceptions, alerts and reconciliation findings show within a minute or two;
- starts `tower demo --live` against this tower once it is up (its log in `<data dir>/demo.log`, its fault
  manifest in `<data dir>/demo-manifest.json`), and the scheduled jobs once the demo's 48 hours of history
  are sent (a few seconds), so the first evaluation sees the whole story, as the manifest expects.

Every setting the demo chooses is only a default: a TOWER_* variable set in the environment wins.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from alerting.settings import SlackSettings
from alerting.standin import SlackStandIn
from kernel.settings import Settings

log = logging.getLogger(__name__)

STANDIN_PORT = 8765  # the stand-in's usual port (`python -m alerting.standin`); a free one when it is taken
DEMO_SLACK_USER = "U0DEMO0001"  # the Slack user the stand-in's buttons click as
DEMO_OPERATOR = "demo-operator"  # the operator that user maps to (TOWER_ALERTING_SLACK_USERS)

# Job intervals for the demo: quick enough to see every step of the loop within a minute or two.
DEMO_JOBS: dict[str, str] = {
    "TOWER_JOB_SLA_EVALUATE_INTERVAL_SECONDS": "10",
    "TOWER_JOB_ALERTS_DISPATCH_INTERVAL_SECONDS": "5",
    "TOWER_JOB_RECONCILE_INTERVAL_SECONDS": "30",
}


def apply_defaults(values: Mapping[str, str]) -> dict[str, str]:
    """Set each variable of `values` that the environment does not set; the ones set."""
    applied = {name: value for name, value in values.items() if name not in os.environ}
    os.environ.update(applied)
    return applied


def standin_file(settings: Settings) -> Path:
    """Where the demo writes the stand-in's address and the signing secret."""
    return settings.store.data_dir / "slack-standin.json"


def manifest_file(settings: Settings) -> Path:
    """Where the demo's fault manifest goes."""
    return settings.store.data_dir / "demo-manifest.json"


@dataclass
class LocalSlack:
    """A Slack stand-in serving in this process, and the settings that point the tower at it."""

    standin: SlackStandIn
    bot_token: str
    signing_secret: str | None  # None when TOWER_SLACK_SIGNING_SECRET was set (the configured one is used)
    file: Path

    def environment(self, dashboard_url: str) -> dict[str, str]:
        """The TOWER_* variables that send alerts to the stand-in and accept its button clicks."""
        env = {
            "TOWER_SLACK_API_URL": self.standin.api_url,
            "TOWER_SLACK_BOT_TOKEN": self.bot_token,
            "TOWER_SLACK_DASHBOARD_URL": dashboard_url,
            "TOWER_ALERTING_SLACK_USERS": json.dumps({DEMO_SLACK_USER: DEMO_OPERATOR}),
            "TOWER_DASHBOARD_SLACK_STANDIN_URL": self.standin.url,
        }
        if self.signing_secret is not None:
            env["TOWER_SLACK_SIGNING_SECRET"] = self.signing_secret
        return env

    def stop(self) -> None:
        """Stop serving."""
        self.standin.stop()


def start_local_slack(settings: Settings, interactivity_url: str) -> LocalSlack | None:
    """The stand-in, started, when no Slack bot token or webhook is configured (None otherwise: alerts go to the
    configured workspace). Its details go to `standin_file` (mode 0600: it holds the signing secret)."""
    if SlackSettings().enabled:
        return None
    configured = os.environ.get("TOWER_SLACK_SIGNING_SECRET")
    signing_secret = None if configured else secrets.token_hex(16)
    bot_token = "xoxb-standin-" + secrets.token_hex(8)

    def make(port: int) -> SlackStandIn:
        secret = configured or signing_secret
        return SlackStandIn(
            port,
            token=bot_token,
            interactivity_url=interactivity_url,
            signing_secret=secret,
            click_user=DEMO_SLACK_USER,
        )

    try:
        standin = make(STANDIN_PORT)
    except OSError:  # taken (another stand-in, another demo): any free port
        standin = make(0)
    standin.start()
    path = standin_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(
            {
                "url": standin.url,
                "api_url": standin.api_url,
                "messages_url": f"{standin.url}/_standin/messages",
                "interactivity_url": interactivity_url,
                "signing_secret": signing_secret,  # null: TOWER_SLACK_SIGNING_SECRET is set and used
                "slack_user": DEMO_SLACK_USER,
                "operator": DEMO_OPERATOR,
            },
            fh,
            indent=2,
        )
    log.info("Slack stand-in on %s", standin.url)
    return LocalSlack(standin, bot_token, signing_secret, path)


def ready_file(settings: Settings) -> Path:
    """The file the demo creates once its backfill is sent."""
    return settings.store.data_dir / "demo-ready"


def demo_command(settings: Settings, url: str) -> list[str]:
    """`tower demo --live` against `url`, its manifest in the data directory, saying when its backfill is sent."""
    return [
        sys.executable,
        "-m",
        "tower",
        "demo",
        "--live",
        "--url",
        url,
        "--manifest",
        str(manifest_file(settings)),
        "--ready-file",
        str(ready_file(settings)),
    ]


def demo_environment(settings: Settings) -> dict[str, str]:
    """What the demo's process needs besides this environment: the ingest tokens this tower accepts."""
    return {"TOWER_INGEST_TOKENS": json.dumps(settings.ingest.tokens)}
