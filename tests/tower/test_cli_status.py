"""`tower status` against a real tower on a fixed clock: exceptions by owner, compliance, sources, warnings, changes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from kernel.clock import FixedClock
from kernel.store import Store
from tests.factories import case_row, event_row, make_event
from tests.support import RunningTower, start_in_process
from tests.tower.test_api_exceptions import open_one
from tests.tower.test_api_overview import NOW
from tower.cli import main

H = timedelta(hours=1)


@pytest.fixture
def tower_at_now(store: Store, tmp_path: Path) -> Iterator[RunningTower]:
    with start_in_process(tmp_path, store, clock=FixedClock(NOW)) as running:
        yield running


def run(tower: RunningTower, *args: str) -> Result:
    env = {"TOWER_TOKEN": tower.api_token("viewer"), "TOWER_URL": tower.http_url}
    return CliRunner().invoke(main, ["status", *args], env=env, catch_exceptions=False)


def seed(store: Store) -> None:
    """Exceptions of two owners, a day of cases of one rule, and a source heard 5 minutes ago."""
    open_one(store, NOW - 2 * H, "order-release", "SO-1", severity="medium")
    open_one(store, NOW - 2 * H, "ship-cutoff", "SO-2", owner="warehouse", severity="high")
    open_one(store, NOW - 2 * H, "ship-cutoff", "SO-3", owner="warehouse", severity="critical")
    open_one(store, NOW - 2 * H, "retired-rule", "SO-4", owner="warehouse")  # a rule the tower does not run
    day = datetime(NOW.year, NOW.month, NOW.day, tzinfo=NOW.tzinfo)
    store.insert(
        "sla_cases",
        [
            case_row("order-release", "A", day + H, day + 3 * H, "met", ended_at=day + 2 * H),
            case_row("order-release", "B", day + 2 * H, day + 4 * H, "late", ended_at=day + 5 * H),
            case_row("order-release", "C", NOW - H, NOW + 20 * timedelta(minutes=1), "at_risk"),
        ],
    )
    heard = make_event("order.accepted", 1, time=(NOW - 5 * timedelta(minutes=1)).isoformat())
    store.insert("business_events", [event_row(heard, NOW - 4 * timedelta(minutes=1))])


def test_status_shows_what_the_overview_shows(tower_at_now: RunningTower, store: Store) -> None:
    seed(store)
    shown = run(tower_at_now)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == f"tower {tower_at_now.http_url}, 2026-11-04 15:30:00 UTC (the tower's clock)"
    assert lines[1] == "exceptions: 4 active (4 open, 0 acknowledged); 1 case at risk"
    assert lines[2:4] == [
        "  warehouse              3  (critical 1, high 2)",
        "  customer_service       1  (medium 1)",
    ]
    at = lines.index("SLA compliance:")
    assert lines[at + 1].split() == ["rule", "today", "7", "days", "30", "days", "at", "risk"]
    release = next(line for line in lines[at:] if line.startswith("  order-release "))
    assert release.split() == ["order-release", "50.0%", "50.0%", "50.0%", "1"]  # met 1 of 2 ended
    sources = lines.index("sources, last 15 min:")
    # heard 5 minutes ago by business time, received a minute after it happened; one event in 15 minutes
    assert lines[sources + 2].split() == ["erp", "5", "min", "ago", "0.1", "0.0", "-", "60", "s", "0", "0"]
    assert "  retired-rule: 1 active exceptions of a rule the tower no longer evaluates" in shown.stdout
    assert lines[-1] == "changes since 2026-11-03 15:30:00 UTC: opened 4"


def test_json_and_a_quiet_tower(tower_at_now: RunningTower) -> None:
    quiet = run(tower_at_now, "--minutes", "30")
    assert quiet.exit_code == 0, quiet.output
    lines = quiet.stdout.splitlines()
    assert lines[1] == "exceptions: 0 active (0 open, 0 acknowledged); 0 cases at risk"
    assert "  ship-cutoff               -        -        -        0" in lines  # no case: no compliance
    assert lines[-1] == "sources: none heard in 30 min"
    payload = orjson.loads(run(tower_at_now, "--json", "--tz", "America/Chicago").stdout)
    assert set(payload) == {"overview", "sources"} and payload["overview"]["today"] == "2026-11-04"
    bad = run(tower_at_now, "--tz", "Mars/Olympus")
    assert bad.exit_code == 2 and "unknown time zone" in bad.output
