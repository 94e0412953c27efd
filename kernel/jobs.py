"""Scheduled jobs: a small registry of named functions, each with its own settings.

A job is a function `(JobContext) -> Any` registered under a name (`sla-evaluate`), with a
docstring and a settings model read from `TOWER_JOB_<NAME>_*` variables (`enabled`,
`interval_seconds`, plus whatever the job adds), the way Prefect's server services are set up.
The registry only describes jobs; `tower/scheduler.py` runs the enabled ones. Jobs read the time
from `context.clock`, never from the wall clock, so they run the same on a fixed clock.

The composition root builds one registry per tower and registers jobs that close over that
tower's services; feature packages may export job functions but never import the scheduler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.clock import Clock


class SchedulerSettings(BaseSettings):
    """The scheduler as a whole; each job also has its own `TOWER_JOB_<NAME>_ENABLED`."""

    model_config = SettingsConfigDict(env_prefix="TOWER_SCHEDULER_")

    enabled: bool = Field(True, description="Run scheduled jobs in this process (off: jobs run only when asked).")
    run_on_start: bool = Field(True, description="Run each enabled job once as soon as the scheduler starts.")


class JobSettings(BaseSettings):
    """What every job has: on or off, and how often it runs. Subclasses add the job's own settings."""

    enabled: bool = True
    interval_seconds: float = Field(60.0, gt=0)


S = TypeVar("S", bound=JobSettings)
JobFunction = Callable[["JobContext"], Any]


def env_prefix(name: str) -> str:
    """`sla-evaluate` -> `TOWER_JOB_SLA_EVALUATE_`."""
    return "TOWER_JOB_" + name.upper().replace("-", "_").replace(".", "_") + "_"


def job_settings(name: str, interval_seconds: float = 60.0, enabled: bool = True) -> type[JobSettings]:
    """A settings model for a job without settings of its own: the defaults given, read from its prefix."""
    default_enabled, default_interval = enabled, interval_seconds

    class _Settings(JobSettings):
        model_config = SettingsConfigDict(env_prefix=env_prefix(name))

        enabled: bool = Field(default_enabled, description=f"Run the {name} job on its schedule.")
        interval_seconds: float = Field(default_interval, gt=0, description=f"Seconds between runs of {name}.")

    _Settings.__name__ = _Settings.__qualname__ = "".join(p.title() for p in name.replace(".", "-").split("-")) + (
        "JobSettings"
    )
    return _Settings


@dataclass(frozen=True)
class JobContext:
    """What a job gets for one run: its name and settings, the clock, which run this is, a logger."""

    name: str
    settings: JobSettings
    clock: Clock
    run: int  # 1 for the first run in this process
    log: logging.Logger
    again: list[float] = field(default_factory=list)  # what run_again_in asked for, in seconds

    def now(self) -> datetime:
        """The injected clock's now."""
        return self.clock.now()

    def run_again_in(self, seconds: float) -> None:
        """Ask for the next run in `seconds` when that comes before the next interval (work that becomes due
        sooner: the Slack sender's next message in a channel). The scheduler running the job honours it."""
        self.again.append(max(0.0, seconds))


@dataclass(frozen=True)
class Job:
    """A registered job: name, function, description (its docstring) and settings model."""

    name: str
    function: JobFunction
    settings_model: type[JobSettings]
    description: str = ""
    after: tuple[str, ...] = ()  # also run right after each run of these jobs (a chain: their output is its input)

    def settings(self) -> JobSettings:
        """The job's settings as the environment sets them now."""
        return self.settings_model()


class JobRegistry:
    """Named jobs of one tower, in registration order."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    def add(
        self,
        name: str,
        function: JobFunction,
        settings: type[JobSettings] | None = None,
        interval_seconds: float = 60.0,
        enabled: bool = True,
        description: str | None = None,
        after: tuple[str, ...] = (),
    ) -> Job:
        """Register `function` as `name`; `settings` (a JobSettings subclass with its own env prefix) or the
        defaults given build its settings model. A name is registered once. `after` names jobs whose runs
        this one follows at once (besides its own interval): the alert dispatcher after the SLA engine, so
        that a new exception need not wait for the dispatcher's next turn."""
        if name in self._jobs:
            raise ValueError(f"a job named {name!r} is already registered")
        model = settings or job_settings(name, interval_seconds, enabled)
        doc = description if description is not None else (function.__doc__ or "")
        job = Job(name, function, model, " ".join(doc.split()), tuple(after))
        self._jobs[name] = job
        return job

    def register(
        self, name: str, settings: type[JobSettings] | None = None, interval_seconds: float = 60.0, enabled: bool = True
    ) -> Callable[[JobFunction], JobFunction]:
        """Decorator form of `add`."""

        def decorate(function: JobFunction) -> JobFunction:
            self.add(name, function, settings, interval_seconds, enabled)
            return function

        return decorate

    def get(self, name: str) -> Job:
        """The job named `name` (KeyError when there is none)."""
        return self._jobs[name]

    def __iter__(self) -> Iterator[Job]:
        return iter(list(self._jobs.values()))

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, name: object) -> bool:
        return name in self._jobs
