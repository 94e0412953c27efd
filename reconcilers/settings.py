"""Reconciler settings (`TOWER_RECONCILE_*`): the SQL databases a side may be pulled from, and pull limits.

A database is a name and a SQLAlchemy URL, e.g.

    TOWER_RECONCILE_SOURCES='{"wms_replica": "postgresql+psycopg://tower:...@wms-ro:5432/wms"}'

The URL carries credentials, so it is a secret: it has no default, is never logged or shown, and
rules name the database only (`params.pull.<side>.database`). The scheduled job's interval is
`TOWER_JOB_RECONCILE_INTERVAL_SECONDS` (see `reconcilers.jobs`).
"""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ReconcileSettings(BaseSettings):
    """The databases reconcilers may read a side from, and how much a pull may read."""

    model_config = SettingsConfigDict(env_prefix="TOWER_RECONCILE_")

    sources: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='JSON map of database name to SQLAlchemy URL, e.g. {"wms_replica": "postgresql://..."}. '
        "Secret; no default.",
    )
    pull_batch_rows: int = Field(50_000, ge=1, description="Rows read from a database and written per batch.")
    pull_max_rows: int = Field(
        20_000_000, ge=1, description="A pull returning more rows than this fails the run (a runaway query)."
    )
    pull_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description="A pull not finished after this many seconds is cancelled and fails the run (a replica that"
        " hangs must not stop reconciliation quietly); connecting is bounded by the driver (connect_timeout in"
        " the URL).",
    )

    @field_validator("sources")
    @classmethod
    def _names(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, url in value.items():
            if not _NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a database name: letters, digits, '_', '.', '-'")
            if "://" not in url.get_secret_value():
                raise ValueError(f"the URL of {name!r} is not a SQLAlchemy URL (dialect://...)")
        return value
