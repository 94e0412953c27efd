"""The reconcile service: runs the reconcilers of the configured rules, closes the loop, records each run.

One run of a rule: `compare` (after any pulls) inside the store, `apply` the comparisons to
exceptions (`reconcilers.loop`), and `record` the run in `recon_runs`. Runs are serialised (the
scheduler and the API may ask at the same time: the second waits). A failing rule is recorded with
its error and does not stop the next rule.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from kernel.clock import Clock
from kernel.exceptions import COLUMNS, ExceptionRecord, ExceptionStore
from kernel.queries import PAGE, page
from kernel.settings import CollectorSettings
from kernel.store import Store
from reconcilers.config import FindingRule, InventoryParams, RuleConfig, check_finding_rules
from reconcilers.inventory import InventoryReconciler
from reconcilers.invoice import InvoiceReconciler
from reconcilers.loop import Loop, OwnerFor, StateTable
from reconcilers.model import Progress, ProgressEvent, Reconciler, RunContext, no_progress
from reconcilers.runs import RunLog, RunRecord
from reconcilers.settings import ReconcileSettings

log = logging.getLogger(__name__)


class UnknownRule(LookupError):
    """No reconciliation rule has that id."""


@dataclass(frozen=True)
class Finding:
    """An active exception of a reconciliation rule, with the values the last run saw for its key."""

    exception: ExceptionRecord
    now: dict[str, Any] | None  # recon_state: differs, since, seen_at, run_id, detail (summary, values, route)


def reconciler_for(store: Store, config: RuleConfig) -> Reconciler:
    """The reconciler of a rule, by its `compare`."""
    if isinstance(config.params, InventoryParams):
        return InventoryReconciler(store, config)
    return InvoiceReconciler(store, config)


class ReconcileService:
    """Runs reconciliation rules now (API, CLI) or on a schedule (the `reconcile` job)."""

    def __init__(
        self,
        store: Store,
        exceptions: ExceptionStore,
        clock: Clock,
        configs: list[RuleConfig],
        owner_for: OwnerFor,
        settings: ReconcileSettings | None = None,
        max_ahead_minutes: int | None = None,
    ) -> None:
        """`max_ahead_minutes`: how far ahead of the clock a pulled count may be, as for events at the door (0: any
        time); None reads TOWER_COLLECTOR_EVENT_MAX_AHEAD_MINUTES (kernel's CollectorSettings)."""
        check_finding_rules(configs)
        self.store = store
        self.clock = clock
        self.settings = settings or ReconcileSettings()
        if max_ahead_minutes is None:
            max_ahead_minutes = CollectorSettings().event_max_ahead_minutes
        self.max_ahead = timedelta(minutes=max_ahead_minutes) if max_ahead_minutes else None
        self.reconcilers: dict[str, Reconciler] = {c.id: reconciler_for(store, c) for c in configs}
        self.loop = Loop(store, exceptions, owner_for)
        self.runs = RunLog(store)
        self.state = StateTable(store)
        self._lock = threading.Lock()

    @property
    def rules(self) -> list[str]:
        """The ids of the rules, in order."""
        return list(self.reconcilers)

    def finding_rules(self, rule: str | None = None) -> list[FindingRule]:
        """The rule ids exceptions are opened under: of every rule, or of `rule` (a rule or a finding rule id)."""
        found = [f for r in self.reconcilers.values() for f in r.config.finding_rules()]
        if rule is None:
            return found
        picked = [f for f in found if rule in (f.id, f.source_rule)]
        if not picked:
            raise UnknownRule(rule)
        return picked

    def run(self, rule: str | None = None, trigger: str = "api", progress: Progress = no_progress) -> list[RunRecord]:
        """Run `rule` (every rule when None) now; one RunRecord per rule, errors recorded in them.

        UnknownRule when `rule` is not a reconciliation rule."""
        names = self.rules if rule is None else [rule]
        for name in names:
            if name not in self.reconcilers:
                raise UnknownRule(name)
        with self._lock:
            return [self._run(self.reconcilers[name], trigger, progress) for name in names]

    def _run(self, reconciler: Reconciler, trigger: str, progress: Progress) -> RunRecord:
        config = reconciler.config
        phases = [*reconciler.phases(), "apply", "record"]
        now = self.clock.now()
        record = RunRecord(str(uuid.uuid4()), config.id, config.compare, trigger, now)
        self.runs.write(record)
        begun = time.perf_counter()
        timings: dict[str, float] = {}
        current: list[Any] = [None, begun]

        def step(phase: str, message: str = "") -> None:
            at = time.perf_counter()
            if current[0] is not None and current[0] != phase:
                timings[current[0]] = round(timings.get(current[0], 0.0) + (at - current[1]) * 1000, 3)
            if current[0] != phase:
                current[0], current[1] = phase, at
            number = phases.index(phase) + 1 if phase in phases else len(phases)
            progress(ProgressEvent(config.id, phase, number, len(phases), message))

        try:
            context = RunContext(
                run_id=record.run_id,
                now=now,
                watch=tuple(f.id for f in config.finding_rules()),
                progress=step,
                databases={name: url.get_secret_value() for name, url in self.settings.sources.items()},
                pull_batch_rows=self.settings.pull_batch_rows,
                pull_max_rows=self.settings.pull_max_rows,
                pull_timeout_seconds=self.settings.pull_timeout_seconds,
                pull_max_ahead=self.max_ahead,
            )
            comparisons = reconciler.compare(context)
            step("apply", "opening, resolving and reopening exceptions")
            outcomes = [self.loop.apply(c, now, record.run_id) for c in comparisons]
            main = outcomes[0]
            record.rows_compared = main.compared
            record.findings = sum(o.differing for o in outcomes if o.checked)
            record.opened = sum(len(o.opened) for o in outcomes)
            record.resolved = sum(len(o.resolved) for o in outcomes)
            record.reopened = sum(len(o.reopened) for o in outcomes)
            record.details["rules"] = {o.rule: o.as_dict() for o in outcomes}
            record.status = "ok"
        except Exception as exc:  # recorded, never raised: the next rule still runs
            log.exception("reconciliation run of %s failed", config.id)
            record.status = "error"
            record.error = f"{type(exc).__name__}: {exc}"[:2000]
        step("record", record.status)
        record.finished_at = self.clock.now()
        record.duration_ms = (time.perf_counter() - begun) * 1000
        timings["record"] = 0.0
        record.details["phases_ms"] = timings
        self.runs.write(record)
        done = (
            f"{record.rows_compared:,} compared, {record.findings:,} differing: {record.opened} opened,"
            f" {record.resolved} resolved, {record.reopened} reopened"
            if record.status == "ok"
            else record.error
        )
        progress(ProgressEvent(config.id, "done" if record.status == "ok" else "error", len(phases), len(phases), done))
        return record

    def findings(self, rule: str | None = None, limit: int = 100, offset: int = 0) -> tuple[list[Finding], int]:
        """Active exceptions of the reconciliation rules (those of `rule` when given), newest first, each
        with the values its key had at the last run; and how many there are."""
        rules = [f.id for f in self.finding_rules(rule)]
        where = "rule IN {rules:Array(String)} AND status != 'resolved'"
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM exceptions FINAL WHERE {where} ORDER BY opened_at DESC, id{PAGE}",
            {"rules": rules, **page(limit, offset)},
        )
        total = int(
            self.store.query(f"SELECT count() AS n FROM exceptions FINAL WHERE {where}", {"rules": rules})[0]["n"]
        )
        records = [ExceptionRecord.from_row(row) for row in rows]
        state = self.state.current(rules, {r.key for r in records}) if records else {}
        return [Finding(r, state.get((r.rule, r.key))) for r in records], total


def summary(records: list[RunRecord]) -> Mapping[str, Any]:
    """Totals of several runs (for logs and the job's result)."""
    return {
        "runs": len(records),
        "errors": [f"{r.rule}: {r.error}" for r in records if r.status == "error"],
        "opened": sum(r.opened for r in records),
        "resolved": sum(r.resolved for r in records),
        "reopened": sum(r.reopened for r in records),
    }
