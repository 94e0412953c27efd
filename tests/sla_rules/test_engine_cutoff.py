"""The ship cutoff: released before 14:00 local on a business day -> 23:59:59 that day, otherwise
23:59:59 of the next business day; local time in the warehouse's zone (zone_by) or the rule's,
right across weekends and daylight saving changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from kernel.store import Store
from sla_rules.model import Cutoff, Deadline, SlaRule
from sla_rules.sql import holiday_overrides, next_business_day_offsets
from tests.sla_rules.test_engine import RULES, Harness, event, utc

SHIP = RULES["ship-cutoff"]
ZONES = {"DAL": "America/Chicago", "ATL": "America/New_York", "RNO": "America/Los_Angeles"}


def local(zone: str, year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> datetime:
    """A local wall-clock time in `zone`, as an aware datetime."""
    return datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(zone))


def expected_due(
    released: datetime,
    zone: str,
    cutoff: time = time(14),
    business: tuple[int, ...] = (0, 1, 2, 3, 4),
    holidays: frozenset[date] = frozenset(),
) -> datetime:
    """The deadline, computed independently with zoneinfo."""
    tz = ZoneInfo(zone)
    at = released.astimezone(tz)
    day: date = at.date()
    if not (at.weekday() in business and day not in holidays and at.time() < cutoff):
        day += timedelta(days=1)
        while day.weekday() not in business or day in holidays:
            day += timedelta(days=1)
    return datetime.combine(day, time(23, 59, 59), tzinfo=tz).astimezone(UTC)


def due_of(tower: Harness, key: str) -> datetime | None:
    case = tower.case("ship-cutoff", key)
    assert case is not None, key
    return utc(case["due_at"])


def test_released_at_1359_versus_1401(store: Store) -> None:
    tower = Harness(store, rules=[SHIP])
    before = local("America/Chicago", 2026, 11, 4, 13, 59)  # a Wednesday
    after = local("America/Chicago", 2026, 11, 4, 14, 1)
    shipped = local("America/Chicago", 2026, 11, 5, 12, 0)  # Thursday noon
    tower.send(event("order.released", 1, before), event("order.released", 2, after))
    tower.send(event("shipment.confirmed", 1, shipped), event("shipment.confirmed", 2, shipped))
    tower.at(shipped + timedelta(hours=1))
    tower.evaluate()
    assert due_of(tower, "SO-1") == local("America/Chicago", 2026, 11, 4, 23, 59, 59)
    assert due_of(tower, "SO-2") == local("America/Chicago", 2026, 11, 5, 23, 59, 59)
    assert tower.statuses("ship-cutoff") == {"SO-1": "late", "SO-2": "met"}


def test_friday_afternoon_and_the_weekend_are_due_monday(store: Store) -> None:
    tower = Harness(store, rules=[SHIP])
    releases = {
        1: local("America/Chicago", 2026, 11, 6, 13, 0),  # Friday before the cutoff: Friday
        2: local("America/Chicago", 2026, 11, 6, 15, 0),  # Friday after: Monday
        3: local("America/Chicago", 2026, 11, 7, 10, 0),  # Saturday: Monday
        4: local("America/Chicago", 2026, 11, 8, 23, 30),  # Sunday night: Monday
    }
    for n, at in releases.items():
        tower.send(event("order.released", n, at))
    tower.at(local("America/Chicago", 2026, 11, 8, 12, 0))  # Sunday noon
    tower.evaluate()
    monday = local("America/Chicago", 2026, 11, 9, 23, 59, 59)
    assert due_of(tower, "SO-1") == local("America/Chicago", 2026, 11, 6, 23, 59, 59)
    assert [due_of(tower, f"SO-{n}") for n in (2, 3, 4)] == [monday] * 3
    assert tower.statuses("ship-cutoff") == {
        "SO-1": "breached",
        "SO-2": "pending",
        "SO-3": "pending",
        "SO-4": "pending",
    }


def test_spring_forward_in_chicago(store: Store) -> None:
    # US daylight saving time starts Sunday 8 March 2026 at 02:00 in Chicago (UTC-6 -> UTC-5).
    tower = Harness(store, rules=[SHIP])
    releases = {
        1: datetime(2026, 3, 6, 21, 0, tzinfo=UTC),  # Friday 15:00 CST: Monday
        2: datetime(2026, 3, 6, 19, 0, tzinfo=UTC),  # Friday 13:00 CST: Friday
        3: datetime(2026, 3, 7, 16, 0, tzinfo=UTC),  # the Saturday of the change: Monday
        4: datetime(2026, 3, 8, 8, 30, tzinfo=UTC),  # Sunday 03:30 CDT, just after the change: Monday
        5: datetime(2026, 3, 9, 19, 30, tzinfo=UTC),  # Monday 14:30 CDT (13:30 if the zone were still CST): Tuesday
        6: datetime(2026, 3, 9, 18, 30, tzinfo=UTC),  # Monday 13:30 CDT: Monday
    }
    for n, at in releases.items():
        tower.send(event("order.released", n, at))
    tower.at(datetime(2026, 3, 9, 20, 0, tzinfo=UTC))
    tower.evaluate()
    assert due_of(tower, "SO-1") == datetime(2026, 3, 10, 4, 59, 59, tzinfo=UTC)  # Monday 23:59:59 CDT
    assert due_of(tower, "SO-2") == datetime(2026, 3, 7, 5, 59, 59, tzinfo=UTC)  # Friday 23:59:59 CST
    assert due_of(tower, "SO-3") == due_of(tower, "SO-4") == datetime(2026, 3, 10, 4, 59, 59, tzinfo=UTC)
    assert due_of(tower, "SO-5") == datetime(2026, 3, 11, 4, 59, 59, tzinfo=UTC)  # Tuesday
    assert due_of(tower, "SO-6") == datetime(2026, 3, 10, 4, 59, 59, tzinfo=UTC)
    for n, at in releases.items():
        assert due_of(tower, f"SO-{n}") == expected_due(at, "America/Chicago")


def test_fall_back_in_chicago(store: Store) -> None:
    # US daylight saving time ends Sunday 1 November 2026 at 02:00 in Chicago (UTC-5 -> UTC-6).
    tower = Harness(store, rules=[SHIP])
    releases = {
        1: datetime(2026, 10, 30, 20, 0, tzinfo=UTC),  # Friday 15:00 CDT: Monday 23:59:59 CST
        2: datetime(2026, 11, 1, 6, 30, tzinfo=UTC),  # Sunday 01:30 CDT, the first of the two 01:30s: Monday
        3: datetime(2026, 11, 1, 7, 30, tzinfo=UTC),  # Sunday 01:30 CST, the second: Monday
        4: datetime(2026, 11, 2, 19, 30, tzinfo=UTC),  # Monday 13:30 CST (14:30 if still CDT): Monday
    }
    for n, at in releases.items():
        tower.send(event("order.released", n, at))
    tower.send(event("shipment.confirmed", 1, datetime(2026, 11, 3, 5, 30, tzinfo=UTC)))  # Monday 23:30 CST
    tower.at(datetime(2026, 11, 3, 6, 30, tzinfo=UTC))
    tower.evaluate()
    monday = datetime(2026, 11, 3, 5, 59, 59, tzinfo=UTC)
    assert [due_of(tower, f"SO-{n}") for n in (1, 2, 3, 4)] == [monday] * 4
    assert tower.status("ship-cutoff", "SO-1") == "met"
    assert tower.status("ship-cutoff", "SO-4") == "breached"


def test_the_zone_comes_from_the_warehouse(store: Store) -> None:
    tower = Harness(store, rules=[SHIP])
    at = datetime(2026, 11, 4, 19, 30, tzinfo=UTC)  # Wednesday: 13:30 Chicago, 14:30 New York, 11:30 Reno
    tower.send(
        event("order.released", 1, at, warehouse="DAL"),
        event("order.released", 2, at, warehouse="ATL"),
        event("order.released", 3, at, warehouse="RNO"),
        event("order.released", 4, at, warehouse="XYZ"),  # not listed: the rule's zone
        event("order.accepted", 5, at - timedelta(hours=1), warehouse="ATL"),
        event("order.released", 5, at, warehouse=""),  # no warehouse on the release: the order's
    )
    tower.at(at + timedelta(hours=1))
    tower.evaluate()
    assert due_of(tower, "SO-1") == local("America/Chicago", 2026, 11, 4, 23, 59, 59)
    assert due_of(tower, "SO-2") == local("America/New_York", 2026, 11, 5, 23, 59, 59)
    assert due_of(tower, "SO-3") == local("America/Los_Angeles", 2026, 11, 4, 23, 59, 59)
    assert due_of(tower, "SO-4") == local("America/Chicago", 2026, 11, 4, 23, 59, 59)
    assert due_of(tower, "SO-5") == local("America/New_York", 2026, 11, 5, 23, 59, 59)
    # the breaches' exceptions carry the zone their deadline is in: alerts show the warehouse's clock
    tower.at(datetime(2026, 11, 6, 12, tzinfo=UTC))
    tower.evaluate()
    zones = {e.key: e.context.get("zone") for e in tower.open_exceptions("ship-cutoff")}
    assert zones == {
        "SO-1": "America/Chicago",
        "SO-2": "America/New_York",
        "SO-3": "America/Los_Angeles",
        "SO-4": "America/Chicago",
        "SO-5": "America/New_York",
    }


def test_a_system_the_rule_does_not_read_cannot_move_the_cutoff(store: Store) -> None:
    # ship-cutoff reads the ERP's releases and the WMS's shipments: a storefront's event naming another warehouse
    # (an ecommerce token) is no fallback for a release without one; the ERP's own order is
    tower = Harness(store, rules=[SHIP])
    at = datetime(2026, 11, 4, 19, 30, tzinfo=UTC)  # Wednesday: 13:30 Chicago, 11:30 Reno
    tower.send(
        event("order.accepted", 6, at - timedelta(hours=2), source="ecommerce", warehouse="RNO"),
        event("order.released", 6, at, warehouse=""),
        event("order.accepted", 7, at - timedelta(hours=2), source="ecommerce", warehouse="RNO"),
        event("order.accepted", 7, at - timedelta(hours=1), source="erp", warehouse="ATL"),
        event("order.released", 7, at, warehouse=""),
    )
    tower.at(datetime(2026, 11, 6, 12, tzinfo=UTC))
    tower.evaluate()
    assert due_of(tower, "SO-6") == local("America/Chicago", 2026, 11, 4, 23, 59, 59)  # the rule's zone
    assert due_of(tower, "SO-7") == local("America/New_York", 2026, 11, 5, 23, 59, 59)
    opened = {
        e.key: (e.context.get("warehouse", ""), e.context.get("zone")) for e in tower.open_exceptions("ship-cutoff")
    }
    assert opened == {"SO-6": ("", "America/Chicago"), "SO-7": ("ATL", "America/New_York")}


def releases_every(
    step: timedelta, spans: list[tuple[datetime, datetime]], warehouses: list[str]
) -> dict[int, tuple[datetime, str]]:
    """Order number -> (release time, warehouse): one release every `step` through each span, warehouses in turn."""
    releases: dict[int, tuple[datetime, str]] = {}
    for first, last in spans:
        at = first
        while at < last:
            n = len(releases) + 1
            releases[n] = (at, warehouses[n % len(warehouses)])
            at += step
    return releases


def due_dates(tower: Harness, releases: dict[int, tuple[datetime, str]], now: datetime) -> dict[str, datetime | None]:
    """Release them all, evaluate at `now`: each case's deadline by key."""
    tower.send(*(event("order.released", k, at, warehouse=w) for k, (at, w) in releases.items()))
    tower.at(now)
    tower.evaluate()
    rows = tower.store.query("SELECT key, due_at FROM sla_cases FINAL WHERE rule = 'ship-cutoff'")
    return {r["key"]: utc(r["due_at"]) for r in rows}


def test_deadlines_match_an_independent_computation(store: Store) -> None:
    """Releases every 97 minutes through both 2026 US daylight saving changes, in every warehouse."""
    spans = [
        (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 12, tzinfo=UTC)),
        (datetime(2026, 10, 27, tzinfo=UTC), datetime(2026, 11, 6, tzinfo=UTC)),
    ]
    releases = releases_every(timedelta(minutes=97), spans, ["DAL", "ATL", "RNO", "", "XYZ"])
    found = due_dates(Harness(store, rules=[SHIP]), releases, datetime(2026, 12, 1, tzinfo=UTC))
    assert len(found) == len(releases) > 300
    for k, (at, warehouse) in releases.items():
        assert found[f"SO-{k}"] == expected_due(at, ZONES.get(warehouse, "America/Chicago")), (k, at, warehouse)


def test_other_business_days_and_cutoffs(store: Store) -> None:
    rule = SlaRule(
        id="berlin-dispatch",
        title="Berlin dispatches Monday to Saturday by 09:30",
        kind="business",
        owner="warehouse",
        key="order_id",
        start=SHIP.start,
        end=SHIP.end,
        deadline=Deadline(
            cutoff=Cutoff(
                time=time(9, 30), timezone="Europe/Berlin", business_days=["mon", "tue", "wed", "thu", "fri", "sat"]
            )
        ),
    )
    tower = Harness(store, rules=[rule])
    releases = {
        1: local("Europe/Berlin", 2026, 3, 28, 9, 29),  # Saturday before the cutoff: Saturday
        2: local("Europe/Berlin", 2026, 3, 28, 9, 31),  # Saturday after: Monday
        3: local("Europe/Berlin", 2026, 3, 29, 8, 0),  # Sunday (the EU change day): Monday
    }
    for n, at in releases.items():
        tower.send(event("order.released", n, at))
    tower.at(local("Europe/Berlin", 2026, 3, 29, 12, 0))
    tower.evaluate()
    rows = {r["key"]: utc(r["due_at"]) for r in store.query("SELECT key, due_at FROM sla_cases FINAL")}
    assert rows == {
        "SO-1": local("Europe/Berlin", 2026, 3, 28, 23, 59, 59),
        "SO-2": local("Europe/Berlin", 2026, 3, 30, 23, 59, 59),
        "SO-3": local("Europe/Berlin", 2026, 3, 30, 23, 59, 59),
    }
    for n, at in releases.items():
        assert rows[f"SO-{n}"] == expected_due(at, "Europe/Berlin", time(9, 30), (0, 1, 2, 3, 4, 5))


def test_next_business_day_offsets() -> None:
    assert next_business_day_offsets(["mon", "tue", "wed", "thu", "fri"]) == [1, 1, 1, 1, 3, 2, 1]
    assert next_business_day_offsets(["wed"]) == [2, 1, 7, 6, 5, 4, 3]


def test_the_zone_field_may_be_any_data_field(store: Store) -> None:
    def rule(rule_id: str, field: str) -> SlaRule:
        cutoff = SHIP.deadline.cutoff
        assert cutoff is not None and cutoff.zone_by is not None
        zones = {"east": "America/New_York", "DAL-A1": "America/Chicago"}
        by = cutoff.zone_by.model_copy(update={"field": field, "zones": zones})
        return SHIP.model_copy(
            update={"id": rule_id, "deadline": Deadline(cutoff=cutoff.model_copy(update={"zone_by": by}))}
        )

    tower = Harness(store, rules=[rule("by-site", "data.site"), rule("by-location", "location")])
    at = datetime(2026, 11, 4, 19, 30, tzinfo=UTC)  # 13:30 in Chicago, 14:30 in New York
    tower.send(
        event("order.released", 1, at, site="east", location="DAL-A1"),
        event("order.released", 2, at, site="west", location="east"),
    )
    tower.at(at + timedelta(hours=1))
    tower.evaluate()
    dues = {
        (r["rule"], r["key"]): utc(r["due_at"]) for r in store.query("SELECT rule, key, due_at FROM sla_cases FINAL")
    }
    wednesday, thursday = (
        local("America/Chicago", 2026, 11, 4, 23, 59, 59),
        local("America/New_York", 2026, 11, 5, 23, 59, 59),
    )
    assert dues == {
        ("by-site", "SO-1"): thursday,  # a field of the event's data (read from its JSON)
        ("by-site", "SO-2"): wednesday,  # unlisted value: the rule's zone
        ("by-location", "SO-1"): wednesday,  # a column of business_events
        ("by-location", "SO-2"): thursday,
    }


# Thanksgiving 2026 and the Friday after, Christmas Eve and Christmas Day, New Year's Day 2027 (a Friday).
HOLIDAYS = [date(2026, 11, 26), date(2026, 11, 27), date(2026, 12, 24), date(2026, 12, 25), date(2027, 1, 1)]


def with_holidays(holidays: list[date]) -> SlaRule:
    """The shipped ship-cutoff rule with `holidays`, validated as a rule file's would be."""
    cutoff = SHIP.deadline.cutoff
    assert cutoff is not None
    deadline = {"cutoff": {**cutoff.model_dump(), "holidays": holidays}}
    return SlaRule.model_validate({**SHIP.model_dump(), "deadline": deadline})


def test_no_deadline_ends_on_a_holiday(store: Store) -> None:
    rule = with_holidays([HOLIDAYS[1], HOLIDAYS[0], HOLIDAYS[1]])
    assert rule.deadline.cutoff is not None and rule.deadline.cutoff.holidays == HOLIDAYS[:2]  # sorted, once
    tower = Harness(store, rules=[rule])
    chicago = "America/Chicago"
    releases = {
        1: local(chicago, 2026, 11, 25, 13, 59),  # Wednesday before the cutoff: that day
        2: local(chicago, 2026, 11, 25, 14, 1),  # Wednesday after: not Thursday or Friday, Monday
        3: local(chicago, 2026, 11, 26, 9, 0),  # Thanksgiving morning: Monday
        4: local(chicago, 2026, 11, 27, 13, 0),  # Friday before the cutoff, a holiday: Monday
        5: local(chicago, 2026, 11, 28, 10, 0),  # Saturday: Monday, as ever
        6: local("America/New_York", 2026, 11, 25, 15, 0),  # Atlanta after its cutoff: Monday, Atlanta time
    }
    for n, at in releases.items():
        tower.send(event("order.released", n, at, warehouse="ATL" if n == 6 else "DAL"))
    tower.at(local(chicago, 2026, 11, 27, 12, 0))
    tower.evaluate()
    monday = local(chicago, 2026, 11, 30, 23, 59, 59)
    assert due_of(tower, "SO-1") == local(chicago, 2026, 11, 25, 23, 59, 59)
    assert [due_of(tower, f"SO-{n}") for n in (2, 3, 4, 5)] == [monday] * 4
    assert due_of(tower, "SO-6") == local("America/New_York", 2026, 11, 30, 23, 59, 59)
    # the day after Thanksgiving at noon: only the Wednesday-morning order is late
    assert tower.statuses("ship-cutoff") == {"SO-1": "breached", **{f"SO-{n}": "pending" for n in range(2, 7)}}


def test_holiday_deadlines_match_an_independent_computation(store: Store) -> None:
    """Releases every 53 minutes from mid-November 2026 to mid-January 2027, in every warehouse."""
    spans = [(datetime(2026, 11, 15, tzinfo=UTC), datetime(2027, 1, 15, tzinfo=UTC))]
    releases = releases_every(timedelta(minutes=53), spans, ["DAL", "ATL", "RNO", ""])
    tower = Harness(store, rules=[with_holidays(HOLIDAYS)])
    found = due_dates(tower, releases, datetime(2027, 2, 1, tzinfo=UTC))
    assert len(found) == len(releases) > 1500
    for k, (at, warehouse) in releases.items():
        zone = ZONES.get(warehouse, "America/Chicago")
        assert found[f"SO-{k}"] == expected_due(at, zone, holidays=frozenset(HOLIDAYS)), (k, at, warehouse)


def test_holiday_overrides_list_only_the_days_holidays_move() -> None:
    weekdays = ["mon", "tue", "wed", "thu", "fri"]
    before, after = holiday_overrides(weekdays, [date(2026, 11, 26), date(2026, 11, 27), date(2026, 11, 29)])
    monday = date(2026, 11, 30)
    # started before the cutoff on a holiday weekday: due the next open day (a Sunday holiday changes nothing)
    assert before == ([date(2026, 11, 26), date(2026, 11, 27)], [monday, monday])
    # started after the cutoff: Wednesday's and Thursday's next weekday is a holiday; Friday's is Monday anyway
    assert after == ([date(2026, 11, 25), date(2026, 11, 26)], [monday, monday])
    assert holiday_overrides(weekdays, []) == (([], []), ([], []))
