"""Runs the enabled jobs of a JobRegistry on their intervals with APScheduler's BackgroundScheduler.

One instance of a job runs at a time (`max_instances=1`); runs missed while one was busy collapse
into one (`coalesce`). Each run is traced as a span (`job.<name>`, tower.telemetry.job_span) and
its error is logged and recorded, never raised: a failing job keeps its schedule and never stops
the others. A job failing run after run logs the first failure of the streak with its traceback (and again
when the exception's type changes), each later one as a single line with the count and the error, and the
run that ends the streak at INFO. Intervals are wall-clock (APScheduler's own timer); what a job computes takes its
time from the injected clock in its context. Started and stopped with the Tower.

A job registered `after` others (kernel/jobs.py) is also woken as soon as a run of one of them finishes,
so a chain (sla-evaluate -> alerts-dispatch -> alerts-send) takes seconds, not the sum of the intervals;
a job woken while it runs runs once more right after. A run may also ask for its next run sooner than its
interval (`JobContext.run_again_in`: the sender, when a channel's next message is due in a second).

With a lease (kernel/lease.py, the server backend), several schedulers may run against one
database and only the holder runs jobs: the lease is ticked on start and every renew interval
(its own timer, never gated), each job run first asks `lease.holds()` and is skipped otherwise,
and stopping releases the lease so a standby takes over at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from kernel.clock import Clock
from kernel.jobs import Job, JobContext, JobRegistry, JobSettings, SchedulerSettings
from kernel.lease import LeaseGate
from tower.telemetry import job_span

log = logging.getLogger(__name__)

# The soonest a job that asked to run again (JobContext.run_again_in) runs: never a busy loop.
MIN_AGAIN_SECONDS = 0.05


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
    skipped: bool = False  # not run: this process does not hold the scheduler lease


class Scheduler:
    """Runs a registry's enabled jobs in the background; `run_job` runs one now, the same way."""

    def __init__(
        self,
        registry: JobRegistry,
        clock: Clock,
        settings: SchedulerSettings | None = None,
        lease: LeaseGate | None = None,
        lease_interval_seconds: float = 10.0,
        observers: Sequence[Callable[[JobRun], None]] = (),
    ) -> None:
        """`observers` see every run's outcome (tower/job_health.py); their errors are logged."""
        self.registry = registry
        self.observers = tuple(observers)
        self.clock = clock
        self.settings = settings or SchedulerSettings()
        self.lease = lease
        self.lease_interval_seconds = lease_interval_seconds
        self.skipped = 0  # job runs skipped because another process holds the lease
        self.last_runs: dict[str, JobRun] = {}
        self._runs: dict[str, int] = {}
        self._settings: dict[str, JobSettings] = {}
        self._lock = threading.Lock()
        self._ran = threading.Condition(self._lock)
        self._scheduler: Any = None
        self._began: dict[str, float] = {}  # the jobs running now: when each run began (time.monotonic)
        self._woken: set[str] = set()  # jobs woken while running: they run again when they finish
        # each job failing now: its failures in a row and the exception type of the last (whose traceback is logged)
        self._failing: dict[str, tuple[int, type[BaseException]]] = {}

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
        """Run one job now in this thread: in a span, errors logged and recorded, never raised. With a lease,
        only while this process holds it (otherwise the run is skipped)."""
        job = self.registry.get(name)
        settings = self._job_settings(job)
        if self.lease is not None and not self._lease_holds():
            with self._lock:
                self.skipped += 1
            return JobRun(name, 0, self.clock.now(), 0.0, ok=True, skipped=True)
        with self._lock:
            run = self._runs[name] = self._runs.get(name, 0) + 1
            self._began[name] = time.monotonic()
        context = JobContext(name, settings, self.clock, run, logging.getLogger(f"tower.jobs.{name}"))
        started_at = self.clock.now()
        began = time.perf_counter()
        with job_span(f"job.{name}", **{"job.name": name, "job.run": run}) as span:
            try:
                result = job.function(context)
            except Exception as exc:
                span.record_exception(exc)
                error = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    failures, kind = self._failing.get(name, (0, type(exc)))
                    failures += 1
                    self._failing[name] = (failures, type(exc))
                if failures == 1 or kind is not type(exc):
                    log.exception("job %s (run %d) failed", name, run)
                else:
                    # the streak goes on: its traceback is in the log already (the job's `tower-jobs` exception,
                    # when that rule is on, says it goes on); one line per run, whatever the message says
                    log.error("job %s (run %d) failed again, %d failures in a row: %s", name, run, failures, error)
                outcome = JobRun(name, run, started_at, _ms(began), ok=False, error=error)
            else:
                outcome = JobRun(name, run, started_at, _ms(began), ok=True, result=result)
                with self._lock:
                    failures = self._failing.pop(name, (0, Exception))[0]
                if failures:
                    log.info(
                        "job %s (run %d) recovered after %d failure%s",
                        name,
                        run,
                        failures,
                        "" if failures == 1 else "s",
                    )
        for observer in self.observers:
            try:
                observer(outcome)
            except Exception:
                log.exception("observer of job %s (run %d) failed", name, run)
        with self._ran:
            self.last_runs[name] = outcome
            self._began.pop(name, None)
            again = name in self._woken
            self._woken.discard(name)
            self._ran.notify_all()
        if again:
            self._wake(name)
        for follower in self._followers(name):
            self._wake(follower)
        if context.again:
            self._wake(name, seconds=max(MIN_AGAIN_SECONDS, min(context.again)))
        return outcome

    def _followers(self, name: str) -> list[str]:
        """The enabled jobs registered to run after `name`."""
        return [job.name for job, _ in self.enabled_jobs() if name in job.after]

    def _wake(self, name: str, seconds: float = 0.0) -> None:
        """Run the scheduled job `name` now (in the scheduler's pool), or once more when it is running; with
        `seconds`, then instead of now, unless its next run comes sooner."""
        scheduler = self._scheduler
        if scheduler is None:
            return
        with self._lock:
            if name in self._began and not seconds:
                self._woken.add(name)
                return
        at = datetime.now(UTC) + timedelta(seconds=seconds)  # APScheduler's timer: the wall clock
        try:
            scheduled = scheduler.get_job(name)
            if scheduled is not None and scheduled.next_run_time is not None and scheduled.next_run_time <= at:
                return
            scheduler.modify_job(name, next_run_time=at)
        except Exception:  # not scheduled (stopping, or disabled since): its own schedule, if any, stands
            log.debug("cannot wake job %s", name, exc_info=True)

    def _lease_holds(self) -> bool:
        assert self.lease is not None
        try:
            return self.lease.holds()
        except Exception:
            log.exception("cannot check the scheduler lease; not running jobs until it can be checked")
            return False

    def tick_lease(self) -> bool:
        """Renew or try to acquire the lease now (errors logged: the lease then lapses on its own)."""
        if self.lease is None:
            return True
        try:
            return self.lease.tick()
        except Exception:
            log.exception("cannot renew or acquire the scheduler lease")
            return False

    def status(self) -> dict[str, Any]:
        """Running or not, the enabled jobs, and the lease as this process sees it."""
        body: dict[str, Any] = {"running": self.running, "jobs": [job.name for job, _ in self.enabled_jobs()]}
        if self.lease is not None:
            try:
                body["lease"] = self.lease.status()
            except Exception as exc:
                body["lease"] = {"held": False, "error": f"{type(exc).__name__}: {exc}"}
        return body

    def running_for(self) -> dict[str, float]:
        """Seconds each job running now has been running (a hung job never finishes, so never fails)."""
        now = time.monotonic()
        with self._lock:
            return {name: now - began for name, began in self._began.items()}

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
            timezone=UTC, executors={"default": ThreadPoolExecutor(max_workers=len(jobs) + 1)}, daemon=True
        )
        if self.lease is not None:
            if not self.tick_lease():  # acquire before the first runs, so run_on_start runs them at once
                log.info("scheduler lease held elsewhere: standing by, jobs run here once it is free")
            scheduler.add_job(
                self.tick_lease,
                "interval",
                seconds=self.lease_interval_seconds,
                id="scheduler-lease",
                name="scheduler-lease",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
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
            if self.lease is not None:
                try:
                    self.lease.release()
                except Exception:
                    log.exception("cannot release the scheduler lease; a standby takes over when it expires")


def _ms(began: float) -> float:
    return round((time.perf_counter() - began) * 1000, 3)
