"""Free space on the disks the tower writes to: the data directory holds the embedded store and the spool, and the
backups folder may be a disk of its own.

A full disk is a quiet failure of the tower itself: the store refuses inserts, the collectors spool, the spool
fills, and the doors answer 503 until someone notices. The `disk-space` job fails while a volume has less free
than its settings allow, so that the `tower-jobs` rule opens an exception for the integration on-call (and
resolves it once there is room again); `tower_disk_free_bytes` and `tower_disk_size_bytes` (tower/metrics.py)
give every process's reading to Prometheus.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from kernel.jobs import JobContext, JobFunction, JobSettings

GIB = 1024**3


class DiskSpaceSettings(JobSettings):
    """The `disk-space` job (TOWER_JOB_DISK_SPACE_*): fails while the disk of the data directory (or of the backups
    folder, when it is another) has less free than `min_free_percent` of its size or less than `min_free_gib`,
    whichever is more room."""

    model_config = SettingsConfigDict(env_prefix="TOWER_JOB_DISK_SPACE_")

    enabled: bool = Field(
        True,
        description="Check the free space of the data directory's disk (and the backups folder's) on a schedule.",
    )
    interval_seconds: float = Field(300.0, gt=0, description="Seconds between checks.")
    min_free_percent: float = Field(
        10.0, ge=0, le=100, description="Fail while less than this share of the disk (percent) is free."
    )
    min_free_gib: float = Field(2.0, ge=0, description="Fail while less than this many GiB are free.")


class DiskSpaceLow(RuntimeError):
    """A volume has less free space than the settings allow."""


@dataclass(frozen=True)
class DiskReading:
    """One volume's size and free space, in bytes (free as an unprivileged process may use it)."""

    volume: str
    path: Path
    size: int
    free: int

    @property
    def free_percent(self) -> float:
        """Free space as a percent of the size."""
        return 100.0 * self.free / self.size if self.size else 0.0


def _existing(path: Path) -> Path:
    """`path`, or its nearest parent that exists (a folder not made yet is on its parent's disk)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def watched_volumes(data_dir: Path, backup_dir: Path | None) -> dict[str, Path]:
    """The volumes the tower writes to: the data directory (the embedded store, the spool), and the backups folder
    when it is on another disk (TOWER_STORE_BACKUP_DIR on a mount of its own: backups that fail for want of room
    fail quietly too)."""
    volumes = {"data": data_dir}
    backups = backup_dir or data_dir / "backups"
    if _existing(backups).stat().st_dev != _existing(data_dir).stat().st_dev:
        volumes["backups"] = backups
    return volumes


def read_disks(volumes: Mapping[str, Path]) -> list[DiskReading]:
    """The reading of each volume's disk (a path not made yet is read at its nearest existing parent)."""
    readings = []
    for volume, path in volumes.items():
        usage = shutil.disk_usage(_existing(path))
        readings.append(DiskReading(volume, path, usage.total, usage.free))
    return readings


def too_full(reading: DiskReading, settings: DiskSpaceSettings) -> str | None:
    """Why `reading` is below the settings' limits, or None when it is not."""
    need = max(settings.min_free_percent / 100 * reading.size, settings.min_free_gib * GIB)
    if reading.free >= need:
        return None
    return (
        f"{reading.volume} volume ({reading.path}): {reading.free / GIB:.1f} GiB free of {reading.size / GIB:.1f} GiB"
        f" ({reading.free_percent:.1f}%), under the {settings.min_free_percent:g}% / {settings.min_free_gib:g} GiB"
        " the tower keeps free (TOWER_JOB_DISK_SPACE_MIN_FREE_PERCENT, _MIN_FREE_GIB). The store and the spool"
        " stop taking data when it runs out: make room (TOWER_RETENTION_* days, older backups) or a bigger disk"
    )


def disk_space_job(volumes: Mapping[str, Path]) -> JobFunction:
    """The `disk-space` job over `volumes` (name -> a path on the disk to watch)."""

    def disk_space(context: JobContext) -> dict[str, Any]:
        """Check the free space of the data directory's disk (the embedded store, the spool) and of the backups
        folder's when it is another: fail while one is under its limits, naming the volume, so that the `tower-jobs`
        rule raises it before the disk is full."""
        settings = context.settings
        assert isinstance(settings, DiskSpaceSettings)
        readings = read_disks(volumes)
        problems = [problem for reading in readings if (problem := too_full(reading, settings)) is not None]
        if problems:
            raise DiskSpaceLow("; ".join(problems))
        return {r.volume: {"free_bytes": r.free, "size_bytes": r.size} for r in readings}

    return disk_space
