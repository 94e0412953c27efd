"""Online backups of the embedded store and restores into a new data directory (kernel/backups.py), through
the API, the `tower backup`, `tower backups` and `tower restore` commands, and the `store-backup` job. A restore
opens another data directory, so it runs as a subprocess (one data directory per process)."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from kernel.backups import (
    MARKER,
    Backup,
    BackupError,
    Backups,
    StoreBackupSettings,
    backup_job,
    finish_running,
)
from kernel.clock import FixedClock
from kernel.jobs import JobContext
from kernel.store.embedded import EmbeddedStore
from tests.factories import api_token
from tests.support import RunningTower, run_tower
from tower.cli import main

EVENTS = (
    "INSERT INTO business_events (id, source, system, type, time, order_id, received_at)"
    " SELECT concat('e-', toString(number + {first:UInt64})), 'erp', 'erp', 'order.accepted',"
    " now64(6, 'UTC'), concat('SO-', toString(number)), now64(6, 'UTC') FROM numbers({n:UInt64})"
)


def finished(backups: Backups, name: str, timeout: float = 60) -> Backup:
    """The backup once it is no longer creating."""
    deadline = time.monotonic() + timeout
    while True:
        found = backups.status(name)
        assert found is not None
        if found.status != "creating" or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def count(store: EmbeddedStore, table: str) -> int:
    return int(store.query(f"SELECT count() AS n FROM {table}")[0]["n"])


def test_a_backup_is_taken_while_the_store_keeps_working(store: EmbeddedStore) -> None:
    store.command(EVENTS, {"first": 0, "n": 200_000})
    backups = Backups(store, FixedClock(datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)))
    first = backups.start()
    second = backups.start()  # the same second: a name of its own
    assert (first.name, second.name) == ("20261127T090000Z", "20261127T090000Z-2")
    assert first.status == "creating" and Path(first.path).parent == store.backup_dir
    # the store answers and takes writes while the backups run (they run on their own connection)
    written = 0
    while any(backups.status(b.name).status == "creating" for b in (first, second)):  # type: ignore[union-attr]
        store.command(EVENTS, {"first": 1_000_000 + written, "n": 10})
        written += 10
    done = finished(backups, first.name)
    assert done.status == "created", done.error
    assert (Path(done.path) / MARKER).is_file() and done.files > 0 and done.bytes > 0
    assert count(store, "business_events") == 200_000 + written
    listed = [b.name for b in backups.list()]
    assert listed.index(second.name) < listed.index(first.name)  # newest first
    assert backups.status("20200101T000000Z") is None and backups.status("../etc") is None


def test_a_restore_gives_back_what_was_backed_up(store: EmbeddedStore, tmp_path: Path) -> None:
    store.command(EVENTS, {"first": 0, "n": 12_345})
    store.command(EVENTS, {"first": 0, "n": 5})  # redelivered, not merged yet: counted once, as the tower reads it
    backups = Backups(store, FixedClock(datetime(2026, 11, 27, 9, 30, tzinfo=UTC)))
    done = finished(backups, backups.start().name)
    assert done.status == "created", done.error
    store.command(EVENTS, {"first": 100_000, "n": 5})  # after the backup: not in it

    previous = os.umask(0o022)  # the usual umask: the restored data directory must not follow it
    try:
        result = run_tower("restore", done.path, "--data-dir", str(tmp_path / "restored"))
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stderr
    # a tower's data directory, as `tower serve` makes one: for its user only
    shared = [
        f"{oct(path.lstat().st_mode & 0o777)} {path}"
        for path in [tmp_path / "restored", *(tmp_path / "restored").rglob("*")]
        if not path.is_symlink() and path.lstat().st_mode & 0o077
    ]
    assert not shared
    assert f"restored {done.path} into {tmp_path / 'restored' / 'clickhouse'}" in result.stdout
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines() if line.endswith(" rows")}
    assert rows["business_events"] == "12,345"  # as the store held it when the backup was taken
    assert (tmp_path / "restored" / "clickhouse" / "metadata").is_dir()

    again = CliRunner().invoke(main, ["restore", done.path, "--data-dir", str(tmp_path / "restored")])
    assert again.exit_code == 1
    assert "already holds a store: restore into a new data directory" in again.output
    not_one = CliRunner().invoke(main, ["restore", str(tmp_path), "--data-dir", str(tmp_path / "other")])
    assert not_one.exit_code == 1
    assert f"{tmp_path} is not a complete backup (no .backup file in it)" in not_one.output
    assert not (tmp_path / "other").exists()


def test_tower_backup_through_the_api_admin_only(tower: RunningTower, store: EmbeddedStore) -> None:
    store.command(EVENTS, {"first": 0, "n": 1000})
    admin = {"TOWER_URL": tower.http_url, "TOWER_TOKEN": api_token(tower.settings, "admin")}
    result = CliRunner().invoke(main, ["backup"], env=admin)
    assert result.exit_code == 0, result.output
    name = result.output.split()[1]
    assert result.output.startswith(f"backup {name} started into {store.backup_dir / name}\n")
    assert f"backup {name} created in " in result.output

    listed = CliRunner().invoke(main, ["backups"], env=admin)
    assert listed.exit_code == 0
    assert any(line.startswith(f"{name}  created ") for line in listed.output.splitlines())

    viewer = {"TOWER_URL": tower.http_url, "TOWER_TOKEN": api_token(tower.settings, "viewer")}
    refused = CliRunner().invoke(main, ["backup"], env=viewer)
    assert refused.exit_code == 2
    assert "the tower answered 403: role 'viewer' may not do this" in refused.output
    with tower.api("admin") as http:
        assert http.get("/api/backups/20200101T000000Z").status_code == 404


def test_the_store_backup_job_keeps_the_newest(store: EmbeddedStore) -> None:
    store.command(EVENTS, {"first": 0, "n": 1000})
    clock = FixedClock(datetime(2030, 1, 1, 2, 0, tzinfo=UTC))  # after every other test's backups
    backups = Backups(store, clock)
    job = backup_job(backups)
    settings = StoreBackupSettings(enabled=True, keep=2)
    assert StoreBackupSettings().enabled is False  # off unless asked: each backup is a full copy
    left_behind = store.backup_dir / "20291231T000000Z"  # a process stopped while taking it: no marker
    left_behind.mkdir(parents=True)
    names = []
    for day in range(3):
        clock.set(datetime(2030, 1, 1 + day, 2, 0, tzinfo=UTC))
        result = job(JobContext("store-backup", settings, clock, day + 1, logging.getLogger("test")))
        names.append(result["backup"])
        assert result["files"] > 0 and result["bytes"] > 0
    assert names == ["20300101T020000Z", "20300102T020000Z", "20300103T020000Z"]
    assert result["removed"] == ["20300101T020000Z"]
    assert [b.name for b in backups.list()] == names[:0:-1]  # the newest two; the incomplete one went too
    assert not left_behind.exists()


def test_a_backups_folder_that_cannot_be_written_is_named(store: EmbeddedStore, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    backups = Backups(store, FixedClock(datetime(2026, 11, 27, 9, tzinfo=UTC)))
    backups.folder = blocked
    with pytest.raises(BackupError, match=f"cannot write a backup into {blocked}: File exists"):
        backups.start()


def test_a_stopping_tower_waits_for_its_running_backups(store: EmbeddedStore) -> None:
    store.command(EVENTS, {"first": 0, "n": 100_000})
    backups = Backups(store, FixedClock(datetime(2026, 11, 27, 10, tzinfo=UTC)))
    started = backups.start()
    assert finish_running(60) == []  # what Tower.stop calls before it closes the store
    done = backups.status(started.name)
    assert done is not None and done.status == "created"
