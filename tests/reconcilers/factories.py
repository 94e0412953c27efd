"""Test helpers for the reconcilers: events by business time, rule configs, and a harness that runs
reconciliation on a fixed clock against the real store."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kernel.clock import FixedClock
from kernel.exceptions import ExceptionFilter, ExceptionRecord, ExceptionStore
from kernel.store import Store
from reconcilers.config import FindingRule, RuleConfig, rule_config
from reconcilers.model import ProgressEvent
from reconcilers.runs import RunRecord
from reconcilers.service import ReconcileService
from reconcilers.settings import ReconcileSettings
from tests.factories import event_row, make_event

# A Monday, 18:00 UTC.
NOW = datetime(2026, 11, 2, 18, 0, tzinfo=UTC)
_ids = itertools.count(1)


def owner_of(rule: FindingRule, data: Mapping[str, str]) -> str:
    """Reno's findings go to their own team (so tests see the routing data), technical ones to integration."""
    if rule.kind == "technical":
        return "integration"
    return f"{rule.owner}-reno" if data.get("warehouse") == "RNO" else rule.owner


def snapshot(source: str, sku: str, location: str, quantity: float, at: datetime, **data: Any) -> dict[str, Any]:
    """An inventory.snapshot CloudEvent."""
    body = {"sku": sku, "location": location, "quantity": quantity, **data}
    return make_event(
        "inventory.snapshot",
        next(_ids),
        source=source,
        time=at.isoformat(),
        data=body,
        merge_data=False,
        subject=f"{sku}@{location}",
    )


def business(event_type: str, at: datetime, source: str | None = None, **data: Any) -> dict[str, Any]:
    """A business event of `event_type` at `at` with exactly `data`."""
    overrides: dict[str, Any] = {"time": at.isoformat(), "data": data, "merge_data": False}
    if source is not None:
        overrides["source"] = source
    return make_event(event_type, next(_ids), **overrides)


def invoice(at: datetime, n: int | str, **data: Any) -> dict[str, Any]:
    """`invoice.posted` IN-n of SO-n for shipment SH-n (100.00 USD, 5 units) from the ERP; `data` overrides or adds,
    a value of None leaves the key out."""
    body: dict[str, Any] = {
        "invoice_id": f"IN-{n}",
        "order_id": f"SO-{n}",
        "shipment_id": f"SH-{n}",
        "amount": 100.0,
        "quantity": 5,
        "currency": "USD",
    }
    body.update(data)
    return business("invoice.posted", at, "erp", **{k: v for k, v in body.items() if v is not None})


def order_flow(
    n: int,
    at: datetime,
    amount: float = 100.0,
    shipped: float | None = 5,
    invoiced_amount: float | None = 100.0,
    invoiced_quantity: float | None = 5,
    currency: str = "USD",
) -> list[dict[str, Any]]:
    """Order SO-n accepted at `at`, shipped (SH-n) an hour later, invoiced (IN-n) two hours later; None skips."""
    order, shipment, invoice = f"SO-{n}", f"SH-{n}", f"IN-{n}"
    events = [
        business(
            "order.accepted",
            at,
            order_id=order,
            customer_id=f"C-{n}",
            amount=amount,
            currency="USD",
            warehouse="DAL",
        )
    ]
    if shipped is not None:
        events.append(
            business(
                "shipment.confirmed",
                at + timedelta(hours=1),
                "wms/dallas",
                order_id=order,
                shipment_id=shipment,
                quantity=shipped,
                warehouse="DAL",
            )
        )
    if invoiced_amount is not None:
        data: dict[str, Any] = {"invoice_id": invoice, "order_id": order, "amount": invoiced_amount}
        data["currency"] = currency
        if shipped is not None:
            data["shipment_id"] = shipment
        if invoiced_quantity is not None:
            data["quantity"] = invoiced_quantity
        events.append(business("invoice.posted", at + timedelta(hours=2), "erp", **data))
    return events


def inventory_rule(**params: Any) -> RuleConfig:
    """The shipped inventory-sync rule with `params` over its defaults (oversell on unless given)."""
    base: dict[str, Any] = {"sources": ["erp", "wms"], "tolerance": 0, "stale_after": "2h", "oversell": {}}
    base.update(params)
    return rule_config("inventory-sync", "ERP and WMS agree", "business", "warehouse", "medium", "inventory", base)


def invoice_rule(**params: Any) -> RuleConfig:
    """The shipped invoice-match rule with `params` over its defaults."""
    base: dict[str, Any] = {"amount_tolerance_pct": 0.5, "quantity_tolerance": 0}
    base.update(params)
    return rule_config("invoice-match", "Invoice matches", "business", "finance", "high", "invoice", base)


class Harness:
    """A ReconcileService on a fixed clock over the real store."""

    def __init__(
        self, store: Store, *configs: RuleConfig, at: datetime = NOW, settings: ReconcileSettings | None = None
    ) -> None:
        self.store = store
        self.clock = FixedClock(at)
        self.exceptions = ExceptionStore(store, self.clock)
        self.service = ReconcileService(
            store, self.exceptions, self.clock, list(configs) or [inventory_rule()], owner_of, settings
        )
        self.progress: list[ProgressEvent] = []

    def send(self, *events: dict[str, Any]) -> None:
        """Store events as the collector does."""
        self.store.insert("business_events", [event_row(e, received_at=self.clock.now()) for e in events])

    def run(self, rule: str | None = None) -> RunRecord:
        """Run one rule (the first when None); the run must succeed."""
        records = self.service.run(rule or self.service.rules[0], progress=self.progress.append)
        assert len(records) == 1
        record = records[0]
        assert record.status == "ok", record.error
        return record

    def active(self, rule: str) -> dict[str, ExceptionRecord]:
        """Active exceptions of a finding rule by key."""
        return self.exceptions.active_by_key(rule)

    def all(self, rule: str) -> list[ExceptionRecord]:
        """Every exception of a finding rule, any status."""
        records, total = self.exceptions.search(ExceptionFilter(rule=rule), limit=1000)
        assert len(records) == total
        return records

    def later(self, delta: timedelta = timedelta(minutes=5)) -> datetime:
        """Move the clock on; the new now."""
        self.clock.advance(delta)
        return self.clock.now()
