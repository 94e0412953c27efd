"""`GET /metrics`: the tower's own metrics for Prometheus (or any OpenMetrics scraper), wired to the tower.

kernel/metrics.py holds the registry and the instruments; this module adds what a scrape reads
(`PipelineCollector`: the ingest queue, the spool, the store as the writer sees it; `SchedulerCollector`;
`SlackRefusalsCollector`: Slack interaction requests refused unrecorded;
`StoreReadings`: active exceptions, the alert outbox, pending dead letters and replay requests,
read from the store at most every `cache_seconds`), the ASGI middleware that times every HTTP
answer, the scheduler observer that counts job runs, and the route.

The store's readings are the same whichever process reads them, so only processes that serve the
API (roles `all` and `api`) export them; every process exports its own counters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alerting.interactivity import UNRECORDED
from alerting.outbox import Outbox
from collector.pipeline import IngestPipeline
from kernel.api_auth import AUTH_RESPONSES, READ_ROLES, Principal, require
from kernel.disk import read_disks
from kernel.exceptions import ACTIVE
from kernel.metrics import CONTENT_TYPE, MetricsSettings, TowerMetrics
from kernel.store import Store
from kernel.store.base import StoreError
from tower.scheduler import JobRun, Scheduler

log = logging.getLogger(__name__)

Metric = Any  # a prometheus_client metric family


class PipelineCollector(Collector):
    """The ingest pipeline, read at every scrape: rows stored, spooled and drained since start, the rows
    waiting for the writer, the spool on disk, and whether the writer finds the store down."""

    def __init__(self, pipeline: IngestPipeline) -> None:
        self.pipeline = pipeline

    def collect(self) -> Iterable[Metric]:
        stats = self.pipeline.stats
        rows = CounterMetricFamily(
            "tower_pipeline_rows",
            "Rows the writer stored, spooled (store down) and drained from the spool into the store, since start.",
            labels=["outcome"],
        )
        rows.add_metric(["stored"], stats.rows_stored)
        rows.add_metric(["spooled"], stats.rows_spooled)
        rows.add_metric(["drained"], stats.rows_drained)
        yield rows
        yield CounterMetricFamily("tower_pipeline_batches", "Writes the group-commit writer made.", stats.batches)
        yield GaugeMetricFamily(
            "tower_pipeline_queued_rows", "Rows waiting for (or in) the current write.", self.pipeline.queued_rows
        )
        spool = self.pipeline.spool
        yield GaugeMetricFamily("tower_spool_batches", "Batches waiting in the spool.", len(spool.files()))
        yield GaugeMetricFamily("tower_spool_bytes", "Bytes of spooled batches on disk.", spool.size_bytes())
        yield GaugeMetricFamily(
            "tower_store_down",
            "1 while the writer finds the store unavailable and spools what arrives, else 0.",
            1 if self.pipeline.store_down else 0,
        )


class DiskCollector(Collector):
    """The disks the tower writes to, read at every scrape: size and free bytes per volume (kernel/disk.py)."""

    def __init__(self, volumes: Mapping[str, Path]) -> None:
        self.volumes = dict(volumes)

    def collect(self) -> Iterable[Metric]:
        size = GaugeMetricFamily("tower_disk_size_bytes", "Size of the disk each volume is on.", labels=["volume"])
        free = GaugeMetricFamily(
            "tower_disk_free_bytes",
            "Free bytes (for an unprivileged process) on each volume's disk.",
            labels=["volume"],
        )
        try:
            readings = read_disks(self.volumes)
        except OSError as exc:  # a volume gone (an unmounted disk): the scrape goes on without it
            log.warning("cannot read the disks %s: %s", sorted(self.volumes), exc)
            readings = []
        for reading in readings:
            size.add_metric([reading.volume], reading.size)
            free.add_metric([reading.volume], reading.free)
        yield size
        yield free


class SchedulerCollector(Collector):
    """The scheduler, read at every scrape: running or not, the runs it skipped because another process
    holds the lease (a standby's count grows while the holder runs the jobs), and how long each running job
    has been running."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "tower_scheduler_running", "1 while this process's scheduler runs, else 0.", self.scheduler.running
        )
        yield CounterMetricFamily(
            "tower_scheduler_skipped_runs",
            "Job runs this process did not make because another process holds the scheduler lease.",
            self.scheduler.skipped,
        )
        running = GaugeMetricFamily(
            "tower_job_running_seconds",
            "How long each job running now has been running (a hung run never fails: alert on this).",
            labels=["job_name"],
        )
        for name, seconds in sorted(self.scheduler.running_for().items()):
            running.add_metric([name], seconds)
        yield running


class SlackRefusalsCollector(Collector):
    """Slack interaction requests this process refused without recording them (bad or stale signature, replays,
    too large, no signing secret), by outcome since start: forged or misrouted requests, or a wrong secret,
    show here rather than only in the log."""

    def __init__(self, refusals: Callable[[], Mapping[str, int]]) -> None:
        self.refusals = refusals

    def collect(self) -> Iterable[Metric]:
        refused = CounterMetricFamily(
            "tower_slack_interactions_refused",
            "Slack interaction requests refused without being recorded, by outcome, since start.",
            labels=["outcome"],
        )
        counts = self.refusals()
        for outcome in sorted(UNRECORDED | set(counts)):
            refused.add_metric([outcome], counts.get(outcome, 0))
        yield refused


# Each reading: one GROUP BY returning (labels..., n). Active exceptions by who owns them and how bad.
_READS: tuple[tuple[str, str, list[str], str], ...] = (
    (
        "tower_exceptions_active",
        "Open and acknowledged exceptions, by owner, severity, kind and status.",
        ["owner", "severity", "kind", "status"],
        "SELECT owner, severity, kind, status, count() AS n FROM exceptions FINAL"
        " WHERE status IN {active:Array(String)} GROUP BY owner, severity, kind, status",
    ),
    (
        "tower_dead_letters_pending",
        "Refused records not replayed yet, by door.",
        ["door"],
        "SELECT door, count() AS n FROM dead_letters FINAL WHERE status = 'pending' GROUP BY door",
    ),
    (
        "tower_replay_requests",
        "Replay requests to the sources, by status.",
        ["status"],
        "SELECT status, count() AS n FROM replay_requests FINAL GROUP BY status",
    ),
)


# The outbox counts itself (alerting.outbox.Outbox.counts: every status, 0 included).
_OUTBOX = (
    "tower_alert_outbox_messages",
    "Slack messages in the alert outbox, by status (pending and attempting wait; failed gave up).",
    ["status"],
)
_FAMILIES = [(name, documentation, labels) for name, documentation, labels, _ in _READS] + [_OUTBOX]


@dataclass
class _Reading:
    at: float | None = None  # the cache clock's time of the read; None: never read
    seconds: float = 0.0
    ok: bool = False
    values: dict[str, list[tuple[list[str], float]]] = field(default_factory=dict)


class StoreReadings(Collector):
    """Counts read from the store at a scrape, reused for `cache_seconds` (scrapes from several Prometheus
    servers, or a short scrape interval, read the store once per window). A failed read exports
    `tower_metrics_store_read_ok 0` and none of the counts, rather than failing the scrape."""

    def __init__(
        self, store: Store, outbox: Outbox, cache_seconds: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        """`monotonic` is the cache's clock (tests pass their own)."""
        self.store = store
        self.outbox = outbox
        self.cache_seconds = cache_seconds
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._reading = _Reading()

    def read(self) -> _Reading:
        """The cached reading, read again when older than `cache_seconds`."""
        with self._lock:
            now = self.monotonic()
            if self._reading.at is not None and now - self._reading.at < self.cache_seconds:
                return self._reading
            began = time.perf_counter()
            reading = _Reading(at=now)
            try:
                for name, _, labels, sql in _READS:
                    rows = self.store.query(sql, {"active": list(ACTIVE)})
                    reading.values[name] = [([str(r[label]) for label in labels], float(r["n"])) for r in rows]
                reading.values[_OUTBOX[0]] = [([status], float(n)) for status, n in self.outbox.counts().items()]
                reading.ok = True
            except StoreError as exc:
                log.warning("metrics: cannot read the store: %s", exc)
                reading.values = {}
            reading.seconds = time.perf_counter() - began
            self._reading = reading
            return reading

    def collect(self) -> Iterable[Metric]:
        reading = self.read()
        yield GaugeMetricFamily(
            "tower_metrics_store_read_ok", "1 when the last read of the store's counts succeeded, else 0.", reading.ok
        )
        yield GaugeMetricFamily(
            "tower_metrics_store_read_seconds", "How long the last read of the store's counts took.", reading.seconds
        )
        for name, documentation, labels in _FAMILIES:
            if name not in reading.values:
                continue
            family = GaugeMetricFamily(name, documentation, labels=labels)
            for values, n in reading.values[name]:
                family.add_metric(values, n)
            yield family


# Any token is a method to the HTTP parser: others count as `other`, so made-up methods cannot create series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetricsMiddleware:
    """Times every HTTP answer and counts it by method, route template and status (ASGI: streamed answers
    are timed to their last byte). Paths no route matched count as `unmatched` and unknown methods as
    `other`, so a scan of random URLs cannot create series."""

    def __init__(self, app: ASGIApp, metrics: TowerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # an exception that escapes before any answer is sent

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.http_answered(method, route, status, time.perf_counter() - began)


def job_observer(metrics: TowerMetrics) -> Callable[[JobRun], None]:
    """A scheduler observer counting each job run."""

    def observe(run: JobRun) -> None:
        seconds = run.duration_ms / 1000
        finished = (run.started_at + timedelta(milliseconds=run.duration_ms)).timestamp()
        metrics.job_ran(run.name, run.ok, seconds, finished)

    return observe


_any_token = require(*READ_ROLES)


def _metrics_caller(request: Request) -> Principal | None:
    """Any API token, or none when TOWER_METRICS_PUBLIC is set."""
    settings: MetricsSettings = request.app.state.metrics_settings
    return None if settings.public else _any_token(request)


MetricsCaller = Annotated[Principal | None, Depends(_metrics_caller)]

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="The tower's own metrics, Prometheus text format",
    description="Roles: viewer, operator, finance, admin (no token with TOWER_METRICS_PUBLIC=true).",
    responses={**AUTH_RESPONSES, 200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format."}},
    response_class=Response,
)
def metrics(_: MetricsCaller, request: Request) -> Response:
    tower_metrics: TowerMetrics = request.app.state.metrics
    return Response(tower_metrics.render(), media_type=CONTENT_TYPE)


def install_metrics(app: FastAPI, metrics: TowerMetrics, settings: MetricsSettings) -> None:
    """Serve `GET /metrics` and time every request (no-op when TOWER_METRICS_ENABLED is false)."""
    if not settings.enabled:
        return
    app.state.metrics = metrics
    app.state.metrics_settings = settings
    app.include_router(router)
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
