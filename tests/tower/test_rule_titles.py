"""Every rule an exception can be opened under has a title, the reconcilers' secondary finding rules
(inventory-oversell, inventory-stale) included: in the Slack alert (through the real slack-sdk client and the
stand-in), in `GET /api/exceptions/{id}` and in `GET /api/facets`; and a reconciliation alert says what was found."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from alerting.standin import SlackStandIn
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionFilter, ExceptionStore
from kernel.store import Store
from reconcilers.config import OVERSELL_TITLE, STALE_TITLE
from sla_rules.loader import RuleSet, default_routing_file, load_routing
from sla_rules.model import ReconciliationRule
from tests.alerting.delivery_support import T0, drain, sender_for, slack_settings
from tests.factories import event_row
from tests.reconcilers.factories import order_flow, snapshot
from tests.support import start_in_process
from tower.insights import rule_infos

SYNC_TITLE = "ERP and WMS inventory agree"  # the shipped rule files' titles
INVOICE_TITLE = "Invoice matches the order and the shipment"


def seed(store: Store) -> None:
    """At T0: SKU-1@DAL counted 7 in Dallas, 10 in the ERP and sold as 10 by the storefront (a difference and an
    oversell); Reno's WMS last counted 3 hours ago (stale); an invoice billed 20% over its order."""
    recent = T0 - timedelta(minutes=5)
    events = [
        snapshot("erp", "SKU-1", "DAL", 10, recent),
        snapshot("wms/dallas", "SKU-1", "DAL", 7, recent),
        snapshot("ecommerce", "SKU-1", "DAL", 10, recent),
        snapshot("erp", "SKU-2", "RNO", 4, recent),
        snapshot("wms/reno", "SKU-2", "RNO", 4, T0 - timedelta(hours=3)),
        *order_flow(1, T0 - timedelta(days=1), invoiced_amount=120.0),
    ]
    store.insert("business_events", [event_row(e) for e in events])


def posts_by_exception(standin: SlackStandIn, channels: list[str]) -> dict[str, dict[str, Any]]:
    """The top-level messages the stand-in holds in `channels`, by the exception their outbox key names."""
    found: dict[str, dict[str, Any]] = {}
    for channel in channels:
        for message in standin.messages(channel):
            key = str(message.get("metadata", {}).get("event_payload", {}).get("key", ""))
            if key.startswith("exc:") and key.endswith(":post"):
                found[key.split(":")[1]] = message
    return found


def test_reconciliation_findings_are_titled_and_say_what_was_found(
    store: Store, tmp_path: Path, clock: FixedClock, standin: SlackStandIn
) -> None:
    seed(store)
    with start_in_process(tmp_path, store, clock=clock) as tower:
        assert tower.tower is not None and tower.tower.alerts is not None
        with tower.api("admin") as http:
            answer = http.post("/api/reconcile/run")
            assert answer.status_code == 200, answer.text
        opened, _ = ExceptionStore(store, clock).search(ExceptionFilter(), limit=100)
        records = {r.rule: r for r in opened}
        assert set(records) == {"inventory-sync", "inventory-oversell", "inventory-stale", "invoice-match"}
        assert records["inventory-stale"].key == "wms/reno"

        tower.tower.alerts.run()
        drain(sender_for(store, clock, slack_settings(standin)), clock)
        posts = posts_by_exception(standin, ["#ops-warehouse", "#finance-ops", "#integration-oncall"])
        expected = {
            "inventory-sync": (SYNC_TITLE, "erp 10 vs wms/dallas 7 (difference 3, tolerance 0)"),
            "inventory-oversell": (OVERSELL_TITLE, "sellable 10 on ecommerce, 7 available in wms/dallas"),
            "inventory-stale": (STALE_TITLE, "last inventory snapshot"),
            "invoice-match": (INVOICE_TITLE, "invoiced 120"),
        }
        for rule, (title, found) in expected.items():
            record = records[rule]
            post = posts[record.id]
            header = post["blocks"][0]["text"]["text"]
            fields = [f["text"] for f in post["blocks"][1]["fields"]]
            finding = next(f for f in fields if f.startswith("*Finding*\n"))
            assert (header, found in finding) == (title, True), (rule, header, fields)
            assert post["text"].startswith(f"[{record.severity}] {title}: {record.key} ({record.owner}) — "), rule
            assert found in post["text"], rule

        with tower.api("viewer") as http:
            for rule, (title, _) in expected.items():
                detail = http.get(f"/api/exceptions/{records[rule].id}").json()
                assert detail["rule_title"] == title, rule
            facets = http.get("/api/facets").json()
    listed = {r["id"]: r for r in facets["rules"]}
    assert [r["id"] for r in facets["rules"]] == sorted(listed)
    assert listed["inventory-oversell"] == {
        "id": "inventory-oversell",
        "title": OVERSELL_TITLE,
        "type": "reconciliation",
        "kind": "business",
        "owner": "warehouse",
        "severity": "medium",
        "enabled": True,
    }
    assert listed["inventory-stale"] == {
        "id": "inventory-stale",
        "title": STALE_TITLE,
        "type": "reconciliation",
        "kind": "technical",
        "owner": "integration",
        "severity": "medium",
        "enabled": True,
    }
    assert listed["inventory-sync"]["title"] == SYNC_TITLE and listed["invoice-match"]["title"] == INVOICE_TITLE


def inventory(rule_id: str, enabled: bool = True, **params: Any) -> ReconciliationRule:
    """An inventory reconciliation rule with a runbook, as a rule file gives it."""
    return ReconciliationRule(
        id=rule_id,
        title=f"{rule_id} agree",
        kind="business",
        owner="warehouse",
        severity="high",
        enabled=enabled,
        runbook="https://wiki.example.com/inventory",
        compare="inventory",
        params=params,
    )


def test_finding_rules_take_their_rules_titles_runbook_and_switch() -> None:
    routing = load_routing(default_routing_file())
    store_stock = inventory(
        "store-stock",
        enabled=False,
        sources=["erp", "ecommerce"],
        stale_rule="store-stock-stale",
        stale_title="Store stock counts stopped",
    )
    infos = {r.id: r for r in rule_infos(RuleSet([inventory("inventory-sync", oversell={}), store_stock], routing))}
    assert sorted(infos) == [
        "inventory-oversell",
        "inventory-stale",
        "inventory-sync",
        "store-stock",
        "store-stock-stale",
    ]
    oversell, stale, other = infos["inventory-oversell"], infos["inventory-stale"], infos["store-stock-stale"]
    assert (oversell.title, oversell.opened_by, oversell.severity) == (OVERSELL_TITLE, "inventory-sync", "high")
    assert (stale.title, stale.kind, stale.owner) == (STALE_TITLE, "technical", "integration")
    assert stale.runbook == "https://wiki.example.com/inventory" and stale.enabled
    assert (other.title, other.opened_by, other.enabled) == ("Store stock counts stopped", "store-stock", False)
    without = RuleSet([inventory("inventory-sync")], routing)  # no oversell: no such finding rule
    assert [r.id for r in rule_infos(without)] == ["inventory-stale", "inventory-sync"]
