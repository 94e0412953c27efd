"""`tower demo` traffic through the real doors, then the SLA service evaluated at the manifest's `now`:
every injected fault of the rules in scope is found with its expected status, and nothing else is flagged."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from collector.demo.scenario import SERVICES, Scenario, ScenarioConfig, build_scenario
from collector.demo.senders import DemoSender
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionFilter, ExceptionRecord
from kernel.store.base import stored_time
from tests.support import RunningTower
from tower.app import SlaParts, build_sla

WEDNESDAY = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)  # 09:30 in Dallas: most ship cutoffs of the history decided
SLA_RULES = ("order-release", "ship-cutoff", "asn-sent", "invoice-posting")
TECHNICAL_RULES = ("integration-errors", "source-silence")
RECONCILIATION_RULES = ("invoice-match", "inventory-sync")


def iso_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def story() -> Scenario:
    scenario = build_scenario(ScenarioConfig(seed=21, orders=80, skus=3), FixedClock(WEDNESDAY))
    assert scenario.shortfall == {}
    return scenario


def send(tower: RunningTower, story: Scenario) -> None:
    sender = DemoSender(tower.http_url, {system: tower.token(system) for system in set(SERVICES.values())})
    try:
        sender.send_all(story.deliveries)
    finally:
        sender.close()
    assert sender.stats.failed == 0, sender.stats.rejections


def evaluate(tower: RunningTower, now: datetime) -> tuple[SlaParts, dict[str, Any]]:
    assert tower.tower is not None
    parts = build_sla(tower.settings, tower.tower.store, FixedClock(now))
    report = parts.sla.evaluate(full=True)
    assert report.errors == {}
    return parts, report.as_dict()


def all_exceptions(parts: SlaParts) -> list[ExceptionRecord]:
    records, total = parts.exceptions.search(ExceptionFilter(), limit=1000)
    assert len(records) == total
    return records


def test_the_demo_faults_and_nothing_else(tower: RunningTower, story: Scenario) -> None:
    send(tower, story)
    manifest = story.manifest()
    now = iso_time(manifest["now"])
    parts, report = evaluate(tower, now)
    assert tower.tower is not None
    store = tower.tower.store

    faults = [f for f in manifest["faults"] if f["expected"] != "none"]
    in_scope = [f for f in faults if f["rule"] in (*SLA_RULES, *TECHNICAL_RULES)]
    assert {f["rule"] for f in in_scope} == {*SLA_RULES, *TECHNICAL_RULES}

    cases = {
        (r["rule"], r["key"]): r
        for r in store.query("SELECT rule, key, status, due_at FROM sla_cases FINAL ORDER BY rule, key")
    }
    # Late and breached cases are exactly the injected SLA faults, each with the status the manifest expects.
    flagged = {case: row["status"] for case, row in cases.items() if row["status"] in ("late", "breached")}
    assert flagged == {(f["rule"], f["key"]): f["expected"] for f in in_scope if f["rule"] in SLA_RULES}
    for f in in_scope:
        if f["rule"] in SLA_RULES:
            assert stored_time(cases[(f["rule"], f["key"])]["due_at"]) == iso_time(f["due_at"]), f

    # Open exceptions are exactly the breached SLA cases and the technical faults; late cases are closed.
    exceptions = all_exceptions(parts)
    assert all(e.status == "open" for e in exceptions)
    opened = Counter((e.rule, e.key) for e in exceptions)
    assert set(opened.values()) == {1}
    assert set(opened) == {(f["rule"], f["key"]) for f in in_scope if f["expected"] in ("breached", "exception")}
    by_case = {(e.rule, e.key): e for e in exceptions}
    assert report["opened"] == len(exceptions)

    burst = next(e for e in exceptions if e.rule == "integration-errors")
    assert burst.key == "middleware|erp->wms inventory sync" and burst.kind == "technical"
    assert (burst.context["spans"], burst.context["errors"], burst.owner) == (60, 30, "integration")
    silent = by_case[("source-silence", "tms")]
    assert silent.context["last_seen"] <= manifest["silent_since"]["tms"].replace("Z", "000Z")
    assert silent.owner == "integration"
    owners = {e.rule: e.owner for e in exceptions if e.kind == "business"}
    assert owners.get("order-release", "customer_service") == "customer_service"
    assert owners.get("invoice-posting", "finance") == "finance"

    # Reconciliation faults wait for their engines: nothing yet.
    assert not [e for e in exceptions if e.rule in RECONCILIATION_RULES]
    assert any(f["rule"] in RECONCILIATION_RULES for f in faults)

    # Pending (and at risk) cases are exactly the manifest's, with the same deadlines.
    pending = {case: row for case, row in cases.items() if row["status"] in ("pending", "at_risk")}
    assert set(pending) == {(p["rule"], p["key"]) for p in manifest["pending"]}
    for p in manifest["pending"]:
        assert stored_time(pending[(p["rule"], p["key"])]["due_at"]) == iso_time(p["due_at"]), p

    # Case counts per rule as the manifest has them; duplicates and out-of-order deliveries change nothing.
    for rule in SLA_RULES:
        statuses = Counter(row["status"] for (r, _), row in cases.items() if r == rule)
        statuses["pending"] += statuses.pop("at_risk", 0)
        expected = manifest["cases"][rule]
        assert sum(statuses.values()) == expected["cases"], rule
        assert {s: statuses[s] for s in ("met", "late", "breached", "pending")} == {
            s: expected[s] for s in ("met", "late", "breached", "pending")
        }, rule
    deliveries = [f for f in manifest["faults"] if f["expected"] == "none"]
    assert {f["fault"] for f in deliveries} == {"duplicate-delivery", "out-of-order-delivery"}
    for f in deliveries:
        if f["rule"]:
            assert cases[(f["rule"], f["key"])]["status"] == "met", f

    # Evaluating again (incrementally, then fully) opens and resolves nothing.
    for full in (False, True):
        again = parts.sla.evaluate(full=full)
        assert (again.opened, again.resolved, again.errors) == ([], [], {})
    assert len(all_exceptions(parts)) == len(exceptions)
