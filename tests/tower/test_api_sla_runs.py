"""`GET /api/sla/runs`: the SLA engine's runs from `sla_runs`, one item per run, newest first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kernel.store import Store
from sla_rules.model import SlaRule
from tests.factories import event_row, make_event
from tests.support import RunningTower


def runs(tower: RunningTower, **params: Any) -> list[dict[str, Any]]:
    with tower.api("viewer") as http:
        response = http.get("/api/sla/runs", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_runs_newest_first_with_mode_duration_and_changes(tower: RunningTower, store: Store) -> None:
    assert tower.tower is not None
    assert runs(tower) == []
    now = datetime.now(UTC)
    accepted = (now - timedelta(hours=3)).isoformat()
    store.insert("business_events", [event_row(make_event("order.accepted", time=accepted, data={"order_id": "SO-R"}))])
    first = tower.tower.sla.evaluate(full=True)
    assert first.errors == {}
    tower.tower.sla.evaluate()  # nothing new: an incremental run that changes nothing

    latest, earlier = runs(tower)
    sla_rules = [r for r in tower.tower.rules.enabled if isinstance(r, SlaRule)]
    assert earlier["mode"] == "full" and earlier["rules"] == len(sla_rules)
    assert earlier["cases_changed"] >= 1 and earlier["opened"] == 1  # SO-R missed its 2-hour release
    assert latest["mode"] == "incremental" and latest["cases_changed"] == 0 and latest["opened"] == 0
    assert latest["duration_ms"] > 0 and earlier["duration_ms"] > 0
    assert datetime.fromisoformat(latest["started_at"]) >= datetime.fromisoformat(earlier["started_at"])
    assert latest["run_id"] != earlier["run_id"]
    assert [r["run_id"] for r in runs(tower, limit=1)] == [latest["run_id"]]


def test_limit_is_checked(tower: RunningTower) -> None:
    with tower.api("viewer") as http:
        response = http.get("/api/sla/runs", params={"limit": 0})
    assert response.status_code == 422
