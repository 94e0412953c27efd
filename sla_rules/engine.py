"""The SLA engine: every case of every SLA rule evaluated inside ClickHouse, on an injected clock.

A run:

1. one INSERT ... SELECT (SQL in `sla_rules.sql`) computes the cases of every rule, rules that
   share a key column from one scan, and writes a new version to `sla_cases` only for a case
   that is new or whose state changed (status, start, end, deadline, customer, warehouse,
   source), with the status it replaces. No case row passes through Python;
2. every rule's transitions written since its own last completed run come back in one read (few
   rows): a case newly breached opens an exception (owner from `owner_for`), a breached case whose
   end arrived resolves its exception (resolution `late`, with the hours late), every rule's with
   one read of the active exceptions and one write;
3. each rule's run is recorded in `sla_runs` (mode, watermark, the `now` used, version, counts).

A run makes few round trips whatever the number of rules: the last runs (with the newest
received_at), the changed keys of every incremental group, the evaluation, its counts, its
transitions, the exceptions' read and write, the runs.

Incremental runs (`full=False`) recompute only the keys with events received after the last
run's watermark, and the pending cases whose warning time or deadline passed since the last
run's `now`. The watermark is the newest received_at the run saw (or its `now`, if earlier)
less `overlap`: a row may become visible a little after it was stamped (the collector stamps
received_at before its batch is written), and taking the newest stamp seen rather than the
engine's clock keeps a collector whose clock runs behind safe. The last `overlap` of traffic is
therefore recomputed again by the next runs (until newer traffic arrives); recomputing is
idempotent and cheap.
A rule's first run, a rule whose definition changed, an incremental run with more than
`max_incremental_keys` keys, `full=True` and, every `sweep_every`, a safety sweep (for rows that
become visible long after they were received: a collector spool drained after an outage)
evaluate every case.

Semantics decided here:
- a case exists once a start event is stored; the first end event ends it, even one whose
  business time is before the start (events arrive in any order);
- a live run counts every stored event; a backtest counts only events before its `until`;
- a case first seen already `late` (history) opens no exception: there is nothing left to act
  on. A case seen `breached` opens one, once: `ExceptionStore.open_many` skips an open
  (rule, key), and a breach resolved by hand is not reopened (transitions, not states, open).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kernel.clock import Clock
from kernel.exceptions import ExceptionRecord, ExceptionStore, NewException, hours_between
from kernel.store import Store
from kernel.store.base import stored_time, stored_time_or_none
from sla_rules import sql
from sla_rules.model import Rule, SlaRule
from sla_rules.report import EvaluationReport, RuleReport
from sla_rules.texts import iso

log = logging.getLogger(__name__)

OwnerFor = Callable[[Rule, Mapping[str, str]], str]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OVERLAP = timedelta(minutes=2)
SWEEP_EVERY = timedelta(hours=1)
# An incremental run with more keys to recompute than this evaluates in full instead: the keys travel
# as one array parameter (about 12 bytes each), and past this many a full run costs no more.
MAX_INCREMENTAL_KEYS = 20_000


@dataclass(frozen=True)
class LastRun:
    """What the last completed run of a rule left: its version, `now`, watermark and rule fingerprint."""

    version: int
    as_of: datetime
    watermark: datetime
    rule_hash: str
    last_full: datetime | None
    cases_total: int = 0


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
            last, newest = self._last_runs()
            if newest is None:  # no rule has run yet
                rows = self.store.query(sql.NEWEST_RECEIVED)
                newest = stored_time_or_none(rows[0]["at"]) if rows else None
            # no event yet: the watermark stays at the epoch, so the next run misses nothing
            watermark = min(newest or EPOCH, now) - self.overlap
            groups, modes = self._plan(full, now, watermark, last)
            keys = self._narrow(groups, now, modes)
            version = self._version()
            work = [g for g in groups if g.scope != "changed" or g.keys]
            if work:
                self.store.command(*sql.evaluation(work, now, version))
            written = {
                r["rule"]: (int(r["n"]), int(r["new"])) for r in self.store.query(sql.WRITTEN, {"version": version})
            }
            # every rule's transitions since its own last completed run, in one read
            after = {rule.id: last[rule.id].version if rule.id in last else 0 for rule in self.rules}
            transitions = self.store.query(*sql.transitions(after, version))
            opened, resolved = self._apply(transitions)
            # the run's time, split evenly between its rules
            duration_ms = (time.perf_counter() - begun) * 1000 / len(self.rules)
            run_id = str(uuid.uuid4())
            runs: list[dict[str, Any]] = []
            for rule in self.rules:
                changed, new = written.get(rule.id, (0, 0))
                total = self._cases_total(rule, last.get(rule.id), new)
                if modes[rule.id] == "full":
                    keys[rule.id] = total
                part = RuleReport(
                    cases_changed=changed,
                    opened=[e.id for e in opened if e.rule == rule.id],
                    resolved=[e.id for e in resolved if e.rule == rule.id],
                    duration_ms=duration_ms,
                    mode=modes[rule.id],
                    keys_evaluated=keys.get(rule.id, 0),
                )
                report.add(rule.id, part)
                runs.append(self._run_row(run_id, rule, part, now, watermark, version, total))
            self.store.insert("sla_runs", runs)
            report.duration_ms = (time.perf_counter() - begun) * 1000
            return report

    def _plan(
        self, full: bool, now: datetime, watermark: datetime, last: dict[str, LastRun]
    ) -> tuple[list[sql.Group], dict[str, str]]:
        """Each rule's mode, and the rules grouped by key column, scope and whether it is their first run."""
        groups: dict[tuple[str, str, bool], sql.Group] = {}
        modes: dict[str, str] = {}
        for rule in self.rules:
            before = last.get(rule.id)
            mode = modes[rule.id] = self._mode(rule, full, before, now)
            if mode == "full" or before is None:
                part = sql.RulePart(rule)
            else:
                part = sql.RulePart(rule, before.watermark, min(before.as_of, now))
            scope: sql.Scope = "all" if mode == "full" else "changed"
            first = before is None
            groups.setdefault((rule.key, scope, first), sql.Group(rule.key, scope, first=first)).parts.append(part)
        for group in groups.values():  # a case's fallback fields never depend on how the rules were grouped
            group.peers = [rule for rule in self.rules if rule.key == group.key]
        return list(groups.values()), modes

    def _narrow(self, groups: list[sql.Group], now: datetime, modes: dict[str, str]) -> dict[str, int]:
        """Find the keys of each incremental group (a group with too many goes full); keys per rule."""
        changed = [group for group in groups if group.scope == "changed"]
        if not changed:
            return {}
        found: dict[int, list[str]] = {}
        for row in self.store.query(*sql.changed_keys(changed, now, self.max_incremental_keys)):
            found.setdefault(int(row["g"]), []).append(row["k"])
        keys: dict[str, int] = {}
        for g, group in enumerate(changed):
            group.keys = found.get(g, [])
            if len(group.keys) > self.max_incremental_keys:
                group.scope = "all"  # this much change costs no more evaluated in full
                group.keys = []
                modes.update((p.rule.id, "full") for p in group.parts)
                continue
            keys.update((p.rule.id, len(group.keys)) for p in group.parts)
        return keys

    def _cases_total(self, rule: SlaRule, before: LastRun | None, new: int) -> int:
        """The rule's cases after this run: the last run's total plus the new cases this run wrote. Runs
        recorded before totals were kept say 0: count once (cases are never removed)."""
        if before is not None and before.cases_total == 0:
            return int(self.store.query(sql.CASE_COUNT, {"rule": rule.id})[0]["n"])
        return (before.cases_total if before else 0) + new

    def _run_row(
        self,
        run_id: str,
        rule: SlaRule,
        part: RuleReport,
        now: datetime,
        watermark: datetime,
        version: int,
        cases_total: int,
    ) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "rule": rule.id,
            "rule_hash": sql.rule_fingerprint(rule),
            "mode": part.mode,
            "started_at": now,
            "evaluated_at": self.clock.now(),
            "watermark": watermark,
            "duration_ms": part.duration_ms,
            "cases_changed": part.cases_changed,
            "opened": len(part.opened),
            "resolved": len(part.resolved),
            "version": version,
            "keys_evaluated": part.keys_evaluated,
            "cases_total": cases_total,
        }

    def last_runs(self) -> dict[str, LastRun]:
        """The last completed run of each rule that has one, by rule id."""
        return self._last_runs()[0]

    def _last_runs(self) -> tuple[dict[str, LastRun], datetime | None]:
        """The last runs, and the newest received_at (None when no rule has run: nothing read)."""
        rows = self.store.query(sql.LAST_RUNS, {"rules": [r.id for r in self.rules]})
        found: dict[str, LastRun] = {}
        newest = EPOCH if rows else None
        for row in rows:
            newest = stored_time_or_none(row["newest"]) or EPOCH  # no event at all: the epoch
            as_of, mark = stored_time_or_none(row["as_of"]), stored_time_or_none(row["last_watermark"])
            assert as_of is not None and mark is not None
            found[row["rule"]] = LastRun(
                version=int(row["last_version"]),
                as_of=as_of,
                watermark=mark,
                rule_hash=row["last_hash"],
                last_full=stored_time_or_none(row["last_full"]) if int(row["full_runs"]) else None,
                cases_total=int(row["last_total"]),
            )
        return found, newest

    def _mode(self, rule: SlaRule, full: bool, last: LastRun | None, now: datetime) -> str:
        if full or last is None or last.rule_hash != sql.rule_fingerprint(rule):
            return "full"
        if self.sweep_every is not None and (last.last_full is None or now - last.last_full >= self.sweep_every):
            return "full"
        return "incremental"

    def _apply(self, transitions: list[dict[str, Any]]) -> tuple[list[ExceptionRecord], list[ExceptionRecord]]:
        """Open an exception per newly breached case, then resolve those of cases no longer breached;
        every rule at once (one read of the active exceptions, one write)."""
        rules = {rule.id: rule for rule in self.rules}
        found = [self._finding(rules[t["rule"]], t) for t in transitions if t["status"] == "breached"]
        ended: dict[tuple[str, str], dict[str, Any]] = {}
        for t in transitions:  # per rule in version order: the last word on a case wins
            case = (t["rule"], t["key"])
            if t["previous_status"] == "breached" and t["status"] != "breached":
                ended[case] = t
            elif t["status"] == "breached":
                ended.pop(case, None)
        changes: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        for case, t in ended.items():
            ended_at = stored_time_or_none(t["ended_at"])
            if ended_at is None:  # the deadline moved later
                changes[case] = ("deadline-moved", {"due_at": iso(stored_time(t["due_at"]))})
            else:  # late (or met, when a deadline moved): the end arrived
                late = max(0.0, hours_between(t["due_at"], ended_at))
                detail: dict[str, Any] = {"hours_late": late, "ended_at": iso(ended_at)}
                if ended_at < stored_time(t["started_at"]):
                    # met by its time (DESIGN.md), but dated before the case began: bad data more often than not
                    detail["ended_before_start"] = True
                changes[case] = (t["status"], detail)
        return self.exceptions.open_and_resolve(found, changes, actor="engine")

    def _finding(self, rule: SlaRule, case: dict[str, Any]) -> NewException:
        fields = rule.case_data(case)
        return NewException(
            rule=rule.id,
            key=case["key"],
            kind=rule.kind,
            owner=self.owner_for(rule, fields),
            severity=rule.severity,
            due_at=stored_time_or_none(case["due_at"]),
            context={
                **fields,
                "started_at": iso(stored_time(case["started_at"])),
                **({"zone": zone} if (zone := rule.case_zone(case)) else {}),
            },
        )

    # backtest

    def backtest(
        self,
        rule: SlaRule,
        since: datetime,
        until: datetime,
        statuses: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """The cases `rule` finds for starts in [since, until), with their status as of `until` (or the clock's now,
        when `until` is later: a deadline still ahead is not missed yet), counting only events before `until`: those
        with one of `statuses` (default all), the first `limit` by start; and how many cases have each status (every
        case, whatever `statuses` or `limit`). One evaluation of the rule; writes nothing."""
        as_of = min(until, self.clock.now()).astimezone(UTC)
        query = sql.backtest(
            rule, since.astimezone(UTC), until.astimezone(UTC), self.rules, as_of, statuses=statuses, limit=limit
        )
        rows = self.store.query(*query)
        counts = {str(row["status"]): int(row["cases"]) for row in sorted(rows, key=lambda r: str(r["status"]))}
        listed = [
            {"rule": rule.id, "status": row["status"], **dict(zip(sql.BACKTEST_FIELDS, case, strict=True))}
            for row in rows
            for case in row["first"]
        ]
        listed.sort(key=lambda case: (case["started_at"], case["key"]))
        return listed if limit is None else listed[:limit], counts

    def side_matches(self, rule: SlaRule, since: datetime, until: datetime) -> dict[str, Any]:
        """For a backtest: the events of [since, until) each side of `rule` matches (`start_events`, `end_events`)
        and of those the ones with its key (`start_keyed`, `end_keyed`), and the period's event types with their
        counts (`types`, the 20 most frequent)."""
        period = {"since": since.astimezone(UTC), "until": until.astimezone(UTC)}
        (counts,) = self.store.query(*sql.side_matches(rule, period["since"], period["until"]))
        types = self.store.query(sql.PERIOD_TYPES, period)
        return {**{k: int(v) for k, v in counts.items()}, "types": [(t["type"], int(t["events"])) for t in types]}
