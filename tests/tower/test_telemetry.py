"""Self-observability: spans for the tower's own HTTP requests and jobs when enabled, none when off."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from kernel.settings import TelemetrySettings
from kernel.store.embedded import EmbeddedStore
from tests.factories import api_token, make_event, make_settings
from tests.support import TowerProcess
from tower.app import build_tower, create_app
from tower.telemetry import job_span, setup_telemetry, shutdown_telemetry

BATCH = "application/cloudevents-batch+json"


@pytest.fixture
def app(store: EmbeddedStore, tmp_path: Path) -> Iterator[FastAPI]:
    """The tower's HTTP app on the shared store (called in-process through ASGI, no sockets)."""
    settings = make_settings(tmp_path / "data")
    application = create_app(build_tower(settings, store=store))
    application.state.settings = settings
    yield application
    shutdown_telemetry()


def exercise(app: FastAPI) -> None:
    """A few requests: health probes, an authorised and an unauthorised API call."""
    token = api_token(app.state.settings, "admin")

    async def requests() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tower") as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
            authorised = await client.get("/api/deadletters", headers={"Authorization": f"Bearer {token}"})
            assert authorised.status_code == 200
            assert (await client.get("/api/deadletters")).status_code == 401

    asyncio.run(requests())


def test_http_requests_are_traced_when_enabled(app: FastAPI) -> None:
    exporter = InMemorySpanExporter()
    settings = TelemetrySettings(exporter="console", service_name="tower-under-test")
    provider = setup_telemetry(settings, app, exporter=exporter, install_global=False)
    assert provider is not None
    exercise(app)
    with job_span("sla.evaluate", rules=4):
        pass
    assert provider.force_flush()

    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.kind == SpanKind.SERVER]
    assert [s.name for s in server] == ["GET /api/deadletters", "GET /api/deadletters"]  # probes are not traced
    statuses = [dict(s.attributes or {}).get("http.status_code") for s in server]
    assert statuses == [200, 401]
    assert all(s.resource.attributes["service.name"] == "tower-under-test" for s in spans)
    [job] = [s for s in spans if s.name == "sla.evaluate"]
    assert job.attributes == {"rules": 4}


def test_nothing_is_traced_when_off(app: FastAPI) -> None:
    exporter = InMemorySpanExporter()
    assert setup_telemetry(TelemetrySettings(exporter="none"), app, exporter=exporter, install_global=False) is None
    exercise(app)
    with job_span("sla.evaluate"):
        pass
    assert exporter.get_finished_spans() == ()


@pytest.mark.slow
def test_tower_serve_prints_its_spans_with_the_console_exporter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOWER_TELEMETRY_EXPORTER", "console")
    monkeypatch.setenv("TOWER_TELEMETRY_SERVICE_NAME", "tower-self")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    tower = TowerProcess(tmp_path / "data")
    tower.start()
    try:
        answer = httpx.get(
            tower.http_url + "/api/deadletters", headers={"Authorization": f"Bearer {tower.api_token()}"}
        )
        assert answer.status_code == 200
        stored = httpx.post(
            tower.http_url + "/v1/events",
            content=orjson.dumps([make_event("order.accepted")]),
            headers={"Authorization": f"Bearer {tower.token('erp')}", "Content-Type": BATCH},
        )
        assert stored.status_code == 200
    finally:
        tower.stop()
    log = tower.log.read_text()
    assert '"name": "GET /api/deadletters"' in log
    assert '"name": "POST /v1/events"' in log
    assert '"name": "tower.pipeline.write"' in log  # the writer's span, through the global provider
    assert '"service.name": "tower-self"' in log
    assert '"name": "GET /healthz"' not in log  # the start-up probe is not traced
