"""The overview's reading of the SLA cases (tower/case_days.py): kept under the version of `sla_cases`' content,
equal to a direct FINAL read through writes, merges, deletes and truncation; shared through `sla_case_days`;
refreshed by the evaluation so that the overview after it reads no case."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import tests.support
from kernel.clock import FixedClock
from kernel.store import Store
from tests.factories import case_row, event_row, make_event, settings_with_every_role
from tests.support import RunningTower, start_in_process
from tower.case_days import READ, CaseDays, case_days, cases_version

NOW = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)
FIRST = date(2026, 10, 6)  # the first of the 30 days ending on NOW's day
H = timedelta(hours=1)
STATUSES = ("met", "late", "breached", "pending", "at_risk")


def direct(store: Store, tz: str = "UTC", first_day: date = FIRST) -> list[dict[str, Any]]:
    """The reading as one FINAL read of the cases makes it now, in a stable order."""
    return ordered(store.query(READ, {"tz": tz, "first_day": first_day}))


def ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["rule"], r["day"], r["status"]))


def some_cases(rng: random.Random, count: int, version: int) -> list[dict[str, Any]]:
    """Cases of two rules over 40 days (some before the window), keys drawn from a small set so that versions
    replace each other; equal versions happen too."""
    rows = []
    for _ in range(count):
        started = NOW - timedelta(minutes=rng.randrange(40 * 24 * 60))
        status = rng.choice(STATUSES)
        rows.append(
            case_row(
                rng.choice(("order-release", "asn-sent")),
                f"K-{rng.randrange(60)}",
                started,
                started + 2 * H,
                status,
                ended_at=started + H if status in ("met", "late") else None,
                customer_id=f"C-{rng.randrange(5)}",
                warehouse=rng.choice(("DAL", "ATL", "")),
                version=version + rng.randrange(2),
            )
        )
    return rows


def test_the_kept_reading_equals_a_direct_read_through_writes_merges_and_deletes(store: Store) -> None:
    rng = random.Random(6)
    readings = CaseDays()
    version = 1
    for step in range(14):
        action = step % 7
        if action == 5:
            store.command("OPTIMIZE TABLE sla_cases FINAL")
        elif action == 6:
            store.command("DELETE FROM sla_cases WHERE key = {key:String}", {"key": f"K-{rng.randrange(60)}"})
        else:
            store.insert("sla_cases", some_cases(rng, rng.randrange(1, 40), version))
            version += 1
        for tz in ("UTC", "America/Chicago"):
            assert ordered(readings.read(store, tz, FIRST)) == direct(store, tz), (step, tz)
    # a reading made for an earlier first day serves a later one with exactly that day's rows
    later = FIRST + timedelta(days=3)
    computed = readings.computed
    assert ordered(readings.read(store, "UTC", later)) == direct(store, "UTC", later)
    assert readings.computed == computed


def test_a_merge_keeps_the_reading_and_a_write_does_not(store: Store) -> None:
    rng = random.Random(7)
    for first_version in (1, 2, 3):  # three parts
        store.insert("sla_cases", some_cases(rng, 30, first_version))
    readings = CaseDays()
    before = readings.read(store, "UTC", FIRST)
    version = cases_version(store)
    assert readings.computed == 1 and version is not None
    store.command("OPTIMIZE TABLE sla_cases FINAL")  # one part now, rows replaced by newer versions dropped
    merged = cases_version(store)
    assert merged is not None and merged.key == version.key
    assert ordered(readings.read(store, "UTC", FIRST)) == ordered(before) == direct(store)
    assert readings.computed == 1  # the merge did not make it read the cases again
    store.insert("sla_cases", [case_row("asn-sent", "K-1", NOW - H, NOW + H, "at_risk", version=99)])
    assert ordered(readings.read(store, "UTC", FIRST)) == direct(store)
    assert readings.computed == 2


def test_the_version_changes_with_inserts_deletes_and_truncation(store: Store) -> None:
    assert cases_version(store) is None  # no part: nothing can be kept
    store.insert("sla_cases", [case_row("asn-sent", "A", NOW - H, NOW, "met", version=1)])
    first = cases_version(store)
    store.insert("sla_cases", [case_row("asn-sent", "B", NOW - H, NOW, "met", version=1)])
    second = cases_version(store)
    store.command("DELETE FROM sla_cases WHERE key = 'B'")
    third = cases_version(store)
    store.command("TRUNCATE TABLE sla_cases")
    store.insert("sla_cases", [case_row("asn-sent", "A", NOW - H, NOW, "met", version=1)])
    fourth = cases_version(store)
    keys = [v.key for v in (first, second, third, fourth) if v is not None]
    assert len(set(keys)) == 4


def test_with_a_ttl_every_merge_reads_the_cases_again(store: Store) -> None:
    store.command("ALTER TABLE sla_cases MODIFY TTL toDateTime(started_at) + INTERVAL 3650 DAY")
    try:
        for key in ("A", "B"):
            store.insert("sla_cases", [case_row("asn-sent", key, NOW - H, NOW, "met")])
        before = cases_version(store)
        store.command("OPTIMIZE TABLE sla_cases FINAL")  # a merge may drop expired rows: not the same content
        after = cases_version(store)
        assert before is not None and after is not None and before.key != after.key
    finally:
        store.command("ALTER TABLE sla_cases REMOVE TTL")


def test_a_published_reading_serves_another_process_only_when_the_table_was_not_emptied(store: Store) -> None:
    store.insert("sla_cases", some_cases(random.Random(8), 50, 1))
    later = FixedClock(datetime.now(UTC) + 5 * H)  # a reading made after the parts were written
    here = CaseDays(clock=later)
    rows = here.read(store, "UTC", FIRST)
    other = CaseDays()  # another process (or this one restarted): nothing in memory
    assert ordered(other.read(store, "UTC", FIRST)) == ordered(rows) == direct(store)
    assert other.computed == 0
    # a reading stamped before every part of the table: the table may have been emptied and refilled since
    # (block numbers start again after a restart), so it is not taken
    store.command("TRUNCATE TABLE sla_case_days")
    CaseDays(clock=FixedClock(datetime.now(UTC) - H)).read(store, "UTC", FIRST)
    third = CaseDays()
    assert ordered(third.read(store, "UTC", FIRST)) == direct(store)
    assert third.computed == 1


@pytest.fixture
def tower_at_now(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningTower]:
    monkeypatch.setattr(tests.support, "make_settings", settings_with_every_role)
    with start_in_process(tmp_path, store, clock=FixedClock(NOW)) as running:
        yield running


def test_the_evaluation_refreshes_the_reading_so_the_overview_reads_no_case(
    tower_at_now: RunningTower, store: Store
) -> None:
    def accepted(order: str, minutes_ago: int) -> dict[str, Any]:
        at = (NOW - timedelta(minutes=minutes_ago)).isoformat()
        return event_row(make_event("order.accepted", time=at, data={"order_id": order}))

    case_days.forget(store)  # zones asked for by earlier tests on this store
    with tower_at_now.api("admin") as http:
        store.insert("business_events", [accepted("SO-1", 300), accepted("SO-2", 20)])
        assert http.post("/api/sla/evaluate").status_code == 200
        http.get("/api/overview", params={"tz": "America/Chicago"})  # a zone asked for is refreshed too
        store.insert("business_events", [accepted("SO-3", 10)])
        computed = case_days.computed
        assert http.post("/api/sla/evaluate").json()["cases_changed"] > 0
        assert case_days.computed == computed + 2  # UTC and Chicago, read once each by the evaluation
        overview = http.get("/api/overview").json()
        chicago = http.get("/api/overview", params={"tz": "America/Chicago"}).json()
    assert case_days.computed == computed + 2  # the overviews read no case
    # SO-1 started 5 hours ago (breached after 2 hours), SO-2 and SO-3 are pending
    for answer in (overview, chicago):
        release = {r["rule"]: r for r in answer["compliance"]}["order-release"]
        assert release["today"] == {"cases": 3, "met": 0, "late": 0, "breached": 1, "compliance": 0.0}
    for tz in ("UTC", "America/Chicago"):
        kept = case_days.kept(store, tz)
        assert kept is not None and ordered(kept.rows) == direct(store, tz)


def test_the_refresh_reads_utc_and_the_zones_asked_for_last(store: Store) -> None:
    readings = CaseDays()
    assert readings.refresh(store, NOW) == []  # no case stored: nothing to keep
    store.insert("sla_cases", [case_row("asn-sent", "A", NOW - H, NOW + H, "at_risk")])
    zones = ["Asia/Tokyo", "Europe/Paris", "America/Chicago", "Asia/Kolkata", "Australia/Eucla", "Europe/Paris"]
    for tz in zones:
        readings.read(store, tz, FIRST)
    assert readings.refresh(store, NOW) == sorted(
        ["UTC", "America/Chicago", "Asia/Kolkata", "Australia/Eucla", "Europe/Paris"]
    )
    assert readings.kept(store, "Asia/Tokyo") is None  # asked for least recently: no longer kept
    computed = readings.computed
    store.insert("sla_cases", [case_row("asn-sent", "A", NOW - H, NOW + H, "breached", version=2)])
    readings.refresh(store, NOW)
    assert readings.computed == computed + 5
    for tz in ("UTC", "Asia/Kolkata", "Australia/Eucla"):  # half- and three-quarter-hour offsets too
        kept = readings.kept(store, tz)
        assert kept is not None and ordered(kept.rows) == direct(store, tz, kept.first_day)
