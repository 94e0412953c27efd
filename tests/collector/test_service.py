"""The ingest service's time window: how far from the tower's clock an event's time may be."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from collector.deadletters import RecentRefusals
from collector.service import TimeWindow

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DEFAULT = TimeWindow.from_settings(3650, 1440)


@pytest.mark.parametrize(
    "time",
    [
        NOW - timedelta(days=3650),  # exactly the oldest allowed
        NOW + timedelta(minutes=1440),  # exactly the furthest ahead allowed
        NOW,
        NOW + timedelta(hours=14),  # a local time sent as UTC in the furthest time zone: still taken
    ],
)
def test_times_inside_the_window_are_taken(time: datetime) -> None:
    assert DEFAULT.problem(time, NOW) is None


def test_an_older_time_is_refused_naming_its_age_and_the_setting() -> None:
    problem = DEFAULT.problem(NOW - timedelta(days=3650, microseconds=1), NOW)
    assert problem == (
        "time: 2016-11-29T11:59:59.999999Z is 3,650 days before the tower's clock; events older than 3650 days are "
        "refused (TOWER_COLLECTOR_EVENT_MAX_AGE_DAYS)"
    )
    epoch = DEFAULT.problem(datetime(1970, 1, 1, tzinfo=UTC), NOW)
    assert epoch is not None and epoch.startswith("time: 1970-01-01T00:00:00Z is 20,784 days before")


def test_a_time_ahead_is_refused_in_hours_or_days_naming_the_setting() -> None:
    problem = DEFAULT.problem(NOW + timedelta(hours=25, minutes=30), NOW)
    assert problem == (
        "time: 2026-11-28T13:30:00Z is 25.5 hours ahead of the tower's clock; events more than 1440 minutes ahead "
        "are refused (TOWER_COLLECTOR_EVENT_MAX_AHEAD_MINUTES; a sender's clock or time zone?)"
    )
    far = DEFAULT.problem(datetime(2299, 1, 1, tzinfo=UTC), NOW)
    assert far is not None and "is 99,380 days ahead" in far


def test_an_offset_is_compared_as_the_instant_it_names() -> None:
    # 2026-11-28T07:00-06:00 is 13:00 UTC: 25 hours ahead, refused; the same wall time in UTC is 19 hours ahead
    assert DEFAULT.problem(datetime.fromisoformat("2026-11-28T07:00:00-06:00"), NOW) is not None
    assert DEFAULT.problem(datetime.fromisoformat("2026-11-28T07:00:00+00:00"), NOW) is None


def test_zero_in_the_settings_turns_each_limit_off() -> None:
    open_ended = TimeWindow.from_settings(0, 0)
    assert open_ended.problem(datetime(1970, 1, 1, tzinfo=UTC), NOW) is None
    assert open_ended.problem(datetime(2262, 4, 10, tzinfo=UTC), NOW) is None
    assert TimeWindow.from_settings(0, 60).problem(NOW + timedelta(minutes=61), NOW) is not None
    assert TimeWindow.from_settings(1, 0).problem(NOW - timedelta(days=2), NOW) is not None


# --- RecentRefusals: a refusal sent again is stored once per window ---------------------------------------


def test_a_refusal_is_stored_lately_for_the_window_only() -> None:
    recent = RecentRefusals(timedelta(minutes=10))
    key = recent.key("tok", "events", "{broken")
    assert not recent.stored_lately(key, NOW)
    recent.remember([key], NOW)
    assert recent.stored_lately(key, NOW + timedelta(minutes=9, seconds=59))
    assert not recent.stored_lately(key, NOW + timedelta(minutes=10))
    # the same bytes from another token or door are another refusal
    assert not recent.stored_lately(recent.key("other", "events", "{broken"), NOW)
    assert not recent.stored_lately(recent.key("tok", "otlp_logs", "{broken"), NOW)


def test_old_and_surplus_entries_are_let_go() -> None:
    recent = RecentRefusals(timedelta(minutes=10), max_entries=3)
    keys = [recent.key("tok", "events", str(n)) for n in range(5)]
    recent.remember(keys[:2], NOW)
    recent.remember(keys[2:], NOW + timedelta(minutes=1))
    assert [recent.stored_lately(k, NOW + timedelta(minutes=1)) for k in keys] == [False, False, True, True, True]
    recent.remember([], NOW + timedelta(minutes=11))  # the rest expire
    assert not any(recent.stored_lately(k, NOW + timedelta(minutes=11)) for k in keys)
    assert len(recent._stored) == 0


def test_a_zero_window_stores_every_copy() -> None:
    recent = RecentRefusals(timedelta(0))
    key = recent.key("tok", "events", "{broken")
    recent.remember([key], NOW)
    assert not recent.stored_lately(key, NOW)
