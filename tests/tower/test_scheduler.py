"""Jobs and the scheduler: intervals, settings from the environment, one instance at a time, failures
isolated; and the composition root starting and stopping the scheduler with the Tower."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kernel.clock import FixedClock
from kernel.disk import DiskSpaceLow
from kernel.jobs import JobContext, JobRegistry, SchedulerSettings, env_prefix, job_settings
from kernel.settings import SlaSettings
from kernel.store.embedded import EmbeddedStore
from sla_rules.loader import RuleFileError, default_rules_dir
from tests.factories import make_settings
from tower.app import SlaEvaluateSettings, build_tower, create_app
from tower.scheduler import Scheduler

AT = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)
FAST = 0.02  # seconds between runs in these tests
WAIT = 10.0  # the most any test waits for a run; each normally takes milliseconds


def scheduler(registry: JobRegistry, run_on_start: bool = True) -> Scheduler:
    return Scheduler(registry, FixedClock(AT), SchedulerSettings(enabled=True, run_on_start=run_on_start))


def test_settings_come_from_the_jobs_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env_prefix("sla-evaluate") == "TOWER_JOB_SLA_EVALUATE_"
    model = job_settings("inventory-sync", interval_seconds=300)
    assert model().interval_seconds == 300 and model().enabled
    monkeypatch.setenv("TOWER_JOB_INVENTORY_SYNC_INTERVAL_SECONDS", "15")
    monkeypatch.setenv("TOWER_JOB_INVENTORY_SYNC_ENABLED", "false")
    assert model().interval_seconds == 15 and not model().enabled
    monkeypatch.setenv("TOWER_JOB_SLA_EVALUATE_FULL_EVERY_RUNS", "7")
    assert SlaEvaluateSettings().full_every_runs == 7 and SlaEvaluateSettings().interval_seconds == 60


def test_registry_keeps_names_docs_and_refuses_twice() -> None:
    registry = JobRegistry()

    @registry.register("ping", interval_seconds=5)
    def ping(context: JobContext) -> str:
        """Say   hello
        on a schedule."""
        return "pong"

    job = registry.get("ping")
    assert job.description == "Say hello on a schedule." and job.settings().interval_seconds == 5
    assert "ping" in registry and len(registry) == 1
    with pytest.raises(ValueError, match="already registered"):
        registry.add("ping", ping)


def test_a_job_runs_on_its_interval_with_the_injected_clock() -> None:
    registry = JobRegistry()
    seen: list[tuple[int, datetime]] = []
    registry.add("tick", lambda ctx: seen.append((ctx.run, ctx.now())), interval_seconds=FAST)
    runner = scheduler(registry, run_on_start=False)
    runner.start()
    try:
        assert runner.running
        assert runner.wait_for_runs("tick", 3, WAIT)
    finally:
        runner.stop()
    assert not runner.running
    assert [run for run, _ in seen[:3]] == [1, 2, 3]
    assert {at for _, at in seen} == {AT}
    after = runner.runs("tick")
    assert runner.last_runs["tick"].ok
    # Stopped means stopped: a run started later would have bumped the count.
    assert not runner.wait_for_runs("tick", after + 1, FAST * 5)


def test_disabled_jobs_do_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = JobRegistry()
    ran: list[str] = []
    registry.add("on", lambda ctx: ran.append("on"), interval_seconds=FAST)
    registry.add("off-by-default", lambda ctx: ran.append("off-by-default"), interval_seconds=FAST, enabled=False)
    registry.add("off-by-env", lambda ctx: ran.append("off-by-env"), interval_seconds=FAST)
    monkeypatch.setenv("TOWER_JOB_OFF_BY_ENV_ENABLED", "0")
    runner = scheduler(registry)
    assert [job.name for job, _ in runner.enabled_jobs()] == ["on"]
    runner.start()
    try:
        assert runner.wait_for_runs("on", 5, WAIT)
    finally:
        runner.stop()
    assert set(ran) == {"on"}


def test_a_disabled_scheduler_runs_nothing_but_jobs_still_run_when_asked() -> None:
    registry = JobRegistry()
    registry.add("tick", lambda ctx: ctx.run, interval_seconds=FAST)
    runner = Scheduler(registry, FixedClock(AT), SchedulerSettings(enabled=False))
    runner.start()
    assert not runner.running
    assert runner.runs("tick") == 0
    outcome = runner.run_job("tick")
    assert outcome.ok and outcome.result == 1 and outcome.started_at == AT
    runner.stop()  # stopping a scheduler that never started is fine


def test_a_failing_job_keeps_its_schedule_and_does_not_stop_others(caplog: pytest.LogCaptureFixture) -> None:
    registry = JobRegistry()

    def broken(context: JobContext) -> None:
        raise RuntimeError(f"boom {context.run}")

    registry.add("broken", broken, interval_seconds=FAST)
    registry.add("healthy", lambda ctx: ctx.run, interval_seconds=FAST)
    runner = scheduler(registry)
    runner.start()
    try:
        assert runner.wait_for_runs("broken", 3, WAIT)
        assert runner.wait_for_runs("healthy", 3, WAIT)
    finally:
        runner.stop()
    failed = runner.last_runs["broken"]
    assert not failed.ok and failed.error.startswith("RuntimeError: boom")
    assert runner.last_runs["healthy"].ok
    assert any("job broken" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_failing_streak_logs_one_traceback_whatever_its_messages_say(caplog: pytest.LogCaptureFixture) -> None:
    """`disk-space` below its limits fails every run with another free size in its message: one traceback for
    the streak (and one when the error's type changes), one line per later run, and the run that ends it."""
    registry = JobRegistry()

    def disk_space(context: JobContext) -> str:
        if context.run in (1, 2, 3, 6):
            raise DiskSpaceLow(f"data: {10 - context.run} GiB free")
        if context.run in (7, 8):
            raise OSError("No space left on device")
        return "ok"

    registry.add("disk-space", disk_space, interval_seconds=300)
    runner = scheduler(registry)
    with caplog.at_level("INFO", logger="tower.scheduler"):
        for _ in range(9):
            runner.run_job("disk-space")
    logged = [
        (r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records if r.name == "tower.scheduler"
    ]
    assert logged == [
        ("ERROR", "job disk-space (run 1) failed", True),
        ("ERROR", "job disk-space (run 2) failed again, 2 failures in a row: DiskSpaceLow: data: 8 GiB free", False),
        ("ERROR", "job disk-space (run 3) failed again, 3 failures in a row: DiskSpaceLow: data: 7 GiB free", False),
        ("INFO", "job disk-space (run 4) recovered after 3 failures", False),
        ("ERROR", "job disk-space (run 6) failed", True),  # a new streak
        ("ERROR", "job disk-space (run 7) failed", True),  # another error: its traceback too
        ("ERROR", "job disk-space (run 8) failed again, 3 failures in a row: OSError: No space left on device", False),
        ("INFO", "job disk-space (run 9) recovered after 3 failures", False),
    ]  # fmt: skip
    assert runner.last_runs["disk-space"].ok


def test_one_instance_of_a_job_at_a_time() -> None:
    registry = JobRegistry()
    release = threading.Event()
    lock = threading.Lock()
    active, most = [0], [0]

    def slow(context: JobContext) -> None:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        if context.run == 1:
            release.wait(WAIT)
        with lock:
            active[0] -= 1

    registry.add("slow", slow, interval_seconds=FAST / 4)
    registry.add("ticker", lambda ctx: None, interval_seconds=FAST / 4)
    runner = scheduler(registry)
    runner.start()
    try:
        # While the first run of `slow` blocks, the ticker runs many times: `slow` was due again and again.
        assert runner.wait_for_runs("ticker", 10, WAIT)
        assert runner.runs("slow") == 1
        release.set()
        assert runner.wait_for_runs("slow", 3, WAIT)
    finally:
        release.set()
        runner.stop()
    assert most[0] == 1


HOUR = 3600.0  # an interval no test waits for: a run within WAIT can only come from a chain


def test_a_job_runs_right_after_the_job_it_follows() -> None:
    registry = JobRegistry()
    order: list[str] = []
    registry.add("produce", lambda ctx: order.append("produce"), interval_seconds=HOUR)
    registry.add("consume", lambda ctx: order.append("consume"), interval_seconds=HOUR, after=("produce",))
    registry.add("unrelated", lambda ctx: order.append("unrelated"), interval_seconds=HOUR)
    assert registry.get("consume").after == ("produce",)
    runner = scheduler(registry, run_on_start=False)
    runner.start()
    try:
        runner.run_job("produce")  # e.g. POST /api/sla/evaluate, or the engine's own interval
        assert runner.wait_for_runs("consume", 1, WAIT)
    finally:
        runner.stop()
    assert order == ["produce", "consume"]  # nothing else ran: the hour-long intervals never came round


def test_a_job_woken_while_it_runs_runs_once_more_after() -> None:
    registry = JobRegistry()
    release = threading.Event()
    started = threading.Event()

    def consume(context: JobContext) -> None:
        if context.run == 1:
            started.set()
            release.wait(WAIT)

    registry.add("produce", lambda ctx: None, interval_seconds=HOUR)
    registry.add("consume", consume, interval_seconds=HOUR, after=("produce",))
    runner = scheduler(registry, run_on_start=False)
    runner.start()
    try:
        runner.run_job("produce")
        assert started.wait(WAIT)  # consume's first run is busy...
        runner.run_job("produce")  # ...when produce finishes again: what it produced must not wait an hour
        assert runner.runs("consume") == 1
        release.set()
        assert runner.wait_for_runs("consume", 2, WAIT)
    finally:
        release.set()
        runner.stop()
    assert runner.last_runs["consume"].ok


def test_a_follower_runs_only_when_scheduled_and_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = JobRegistry()
    registry.add("produce", lambda ctx: None, interval_seconds=HOUR)
    registry.add("consume", lambda ctx: None, interval_seconds=HOUR, after=("produce",))
    monkeypatch.setenv("TOWER_JOB_CONSUME_ENABLED", "false")
    runner = scheduler(registry, run_on_start=False)
    runner.start()
    try:
        assert runner.run_job("produce").ok
        assert not runner.wait_for_runs("consume", 1, FAST * 10)
    finally:
        runner.stop()
    stopped = Scheduler(registry, FixedClock(AT), SchedulerSettings(enabled=False))
    monkeypatch.delenv("TOWER_JOB_CONSUME_ENABLED")
    assert stopped.run_job("produce").ok and stopped.runs("consume") == 0  # no background scheduler: no chain


def test_a_run_may_ask_for_the_next_one_sooner_than_its_interval() -> None:
    registry = JobRegistry()

    def pacing(context: JobContext) -> None:
        if context.run == 1:
            context.run_again_in(0.01)  # e.g. the next message in a channel is due in a moment
            context.run_again_in(30)  # the soonest request wins

    registry.add("pacing", pacing, interval_seconds=HOUR)
    runner = scheduler(registry, run_on_start=False)
    runner.start()
    try:
        assert runner.run_job("pacing").ok
        assert runner.wait_for_runs("pacing", 2, WAIT)  # an hour's interval, yet run again at once
        assert not runner.wait_for_runs("pacing", 3, FAST * 10)  # the second run asked for nothing
    finally:
        runner.stop()


def test_the_tower_chains_the_engine_the_dispatcher_and_the_sender(store: EmbeddedStore, tmp_path: Path) -> None:
    tower = build_tower(make_settings(tmp_path / "data"), store=store, scheduler=SchedulerSettings(enabled=False))
    assert set(tower.jobs.get("alerts-dispatch").after) == {"sla-evaluate", "reconcile", "replay-watch"}
    assert all(name in tower.jobs for name in tower.jobs.get("alerts-dispatch").after)


def test_the_tower_starts_and_stops_the_sla_job(store: EmbeddedStore, tmp_path: Path) -> None:
    clock = FixedClock(AT)
    settings = make_settings(tmp_path / "data")
    tower = build_tower(settings, clock=clock, store=store, scheduler=SchedulerSettings(enabled=True))
    assert "sla-evaluate" in tower.jobs  # with the other areas' jobs (replay-send, ...)
    tower.start()
    try:
        assert tower.scheduler.running
        assert tower.scheduler.wait_for_runs("sla-evaluate", 1, WAIT)  # run on start
        first = tower.scheduler.last_runs["sla-evaluate"]
        assert first.ok, first.error
        assert first.result["full"] is True
    finally:
        tower.stop()
    assert not tower.scheduler.running
    second = tower.scheduler.run_job("sla-evaluate")
    assert second.ok and second.result["full"] is False


def test_the_tower_in_tests_runs_no_jobs(store: EmbeddedStore, tmp_path: Path) -> None:
    tower = build_tower(make_settings(tmp_path / "data"), store=store, scheduler=SchedulerSettings(enabled=False))
    tower.start()
    try:
        assert not tower.scheduler.running
    finally:
        tower.stop()


BAD_RULE = """\
id: late-release
type: sla
title: Released late
kind: business
owner: customer_service
key: order_id
start: {types: [order.accepted]}
end: {types: [order.released]}
deadline:
  after: soon
"""


def test_a_bad_rule_file_stops_the_start_with_the_loaders_message(store: EmbeddedStore, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "late-release.yaml").write_text(BAD_RULE)
    settings = make_settings(tmp_path / "data")
    settings = settings.model_copy(update={"sla": SlaSettings(rules_dir=rules)})
    with pytest.raises(RuleFileError) as raised:
        build_tower(settings, store=store, scheduler=SchedulerSettings(enabled=False))
    assert "late-release.yaml:10: deadline.after:" in str(raised.value)
    assert not (tmp_path / "data").exists()  # it stopped before opening anything


def test_the_app_carries_the_sla_service_and_the_rules_the_settings_name(store: EmbeddedStore, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "late-release.yaml").write_text(BAD_RULE.replace("soon", "90m"))
    shipped = default_rules_dir() / "source-silence.yaml"
    (rules / "source-silence.yaml").write_text(shipped.read_text())
    routing = tmp_path / "routing.yaml"
    routing.write_text("routes: []\n")
    sla = SlaSettings(rules_dir=rules, routing_file=routing, expected_sources=["edi"])
    settings = make_settings(tmp_path / "data").model_copy(update={"sla": sla})
    tower = build_tower(settings, clock=FixedClock(AT), store=store, scheduler=SchedulerSettings(enabled=False))
    app = create_app(tower)
    assert app.state.sla is tower.sla and app.state.exceptions is tower.exceptions
    assert [r.id for r in tower.rules.enabled] == ["late-release", "source-silence"]
    report = tower.sla.evaluate(full=True)
    assert set(report.rules) == {"late-release", "source-silence"} and report.errors == {}
    (silent,) = tower.exceptions.active_by_key("source-silence").values()
    assert silent.key == "edi" and silent.owner == "integration"
