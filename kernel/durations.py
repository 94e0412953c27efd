"""Durations as people read them in exceptions, alerts and the command line."""

from __future__ import annotations

from datetime import timedelta


def duration_text(value: timedelta, seconds: bool = True) -> str:
    """A short duration: `45s`, `12m30s` (`12m` without `seconds`), `2h05m`, `3d4h`; a negative one is `0s`."""
    total = max(0, int(value.total_seconds()))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs:02d}s" if secs and seconds else f"{minutes}m"
    return f"{secs}s"
