"""Job health: the `tower-jobs` rule (`check: job-failures`) over the scheduler's own runs.

The scheduler hands every run's outcome to `JobHealth.observe`. A job that failed `failures` runs in a
row opens one exception (rule `tower-jobs`, key the job's name, technical, routed like any technical
rule: the integration on-call) with its last error; its next successful run resolves it (resolution
`recovered`). The count of failures lives in the process that runs the jobs (the scheduler, one at a
time under the lease); an exception left open by an earlier process is resolved by the job's first
success here, which is why the first success of each job in a process looks for one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from kernel.exceptions import ExceptionStore, NewException
from sla_rules.model import JobFailuresRule, Rule
from sla_rules.texts import RECOVERED
from tower.scheduler import JobRun

log = logging.getLogger(__name__)

OwnerFor = Callable[[Rule, Mapping[str, str]], str]


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class _Streak:
    """A job's failed runs in a row: the first, the last and how many."""

    first: JobRun
    last: JobRun
    count: int = 1


class JobHealth:
    """Opens and resolves `tower-jobs` exceptions from the scheduler's job runs."""

    def __init__(self, exceptions: ExceptionStore, rule: JobFailuresRule, owner_for: OwnerFor) -> None:
        self.exceptions = exceptions
        self.rule = rule
        self.owner_for = owner_for
        self._lock = threading.Lock()
        self._streaks: dict[str, _Streak] = {}
        self._seen: set[str] = set()  # jobs with a success in this process

    def observe(self, outcome: JobRun) -> None:
        """Count the run: open the job's exception at `failures` failures in a row, resolve it at a success.
        Runs skipped (another process holds the lease) count for nothing."""
        if outcome.skipped:
            return
        name = outcome.name
        if outcome.ok:
            with self._lock:
                ended = self._streaks.pop(name, None)
                first_success = name not in self._seen
                self._seen.add(name)
            if ended is not None or first_success:
                self._recover(outcome, ended)
            return
        with self._lock:
            before = self._streaks.get(name)
            streak = self._streaks[name] = (
                _Streak(outcome, outcome) if before is None else _Streak(before.first, outcome, before.count + 1)
            )
        if streak.count >= self.rule.params.failures:
            self._fail(streak)

    def _fail(self, streak: _Streak) -> None:
        """Open the job's exception (nothing when one is active: the store keeps one per key)."""
        name = streak.last.name
        found = NewException(
            rule=self.rule.id,
            key=name,
            kind=self.rule.kind,
            owner=self.owner_for(self.rule, {"job": name}),
            severity=self.rule.severity,
            context={
                "job": name,
                "failures": streak.count,
                "failing_since": _iso(streak.first.started_at),
                "last_run": streak.last.run,
                "last_failed_at": _iso(streak.last.started_at),
                "last_error": streak.last.error,
            },
        )
        opened = self.exceptions.open_many([found], actor="scheduler")
        if opened:
            log.warning("job %s failed %d runs in a row: exception %s opened", name, streak.count, opened[0].id)

    def _recover(self, outcome: JobRun, streak: _Streak | None) -> None:
        """Resolve the job's active exception, if any, with the run that succeeded as evidence."""
        active = self.exceptions.active_by_key(self.rule.id, [outcome.name])
        if not active:
            return
        detail = {"job": outcome.name, "succeeded_at": _iso(outcome.started_at), "run": outcome.run}
        if streak is not None:
            detail["failures"] = streak.count
        records = list(active.values())
        self.exceptions.resolve_many(records, RECOVERED, {r.id: detail for r in records}, actor="scheduler")
        log.info("job %s succeeded again: exception %s resolved", outcome.name, records[0].id)
