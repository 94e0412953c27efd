"""Replay settings (`TOWER_REPLAY_*`): which sources have a replay webhook, and how requests are sent.

A source that can resend what the tower lost declares a webhook, e.g.

    TOWER_REPLAY_WEBHOOKS='{"wms": {"url": "https://wms.example.com/tower/replay", "secret": "...", "auto": true}}'

The secret signs every request (HMAC-SHA256, see `reconcilers.replay.signing`); it has no default.
A webhook for `wms` serves `wms` and every path below it (`wms/dallas`); the longest match wins.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.model.events import checked_source, source_covers


class ReplayWebhook(BaseModel):
    """One source's replay webhook and its policy."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(description="Where the tower POSTs replay requests (http or https).")
    secret: SecretStr = Field(description="Shared HMAC-SHA256 signing secret, at least 16 characters. No default.")
    auto: bool = Field(
        False, description="Request a replay by policy (job replay-auto) for every replayable exception of the source."
    )
    wait_minutes: float | None = Field(
        None, gt=0, description="Minutes to wait for the replayed events before escalating (default: wait_minutes)."
    )
    timeout_seconds: float = Field(10.0, gt=0, le=120, description="Timeout of one webhook call.")

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("webhook secrets must be at least 16 characters")
        return value


class ReplaySettings(BaseSettings):
    """Replay webhooks per source, retries with backoff, and how long to wait for replayed events."""

    model_config = SettingsConfigDict(env_prefix="TOWER_REPLAY_")

    webhooks: dict[str, ReplayWebhook] = Field(
        default_factory=dict,
        description='JSON map of source to webhook, e.g. {"wms": {"url": "https://...", "secret": "..."}}.',
    )
    auto_rules: list[str] = Field(
        default_factory=lambda: ["source-silence", "inventory-stale"],
        description="Rules whose active exceptions the policy (a webhook with `auto`) replays; people may ask for "
        "a replay of any technical exception that names a source.",
    )
    wait_minutes: float = Field(60.0, gt=0, description="Default minutes to wait for replayed events.")
    max_attempts: int = Field(8, ge=1, le=100, description="Webhook calls before a request is marked failed.")
    backoff_seconds: float = Field(30.0, gt=0, description="Wait before the first retry; doubles on each retry.")
    backoff_max_seconds: float = Field(3600.0, gt=0, description="Longest wait between two retries.")
    default_lookback_hours: float = Field(
        24.0, gt=0, description="Start of the range when neither the request nor the exception gives one."
    )

    @field_validator("webhooks")
    @classmethod
    def _known_sources(cls, value: dict[str, ReplayWebhook]) -> dict[str, ReplayWebhook]:
        for source in value:
            checked_source(source)  # a webhook for `wms/` or `wms/dallas\n` would serve no source
        return value

    def webhook_for(self, source: str) -> tuple[str, ReplayWebhook] | None:
        """The webhook serving `source` and the source it is declared for: the longest declared source covering it."""
        covering = [declared for declared in self.webhooks if source_covers(declared, source)]
        if not covering:
            return None
        declared = max(covering, key=len)
        return declared, self.webhooks[declared]

    def wait_for(self, webhook: ReplayWebhook) -> float:
        """Minutes to wait for a webhook's replayed events."""
        return webhook.wait_minutes if webhook.wait_minutes is not None else self.wait_minutes
