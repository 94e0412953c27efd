"""Invoice matching on hand-built orders, shipments and invoices: every check, tolerance edges, grace periods,
one exception per invoice (or per never-invoiced order), and findings that resolve when the documents agree."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kernel.store import Store
from reconcilers.invoice import InvoiceReconciler
from reconcilers.loop import RECONCILED
from reconcilers.model import RunContext
from reconcilers.sql import materialized_cte
from tests.factories import event_row
from tests.reconcilers.factories import NOW, Harness, business, invoice, invoice_rule, order_flow

DAY_AGO = NOW - timedelta(days=1)


def harness(store: Store, **params: object) -> Harness:
    return Harness(store, invoice_rule(**params))


def test_a_matching_invoice_is_no_finding(store: Store) -> None:
    h = harness(store)
    h.send(*order_flow(1, DAY_AGO))
    run = h.run()
    assert (run.rows_compared, run.findings, run.opened) == (1, 0, 0)


def test_amount_tolerance_edges(store: Store) -> None:
    h = harness(store)
    h.send(
        *order_flow(1, DAY_AGO, amount=100.0, invoiced_amount=100.50),  # +0.5%: at the tolerance
        *order_flow(2, DAY_AGO, amount=100.0, invoiced_amount=99.50),  # -0.5%
        *order_flow(3, DAY_AGO, amount=100.0, invoiced_amount=100.51),  # +0.51%: 0.01% beyond
        *order_flow(4, DAY_AGO, amount=100.0, invoiced_amount=99.49),
        *order_flow(5, DAY_AGO, amount=1234.56, invoiced_amount=1240.73),  # +0.4998%
        *order_flow(6, DAY_AGO, amount=1234.56, invoiced_amount=1240.74),  # +0.5006%
    )
    h.run()
    active = h.active("invoice-match")
    assert set(active) == {"IN-3", "IN-4", "IN-6"}
    finding = active["IN-3"]
    assert finding.owner == "finance" and finding.severity == "high" and finding.kind == "business"
    assert finding.context["check"] == ["amount"]
    assert finding.context["invoice"]["amount"] == "100.51" and finding.context["order"]["amount"] == "100.00"
    assert finding.context["differences"]["amount"] == "0.51" and finding.context["differences"]["amount_pct"] == 0.51
    assert finding.context["summary"] == "IN-3: invoiced 100.51 vs order 100.00 USD (tolerance 0.5%)"
    assert (finding.context["order_id"], finding.context["customer_id"], finding.context["warehouse"]) == (
        "SO-3",
        "C-3",
        "DAL",
    )


def test_quantity_tolerance_edges(store: Store) -> None:
    h = harness(store, quantity_tolerance=1)
    h.send(
        *order_flow(1, DAY_AGO, shipped=5, invoiced_quantity=6),  # at the tolerance
        *order_flow(2, DAY_AGO, shipped=5, invoiced_quantity=7),  # one unit beyond
        *order_flow(3, DAY_AGO, shipped=5, invoiced_quantity=3),
    )
    h.run()
    active = h.active("invoice-match")
    assert set(active) == {"IN-2", "IN-3"}
    assert active["IN-2"].context["check"] == ["quantity"]
    assert active["IN-2"].context["summary"] == "IN-2: invoiced 7 units vs shipped 5 (tolerance 1)"
    assert active["IN-2"].context["shipped"]["shipment_ids"] == ["SH-2"]


def test_an_invoice_naming_another_orders_shipment_is_compared_with_its_own_orders_shipments(store: Store) -> None:
    h = harness(store)
    h.send(
        *order_flow(1, DAY_AGO, shipped=5, invoiced_quantity=5),
        *order_flow(2, DAY_AGO, shipped=9, invoiced_amount=None),
    )
    # SO-2 shipped 9 units as SH-2; its invoice names SO-1's shipment SH-1 (5 units) and bills 5
    h.send(invoice(DAY_AGO + timedelta(hours=3), 2, shipment_id="SH-1"))
    h.run()
    active = h.active("invoice-match")
    assert set(active) == {"IN-2"}
    assert active["IN-2"].context["check"] == ["quantity"]
    assert active["IN-2"].context["summary"] == "IN-2: invoiced 5 units vs shipped 9 (tolerance 0)"
    assert active["IN-2"].context["shipped"]["shipment_ids"] == ["SH-2"]


def test_one_exception_per_invoice_with_every_failed_check(store: Store) -> None:
    h = harness(store)
    h.send(*order_flow(1, DAY_AGO, amount=100.0, invoiced_amount=110.0, shipped=5, invoiced_quantity=4))
    h.run()
    (finding,) = h.active("invoice-match").values()
    assert finding.key == "IN-1" and finding.context["check"] == ["amount", "quantity"]


def test_a_currency_mismatch_is_not_compared_as_an_amount(store: Store) -> None:
    h = harness(store)
    h.send(*order_flow(1, DAY_AGO, amount=100.0, invoiced_amount=100.0, currency="EUR"))
    h.run()
    assert h.active("invoice-match")["IN-1"].context["check"] == ["currency"]


def test_an_invoice_missing_its_amount_currency_or_quantity_cannot_pass_unseen(store: Store) -> None:
    h = harness(store)
    flows = [order_flow(n, DAY_AGO) for n in (1, 2, 3)]
    no_amount, no_currency_quantity = flows[1][-1], flows[2][-1]
    del no_amount["data"]["amount"]
    del no_currency_quantity["data"]["currency"], no_currency_quantity["data"]["quantity"]  # currency: not a finding
    h.send(*(event for flow in flows for event in flow))
    h.run()
    active = h.active("invoice-match")
    assert set(active) == {"IN-2", "IN-3"}
    assert active["IN-2"].context["check"] == ["incomplete"]
    assert active["IN-2"].context["invoice"]["missing"] == ["amount"]
    assert active["IN-2"].context["summary"] == "IN-2: the invoice has no amount: it cannot be compared"
    assert active["IN-3"].context["invoice"]["missing"] == ["quantity"]

    h.later()
    h.send(business("invoice.posted", DAY_AGO + timedelta(hours=3), **{**no_amount["data"], "amount": 100.0}))
    run = h.run()
    assert run.resolved == 1 and set(h.active("invoice-match")) == {"IN-3"}


def test_invoiced_but_never_shipped_after_the_grace_period(store: Store) -> None:
    h = harness(store, unmatched_after="2h")
    h.send(
        business("order.accepted", NOW - timedelta(hours=5), order_id="SO-1", customer_id="C-1", amount=50.0),
        invoice(NOW - timedelta(hours=2), 1, shipment_id=None, amount=50.0, quantity=1, currency=None),
        business("order.accepted", NOW - timedelta(hours=5), order_id="SO-2", customer_id="C-2", amount=50.0),
        invoice(NOW - timedelta(hours=1, minutes=59), 2, shipment_id=None, amount=50.0, quantity=1, currency=None),
    )
    h.run()
    active = h.active("invoice-match")
    assert set(active) == {"IN-1"}  # IN-2 is inside the grace period (the shipment may be on its way)
    assert active["IN-1"].context["check"] == ["not-shipped"]

    h.later(timedelta(minutes=1))
    h.send(
        business(
            "shipment.confirmed",
            NOW - timedelta(hours=3),
            "wms/dallas",
            order_id="SO-1",
            shipment_id="SH-1",
            quantity=1,
        )
    )
    run = h.run()  # IN-1 is shipped now (the quantity it invoiced was shipped); IN-2 is past the grace
    assert run.resolved == 1 and set(h.active("invoice-match")) == {"IN-2"}


def test_an_invoice_without_an_accepted_order(store: Store) -> None:
    h = harness(store)
    h.send(
        business("shipment.confirmed", DAY_AGO, "wms/dallas", order_id="SO-1", shipment_id="SH-1", quantity=2),
        invoice(DAY_AGO, 1, amount=20, quantity=2, currency=None),
    )
    h.run()
    finding = h.active("invoice-match")["IN-1"]
    assert finding.context["check"] == ["no-order"]
    assert finding.context["summary"] == "IN-1: no accepted order SO-1"


def test_shipped_but_never_invoiced_after_the_grace_period(store: Store) -> None:
    h = harness(store, uninvoiced_after="7d")
    week = NOW - timedelta(days=7)
    h.send(
        *order_flow(1, week - timedelta(hours=1), invoiced_amount=None),  # shipped exactly 7 days ago
        *order_flow(2, week - timedelta(minutes=59), invoiced_amount=None),  # 6d23h59m ago
        *order_flow(3, week - timedelta(days=2)),  # invoiced
    )
    run = h.run()
    active = h.active("invoice-match")
    assert set(active) == {"SO-1"}
    finding = active["SO-1"]
    assert finding.context["check"] == ["not-invoiced"] and finding.context["shipped"]["shipment_ids"] == ["SH-1"]
    assert run.rows_compared == 3  # one invoice, two shipped orders without one

    h.later(timedelta(seconds=30))  # SO-2 is still inside its 7 days
    h.send(invoice(h.clock.now(), 1, currency=None))
    run = h.run()
    assert run.resolved == 1 and h.active("invoice-match") == {}
    record = h.exceptions.get(finding.id)
    assert record.resolution == RECONCILED
    assert h.exceptions.audit(finding.id)[-1]["detail"]["values"]["invoiced"]["invoice_ids"] == ["IN-1"]


def test_an_order_whose_shipments_shipped_nothing_is_not_revenue_never_billed(store: Store) -> None:
    h = harness(store)
    week = NOW - timedelta(days=8)
    h.send(
        *order_flow(1, week, shipped=0, invoiced_amount=None),  # confirmed with nothing on it
        *order_flow(2, week, shipped=4, invoiced_amount=None),
        *order_flow(3, week, shipped=6, invoiced_amount=None),
    )
    h.run()
    assert set(h.active("invoice-match")) == {"SO-2", "SO-3"}

    # SH-3 corrected to 0 units (the shipment was reversed): nothing to bill, the finding resolves
    h.later()
    h.send(
        business(
            "shipment.confirmed", week + timedelta(hours=1), "wms", order_id="SO-3", shipment_id="SH-3", quantity=0
        )
    )
    run = h.run()
    assert run.resolved == 1 and set(h.active("invoice-match")) == {"SO-2"}


def test_a_shipment_without_a_quantity_makes_what_the_order_shipped_unknown(store: Store) -> None:
    """SO-1 shipped SH-1a with no quantity and SH-1b with 0 units: not nothing shipped (never invoiced is a
    finding). SO-2's invoice bills 8 units over SH-2a (5) and SH-2b (no quantity): 8 against 5 is not compared."""
    h = harness(store)
    week = NOW - timedelta(days=8)
    h.send(
        business("order.accepted", week, order_id="SO-1", customer_id="C-1", amount=100.0, currency="USD"),
        business("shipment.confirmed", week, "wms", order_id="SO-1", shipment_id="SH-1a"),
        business("shipment.confirmed", week, "wms", order_id="SO-1", shipment_id="SH-1b", quantity=0),
        business("order.accepted", DAY_AGO, order_id="SO-2", customer_id="C-2", amount=100.0, currency="USD"),
        business("shipment.confirmed", DAY_AGO, "wms", order_id="SO-2", shipment_id="SH-2a", quantity=5),
        business("shipment.confirmed", DAY_AGO, "wms", order_id="SO-2", shipment_id="SH-2b"),
        invoice(DAY_AGO, 2, shipment_id=None, quantity=8),
    )
    run = h.run()
    active = h.active("invoice-match")
    assert set(active) == {"SO-1"} and run.rows_compared == 2
    assert active["SO-1"].context["check"] == ["not-invoiced"]
    assert active["SO-1"].context["shipped"]["quantity"] is None


def test_an_order_invoiced_in_parts_matches_when_the_parts_add_up(store: Store) -> None:
    h = harness(store)
    accepted = DAY_AGO
    h.send(
        business("order.accepted", accepted, order_id="SO-1", customer_id="C-1", amount=100.0, currency="USD"),
        business("shipment.confirmed", accepted, "wms", order_id="SO-1", shipment_id="SH-1a", quantity=3),
        business("shipment.confirmed", accepted, "wms", order_id="SO-1", shipment_id="SH-1b", quantity=2),
        invoice(accepted, "1a", order_id="SO-1", amount=60, quantity=3, currency=None),
    )
    h.run()
    finding = h.active("invoice-match")["IN-1a"]  # 60 of 100 invoiced so far
    assert finding.context["check"] == ["amount"] and finding.context["invoiced"]["amount"] == "60.00"

    h.later()
    h.send(invoice(accepted, "1b", order_id="SO-1", amount=40, quantity=2, currency=None))
    run = h.run()
    assert run.resolved == 1 and h.active("invoice-match") == {}


def test_an_invoice_in_another_currency_does_not_count_towards_the_orders_amount(store: Store) -> None:
    """USD 60 and CAD 40 against a USD 100 order: 60 USD are billed, not 100 (the CAD one is its own finding)."""
    h = harness(store)
    accepted = DAY_AGO
    h.send(
        business("order.accepted", accepted, order_id="SO-1", customer_id="C-1", amount=100.0, currency="USD"),
        business("shipment.confirmed", accepted, "wms", order_id="SO-1", shipment_id="SH-1a", quantity=3),
        business("shipment.confirmed", accepted, "wms", order_id="SO-1", shipment_id="SH-1b", quantity=2),
        invoice(accepted, "1a", order_id="SO-1", amount=60, quantity=3),
        invoice(accepted, "1b", order_id="SO-1", amount=40, quantity=2, currency="CAD"),
    )
    h.run()
    active = h.active("invoice-match")
    assert active["IN-1b"].context["check"] == ["currency"]
    usd = active["IN-1a"].context
    assert usd["check"] == ["amount"] and usd["invoiced"]["amount"] == "60.00"


def test_a_corrected_invoice_resolves_and_a_redelivery_changes_nothing(store: Store) -> None:
    h = harness(store)
    flow = order_flow(1, DAY_AGO, invoiced_amount=130.0)
    h.send(*flow)
    h.store.insert("business_events", [event_row(flow[-1])])  # the same invoice event delivered twice
    h.run()
    (finding,) = h.active("invoice-match").values()
    assert finding.context["invoiced"]["amount"] == "130.00"  # counted once

    h.later()
    h.send(invoice(DAY_AGO + timedelta(hours=3), 1))  # the ERP's correction, newer
    assert h.run().resolved == 1


def test_a_wrongly_resolved_invoice_finding_is_reopened(store: Store) -> None:
    h = harness(store)
    h.send(*order_flow(1, DAY_AGO, invoiced_amount=90.0))
    h.run()
    (finding,) = h.active("invoice-match").values()
    h.later()
    h.exceptions.resolve(finding.id, "finance-bob", note="credit note issued")  # none arrived
    h.later()
    run = h.run()
    assert run.reopened == 1 and h.exceptions.get(finding.id).status == "open"
    assert "invoiced 90.00 vs order 100.00 USD" in h.exceptions.audit(finding.id)[-1]["detail"]["reason"]


def test_documents_older_than_the_lookback_are_ignored(store: Store) -> None:
    h = harness(store, lookback="10d", uninvoiced_after="7d")
    h.send(*order_flow(1, NOW - timedelta(days=11), invoiced_amount=50.0))
    h.send(*order_flow(2, NOW - timedelta(days=11), invoiced_amount=None))
    run = h.run()
    assert run.rows_compared == 0 and h.active("invoice-match") == {}


def test_documents_computed_once_or_again_find_the_same(store: Store) -> None:
    """The statement with materialized CTEs (the embedded engine has them) answers exactly what it answers
    with plain ones (what an older ClickHouse server runs)."""
    assert materialized_cte(store)
    h = harness(store)
    h.send(
        *order_flow(1, DAY_AGO),  # agrees
        *order_flow(2, DAY_AGO, invoiced_amount=110.0, invoiced_quantity=4),  # amount and quantity
        *order_flow(3, DAY_AGO, currency="EUR"),
        *order_flow(4, NOW - timedelta(days=8), invoiced_amount=None),  # never invoiced
        business(
            "invoice.posted", DAY_AGO, invoice_id="IN-5", order_id="SO-5", amount=10.0
        ),  # no order, not shipped, no quantity
    )
    redelivered = order_flow(6, DAY_AGO, invoiced_amount=130.0)
    h.send(*redelivered)
    h.store.insert("business_events", [event_row(redelivered[-1])])
    context = RunContext("t", NOW, ("invoice-match",), lambda phase, message: None)
    answers = [InvoiceReconciler(store, invoice_rule(), way).compare(context)[0] for way in (True, False)]
    once, again = ({o.key: (o.values, o.route, o.summary) for o in a.differing} for a in answers)
    assert answers[0].compared == answers[1].compared == 6
    assert once["IN-6"][0]["invoiced"]["amount"] == "130.00"  # the redelivered invoice counted once
    assert once == again
    assert {key: values["check"] for key, (values, _, _) in once.items()} == {
        "IN-2": ["amount", "quantity"],
        "IN-3": ["currency"],
        "SO-4": ["not-invoiced"],
        "IN-5": ["not-shipped", "no-order", "incomplete"],
        "IN-6": ["amount"],
    }


@pytest.mark.parametrize("ids", [("z-accepted", "a-amended"), ("a-accepted", "z-amended")])
def test_an_order_amended_with_the_same_time_is_matched_as_amended_however_the_store_merges(
    store: Store, ids: tuple[str, str]
) -> None:
    """The ERP re-sends an order it amended (120.00 EUR instead of 100.00 USD) with the acceptance's time under
    a new id: the later arrival is the order, before and after the store merges its parts (which order rows
    by id)."""
    h = harness(store)
    flow = order_flow(1, DAY_AGO, amount=120.0, invoiced_amount=120.0, currency="EUR")
    accepted, rest = flow[0], flow[1:]
    h.send({**accepted, "id": ids[0], "data": {**accepted["data"], "amount": 100.0, "currency": "USD"}})
    h.later()
    h.send({**accepted, "id": ids[1], "data": {**accepted["data"], "currency": "EUR"}}, *rest)
    for merge in (False, True):
        if merge:
            store.command("OPTIMIZE TABLE business_events FINAL")
        h.later()
        run = h.run()
        assert [e.context["summary"] for e in h.all("invoice-match")] == [], merge
        assert run.findings == 0


def test_another_systems_documents_cannot_amend_an_order_a_shipment_or_an_invoice(store: Store) -> None:
    """The ERP's order at 100.00 and invoice at 150.00 differ: a WMS token's order.accepted at 150.00, a TMS
    token's shipment and an EDI token's invoice (each later, so each would be the latest) change nothing."""
    h = harness(store)
    h.send(*order_flow(1, DAY_AGO, amount=100.0, invoiced_amount=150.0))
    h.run()
    assert h.active("invoice-match")["IN-1"].context["check"] == ["amount"]

    h.later()
    at = DAY_AGO + timedelta(hours=3)
    h.send(
        business("order.accepted", at, "wms", order_id="SO-1", customer_id="C-1", amount=150.0, currency="USD"),
        business("shipment.confirmed", at, "tms", order_id="SO-1", shipment_id="SH-1", quantity=9),
        business("invoice.posted", at, "edi/partner", invoice_id="IN-2", order_id="SO-1", amount=-50.0, quantity=0),
    )
    run = h.run()
    assert (run.resolved, run.opened) == (0, 0)
    (finding,) = h.active("invoice-match").values()
    assert finding.context["check"] == ["amount"] and finding.context["order"]["amount"] == "100.00"
    assert finding.context["shipped"]["quantity"] == 5 and finding.context["invoiced"]["invoice_ids"] == ["IN-1"]


def test_the_systems_each_document_is_read_from_are_params(store: Store) -> None:
    """Orders relayed by the middleware: `sources.orders` names it (a system covers its paths)."""
    h = harness(store, sources={"orders": ["erp", "middleware"]})
    h.send(*order_flow(1, DAY_AGO, amount=100.0, invoiced_amount=150.0))
    h.run()
    h.later()
    h.send(
        business(
            "order.accepted",
            DAY_AGO + timedelta(hours=3),
            "middleware/relay",
            order_id="SO-1",
            customer_id="C-1",
            amount=150.0,
        )
    )
    assert h.run().resolved == 1
    config = invoice_rule().params
    assert config.sources.orders == ["erp"] and config.sources.shipments == ["wms"]  # type: ignore[union-attr]
    assert config.sources.invoices == ["erp"]  # type: ignore[union-attr]
