"""The scheduler lease on the real store, on fixed clocks: one holder at a time, renewal, takeover after
expiry, a holder that lost the lease stops, interleaved claims, release, and a claim lost to a stale
deduplication log. The claim race also runs on a ClickHouse server when TOWER_TEST_CLICKHOUSE_URL is set."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from kernel.clock import FixedClock
from kernel.lease import Lease, LeaseSettings, write_sql
from kernel.schema.migrations import migrate
from kernel.store import Store
from kernel.store.embedded import EmbeddedStore

T0 = datetime(2026, 11, 4, 15, 0, tzinfo=UTC)
SETTINGS = LeaseSettings(ttl_seconds=30, renew_interval_seconds=10, max_clock_skew_seconds=2)


SERVER_URL = os.environ.get("TOWER_TEST_CLICKHOUSE_URL", "")


@pytest.fixture(scope="module")
def server_store() -> Iterator[Store]:
    """A migrated fresh database on the configured ClickHouse server; skips without one."""
    if not SERVER_URL:
        pytest.skip("TOWER_TEST_CLICKHOUSE_URL is not set: the lease's server run needs a ClickHouse server")
    from kernel.store.server import ServerStore

    database = f"tower_test_{secrets.token_hex(4)}"
    server = ServerStore(SERVER_URL, database)
    migrate(server)
    yield server
    server.command(f"DROP DATABASE IF EXISTS {database}")  # generated above, not input
    server.close()


@pytest.fixture(params=["embedded", pytest.param("server", marks=pytest.mark.server)])
def any_store(request: pytest.FixtureRequest) -> Store:
    """Each backend in turn, with no lease rows."""
    chosen: Store = request.getfixturevalue("store" if request.param == "embedded" else "server_store")
    chosen.command("TRUNCATE TABLE tower_leases")
    return chosen


def pair(store: Store, clock: FixedClock, other: FixedClock | None = None) -> tuple[Lease, Lease]:
    return (
        Lease(store, clock, SETTINGS, holder="tower-a"),
        Lease(store, other or clock, SETTINGS, holder="tower-b"),
    )


def test_only_one_of_two_holds(store: EmbeddedStore) -> None:
    clock = FixedClock(T0)
    a, b = pair(store, clock)
    assert a.tick() is True
    assert b.tick() is False
    assert a.holds() and not b.holds()
    state = b.current()
    assert state is not None and state.holder == "tower-a" and state.term == 1
    assert state.expires_at == T0 + timedelta(seconds=30)
    assert b.status() == {
        "name": "scheduler",
        "holder": "tower-b",
        "held": False,
        "term": 1,
        "current_holder": "tower-a",
        "expires_at": (T0 + timedelta(seconds=30)).isoformat(),
    }


def test_renewals_keep_the_lease_past_its_ttl(store: EmbeddedStore) -> None:
    clock = FixedClock(T0)
    a, b = pair(store, clock)
    assert a.tick()
    for _ in range(12):  # two minutes of renewals every 10 s: four TTLs
        clock.advance(timedelta(seconds=10))
        assert a.tick() and a.holds()
        assert b.tick() is False
    state = a.current()
    assert state is not None and state.term == 1 and state.holder == "tower-a"
    assert state.renewed_at == clock.now() and state.acquired_at == T0


def test_a_standby_takes_over_after_expiry_and_the_old_holder_stops(store: EmbeddedStore) -> None:
    clock = FixedClock(T0)
    a, b = pair(store, clock)
    assert a.tick()
    # a stops renewing (hung, or its host lost the network); b keeps checking
    clock.advance(timedelta(seconds=29))
    assert b.tick() is False
    assert not a.holds(), "a trusts its lease only until ttl - max clock skew after its last renewal"
    clock.advance(timedelta(seconds=2))
    assert b.tick() is True and b.holds()
    assert b.term == 2
    assert a.tick() is False and not a.holds(), "a does not renew a term that expired: it is now a standby"
    state = a.current()
    assert state is not None and (state.term, state.holder) == (2, "tower-b")


def test_the_holder_stops_trusting_the_lease_before_anyone_may_take_it(store: EmbeddedStore) -> None:
    clock = FixedClock(T0)
    a, b = pair(store, clock)
    assert a.tick()
    clock.set(T0 + timedelta(seconds=28) - timedelta(microseconds=1))
    assert a.holds()
    clock.set(T0 + timedelta(seconds=28))  # ttl - max skew: a stops here ...
    assert not a.holds()
    clock.set(T0 + timedelta(seconds=30) - timedelta(microseconds=1))  # ... while b may claim only once it expired
    assert b.tick() is False
    clock.set(T0 + timedelta(seconds=30))
    assert b.tick() is True


def test_a_holder_that_lost_its_lease_stops_at_its_next_check(store: EmbeddedStore) -> None:
    # b's clock runs 40 s ahead, far beyond the assumed skew: b takes the lease while a still trusts it.
    clock_a = FixedClock(T0)
    clock_b = FixedClock(T0 + timedelta(seconds=40))
    a, b = pair(store, clock_a, clock_b)
    assert a.tick()
    assert b.tick() is True
    assert a.holds() is False, "a re-reads the store before each job and sees the newer term"
    assert a.tick() is False, "a never renews its old term over a newer one"
    assert b.holds()


def test_two_claims_of_the_same_term_one_wins(any_store: Store) -> None:
    store = any_store
    clock = FixedClock(T0)
    a, b = pair(store, clock)
    # both read "never claimed", then both claim term 1
    seen_a, seen_b = a.observe(), b.observe()
    assert seen_a is None and seen_b is None
    assert b.claim(seen_b) is True
    assert a.claim(seen_a) is False
    assert b.holds() and not a.holds()
    assert int(store.query("SELECT count() AS n FROM tower_leases WHERE term = 1")[0]["n"]) == 1
    # the same race on a takeover: b's term expired, a and a third contender both saw it
    c = Lease(store, clock, SETTINGS, holder="tower-c")
    clock.advance(timedelta(seconds=31))
    expired_a, expired_c = a.observe(), c.observe()
    assert a.claim(expired_a) is True
    assert c.claim(expired_c) is False
    assert a.holds() and not b.holds() and not c.holds()
    state = c.current()
    assert state is not None and (state.term, state.holder) == (2, "tower-a")


def test_release_hands_over_at_once(store: EmbeddedStore) -> None:
    clock = FixedClock(T0)
    a, b = pair(store, clock)
    assert a.tick()
    clock.advance(timedelta(seconds=1))
    a.release()
    assert not a.holds()
    assert b.tick() is True
    a.release()  # not holding: nothing written
    assert b.holds()


def test_a_claim_dropped_by_a_stale_deduplication_log_does_not_block_the_lease(store: EmbeddedStore) -> None:
    clock = FixedClock(T0)
    a, b = pair(store, clock)
    assert a.tick()
    # rows deleted by a mutation: the deduplication log still remembers the claim of term 1
    store.command("ALTER TABLE tower_leases DELETE WHERE 1 SETTINGS mutations_sync = 2")
    assert b.tick() is False, "b's claim of term 1 is dropped as a duplicate"
    state = b.current()
    assert state is not None and state.term == 1 and state.holder == "" and state.version == 0
    clock.advance(timedelta(seconds=31))
    assert b.tick() is True and b.term == 2


def test_names_and_tokens_are_checked_before_they_reach_sql(store: EmbeddedStore) -> None:
    with pytest.raises(ValueError, match="lease name"):
        Lease(store, FixedClock(T0), SETTINGS, name="x'; DROP TABLE tower_leases")
    with pytest.raises(ValueError, match="deduplication token"):
        write_sql("a' b")


def test_settings_refuse_a_ttl_too_short_for_renewals() -> None:
    with pytest.raises(ValidationError, match="at least twice"):
        LeaseSettings(ttl_seconds=15, renew_interval_seconds=10)
    assert LeaseSettings().ttl_seconds == 30
