"""Report periods: defaults, dates read in the report time zone, month boundaries across DST, file names."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from kernel.clock import FixedClock
from kernel.store import Store
from sla_rules.loader import load_rule_set
from tower.reports.monthly import month_key
from tower.reports.service import BreachReports, Period, month_of
from tower.reports.settings import ReportSettings

CHICAGO = ZoneInfo("America/Chicago")


def reports(store: Store, now: datetime, timezone: str = "UTC") -> BreachReports:
    return BreachReports(store, FixedClock(now), load_rule_set(), ReportSettings(timezone=timezone))


def test_periods_default_to_calendar_months(store: Store) -> None:
    utc = reports(store, datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC))
    nov = Period(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    assert utc.period(None, None) == nov
    assert utc.period(datetime(2026, 11, 1), None) == nov  # naive: report time zone
    assert utc.period(None, datetime(2026, 12, 1)) == nov
    assert utc.period(datetime(2026, 11, 15), None).until == datetime(2026, 12, 1, tzinfo=UTC)
    assert utc.period(None, datetime(2026, 11, 15, tzinfo=UTC)).since == datetime(2026, 11, 1, tzinfo=UTC)
    aware = datetime(2026, 11, 3, 6, tzinfo=ZoneInfo("Europe/Berlin"))
    assert utc.period(aware, None).since == aware  # an offset is kept


def test_dates_and_months_in_the_report_time_zone(store: Store) -> None:
    # 2026-11-01 06:00 UTC is 01:00 in Chicago (CDT ends at 02:00 local that day): still November there
    chicago = reports(store, datetime(2026, 11, 1, 6, 0, tzinfo=UTC), "America/Chicago")
    october = chicago.period(None, None)
    assert october == Period(datetime(2026, 10, 1, 5, tzinfo=UTC), datetime(2026, 11, 1, 5, tzinfo=UTC))
    assert chicago.period(datetime(2026, 11, 1), None) == Period(
        datetime(2026, 11, 1, 5, tzinfo=UTC),
        datetime(2026, 12, 1, 6, tzinfo=UTC),  # CDT start, CST end
    )
    assert chicago.filename(october, "xlsx") == "sla-breaches_2026-10.xlsx"
    assert chicago.filename(october, "csv", "summary") == "sla-breaches-summary_2026-10.csv"
    # the same instants are not month boundaries in UTC
    assert reports(store, datetime(2026, 11, 1, tzinfo=UTC)).filename(october, "csv") == (
        "sla-breaches_2026-10-01T0500_2026-11-01T0500.csv"
    )
    seconds = Period(datetime(2026, 11, 19, 6, 59, 59, tzinfo=UTC), datetime(2026, 11, 19, 7, tzinfo=UTC))
    assert reports(store, datetime(2026, 11, 1, tzinfo=UTC)).filename(seconds, "csv") == (
        "sla-breaches_2026-11-19T065959_2026-11-19T0700.csv"  # a second apart: two names, not one
    )


@pytest.mark.parametrize(
    ("since", "until", "label"),
    [
        ("2026-10-01", "2026-11-01", "2026-10"),
        ("2026-12-01", "2027-01-01", "2026-12"),
        ("2026-10-01", "2026-12-01", "2026-10-01_2026-12-01"),
        ("2026-10-01", "2026-10-15", "2026-10-01_2026-10-15"),
        ("2026-10-01T06:30:00", "2026-10-02", "2026-10-01T0630_2026-10-02"),
        # years before 1000 with four digits, as ISO 8601 (strftime's %Y gave `1-01-01`)
        ("0001-01-01", "0001-02-01", "0001-01"),
        ("0001-01-01", "0001-01-15", "0001-01-01_0001-01-15"),
        ("0999-12-31T23:59:30", "1000-01-01", "0999-12-31T235930_1000-01-01"),
    ],
)
def test_labels(since: str, until: str, label: str) -> None:
    period = Period(
        datetime.fromisoformat(since).replace(tzinfo=UTC), datetime.fromisoformat(until).replace(tzinfo=UTC)
    )
    assert period.label(ZoneInfo("UTC")) == label


def test_month_of_moves_across_years() -> None:
    at = datetime(2027, 1, 15, tzinfo=UTC)
    assert month_of(at, ZoneInfo("UTC"), -1) == Period(
        datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    )
    assert month_of(at, ZoneInfo("UTC"), 12).since == datetime(2028, 1, 1, tzinfo=UTC)
    assert month_of(at, CHICAGO, -13).since == datetime(2025, 12, 1, 6, tzinfo=UTC)


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        ReportSettings(timezone="Mars/Olympus")


def test_the_monthly_report_s_month_of_year_one_has_four_digits(store: Store) -> None:
    early = reports(store, datetime(1, 2, 15, tzinfo=UTC))
    january = early.default_period()
    assert (month_key(january, early), early.filename(january, "xlsx")) == ("0001-01", "sla-breaches_0001-01.xlsx")
