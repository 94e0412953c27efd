"""Process roles (`tower serve --role`): what each role serves and runs, the refusals of split roles on
the embedded store, and two schedulers on one store where only the lease holder runs jobs."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from click.testing import CliRunner
from fastapi import FastAPI
from pydantic import SecretStr

from kernel.clock import FixedClock
from kernel.jobs import JobRegistry, SchedulerSettings
from kernel.lease import Lease, LeaseSettings
from kernel.settings import Settings, StoreSettings
from kernel.store.embedded import EmbeddedStore
from tests.factories import api_token, make_event, make_settings, token_of
from tests.support import free_port
from tower.app import build_tower, create_app
from tower.cli import main
from tower.roles import ROLES, RoleError, check_role, plan_for
from tower.scheduler import Scheduler

AT = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)
FAST = 0.02  # seconds between job runs and lease ticks in these tests
WAIT = 10.0  # the most a test waits for something that normally takes milliseconds
LEASE = LeaseSettings(mode="always", ttl_seconds=30, renew_interval_seconds=10, max_clock_skew_seconds=2)


def server_settings(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path / "data")
    settings.store = StoreSettings(
        backend="server", url=SecretStr("http://tower:secret@clickhouse:8123"), data_dir=tmp_path / "data"
    )
    return settings


# --- refusals, before anything opens ------------------------------------------------------------


@pytest.mark.parametrize("role", ["collector", "scheduler", "api"])
def test_split_roles_refuse_the_embedded_store(role: str, tmp_path: Path) -> None:
    with pytest.raises(RoleError, match="TOWER_STORE_BACKEND=server"):
        check_role(role, make_settings(tmp_path / "data"))
    assert check_role("all", make_settings(tmp_path / "data")).jobs


def test_split_roles_need_the_url_and_the_tokens_of_what_they_serve(tmp_path: Path) -> None:
    settings = server_settings(tmp_path)
    assert check_role("collector", settings).doors
    settings.store.url = None
    with pytest.raises(RoleError, match="TOWER_STORE_URL is required"):
        check_role("scheduler", settings)
    settings = server_settings(tmp_path)
    settings.ingest.tokens = {}
    with pytest.raises(RoleError, match="TOWER_INGEST_TOKENS"):
        check_role("collector", settings)
    assert check_role("scheduler", settings).jobs  # the scheduler serves no door: no tokens needed
    settings.api.tokens = {}
    with pytest.raises(RoleError, match="TOWER_API_TOKENS"):
        check_role("api", settings)
    with pytest.raises(RoleError, match="roles are all, collector, scheduler, api"):
        plan_for("worker")


def test_serve_with_a_split_role_on_the_embedded_store_exits_with_the_reason(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = CliRunner().invoke(
        main, ["serve", "--role", "scheduler", "--data-dir", str(data)], env={"TOWER_STORE_BACKEND": "embedded"}
    )
    assert result.exit_code == 1
    assert "--role scheduler needs a ClickHouse server" in result.output
    assert not data.exists(), "nothing was opened or generated"
    result = CliRunner().invoke(main, ["serve", "--data-dir", str(data)], env={"TOWER_ROLE": "api"})
    assert result.exit_code == 1 and "--role api needs a ClickHouse server" in result.output


# --- what each role serves and runs --------------------------------------------------------------


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[httpx.Client]:
    """`app` served by uvicorn on a free port in a thread (its lifespan starts and stops the tower)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started or not thread.is_alive()) and server.started
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def lease_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler takes the lease even on the embedded store (TOWER_LEASE_MODE=always)."""
    monkeypatch.setenv("TOWER_LEASE_MODE", "always")


@pytest.mark.parametrize("role", ROLES)
def test_each_role_serves_and_runs_its_part(
    role: str, store: EmbeddedStore, tmp_path: Path, lease_always: None
) -> None:
    settings = make_settings(tmp_path / "data", grpc_port=free_port())
    # the scheduler is enabled but nothing is due during the test: no job runs on start
    tower = build_tower(
        settings, clock=FixedClock(AT), store=store, scheduler=SchedulerSettings(run_on_start=False), role=role
    )
    plan = plan_for(role)
    app = create_app(tower)
    paths = set(app.openapi()["paths"])
    assert {"/healthz", "/readyz"} <= paths
    assert ("/v1/traces" in paths and "/v1/logs" in paths and "/v1/events" in paths) is plan.doors
    assert any(p.startswith("/api/") for p in paths) is plan.api
    assert not plan.doors or not any(p.startswith("/api/") for p in paths) or role == "all"
    with serving(app) as http:
        assert tower.scheduler.running is plan.jobs
        assert bool(tower.background) is plan.doors, "the OTLP/gRPC server runs only where the doors are"
        ready = http.get("/readyz").json()
        assert ready["role"] == role
        if plan.jobs:
            assert ready["scheduler"]["running"] and "sla-evaluate" in ready["scheduler"]["jobs"]
            assert ready["scheduler"]["lease"]["held"] is True
        else:
            assert "scheduler" not in ready
        event = make_event("order.accepted", 1)  # BASE_TIME + 1 minute: inside the window around AT
        sent = http.post(
            "/v1/events",
            json=event,
            headers={
                "Authorization": f"Bearer {token_of(settings.ingest.tokens, 'erp')}",
                "Content-Type": "application/cloudevents+json",
            },
        )
        assert sent.status_code == (200 if plan.doors else 404)
        admin = {"Authorization": f"Bearer {api_token(settings, 'admin')}"}
        listed = http.get("/api/exceptions", headers=admin)
        assert listed.status_code == (200 if plan.api else 404)
        # every process has its own metrics; only those serving the API read the store's counts
        metrics = http.get("/metrics", headers=admin)
        assert metrics.status_code == 200
        assert f'role="{role}"' in metrics.text
        assert ("tower_metrics_store_read_ok 1.0" in metrics.text) is plan.api
        assert ('tower_ingest_rows_total{table="business_events"} 1.0' in metrics.text) is plan.doors
        assert ("tower_scheduler_running 1.0" in metrics.text) is plan.jobs
    assert not tower.scheduler.running
    stored = store.query("SELECT count() AS n FROM business_events WHERE id = {id:String}", {"id": event["id"]})
    assert int(stored[0]["n"]) == (1 if plan.doors else 0)
    if plan.jobs:  # stopping released the lease: a standby may take it at once
        state = Lease(store, FixedClock(AT), LEASE).current()
        assert state is not None and state.expires_at == AT


# --- two schedulers on one store ---------------------------------------------------------------


class CrashingLease(Lease):
    """A lease whose process dies without releasing it (kill -9): a standby must wait for the TTL."""

    def release(self) -> None:
        return None


Counted = tuple[Scheduler, list[int]]


def counting(lease: Lease) -> Counted:
    """A scheduler under `lease` with one job that records each invocation."""
    calls: list[int] = []
    registry = JobRegistry()
    registry.add("evaluate", lambda ctx: calls.append(ctx.run), interval_seconds=FAST)
    scheduler = Scheduler(registry, lease.clock, SchedulerSettings(), lease=lease, lease_interval_seconds=FAST)
    return scheduler, calls


def wait_until(condition: Callable[[], bool]) -> bool:
    """Poll `condition` until it holds (True) or WAIT seconds passed (False)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(FAST / 2)
    return True


@pytest.fixture
def started() -> Iterator[list[Scheduler]]:
    """Schedulers a test starts; stopped at the end whatever happened."""
    running: list[Scheduler] = []
    yield running
    for scheduler in running:
        scheduler.stop()


def test_only_the_holder_runs_jobs_and_a_standby_takes_over_when_it_stops(
    store: EmbeddedStore, started: list[Scheduler]
) -> None:
    clock = FixedClock(AT)
    a, a_calls = counting(Lease(store, clock, LEASE, holder="a"))
    b, b_calls = counting(Lease(store, clock, LEASE, holder="b"))
    started += [a, b]
    a.start()
    b.start()
    assert wait_until(lambda: len(a_calls) >= 10 and b.skipped >= 10)
    assert b_calls == [], "the standby skipped every due run"
    a.stop()  # a clean stop releases the lease: b takes over at its next tick, without waiting for the TTL
    ran = len(a_calls)
    assert wait_until(lambda: len(b_calls) >= 10)
    assert len(a_calls) == ran
    assert b_calls[:3] == [1, 2, 3], "the new holder's first run is its run 1 (a full evaluation for sla-evaluate)"


def test_a_standby_waits_for_a_dead_holders_lease_to_expire(store: EmbeddedStore, started: list[Scheduler]) -> None:
    clock = FixedClock(AT)
    a, a_calls = counting(CrashingLease(store, clock, LEASE, holder="a"))
    b, b_calls = counting(Lease(store, clock, LEASE, holder="b"))
    started += [a, b]
    a.start()
    assert a.wait_for_runs("evaluate", 3, WAIT)
    b.start()
    a.stop()  # dies without releasing
    ran = len(a_calls)
    skipped = b.skipped
    assert wait_until(lambda: b.skipped >= skipped + 10)
    assert b_calls == [], "the lease has not expired on the clock: b keeps waiting"
    clock.advance(timedelta(seconds=LEASE.ttl_seconds))
    assert wait_until(lambda: len(b_calls) >= 5)
    assert len(a_calls) == ran


def test_a_holder_that_lost_the_lease_stops_running_jobs(store: EmbeddedStore, started: list[Scheduler]) -> None:
    # b's clock is 31 s ahead, beyond the assumed skew: to b, a's lease has expired, so b claims the next term
    a, a_calls = counting(Lease(store, FixedClock(AT), LEASE, holder="a"))
    b, b_calls = counting(Lease(store, FixedClock(AT + timedelta(seconds=31)), LEASE, holder="b"))
    started += [a, b]
    a.start()
    assert a.wait_for_runs("evaluate", 3, WAIT)
    b.start()
    assert wait_until(lambda: len(b_calls) >= 5)
    frozen = len(a_calls)
    assert wait_until(lambda: len(b_calls) >= 15)
    assert len(a_calls) <= frozen + 1, "a checks the store before each run and stops (one run may have begun)"
    assert a.lease is not None and not a.lease.holds()
