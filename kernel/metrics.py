"""The tower's own metrics, in the Prometheus text format (served at `GET /metrics` by tower/metrics.py).

One `TowerMetrics` per tower process: its own registry (so tests build as many as they like), the
counters and histograms that code paths update (rows handed to the pipeline, records refused,
HTTP requests, job runs), and the collectors that read a value when scraped (the pipeline's queue
and spool, the store's exceptions and outbox; tower/metrics.py). Names follow the Prometheus
conventions: the `tower_` prefix, `_total` on counters, base units (seconds, bytes), and no label named `job`
or `instance` (Prometheus gives those to the scrape target: a job's name is `job_name`).

The metrics are per process: with the roles of docs/scale-out.md, scrape every process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sized

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.registry import Collector
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# A `_created` series beside every counter doubles the output and no dashboard reads it.
disable_created_metrics()  # type: ignore[no-untyped-call]

# The text format's media type, as Prometheus asks for it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


class MetricsSettings(BaseSettings):
    """The tower's metrics endpoint (TOWER_METRICS_*): `GET /metrics` in the Prometheus text format."""

    model_config = SettingsConfigDict(env_prefix="TOWER_METRICS_")

    enabled: bool = Field(True, description="Serve GET /metrics (Prometheus text format) on every role's HTTP port.")
    public: bool = Field(
        False,
        description="Serve /metrics without a token (a scraper on a private network); otherwise it takes any"
        " API token (viewer and up) as a bearer token.",
    )
    cache_seconds: float = Field(
        15.0,
        ge=0,
        description="Seconds a scrape reuses the store's readings (active exceptions, alert outbox, dead letters,"
        " replays) before reading them again; 0 reads them on every scrape.",
    )


class TowerMetrics:
    """One process's metrics: a registry, the instruments code paths update, and `render()` for a scrape."""

    def __init__(self, role: str = "all", backend: str = "", version: str = "", process: bool = True) -> None:
        """`process` adds the process collectors (CPU, memory, open files, Python version) of prometheus_client."""
        self.registry = CollectorRegistry()
        reg = self.registry
        info = Gauge(
            "tower_build_info",
            "The tower's version, role and store backend (always 1).",
            ["version", "role", "backend"],
            registry=reg,
        )
        info.labels(version or "unknown", role, backend or "unknown").set(1)
        self.ingest_rows = Counter(
            "tower_ingest_rows",
            "Rows the doors handed to the pipeline (stored, or spooled while the store is down), by table:"
            " business_events, otel_traces, otel_logs, dead_letters.",
            ["table"],
            registry=reg,
        )
        for table in ("business_events", "otel_traces", "otel_logs", "dead_letters"):
            # at 0 from the start: a rate over a series that appears with its first rows reads 0, and a tower that
            # never received any would have no series for TowerNoBusinessEvents to fire on
            self.ingest_rows.labels(table)
        self.ingest_refused = Counter(
            "tower_ingest_refused_records",
            "Records a door refused (kept as dead letters), by door.",
            ["door"],
            registry=reg,
        )
        self.http_requests = Counter(
            "tower_http_requests",
            "HTTP requests answered, by method, route template (unmatched for no route) and status code.",
            ["method", "route", "status"],
            registry=reg,
        )
        self.http_duration = Histogram(
            "tower_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=reg,
        )
        self.grpc_requests = Counter(
            "tower_grpc_requests",
            "OTLP/gRPC calls answered, by method (TraceService/Export, LogsService/Export) and status code.",
            ["method", "code"],
            registry=reg,
        )
        self.grpc_duration = Histogram(
            "tower_grpc_request_duration_seconds",
            "Time to answer an OTLP/gRPC call, by method.",
            ["method"],
            buckets=HTTP_BUCKETS,
            registry=reg,
        )
        self.job_runs = Counter(
            "tower_job_runs",
            "Runs of the scheduled jobs, by job and outcome: ok or error.",
            ["job_name", "outcome"],
            registry=reg,
        )
        self.job_duration = Histogram(
            "tower_job_duration_seconds",
            "Time a job's run took, by job.",
            ["job_name"],
            buckets=JOB_BUCKETS,
            registry=reg,
        )
        self.job_last_success = Gauge(
            "tower_job_last_success_timestamp_seconds",
            "When each job last finished without error (Unix time): alert on time() minus this.",
            ["job_name"],
            registry=reg,
        )
        self.job_failures_in_a_row = Gauge(
            "tower_job_consecutive_failures",
            "Runs of each job that failed since its last success (0 after a success): a job that runs once a day"
            " shows its failure here for the whole day.",
            ["job_name"],
            registry=reg,
        )
        if process:
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)

    def register(self, collector: Collector) -> None:
        """Add a collector read at every scrape."""
        self.registry.register(collector)

    def render(self) -> bytes:
        """The whole registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def ingested(self, tables: Mapping[str, Sized]) -> None:
        """Count the rows of one durable hand-off to the pipeline, per table."""
        for table, rows in tables.items():
            if len(rows):
                self.ingest_rows.labels(table).inc(len(rows))

    def refused(self, door: str, records: int) -> None:
        """Count records a door refused."""
        if records:
            self.ingest_refused.labels(door).inc(records)

    def job_ran(self, job: str, ok: bool, seconds: float, finished: float | None = None) -> None:
        """Count one run of `job` and its duration; a success moves its last-success time (`finished`, Unix time)."""
        self.job_runs.labels(job, "ok" if ok else "error").inc()
        self.job_duration.labels(job).observe(seconds)
        if ok:
            self.job_last_success.labels(job).set(finished if finished is not None else time.time())
            self.job_failures_in_a_row.labels(job).set(0)
        else:
            self.job_failures_in_a_row.labels(job).inc()

    def grpc_answered(self, method: str, code: str, seconds: float) -> None:
        """Count one gRPC answer and its duration."""
        self.grpc_requests.labels(method, code).inc()
        self.grpc_duration.labels(method).observe(seconds)

    def http_answered(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one HTTP answer and its duration."""
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_duration.labels(method, route).observe(seconds)
