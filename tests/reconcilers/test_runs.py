"""Runs as records: every run is stored (running, then ok or error), progress per phase, failures isolated
per rule, and the scheduled `reconcile` job."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from kernel.jobs import JobRegistry, SchedulerSettings
from kernel.store import Store
from reconcilers.jobs import ReconcileJobSettings, reconcile_job
from reconcilers.service import UnknownRule
from reconcilers.settings import ReconcileSettings
from tests.reconcilers.factories import NOW, Harness, inventory_rule, invoice_rule, order_flow, snapshot
from tower.scheduler import Scheduler

T = NOW - timedelta(minutes=10)


def test_each_run_is_recorded_with_its_counts(store: Store) -> None:
    h = Harness(store, inventory_rule(oversell=None), invoice_rule())
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T), snapshot("wms", "SKU-1", "DAL", 9, T))
    h.send(snapshot("erp", "SKU-2", "DAL", 1, T), snapshot("wms", "SKU-2", "DAL", 1, T))
    h.send(*order_flow(1, NOW - timedelta(days=1), invoiced_amount=120.0))
    records = h.service.run(progress=h.progress.append)
    assert [(r.rule, r.status, r.rows_compared, r.findings, r.opened) for r in records] == [
        ("inventory-sync", "ok", 2, 1, 1),
        ("invoice-match", "ok", 1, 1, 1),
    ]
    stored = {r.rule: r for r in h.service.runs.list()}
    inventory = stored["inventory-sync"]
    assert inventory.run_id == records[0].run_id and inventory.status == "ok" and inventory.trigger == "api"
    assert inventory.started_at == NOW and inventory.finished_at == NOW
    assert inventory.duration_ms > 0 and inventory.error == ""
    assert set(inventory.details["phases_ms"]) == {"compare", "apply", "record"}
    assert inventory.details["rules"]["inventory-sync"]["opened"] == [h.active("inventory-sync")["SKU-1@DAL"].id]
    assert store.query("SELECT count() AS n FROM recon_runs FINAL") == [{"n": 2}]

    h.later()
    (second,) = h.service.run("inventory-sync")
    assert (second.opened, second.resolved, second.reopened, second.findings) == (0, 0, 0, 1)
    assert [r.run_id for r in h.service.runs.list("inventory-sync")] == [second.run_id, inventory.run_id]
    assert h.service.runs.list(status="error") == []


def test_progress_reports_each_phase_of_each_rule(store: Store) -> None:
    h = Harness(store, inventory_rule(oversell=None), invoice_rule())
    h.service.run(progress=h.progress.append)
    assert [(e.rule, e.phase, e.step, e.steps) for e in h.progress] == [
        ("inventory-sync", "compare", 1, 3),
        ("inventory-sync", "apply", 2, 3),
        ("inventory-sync", "record", 3, 3),
        ("inventory-sync", "done", 3, 3),
        ("invoice-match", "compare", 1, 3),
        ("invoice-match", "apply", 2, 3),
        ("invoice-match", "record", 3, 3),
        ("invoice-match", "done", 3, 3),
    ]
    assert h.progress[3].message == "0 compared, 0 differing: 0 opened, 0 resolved, 0 reopened"


def test_a_failing_rule_is_recorded_and_the_next_still_runs(store: Store, tmp_path: Path) -> None:
    pulled = inventory_rule(oversell=None, pull={"wms": {"database": "wms", "query": "SELECT * FROM missing_table"}})
    settings = ReconcileSettings(sources={"wms": SecretStr(f"sqlite:///{tmp_path / 'empty.db'}")})
    h = Harness(store, pulled, invoice_rule(), settings=settings)
    h.send(*order_flow(1, NOW - timedelta(days=1), invoiced_amount=120.0))
    failed, ok = h.service.run(progress=h.progress.append)
    assert failed.status == "error" and "the SQLite database file does not exist" in failed.error
    assert ok.status == "ok" and ok.opened == 1
    assert [r.run_id for r in h.service.runs.list(status="error")] == [failed.run_id]
    assert ("inventory-sync", "error") in [(e.rule, e.phase) for e in h.progress]


def test_an_unknown_rule_is_refused(store: Store) -> None:
    h = Harness(store)
    with pytest.raises(UnknownRule):
        h.service.run("nope")
    with pytest.raises(UnknownRule):
        h.service.findings("nope")
    assert h.service.runs.list() == []


def test_the_reconcile_job_runs_every_rule_and_fails_loudly_when_one_fails(store: Store, tmp_path: Path) -> None:
    h = Harness(store, inventory_rule(oversell=None), invoice_rule())
    jobs = JobRegistry()
    jobs.add("reconcile", reconcile_job(h.service), settings=ReconcileJobSettings)
    assert ReconcileJobSettings().interval_seconds == 300
    assert "every reconciliation rule" in jobs.get("reconcile").description
    scheduler = Scheduler(jobs, h.clock, SchedulerSettings(enabled=False))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T), snapshot("wms", "SKU-1", "DAL", 9, T))
    outcome = scheduler.run_job("reconcile")
    assert outcome.ok and outcome.result == {"runs": 2, "errors": [], "opened": 1, "resolved": 0, "reopened": 0}
    assert {r.trigger for r in h.service.runs.list()} == {"schedule"}

    broken = inventory_rule(oversell=None, pull={"wms": {"database": "gone", "query": "SELECT 1"}})
    h2 = Harness(store, broken)
    jobs2 = JobRegistry()
    jobs2.add("reconcile", reconcile_job(h2.service), settings=ReconcileJobSettings)
    outcome = Scheduler(jobs2, h2.clock, SchedulerSettings(enabled=False)).run_job("reconcile")
    assert not outcome.ok and "database 'gone' is not in TOWER_RECONCILE_SOURCES" in outcome.error


def test_findings_list_open_exceptions_with_the_last_values(store: Store) -> None:
    h = Harness(store, inventory_rule(oversell=None), invoice_rule())
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T), snapshot("wms", "SKU-1", "DAL", 9, T))
    h.send(*order_flow(1, NOW - timedelta(days=1), invoiced_amount=120.0))
    h.service.run()
    at = h.later()
    h.send(snapshot("wms", "SKU-1", "DAL", 8, at))  # still differs, by more now
    h.service.run("inventory-sync")
    found, total = h.service.findings()
    assert total == 2 and {f.exception.rule for f in found} == {"inventory-sync", "invoice-match"}
    inventory = next(f for f in found if f.exception.rule == "inventory-sync")
    assert inventory.now is not None and inventory.now["differs"] == 1
    assert inventory.now["detail"]["summary"] == "SKU-1@DAL: erp 10 vs wms 8 (difference 2, tolerance 0)"
    assert inventory.exception.context["difference"] == 1  # as it was when it opened
    only, total = h.service.findings("inventory-sync")
    assert total == 1 and only[0].exception.key == "SKU-1@DAL"
