"""The `tower-jobs` rule: a job of the tower that keeps failing opens one technical exception, resolved by
its next success, in this process or the next; on the real store, through the real Scheduler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore
from kernel.jobs import JobContext, JobRegistry, SchedulerSettings
from kernel.store.embedded import EmbeddedStore
from sla_rules.loader import RuleSet, load_rule_set
from sla_rules.model import JobFailuresRule
from tests.factories import make_settings
from tower.app import build_tower
from tower.job_health import JobHealth
from tower.scheduler import JobRun, Scheduler

AT = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)


class Flaky:
    """A job that fails while `failing` is set, as a system of record out of reach would make it."""

    def __init__(self) -> None:
        self.failing = True

    def __call__(self, context: JobContext) -> str:
        if self.failing:
            raise RuntimeError("ERP replica unreachable")
        return "ok"


def harness(store: EmbeddedStore, rules: RuleSet) -> tuple[Scheduler, Flaky, ExceptionStore, FixedClock]:
    clock = FixedClock(AT)
    exceptions = ExceptionStore(store, clock)
    (rule,) = [r for r in rules.enabled if isinstance(r, JobFailuresRule)]
    health = JobHealth(exceptions, rule, rules.routing.owner_for)
    registry = JobRegistry()
    job = Flaky()
    registry.add("erp-pull", job, interval_seconds=60)
    scheduler = Scheduler(registry, clock, SchedulerSettings(enabled=False), observers=[health.observe])
    return scheduler, job, exceptions, clock


@pytest.fixture
def rules() -> RuleSet:
    return load_rule_set()  # the shipped rules: tower-jobs opens at 3 failures in a row


def test_three_failures_in_a_row_open_one_exception_and_a_success_resolves_it(
    store: EmbeddedStore, rules: RuleSet
) -> None:
    scheduler, job, exceptions, clock = harness(store, rules)
    for _ in range(2):
        assert not scheduler.run_job("erp-pull").ok
        clock.advance(timedelta(minutes=1))
    assert exceptions.active_by_key("tower-jobs") == {}  # two failures: not yet

    scheduler.run_job("erp-pull")
    (record,) = exceptions.active_by_key("tower-jobs").values()
    assert (record.key, record.kind, record.owner, record.severity) == ("erp-pull", "technical", "integration", "high")
    assert record.context["failures"] == 3 and record.context["last_error"] == "RuntimeError: ERP replica unreachable"
    assert record.context["failing_since"] == "2026-11-04T15:30:00Z"
    assert record.context["last_failed_at"] == "2026-11-04T15:32:00Z"

    clock.advance(timedelta(minutes=1))
    scheduler.run_job("erp-pull")  # still failing: still one exception
    assert list(exceptions.active_by_key("tower-jobs")) == ["erp-pull"]

    job.failing = False
    clock.advance(timedelta(minutes=1))
    assert scheduler.run_job("erp-pull").ok
    assert exceptions.active_by_key("tower-jobs") == {}
    resolved = exceptions.get(record.id)
    assert resolved.status == "resolved" and resolved.resolution == "recovered"
    last = exceptions.audit(record.id)[-1]
    assert last["actor"] == "scheduler" and last["detail"]["failures"] == 4 and last["detail"]["run"] == 5


def test_a_success_between_failures_starts_the_count_again(store: EmbeddedStore, rules: RuleSet) -> None:
    scheduler, job, exceptions, _ = harness(store, rules)
    for failing in (True, True, False, True, True):
        job.failing = failing
        scheduler.run_job("erp-pull")
    assert exceptions.active_by_key("tower-jobs") == {}
    skipped = JobRun("erp-pull", 0, AT, 0.0, ok=True, skipped=True)  # another process held the lease
    scheduler.observers[0](skipped)
    job.failing = True
    scheduler.run_job("erp-pull")  # the third failure in a row: the skipped run did not count as a success
    assert list(exceptions.active_by_key("tower-jobs")) == ["erp-pull"]


def test_an_exception_left_open_by_an_earlier_process_resolves_at_the_first_success(
    store: EmbeddedStore, rules: RuleSet
) -> None:
    before, _, exceptions, _ = harness(store, rules)
    for _ in range(3):
        before.run_job("erp-pull")
    assert list(exceptions.active_by_key("tower-jobs")) == ["erp-pull"]

    after, job, exceptions, _ = harness(store, rules)  # a restarted scheduler: no count of failures
    job.failing = False
    after.run_job("erp-pull")
    assert exceptions.active_by_key("tower-jobs") == {}


def test_an_observer_that_fails_never_stops_a_job(store: EmbeddedStore) -> None:
    def broken(outcome: JobRun) -> None:
        raise RuntimeError("store down")

    registry = JobRegistry()
    registry.add("tick", lambda context: "done", interval_seconds=60)
    scheduler = Scheduler(registry, FixedClock(AT), SchedulerSettings(enabled=False), observers=[broken])
    outcome = scheduler.run_job("tick")
    assert outcome.ok and outcome.result == "done" and scheduler.last_runs["tick"] is outcome


def test_the_tower_watches_its_jobs_with_the_shipped_rule(store: EmbeddedStore, tmp_path: Path) -> None:
    tower = build_tower(make_settings(tmp_path / "data"), store=store, scheduler=SchedulerSettings(enabled=False))
    watching = [o for o in tower.scheduler.observers if isinstance(getattr(o, "__self__", None), JobHealth)]
    assert len(watching) == 1  # beside the metrics' observer (tower/metrics.py)
    assert "tower-jobs" in {rule.id for rule in tower.rules.enabled}


def test_the_same_failure_again_logs_no_second_traceback(
    store: EmbeddedStore, rules: RuleSet, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler, job, _, _ = harness(store, rules)
    with caplog.at_level("INFO", logger="tower.scheduler"):
        for _ in range(4):
            scheduler.run_job("erp-pull")
        job.failing = False
        scheduler.run_job("erp-pull")
    records = [r for r in caplog.records if r.name == "tower.scheduler"]
    logged = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in records]
    assert logged == [
        ("ERROR", "job erp-pull (run 1) failed", True),
        *[
            (
                "ERROR",
                f"job erp-pull (run {n}) failed again, {n} failures in a row: RuntimeError: ERP replica unreachable",
                False,
            )
            for n in (2, 3, 4)
        ],
        ("INFO", "job erp-pull (run 5) recovered after 4 failures", False),
    ]
