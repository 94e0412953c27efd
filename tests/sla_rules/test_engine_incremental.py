"""Incremental evaluation: a run recomputes only the keys with new events and the cases whose
status changes with time alone, records itself in sla_runs, and ends in the state a full run
would have reached."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kernel.exceptions import ExceptionRecord, NewException
from kernel.store import Store
from tests.factories import make_event
from tests.sla_rules.test_engine import RULES, T0, Harness, event, utc

ORDER_RULES = [RULES["order-release"], RULES["ship-cutoff"], RULES["asn-sent"]]


def snapshot(store: Store) -> list[dict[str, Any]]:
    """Every case's state (without its version)."""
    return store.query(
        "SELECT rule, key, started_at, ended_at, due_at, status, customer_id, warehouse, source"
        " FROM sla_cases FINAL ORDER BY rule, key"
    )


def test_first_run_is_full_and_recorded(store: Store) -> None:
    tower = Harness(store, rules=ORDER_RULES)
    tower.send(event("order.accepted", 1, T0), received_at=T0 + timedelta(seconds=5))
    tower.at(T0 + timedelta(minutes=1))
    report = tower.evaluate()
    assert {r.mode for r in report.rules.values()} == {"full"}
    (run,) = tower.runs("order-release")
    assert run["mode"] == "full" and run["keys_evaluated"] == 1 and run["cases_changed"] == 1
    assert utc(run["started_at"]) == T0 + timedelta(minutes=1)
    # the newest received_at seen, less the 2-minute overlap
    assert utc(run["watermark"]) == T0 + timedelta(seconds=5) - timedelta(minutes=2)
    assert tower.runs("asn-sent")[0]["keys_evaluated"] == 0
    tower.at(T0 + timedelta(minutes=2))
    assert {r.mode for r in tower.evaluate().rules.values()} == {"incremental"}
    assert {r.mode for r in tower.evaluate(full=True).rules.values()} == {"full"}
    assert [r["mode"] for r in tower.runs("order-release")] == ["full", "incremental", "full"]


def test_incremental_touches_only_changed_keys(store: Store) -> None:
    tower = Harness(store, rules=ORDER_RULES)
    tower.send(*(event("order.accepted", n, T0) for n in range(1, 21)))
    tower.heartbeat(T0 + timedelta(minutes=5))
    tower.at(T0 + timedelta(minutes=10))
    first = tower.evaluate()
    assert first.rules["order-release"].keys_evaluated == 20

    tower.at(T0 + timedelta(minutes=11))
    released = T0 + timedelta(minutes=11)
    tower.send(event("order.released", 3, released), event("order.released", 4, released))
    tower.at(T0 + timedelta(minutes=12))
    report = tower.evaluate()
    release, cutoff, asn = (report.rules[r] for r in ("order-release", "ship-cutoff", "asn-sent"))
    assert (release.mode, release.keys_evaluated, release.cases_changed) == ("incremental", 2, 2)
    assert (cutoff.mode, cutoff.keys_evaluated, cutoff.cases_changed) == ("incremental", 2, 2)  # two new cases
    assert (asn.mode, asn.keys_evaluated, asn.cases_changed) == ("incremental", 0, 0)
    last = tower.runs("order-release")[-1]
    assert (last["mode"], last["keys_evaluated"], last["cases_changed"]) == ("incremental", 2, 2)
    assert tower.status("order-release", "SO-3") == "met" and tower.status("order-release", "SO-5") == "pending"

    # the releases are the newest traffic: within the overlap, the next runs read them again (no change)
    tower.at(T0 + timedelta(minutes=13))
    again = tower.evaluate()
    assert again.rules["order-release"].keys_evaluated == 2 and again.cases_changed == 0
    # newer traffic moves the watermark past them
    tower.heartbeat(T0 + timedelta(minutes=20))
    tower.at(T0 + timedelta(minutes=21))
    tower.evaluate()
    tower.at(T0 + timedelta(minutes=22))
    quiet = tower.evaluate()
    assert quiet.rules["order-release"].keys_evaluated == 0 and quiet.cases_changed == 0


def test_time_alone_moves_pending_cases(store: Store) -> None:
    tower = Harness(store, rules=[RULES["order-release"]])
    tower.send(event("order.accepted", 1, T0), event("order.accepted", 2, T0 + timedelta(hours=1)))
    tower.heartbeat(T0 + timedelta(minutes=4))  # so the acceptances are behind the watermark
    tower.at(T0 + timedelta(minutes=5))
    tower.evaluate()
    steps = [
        (T0 + timedelta(hours=1, minutes=40), {"SO-1": "at_risk", "SO-2": "pending"}, 1),  # SO-1 in its warning
        (T0 + timedelta(hours=1, minutes=50), {"SO-1": "at_risk", "SO-2": "pending"}, 0),
        (T0 + timedelta(hours=2, minutes=40), {"SO-1": "breached", "SO-2": "at_risk"}, 2),
        (T0 + timedelta(hours=3, minutes=1), {"SO-1": "breached", "SO-2": "breached"}, 1),
        (T0 + timedelta(hours=4), {"SO-1": "breached", "SO-2": "breached"}, 0),
    ]
    opened = 0
    for now, statuses, keys in steps:
        tower.at(now)
        report = tower.evaluate()
        part = report.rules["order-release"]
        assert (part.mode, part.keys_evaluated, part.cases_changed) == ("incremental", keys, keys), now
        assert tower.statuses("order-release") == statuses, now
        opened += len(part.opened)
    assert opened == 2 and len(tower.all_exceptions()) == 2


def test_a_case_evaluated_exactly_at_its_deadline_breaches_at_the_next_run(store: Store) -> None:
    # At its deadline a case is still open (breached only once the deadline has passed); the next incremental run
    # must see that its deadline passed since, not wait for a full sweep.
    tower = Harness(store, rules=[RULES["order-release"]])
    tower.send(event("order.accepted", 1, T0))
    tower.heartbeat(T0 + timedelta(minutes=4))
    tower.at(T0 + timedelta(minutes=5))
    tower.evaluate()
    tower.at(T0 + timedelta(hours=2))
    assert tower.evaluate().rules["order-release"].mode == "incremental"
    assert tower.status("order-release", "SO-1") == "at_risk" and not tower.open_exceptions()
    tower.at(T0 + timedelta(hours=2, minutes=1))
    report = tower.evaluate()
    assert report.rules["order-release"].mode == "incremental"
    assert tower.status("order-release", "SO-1") == "breached"
    assert [e.key for e in tower.open_exceptions("order-release")] == ["SO-1"]


def test_a_cases_fields_do_not_depend_on_which_rules_ran_with_it(store: Store) -> None:
    # An acceptance without a warehouse takes the order's first warehouse among the systems the order rules read
    # (erp, and wms for ship-cutoff's end): the same whether order-release runs with ship-cutoff or, changed, in full
    # on its own, and in a backtest.
    rules = [RULES["order-release"], RULES["ship-cutoff"]]
    tower = Harness(store, rules=rules)
    accepted = make_event(
        "order.accepted", 1, time=T0.isoformat(), data={"order_id": "SO-1", "customer_id": "C-1"}, merge_data=False
    )
    tower.send(accepted, event("shipment.confirmed", 1, T0 + timedelta(minutes=30), warehouse="RNO"))
    tower.heartbeat(T0 + timedelta(minutes=40))
    tower.at(T0 + timedelta(hours=1))
    tower.evaluate()
    found = tower.case("order-release", "SO-1")
    assert found is not None and found["warehouse"] == "RNO"

    changed = RULES["order-release"].model_copy(update={"warning": timedelta(minutes=20)})
    again = Harness(store, at=T0 + timedelta(hours=3), rules=[changed, RULES["ship-cutoff"]])
    report = again.evaluate()
    assert (report.rules["order-release"].mode, report.rules["ship-cutoff"].mode) == ("full", "incremental")
    found = again.case("order-release", "SO-1")
    assert found is not None and (found["warehouse"], found["status"]) == ("RNO", "breached")
    assert [e.owner for e in again.open_exceptions("order-release")] == ["customer_service-reno"]
    (tested,), _ = again.engine.backtest(changed, T0, T0 + timedelta(hours=3))
    assert tested["warehouse"] == "RNO"


def test_incremental_runs_end_where_a_full_run_would(store: Store) -> None:
    tower = Harness(store)
    batches: list[tuple[datetime, list[dict[str, Any]]]] = [
        (T0 + timedelta(hours=1), [event("order.accepted", n, T0 + timedelta(minutes=7 * n)) for n in range(1, 13)]),
        (
            T0 + timedelta(hours=3),
            [event("order.released", n, T0 + timedelta(minutes=7 * n + 40 * (n % 4))) for n in range(1, 11)]
            + [event("asn.sent", 11, T0 + timedelta(hours=2))],  # before its shipment exists
        ),
        (
            T0 + timedelta(hours=9),
            [event("shipment.confirmed", n, T0 + timedelta(hours=3, minutes=13 * n)) for n in range(1, 12)]
            + [event("order.accepted", 13, T0 + timedelta(hours=8), warehouse="RNO")],
        ),
        (
            T0 + timedelta(days=1, hours=2),
            [event("asn.sent", n, T0 + timedelta(hours=3, minutes=13 * n + 50)) for n in range(1, 7)]
            + [event("invoice.posted", n, T0 + timedelta(hours=20 + n)) for n in range(1, 9)]
            + [event("order.released", 12, T0 + timedelta(hours=20))],
        ),
        (T0 + timedelta(days=2), []),
    ]
    for now, events in batches:
        tower.at(now - timedelta(minutes=30))
        if events:
            tower.send(*events)
            tower.send(events[0])  # and one redelivery
        tower.at(now)
        report = tower.evaluate()
        if now > T0 + timedelta(hours=1):
            assert {r.mode for r in report.rules.values()} == {"incremental"}
    incremental = snapshot(store)
    exceptions = sorted((e.rule, e.key, e.status, e.resolution) for e in tower.all_exceptions())
    statuses = {row["status"] for row in incremental}
    assert statuses >= {"met", "late", "breached"}
    assert any(e[2] == "resolved" and e[3] == "late" for e in exceptions)

    full = tower.evaluate(full=True)
    assert full.cases_changed == 0 and full.opened == [] and full.resolved == []
    assert snapshot(store) == incremental
    # the backtest's independent SELECT agrees too
    for rule in RULES.values():
        rows, _ = tower.engine.backtest(rule, T0 - timedelta(days=1), tower.clock.now())
        assert {r["key"]: r["status"] for r in rows} == tower.statuses(rule.id), rule.id


def test_rows_visible_late_within_the_overlap_are_picked_up(store: Store) -> None:
    tower = Harness(store, rules=[RULES["order-release"]])
    tower.send(event("order.accepted", 1, T0), event("order.accepted", 2, T0), received_at=T0 + timedelta(minutes=5))
    tower.heartbeat(T0 + timedelta(minutes=11))
    tower.at(T0 + timedelta(minutes=11))
    tower.evaluate()
    # stored after that run (its watermark: T0+9m), stamped as received before the run
    tower.send(event("order.released", 1, T0 + timedelta(minutes=9)), received_at=T0 + timedelta(minutes=9, seconds=30))
    tower.send(event("order.released", 2, T0 + timedelta(minutes=1)), received_at=T0 + timedelta(minutes=1))
    tower.at(T0 + timedelta(minutes=12))
    report = tower.evaluate()
    assert report.rules["order-release"].keys_evaluated == 1
    assert tower.status("order-release", "SO-1") == "met"  # inside the 2-minute overlap
    assert tower.status("order-release", "SO-2") == "pending"  # older than the overlap: left for a full run
    tower.evaluate(full=True)
    assert tower.status("order-release", "SO-2") == "met"


def test_the_sweep_runs_in_full_now_and_then(store: Store) -> None:
    tower = Harness(store, rules=[RULES["order-release"]], sweep_every=timedelta(hours=1))
    tower.send(event("order.accepted", 1, T0))
    modes = []
    for minutes in (0, 20, 40, 61, 80, 125):
        tower.at(T0 + timedelta(minutes=minutes))
        modes.append(tower.evaluate().rules["order-release"].mode)
    assert modes == ["full", "incremental", "incremental", "full", "incremental", "full"]


def test_too_many_changed_keys_run_in_full(store: Store) -> None:
    tower = Harness(store, rules=[RULES["order-release"]], max_incremental_keys=3)
    tower.evaluate()
    tower.send(*(event("order.accepted", n, T0) for n in range(1, 4)))
    tower.at(T0 + timedelta(minutes=1))
    assert tower.evaluate().rules["order-release"].mode == "incremental"
    tower.send(*(event("order.accepted", n, T0) for n in range(4, 9)))
    tower.at(T0 + timedelta(minutes=2))
    report = tower.evaluate().rules["order-release"]
    assert (report.mode, report.keys_evaluated, report.cases_changed) == ("full", 8, 5)


def test_a_run_that_stopped_half_way_is_made_good(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    tower = Harness(store, rules=[RULES["order-release"]])
    tower.send(event("order.accepted", 1, T0))
    tower.at(T0 + timedelta(minutes=5))
    tower.evaluate()

    def fail(
        found: Sequence[NewException], ended: Mapping[tuple[str, str], tuple[str, dict[str, Any]]], actor: str
    ) -> tuple[list[ExceptionRecord], list[ExceptionRecord]]:
        raise ConnectionError("store went away")

    monkeypatch.setattr(tower.exceptions, "open_and_resolve", fail)
    tower.at(T0 + timedelta(hours=3))
    with pytest.raises(ConnectionError):
        tower.evaluate()
    assert tower.status("order-release", "SO-1") == "breached"  # written before the failure
    assert tower.all_exceptions() == [] and len(tower.runs("order-release")) == 1
    monkeypatch.undo()

    tower.at(T0 + timedelta(hours=3, minutes=1))
    report = tower.evaluate()
    assert report.rules["order-release"].cases_changed == 0
    (opened,) = tower.open_exceptions()
    assert report.opened == [opened.id] and opened.key == "SO-1"
    assert datetime.fromisoformat(opened.opened_at).replace(tzinfo=UTC) == T0 + timedelta(hours=3, minutes=1)
