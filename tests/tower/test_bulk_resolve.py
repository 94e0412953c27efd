"""Resolving an incident's worth of exceptions at once: `POST /api/exceptions/resolve` and
`tower exceptions resolve`."""

from __future__ import annotations

from click.testing import CliRunner

from kernel.api_auth import token_id
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore
from kernel.store import Store
from tests.support import RunningTower
from tests.tower.test_api_exceptions import OPENED, seed
from tower.cli import main

NOTE = "ERP outage INC-123: releases held by the ERP"


def test_every_matching_active_exception_is_resolved_with_the_note(tower: RunningTower, store: Store) -> None:
    so1, so2, cut1, cut3, errors = seed(store)
    exceptions = ExceptionStore(store, FixedClock(OPENED))
    exceptions.acknowledge(so2.id, actor="ann")
    exceptions.resolve(cut1.id, actor="ann")  # already resolved: not touched again
    body = {"rule": "order-release", "resolution": "erp_outage", "note": NOTE}
    with tower.api("viewer") as http:
        assert http.post("/api/exceptions/resolve", json=body).status_code == 403
    with tower.api("admin") as http:
        assert http.post("/api/exceptions/resolve", json={"note": NOTE}).status_code == 422  # no filter
        assert http.post("/api/exceptions/resolve", json={"rule": "order-release"}).status_code == 422  # no note
        # a misspelt filter is refused by name, not dropped (which would widen the resolve to the whole rule)
        typo = http.post("/api/exceptions/resolve", json={**body, "warehuse": "ATL", "dry_run": True})
        assert typo.status_code == 422 and typo.json()["detail"][0]["loc"] == ["body", "warehuse"]
        one = so1.id
        misspelt = http.post(f"/api/exceptions/{one}/resolve", json={"resolutoin": "false_positive"})
        assert misspelt.status_code == 422 and exceptions.get(one).status == "open"
        dry = http.post("/api/exceptions/resolve", json={**body, "dry_run": True}).json()
        assert dry == {"matched": 2, "resolved": 0, "ids": [so1.id, so2.id], "dry_run": True}
        assert exceptions.get(so1.id).status == "open"  # a dry run changes nothing
        done = http.post("/api/exceptions/resolve", json=body).json()
        again = http.post("/api/exceptions/resolve", json=body).json()
    assert done == {"matched": 2, "resolved": 2, "ids": [so1.id, so2.id], "dry_run": False}
    assert again == {"matched": 0, "resolved": 0, "ids": [], "dry_run": False}
    admin = token_id(tower.api_token("admin"))
    for record in (exceptions.get(so1.id), exceptions.get(so2.id)):
        assert (record.status, record.resolution) == ("resolved", "erp_outage")
        last = exceptions.audit(record.id)[-1]
        assert (last["action"], last["actor"], last["detail"]["note"]) == ("resolved", admin, NOTE)
    assert exceptions.get(cut1.id).resolution == "fixed"  # the earlier resolution stands
    assert [exceptions.get(r.id).status for r in (cut3, errors)] == ["open", "open"]


def test_at_most_max_oldest_first_and_by_age(tower: RunningTower, store: Store) -> None:
    records = seed(store)
    with tower.api("admin") as http:
        old = http.post("/api/exceptions/resolve", json={"kind": "business", "note": NOTE, "min_age_hours": 1e5})
        day = http.post(
            "/api/exceptions/resolve", json={"kind": "business", "note": NOTE, "min_age_hours": 24, "dry_run": True}
        )
        answer = http.post("/api/exceptions/resolve", json={"kind": "business", "note": NOTE, "max": 3}).json()
    assert old.json()["matched"] == 0  # none opened 100,000 hours ago
    assert day.json()["matched"] == 4  # opened on 2 November, the tower's clock is today's
    assert answer["matched"] == 4 and answer["ids"] == [r.id for r in records[:3]]


def test_the_cli_counts_first_and_resolves_with_yes(tower: RunningTower, store: Store) -> None:
    seed(store)
    env = {"TOWER_TOKEN": tower.api_token("admin"), "TOWER_URL": tower.http_url}
    args = ["exceptions", "resolve", "--rule", "ship-cutoff", "--warehouse", "RNO", "--note", NOTE]
    counted = CliRunner().invoke(main, args, env=env)
    assert counted.exit_code == 0, counted.output
    assert counted.output == (
        "2 active exceptions match (rule ship-cutoff, warehouse RNO); pass --yes to resolve them (fixed)\n"
    )
    done = CliRunner().invoke(main, [*args, "--yes"], env=env)
    assert done.output == "resolved 2 of 2 active exceptions (rule ship-cutoff, warehouse RNO) as fixed\n"
    aged = CliRunner().invoke(
        main, ["exceptions", "resolve", "--kind", "technical", "--older-than", "2", "--note", NOTE], env=env
    )
    assert aged.output.startswith("1 active exceptions match (kind technical, opened 2 h ago or more);")
    unfiltered = CliRunner().invoke(main, ["exceptions", "resolve", "--note", NOTE], env=env)
    assert unfiltered.exit_code == 2 and "name at least one of --rule" in unfiltered.output
