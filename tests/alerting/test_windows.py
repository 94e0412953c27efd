"""Maintenance windows: recurring local-time windows crossing midnight and DST, on a fixed clock; alerts
held back during them and sent when they end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alerting.windows import occurrence_at
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore
from kernel.routing import MaintenanceWindow
from kernel.store import Store
from tests.alerting.policy_support import ROUTING, by_key, dispatcher, open_exception, routing_from, state_of


def window(**values: Any) -> MaintenanceWindow:
    base: dict[str, Any] = {"name": "wms-sunday", "match": {"source": "wms"}, "days": ["sun"]}
    base.update(values)
    base.setdefault("start", "22:00")
    base.setdefault("end", "02:00")
    base.setdefault("timezone", "America/Chicago")
    return MaintenanceWindow.model_validate(base)


def utc(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("when", "inside"),
    [
        (utc(2026, 11, 9, 3, 59), False),  # Sunday Nov 8, 21:59 CST
        (utc(2026, 11, 9, 4, 0), True),  # Sunday 22:00 CST: starts
        (utc(2026, 11, 9, 7, 59), True),  # Monday 01:59 CST: across midnight
        (utc(2026, 11, 9, 8, 0), False),  # Monday 02:00 CST: over
        (utc(2026, 11, 8, 5, 0), False),  # Saturday 23:00 CST: not a window day
        (utc(2026, 11, 10, 5, 0), False),  # Monday 23:00 CST
    ],
)
def test_a_window_crosses_midnight(when: datetime, inside: bool) -> None:
    assert (occurrence_at(window(), when) is not None) is inside


def test_the_night_the_clocks_go_back_the_window_is_an_hour_longer() -> None:
    saturday = window(days=["sat"])  # Saturday Oct 31, 22:00 CDT to Sunday Nov 1, 02:00 CST
    found = occurrence_at(saturday, utc(2026, 11, 1, 6, 30))  # 01:30 CDT, the first of the two
    assert found is not None
    assert (found.starts_at, found.ends_at) == (utc(2026, 11, 1, 3, 0), utc(2026, 11, 1, 8, 0))
    assert found.ends_at - found.starts_at == timedelta(hours=5)
    assert occurrence_at(saturday, utc(2026, 11, 1, 7, 30)) is not None  # 01:30 CST, the second one
    assert occurrence_at(saturday, utc(2026, 11, 1, 8, 0)) is None


def test_the_night_the_clocks_go_forward_times_in_the_gap_read_on_the_old_clock() -> None:
    saturday = window(days=["sat"])  # Saturday Mar 7, 22:00 CST to Sunday Mar 8, 02:00 (which does not exist)
    found = occurrence_at(saturday, utc(2026, 3, 8, 7, 59))  # 01:59 CST
    assert found is not None
    assert (found.starts_at, found.ends_at) == (utc(2026, 3, 8, 4, 0), utc(2026, 3, 8, 8, 0))  # ends 03:00 CDT
    longer = window(days=["sat"], end="03:00")
    found = occurrence_at(longer, utc(2026, 3, 8, 7, 59))
    assert found is not None and found.ends_at - found.starts_at == timedelta(hours=4)  # usually five


def test_a_window_within_a_day_in_another_zone() -> None:
    weekdays = window(days=["mon", "tue", "wed", "thu", "fri"], start="09:00", end="10:30", timezone="Europe/Berlin")
    assert occurrence_at(weekdays, utc(2026, 7, 1, 7, 0)) is not None  # Wednesday 09:00 CEST
    assert occurrence_at(weekdays, utc(2026, 7, 1, 8, 30)) is None  # 10:30
    assert occurrence_at(weekdays, utc(2026, 7, 4, 7, 30)) is None  # Saturday


def test_alerts_in_a_window_are_sent_when_it_ends(store: Store, tmp_path: Path) -> None:
    routing = routing_from(
        tmp_path,
        ROUTING
        + """\
alerts:
  windows:
    - name: wms-sunday
      match: {source: wms}
      days: [sun]
      start: "22:00"
      end: "02:00"
      timezone: America/Chicago
""",
    )
    clock = FixedClock(utc(2026, 11, 9, 5, 0))  # Sunday 23:00 CST
    exceptions = ExceptionStore(store, clock)
    silent = open_exception(
        exceptions,
        "source-silence",
        "wms/dallas",
        owner="integration",
        kind="technical",
        severity="medium",
        source="wms/dallas",
    )
    erp = open_exception(exceptions, "order-release", "SO-1", severity="medium", source="erp")
    alerts = dispatcher(store, clock, routing)

    report = alerts.run()
    assert (report.posted, report.held_back) == (1, {"window": 1})
    assert (state_of(store, silent.id).decision, state_of(store, silent.id).reason) == ("window", "wms-sunday")
    assert set(by_key(alerts.outbox)) == {f"exc:{erp.id}:post"}

    clock.set(utc(2026, 11, 9, 7, 59))
    assert alerts.run().released == 0
    clock.set(utc(2026, 11, 9, 8, 0))  # Monday 02:00 CST: the window is over and wms/dallas is still silent
    assert alerts.run().released == 1
    found = by_key(alerts.outbox)
    assert found[f"exc:{silent.id}:post"].channel == "#integration-oncall"
    line = next(m for m in found.values() if m.action == "reply")
    assert (
        line.text
        == ":hourglass: This alert was held back by maintenance window wms-sunday since 05:00 UTC; the window is over."
    )
