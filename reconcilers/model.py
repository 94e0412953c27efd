"""What reconcilers produce and how a run reports on itself: observations, comparisons, progress.

A reconciler compares two (or more) systems of record for one rule and answers, per finding rule
(an id exceptions are opened under), a `Comparison`: the subjects that differ now and the current
values of the subjects the loop asked about (those with an open exception or a difference at the
last run). `reconcilers.loop` turns comparisons into opened, resolved and reopened exceptions.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from reconcilers.config import FindingRule, RuleConfig


@dataclass(frozen=True)
class Observation:
    """One compared subject (e.g. `SKU-1@DAL`, an invoice id, a source) as this run saw it."""

    key: str
    differs: bool
    values: dict[str, Any]  # side by side: what each system says, the differences and the checks that failed
    route: dict[str, str]  # routing and filter data: warehouse, source, sku, location, customer_id, ...
    summary: str  # one line a person reads: "erp 12 vs wms/dallas 9 (difference 3, tolerance 0)"


@dataclass
class Comparison:
    """What one run saw for one finding rule. Unchecked (`checked=False`, with a `note`): the comparison
    could not run (a side has no data): nothing of the rule is opened or resolved this run."""

    rule: FindingRule
    checked: bool
    compared: int = 0
    observations: list[Observation] = field(default_factory=list)
    note: str = ""
    # Why an active exception whose key the run did not see at all resolves (`unreported`): inventory pairs neither
    # side reports any more. Empty: such exceptions stay as they are (an invoice outside the lookback is still wrong).
    unseen: str = ""

    @property
    def differing(self) -> list[Observation]:
        """The observations that differ."""
        return [o for o in self.observations if o.differs]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a run: rule, phase (pull, compare, apply, record, done, error), the step's number
    among the rule's steps, and a short message."""

    rule: str
    phase: str
    step: int
    steps: int
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"rule": self.rule, "phase": self.phase, "step": self.step, "steps": self.steps, "message": self.message}


Progress = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    """A progress callback that ignores every event."""


@dataclass
class RunContext:
    """What a reconciler gets for one run: its id, the clock's now, the rules whose keys it watches, progress,
    and the pull databases."""

    run_id: str
    now: datetime
    watch: tuple[str, ...]  # the finding rules whose watched keys (see reconcilers.sql.watch_condition) come back
    progress: Callable[[str, str], None]  # (phase, message)
    databases: Mapping[str, str] = field(default_factory=dict)  # pull database name -> SQLAlchemy URL
    pull_batch_rows: int = 50_000
    pull_max_rows: int = 20_000_000
    pull_timeout_seconds: float = 300.0
    pull_max_ahead: timedelta | None = None  # a pulled count further ahead of `now` fails the pull; None: no limit


class Reconciler(Protocol):
    """Compares systems of record for one rule."""

    config: RuleConfig

    def phases(self) -> list[str]:
        """The phases of a run before `apply` and `record` (e.g. pull wms, compare)."""
        ...

    def compare(self, run: RunContext) -> list[Comparison]:
        """One comparison per finding rule of the rule."""
        ...


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause CPython's cyclic garbage collector while a comparison's findings are built. Thousands of
    observations (each a few dicts and lists) all survive, and every few thousand of them the collector would
    traverse every object of the process again, finding nothing to free: about half of the Python time of a
    run with 10,000 findings (bench/reconcile.py). Reference counting still frees what dies; the collector
    resumes after, with the new objects in its youngest generation."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
