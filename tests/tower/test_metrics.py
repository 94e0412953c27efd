"""GET /metrics: the tower's own metrics in the Prometheus text format, parsed with prometheus_client's own
parser, against a real tower (ingest, HTTP answers, job runs, the store's counts, who may scrape)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message, Receive, Scope, Send

import tests.support
from alerting.outbox import Outbox
from kernel.api_auth import ROLES
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore, NewException
from kernel.jobs import JobRegistry, SchedulerSettings
from kernel.lease import Lease, LeaseSettings
from kernel.metrics import CONTENT_TYPE, TowerMetrics
from kernel.store.embedded import EmbeddedStore
from tests.factories import make_event, settings_with_every_role
from tests.support import RunningTower, start_in_process
from tower.metrics import HttpMetricsMiddleware, SchedulerCollector, StoreReadings, job_observer
from tower.scheduler import Scheduler

BATCH = {"Content-Type": "application/cloudevents-batch+json"}
AT = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the scrape has no such series (a counter not incremented yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def gauge(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; the series must be there."""
    return samples[(name, frozenset(labels.items()))]


def families(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def scrape(running: RunningTower, role: str = "viewer") -> Samples:
    with running.api(role) as api:
        response = api.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    return parse(response.text)


def test_ingest_and_http_answers_are_counted(tower: RunningTower) -> None:
    before = scrape(tower)
    batch = [make_event("order.accepted", 1), make_event("order.released", 1), make_event("order.accepted", 2)]
    bad = make_event("order.accepted", 3)
    del bad["id"]
    with tower.client("erp") as http:
        answer = http.post("/v1/events", content=orjson.dumps([*batch, bad]), headers=BATCH)
    assert answer.json()["accepted"] == 3
    with httpx.Client(base_url=tower.http_url) as http:
        assert http.get("/no/such/path/9f2c").status_code == 404
        assert http.request("BREW", "/no/such/pot").status_code == 400  # refused by the HTTP server itself
    after = scrape(tower)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("tower_ingest_rows_total", table="business_events") == 3
    assert grew("tower_ingest_rows_total", table="dead_letters") == 1
    assert grew("tower_ingest_refused_records_total", door="events") == 1
    status = str(answer.status_code)
    assert grew("tower_http_requests_total", method="POST", route="/v1/events", status=status) == 1
    assert grew("tower_http_request_duration_seconds_count", method="POST", route="/v1/events") == 1
    # a path no route matches is one series, whatever the path: a scan cannot create series
    assert grew("tower_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert not any("9f2c" in dict(labels).get("route", "") for _, labels in after)
    assert not any(dict(labels).get("method") == "BREW" for _, labels in after)
    # the scrape before this one was counted under its own route
    assert value(after, "tower_http_requests_total", method="GET", route="/metrics", status="200") >= 1
    # the writer's own view: every row handed over was stored, nothing waits, nothing spooled
    assert grew("tower_pipeline_rows_total", outcome="stored") == 4
    assert gauge(after, "tower_pipeline_queued_rows") == 0
    assert gauge(after, "tower_spool_batches") == 0
    assert gauge(after, "tower_store_down") == 0
    (info,) = [dict(labels) for name, labels in after if name == "tower_build_info"]
    assert (info["role"], info["backend"], bool(info["version"])) == ("all", "embedded", True)
    assert gauge(after, "process_resident_memory_bytes") > 0


def test_the_store_counts_are_read_at_most_once_per_cache_window(store: EmbeddedStore) -> None:
    exceptions = ExceptionStore(store, FixedClock(AT))
    found = [
        NewException("order-release", "SO-1", "business", "customer_service", "medium"),
        NewException("ship-cutoff", "SO-2", "business", "warehouse", "high"),
        NewException("ship-cutoff", "SO-3", "business", "warehouse", "high"),
    ]
    opened = exceptions.open_many(found)
    exceptions.acknowledge(opened[1].id, "test")
    now = [100.0]
    metrics = TowerMetrics(process=False)
    metrics.register(StoreReadings(store, Outbox(store, FixedClock(AT)), cache_seconds=15, monotonic=lambda: now[0]))

    samples = parse(metrics.render().decode())
    assert active(samples) == {
        ("customer_service", "medium", "business", "open"): 1,
        ("warehouse", "high", "business", "open"): 1,
        ("warehouse", "high", "business", "acknowledged"): 1,
    }
    assert gauge(samples, "tower_metrics_store_read_ok") == 1

    exceptions.resolve(opened[0].id, "test")
    now[0] += 14  # within the window: the same reading
    samples = parse(metrics.render().decode())
    labels = {"owner": "customer_service", "severity": "medium", "kind": "business", "status": "open"}
    assert gauge(samples, "tower_exceptions_active", **labels) == 1
    now[0] += 2  # past it: read again; the resolved exception is no longer active
    assert active(parse(metrics.render().decode())) == {
        ("warehouse", "high", "business", "open"): 1,
        ("warehouse", "high", "business", "acknowledged"): 1,
    }


def active(samples: Samples) -> dict[tuple[str, ...], float]:
    """tower_exceptions_active as (owner, severity, kind, status) -> count."""
    found: dict[tuple[str, ...], float] = {}
    for (name, labels), n in samples.items():
        if name == "tower_exceptions_active":
            by = dict(labels)
            found[(by["owner"], by["severity"], by["kind"], by["status"])] = n
    return found


def test_outbox_dead_letters_and_replays_are_counted_by_status(tower: RunningTower) -> None:
    bad = [make_event("order.accepted", n) for n in (7, 8)]  # two records (a copy sent twice is stored once)
    for record in bad:
        del record["id"]
    with tower.client("erp") as http:
        http.post("/v1/events", content=orjson.dumps(bad), headers=BATCH)
    samples = scrape(tower)
    assert gauge(samples, "tower_dead_letters_pending", door="events") == 2
    # empty tables give an empty family, not an error; the outbox counts every status, 0 included
    assert gauge(samples, "tower_metrics_store_read_ok") == 1
    assert not [k for k in samples if k[0] == "tower_replay_requests"]
    outbox = {
        dict(labels)["status"]: n for (name, labels), n in samples.items() if name == "tower_alert_outbox_messages"
    }
    assert outbox == {"pending": 0, "attempting": 0, "sent": 0, "failed": 0, "superseded": 0}


def test_a_store_that_cannot_answer_fails_the_reading_not_the_scrape(store: EmbeddedStore) -> None:
    metrics = TowerMetrics(process=False)
    metrics.register(StoreReadings(store, Outbox(store, FixedClock(AT)), cache_seconds=0))
    store.command("RENAME TABLE replay_requests TO replay_requests_away")
    try:
        samples = parse(metrics.render().decode())
    finally:
        store.command("RENAME TABLE replay_requests_away TO replay_requests")
    assert gauge(samples, "tower_metrics_store_read_ok") == 0
    assert not [k for k in samples if k[0] == "tower_exceptions_active"]
    samples = parse(metrics.render().decode())  # the table is back: so are the counts
    assert gauge(samples, "tower_metrics_store_read_ok") == 1


def test_job_runs_are_counted_by_outcome_with_their_duration(store: EmbeddedStore) -> None:
    clock = FixedClock(AT)
    registry = JobRegistry()

    def fails(_: object) -> None:
        raise RuntimeError("boom")

    registry.add("works", lambda ctx: {"done": True}, interval_seconds=60)
    registry.add("fails", fails, interval_seconds=60)
    metrics = TowerMetrics(process=False)
    scheduler = Scheduler(registry, clock, SchedulerSettings(enabled=False), observers=[job_observer(metrics)])
    scheduler.run_job("works")
    scheduler.run_job("works")
    scheduler.run_job("fails")
    samples = parse(metrics.render().decode())
    assert value(samples, "tower_job_runs_total", job_name="works", outcome="ok") == 2
    assert value(samples, "tower_job_runs_total", job_name="fails", outcome="error") == 1
    assert value(samples, "tower_job_runs_total", job_name="fails", outcome="ok") == 0
    assert value(samples, "tower_job_duration_seconds_count", job_name="works") == 2
    assert value(samples, "tower_job_duration_seconds_count", job_name="fails") == 1
    # the last success is on the tower's clock: the fixed time plus the run's duration
    last = gauge(samples, "tower_job_last_success_timestamp_seconds", job_name="works")
    assert AT.timestamp() <= last < (AT + timedelta(seconds=5)).timestamp()
    assert ("tower_job_last_success_timestamp_seconds", frozenset({"job_name": "fails"}.items())) not in samples
    assert gauge(samples, "tower_job_consecutive_failures", job_name="works") == 0
    assert gauge(samples, "tower_job_consecutive_failures", job_name="fails") == 1
    scheduler.run_job("fails")
    samples = parse(metrics.render().decode())
    assert gauge(samples, "tower_job_consecutive_failures", job_name="fails") == 2


def test_metrics_take_any_api_token_and_refuse_the_rest(
    store: EmbeddedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tests.support, "make_settings", settings_with_every_role)
    with start_in_process(tmp_path, store) as tower:
        for role in ROLES:
            scrape(tower, role)
        refused(tower)


def refused(tower: RunningTower) -> None:
    """No token, or an ingest token, is a 401."""
    with httpx.Client(base_url=tower.http_url) as http:
        assert http.get("/metrics").status_code == 401
        ingest = {"Authorization": f"Bearer {tower.token('erp')}"}
        assert http.get("/metrics", headers=ingest).status_code == 401  # an ingest token is not an API token


@pytest.fixture
def public(monkeypatch: pytest.MonkeyPatch, store: EmbeddedStore, tmp_path: Path) -> Iterator[RunningTower]:
    monkeypatch.setenv("TOWER_METRICS_PUBLIC", "true")
    with start_in_process(tmp_path, store) as running:
        yield running


def test_public_metrics_need_no_token(public: RunningTower) -> None:
    with httpx.Client(base_url=public.http_url) as http:
        response = http.get("/metrics")
        assert response.status_code == 200
        assert "tower_exceptions_active" in families(response.text) or "tower_metrics_store_read_ok" in families(
            response.text
        )
        assert http.get("/api/exceptions").status_code == 401  # the API itself still takes a token


def test_metrics_can_be_turned_off(monkeypatch: pytest.MonkeyPatch, store: EmbeddedStore, tmp_path: Path) -> None:
    monkeypatch.setenv("TOWER_METRICS_ENABLED", "false")
    with start_in_process(tmp_path, store) as running, running.api("admin") as api:
        assert api.get("/metrics").status_code == 404
        assert api.get("/api/whoami").status_code == 200


def test_a_standby_scheduler_counts_the_runs_it_skips(store: EmbeddedStore) -> None:
    clock = FixedClock(AT)
    settings = LeaseSettings(mode="always", ttl_seconds=30, renew_interval_seconds=10, max_clock_skew_seconds=2)
    holder = Lease(store, clock, settings, holder="holder")
    assert holder.tick()  # another process holds the lease
    registry = JobRegistry()
    registry.add("works", lambda ctx: {"done": True}, interval_seconds=60)
    metrics = TowerMetrics(process=False)
    standby = Scheduler(
        registry,
        clock,
        SchedulerSettings(enabled=False),
        lease=Lease(store, clock, settings, holder="standby"),
        observers=[job_observer(metrics)],
    )
    metrics.register(SchedulerCollector(standby))
    assert standby.run_job("works").skipped
    assert standby.run_job("works").skipped
    samples = parse(metrics.render().decode())
    assert gauge(samples, "tower_scheduler_skipped_runs_total") == 2
    assert gauge(samples, "tower_scheduler_running") == 0  # never started
    assert value(samples, "tower_job_runs_total", job_name="works", outcome="ok") == 0  # a skipped run is no run


def test_made_up_methods_are_one_series_whatever_the_server_lets_through() -> None:
    metrics = TowerMetrics(process=False)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = HttpMetricsMiddleware(app, metrics)

    async def ignore(message: Message) -> None:
        return None

    async def nothing() -> Message:
        return {"type": "http.request", "body": b""}

    for method in ("BREW", "WHEN", "GET"):
        asyncio.run(middleware({"type": "http", "method": method, "path": "/x"}, nothing, ignore))
    samples = parse(metrics.render().decode())
    assert value(samples, "tower_http_requests_total", method="other", route="unmatched", status="404") == 2
    assert value(samples, "tower_http_requests_total", method="GET", route="unmatched", status="404") == 1


def test_a_running_job_shows_how_long_it_has_been_running(store: EmbeddedStore) -> None:
    release = threading.Event()
    registry = JobRegistry()
    registry.add("blocker", lambda ctx: release.wait(30), interval_seconds=60)
    metrics = TowerMetrics(process=False)
    scheduler = Scheduler(registry, FixedClock(AT), SchedulerSettings(enabled=False))
    metrics.register(SchedulerCollector(scheduler))
    runner = threading.Thread(target=scheduler.run_job, args=("blocker",))
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while "blocker" not in scheduler.running_for() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        running = gauge(parse(metrics.render().decode()), "tower_job_running_seconds", job_name="blocker")
        assert 0.2 <= running < 10
    finally:
        release.set()
        runner.join(timeout=10)
    samples = parse(metrics.render().decode())
    assert not [k for k in samples if k[0] == "tower_job_running_seconds"]  # finished: no series


def test_slack_interactions_refused_unrecorded_are_counted_by_outcome(tower: RunningTower) -> None:
    # forged requests are not stored (a table an attacker could fill): the metric is where they show
    before = scrape(tower)
    assert {dict(labels)["outcome"] for name, labels in before if name == "tower_slack_interactions_refused_total"} >= {
        "bad-signature",
        "not-configured",
        "stale",
        "replayed",
    }
    with httpx.Client(base_url=tower.http_url) as http:
        for _ in range(3):
            answer = http.post(
                "/slack/interactions",
                content=b"payload=%7B%7D",
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Slack-Request-Timestamp": str(int(time.time())),
                    "X-Slack-Signature": "v0=" + "0" * 64,
                },
            )
            assert answer.status_code in (401, 403, 503), answer.text
    after = scrape(tower)
    grown = {
        dict(labels)["outcome"]: after[(name, labels)] - before.get((name, labels), 0.0)
        for name, labels in after
        if name == "tower_slack_interactions_refused_total"
    }
    assert sorted(n for n in grown.values() if n) == [3.0]
    assert max(grown, key=lambda outcome: grown[outcome]) in ("bad-signature", "not-configured")
