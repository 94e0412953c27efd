"""Penalties on SLA rules: validated through the loader (file:line: field), shipped on the default SLA
rules, outside the engine's rule fingerprint (an edit does not force a full run), and the math."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from kernel.store import Store
from sla_rules.breaches import BreachQuery, hours, penalty_of
from sla_rules.loader import RuleFileError, default_rules_dir, load_rules
from sla_rules.model import Penalty, SlaRule
from sla_rules.sql import rule_fingerprint
from tests.factories import case_row, event_row, make_event
from tests.sla_rules.test_engine import RULES, T0, Harness, event

RULE = """\
id: order-release
type: sla
title: Order released within 2 hours
kind: business
owner: customer_service
key: order_id
start:
  types: [order.accepted]
end:
  types: [order.released]
deadline:
  after: 2h
"""


def problems(folder: Path, penalty: str) -> list[str]:
    (folder / "order-release.yaml").write_text(RULE + textwrap.dedent(penalty))
    with pytest.raises(RuleFileError) as caught:
        load_rules(folder)
    return caught.value.lines


def test_default_sla_rules_ship_a_penalty() -> None:
    rules = {r.id: r for r in load_rules(default_rules_dir()) if isinstance(r, SlaRule)}
    penalties = {rule_id: rule.penalty for rule_id, rule in rules.items()}
    assert penalties == {
        "asn-sent": Penalty(fixed=Decimal(100), currency="USD"),
        "invoice-posting": Penalty(fixed=Decimal(15), currency="USD"),
        "order-release": Penalty(fixed=Decimal(25), percent=Decimal(1), currency="USD"),
        "ship-cutoff": Penalty(percent=Decimal(3), currency="USD"),
    }


def test_a_penalty_loads_with_fixed_percent_and_currency(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RULE + "penalty: {fixed: 12.5, percent: 0.25, currency: EUR}\n")
    (rule,) = load_rules(tmp_path)
    assert isinstance(rule, SlaRule)
    assert rule.penalty == Penalty(fixed=Decimal("12.5"), percent=Decimal("0.25"), currency="EUR")
    (tmp_path / "r.yaml").write_text(RULE + "penalty: {percent: 2}\n")
    (rule,) = load_rules(tmp_path)
    assert isinstance(rule, SlaRule) and rule.penalty == Penalty(percent=Decimal(2))  # USD by default


@pytest.mark.parametrize(
    ("penalty", "expected"),
    [
        ("penalty: {fixed: -5}\n", ["13: penalty.fixed: Input should be greater than or equal to 0 (got -5)"]),
        ("penalty: {percent: 150}\n", ["13: penalty.percent: Input should be less than or equal to 100 (got 150)"]),
        (
            "penalty:\n  fixed: 10\n  currency: usd\n",
            ["15: penalty.currency: 'usd' is not an ISO 4217 currency code like USD"],
        ),
        ("penalty:\n  fixed: yes\n", ["14: penalty.fixed: expected a number, got 'yes'"]),
        ("penalty:\n  fixed: true\n", ["14: penalty.fixed: expected a number, got True"]),
        ("penalty:\n  fixed: '25'\n", ["14: penalty.fixed: expected a number, got '25'"]),
        (
            "penalty: {fixed: 0, percent: 0}\n",
            ["13: penalty: give `fixed`, `percent` or both (a penalty of nothing is no penalty: remove it)"],
        ),
        (
            "penalty:\n  fixed: 10\n  cap: 100\n",
            ["15: penalty.cap: unknown field; expected one of fixed, percent, currency"],
        ),
        (
            "penalty:\n  fixed: 1.23456\n",
            ["14: penalty.fixed: Decimal input should have no more than 4 decimal places (got 1.23456)"],
        ),
        ("penalty: 25\n", ["13: penalty: expected a mapping, got a number"]),
    ],
    ids=[
        "negative",
        "over 100%",
        "currency",
        "yes",
        "bool",
        "text",
        "nothing",
        "unknown field",
        "too precise",
        "scalar",
    ],
)
def test_bad_penalties_name_file_line_and_field(tmp_path: Path, penalty: str, expected: list[str]) -> None:
    shown = str(tmp_path / "order-release.yaml")
    assert problems(tmp_path, penalty) == [f"{shown}:{line}" for line in expected]


def test_penalty_is_not_part_of_the_rule_fingerprint() -> None:
    rule = RULES["order-release"]
    assert rule.penalty is not None
    edited = rule.model_copy(update={"penalty": Penalty(fixed=Decimal(99), percent=Decimal(5), currency="EUR")})
    assert rule_fingerprint(edited) == rule_fingerprint(rule)
    assert rule_fingerprint(rule.model_copy(update={"penalty": None})) == rule_fingerprint(rule)
    # what decides the cases still does
    later = rule.model_copy(update={"warning": timedelta(minutes=45)})
    assert rule_fingerprint(later) != rule_fingerprint(rule)


def test_a_penalty_edit_keeps_the_engine_incremental(store: Store) -> None:
    rule = RULES["order-release"]
    first = Harness(store, rules=[rule])
    first.send(event("order.accepted", 1, T0))
    assert first.evaluate().rules["order-release"].mode == "full"
    assert first.evaluate().rules["order-release"].mode == "incremental"

    edited = rule.model_copy(update={"penalty": Penalty(fixed=Decimal(1), currency="USD")})
    second = Harness(store, at=T0 + timedelta(minutes=1), rules=[edited])  # a restart with the edited file
    assert second.evaluate().rules["order-release"].mode == "incremental"
    deadline = rule.deadline.model_copy(update={"after": timedelta(hours=3)})
    third = Harness(store, at=T0 + timedelta(minutes=2), rules=[edited.model_copy(update={"deadline": deadline})])
    assert third.evaluate().rules["order-release"].mode == "full"


@pytest.mark.parametrize(
    ("penalty", "amount", "currency", "expected"),
    [
        (Penalty(fixed=Decimal(25)), Decimal(1000), "USD", (Decimal("25.00"), "USD", "")),
        (Penalty(percent=Decimal(3)), Decimal("1234.56"), "USD", (Decimal("37.04"), "USD", "")),  # 37.0368
        (Penalty(fixed=Decimal(25), percent=Decimal(1)), Decimal("120.5"), "USD", (Decimal("26.21"), "USD", "")),
        (Penalty(percent=Decimal("0.5")), Decimal("1.01"), "USD", (Decimal("0.01"), "USD", "")),  # 0.00505: half up
        (  # an order without a currency is not taken for the penalty's currency
            Penalty(fixed=Decimal(25), percent=Decimal(1)),
            Decimal(1000),
            "",
            (Decimal("25.00"), "USD", "order without a currency, penalty in USD: fixed part only"),
        ),
        (  # a credit or return: never a negative penalty
            Penalty(fixed=Decimal(25), percent=Decimal(1)),
            Decimal("-5000.00"),
            "USD",
            (Decimal("25.00"), "USD", "negative order amount (-5000.00): fixed part only"),
        ),
        (
            Penalty(percent=Decimal(3)),
            Decimal("-2000.00"),
            "USD",
            (Decimal("0.00"), "USD", "negative order amount (-2000.00): fixed part only"),
        ),
        (
            Penalty(fixed=Decimal(25), percent=Decimal(1)),
            None,
            "",
            (Decimal("25.00"), "USD", "no order amount: fixed part only"),
        ),
        (
            Penalty(fixed=Decimal(25), percent=Decimal(1), currency="USD"),
            Decimal(300),
            "EUR",
            (Decimal("25.00"), "USD", "order in EUR, penalty in USD: fixed part only"),
        ),
        (Penalty(percent=Decimal(2), currency="EUR"), Decimal(300), "EUR", (Decimal("6.00"), "EUR", "")),
        (None, Decimal(300), "USD", (Decimal(0), "", "")),
    ],
)
def test_penalty_math(
    penalty: Penalty | None, amount: Decimal | None, currency: str, expected: tuple[Decimal, str, str]
) -> None:
    assert penalty_of(penalty, amount, currency) == expected


def test_hours_late_round_to_hundredths_and_never_go_negative() -> None:
    due = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    assert hours(due, due + timedelta(hours=3)) == Decimal("3.00")
    assert hours(due, due + timedelta(minutes=20)) == Decimal("0.33")
    assert hours(due, due + timedelta(minutes=21)) == Decimal("0.35")
    assert hours(due, due + timedelta(seconds=18)) == Decimal("0.01")  # 0.005 h: half up
    assert hours(due, due - timedelta(hours=1)) == Decimal("0.00")


def test_a_new_case_logic_changes_every_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    # an upgrade that computes cases differently recomputes every rule's stored cases once
    rule = RULES["ship-cutoff"]
    before = rule_fingerprint(rule)
    monkeypatch.setattr("sla_rules.sql.CASE_LOGIC", "next")
    assert rule_fingerprint(rule) != before


def test_the_order_amount_comes_from_the_systems_the_rules_read_it_from(store: Store) -> None:
    # order-release reads order.accepted from erp only; an ecommerce token's order.accepted, sent first, is no amount
    rule = RULES["order-release"]
    assert rule.start.sources == ["erp"] and rule.penalty == Penalty(fixed=Decimal(25), percent=Decimal(1))
    at = datetime(2026, 11, 3, 9, tzinfo=UTC)

    def accepted(n: int, minutes: int, source: str, amount: int) -> dict[str, object]:
        time = (at + timedelta(minutes=minutes)).isoformat()
        data = {"amount": amount, "currency": "USD"}
        return event_row(make_event("order.accepted", n, source=source, time=time, data=data))

    store.insert(
        "business_events",
        [
            accepted(701, 0, "ecommerce", 1_000_000),
            accepted(701, 60, "erp", 100),
            accepted(702, 0, "ecommerce/web", 5_000),  # none from erp: no amount
            accepted(703, 0, "erp/dallas", 300),  # a path of erp counts as erp
        ],
    )
    due = at + timedelta(hours=3)
    store.insert("sla_cases", [case_row("order-release", f"SO-{n}", at, due, "breached") for n in (701, 702, 703)])
    unrestricted = rule.model_copy(update={"start": rule.start.model_copy(update={"sources": []})})
    found = {
        name: {
            b.key: (b.order_amount, b.penalty, b.note)
            for b in BreachQuery(store, {rule.id: config}).breaches(
                at, at + timedelta(days=1), due + timedelta(hours=1)
            )
        }
        for name, config in (("erp", rule), ("any", unrestricted))
    }
    assert found["erp"] == {
        "SO-701": (Decimal("100.00"), Decimal("26.00"), ""),
        "SO-702": (None, Decimal("25.00"), "no order amount: fixed part only"),
        "SO-703": (Decimal("300.00"), Decimal("28.00"), ""),
    }
    # a rule that reads any source takes the first order.accepted of any (time, then id: always the same one)
    assert found["any"]["SO-701"] == (Decimal("1000000.00"), Decimal("10025.00"), "")
    assert found["any"]["SO-702"] == (Decimal("5000.00"), Decimal("75.00"), "")


def test_a_rule_starting_on_another_system_takes_the_amount_the_rules_read_order_accepted_from(store: Store) -> None:
    # invoice-posting starts on the WMS's shipment: a percent penalty on it still finds the ERP's order amount,
    # as order-release reads order.accepted from erp; the storefront's is never taken
    percent = Penalty(percent=Decimal(2))
    invoice = RULES["invoice-posting"].model_copy(update={"penalty": percent})
    at = datetime(2026, 11, 3, 9, tzinfo=UTC)
    rows = [
        event_row(make_event("order.accepted", 801, source=source, time=time.isoformat(), data=data))
        for source, time, data in (
            ("ecommerce", at, {"amount": 9_999, "currency": "USD"}),
            ("erp", at + timedelta(minutes=5), {"amount": 500, "currency": "USD"}),
        )
    ]
    rows.append(event_row(make_event("shipment.confirmed", 801, time=(at + timedelta(hours=1)).isoformat())))
    store.insert("business_events", rows)
    due = at + timedelta(days=1)
    store.insert("sla_cases", [case_row("invoice-posting", "SO-801", at, due, "breached")])
    rules = {invoice.id: invoice, "order-release": RULES["order-release"]}
    (breach,) = BreachQuery(store, rules).breaches(at, at + timedelta(days=2), due + timedelta(hours=1))
    assert (breach.order_id, breach.order_amount, breach.penalty) == ("SO-801", Decimal("500.00"), Decimal("10.00"))
    # with invoice-posting alone no rule says where order.accepted comes from: the first from any system
    (alone,) = BreachQuery(store, {invoice.id: invoice}).breaches(at, at + timedelta(days=2), due + timedelta(hours=1))
    assert alone.order_amount == Decimal("9999.00")
