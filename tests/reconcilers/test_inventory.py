"""Inventory reconciliation on hand-built snapshots: every finding type, tolerance edges, staleness, and the
loop closing (resolve when a new snapshot agrees, reopen what a person resolved wrongly)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kernel.store import Store
from reconcilers.inventory import InventoryReconciler
from reconcilers.loop import ACTOR, RECONCILED
from reconcilers.model import RunContext
from reconcilers.replay.service import ACTOR as REPLAY_ACTOR
from reconcilers.replay.service import RESOLUTION as REPLAYED
from tests.reconcilers.factories import NOW, Harness, inventory_rule, order_flow, snapshot

T = NOW - timedelta(minutes=10)


def test_only_pairs_beyond_the_tolerance_are_findings(store: Store) -> None:
    h = Harness(store, inventory_rule(tolerance=2))
    h.send(
        snapshot("erp", "SKU-1", "DAL", 10, T),
        snapshot("wms/dallas", "SKU-1", "DAL", 8, T),  # exactly at the tolerance: agrees
        snapshot("erp", "SKU-2", "DAL", 10, T),
        snapshot("wms/dallas", "SKU-2", "DAL", 7, T),  # one unit beyond: a finding
        snapshot("erp", "SKU-3", "DAL", 10, T),
        snapshot("wms/dallas", "SKU-3", "DAL", 13, T),  # one unit beyond the other way
        snapshot("erp", "SKU-4", "DAL", 10, T),
        snapshot("wms/dallas", "SKU-4", "DAL", 10, T),
    )
    run = h.run()
    assert run.rows_compared == 4
    active = h.active("inventory-sync")
    assert set(active) == {"SKU-2@DAL", "SKU-3@DAL"}
    finding = active["SKU-2@DAL"]
    assert finding.kind == "business" and finding.owner == "warehouse" and finding.severity == "medium"
    erp, wms = finding.context["sides"]
    assert (erp["name"], erp["source"], erp["quantity"]) == ("erp", "erp", 10)
    assert (wms["name"], wms["source"], wms["quantity"]) == ("wms", "wms/dallas", 7)
    assert erp["as_of"] == wms["as_of"] == "2026-11-02T17:50:00.000000Z"
    assert finding.context["difference"] == 3 and finding.context["tolerance"] == 2
    assert finding.context["summary"] == "SKU-2@DAL: erp 10 vs wms/dallas 7 (difference 3, tolerance 2)"
    assert run.opened == 2 and run.findings == 2


def test_fractional_quantities_at_the_tolerance_edge(store: Store) -> None:
    h = Harness(store, inventory_rule(tolerance=0.5, oversell=None))
    h.send(
        snapshot("erp", "SKU-1", "DAL", 10.25, T),
        snapshot("wms", "SKU-1", "DAL", 9.75, T),  # 0.5: at the tolerance
        snapshot("erp", "SKU-2", "DAL", 10.3, T),
        snapshot("wms", "SKU-2", "DAL", 9.79, T),  # 0.51: beyond
    )
    h.run()
    assert set(h.active("inventory-sync")) == {"SKU-2@DAL"}


def test_the_latest_snapshot_of_each_side_counts(store: Store) -> None:
    h = Harness(store, inventory_rule(oversell=None))
    h.send(
        snapshot("erp", "SKU-1", "DAL", 10, T - timedelta(hours=1)),
        snapshot("erp", "SKU-1", "DAL", 12, T),  # the ERP's latest
        snapshot("wms/dallas", "SKU-1", "DAL", 12, T - timedelta(minutes=30)),
        snapshot("wms/dallas", "SKU-1", "DAL", 10, T - timedelta(hours=2)),  # older, arrives last
    )
    h.run()
    assert h.active("inventory-sync") == {}


def test_a_pair_one_side_does_not_report_counts_as_zero_there(store: Store) -> None:
    h = Harness(store, inventory_rule(oversell=None))
    h.send(
        snapshot("erp", "SKU-1", "DAL", 4, T),
        snapshot("wms", "SKU-1", "DAL", 4, T),
        snapshot("erp", "SKU-2", "DAL", 3, T),  # the WMS does not list it
        snapshot("wms", "SKU-3", "RNO", 0, T),  # the ERP does not list it, the WMS has none: agrees
    )
    h.run()
    active = h.active("inventory-sync")
    assert set(active) == {"SKU-2@DAL"}
    assert active["SKU-2@DAL"].context["sides"][1] == {"name": "wms", "source": None, "quantity": None, "as_of": None}
    assert active["SKU-2@DAL"].context["summary"] == "SKU-2@DAL: erp 3 vs wms none (difference 3, tolerance 0)"


def test_routing_data_reaches_the_owner(store: Store) -> None:
    h = Harness(store, inventory_rule(oversell=None))
    h.send(
        snapshot("erp", "SKU-1", "RNO-A1", 5, T, warehouse="RNO"),
        snapshot("wms/reno", "SKU-1", "RNO-A1", 4, T, warehouse="RNO"),
    )
    h.run()
    finding = h.active("inventory-sync")["SKU-1@RNO-A1"]
    assert finding.owner == "warehouse-reno"
    assert (finding.context["warehouse"], finding.context["source"]) == ("RNO", "wms/reno")


def test_oversell_when_sellable_exceeds_the_wms_beyond_its_tolerance(store: Store) -> None:
    h = Harness(store, inventory_rule(oversell={"tolerance": 1}))
    h.send(
        snapshot("erp", "SKU-1", "DAL", 5, T),
        snapshot("wms", "SKU-1", "DAL", 5, T),
        snapshot("ecommerce", "SKU-1", "DAL", 6, T),  # at the tolerance
        snapshot("erp", "SKU-2", "DAL", 5, T),
        snapshot("wms", "SKU-2", "DAL", 5, T),
        snapshot("ecommerce", "SKU-2", "DAL", 7, T),  # one beyond
        snapshot("erp", "SKU-3", "DAL", 5, T),
        snapshot("wms", "SKU-3", "DAL", 5, T),
        snapshot("ecommerce", "SKU-3", "DAL", 1, T),  # selling less than there is: fine
        snapshot("ecommerce", "SKU-4", "DAL", 3, T),  # the WMS has none
    )
    h.run()
    oversell = h.active("inventory-oversell")
    assert set(oversell) == {"SKU-2@DAL", "SKU-4@DAL"}
    finding = oversell["SKU-2@DAL"]
    assert finding.kind == "business" and finding.owner == "warehouse"
    assert [s["name"] for s in finding.context["sides"]] == ["ecommerce", "wms"]
    assert finding.context["difference"] == 2 and finding.context["check"] == "oversell"
    assert set(h.active("inventory-sync")) == set()  # SKU-4 is in neither book nor count: both say 0


def test_oversell_is_off_without_its_params(store: Store) -> None:
    h = Harness(store, inventory_rule(oversell=None))
    h.send(snapshot("erp", "SKU-1", "DAL", 5, T), snapshot("wms", "SKU-1", "DAL", 5, T))
    h.send(snapshot("ecommerce", "SKU-1", "DAL", 50, T))
    run = h.run()
    assert h.all("inventory-oversell") == []
    assert "inventory-oversell" not in run.details["rules"]


def test_a_quiet_source_is_stale_and_fresh_again_resolves_it(store: Store) -> None:
    h = Harness(store, inventory_rule(oversell=None, stale_after="2h"))
    h.send(
        snapshot("erp", "SKU-1", "DAL", 5, NOW - timedelta(minutes=5)),
        snapshot("wms/dallas", "SKU-1", "DAL", 5, NOW - timedelta(hours=2)),  # exactly 2 h: not stale yet
        snapshot("wms/reno", "SKU-2", "RNO", 5, NOW - timedelta(hours=2, seconds=1)),
    )
    h.run()
    stale = h.active("inventory-stale")
    assert set(stale) == {"wms/reno"}
    finding = stale["wms/reno"]
    assert finding.kind == "technical" and finding.owner == "integration"
    assert finding.context["last_snapshot"] == "2026-11-02T15:59:59.000000Z"
    assert finding.context["source"] == "wms/reno" and finding.context["side"] == "wms"

    at = h.later()
    h.send(snapshot("wms/reno", "SKU-2", "RNO", 5, at), snapshot("erp", "SKU-2", "RNO", 5, at))
    h.send(snapshot("wms/dallas", "SKU-1", "DAL", 5, at))  # 2h05 old by now otherwise
    run = h.run()
    assert h.active("inventory-stale") == {}
    (resolved,) = h.all("inventory-stale")
    assert resolved.resolution == RECONCILED
    assert run.details["rules"]["inventory-stale"]["resolved"] == [resolved.id]


def test_a_side_that_never_sent_is_stale_and_its_pairs_are_not_compared(store: Store) -> None:
    h = Harness(store, inventory_rule(oversell=None))
    h.send(snapshot("erp", "SKU-1", "DAL", 5, T), snapshot("erp", "SKU-2", "DAL", 5, T))
    run = h.run()
    assert set(h.active("inventory-stale")) == {"wms"}
    assert h.active("inventory-stale")["wms"].context["summary"] == "wms: never sent an inventory snapshot"
    assert h.active("inventory-sync") == {}  # not a flood of differences: the side is missing
    assert run.details["rules"]["inventory-sync"]["checked"] is False

    h.later()
    h.send(snapshot("wms/dallas", "SKU-1", "DAL", 5, h.clock.now()), snapshot("wms/dallas", "SKU-2", "DAL", 4, T))
    h.run()
    assert h.active("inventory-stale") == {}  # the side sends now (from wms/dallas)
    assert set(h.active("inventory-sync")) == {"SKU-2@DAL"}


def test_nothing_is_flagged_before_any_snapshot(store: Store) -> None:
    h = Harness(store)
    run = h.run()
    assert (run.opened, run.rows_compared, run.findings) == (0, 0, 0)
    assert run.details["rules"]["inventory-stale"]["note"] == "no side has sent an inventory snapshot yet"


def test_snapshots_older_than_the_lookback_are_not_compared(store: Store) -> None:
    h = Harness(store, inventory_rule(oversell=None, lookback="1d"))
    h.send(
        snapshot("erp", "SKU-1", "DAL", 5, T),
        snapshot("wms", "SKU-1", "DAL", 5, T),
        snapshot("erp", "SKU-9", "DAL", 5, NOW - timedelta(days=2)),  # gone from the ERP long ago
    )
    h.run()
    assert h.active("inventory-sync") == {}


def test_a_finding_resolves_when_a_new_snapshot_agrees(store: Store) -> None:
    h = Harness(store, inventory_rule(oversell=None))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T), snapshot("wms", "SKU-1", "DAL", 9, T))
    h.run()
    (finding,) = h.active("inventory-sync").values()

    h.later()
    run = h.run()  # nothing changed: stays open, not opened twice
    assert (run.opened, run.resolved) == (0, 0) and set(h.active("inventory-sync")) == {"SKU-1@DAL"}

    at = h.later()
    h.send(snapshot("wms", "SKU-1", "DAL", 10, at))  # recounted
    run = h.run()
    assert run.resolved == 1 and h.active("inventory-sync") == {}
    record = h.exceptions.get(finding.id)
    assert (record.status, record.resolution) == ("resolved", RECONCILED)
    audit = h.exceptions.audit(finding.id)[-1]
    assert (audit["actor"], audit["action"]) == (ACTOR, "resolved")
    assert audit["detail"]["run_id"] == run.run_id
    assert audit["detail"]["summary"] == "SKU-1@DAL: erp 10 vs wms 10 (difference 0, tolerance 0)"
    assert [s["quantity"] for s in audit["detail"]["values"]["sides"]] == [10, 10]

    # the difference comes back later: a new exception, the reconciled one stays closed
    at = h.later()
    h.send(snapshot("wms", "SKU-1", "DAL", 8, at))
    h.run()
    (again,) = h.active("inventory-sync").values()
    assert again.id != finding.id and h.exceptions.get(finding.id).status == "resolved"


def test_a_wrongly_resolved_finding_is_reopened_once(store: Store) -> None:
    h = Harness(store, inventory_rule(oversell=None))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T), snapshot("wms", "SKU-1", "DAL", 9, T))
    h.run()
    (finding,) = h.active("inventory-sync").values()

    h.later()
    h.exceptions.resolve(finding.id, "ann", resolution="fixed", note="recounted")  # but nobody sent a snapshot
    h.later()
    run = h.run()
    assert run.reopened == 1 and run.opened == 0
    record = h.exceptions.get(finding.id)
    assert record.status == "open"
    reopened = h.exceptions.audit(finding.id)[-1]
    assert (reopened["actor"], reopened["action"]) == ("reconciler", "reopened")
    assert reopened["detail"]["reason"] == (
        f"still differs at run {run.run_id}: SKU-1@DAL: erp 10 vs wms 9 (difference 1, tolerance 0)"
    )

    # the person insists: their second resolution stands, and no new exception is opened meanwhile
    h.later()
    h.exceptions.resolve(finding.id, "ann", resolution="false_positive", note="the ERP is wrong, known")
    h.later()
    run = h.run()
    assert (run.reopened, run.opened) == (0, 0)
    assert h.active("inventory-sync") == {}
    assert run.details["rules"]["inventory-sync"]["standing"] == 1

    # once the key agrees, the episode ends; a later difference is a new exception
    at = h.later()
    h.send(snapshot("wms", "SKU-1", "DAL", 10, at))
    h.run()
    at = h.later()
    h.send(snapshot("wms", "SKU-1", "DAL", 7, at))
    run = h.run()
    assert run.opened == 1 and h.active("inventory-sync")["SKU-1@DAL"].id != finding.id


def test_a_person_resolving_with_the_word_reconciled_is_reopened_not_duplicated(store: Store) -> None:
    h = Harness(store, inventory_rule(oversell=None))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T), snapshot("wms", "SKU-1", "DAL", 9, T))
    h.run()
    (finding,) = h.active("inventory-sync").values()

    h.later()
    h.exceptions.resolve(finding.id, "ann", resolution=RECONCILED, note="reconciled in the ERP")  # nothing sent
    h.later()
    run = h.run()
    assert (run.reopened, run.opened) == (1, 0)
    assert list(h.active("inventory-sync").values())[0].id == finding.id

    h.later()
    h.exceptions.resolve(finding.id, "ann", resolution=RECONCILED, note="it is, really")
    h.later()
    run = h.run()
    assert (run.reopened, run.opened) == (0, 0) and run.details["rules"]["inventory-sync"]["standing"] == 1
    assert len(h.all("inventory-sync")) == 1


def test_a_person_resolving_a_finding_that_agrees_by_then_is_not_reopened(store: Store) -> None:
    h = Harness(store, inventory_rule(oversell=None))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T), snapshot("wms", "SKU-1", "DAL", 9, T))
    h.run()
    (finding,) = h.active("inventory-sync").values()
    at = h.later()
    h.send(snapshot("wms", "SKU-1", "DAL", 10, at))
    h.exceptions.resolve(finding.id, "ann", note="recounted")
    run = h.run()
    assert (run.reopened, run.opened, run.resolved) == (0, 0, 0)
    assert h.exceptions.get(finding.id).resolution == "fixed"


def test_an_acknowledged_finding_stays_with_its_owner_until_it_agrees(store: Store) -> None:
    h = Harness(store, inventory_rule(oversell=None))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T), snapshot("wms", "SKU-1", "DAL", 9, T))
    h.run()
    (finding,) = h.active("inventory-sync").values()
    h.exceptions.acknowledge(finding.id, "ann")
    h.later()
    assert h.run().opened == 0
    at = h.later()
    h.send(snapshot("erp", "SKU-1", "DAL", 9, at))
    assert h.run().resolved == 1


@pytest.mark.parametrize("sources", [["erp", "wms/dallas"], ["erp/main", "wms"]])
def test_sources_may_be_paths(store: Store, sources: list[str]) -> None:
    h = Harness(store, inventory_rule(sources=sources, oversell=None))
    book, count = sources
    h.send(
        snapshot(book, "SKU-1", "DAL", 10, T),
        snapshot(count if "/" in count else f"{count}/dallas", "SKU-1", "DAL", 9, T),
        snapshot("wms/reno" if "/" in count else "erp/other", "SKU-1", "DAL", 10, T),  # not a side: ignored
    )
    h.run()
    assert set(h.active("inventory-sync")) == {"SKU-1@DAL"}


def test_each_finding_names_its_sources_and_shows_quantities_as_a_person_reads_them(store: Store) -> None:
    config = inventory_rule(tolerance=0.5, oversell={"tolerance": 1})
    h = Harness(store, config)
    h.send(
        snapshot("erp", "SKU-1", "DAL", 10, T, warehouse="DAL"),
        snapshot("wms/dallas", "SKU-1", "DAL", 7, T - timedelta(minutes=1)),
        snapshot("ecommerce/shop", "SKU-1", "DAL", 9.5, T),
        snapshot("erp", "SKU-2", "RNO", 1234567.25, T),
        snapshot("wms/reno", "SKU-2", "RNO", 1234560.125, T, warehouse="RNO"),
        snapshot("erp", "SKU-3", "RNO", 4, T),  # the WMS does not report it
        snapshot("ecommerce", "SKU-4", "RNO", 2, T),  # only the shop sells it
    )
    reconciler = InventoryReconciler(store, config)
    run = RunContext("r-1", NOW, tuple(f.id for f in config.finding_rules()), lambda phase, message: None)
    sync, oversell, _stale = reconciler.compare(run)
    assert sync.compared == oversell.compared == 4
    pairs = {o.key: o for o in sync.observations}
    assert {k for k, o in pairs.items() if o.differs} == {"SKU-1@DAL", "SKU-2@RNO", "SKU-3@RNO"}
    assert not pairs["SKU-4@RNO"].differs  # answered for its oversell; book and count both say 0
    first = pairs["SKU-1@DAL"]
    assert first.differs and first.route == {
        "sku": "SKU-1",
        "location": "DAL",
        "warehouse": "DAL",
        "source": "wms/dallas",
    }
    assert first.values == {
        "check": "quantity",
        "sku": "SKU-1",
        "location": "DAL",
        "sides": [
            {"name": "erp", "source": "erp", "quantity": 10.0, "as_of": "2026-11-02T17:50:00.000000Z"},
            {"name": "wms", "source": "wms/dallas", "quantity": 7.0, "as_of": "2026-11-02T17:49:00.000000Z"},
        ],
        "difference": 3.0,
        "tolerance": 0.5,
    }
    assert first.summary == "SKU-1@DAL: erp 10 vs wms/dallas 7 (difference 3, tolerance 0.5)"
    assert pairs["SKU-2@RNO"].summary == (
        "SKU-2@RNO: erp 1.23457e+06 vs wms/reno 1.23456e+06 (difference 7.125, tolerance 0.5)"
    )
    assert pairs["SKU-2@RNO"].route["warehouse"] == "RNO"
    missing = pairs["SKU-3@RNO"]
    assert missing.values["sides"][1] == {"name": "wms", "source": None, "quantity": None, "as_of": None}
    assert missing.route == {"sku": "SKU-3", "location": "RNO", "warehouse": ""}
    assert missing.summary == "SKU-3@RNO: erp 4 vs wms none (difference 4, tolerance 0.5)"

    sold = {o.key: o for o in oversell.observations if o.differs}
    assert set(sold) == {"SKU-1@DAL", "SKU-4@RNO"}
    assert sold["SKU-1@DAL"].values["sides"][0]["source"] == "ecommerce/shop"
    assert sold["SKU-1@DAL"].values["difference"] == 2.5
    assert sold["SKU-1@DAL"].summary == (
        "SKU-1@DAL: sellable 9.5 on ecommerce/shop, 7 available in wms/dallas (excess 2.5, tolerance 1)"
    )
    assert (
        sold["SKU-4@RNO"].summary == "SKU-4@RNO: sellable 2 on ecommerce, none available in wms (excess 2, tolerance 1)"
    )


def test_freshness_is_read_from_its_projection_and_agrees_with_a_scan(store: Store) -> None:
    h = Harness(store, inventory_rule(oversell=None))
    h.send(
        snapshot("erp", "SKU-1", "DAL", 5, T - timedelta(hours=3)),
        snapshot("erp", "SKU-1", "DAL", 6, T),
        snapshot("wms/dallas", "SKU-1", "DAL", 5, T - timedelta(hours=1)),
        snapshot("wms/reno", "SKU-2", "RNO", 5, T - timedelta(hours=4)),
        snapshot("ecommerce", "SKU-1", "DAL", 5, T),  # not a side of this rule
    )
    h.send(*order_flow(1, NOW - timedelta(minutes=1)))  # newer events of other types and sources
    sql, params = InventoryReconciler(store, inventory_rule(oversell=None)).freshness_statement(["erp", "wms"])
    plan = "\n".join(row["explain"] for row in store.query(f"EXPLAIN {sql}", params))
    assert "ReadFromMergeTree (freshness)" in plan
    newest = {row["source"]: row["last"] for row in store.query(sql, params)}
    assert newest == {
        "erp": "2026-11-02 17:50:00.000000",
        "wms/dallas": "2026-11-02 16:50:00.000000",
        "wms/reno": "2026-11-02 13:50:00.000000",
    }
    scanned = store.query(f"{sql} SETTINGS optimize_use_projections = 0", params)
    assert {row["source"]: row["last"] for row in scanned} == newest


@pytest.mark.parametrize(("first", "corrected", "finding"), [(7, 5, None), (5, 7, 7)], ids=["agrees", "differs"])
def test_a_count_re_sent_for_the_same_instant_replaces_the_first_however_the_store_merges(
    store: Store, first: float, corrected: float, finding: float | None
) -> None:
    """A WMS re-exports a corrected count with the same time under a new id: the later arrival is the count,
    before and after the store merges its parts (which orders rows by id: here the other way round)."""
    h = Harness(store, inventory_rule(oversell=None))
    h.send(snapshot("erp", "SKU-1", "DAL", 5, T))
    h.send({**snapshot("wms/dallas", "SKU-1", "DAL", first, T), "id": "z-first-count"})
    h.later()
    h.send({**snapshot("wms/dallas", "SKU-1", "DAL", corrected, T), "id": "a-corrected-count"})
    for merge in (False, True):
        if merge:
            store.command("OPTIMIZE TABLE business_events FINAL")
        h.later()
        h.run()
        active = h.active("inventory-sync")
        if finding is None:
            assert active == {} and h.all("inventory-sync") == [], merge
        else:
            assert [side["quantity"] for side in active["SKU-1@DAL"].context["sides"]] == [5, finding], merge
            assert len(h.all("inventory-sync")) == 1


def test_a_pair_neither_side_reports_any_more_resolves_unreported(store: Store) -> None:
    """A SKU no longer stocked at a location: both systems stop sending its snapshots while they go on with the
    others. After the lookback the difference cannot be checked; the finding closes as `unreported`."""
    h = Harness(store, inventory_rule(oversell=None, lookback="1d"))
    h.send(
        snapshot("erp", "SKU-1", "DAL", 10, T),
        snapshot("wms", "SKU-1", "DAL", 9, T),  # differs: a finding
        snapshot("erp", "SKU-2", "DAL", 5, T),
        snapshot("wms", "SKU-2", "DAL", 5, T),
    )
    h.run()
    (finding,) = h.active("inventory-sync").values()
    at = h.later(timedelta(hours=23))
    h.send(snapshot("erp", "SKU-2", "DAL", 5, at), snapshot("wms", "SKU-2", "DAL", 5, at))
    run = h.run()  # SKU-1's snapshots are still in the lookback: still differs
    assert run.resolved == 0 and set(h.active("inventory-sync")) == {"SKU-1@DAL"}
    at = h.later(timedelta(hours=2))
    h.send(snapshot("erp", "SKU-2", "DAL", 5, at), snapshot("wms", "SKU-2", "DAL", 5, at))
    run = h.run()
    assert run.resolved == 1 and h.active("inventory-sync") == {}
    [done] = h.all("inventory-sync")
    assert (done.id, done.status, done.resolution) == (finding.id, "resolved", "unreported")
    detail = h.exceptions.audit(done.id)[-1]["detail"]
    assert detail["summary"] == (
        "SKU-1@DAL: neither side has reported it in the last 1d: the difference can no longer be checked"
    )
    # it comes back, differing: a new exception (the old episode ended), not a reopened one
    at = h.later()
    h.send(snapshot("erp", "SKU-1", "DAL", 3, at), snapshot("wms", "SKU-1", "DAL", 4, at))
    run = h.run()
    assert (run.opened, run.reopened) == (1, 0) and len(h.all("inventory-sync")) == 2


def test_a_finding_stays_open_while_a_whole_side_is_silent(store: Store) -> None:
    """The WMS stops sending anything: that is inventory-stale's business, and the pairs are not checked, so
    nothing is resolved for want of data."""
    h = Harness(store, inventory_rule(oversell=None, lookback="1d"))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T), snapshot("wms", "SKU-1", "DAL", 9, T))
    h.run()
    at = h.later(timedelta(days=2))
    h.send(snapshot("erp", "SKU-2", "DAL", 5, at))  # the ERP goes on; the WMS sent nothing in the lookback
    run = h.run()
    assert run.resolved == 0 and set(h.active("inventory-sync")) == {"SKU-1@DAL"}
    assert "inventory-stale" in run.details["rules"] and h.active("inventory-stale")


def test_a_replay_resolving_a_source_still_stale_never_makes_the_reconciler_stand_down(store: Store) -> None:
    """The replay resolves `replayed` once its events arrive, though the source may still be stale: that is no
    person's word, so the reconciler reopens it at every run; a person's resolution it reopens once."""
    h = Harness(store, inventory_rule(oversell=None, stale_after="1h"))
    h.send(snapshot("erp", "SKU-1", "DAL", 5, T), snapshot("wms/reno", "SKU-1", "DAL", 5, NOW - timedelta(hours=3)))
    h.run()
    (stale,) = h.active("inventory-stale").values()
    for _ in range(2):  # every replay resolution is argued with, not only the first
        h.later()
        h.exceptions.resolve_many([h.exceptions.get(stale.id)], REPLAYED, {stale.id: {"events": 1}}, REPLAY_ACTOR)
        run = h.run()
        assert (run.reopened, run.opened) == (1, 0)
        assert run.details["rules"]["inventory-stale"]["standing"] == 0
        assert h.exceptions.get(stale.id).status == "open"
    # a person's resolution is reopened once (the replay's reopenings were no argument with them) ...
    h.later()
    h.exceptions.resolve(stale.id, "ann", note="Reno is being migrated")
    assert h.run().reopened == 1
    # ... and their second one stands
    h.later()
    h.exceptions.resolve(stale.id, "ann", note="Reno is being migrated, really")
    run = h.run()
    assert (run.reopened, run.opened) == (0, 0) and run.details["rules"]["inventory-stale"]["standing"] == 1


def test_pairs_whose_sku_or_location_contains_an_at_sign_have_keys_of_their_own(store: Store) -> None:
    """(X@1, DAL) and (X, 1@DAL) would both be `X@1@DAL`: the one that differs would flap between open and
    reconciled. A key without '@' in its parts keeps its `sku@location` form ('%' included)."""
    h = Harness(store, inventory_rule(oversell=None))
    h.send(
        snapshot("erp", "X@1", "DAL", 9, T),
        snapshot("wms", "X@1", "DAL", 4, T),
        snapshot("erp", "X", "1@DAL", 5, T),
        snapshot("wms", "X", "1@DAL", 5, T),
        snapshot("erp", "50%OFF", "DAL", 2, T),
        snapshot("wms", "50%OFF", "DAL", 1, T),
    )
    for _ in range(3):
        run = h.run()
        h.later()
    assert (run.opened, run.resolved) == (0, 0)
    assert len(h.all("inventory-sync")) == 2
    active = h.active("inventory-sync")
    assert set(active) == {"X%401@@DAL", "50%OFF@DAL"}
    assert (active["X%401@@DAL"].context["sku"], active["X%401@@DAL"].context["location"]) == ("X@1", "DAL")
    assert active["X%401@@DAL"].context["summary"] == "X%401@@DAL: erp 9 vs wms 4 (difference 5, tolerance 0)"

    at = h.later()  # the other pair differs too now: its own key
    h.send(snapshot("wms", "X", "1@DAL", 3, at))
    run = h.run()
    assert run.opened == 1 and set(h.active("inventory-sync")) == {"X%401@@DAL", "X@@1%40DAL", "50%OFF@DAL"}
