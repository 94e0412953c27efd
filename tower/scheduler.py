"""Runs the enabled jobs of a JobRegistry on their intervals with APScheduler's BackgroundScheduler.

One instance of a job runs at a time (`max_instances=1`); runs missed while one was busy collapse
into one (`coalesce`). Each run is traced as a span (`job.<name>`, tower.telemetry.job_span) and
its error is logged and recorded, never raised: a failing job keeps its schedule and never stops
the others. Intervals are wall-clock (APScheduler's own timer); what a job computes takes its
time from the injected clock in its context. Started and stopped with the Tower.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from kernel.clock import Clock
from kernel.jobs import Job, JobContext, JobRegistry, JobSettings, SchedulerSettings
from tower.telemetry import job_span

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobRun:
    """The outcome of one run of a job."""

    name: str
    run: int
    started_at: datetime
    duration_ms: float
    ok: bool
    error: str = ""
    result: Any = None


class Scheduler:
    """Runs a registry's enabled jobs in the background; `run_job` runs one now, the same way."""

    def __init__(self, registry: JobRegistry, clock: Clock, settings: SchedulerSettings | None = None) -> None:
        self.registry = registry
        self.clock = clock
        self.settings = settings or SchedulerSettings()
        self.last_runs: dict[str, JobRun] = {}
        self._runs: dict[str, int] = {}
        self._settings: dict[str, JobSettings] = {}
        self._lock = threading.Lock()
        self._ran = threading.Condition(self._lock)
        self._scheduler: Any = None

    @property
    def running(self) -> bool:
        """Whether the background scheduler is started."""
        return self._scheduler is not None

    def enabled_jobs(self) -> list[tuple[Job, JobSettings]]:
        """Jobs whose settings enable them, with those settings (read from the environment once)."""
        out: list[tuple[Job, JobSettings]] = []
        for job in self.registry:
            settings = self._job_settings(job)
            if settings.enabled:
                out.append((job, settings))
        return out

    def _job_settings(self, job: Job) -> JobSettings:
        with self._lock:
            if job.name not in self._settings:
                self._settings[job.name] = job.settings()
            return self._settings[job.name]

    def run_job(self, name: str) -> JobRun:
        """Run one job now in this thread: in a span, errors logged and recorded, never raised."""
        job = self.registry.get(name)
        settings = self._job_settings(job)
        with self._lock:
            run = self._runs[name] = self._runs.get(name, 0) + 1
        context = JobContext(name, settings, self.clock, run, logging.getLogger(f"tower.jobs.{name}"))
        started_at = self.clock.now()
        began = time.perf_counter()
        with job_span(f"job.{name}", **{"job.name": name, "job.run": run}) as span:
            try:
                result = job.function(context)
            except Exception as exc:
                span.record_exception(exc)
                log.exception("job %s (run %d) failed", name, run)
                outcome = JobRun(name, run, started_at, _ms(began), ok=False, error=f"{type(exc).__name__}: {exc}")
            else:
                outcome = JobRun(name, run, started_at, _ms(began), ok=True, result=result)
        with self._ran:
            self.last_runs[name] = outcome
            self._ran.notify_all()
        return outcome

    def runs(self, name: str) -> int:
        """How many runs of `name` have started in this process."""
        with self._lock:
            return self._runs.get(name, 0)

    def wait_for_runs(self, name: str, count: int, timeout: float) -> bool:
        """Block until `count` runs of `name` have finished (True), or `timeout` seconds passed (False)."""
        with self._ran:
            return self._ran.wait_for(
                lambda: name in self.last_runs and self.last_runs[name].run >= count, timeout=timeout
            )

    def start(self) -> None:
        """Schedule every enabled job (nothing when the scheduler is disabled); returns at once."""
        if self.running or not self.settings.enabled:
            return
        jobs = self.enabled_jobs()
        if not jobs:
            return
        # APScheduler logs every run at INFO; our own lines (and job_span) say what matters.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        scheduler = BackgroundScheduler(
            timezone=UTC, executors={"default": ThreadPoolExecutor(max_workers=len(jobs))}, daemon=True
        )
        for job, settings in jobs:
            extra: dict[str, Any] = {}
            if self.settings.run_on_start:
                extra["next_run_time"] = datetime.now(UTC)  # APScheduler's timer runs on the wall clock
            scheduler.add_job(
                self.run_job,
                "interval",
                seconds=settings.interval_seconds,
                args=[job.name],
                id=job.name,
                name=job.name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                **extra,
            )
            log.info("job %s every %gs", job.name, settings.interval_seconds)
        scheduler.start()
        self._scheduler = scheduler

    def stop(self, wait: bool = True) -> None:
        """Stop scheduling; with `wait`, let running jobs finish first."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=wait)


def _ms(began: float) -> float:
    return round((time.perf_counter() - began) * 1000, 3)
