"""Slack settings (TOWER_SLACK_*): how the tower reaches Slack and how patiently it delivers.

Two modes: with a bot token the sender uses the Web API (chat.postMessage, chat.update, threads,
files_upload_v2); with only incoming-webhook URLs it posts new messages and nothing else. With
neither, alerting still writes its outbox (and the API shows it) but nothing is sent.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class SlackSettings(BaseSettings):
    """Slack delivery: credentials, the API address, pacing, retries and what to do with unconfirmed posts."""

    model_config = SettingsConfigDict(env_prefix="TOWER_SLACK_")

    bot_token: SecretStr | None = Field(
        None,
        description="Bot token (xoxb-...) for the Web API: posts, updates, threads and file uploads. "
        "Scopes: chat:write (and chat:write.public to post in channels the bot has not joined), "
        "files:write for reports, channels:history/groups:history to confirm posts after a crash. No default.",
    )
    webhook_url: SecretStr | None = Field(
        None,
        description="Incoming-webhook URL, used when there is no bot token: posts only (an update or a thread "
        "reply is posted as a new message). It posts to the webhook's own channel. No default.",
    )
    webhook_urls: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Webhook mode, one incoming webhook per channel: JSON map of channel to URL, e.g. "
        '{"#warehouse": "https://hooks.slack.com/services/..."}; channels not listed use webhook_url.',
    )
    signing_secret: SecretStr | None = Field(
        None, description="Signing secret of the Slack app; the interactivity endpoint verifies requests with it."
    )
    api_url: str = Field(
        "https://slack.com/api/",
        description="Base URL of the Slack Web API; point it at a stand-in (python -m alerting.standin) to try "
        "alerting without a workspace.",
    )
    dashboard_url: str = Field("http://localhost:8501", description="Dashboard address used for links in messages.")
    channel_interval_seconds: float = Field(
        1.0, ge=0, description="At most one call per channel per this many seconds (Slack allows about one a second)."
    )
    max_attempts: int = Field(
        8,
        ge=1,
        description="Failed attempts (5xx, connection errors, timeouts) before a message is recorded as failed; "
        "429 answers do not count, they only wait.",
    )
    backoff_initial_seconds: float = Field(2.0, gt=0, description="Wait after the first failed attempt.")
    backoff_max_seconds: float = Field(300.0, gt=0, description="Longest wait between attempts (the backoff doubles).")
    timeout_seconds: float = Field(
        10.0, gt=0, description="HTTP timeout of one call to Slack; a post that times out may have been delivered."
    )
    confirm_in_doubt: bool = Field(
        True,
        description="Before re-sending a post whose earlier attempt may have reached Slack (timeout, connection "
        "lost, tower stopped mid-call), look for it in the channel's history (by the outbox key in the message "
        "metadata) and record it as sent if found.",
    )
    in_doubt: Literal["resend", "skip"] = Field(
        "resend",
        description="A post in doubt that cannot be confirmed (webhook mode, unknown channel id, no history "
        "scope): `resend` (at-least-once: maybe a duplicate, never a loss) or `skip` (at-most-once: recorded as "
        "failed in the delivery log, never a duplicate).",
    )

    @property
    def mode(self) -> Literal["bot", "webhook", "off"]:
        """`bot` with a bot token, else `webhook` with a webhook URL, else `off`."""
        if self.bot_token is not None and self.bot_token.get_secret_value():
            return "bot"
        if (self.webhook_url is not None and self.webhook_url.get_secret_value()) or self.webhook_urls:
            return "webhook"
        return "off"

    @property
    def enabled(self) -> bool:
        """True when a bot token or a webhook URL is set: the sender job runs."""
        return self.mode != "off"

    def webhook_for(self, channel: str) -> str | None:
        """The incoming-webhook URL that posts to `channel` (its own, else the default), None when none."""
        for name in (channel, channel.lstrip("#"), "#" + channel.lstrip("#")):
            if name in self.webhook_urls:
                return self.webhook_urls[name].get_secret_value()
        return self.webhook_url.get_secret_value() if self.webhook_url is not None else None
