"""Maintenance windows: recurring local-time windows (routing file, `alerts.windows`) that hold alerts back.

A window starts on each of its `days` at `start` local time and lasts until `end` the same day,
or the next day when `end` is not after `start` (Sunday 22:00 to 02:00 ends on Monday). Times
are wall-clock times in the window's time zone, so a window keeps its local hours across DST
changes and its length changes instead: in Chicago, Saturday 22:00 to Sunday 02:00 lasts five
hours on the night the clocks go back. A time inside the hour the clocks skip is read on the
clock before the change (zoneinfo's fold=0): 02:00 on the spring-forward night is 02:00 CST,
i.e. 03:00 CDT, so that night 22:00 to 02:00 still ends when the local clock shows 03:00.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from kernel.routing import WEEKDAYS, MaintenanceWindow


@dataclass(frozen=True)
class Occurrence:
    """One occurrence of a window, in UTC."""

    name: str
    starts_at: datetime
    ends_at: datetime


def occurrence_at(window: MaintenanceWindow, when: datetime) -> Occurrence | None:
    """The occurrence of `window` that `when` falls in, None when it falls in none."""
    zone = ZoneInfo(window.timezone)
    local_day = when.astimezone(zone).date()
    # An occurrence that covers `when` started on its local day or (crossing midnight) the day before.
    for day in (local_day, local_day - timedelta(days=1)):
        found = _occurrence(window, day, zone)
        if found is not None and found.starts_at <= when.astimezone(UTC) < found.ends_at:
            return found
    return None


def _occurrence(window: MaintenanceWindow, day: date, zone: ZoneInfo) -> Occurrence | None:
    if WEEKDAYS[day.weekday()] not in window.days:
        return None
    end_day = day if window.end > window.start else day + timedelta(days=1)
    starts = datetime.combine(day, window.start, tzinfo=zone).astimezone(UTC)
    ends = datetime.combine(end_day, window.end, tzinfo=zone).astimezone(UTC)
    return Occurrence(window.name, starts, ends)


def window_for(windows: Sequence[MaintenanceWindow], values: Mapping[str, Any], when: datetime) -> Occurrence | None:
    """The first window in force at `when` whose `match` holds for an exception's values."""
    for window in windows:
        if window.match.holds(values):
            found = occurrence_at(window, when)
            if found is not None:
                return found
    return None
