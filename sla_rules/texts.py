"""How the technical rules write times and durations into an exception's context."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kernel.store.base import utc_text

RECOVERED = "recovered"  # the resolution of a technical exception whose condition stopped


def parse_utc(text: str) -> datetime:
    """A stored UTC timestamp ('YYYY-MM-DD HH:MM:SS[.ffffff]') as an aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def iso(value: datetime) -> str:
    """`value` as RFC 3339 in UTC with microseconds: '2026-11-04T15:30:00.000000Z'."""
    return utc_text(value).replace(" ", "T") + "Z"


def duration_text(value: timedelta) -> str:
    """A short human duration: `45m`, `2h05m`, `3d4h`, `30s`."""
    seconds = int(value.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"
