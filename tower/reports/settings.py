"""Finance report settings (TOWER_REPORTS_*): the report time zone and where the monthly report goes."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ReportSettings(BaseSettings):
    """SLA breach reports: the time zone of their dates and months, and the finance channel."""

    model_config = SettingsConfigDict(env_prefix="TOWER_REPORTS_")

    timezone: str = Field(
        "UTC",
        description="IANA time zone of the reports: dates in the files, months in the summary and the monthly "
        "job's month boundaries, and a `from`/`to` given without an offset.",
    )
    finance_owner: str = Field(
        "finance", description="The owner (routing file `owners:`) whose Slack channel gets the monthly report."
    )
    finance_channel: str | None = Field(
        None,
        description="Slack channel of the monthly report (#name or an id); default: the finance owner's `channel` "
        "in the routing file.",
    )
    page_size: int = Field(5_000, ge=100, le=100_000, description="Breaches read from the store per query.")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The report time zone."""
        return ZoneInfo(self.timezone)
