"""The reconcile API and `tower reconcile` against an in-process tower: run now (JSON or streamed progress),
the runs, the open findings side by side."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from click.testing import CliRunner

from reconcilers.inventory import InventoryReconciler
from tests.factories import event_row
from tests.reconcilers.factories import order_flow, snapshot
from tests.reconcilers.test_pull import pulled_rule, settings, wms_database
from tests.support import RunningTower
from tower.cli import main


def seed(tower: RunningTower) -> None:
    """A stock difference and an invoice billed 20% over, at the tower's (wall) clock."""
    assert tower.tower is not None
    now = datetime.now(UTC)
    events = [
        snapshot("erp", "SKU-1", "DAL", 10, now - timedelta(minutes=5)),
        snapshot("wms/dallas", "SKU-1", "DAL", 7, now - timedelta(minutes=5)),
        *order_flow(1, now - timedelta(days=1), invoiced_amount=120.0),
    ]
    tower.tower.store.insert("business_events", [event_row(e) for e in events])


def test_run_runs_and_findings_over_http(tower: RunningTower) -> None:
    seed(tower)
    with tower.api("admin") as http:
        answer = http.post("/api/reconcile/run")
        assert answer.status_code == 200, answer.text
        runs = answer.json()["runs"]
        assert [(r["rule"], r["status"], r["opened"]) for r in runs] == [
            ("inventory-sync", "ok", 1),
            ("invoice-match", "ok", 1),
        ]

        missing = http.post("/api/reconcile/run", params={"rule": "nope"})
        assert missing.status_code == 404
        assert missing.json()["detail"] == "no reconciliation rule 'nope'; rules: inventory-sync, invoice-match"

    with tower.api("viewer") as http:
        listed = http.get("/api/reconcile/runs", params={"rule": "invoice-match"}).json()["items"]
        assert [r["run_id"] for r in listed] == [runs[1]["run_id"]]
        assert listed[0]["trigger"] == "api" and listed[0]["rows_compared"] == 1

        page = http.get("/api/reconcile/findings").json()
        assert page["total"] == 2
        by_rule = {item["rule"]: item for item in page["items"]}
        stock = by_rule["inventory-sync"]
        assert stock["key"] == "SKU-1@DAL" and stock["check"] == "quantity" and stock["differs"] is True
        assert [(s["name"], s["quantity"]) for s in stock["sides"]] == [("erp", 10), ("wms", 7)]
        assert stock["differences"] == {"difference": 3, "tolerance": 0}
        assert stock["summary"] == "SKU-1@DAL: erp 10 vs wms/dallas 7 (difference 3, tolerance 0)"
        bill = by_rule["invoice-match"]
        assert bill["check"] == ["amount"] and bill["owner"] == "finance"
        assert [s["name"] for s in bill["sides"]] == ["invoice", "invoiced (order total)", "order", "shipped"]
        assert bill["differences"]["amount_pct"] == 20.0

        only = http.get("/api/reconcile/findings", params={"rule": "invoice-match"}).json()
        assert only["total"] == 1
        # an offset past 2**32 once wrapped around to the first page
        assert http.get("/api/reconcile/findings", params={"offset": 2**32}).json() == {"items": [], "total": 2}
        assert http.get("/api/reconcile/findings", params={"rule": "nope"}).status_code == 404
        assert http.post("/api/reconcile/run").status_code == 403


def test_run_streams_progress_then_the_result(tower: RunningTower) -> None:
    seed(tower)
    with (
        tower.api("admin") as http,
        http.stream("POST", "/api/reconcile/run", params={"rule": "inventory-sync", "stream": "true"}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [orjson.loads(line) for line in response.iter_lines() if line]
    progress = [(m["rule"], m["phase"]) for m in lines if m["event"] == "progress"]
    assert progress == [
        ("inventory-sync", "compare"),
        ("inventory-sync", "apply"),
        ("inventory-sync", "record"),
        ("inventory-sync", "done"),
    ]
    result = lines[-1]
    assert result["event"] == "result" and [r["opened"] for r in result["runs"]] == [1]


def test_the_reconcile_command(tower: RunningTower) -> None:
    seed(tower)
    token = tower.api_token("admin")
    result = CliRunner().invoke(main, ["reconcile", "--url", tower.http_url, "--token", token])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["inventory-sync", "ok"], ["invoice-match", "ok"]]
    assert "compared         1  differing       1  opened     1" in lines[1]
    # stderr is not a terminal here: the progress comes as lines, none cut
    progress = [line.split("] ", 1)[1] for line in result.stderr.splitlines()]
    assert progress[0] == "inventory-sync: compare (freshness and pairs), step 1 of 3"
    assert progress[-1] == (
        "invoice-match: done (1 compared, 1 differing: 1 opened, 0 resolved, 0 reopened), step 3 of 3"
    )

    result = CliRunner().invoke(
        main, ["reconcile", "invoice-match", "--json", "--url", tower.http_url, "--token", token]
    )
    assert result.exit_code == 0, result.output
    (run,) = orjson.loads(result.stdout)  # the progress bar goes to stderr
    assert run["rule"] == "invoice-match" and run["status"] == "ok" and run["opened"] == 0  # opened by the first run

    result = CliRunner().invoke(main, ["reconcile", "nope", "--url", tower.http_url, "--token", token])
    assert result.exit_code == 2
    assert "no reconciliation rule 'nope'" in result.output

    result = CliRunner().invoke(main, ["reconcile", "--url", "http://127.0.0.1:9", "--token", token])
    assert result.exit_code == 2 and "cannot reach the tower" in result.output


def test_the_reconcile_command_shows_a_failed_runs_error_as_it_is(tower: RunningTower, tmp_path: Path) -> None:
    assert tower.tower is not None and tower.tower.reconcile is not None
    service = tower.tower.reconcile
    # the replica holds placeholders in brackets, as a spreadsheet export does
    url = wms_database(tmp_path / "wms.db", [("SKU-1", "DAL", 4, None)])
    with sqlite3.connect(tmp_path / "wms.db") as db:
        db.execute("INSERT INTO stock VALUES ('SKU-2', 'DAL', '[n/a]', NULL)")
    service.settings = settings(wms_replica=url)
    service.reconcilers["inventory-sync"] = InventoryReconciler(service.store, pulled_rule())
    token = tower.api_token("admin")
    result = CliRunner().invoke(main, ["reconcile", "inventory-sync", "--url", tower.http_url, "--token", token])
    assert result.exit_code == 1, result.output
    assert "error in inventory-sync: PullError: pull wms from wms_replica: row 2: quantity '[n/a]' is not a number" in (
        result.stderr
    )
