"""The dashboard's API client against the demo tower: readable errors, optional routes, caching that a change
clears; the last-visit file; the `tower dashboard` command line."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
import streamlit as st

from dashboard import client
from dashboard.client import ApiError, TowerApi, items_of
from dashboard.visits import LastVisits
from tests.dashboard.conftest import DemoTower
from tower.commands.dashboard import dashboard_url
from tower.dashboard_process import APP, streamlit_command


@pytest.fixture
def counted(demo_tower: DemoTower, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the HTTP requests the client makes to the demo tower (a fresh, counting pooled client)."""
    st.cache_data.clear()
    calls: list[str] = []
    http = httpx.Client(
        base_url=demo_tower.url, timeout=30.0, event_hooks={"request": [lambda r: calls.append(r.url.path)]}
    )
    monkeypatch.setitem(client._clients, (demo_tower.url, 30.0), http)
    return calls


def test_reads_are_cached_and_a_change_clears_the_cache(demo_tower: DemoTower, counted: list[str]) -> None:
    api = TowerApi(demo_tower.url, demo_tower.token("operator"))
    target = api.exceptions({"status": "open", "rule": "invoice-posting"}, limit=1)["items"][0]
    assert api.exception(target["id"])["status"] == "open"
    assert api.exception(target["id"])["status"] == "open"
    assert counted.count(f"/api/exceptions/{target['id']}") == 1  # the second read came from the cache
    api.add_note(target["id"], "looked at it")
    trail = [e["name"] for e in api.exception(target["id"])["timeline"] if e["kind"] == "audit"]
    assert trail[-1] == "note"  # read again after the change, not from the cache
    assert counted.count(f"/api/exceptions/{target['id']}") == 2


def test_the_cache_keeps_tokens_apart(demo_tower: DemoTower, counted: list[str]) -> None:
    assert TowerApi(demo_tower.url, demo_tower.token("viewer")).whoami()["role"] == "viewer"
    assert TowerApi(demo_tower.url, demo_tower.token("finance")).whoami()["role"] == "finance"
    assert counted == ["/api/whoami", "/api/whoami"]


def test_errors_are_readable(demo_tower: DemoTower, counted: list[str]) -> None:
    with pytest.raises(ApiError) as unknown:
        TowerApi(demo_tower.url, "not-a-token").whoami()
    assert unknown.value.status == 401 and "does not accept this token" in unknown.value.message
    viewer = TowerApi(demo_tower.url, demo_tower.token("viewer"))
    some_id = viewer.exceptions({}, limit=1)["items"][0]["id"]
    with pytest.raises(ApiError) as refused:
        viewer.acknowledge(some_id)
    assert (
        refused.value.status == 403
        and refused.value.message == "Your role may not do this (role 'viewer' may not do this)."
    )
    with pytest.raises(ApiError) as missing:
        viewer.exception("no-such-id")
    assert missing.value.status == 404 and "no exception with id 'no-such-id'" in missing.value.message
    with pytest.raises(ApiError) as invalid:
        viewer.get("/api/overview", tz="Mars/Olympus")
    assert invalid.value.detail == "query.tz: unknown time zone 'Mars/Olympus'"
    with pytest.raises(ApiError) as down:
        TowerApi("http://127.0.0.1:9", "t").whoami()
    assert down.value.status == 0 and down.value.message.startswith("The tower cannot be reached")


def test_optional_routes_answer_none_when_the_tower_lacks_them(demo_tower: DemoTower, counted: list[str]) -> None:
    api = TowerApi(demo_tower.url, demo_tower.token("viewer"))
    assert api.optional("/api/no-such-route") is None
    with pytest.raises(ApiError):
        api.get("/api/no-such-route")


def test_items_of_reads_the_shapes_lists_come_in() -> None:
    assert items_of([{"a": 1}, "x"]) == [{"a": 1}]
    assert items_of({"items": [{"a": 1}], "total": 1}) == [{"a": 1}]
    assert items_of({"runs": [{"b": 2}]}, "runs") == [{"b": 2}]
    assert items_of({"total": 0}) == []


def test_the_report_download_is_the_reports_api_answer(demo_tower: DemoTower, counted: list[str]) -> None:
    api = TowerApi(demo_tower.url, demo_tower.token("finance"))
    first, until = date(2026, 11, 1), date(2026, 11, 5)
    with demo_tower.api("finance") as http:
        expected = http.get(
            "/api/reports/sla-breaches", params={"from": "2026-11-01", "to": "2026-11-05", "format": "csv"}
        )
    if expected.status_code == 404:
        pytest.skip("this tower has no reports route yet")
    assert expected.status_code == 200
    assert api.report(first, until, "csv") == expected.content
    xlsx = api.report(first, until, "xlsx")
    assert xlsx[:2] == b"PK"  # a zip: the XLSX container
    with pytest.raises(ApiError) as refused:
        TowerApi(demo_tower.url, demo_tower.token("viewer")).report(first, until, "csv")
    assert refused.value.status == 403


def test_the_queue_download_is_the_export_of_its_filters(demo_tower: DemoTower, counted: list[str]) -> None:
    api = TowerApi(demo_tower.url, demo_tower.token("viewer"))
    filters = {"status": "active", "owner": "integration", "sort": "oldest", "rule": "", "customer": ""}
    active = api.exceptions({"status": "active", "owner": "integration", "sort": "oldest"})
    body = api.exceptions_csv(filters, rows=10)
    lines = body.decode().splitlines()
    assert lines[0].startswith("id,rule,key,") and len(lines) == 1 + active["total"]
    assert [line.split(",")[0] for line in lines[1:]] == [e["id"] for e in active["items"]]
    assert len(api.exceptions_csv(filters, rows=1).decode().splitlines()) == 2


def test_last_visits_are_remembered_per_token(tmp_path: Path) -> None:
    visits = LastVisits(tmp_path / "state")
    assert visits.previous("abc") is None
    at = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)
    visits.record("abc", at)
    visits.record("def", datetime(2026, 11, 5, tzinfo=UTC))
    assert LastVisits(tmp_path / "state").previous("abc") == at
    (tmp_path / "state" / "last_visits.json").write_text("{not json")
    assert visits.previous("abc") is None
    visits.record("abc", at)  # a broken file is replaced
    assert visits.previous("abc") == at


def test_the_dashboard_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    command = streamlit_command(APP, "0.0.0.0", 8600)
    assert command[1:5] == ["-m", "streamlit", "run", str(APP)] and APP.is_file()
    assert {"--server.headless=true", "--server.port=8600", "--server.address=0.0.0.0"} <= set(command)
    assert "--browser.gatherUsageStats=false" in command
    monkeypatch.delenv("TOWER_DASHBOARD_API_URL", raising=False)
    monkeypatch.setenv("TOWER_URL", "http://tower:4318/")
    assert dashboard_url(None) == "http://tower:4318"
    monkeypatch.setenv("TOWER_DASHBOARD_API_URL", "http://api:1")
    assert dashboard_url(None) == "http://api:1"
    assert dashboard_url("http://given:2") == "http://given:2"
