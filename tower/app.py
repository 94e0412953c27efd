"""The composition root: builds the store, the pipeline and the doors, and wires the HTTP app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from collector.auth import TokenRegistry
from collector.pipeline import IngestPipeline
from collector.service import IngestService
from collector.spool import Spool
from kernel.clock import Clock, SystemClock
from kernel.schema.migrations import migrate
from kernel.settings import Settings
from kernel.store import Store, open_store

log = logging.getLogger(__name__)


@dataclass
class Tower:
    """Everything one tower process runs, built from settings."""

    settings: Settings
    store: Store
    pipeline: IngestPipeline
    ingest: IngestService
    clock: Clock
    owns_store: bool = True
    background: list[Any] = field(default_factory=list)

    def start(self) -> None:
        """Start the writer, the spool drainer and the OTLP/gRPC server."""
        self.pipeline.start()
        if self.settings.collector.grpc_port:
            from collector.otlp.grpc_server import start_grpc_server

            self.background.append(start_grpc_server(self.ingest, self.settings.collector))

    def stop(self) -> None:
        """Stop accepting, finish what is queued, close the store."""
        for server in self.background:
            server.stop(grace=5).wait()
        self.background.clear()
        self.pipeline.stop()
        if self.owns_store:
            self.store.close()


def build_tower(settings: Settings, clock: Clock | None = None, store: Store | None = None) -> Tower:
    """Open (and migrate) the store and build the pipeline and services; nothing is started."""
    owns_store = store is None
    store = store or open_store(settings.store)
    applied = migrate(store)
    if applied:
        log.info("applied schema migrations %s", applied)
    clock = clock or SystemClock()
    spool = Spool(settings.store.data_dir / "spool", settings.collector.spool_max_bytes)
    pipeline = IngestPipeline(store, spool, settings.collector)
    ingest = IngestService(pipeline, TokenRegistry(settings.ingest), clock)
    from collector.events_http import register_replayers as register_events
    from collector.otlp.http import register_replayers as register_otlp

    register_events(ingest)
    register_otlp(ingest, settings.collector)
    return Tower(settings=settings, store=store, pipeline=pipeline, ingest=ingest, clock=clock, owns_store=owns_store)


def create_app(tower: Tower) -> FastAPI:
    """The HTTP app: OTLP/HTTP and CloudEvents doors, health, and the API."""
    from collector.events_http import router as events_router
    from collector.otlp.http import router as otlp_router
    from tower.api import router as api_router
    from tower.routes import router as routes_router

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tower.start()
        try:
            yield
        finally:
            tower.stop()

    app = FastAPI(
        title="Control tower",
        description="Ingest (OTLP, CloudEvents) and the control tower API.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.tower = tower
    app.state.ingest = tower.ingest
    app.state.collector_settings = tower.settings.collector
    app.state.api_tokens = dict(tower.settings.api.tokens)
    app.include_router(otlp_router)
    app.include_router(events_router)
    app.include_router(api_router)
    app.include_router(routes_router)

    @app.get("/healthz", tags=["health"], summary="The process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Ready to take data: store reachable or spool available")
    def readyz() -> JSONResponse:
        store_ok = tower.store.ping()
        spool_files = len(tower.pipeline.spool.files())
        body = {
            "status": "ready" if store_ok else "degraded",
            "store": {"backend": tower.store.backend, "reachable": store_ok},
            "spool": {"batches": spool_files},
            "queue": {"rows": tower.pipeline.queued_rows},
        }
        return JSONResponse(body, status_code=200 if store_ok else 503)

    return app
