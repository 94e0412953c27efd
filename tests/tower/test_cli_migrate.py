"""`tower migrate`: every setting read first as by `tower serve`, its own `--data-dir`, an owner-only store."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from click.testing import CliRunner

from tests.support import run_tower
from tower.cli import main


def test_a_refused_setting_of_any_area_stops_migrate_before_it_opens_the_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"TOWER_JOB_SLA_EVALUATE_INTERVAL_SECONDS": "-5", "TOWER_ALERTING_DIGEST_KEYS": "500"}
    result = CliRunner().invoke(main, ["migrate", "--data-dir", str(data)], env=env)
    assert result.exit_code == 1
    assert result.output.startswith("Error: invalid settings:\n"), result.output
    assert "  TOWER_JOB_SLA_EVALUATE_INTERVAL_SECONDS='-5': Input should be greater than 0\n" in result.output
    assert "  TOWER_ALERTING_DIGEST_KEYS: Input should be less than or equal to 50\n" in result.output
    assert "applied" not in result.output and "Traceback" not in result.output
    assert not data.exists()


def test_migrate_makes_a_new_store_in_its_data_dir_for_its_user_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    previous = os.umask(0o022)  # the usual umask: what the tower creates must not follow it
    try:
        result = run_tower("migrate", "--data-dir", str(data))
    finally:
        os.umask(previous)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("applied [1, ")
    shared = [
        f"{oct(path.lstat().st_mode & 0o777)} {path}"
        for path in [data, *data.rglob("*")]
        if not path.is_symlink() and path.lstat().st_mode & 0o077
    ]
    assert not shared
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
