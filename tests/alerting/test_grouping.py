"""Grouping: a burst of one owner and rule within the group window becomes one digest message."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from alerting.state import PolicyStore
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore, NewException
from kernel.store import Store
from tests.alerting.policy_support import DASHBOARD, T0, TITLES, block_text, dispatcher, messages, open_many, state_of


def test_a_burst_above_the_threshold_becomes_one_digest(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    opened = open_many(exceptions, 12)
    alerts = dispatcher(store, clock, group_threshold=5, digest_keys=10)

    report = alerts.run()

    assert (report.posted, report.digests, report.digested) == (0, 1, 12)
    (digest,) = messages(alerts.outbox)
    assert digest.key.startswith("digest:") and digest.key.endswith(":post")
    assert (digest.channel, digest.action) == ("#cs-orders", "post")
    text = block_text(digest)
    assert f"12 × {TITLES['order-release']}" in text
    assert "*12* exceptions of *order-release* for *customer_service*" in text
    keys = ", ".join(f"SO-{n}" for n in range(1, 11))
    assert f"First keys: {keys} and 2 more" in text
    link = next(part for part in text.split("<")[1:] if part.startswith(DASHBOARD)).split("|")[0]
    assert urlsplit(link).path == "/queue"
    assert parse_qs(urlsplit(link).query) == {
        "owner": ["customer_service"],
        "rule": ["order-release"],
        "status": ["open"],
    }
    states = PolicyStore(store).states(r.id for r in opened)
    assert {s.decision for s in states.values()} == {"digest"}
    assert len({s.digest_id for s in states.values()}) == 1


def test_up_to_the_threshold_each_exception_gets_its_own_message(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    open_many(exceptions, 5)
    alerts = dispatcher(store, clock, group_threshold=5)
    report = alerts.run()
    assert (report.posted, report.digests) == (5, 0)
    assert [m.key.endswith(":post") and m.key.startswith("exc:") for m in messages(alerts.outbox)] == [True] * 5


def test_a_burst_counted_on_the_clock_across_runs(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    alerts = dispatcher(store, clock, group_threshold=5, group_window_seconds=60)

    def open_keys(*keys: str) -> None:
        exceptions.open_many(
            [NewException("order-release", k, "business", "customer_service", "high", T0) for k in keys]
        )

    open_keys("A1", "A2", "A3", "A4")
    assert alerts.run().posted == 4
    clock.advance(timedelta(seconds=20))
    open_keys("B1", "B2", "B3")  # 4 alerted in the last minute + 3 > 5: a digest of the three
    report = alerts.run()
    assert (report.posted, report.digests, report.digested) == (0, 1, 3)
    clock.advance(timedelta(seconds=20))
    open_keys("C1", "C2")  # the digest started 20 s ago: they join it, and it is updated
    report = alerts.run()
    assert (report.digests, report.digested, report.updates) == (0, 2, 1)
    update = messages(alerts.outbox)[-1]
    assert update.action == "update" and update.key.endswith(":update:1")
    assert update.parent is not None and update.parent.startswith("digest:")
    assert "*5* exceptions" in block_text(update) and "B1, B2, B3, C1, C2" in block_text(update)
    clock.advance(timedelta(seconds=61))
    open_keys("D1")  # a window after: a message of its own again
    assert alerts.run().posted == 1
    assert messages(alerts.outbox)[-1].key.startswith("exc:")


def test_owners_and_rules_are_grouped_apart(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    open_many(exceptions, 6, rule="order-release", owner="customer_service")
    exceptions.open_many(
        [NewException("ship-cutoff", f"SO-{n}", "business", "warehouse", "high", T0) for n in range(1, 7)]
        + [NewException("invoice-posting", f"SO-{n}", "business", "finance", "medium", T0) for n in range(1, 3)]
    )
    alerts = dispatcher(store, clock, group_threshold=5)
    report = alerts.run()
    assert (report.digests, report.digested, report.posted) == (2, 12, 2)
    assert sorted((m.channel, m.key.split(":")[0]) for m in messages(alerts.outbox)) == [
        ("#cs-orders", "digest"),
        ("#finance-ops", "exc"),
        ("#finance-ops", "exc"),
        ("#ops-warehouse", "digest"),
    ]


def test_a_digests_exceptions_get_no_thread_of_their_own(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    opened = open_many(exceptions, 6)
    alerts = dispatcher(store, clock, group_threshold=5)
    alerts.run()
    exceptions.acknowledge(opened[0].id, actor="ann")
    exceptions.resolve(opened[1].id, actor="ann")
    report = alerts.run()
    assert (report.changes, report.enqueued) == (2, 0)
    assert state_of(store, opened[1].id).active is False
    assert state_of(store, opened[0].id).decision == "digest"
