"""What one evaluation does for every rule at once: the first start event a case takes its fields from
(ties at one instant broken by the event itself, whatever the order the events were stored in), every
rule's exceptions opened and resolved with one read and one write, and every key column's changed keys
found with one query."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from kernel.store import Store
from kernel.store.base import Params, Row
from tests.sla_rules.test_engine import RULES, T0, Harness, event


class Spy:
    """The real store, recording the statements it ran (to count round trips, not to fake any)."""

    backend = "embedded"

    def __init__(self, store: Store) -> None:
        self.store = store
        self.statements: list[str] = []

    def query(self, sql: str, params: Params | None = None) -> list[Row]:
        self.statements.append(sql)
        return self.store.query(sql, params)

    def command(self, sql: str, params: Params | None = None) -> None:
        self.statements.append(sql)
        self.store.command(sql, params)

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        self.statements.append(f"INSERT INTO {table}")
        return self.store.insert(table, rows)

    def ping(self) -> bool:
        return self.store.ping()

    def close(self) -> None:
        self.store.close()

    def count(self, text: str) -> int:
        """Statements run since the last `reset` that contain `text`."""
        return sum(text in statement for statement in self.statements)

    def reset(self) -> None:
        self.statements.clear()


def test_a_tie_at_one_instant_picks_one_event_whatever_the_order_stored(store: Store) -> None:
    tower = Harness(store, rules=[RULES["order-release"]])
    dallas = {"warehouse": "DAL", "customer_id": "C-2"}
    atlanta = {"warehouse": "ATL", "customer_id": "C-1"}
    # the same two acceptances at the same instant, stored in opposite orders (separate parts) for SO-1 and SO-2
    tower.send(event("order.accepted", 1, T0, **dallas))
    tower.send(event("order.accepted", 1, T0, **atlanta))
    tower.send(event("order.accepted", 2, T0, **atlanta))
    tower.send(event("order.accepted", 2, T0, **dallas))
    tower.at(T0 + timedelta(minutes=5))
    tower.evaluate()
    picked = []
    for key in ("SO-1", "SO-2"):
        case = tower.case("order-release", key)
        assert case is not None
        picked.append((case["customer_id"], case["warehouse"]))
    # both fields from one event (never mixed), the same event for both orders: the smaller, ATL
    assert picked == [("C-1", "ATL"), ("C-1", "ATL")]


def test_one_run_opens_and_resolves_for_every_rule_in_one_read_and_one_write(store: Store) -> None:
    spy = Spy(store)
    tower = Harness(store, rules=[RULES["order-release"], RULES["asn-sent"], RULES["invoice-posting"]])
    tower.engine.store = spy
    tower.exceptions.store = spy
    tower.send(
        event("order.accepted", 1, T0),
        event("order.accepted", 2, T0),
        event("shipment.confirmed", 1, T0),
        event("shipment.confirmed", 2, T0),
    )
    tower.at(T0 + timedelta(hours=3))  # past order-release's 2 h and asn-sent's 1 h
    report = tower.evaluate()
    assert spy.count("FROM exceptions FINAL") == 1 and spy.count("INSERT INTO exceptions") == 1
    opened = {rule: sorted(e.key for e in tower.open_exceptions(rule)) for rule in report.rules}
    assert opened == {"order-release": ["SO-1", "SO-2"], "asn-sent": ["SH-1", "SH-2"], "invoice-posting": []}
    for rule, part in report.rules.items():  # each rule reports its own exceptions
        assert sorted(part.opened) == sorted(e.id for e in tower.open_exceptions(rule))

    # one order is released and one ASN sent (late), while the invoice deadline of both orders passes
    tower.send(event("order.released", 1, T0 + timedelta(hours=3)), event("asn.sent", 2, T0 + timedelta(hours=3)))
    tower.at(T0 + timedelta(hours=25))
    spy.reset()
    report = tower.evaluate()
    # the run's transitions in one read, its exceptions in one read and one write
    assert spy.count("FROM sla_cases\nWHERE version >") == 1
    assert spy.count("FROM exceptions FINAL") == 1 and spy.count("INSERT INTO exceptions") == 1
    resolved = {rule: sorted(part.resolved) for rule, part in report.rules.items()}
    assert resolved["order-release"] == [e.id for e in tower.all_exceptions("order-release") if e.key == "SO-1"]
    assert resolved["asn-sent"] == [e.id for e in tower.all_exceptions("asn-sent") if e.key == "SH-2"]
    assert sorted(e.key for e in tower.open_exceptions("invoice-posting")) == ["SO-1", "SO-2"]
    assert len(report.rules["invoice-posting"].opened) == 2 and report.rules["invoice-posting"].resolved == []
    assert {e.resolution for e in tower.all_exceptions() if e.status == "resolved"} == {"late"}


def test_changed_keys_of_every_key_column_in_one_query(store: Store) -> None:
    spy = Spy(store)
    tower = Harness(store, rules=[RULES["order-release"], RULES["asn-sent"]])
    tower.engine.store = spy
    tower.send(event("order.accepted", 1, T0), event("shipment.confirmed", 1, T0), event("shipment.confirmed", 2, T0))
    tower.heartbeat(T0 + timedelta(minutes=5))
    tower.at(T0 + timedelta(minutes=10))
    tower.evaluate()
    spy.reset()
    tower.send(event("asn.sent", 1, T0 + timedelta(minutes=11)), event("order.released", 1, T0 + timedelta(minutes=11)))
    tower.at(T0 + timedelta(minutes=12))
    report = tower.evaluate()
    release, asn = report.rules["order-release"], report.rules["asn-sent"]
    assert (release.mode, release.keys_evaluated, release.cases_changed) == ("incremental", 1, 1)
    assert (asn.mode, asn.keys_evaluated, asn.cases_changed) == ("incremental", 1, 1)
    assert tower.status("order-release", "SO-1") == "met" and tower.status("asn-sent", "SH-1") == "met"
    assert tower.status("asn-sent", "SH-2") == "pending"
    assert spy.count("SELECT DISTINCT g, k") == 1


def test_keys_of_any_text_travel_to_an_incremental_run_intact(store: Store) -> None:
    odd = ['SO-"quoted"', "SO-back\\slash", "SO-ünïcode-✓", "SO-comma,[bracket]"]
    tower = Harness(store, rules=[RULES["order-release"]])
    tower.send(*(event("order.accepted", n, T0, order_id=key) for n, key in enumerate(odd)))
    tower.heartbeat(T0 + timedelta(minutes=5))
    tower.at(T0 + timedelta(minutes=10))
    tower.evaluate()
    released = T0 + timedelta(minutes=11)
    tower.send(*(event("order.released", n, released, order_id=key) for n, key in enumerate(odd)))
    tower.at(T0 + timedelta(minutes=12))
    part = tower.evaluate().rules["order-release"]
    assert (part.mode, part.keys_evaluated, part.cases_changed) == ("incremental", 4, 4)
    assert tower.statuses("order-release") == dict.fromkeys(odd, "met")
