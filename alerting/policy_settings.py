"""Alerting policy settings (TOWER_ALERTING_*): grouping, escalation, Slack users, root-cause mapping.

Where alerts go (channels, on-call groups, the alert routing tree, maintenance windows and root
causes) is configured in the routing file (kernel/routing.py); how the tower reaches Slack in
TOWER_SLACK_* (alerting/settings.py). These settings say how alerting behaves.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.model.events import checked_source
from kernel.model.text import Name


class Escalation(BaseModel):
    """For one severity: re-notify an unacknowledged alert every `repeat_minutes`, and mention the owner's
    on-call group after `escalate_minutes`; 0 turns either off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    repeat_minutes: float = Field(ge=0, description="Re-notify in the alert's thread this often; 0: never.")
    escalate_minutes: float = Field(ge=0, description="Mention the on-call group after this long; 0: never.")

    @property
    def repeat(self) -> timedelta | None:
        """The repeat interval, None when off."""
        return timedelta(minutes=self.repeat_minutes) if self.repeat_minutes else None

    @property
    def escalate(self) -> timedelta | None:
        """The acknowledgement timeout, None when off."""
        return timedelta(minutes=self.escalate_minutes) if self.escalate_minutes else None


def _default_escalation() -> dict[str, Escalation]:
    return {
        "high": Escalation(repeat_minutes=60, escalate_minutes=30),
        "critical": Escalation(repeat_minutes=30, escalate_minutes=10),
    }


class AlertingSettings(BaseSettings):
    """How alerts are decided: grouping of bursts, escalation per severity, who is who in Slack."""

    model_config = SettingsConfigDict(env_prefix="TOWER_ALERTING_")

    group_window_seconds: float = Field(
        60.0,
        gt=0,
        description="Grouping window: exceptions of one owner and rule alerted within this long count as a burst.",
    )
    group_threshold: int = Field(
        5,
        ge=1,
        description="More than this many in one window become one digest message instead of one message each.",
    )
    digest_keys: int = Field(10, ge=1, le=50, description="Business keys a digest lists (the first ones).")
    escalation: dict[str, Escalation] = Field(
        default_factory=_default_escalation,
        description='Per severity, re-notify and escalation timings in minutes, e.g. {"high": {"repeat_minutes": '
        '60, "escalate_minutes": 30}}. Severities not listed are never re-notified or escalated.',
    )
    # the name is the audit trail's actor, shown in Slack, the dashboard and the CLI: a name as the API takes one
    slack_users: dict[str, Annotated[Name, StringConstraints(min_length=1)]] = Field(
        default_factory=dict,
        description='Slack user id -> operator name, e.g. {"U024BE7LH": "ann"}: who may acknowledge and resolve '
        "from Slack (anyone else is refused), and the actor recorded in the audit trail. A name is one line of 1 to "
        "200 characters, without control or bidirectional formatting characters.",
    )
    service_sources: dict[str, str] = Field(
        default_factory=dict,
        description='Service name -> source, e.g. {"wms-connector": "wms"}: the source an integration-errors '
        "exception is for when its spans carry no tower.source (else a service named like a source system is "
        "that source).",
    )
    feed_overlap_seconds: float = Field(
        30.0,
        ge=0,
        description="The dispatcher re-reads this much of the change feed before its cursor, for changes that "
        "became visible late; what it already handled is skipped.",
    )
    feed_batch: int = Field(
        10_000,
        ge=100,
        description="Changes the dispatcher reads and handles at once; a run goes on batch after batch until the "
        "change feed is read.",
    )

    @field_validator("escalation")
    @classmethod
    def _severities(cls, value: dict[str, Escalation]) -> dict[str, Escalation]:
        for severity in value:
            if severity not in ("low", "medium", "high", "critical"):
                raise ValueError(f"unknown severity {severity!r}; severities are low, medium, high, critical")
        return value

    @field_validator("service_sources")
    @classmethod
    def _sources(cls, value: dict[str, str]) -> dict[str, str]:
        for service, source in value.items():
            try:
                checked_source(source)
            except ValueError as exc:
                raise ValueError(f"{service}: {exc}") from None
        return value

    @property
    def group_window(self) -> timedelta:
        """The grouping window."""
        return timedelta(seconds=self.group_window_seconds)
