"""The composition root: builds the store, the pipeline and the doors, the rules, the SLA service and the
scheduled jobs, and wires the HTTP app.

Rules and routing are loaded first, before the store opens: a rule file that does not load stops
the start with the loader's message (`file:line: field: message`, every problem). The SLA engine
takes the `sla` rules, the technical engine the `technical` ones (reconciliation rules wait for
their engines); both share one ExceptionStore and the routing's `owner_for`, and run as one
SlaService. The scheduler starts with the Tower and stops before the store closes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from collector.auth import TokenRegistry
from collector.pipeline import IngestPipeline
from collector.service import IngestService
from collector.spool import Spool
from kernel.clock import Clock, SystemClock
from kernel.exceptions import ExceptionStore
from kernel.jobs import JobContext, JobRegistry, JobSettings, SchedulerSettings
from kernel.schema.migrations import migrate
from kernel.settings import Settings
from kernel.store import Store, open_store
from sla_rules.engine import SlaEngine
from sla_rules.loader import RuleSet, load_rule_set
from sla_rules.model import ErrorRateRule, SilenceRule, SlaRule
from sla_rules.service import SlaService
from sla_rules.technical import TechnicalEngine
from tower.scheduler import Scheduler

log = logging.getLogger(__name__)


@dataclass
class Tower:
    """Everything one tower process runs, built from settings."""

    settings: Settings
    store: Store
    pipeline: IngestPipeline
    ingest: IngestService
    clock: Clock
    rules: RuleSet
    exceptions: ExceptionStore
    sla: SlaService
    jobs: JobRegistry
    scheduler: Scheduler
    owns_store: bool = True
    background: list[Any] = field(default_factory=list)

    def start(self) -> None:
        """Start the writer, the spool drainer, the OTLP/gRPC server and the scheduled jobs."""
        self.pipeline.start()
        if self.settings.collector.grpc_port:
            from collector.otlp.grpc_server import start_grpc_server

            self.background.append(start_grpc_server(self.ingest, self.settings.collector))
        self.scheduler.start()

    def stop(self) -> None:
        """Stop the jobs (a running one finishes), stop accepting, finish what is queued, close the store."""
        self.scheduler.stop()
        for server in self.background:
            server.stop(grace=5).wait()
        self.background.clear()
        self.pipeline.stop()
        if self.owns_store:
            self.store.close()


class SlaEvaluateSettings(JobSettings):
    """The `sla-evaluate` job (TOWER_JOB_SLA_EVALUATE_*): an incremental evaluation every interval, and a full
    one on the first run in the process and every `full_every_runs` runs."""

    model_config = SettingsConfigDict(env_prefix="TOWER_JOB_SLA_EVALUATE_")

    enabled: bool = Field(True, description="Evaluate the SLA and technical rules on a schedule.")
    interval_seconds: float = Field(60.0, gt=0, description="Seconds between evaluations.")
    full_every_runs: int = Field(
        60, ge=1, description="Every this many runs (and on the first) evaluate fully; 60 x 60 s = hourly."
    )


@dataclass(frozen=True)
class SlaParts:
    """The rules and the services built from them."""

    rules: RuleSet
    exceptions: ExceptionStore
    sla: SlaService


def load_configured_rules(settings: Settings) -> RuleSet:
    """The rule files and the routing file the settings name (the shipped ones by default); RuleFileError
    lists every problem as `file:line: field: message`."""
    return load_rule_set(settings.sla.rules_dir, settings.sla.routing_file)


def build_sla(settings: Settings, store: Store, clock: Clock, rules: RuleSet | None = None) -> SlaParts:
    """The ExceptionStore and the SlaService (SLA engine + technical rules) over `store` on `clock`."""
    rules = rules or load_configured_rules(settings)
    exceptions = ExceptionStore(store, clock)
    enabled = rules.enabled
    owner_for = rules.routing.owner_for
    engine = SlaEngine(store, exceptions, clock, [r for r in enabled if isinstance(r, SlaRule)], owner_for)
    technical = TechnicalEngine(
        store,
        exceptions,
        clock,
        [r for r in enabled if isinstance(r, (ErrorRateRule, SilenceRule))],
        expected_sources=settings.sla.expected_sources,
        seen_within=timedelta(hours=settings.sla.expect_seen_within_hours),
        owner_for=owner_for,
    )
    return SlaParts(rules, exceptions, SlaService([engine, technical]))


def register_jobs(jobs: JobRegistry, sla: SlaService) -> None:
    """The tower's scheduled jobs: `sla-evaluate`."""

    def sla_evaluate(context: JobContext) -> dict[str, Any]:
        """Evaluate the SLA and technical rules: incrementally, fully on the first run and every
        `full_every_runs` runs."""
        every = context.settings.full_every_runs if isinstance(context.settings, SlaEvaluateSettings) else 60
        full = context.run == 1 or context.run % every == 0
        report = sla.evaluate(full=full)
        if report.opened or report.resolved or report.errors:
            context.log.info(
                "evaluated (%s): %d opened, %d resolved, errors %s",
                "full" if full else "incremental",
                len(report.opened),
                len(report.resolved),
                report.errors or "none",
            )
        return report.as_dict()

    jobs.add("sla-evaluate", sla_evaluate, settings=SlaEvaluateSettings)


def build_tower(
    settings: Settings,
    clock: Clock | None = None,
    store: Store | None = None,
    scheduler: SchedulerSettings | None = None,
) -> Tower:
    """Load the rules, open (and migrate) the store and build the pipeline, services and jobs; nothing is started.

    `scheduler` defaults to TOWER_SCHEDULER_* (tests pass `SchedulerSettings(enabled=False)`).
    """
    rules = load_configured_rules(settings)  # before the store opens: a bad rule file stops the start at once
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
    parts = build_sla(settings, store, clock, rules)
    jobs = JobRegistry()
    register_jobs(jobs, parts.sla)
    return Tower(
        settings=settings,
        store=store,
        pipeline=pipeline,
        ingest=ingest,
        clock=clock,
        rules=parts.rules,
        exceptions=parts.exceptions,
        sla=parts.sla,
        jobs=jobs,
        scheduler=Scheduler(jobs, clock, scheduler),
        owns_store=owns_store,
    )


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
    app.state.api_tokens = dict(tower.settings.api.tokens)
    app.state.sla = tower.sla
    app.state.exceptions = tower.exceptions
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
