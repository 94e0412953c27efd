"""`GET /api/sla/summary` and sla_rules.summary over hand-built `sla_cases` rows."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kernel.store import Store
from sla_rules.summary import RuleSummary, sla_summary
from tests.support import RunningTower

START = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
_version = itertools.count(1)


def case(rule: str, key: str, status: str, started: datetime, version: int | None = None) -> dict[str, Any]:
    """One sla_cases row as the engine writes it."""
    return {
        "rule": rule,
        "key": key,
        "started_at": started,
        "ended_at": started + timedelta(hours=1) if status in ("met", "late") else None,
        "due_at": started + timedelta(hours=2),
        "status": status,
        "customer_id": "C-1",
        "warehouse": "DAL",
        "source": "erp",
        "evaluated_at": started + timedelta(hours=3),
        "version": version if version is not None else next(_version),
    }


def seed(store: Store) -> None:
    """Two rules in the first week of November 2026, plus cases outside it and superseded versions."""
    day = timedelta(days=1)
    rows = [
        case("order-release", "SO-1", "met", START),
        case("order-release", "SO-2", "met", START + day),
        case("order-release", "SO-3", "late", START + 2 * day),
        case("order-release", "SO-4", "breached", START + 3 * day),
        case("order-release", "SO-5", "pending", START + 4 * day),
        case("order-release", "SO-6", "at_risk", START + 5 * day),
        # SO-7 was pending, then met: the latest version counts
        case("order-release", "SO-7", "pending", START + 6 * day, version=1),
        case("order-release", "SO-7", "met", START + 6 * day, version=10**12),
        # outside [from, to): the day before, and exactly at `to`
        case("order-release", "SO-8", "breached", START - timedelta(microseconds=1)),
        case("order-release", "SO-9", "breached", START + 7 * day),
        case("asn-sent", "SH-1", "pending", START + day),
        case("asn-sent", "SH-2", "at_risk", START + day),
    ]
    store.insert("sla_cases", rows)


def test_summary_counts_statuses_per_rule(store: Store) -> None:
    seed(store)
    found = sla_summary(store, START, START + timedelta(days=7), rules=["invoice-posting", "asn-sent"])
    assert found == [
        RuleSummary("asn-sent", cases=2, met=0, late=0, breached=0, pending=2, at_risk=1),
        RuleSummary("invoice-posting", cases=0, met=0, late=0, breached=0, pending=0, at_risk=0),
        RuleSummary("order-release", cases=7, met=3, late=1, breached=1, pending=2, at_risk=1),
    ]
    assert [s.compliance for s in found] == [None, None, 0.6]
    assert found[2].as_dict()["compliance"] == 0.6
    assert sla_summary(store, START + timedelta(days=7), START + timedelta(days=8))[0].breached == 1


def test_summary_route(tower: RunningTower, store: Store) -> None:
    seed(store)
    with tower.api("viewer") as http:
        response = http.get("/api/sla/summary", params={"from": "2026-11-02T00:00:00Z", "to": "2026-11-09T00:00:00Z"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["from"], body["to"]) == ("2026-11-02T00:00:00Z", "2026-11-09T00:00:00Z")
    rules = {r["rule"]: r for r in body["rules"]}
    assert rules["order-release"] == {
        "rule": "order-release",
        "cases": 7,
        "met": 3,
        "late": 1,
        "breached": 1,
        "pending": 2,
        "at_risk": 1,
        "compliance": 0.6,
    }
    assert rules["asn-sent"]["pending"] == 2 and rules["asn-sent"]["compliance"] is None
    # rules the engine runs but without cases in the period are listed with zeros
    assert all(r["cases"] == 0 for name, r in rules.items() if name not in ("order-release", "asn-sent"))
    assert [r["rule"] for r in body["rules"]] == sorted(rules)


def test_summary_period_with_offsets_defaults_to_the_last_seven_days(tower: RunningTower, store: Store) -> None:
    now = datetime.now(UTC)
    store.insert(
        "sla_cases",
        [
            case("ship-cutoff", "SO-1", "met", now - timedelta(days=1)),
            case("ship-cutoff", "SO-2", "late", now - timedelta(days=6, hours=23)),
            case("ship-cutoff", "SO-3", "breached", now - timedelta(days=7, hours=1)),
        ],
    )
    with tower.api("viewer") as http:
        default = http.get("/api/sla/summary").json()
        # 10:00 in Chicago (UTC-6 in November) is 16:00 UTC
        offset = http.get(
            "/api/sla/summary", params={"from": "2026-11-02T10:00:00-06:00", "to": "2026-11-03T00:00:00Z"}
        ).json()
    assert datetime.fromisoformat(default["to"]) - datetime.fromisoformat(default["from"]) == timedelta(days=7)
    assert abs(datetime.fromisoformat(default["to"]) - now) < timedelta(minutes=5)
    cutoff = next(r for r in default["rules"] if r["rule"] == "ship-cutoff")
    assert (cutoff["cases"], cutoff["met"], cutoff["late"], cutoff["compliance"]) == (2, 1, 1, 0.5)
    assert offset["from"] == "2026-11-02T16:00:00Z"


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"from": "2026-11-09T00:00:00Z", "to": "2026-11-02T00:00:00Z"}, ["query", "from"]),
        ({"from": "2026-11-02T00:00:00Z", "to": "2026-11-02T00:00:00Z"}, ["query", "from"]),
        ({"from": "last tuesday"}, ["query", "from"]),
        ({"to": "soon"}, ["query", "to"]),
    ],
)
def test_summary_rejects_bad_periods(tower: RunningTower, params: dict[str, str], loc: list[str]) -> None:
    with tower.api("viewer") as http:
        response = http.get("/api/sla/summary", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


def test_summary_by_warehouse_and_by_customer(tower: RunningTower, store: Store) -> None:
    def at(key: str, status: str, warehouse: str, customer: str) -> dict[str, Any]:
        return {**case("order-release", key, status, START), "warehouse": warehouse, "customer_id": customer}

    store.insert(
        "sla_cases",
        [
            at("SO-1", "met", "DAL", "C-1"),
            at("SO-2", "late", "DAL", "C-2"),
            at("SO-3", "met", "ATL", "C-1"),
            at("SO-4", "breached", "", "C-1"),  # no warehouse known
            {**case("asn-sent", "SH-1", "met", START), "warehouse": "ATL"},
        ],
    )
    params = {"from": START.isoformat(), "to": (START + timedelta(days=1)).isoformat()}
    with tower.api("viewer") as http:
        by_warehouse = http.get("/api/sla/compliance", params={**params, "by": "warehouse"}).json()["groups"]
        by_customer = http.get("/api/sla/compliance", params={**params, "by": "customer"}).json()["groups"]
        refused = http.get("/api/sla/compliance", params={**params, "by": "sku"})
        summary = http.get("/api/sla/summary", params=params).json()["rules"]
        worst = http.get(
            "/api/sla/compliance", params={**params, "by": "warehouse", "sort": "worst", "rule": "order-release"}
        ).json()["groups"]
        worst_two = http.get("/api/sla/compliance", params={**params, "by": "warehouse", "sort": "worst", "limit": 2})
    assert [(r["rule"], r["group"], r["cases"], r["met"], r["compliance"]) for r in by_warehouse] == [
        ("asn-sent", "ATL", 1, 1, 1.0),
        ("order-release", "", 1, 0, 0.0),
        ("order-release", "ATL", 1, 1, 1.0),
        ("order-release", "DAL", 2, 1, 0.5),
    ]
    release = {r["group"]: (r["cases"], r["breached"]) for r in by_customer if r["rule"] == "order-release"}
    assert release == {"C-1": (3, 1), "C-2": (1, 0)}
    assert refused.status_code == 422
    assert {r["rule"]: r["cases"] for r in summary}["order-release"] == 4  # the rows add up to the rule's summary
    assert [(r["group"], r["compliance"]) for r in worst] == [("", 0.0), ("DAL", 0.5), ("ATL", 1.0)]
    assert [r["group"] for r in worst_two.json()["groups"]] == ["", "DAL"]


@pytest.mark.parametrize("route", ["/api/sla/summary", "/api/sla/compliance?by=warehouse"])
def test_a_period_under_another_name_is_422_not_the_default_period(tower: RunningTower, route: str) -> None:
    """`start=`/`end=` (for `from=`/`to=`) were ignored: the answer was the last 7 days, as if asked for them."""
    with tower.api("viewer") as http:
        response = http.get(route, params={"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"})
    assert response.status_code == 422, response.text
    assert [p["loc"] for p in response.json()["detail"]] == [["query", "end"], ["query", "start"]]
    assert "takes" in response.json()["detail"][0]["msg"] and "from" in response.json()["detail"][0]["msg"]
