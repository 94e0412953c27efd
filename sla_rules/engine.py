"""The SLA engine: every case of every SLA rule evaluated inside ClickHouse, on an injected clock.

A run, per rule (the SQL is in `sla_rules.sql`):

1. one INSERT ... SELECT computes the rule's cases from `business_events` and writes a new
   version to `sla_cases` only for a case that is new or whose state changed (status, start,
   end, deadline, customer, warehouse, source), with the status it replaces; no case row
   passes through Python;
2. the transitions written since the last completed run come back (few rows): a case newly
   breached opens an exception (owner from `owner_for`), a breached case whose end arrived
   resolves its exception (resolution `late`, with the hours late);
3. the run is recorded in `sla_runs` (mode, watermark, the `now` used, version, counts).

Incremental runs (`full=False`) recompute only the keys with events received after the last
run's watermark (less `overlap`: a row can become visible after one with a later received_at),
and the pending cases whose warning time or deadline passed since the last run's `now`.
A rule's first run, a rule whose definition changed, `full=True` and, every `sweep_every`,
a safety sweep (catching rows a collector spool drained long after they were received)
evaluate every case. Recomputing a case is idempotent, and `ExceptionStore.open_many` never
opens a second exception for an open (rule, key), so running twice opens nothing twice.

Semantics decided here (see docs/sla-engine.md):
- a case exists once a start event is stored; the first end event ends it, even one whose
  business time is before the start (events arrive in any order);
- live runs count every stored event; a backtest counts only events before its `until`;
- a case first seen already `late` (history) opens no exception: there is nothing left to
  act on; only a case seen `breached` opens one, and only once.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kernel.clock import Clock
from kernel.exceptions import ExceptionRecord, ExceptionStore, NewException, hours_between
from kernel.store import Store
from sla_rules import sql
from sla_rules.model import Rule, SlaRule
from sla_rules.report import EvaluationReport, RuleReport

log = logging.getLogger(__name__)

OwnerFor = Callable[[Rule, Mapping[str, str]], str]

OVERLAP = timedelta(minutes=2)
SWEEP_EVERY = timedelta(hours=1)
# An incremental run with more keys to recompute than this evaluates the rule in full instead.
MAX_INCREMENTAL_KEYS = 100_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class LastRun:
    """What the last completed run of a rule left: its version, `now`, watermark and rule fingerprint."""

    version: int
    as_of: datetime
    watermark: datetime
    rule_hash: str
    last_full: datetime | None


def parse_time(text: str | None) -> datetime | None:
    """A stored UTC timestamp ('YYYY-MM-DD HH:MM:SS.ffffff') as an aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None


class SlaEngine:
    """Evaluates SLA rules into `sla_cases`, opening and resolving their exceptions."""

    def __init__(
        self,
        store: Store,
        exceptions: ExceptionStore,
        clock: Clock,
        rules: list[SlaRule],
        owner_for: OwnerFor,
        *,
        overlap: timedelta = OVERLAP,
        sweep_every: timedelta | None = SWEEP_EVERY,
        max_incremental_keys: int = MAX_INCREMENTAL_KEYS,
    ) -> None:
        self.store = store
        self.exceptions = exceptions
        self.clock = clock
        self.rules = [r for r in rules if r.enabled]
        self.owner_for = owner_for
        self.overlap = overlap
        self.sweep_every = sweep_every
        self.max_incremental_keys = max_incremental_keys
        self._lock = threading.Lock()  # the scheduler and the API may evaluate at the same time
        self._last_version = 0

    def _version(self) -> int:
        # Monotonic within the process even when the clock stands still (fixed clocks in tests).
        self._last_version = max(self._last_version + 1, time.time_ns())
        return self._last_version

    # evaluation

    def evaluate(self, full: bool = False) -> EvaluationReport:
        """Evaluate every rule at the clock's now; `full` recomputes every case, not only what changed."""
        with self._lock:
            begun = time.perf_counter()
            now = self.clock.now().astimezone(UTC)
            report = EvaluationReport(full=full, evaluated_at=now)
            if not self.rules:
                return report
            watermark = parse_time(self.store.query(sql.WATERMARK)[0]["w"]) or _EPOCH
            last = self.last_runs()
            groups: dict[tuple[str, str, bool], sql.Group] = {}
            modes: dict[str, str] = {}
            for rule in self.rules:
                before = last.get(rule.id)
                mode = modes[rule.id] = self._mode(rule, full, before, now)
                if mode == "full" or before is None:
                    part = sql.RulePart(rule)
                else:
                    part = sql.RulePart(rule, before.watermark - self.overlap, min(before.as_of, now))
                scope: sql.Scope = "all" if mode == "full" else "changed"
                group_key = (rule.key, scope, before is None)
                groups.setdefault(group_key, sql.Group(rule.key, scope, first=before is None)).parts.append(part)
            keys: dict[str, int] = {}
            for group in groups.values():
                if group.scope != "changed":
                    continue
                found = self.store.query(*sql.changed_keys(group, now, self.max_incremental_keys))
                if len(found) > self.max_incremental_keys:
                    # this much change is cheaper to evaluate in full than key by key
                    group.scope = "all"
                    modes.update((p.rule.id, "full") for p in group.parts)
                    continue
                group.keys = [row["k"] for row in found]
                keys.update((p.rule.id, len(group.keys)) for p in group.parts)
            version = self._version()
            work = [g for g in groups.values() if g.scope != "changed" or g.keys]
            if work:
                self.store.command(*sql.evaluation(work, now, version))
            shared_ms = (time.perf_counter() - begun) * 1000 / len(self.rules)
            written = {r["rule"]: int(r["n"]) for r in self.store.query(sql.WRITTEN, {"version": version})}
            runs: list[dict[str, Any]] = []
            for rule in self.rules:
                started = time.perf_counter()
                mode = modes[rule.id]
                if mode == "full":
                    keys[rule.id] = int(self.store.query(sql.CASE_COUNT, {"rule": rule.id})[0]["n"])
                before = last.get(rule.id)
                transitions = self.store.query(
                    sql.TRANSITIONS,
                    {"rule": rule.id, "after_version": before.version if before else 0, "version": version},
                )
                opened, resolved = self._apply(rule, transitions)
                part = RuleReport(
                    cases_changed=written.get(rule.id, 0),
                    opened=[e.id for e in opened],
                    resolved=[e.id for e in resolved],
                    duration_ms=shared_ms + (time.perf_counter() - started) * 1000,
                    mode=mode,
                    keys_evaluated=keys.get(rule.id, 0),
                )
                report.add(rule.id, part)
                runs.append(
                    {
                        "run_id": str(uuid.uuid4()),
                        "rule": rule.id,
                        "rule_hash": sql.rule_fingerprint(rule),
                        "mode": mode,
                        "started_at": now,
                        "evaluated_at": self.clock.now(),
                        "watermark": watermark,
                        "duration_ms": part.duration_ms,
                        "cases_changed": part.cases_changed,
                        "opened": len(opened),
                        "resolved": len(resolved),
                        "version": version,
                        "keys_evaluated": part.keys_evaluated,
                    }
                )
            self.store.insert("sla_runs", runs)
            report.duration_ms = (time.perf_counter() - begun) * 1000
            return report

    def last_runs(self) -> dict[str, LastRun]:
        """The last completed run of each rule that has one, by rule id."""
        rows = self.store.query(sql.LAST_RUNS, {"rules": [r.id for r in self.rules]})
        found: dict[str, LastRun] = {}
        for row in rows:
            as_of, mark = parse_time(row["as_of"]), parse_time(row["last_watermark"])
            assert as_of is not None and mark is not None
            found[row["rule"]] = LastRun(
                version=int(row["last_version"]),
                as_of=as_of,
                watermark=mark,
                rule_hash=row["last_hash"],
                last_full=parse_time(row["last_full"]) if int(row["full_runs"]) else None,
            )
        return found

    def _mode(self, rule: SlaRule, full: bool, last: LastRun | None, now: datetime) -> str:
        if full or last is None or last.rule_hash != sql.rule_fingerprint(rule):
            return "full"
        if self.sweep_every is not None and (last.last_full is None or now - last.last_full >= self.sweep_every):
            return "full"
        return "incremental"

    def _apply(self, rule: SlaRule, transitions: list[dict[str, Any]]) -> tuple[list[ExceptionRecord], list[ExceptionRecord]]:
        """Open an exception per newly breached case, then resolve those of cases no longer breached."""
        breached = [t for t in transitions if t["status"] == "breached"]
        opened = self.exceptions.open_many([self._finding(rule, t) for t in breached]) if breached else []
        ended: dict[str, dict[str, Any]] = {}
        for t in transitions:  # in version order: the last word on a key wins
            if t["previous_status"] == "breached" and t["status"] != "breached":
                ended[t["key"]] = t
            elif t["status"] == "breached":
                ended.pop(t["key"], None)
        if not ended:
            return opened, []
        active = self.exceptions.active_by_key(rule.id)
        resolved: list[ExceptionRecord] = []
        by_resolution: dict[str, list[ExceptionRecord]] = {}
        details: dict[str, dict[str, Any]] = {}
        for key, t in ended.items():
            record = active.get(key)
            if record is None:
                continue
            # late (or met, when a deadline moved): the end arrived; pending: the deadline moved later
            resolution = t["status"] if t["ended_at"] else "deadline-moved"
            by_resolution.setdefault(resolution, []).append(record)
            ended_at = parse_time(t["ended_at"])
            if ended_at is not None:
                late = max(0.0, hours_between(t["due_at"], ended_at))
                details[record.id] = {"hours_late": late, "ended_at": t["ended_at"]}
            else:
                details[record.id] = {"due_at": t["due_at"]}
        for resolution, records in by_resolution.items():
            resolved += self.exceptions.resolve_many(records, resolution, details, actor="engine")
        return opened, resolved

    def _finding(self, rule: SlaRule, case: dict[str, Any]) -> NewException:
        fields = {"warehouse": case["warehouse"], "customer_id": case["customer_id"], "source": case["source"]}
        return NewException(
            rule=rule.id,
            key=case["key"],
            kind=rule.kind,
            owner=self.owner_for(rule, fields),
            severity=rule.severity,
            due_at=parse_time(case["due_at"]),
            context={**fields, "started_at": case["started_at"]},
        )

    # backtest

    def backtest(self, rule: SlaRule, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """The cases `rule` finds for starts in [since, until), with their status as of `until`,
        counting only events before `until`. Writes nothing."""
        rows = self.store.query(*sql.backtest(rule, since.astimezone(UTC), until.astimezone(UTC)))
        return [{"rule": rule.id, **row} for row in rows]
