"""The demo distributor's history (collector/demo), every delivery stored as the collector stores it, then
reconciled with the shipped rules at the manifest's `now`: the injected inventory and invoice faults are found
exactly, and nothing else; a week later, the orders never invoiced are found too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from collector.demo.scenario import Scenario, ScenarioConfig, build_scenario
from kernel.clock import FixedClock
from kernel.store import Store
from reconcilers.config import rule_config
from sla_rules.loader import default_rules_dir, load_rules
from sla_rules.model import ReconciliationRule
from tests.factories import event_row
from tests.reconcilers.factories import Harness

WEDNESDAY = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def story() -> Scenario:
    scenario = build_scenario(ScenarioConfig(seed=21, orders=80, skus=3), FixedClock(WEDNESDAY))
    assert scenario.shortfall == {}
    return scenario


def shipped_rules() -> list[Any]:
    rules = [r for r in load_rules(default_rules_dir()) if isinstance(r, ReconciliationRule)]
    return [rule_config(r.id, r.title, r.kind, r.owner, r.severity, r.compare, r.params) for r in rules]


def load(store: Store, story: Scenario) -> None:
    """Every delivered event (redeliveries and out-of-order ones included), as the collector stores them."""
    rows = [event_row(e.cloudevent(), received_at=d.at) for d in story.deliveries for e in d.events]
    for start in range(0, len(rows), 20_000):
        store.insert("business_events", rows[start : start + 20_000])


def fault_keys(story: Scenario, rule: str) -> set[str]:
    return {f["key"] for f in story.manifest()["faults"] if f["rule"] == rule and f["expected"] != "none"}


def test_the_demo_inventory_and_invoice_faults_and_nothing_else(store: Store, story: Scenario) -> None:
    load(store, story)
    h = Harness(store, *shipped_rules(), at=story.now)
    inventory, invoice = h.service.run()
    assert inventory.status == invoice.status == "ok"

    drift = fault_keys(story, "inventory-sync")
    assert len(drift) == 2
    assert set(h.active("inventory-sync")) == drift
    # the demo's eCommerce sells the ERP's quantity: where the WMS counts fewer, that is an oversell risk
    short = {f"{sku}@{location}" for (sku, location), (_, delta) in story.world.drift.items() if delta < 0}
    assert len(short) == 1 and set(h.active("inventory-oversell")) == short
    assert fault_keys(story, "inventory-oversell") == short  # the manifest lists it as an injected fault too
    assert h.active("inventory-stale") == {}
    pairs = len({e.subject for e in story.events if e.type == "inventory.snapshot"})
    assert inventory.rows_compared == pairs == 3 * 3

    for key, finding in h.active("inventory-sync").items():
        sku, location = key.split("@")
        since, delta = story.world.drift[(sku, location)]
        erp, wms = finding.context["sides"]
        assert wms["quantity"] - erp["quantity"] == delta
        assert finding.owner == "warehouse" and finding.context["warehouse"] == location

    mismatches = fault_keys(story, "invoice-match")
    assert len(mismatches) == 4
    assert set(h.active("invoice-match")) == mismatches
    details = {f.key: f.detail for f in story.faults if f.rule == "invoice-match"}
    for key, finding in h.active("invoice-match").items():
        check = "quantity" if "units" in details[key] else "amount"
        assert finding.context["check"] == [check], (key, details[key])
    assert invoice.rows_compared == sum(1 for e in story.events if e.type == "invoice.posted") + len(
        {e.data["order_id"] for e in story.events if e.type == "shipment.confirmed"}
        - {e.data["order_id"] for e in story.events if e.type == "invoice.posted"}
    )


def test_a_week_later_the_orders_never_invoiced_are_found(store: Store, story: Scenario) -> None:
    load(store, story)
    h = Harness(store, *shipped_rules(), at=story.now + timedelta(days=7))
    h.run("invoice-match")
    never = {
        p.order_id
        for p in story.orders
        if p.shipped is not None and p.shipped <= story.now and (p.invoiced is None or p.invoiced > story.now)
    }
    missing = fault_keys(story, "invoice-posting")  # the demo's invoices that were never posted
    assert missing and missing <= never
    found = h.active("invoice-match")
    assert set(found) == never | fault_keys(story, "invoice-match")
    assert all(found[key].context["check"] == ["not-invoiced"] for key in never)
