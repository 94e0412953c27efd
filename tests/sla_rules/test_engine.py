"""The SLA engine on a fixed clock against the real store: every state of every default SLA rule,
out-of-order and duplicate events, exceptions opened once and resolved `late` by the end event,
backtests, and the service that merges evaluators.

The helpers here (`Harness`, `event`) are shared by the other test_engine_* modules.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kernel.clock import FixedClock
from kernel.exceptions import ExceptionFilter, ExceptionRecord, ExceptionStore
from kernel.store import Store
from kernel.store.base import stored_time
from sla_rules.engine import SlaEngine
from sla_rules.loader import default_rules_dir, load_rules
from sla_rules.model import Deadline, EventMatch, Rule, SlaRule
from sla_rules.report import EvaluationReport, RuleReport
from sla_rules.service import SlaService
from sla_rules.texts import iso
from tests.factories import event_row, make_event

# A Monday, 15:00 UTC (09:00 in Chicago).
T0 = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
RULES: dict[str, SlaRule] = {r.id: r for r in load_rules(default_rules_dir()) if isinstance(r, SlaRule)}


def owner_of(rule: Rule, data: Mapping[str, str]) -> str:
    """Routes Reno's cases to their own team, so tests see owner_for at work."""
    return f"{rule.owner}-reno" if data.get("warehouse") == "RNO" else rule.owner


def event(event_type: str, n: int, at: datetime, source: str | None = None, **data: Any) -> dict[str, Any]:
    """A CloudEvent of order/shipment number n at business time `at`; data keys override the defaults."""
    overrides: dict[str, Any] = {"time": at.isoformat()}
    if source is not None:
        overrides["source"] = source
    if data:
        overrides["data"] = data
    return make_event(event_type, n, **overrides)


class Harness:
    """An SLA engine on a fixed clock, the events it reads and the cases and exceptions it writes."""

    def __init__(self, store: Store, at: datetime = T0, rules: list[SlaRule] | None = None, **engine: Any) -> None:
        self.store = store
        self.clock = FixedClock(at)
        self.exceptions = ExceptionStore(store, self.clock)
        engine.setdefault("sweep_every", None)
        self.engine = SlaEngine(
            store, self.exceptions, self.clock, list(RULES.values()) if rules is None else rules, owner_of, **engine
        )

    def send(self, *events: dict[str, Any], received_at: datetime | None = None) -> None:
        """Store events as the collector does, received now (or at `received_at`)."""
        self.store.insert("business_events", [event_row(e, received_at or self.clock.now()) for e in events])

    def heartbeat(self, received_at: datetime) -> None:
        """Traffic that concerns no order or shipment (an inventory snapshot): it moves the watermark."""
        self.send(make_event("inventory.snapshot", time=received_at.isoformat()), received_at=received_at)

    def at(self, when: datetime) -> None:
        """Move the clock."""
        self.clock.set(when)

    def evaluate(self, full: bool = False) -> EvaluationReport:
        """One evaluation."""
        return self.engine.evaluate(full=full)

    def case(self, rule: str, key: str) -> dict[str, Any] | None:
        """The current state of one case."""
        rows = self.store.query(
            "SELECT key, started_at, ended_at, due_at, status, customer_id, warehouse, source, version"
            " FROM sla_cases FINAL WHERE rule = {rule:String} AND key = {key:String}",
            {"rule": rule, "key": key},
        )
        return rows[0] if rows else None

    def status(self, rule: str, key: str) -> str | None:
        """The status of one case (None: no case)."""
        found = self.case(rule, key)
        return None if found is None else str(found["status"])

    def statuses(self, rule: str) -> dict[str, str]:
        """Key -> status of every case of a rule."""
        rows = self.store.query("SELECT key, status FROM sla_cases FINAL WHERE rule = {rule:String}", {"rule": rule})
        return {r["key"]: r["status"] for r in rows}

    def open_exceptions(self, rule: str | None = None) -> list[ExceptionRecord]:
        """Active exceptions (of one rule)."""
        found, _ = self.exceptions.search(ExceptionFilter(rule=rule), limit=1000)
        return [e for e in found if e.status != "resolved"]

    def all_exceptions(self, rule: str | None = None) -> list[ExceptionRecord]:
        """Every exception (of one rule), whatever its status."""
        found, _ = self.exceptions.search(ExceptionFilter(rule=rule), limit=1000)
        return found

    def runs(self, rule: str) -> list[dict[str, Any]]:
        """The sla_runs rows of a rule, oldest first."""
        return self.store.query(
            "SELECT mode, started_at, watermark, cases_changed, opened, resolved, keys_evaluated, version"
            " FROM sla_runs WHERE rule = {rule:String} ORDER BY version",
            {"rule": rule},
        )


def utc(text: str | None) -> datetime | None:
    """A stored timestamp as an aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None


# (rule, start type, end type, key prefix, deadline, warning)
AFTER_RULES = [
    ("order-release", "order.accepted", "order.released", "SO", timedelta(hours=2), timedelta(minutes=30)),
    ("asn-sent", "shipment.confirmed", "asn.sent", "SH", timedelta(hours=1), timedelta(minutes=15)),
    ("invoice-posting", "shipment.confirmed", "invoice.posted", "SO", timedelta(hours=24), timedelta(hours=4)),
]


def test_default_rules_are_the_four_of_the_design() -> None:
    assert set(RULES) == {"order-release", "ship-cutoff", "asn-sent", "invoice-posting"}
    assert RULES["order-release"].deadline.after == timedelta(hours=2)
    assert RULES["asn-sent"].deadline.after == timedelta(hours=1)
    assert RULES["invoice-posting"].deadline.after == timedelta(hours=24)
    cutoff = RULES["ship-cutoff"].deadline.cutoff
    assert cutoff is not None and cutoff.time.hour == 14 and cutoff.timezone == "America/Chicago"


# Each default rule's side, an event another system sent (whose token may send it) and the system that does send it.
FOREIGN = [
    ("order-release", "order.accepted", "order.released", "wms", "erp"),
    ("ship-cutoff", "order.released", "shipment.confirmed", "erp", "wms/dallas"),
    ("asn-sent", "shipment.confirmed", "asn.sent", "tms", "edi"),
    ("invoice-posting", "shipment.confirmed", "invoice.posted", "wms/dallas", "erp"),
]


@pytest.mark.parametrize(("rule", "start", "end", "foreign", "sender"), FOREIGN)
def test_another_systems_end_event_cannot_resolve_a_breach(
    store: Store, rule: str, start: str, end: str, foreign: str, sender: str
) -> None:
    """Ingest tokens are bound to a source: with a side open to any source, the WMS token's order.released met
    the ERP's breached order-release. The defaults read each event only from the system DESIGN.md says sends it."""
    h = Harness(store, at=T0 + timedelta(days=3))
    h.send(event(start, 100, T0))
    h.evaluate()
    assert h.status(rule, "SH-100" if rule == "asn-sent" else "SO-100") == "breached"
    h.send(event(end, 100, T0 + timedelta(minutes=10), source=foreign))
    h.evaluate()
    assert h.status(rule, "SH-100" if rule == "asn-sent" else "SO-100") == "breached"
    assert len(h.open_exceptions(rule)) == 1
    h.send(event(end, 100, T0 + timedelta(minutes=20), source=sender))  # the system that sends it (or its path)
    h.evaluate()
    assert h.status(rule, "SH-100" if rule == "asn-sent" else "SO-100") == "met" and h.open_exceptions(rule) == []


@pytest.mark.parametrize(("rule", "start", "end", "foreign", "sender"), FOREIGN)
def test_another_systems_start_event_starts_no_case(
    store: Store, rule: str, start: str, end: str, foreign: str, sender: str
) -> None:
    h = Harness(store, at=T0 + timedelta(days=3))
    bad = {"order.accepted": "tms", "order.released": "wms", "shipment.confirmed": "erp"}[start]
    h.send(event(start, 100, T0, source=bad))
    h.evaluate()
    assert h.statuses(rule) == {} and h.open_exceptions(rule) == []


@pytest.mark.parametrize(("rule", "start", "end", "prefix", "deadline", "warning"), AFTER_RULES)
def test_every_state_of_a_duration_rule(
    store: Store, rule: str, start: str, end: str, prefix: str, deadline: timedelta, warning: timedelta
) -> None:
    tower = Harness(store, rules=[RULES[rule]])
    now = T0 + deadline * 3
    begun = {
        "met": now - deadline * 2,  # ended one minute before its deadline
        "late": now - deadline * 2,  # ended one minute after
        "on-time-exactly": now - deadline * 2,  # ended exactly at its deadline: met
        "breached": now - deadline - timedelta(seconds=1),
        "pending": now - deadline + warning + timedelta(minutes=1),
        "at_risk": now - deadline + warning - timedelta(minutes=1),
    }
    numbers = dict(zip(begun, range(101, 107), strict=True))
    for name, at in begun.items():
        tower.send(event(start, numbers[name], at))
    tower.send(
        event(end, numbers["met"], begun["met"] + deadline - timedelta(minutes=1)),
        event(end, numbers["late"], begun["late"] + deadline + timedelta(minutes=1)),
        event(end, numbers["on-time-exactly"], begun["on-time-exactly"] + deadline),
    )
    tower.at(now)
    report = tower.evaluate()

    expected = {"met": "met", "late": "late", "on-time-exactly": "met", "breached": "breached"}
    expected |= {"pending": "pending", "at_risk": "at_risk"}
    assert tower.statuses(rule) == {f"{prefix}-{numbers[name]}": status for name, status in expected.items()}
    breached = tower.case(rule, f"{prefix}-{numbers['breached']}")
    assert breached is not None and breached["ended_at"] is None
    assert utc(breached["due_at"]) == begun["breached"] + deadline
    assert report.rules[rule].cases_changed == 6
    # only the breached case opens an exception; the late one was never seen breached
    (opened,) = tower.open_exceptions(rule)
    assert opened.key == f"{prefix}-{numbers['breached']}"
    assert opened.kind == "business" and opened.owner == RULES[rule].owner
    assert opened.severity == RULES[rule].severity
    assert utc(opened.due_at) == begun["breached"] + deadline
    assert opened.context["started_at"] == iso(stored_time(breached["started_at"]))
    assert opened.context["warehouse"] == "DAL"
    assert report.rules[rule].opened == [opened.id]


def test_every_state_of_the_ship_cutoff(store: Store) -> None:
    tower = Harness(store, rules=[RULES["ship-cutoff"]])
    # Wednesday 4 Nov 2026, 09:00 in Chicago (UTC-6): due 23:59:59 Chicago = 05:59:59 UTC next day.
    wednesday = datetime(2026, 11, 4, 15, 0, tzinfo=UTC)
    due = datetime(2026, 11, 5, 5, 59, 59, tzinfo=UTC)
    for n in (1, 2, 3, 4):
        tower.send(event("order.released", n, wednesday))
    tower.send(event("shipment.confirmed", 1, wednesday + timedelta(hours=2)))
    tower.at(due - timedelta(hours=3))  # outside the 2-hour warning
    tower.evaluate()
    assert tower.statuses("ship-cutoff") == {"SO-1": "met", "SO-2": "pending", "SO-3": "pending", "SO-4": "pending"}
    tower.at(due - timedelta(hours=1))
    tower.evaluate()
    assert tower.statuses("ship-cutoff") == {"SO-1": "met", "SO-2": "at_risk", "SO-3": "at_risk", "SO-4": "at_risk"}
    tower.at(due + timedelta(minutes=5))
    tower.send(event("shipment.confirmed", 2, due + timedelta(seconds=1)))
    tower.send(event("shipment.confirmed", 3, due))
    report = tower.evaluate()
    assert tower.statuses("ship-cutoff") == {"SO-1": "met", "SO-2": "late", "SO-3": "met", "SO-4": "breached"}
    # SO-2 was never seen breached: its end came before an evaluation did
    assert (
        [e.key for e in tower.open_exceptions()]
        == ["SO-4"]
        == [tower.exceptions.get(i).key for i in report.rules["ship-cutoff"].opened]
    )
    assert {e.owner for e in tower.open_exceptions("ship-cutoff")} == {"warehouse"}
    case = tower.case("ship-cutoff", "SO-4")
    assert case is not None and utc(case["due_at"]) == due


def test_events_that_arrive_before_their_start(store: Store) -> None:
    tower = Harness(store, rules=[RULES["order-release"], RULES["asn-sent"]])
    # the release is received (and even happened, by its clock) before the acceptance
    tower.send(event("order.released", 1, T0 - timedelta(minutes=5)), event("asn.sent", 2, T0))
    tower.at(T0 + timedelta(hours=5))
    tower.evaluate()
    assert tower.status("order-release", "SO-1") is None  # no start yet: no case
    assert tower.status("asn-sent", "SH-2") is None
    tower.send(event("order.accepted", 1, T0), event("shipment.confirmed", 2, T0 + timedelta(minutes=10)))
    tower.evaluate()
    # an end whose business time is before the start still ends the case, by its deadline: met
    assert tower.status("order-release", "SO-1") == "met"
    assert tower.status("asn-sent", "SH-2") == "met"
    assert tower.open_exceptions() == []


def test_duplicates_change_nothing(store: Store) -> None:
    tower = Harness(store, rules=[RULES["order-release"]])
    accepted = event("order.accepted", 1, T0)
    released = event("order.released", 1, T0 + timedelta(hours=3))
    late_copy_of_start = dict(accepted)  # the same event (same source and id), redelivered
    tower.send(accepted, released)
    tower.at(T0 + timedelta(hours=4))
    first = tower.evaluate()
    case = tower.case("order-release", "SO-1")
    assert case is not None and case["status"] == "late"
    tower.send(late_copy_of_start, released, accepted, received_at=T0 + timedelta(hours=4, minutes=1))
    tower.at(T0 + timedelta(hours=4, minutes=5))
    again = tower.evaluate()
    assert first.rules["order-release"].cases_changed == 1
    assert again.rules["order-release"].cases_changed == 0
    assert again.rules["order-release"].keys_evaluated == 1  # recomputed, found unchanged
    assert tower.case("order-release", "SO-1") == case


def test_first_start_and_first_end_count(store: Store) -> None:
    tower = Harness(store, rules=[RULES["order-release"]])
    tower.send(
        event("order.accepted", 1, T0 + timedelta(minutes=30)),
        event("order.accepted", 1, T0),  # a second acceptance, earlier: the case starts here
        event("order.released", 1, T0 + timedelta(hours=2, minutes=10)),
        event("order.released", 1, T0 + timedelta(hours=1)),  # the first release ends it
    )
    tower.at(T0 + timedelta(hours=5))
    tower.evaluate()
    case = tower.case("order-release", "SO-1")
    assert case is not None
    assert utc(case["started_at"]) == T0 and utc(case["ended_at"]) == T0 + timedelta(hours=1)
    assert case["status"] == "met"


def test_late_end_resolves_the_exception(store: Store) -> None:
    tower = Harness(store, rules=[RULES["asn-sent"]])
    tower.send(event("shipment.confirmed", 7, T0))
    tower.at(T0 + timedelta(hours=2))
    report = tower.evaluate()
    (opened,) = tower.open_exceptions("asn-sent")
    assert report.rules["asn-sent"].opened == [opened.id] and opened.key == "SH-7"
    assert opened.owner == "transportation" and opened.status == "open"

    tower.send(event("asn.sent", 7, T0 + timedelta(hours=4, minutes=30)))
    tower.at(T0 + timedelta(hours=5))
    report = tower.evaluate()
    assert tower.status("asn-sent", "SH-7") == "late"
    assert report.rules["asn-sent"].resolved == [opened.id]
    resolved = tower.exceptions.get(opened.id)
    assert resolved.status == "resolved" and resolved.resolution == "late"
    detail = json.loads(resolved.resolution_detail)
    assert detail == {"hours_late": 3.5, "ended_at": "2026-11-02T19:30:00.000000Z"}  # RFC 3339, as the API writes
    actions = [(a["actor"], a["action"]) for a in tower.exceptions.audit(opened.id)]
    assert actions == [("engine", "opened"), ("engine", "resolved")]
    assert tower.evaluate().resolved == []


def test_an_end_dated_before_its_start_resolves_met_and_says_so(store: Store) -> None:
    """DESIGN.md: a case whose end comes by the deadline is met, whatever order the events arrive in; an end
    dated before the start itself is usually bad data, so the resolution says so."""
    tower = Harness(store, rules=[RULES["asn-sent"]])
    tower.send(event("shipment.confirmed", 7, T0))
    tower.at(T0 + timedelta(days=3))
    (opened,) = tower.evaluate().rules["asn-sent"].opened
    tower.send(event("asn.sent", 7, T0 - timedelta(days=1)))
    tower.evaluate()
    resolved = tower.exceptions.get(opened)
    assert resolved.status == "resolved" and resolved.resolution == "met"
    detail = json.loads(resolved.resolution_detail)
    assert detail == {"hours_late": 0.0, "ended_at": "2026-11-01T15:00:00.000000Z", "ended_before_start": True}


def test_running_twice_opens_nothing_twice(store: Store) -> None:
    tower = Harness(store)
    for n in range(1, 4):
        tower.send(event("order.accepted", n, T0), event("order.released", n, T0), event("shipment.confirmed", n, T0))
    tower.at(T0 + timedelta(days=3))
    first = tower.evaluate()
    # each shipment lacks its ASN and its invoice; every order is released and shipped in time
    assert len(first.rules["asn-sent"].opened) == 3 and len(first.rules["invoice-posting"].opened) == 3
    assert first.rules["order-release"].opened == [] and first.rules["ship-cutoff"].opened == []
    assert tower.evaluate().opened == []
    assert tower.evaluate(full=True).opened == []
    tower.at(T0 + timedelta(days=4))
    assert tower.evaluate().opened == []
    assert len(tower.all_exceptions()) == 6


def test_a_breach_resolved_by_hand_is_not_reopened(store: Store) -> None:
    tower = Harness(store, rules=[RULES["order-release"]])
    tower.send(event("order.accepted", 1, T0))
    tower.at(T0 + timedelta(hours=3))
    tower.evaluate()
    (opened,) = tower.open_exceptions()
    tower.exceptions.resolve(opened.id, actor="ops@example.com", resolution="wont-fix")
    tower.at(T0 + timedelta(hours=4))
    assert tower.evaluate(full=True).opened == []
    assert tower.evaluate().opened == []
    assert len(tower.all_exceptions()) == 1


def test_a_case_first_seen_late_opens_no_exception(store: Store) -> None:
    tower = Harness(store, rules=[RULES["invoice-posting"]])
    tower.send(event("shipment.confirmed", 1, T0), event("invoice.posted", 1, T0 + timedelta(hours=30)))
    tower.at(T0 + timedelta(days=2))
    report = tower.evaluate()
    assert tower.status("invoice-posting", "SO-1") == "late"
    assert report.opened == [] and tower.all_exceptions() == []


def test_pending_then_breached_opens_one_exception(store: Store) -> None:
    tower = Harness(store, rules=[RULES["order-release"]])
    tower.send(event("order.accepted", 1, T0))
    tower.at(T0 + timedelta(minutes=10))
    assert tower.evaluate().opened == []
    assert tower.status("order-release", "SO-1") == "pending"
    tower.at(T0 + timedelta(hours=1, minutes=31))
    assert tower.evaluate().opened == []
    assert tower.status("order-release", "SO-1") == "at_risk"
    tower.at(T0 + timedelta(hours=2, seconds=1))
    report = tower.evaluate()
    assert tower.status("order-release", "SO-1") == "breached"
    assert len(report.rules["order-release"].opened) == 1
    (opened,) = tower.open_exceptions()
    assert opened.owner == "customer_service" and opened.context["customer_id"] == "C-1"


def test_case_carries_customer_warehouse_and_start_source(store: Store) -> None:
    tower = Harness(store, rules=[RULES["ship-cutoff"], RULES["order-release"]])
    tower.send(
        event("order.accepted", 1, T0, warehouse="ATL"),  # the only event with the customer
        event("order.released", 1, T0 + timedelta(minutes=5), warehouse="RNO"),
        event("order.accepted", 2, T0, warehouse=""),  # no warehouse on the start event
        event("order.released", 2, T0 + timedelta(minutes=5), warehouse="DAL"),
    )
    tower.at(T0 + timedelta(hours=1))
    tower.evaluate()
    release = tower.case("ship-cutoff", "SO-1")
    assert release is not None
    assert (release["customer_id"], release["warehouse"], release["source"]) == ("C-1", "RNO", "erp")
    accepted = tower.case("order-release", "SO-1")
    assert accepted is not None and (accepted["customer_id"], accepted["warehouse"]) == ("C-1", "ATL")
    fallback = tower.case("order-release", "SO-2")
    assert fallback is not None and fallback["warehouse"] == "DAL"  # first non-empty among the key's events


def test_owner_comes_from_owner_for(store: Store) -> None:
    tower = Harness(store, rules=[RULES["ship-cutoff"]])
    tower.send(event("order.released", 1, T0, warehouse="RNO"), event("order.released", 2, T0, warehouse="DAL"))
    tower.at(T0 + timedelta(days=2))
    tower.evaluate()
    owners = {e.key: e.owner for e in tower.open_exceptions()}
    assert owners == {"SO-1": "warehouse-reno", "SO-2": "warehouse"}


def test_sources_and_where_filters(store: Store) -> None:
    dallas_only = SlaRule(
        id="dallas-ship",
        title="Dallas ships within 4 hours of release",
        kind="business",
        owner="warehouse",
        key="order_id",
        start=EventMatch(types=["order.released"], where={"warehouse": ["DAL"]}),
        end=EventMatch(types=["shipment.confirmed"], sources=["wms/dallas"]),
        deadline=Deadline(after=timedelta(hours=4)),
    )
    tower = Harness(store, rules=[dallas_only])
    tower.send(
        event("order.released", 1, T0),
        event("shipment.confirmed", 1, T0 + timedelta(hours=1), source="wms/dallas/dock-2"),
        event("order.released", 2, T0),
        event("shipment.confirmed", 2, T0 + timedelta(hours=1)),  # from `wms`, not wms/dallas: not an end
        event("order.released", 3, T0, warehouse="ATL"),  # not a start
    )
    tower.at(T0 + timedelta(hours=5))
    tower.evaluate()
    assert tower.statuses("dallas-ship") == {"SO-1": "met", "SO-2": "breached"}


def test_where_takes_any_of_several_values_and_where_not_excludes(store: Store) -> None:
    """A key customer's tighter release deadline beside the default for everyone else: no order is in both."""

    def release(rule_id: str, hours: int, **filters: dict[str, list[str]]) -> SlaRule:
        return SlaRule(
            id=rule_id,
            title=f"Released within {hours}h",
            kind="business",
            owner="customer_service",
            key="order_id",
            start=EventMatch(types=["order.accepted"], **filters),
            end=EventMatch(types=["order.released"]),
            deadline=Deadline(after=timedelta(hours=hours)),
        )

    key_customers = {"customer_id": ["C-ACME", "C-GLOBEX"]}
    tower = Harness(
        store, rules=[release("release-key", 1, where=key_customers), release("release", 2, where_not=key_customers)]
    )
    tower.send(
        event("order.accepted", 1, T0, customer_id="C-ACME"),
        event("order.accepted", 2, T0, customer_id="C-GLOBEX"),
        event("order.accepted", 3, T0, customer_id="C-OTHER"),
        *(event("order.released", n, T0 + timedelta(minutes=90)) for n in (1, 2, 3)),
    )
    tower.at(T0 + timedelta(hours=3))
    tower.evaluate()
    assert tower.statuses("release-key") == {"SO-1": "late", "SO-2": "late"}
    assert tower.statuses("release") == {"SO-3": "met"}


def test_backtest_writes_nothing(store: Store) -> None:
    tower = Harness(store, at=T0 + timedelta(days=1))  # a backtest of the past
    tower.send(
        event("order.accepted", 1, T0 - timedelta(days=1)),  # before the window
        event("order.accepted", 2, T0),
        event("order.released", 2, T0 + timedelta(hours=1)),
        event("order.accepted", 3, T0 + timedelta(hours=1)),
        event("order.released", 3, T0 + timedelta(hours=8)),  # after `until`: not known then
        event("order.accepted", 4, T0 + timedelta(hours=4, minutes=15)),
        event("order.accepted", 5, T0 + timedelta(hours=6)),  # at `until`: outside the window
    )
    until = T0 + timedelta(hours=6)
    rows, _ = tower.engine.backtest(RULES["order-release"], T0, until)
    assert [(r["key"], r["status"]) for r in rows] == [("SO-2", "met"), ("SO-3", "breached"), ("SO-4", "at_risk")]
    assert rows[0]["rule"] == "order-release" and utc(rows[0]["due_at"]) == T0 + timedelta(hours=2)
    assert store.query("SELECT count() AS n FROM sla_cases")[0]["n"] == 0
    assert store.query("SELECT count() AS n FROM sla_runs")[0]["n"] == 0
    assert tower.all_exceptions() == []


def test_a_backtest_lists_the_earliest_cases_of_the_statuses_asked_and_counts_them_all(store: Store) -> None:
    # one pass lists per status and counts; the listing must equal filtering and cutting the whole, for any ask
    tower = Harness(store, at=T0 + timedelta(hours=6))
    sent = []
    for n in range(1, 13):
        started = T0 + timedelta(minutes=(n * 37) % 300 if n != 12 else 37)  # out of key order; 1 and 12 tie
        sent.append(event("order.accepted", n, started))
        if n % 3 == 0:
            sent.append(event("order.released", n, started + timedelta(hours=n % 4)))
    tower.send(*sent)
    rule, until = RULES["order-release"], T0 + timedelta(hours=6)
    whole, counts = tower.engine.backtest(rule, T0, until)
    assert [(c["started_at"], c["key"]) for c in whole] == sorted((c["started_at"], c["key"]) for c in whole)
    assert counts == dict(sorted(Counter(c["status"] for c in whole).items())) and len(counts) >= 3
    for statuses in (None, ["breached"], ["met", "late"], ["pending", "at_risk", "breached"]):
        for limit in (None, 0, 1, 2, 5, 100):
            listed, again = tower.engine.backtest(rule, T0, until, statuses, limit)
            expected = [c for c in whole if statuses is None or c["status"] in statuses]
            assert listed == (expected if limit is None else expected[:limit]), (statuses, limit)
            assert again == counts


def test_a_backtest_to_a_time_still_ahead_is_as_of_now(store: Store) -> None:
    # `tower rules test --from 2026-11-01 --to 2026-12-01` in the middle of November: a case due later today has
    # missed nothing yet, so it is pending (at risk), not breached as it would be on 1 December
    tower = Harness(store, at=T0 + timedelta(hours=1, minutes=45))
    tower.send(event("order.accepted", 1, T0), event("order.accepted", 2, T0 - timedelta(hours=3)))
    rows, _ = tower.engine.backtest(RULES["order-release"], T0 - timedelta(days=1), T0 + timedelta(days=29))
    assert [(r["key"], r["status"]) for r in rows] == [("SO-2", "breached"), ("SO-1", "at_risk")]


def test_a_changed_rule_is_evaluated_in_full(store: Store) -> None:
    tower = Harness(store, rules=[RULES["order-release"]])
    tower.send(event("order.accepted", 1, T0), event("order.released", 1, T0 + timedelta(hours=3)))
    tower.at(T0 + timedelta(hours=4))
    tower.evaluate()
    assert tower.status("order-release", "SO-1") == "late"
    looser = RULES["order-release"].model_copy(update={"deadline": RULES["ship-cutoff"].deadline.model_copy()})
    changed = Harness(store, at=tower.clock.now(), rules=[looser])
    report = changed.evaluate()
    assert report.rules["order-release"].mode == "full"
    assert tower.status("order-release", "SO-1") == "met"  # released the same day before its cutoff


class Broken:
    """An evaluator that fails."""

    def evaluate(self, full: bool = False) -> EvaluationReport:
        raise RuntimeError("store on fire")


class Fixed:
    """An evaluator with a canned report."""

    def evaluate(self, full: bool = False) -> EvaluationReport:
        return EvaluationReport(rules={"source-silence": RuleReport(cases_changed=1, opened=["x"])}, full=full)


def test_service_merges_evaluators_and_reports_failures(store: Store) -> None:
    tower = Harness(store, rules=[RULES["order-release"]])
    tower.send(event("order.accepted", 1, T0))
    tower.at(T0 + timedelta(hours=3))
    service = SlaService([tower.engine, Broken(), Fixed()])
    assert service.engine is tower.engine
    report = service.evaluate(full=True)
    assert report.full is True
    assert set(report.rules) == {"order-release", "source-silence"}
    assert len(report.opened) == 2 and report.errors == {"Broken": "RuntimeError: store on fire"}
    data = report.as_dict()
    assert data["opened"] == 2 and data["rules"]["order-release"]["mode"] == "full"
    assert data["rules"]["source-silence"] == {"cases_changed": 1, "opened": ["x"], "resolved": [], "duration_ms": 0}
    rows, _ = service.engine.backtest(RULES["order-release"], T0, T0 + timedelta(hours=1))
    assert [r["key"] for r in rows] == ["SO-1"]
    with pytest.raises(LookupError):
        _ = SlaService([Fixed()]).engine


def test_rules_that_are_disabled_are_not_evaluated(store: Store) -> None:
    off = RULES["asn-sent"].model_copy(update={"enabled": False})
    tower = Harness(store, rules=[off, RULES["order-release"]])
    tower.send(event("shipment.confirmed", 1, T0), event("order.accepted", 1, T0))
    tower.at(T0 + timedelta(days=1))
    assert set(tower.evaluate().rules) == {"order-release"}
    assert tower.status("asn-sent", "SH-1") is None
