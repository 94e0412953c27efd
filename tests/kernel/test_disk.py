"""The `disk-space` job and the disk gauges, on this machine's real disk: limits set around what it really has."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kernel.clock import FixedClock
from kernel.disk import GIB, DiskSpaceLow, DiskSpaceSettings, disk_space_job, read_disks, watched_volumes
from kernel.exceptions import ExceptionFilter
from kernel.jobs import JobContext, SchedulerSettings
from kernel.store.embedded import EmbeddedStore
from tests.factories import make_settings
from tests.support import RunningTower
from tower.app import build_tower

AT = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)


def run(volumes: dict[str, Path], min_free_percent: float, min_free_gib: float) -> object:
    settings = DiskSpaceSettings(min_free_percent=min_free_percent, min_free_gib=min_free_gib)
    job = disk_space_job(volumes)
    return job(JobContext("disk-space", settings, FixedClock(AT), 1, logging.getLogger("test")))


def test_room_enough_passes_with_the_readings(tmp_path: Path) -> None:
    usage = shutil.disk_usage(tmp_path)
    assert run({"data": tmp_path}, min_free_percent=0, min_free_gib=0) == {
        "data": {"free_bytes": pytest.approx(usage.free, rel=0.05), "size_bytes": usage.total}
    }


def test_too_little_free_fails_naming_the_volume_and_what_to_do(tmp_path: Path) -> None:
    free_gib = shutil.disk_usage(tmp_path).free / GIB
    with pytest.raises(DiskSpaceLow) as raised:
        run({"data": tmp_path}, min_free_percent=0, min_free_gib=free_gib * 2)  # more than the disk has free
    message = str(raised.value)
    assert message.startswith(f"data volume ({tmp_path}): ") and "GiB free of" in message
    assert "TOWER_JOB_DISK_SPACE_MIN_FREE_PERCENT" in message and "TOWER_RETENTION_*" in message
    with pytest.raises(DiskSpaceLow):
        run({"data": tmp_path}, min_free_percent=100, min_free_gib=0)  # no disk is all free


def test_a_directory_not_made_yet_is_read_at_its_parent(tmp_path: Path) -> None:
    (reading,) = read_disks({"data": tmp_path / "not" / "yet"})
    assert reading.size == shutil.disk_usage(tmp_path).total and reading.path == tmp_path / "not" / "yet"


OTHER_DISK = Path("/dev/shm")  # a tmpfs on Linux: another device than the test's temp folder, as a rule


def test_the_backups_folder_is_watched_when_it_is_another_disk(tmp_path: Path) -> None:
    assert watched_volumes(tmp_path, None) == {"data": tmp_path}  # default: backups inside the data directory
    assert watched_volumes(tmp_path, tmp_path.parent / "elsewhere") == {"data": tmp_path}  # the same disk
    if not OTHER_DISK.is_dir() or OTHER_DISK.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip(f"{OTHER_DISK} is not another disk here: nothing to tell apart")
    backups = OTHER_DISK / "tower-test-backups" / "not-made-yet"
    volumes = watched_volumes(tmp_path, backups)
    assert volumes == {"data": tmp_path, "backups": backups}
    with pytest.raises(DiskSpaceLow) as raised:
        run(volumes, min_free_percent=0, min_free_gib=shutil.disk_usage(OTHER_DISK).free / GIB * 2)
    assert f"backups volume ({backups}): " in str(raised.value)


def test_the_tower_checks_its_data_disk_and_the_jobs_rule_raises_it(
    store: EmbeddedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOWER_JOB_DISK_SPACE_MIN_FREE_PERCENT", "100")
    clock = FixedClock(AT)
    tower = build_tower(
        make_settings(tmp_path / "data"), store=store, clock=clock, scheduler=SchedulerSettings(enabled=False)
    )
    assert tower.jobs.get("disk-space").settings_model is DiskSpaceSettings
    for _ in range(3):
        run_ = tower.scheduler.run_job("disk-space")
        assert not run_.ok and "data volume" in str(run_.error)
        clock.advance(timedelta(minutes=5))
    (found,), _ = tower.exceptions.search(ExceptionFilter(status="active", rule="tower-jobs"))
    assert found.key == "disk-space" and found.owner == "integration"


def test_every_process_exports_its_disk(tower: RunningTower) -> None:
    with tower.api("viewer") as http:
        text = http.get("/metrics").text
    lines = [line for line in text.splitlines() if line.startswith("tower_disk_")]
    assert {line.split(" ")[0] for line in lines} == {
        'tower_disk_size_bytes{volume="data"}',
        'tower_disk_free_bytes{volume="data"}',
    }
    assert all(float(line.split(" ")[1]) > 0 for line in lines)
