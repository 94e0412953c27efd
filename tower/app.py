"""The composition root: builds the store, the pipeline and the doors, the rules, the SLA service and the
scheduled jobs, and wires the HTTP app.

Rules and routing are loaded first, before the store opens: a rule file that does not load stops
the start with the loader's message (`file:line: field: message`, every problem). The SLA engine
takes the `sla` rules, the technical engine the `technical` ones; both share one ExceptionStore and
the routing's `owner_for`, and run as one SlaService. The `reconciliation` rules go to the
ReconcileService (reconcilers/, job `reconcile`), their `params` checked at load time by the
reconcilers' models. The scheduler starts with the Tower and stops before the store closes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from alerting.dispatcher import INTERVAL_SECONDS as DISPATCH_INTERVAL
from alerting.dispatcher import NAME as DISPATCH_JOB
from alerting.dispatcher import Dispatcher, dispatch_job
from alerting.interactivity import InteractionHandler
from alerting.outbox import Outbox
from alerting.policy_settings import AlertingSettings
from alerting.sender import AlertsSendSettings, SlackSender, send_job
from alerting.settings import SlackSettings
from collector.auth import TokenRegistry
from collector.deadletters import RecentRefusals
from collector.pipeline import IngestPipeline
from collector.service import IngestService, TimeWindow
from collector.spool import Spool
from kernel.api_auth import token_grants
from kernel.backups import Backups, StoreBackupSettings, backup_job, finish_running
from kernel.clock import Clock, SystemClock
from kernel.disk import DiskSpaceSettings, disk_space_job, watched_volumes
from kernel.exceptions import ExceptionStore
from kernel.jobs import JobContext, JobRegistry, JobSettings, SchedulerSettings
from kernel.lease import LeaseSettings
from kernel.metrics import MetricsSettings, TowerMetrics
from kernel.schema.migrations import migrate
from kernel.settings import Settings
from kernel.store import Store, open_store
from reconcilers.config import PARAMS_MODELS, FindingRule, params_context, rule_config
from reconcilers.jobs import ReconcileJobSettings, reconcile_job
from reconcilers.replay import ReplayService, ReplaySettings
from reconcilers.replay.jobs import register_replay_jobs
from reconcilers.service import ReconcileService
from reconcilers.settings import ReconcileSettings
from sla_rules.engine import SlaEngine
from sla_rules.loader import ParamsModels, Problem, RuleFileError, RuleSet, load_rule_set
from sla_rules.model import (
    EVALUATED_TECHNICAL,
    JobFailuresRule,
    ReconciliationRule,
    SlaRule,
)
from sla_rules.service import SlaService
from sla_rules.technical import TechnicalEngine
from tower.case_days import CaseDaysRefresh
from tower.insights import rule_infos
from tower.job_health import JobHealth
from tower.metrics import (
    DiskCollector,
    PipelineCollector,
    SchedulerCollector,
    SlackRefusalsCollector,
    StoreReadings,
    install_metrics,
    job_observer,
)
from tower.reports.monthly import register_finance_report
from tower.reports.service import BreachReports
from tower.reports.settings import ReportSettings
from tower.roles import plan_for, scheduler_lease
from tower.scheduler import JobRun, Scheduler
from tower.telemetry import package_version

log = logging.getLogger(__name__)

BACKUP_GRACE_SECONDS = 120.0  # how long a stopping tower waits for a running backup before it closes the store


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
    replay: ReplayService | None = None
    outbox: Outbox | None = None  # the alert outbox and delivery log
    slack_sender: SlackSender | None = None  # delivers the outbox; None when Slack is not configured
    alerts: Dispatcher | None = None  # exception changes -> outbox messages (runs with or without Slack)
    slack_interactions: InteractionHandler | None = None  # the Acknowledge / Resolve buttons
    reconcile: ReconcileService | None = None  # the reconciliation rules (job `reconcile`)
    role: str = "all"  # tower/roles.py: which doors, routes and jobs this process runs
    metrics: TowerMetrics = field(default_factory=TowerMetrics)  # GET /metrics (tower/metrics.py)
    metrics_settings: MetricsSettings = field(default_factory=MetricsSettings)

    @property
    def evaluated_rules(self) -> frozenset[str]:
        """The rule ids something evaluates: every enabled rule, and the finding rules of the reconciliation rules.
        An active exception under any other id (a rule switched off, renamed or removed) resolves only by hand."""
        ids = {rule.id for rule in self.rules.enabled}
        if self.reconcile is not None:
            ids |= {finding.id for finding in self.reconcile.finding_rules()}
        return frozenset(ids)

    def start(self) -> None:
        """Start the writer, the spool drainer, and what the role runs: the OTLP/gRPC server, the scheduled jobs."""
        plan = plan_for(self.role)
        self.pipeline.start()
        try:
            if plan.doors and self.settings.collector.grpc_port:
                from collector.otlp.grpc_server import start_grpc_server

                self.background.append(start_grpc_server(self.ingest, self.settings.collector))
            if plan.jobs:
                self.scheduler.start()
        except BaseException:
            # a half-started tower (the gRPC port taken) stops what did start and closes the store: a process
            # that exits with the store's threads still running can crash on the way out
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the jobs (a running one finishes), stop accepting, finish what is queued, let running backups end,
        close the store."""
        if self.slack_sender is not None:
            self.slack_sender.stop()  # a report upload waiting out a backoff gives up instead of holding the stop
        if self.replay is not None:
            self.replay.stop()  # a replay run stops between two webhook calls
        self.scheduler.stop()
        for server in self.background:
            server.stop(grace=5).wait()
        self.background.clear()
        self.pipeline.stop()
        if self.owns_store:
            left = finish_running(BACKUP_GRACE_SECONDS)  # a backup reads the store on a connection of its own
            if left:
                log.warning("closing the store with backups still running (left incomplete): %s", ", ".join(left))
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


def load_configured_rules(settings: Settings, reconcile: ReconcileSettings | None = None) -> RuleSet:
    """The rule files and the routing file the settings name (the shipped ones by default); RuleFileError
    lists every problem as `file:line: field: message`, reconciliation params included."""
    return load_rule_set(settings.sla.rules_dir, settings.sla.routing_file, reconcile_params(reconcile))


def reconcile_params(reconcile: ReconcileSettings | None = None) -> ParamsModels:
    """How the loader checks reconciliation params: the reconcilers' models, pulls naming configured databases."""
    return ParamsModels(PARAMS_MODELS, params_context((reconcile or ReconcileSettings()).sources))


def build_reconcile(
    settings: Settings,
    store: Store,
    exceptions: ExceptionStore,
    clock: Clock,
    rules: RuleSet,
    reconcile: ReconcileSettings,
) -> ReconcileService:
    """The reconcile service over the enabled reconciliation rules; a finding's owner comes from the routing
    file as for its rule (routes naming inventory-sync also route its oversell findings)."""
    found = [r for r in rules.enabled if isinstance(r, ReconciliationRule)]
    by_id = {r.id: r for r in found}
    names = list(reconcile.sources)
    configs = [rule_config(r.id, r.title, r.kind, r.owner, r.severity, r.compare, r.params, names) for r in found]

    def owner_for(finding: FindingRule, data: Mapping[str, str]) -> str:
        update = {"kind": finding.kind, "owner": finding.owner, "severity": finding.severity}
        return rules.routing.owner_for(by_id[finding.source_rule].model_copy(update=update), data)

    try:
        ahead = settings.collector.event_max_ahead_minutes  # a pulled count is held to the doors' allowance
        return ReconcileService(store, exceptions, clock, configs, owner_for, reconcile, max_ahead_minutes=ahead)
    except ValueError as exc:
        shown = str(settings.sla.rules_dir or "sla_rules/rules")
        raise RuleFileError([Problem(shown, None, "params", str(exc))]) from exc


def build_sla(settings: Settings, store: Store, clock: Clock, rules: RuleSet | None = None) -> SlaParts:
    """The ExceptionStore and the SlaService (SLA engine + technical rules, then the overview's reading of the
    cases) over `store` on `clock`."""
    rules = rules or load_configured_rules(settings)
    exceptions = ExceptionStore(store, clock)
    enabled = rules.enabled
    owner_for = rules.routing.owner_for
    engine = SlaEngine(store, exceptions, clock, [r for r in enabled if isinstance(r, SlaRule)], owner_for)
    technical = TechnicalEngine(
        store,
        exceptions,
        clock,
        [r for r in enabled if isinstance(r, EVALUATED_TECHNICAL)],
        expected_sources=settings.sla.expected_sources,
        seen_within=timedelta(hours=settings.sla.expect_seen_within_hours),
        owner_for=owner_for,
        token_sources=token_grants(settings.ingest.tokens),
    )
    # last: the overview's reading of the cases the engine just wrote (tower/case_days.py)
    return SlaParts(rules, exceptions, SlaService([engine, technical, CaseDaysRefresh(store, clock)]))


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
    reconcile: ReconcileSettings | None = None,
    role: str = "all",
) -> Tower:
    """Load the rules, open (and migrate) the store and build the pipeline, services and jobs; nothing is started.

    `role` (tower/roles.py) decides what `Tower.start` and `create_app` run; the scheduler runs under the
    store's lease on the server backend (TOWER_LEASE_*).

    `scheduler` defaults to TOWER_SCHEDULER_* (tests pass `SchedulerSettings(enabled=False)`), `reconcile` to
    TOWER_RECONCILE_*.
    """
    reconcile = reconcile or ReconcileSettings()
    plan = plan_for(role)  # an unknown role stops here, before anything opens
    lease_settings = LeaseSettings()  # TOWER_LEASE_*
    metrics_settings = MetricsSettings()  # TOWER_METRICS_*
    rules = load_configured_rules(settings, reconcile)  # before the store opens: a bad rule file stops the start
    for warning in rules.misspelt_types():
        log.warning("%s", warning)
    for owner in rules.routing.owners_without_channel():
        log.warning("owner %r has no Slack channel and no alerts route gives it one: its alerts are not posted", owner)
    owns_store = store is None
    store = store or open_store(settings.store)
    clock = clock or SystemClock()
    spool = Spool(
        settings.store.data_dir / "spool",
        settings.collector.spool_max_bytes,
        min_free_bytes=settings.store.min_free_mib * 2**20,
    )
    pipeline = IngestPipeline(store, spool, settings.collector)
    metrics = TowerMetrics(role, store.backend, package_version())
    metrics.register(PipelineCollector(pipeline))
    volumes = watched_volumes(settings.store.data_dir, settings.store.backup_dir)
    metrics.register(DiskCollector(volumes))
    window = TimeWindow.from_settings(settings.collector.event_max_age_days, settings.collector.event_max_ahead_minutes)
    repeats = RecentRefusals(timedelta(seconds=settings.collector.dead_letter_repeat_seconds))
    ingest = IngestService(pipeline, TokenRegistry(settings.ingest), clock, metrics, window, repeats)
    from collector.events_http import register_replayers as register_events
    from collector.otlp.http import register_replayers as register_otlp

    register_events(ingest)
    register_otlp(ingest, settings.collector)
    parts = build_sla(settings, store, clock, rules)
    jobs = JobRegistry()
    register_jobs(jobs, parts.sla)
    replay = ReplayService(store, parts.exceptions, clock, ReplaySettings())  # TOWER_REPLAY_*
    register_replay_jobs(jobs, replay)
    outbox = Outbox(store, clock)
    if plan.api:  # the store's counts are the same from every process: those serving the API export them
        metrics.register(StoreReadings(store, outbox, metrics_settings.cache_seconds))
    slack = SlackSettings()  # TOWER_SLACK_*
    slack_sender = SlackSender(outbox, slack, clock) if slack.enabled else None
    if slack_sender is not None:
        jobs.add("alerts-send", send_job(slack_sender), settings=AlertsSendSettings, after=(DISPATCH_JOB,))
    # Alerts are decided and enqueued even without Slack: enabling it later loses nothing (see docs/alerting.md).
    alerting = AlertingSettings()  # TOWER_ALERTING_*
    known = rule_infos(parts.rules)  # the rule files' rules and the reconcilers' finding rules (inventory-stale)
    titles = {rule.id: rule.title for rule in known}
    runbooks = {rule.id: rule.runbook for rule in known if rule.runbook}
    alerts = Dispatcher(
        store, outbox, parts.rules.routing, alerting, clock, titles, slack.dashboard_url, runbooks=runbooks
    )
    # right after the jobs that open and resolve exceptions, besides its own interval
    jobs.add(
        DISPATCH_JOB,
        dispatch_job(alerts),
        interval_seconds=DISPATCH_INTERVAL,
        after=("sla-evaluate", "reconcile", "replay-watch"),
    )
    secret = slack.signing_secret.get_secret_value() if slack.signing_secret else None
    slack_interactions = InteractionHandler(store, parts.exceptions, clock, alerting, secret)
    if plan.api:  # the processes that serve /slack/interactions
        metrics.register(SlackRefusalsCollector(lambda: slack_interactions.refusals))
    reports = BreachReports(store, clock, parts.rules, ReportSettings())  # TOWER_REPORTS_*
    uploader = slack_sender if slack_sender is not None and slack_sender.mode == "bot" else None
    register_finance_report(jobs, reports, store, uploader)  # the monthly finance-report job
    reconciler = build_reconcile(settings, store, parts.exceptions, clock, parts.rules, reconcile)
    jobs.add("reconcile", reconcile_job(reconciler), settings=ReconcileJobSettings)
    backups = Backups(store, clock)
    if backups.supported:  # the embedded store; a server's backups are made on the server
        jobs.add("store-backup", backup_job(backups), settings=StoreBackupSettings)
    jobs.add("disk-space", disk_space_job(volumes), settings=DiskSpaceSettings)
    observers: list[Callable[[JobRun], None]] = [
        job_observer(metrics),
        *(
            JobHealth(parts.exceptions, rule, parts.rules.routing.owner_for).observe
            for rule in parts.rules.enabled
            if isinstance(rule, JobFailuresRule)
        ),
    ]
    runner = Scheduler(
        jobs,
        clock,
        scheduler,
        lease=scheduler_lease(store, clock, lease_settings),
        lease_interval_seconds=lease_settings.renew_interval_seconds,
        observers=observers,
    )
    if plan.jobs:
        metrics.register(SchedulerCollector(runner))
        runner.enabled_jobs()  # each job's settings read now: a bad one stops the start before the schema moves on
    # Last: a setting refused above leaves the store's schema as it was (a migration has no way back).
    applied = migrate(store)
    if applied:
        log.info("applied schema migrations %s", applied)
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
        scheduler=runner,
        owns_store=owns_store,
        replay=replay,
        outbox=outbox,
        slack_sender=slack_sender,
        alerts=alerts,
        slack_interactions=slack_interactions,
        reconcile=reconciler,
        role=role,
        metrics=metrics,
        metrics_settings=metrics_settings,
    )


def create_app(tower: Tower) -> FastAPI:
    """The HTTP app: OTLP/HTTP and CloudEvents doors, health, and the API."""
    from collector.events_http import router as events_router
    from collector.otlp.http import router as otlp_router
    from tower.api import router as api_router
    from tower.http_errors import install_error_handlers
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
    install_error_handlers(app)
    install_metrics(app, tower.metrics, tower.metrics_settings)
    app.state.tower = tower
    app.state.ingest = tower.ingest
    app.state.api_tokens = dict(tower.settings.api.tokens)
    app.state.sla = tower.sla
    app.state.exceptions = tower.exceptions
    app.state.replay = tower.replay
    app.state.alerts = tower.alerts
    app.state.slack_interactions = tower.slack_interactions
    app.state.reconcile = tower.reconcile
    plan = plan_for(tower.role)
    if plan.doors:
        app.include_router(otlp_router)
        app.include_router(events_router)
    if plan.api:
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
            "role": tower.role,
        }
        if plan.jobs:
            body["scheduler"] = tower.scheduler.status()
        return JSONResponse(body, status_code=200 if store_ok else 503)

    return app
