"""Durations as people read them in exceptions, alerts and the command line."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

_DURATION = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """A duration as rules, settings and commands write it: `90s`, `30m`, `2h`, `1d`, `1w`, or a number of seconds
    (`90`, also as text as YAML wrote it: `010` is 10 s, `1_000` is 1,000 s); ValueError otherwise."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value)) if isinstance(value, str) else None
        if not match or "__" in match.group(1) or match.group(1).endswith("_"):
            raise ValueError(f"{value!r} is not a duration like 90s, 30m, 2h, 1d or 1w")
        seconds = float(match.group(1).replace("_", "")) * _UNITS[match.group(2) or "s"]
    if seconds != seconds:  # YAML's .nan
        raise ValueError(f"{value!r} is not a duration like 90s, 30m, 2h, 1d or 1w")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:  # YAML's .inf, or more days than a timedelta holds: a traceback, not a problem with a line
        raise ValueError(f"{value!r} is too long for a duration (at most 999999999 days)") from None


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
