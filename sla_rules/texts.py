"""How the technical rules write times and durations into an exception's context."""

from __future__ import annotations

from datetime import datetime

from kernel.durations import duration_text
from kernel.store.base import utc_text

__all__ = ["RECOVERED", "duration_text", "iso"]

RECOVERED = "recovered"  # the resolution of a technical exception whose condition stopped


def iso(value: datetime) -> str:
    """`value` as RFC 3339 in UTC with microseconds: '2026-11-04T15:30:00.000000Z'."""
    return utc_text(value).replace(" ", "T") + "Z"
