"""Owner routes on the fields an SLA case carries (its key under the key's name, source, warehouse, customer),
in the engine's exceptions and in the breach report's owner of a case without one."""

from __future__ import annotations

from datetime import timedelta

from kernel.store import Store
from sla_rules.breaches import BreachQuery
from sla_rules.routing import Routing
from tests.sla_rules.test_engine import RULES, T0, Harness, event

ROUTING = Routing.model_validate(
    {
        "routes": [
            {"match": {"rule": "order-release", "order_id": "SO-1"}, "owner": "order-desk"},
            {"match": {"rule": "asn-sent", "shipment_id": "SH-2"}, "owner": "asn-desk"},
            {"match": {"customer_id": "C-3", "warehouse": "DAL", "source": "erp"}, "owner": "key-accounts"},
        ]
    }
)


def test_routes_match_the_cases_key_and_fields(store: Store) -> None:
    tower = Harness(store, rules=[RULES["order-release"], RULES["asn-sent"]])
    tower.engine.owner_for = ROUTING.owner_for
    tower.send(
        *(event("order.accepted", n, T0) for n in (1, 2, 3)),
        *(event("shipment.confirmed", n, T0) for n in (1, 2)),
    )
    tower.at(T0 + timedelta(hours=3))
    tower.evaluate()
    owners = {(e.rule, e.key): e.owner for e in tower.open_exceptions()}
    assert owners == {
        ("order-release", "SO-1"): "order-desk",
        ("order-release", "SO-2"): "customer_service",
        ("order-release", "SO-3"): "key-accounts",
        ("asn-sent", "SH-1"): "transportation",
        ("asn-sent", "SH-2"): "asn-desk",
    }
    (asn,) = [e for e in tower.open_exceptions("asn-sent") if e.key == "SH-2"]
    assert {k: asn.context[k] for k in ("shipment_id", "source", "warehouse")} == {
        "shipment_id": "SH-2",  # alert routes match the exception's context: they see the key too
        "source": "wms",
        "warehouse": "DAL",
    }


def test_the_breach_report_routes_a_case_without_exception_the_same_way(store: Store) -> None:
    rule = RULES["order-release"]
    tower = Harness(store, rules=[rule])
    # first seen already late (backfilled history): no exception, so the report asks the routing
    tower.send(
        *(event("order.accepted", n, T0) for n in (1, 2)),
        *(event("order.released", n, T0 + timedelta(hours=3)) for n in (1, 2)),
    )
    tower.at(T0 + timedelta(hours=4))
    tower.evaluate()
    assert tower.all_exceptions() == []
    query = BreachQuery(store, {rule.id: rule}, ROUTING.owner_for)
    breaches = query.breaches(T0, T0 + timedelta(days=1), T0 + timedelta(hours=4))
    assert {b.key: (b.status, b.owner) for b in breaches} == {
        "SO-1": ("late", "order-desk"),
        "SO-2": ("late", "customer_service"),
    }
