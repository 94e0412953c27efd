"""Online backups of the embedded store, and restoring one into a new data directory.

A backup is ClickHouse's own `BACKUP DATABASE default TO File(...)`, taken while the tower runs: each table as
it stands when the backup reaches it (a consistent copy of every table, not one instant across tables), into a
folder of the store's backups folder (TOWER_STORE_BACKUP_DIR, default `<data dir>/backups`: the only folder the
engine may write backups to, set when the store opens). It runs on a second connection in a thread of its own
(`EmbeddedStore.beside`), so the tower's other statements go on: `start` answers at once and `status` reads its
progress from `system.backups`. A restore (`restore`) needs no running tower: it opens a new, empty data directory
and runs `RESTORE DATABASE default FROM File(...)` there.

The `store-backup` job (off by default: each backup is a full copy of the store) takes one every interval and keeps
the newest `keep`.

The server backend's backups are the ClickHouse server's business (its `backups` configuration, or
clickhouse-backup): `Backups.supported` is False there.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from kernel.clock import Clock
from kernel.jobs import JobContext, JobFunction, JobSettings
from kernel.store import Store
from kernel.store.base import stored_time

# The engine's marker of a complete backup, written last.
MARKER = ".backup"
NAME = re.compile(r"\d{8}T\d{6}Z(-\d+)?")
# Tables whose rows a restore reports, to check it against what the tower showed.
COUNTED = ("business_events", "otel_traces", "exceptions", "sla_cases", "recon_runs")

_STATUS = {
    "CREATING_BACKUP": "creating",
    "BACKUP_CREATED": "created",
    "BACKUP_FAILED": "failed",
    "BACKUP_CANCELLED": "failed",
}


log = logging.getLogger(__name__)


@runtime_checkable
class BackupStore(Protocol):
    """A store that takes backups here: the folder the engine may write them to, and a way to run the BACKUP
    beside the store's other statements (the embedded store)."""

    backup_dir: Path

    def beside(self, sql: str, params: dict[str, Any] | None = None) -> None:
        """Run one long statement without holding up the others."""


@dataclass
class _Run:
    """A backup this process started: until the engine lists it, and when its statement failed."""

    started_at: datetime
    finished_at: datetime | None = None
    error: str = ""
    thread: threading.Thread | None = None


_RUNS: dict[str, _Run] = {}  # by the backup's folder
_RUNS_LOCK = threading.Lock()


class BackupError(Exception):
    """A backup or restore cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class Backup:
    """One backup: `status` creating, created, failed, or incomplete (a folder without the engine's marker: the
    process taking it stopped); `files` and `bytes` as the engine counts them, or as on disk for backups taken
    by an earlier process."""

    name: str
    path: str
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    files: int
    bytes: int
    error: str = ""


def folder_size(folder: Path) -> tuple[int, int]:
    """The files under `folder` and their bytes."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _time(text: Any) -> datetime | None:
    if not text or str(text).startswith("1970-01-01"):
        return None
    return stored_time(str(text))


class Backups:
    """Backups of one embedded store (`store.backup_dir`), named by the clock's time (`20261127T090000Z`)."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.taker: BackupStore | None = store if isinstance(store, BackupStore) else None
        self.folder: Path | None = self.taker.backup_dir if self.taker is not None else None

    @property
    def supported(self) -> bool:
        """Whether this store takes backups here (the embedded one); a server's are made on the server."""
        return self.folder is not None

    def _folder(self) -> Path:
        if self.folder is None:
            raise BackupError(
                "backups of a ClickHouse server are made on the server (its `backups` configuration, or"
                " clickhouse-backup); the tower backs up its embedded store only"
            )
        return self.folder

    def start(self) -> Backup:
        """Start a backup of the whole database in a thread of its own; answers its first status (creating)."""
        folder = self._folder()
        base = self.clock.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        name, n = base, 1
        try:
            folder.mkdir(parents=True, exist_ok=True)
            while (folder / name).exists():  # two in one second
                n += 1
                name = f"{base}-{n}"
            path = folder / name
            path.mkdir()  # claims the name; the engine writes into it
        except OSError as exc:
            raise BackupError(
                f"cannot write a backup into {folder}: {exc.strerror or exc} (TOWER_STORE_BACKUP_DIR)"
            ) from exc
        run = _Run(started_at=self.clock.now().astimezone(UTC))
        with _RUNS_LOCK:
            _RUNS[str(path)] = run
        taker = self.taker
        assert taker is not None  # _folder() refused a store without one

        def take() -> None:
            try:
                taker.beside("BACKUP DATABASE default TO File({path:String})", {"path": str(path)})
                log.info("backup %s created", path)
            except Exception as exc:
                run.error = str(exc)
                log.error("backup %s failed: %s", path, exc)
            finally:
                run.finished_at = datetime.now(UTC)

        run.thread = threading.Thread(target=take, name=f"backup-{name}", daemon=True)
        run.thread.start()
        return self._backup(name, None)

    def _engine_rows(self) -> dict[str, dict[str, Any]]:
        """system.backups of this process (backups, not restores), by the folder they write."""
        rows = self.store.query(
            "SELECT name, status, error, toTimeZone(start_time, 'UTC') AS start_time,"
            " toTimeZone(end_time, 'UTC') AS end_time, num_files, total_size FROM system.backups"
            " WHERE status IN ('CREATING_BACKUP', 'BACKUP_CREATED', 'BACKUP_FAILED', 'BACKUP_CANCELLED')"
            " ORDER BY start_time"
        )
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            target = re.fullmatch(r"File\('(.*)'\)", row["name"])
            if target:
                found[Path(target.group(1)).name] = row
        return found

    def _backup(self, name: str, row: dict[str, Any] | None) -> Backup:
        path = self._folder() / name
        if row is not None:
            return Backup(
                name=name,
                path=str(path),
                status=_STATUS.get(row["status"], row["status"].lower()),
                started_at=_time(row["start_time"]),
                finished_at=_time(row["end_time"]),
                files=int(row["num_files"]),
                bytes=int(row["total_size"]),
                error=row["error"],
            )
        files, size = folder_size(path)
        complete = (path / MARKER).exists()
        with _RUNS_LOCK:
            run = _RUNS.get(str(path))
        if run is not None:  # started here, not (or no longer) listed by the engine
            state = "failed" if run.error else "created" if complete else "creating"
            return Backup(name, str(path), state, run.started_at, run.finished_at, files, size, run.error)
        modified = datetime.fromtimestamp((path / MARKER if complete else path).stat().st_mtime, UTC)
        return Backup(name, str(path), "created" if complete else "incomplete", None, modified, files, size)

    def status(self, name: str) -> Backup | None:
        """One backup by name; None when there is none."""
        if not NAME.fullmatch(name):
            return None
        if not (self._folder() / name).is_dir():  # never taken, or deleted (the engine still remembers it)
            return None
        return self._backup(name, self._engine_rows().get(name))

    def wait(self, name: str, timeout: float, poll: float = 0.5) -> Backup:
        """The backup `name` once it is no longer creating, or as it stands after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.status(name)
            if found is None:
                raise BackupError(f"no backup named {name!r}")
            if found.status != "creating" or time.monotonic() >= deadline:
                return found
            time.sleep(poll)

    def prune(self, keep: int) -> list[str]:
        """Delete the complete backups older than the newest `keep`, and the failed or incomplete ones older than
        the newest complete one (never one being created); answers the names deleted."""
        backups = self.list()  # newest first
        complete = [b for b in backups if b.status == "created"]
        if not complete:
            return []
        newest = complete[0].name
        doomed = complete[keep:]
        doomed += [b for b in backups if b.status in ("failed", "incomplete") and b.name < newest]
        for backup in doomed:
            shutil.rmtree(backup.path)
            log.info("backup %s deleted (keeping the newest %d)", backup.path, keep)
        return sorted(b.name for b in doomed)

    def list(self) -> list[Backup]:
        """Every backup in the folder (those this process is taking included), newest first."""
        folder = self._folder()
        if not folder.is_dir():
            return []
        names = {p.name for p in folder.iterdir() if p.is_dir() and NAME.fullmatch(p.name)}  # a start makes its folder
        rows = self._engine_rows()
        return [self._backup(name, rows.get(name)) for name in sorted(names, reverse=True)]


def finish_running(timeout: float) -> list[str]:
    """Wait up to `timeout` seconds for the backups this process is taking (the tower does before it closes the
    store); answers the folders of those still running after it."""
    with _RUNS_LOCK:
        running = {path: run.thread for path, run in _RUNS.items() if run.thread is not None and run.thread.is_alive()}
    deadline = time.monotonic() + timeout
    for path, thread in running.items():
        log.info("waiting for backup %s to finish before the store closes", path)
        thread.join(max(0.0, deadline - time.monotonic()))
    return [path for path, thread in running.items() if thread.is_alive()]


class StoreBackupSettings(JobSettings):
    """The `store-backup` job (TOWER_JOB_STORE_BACKUP_*): a backup of the embedded store every interval, keeping the
    newest `keep`. Off by default: each backup is a full copy of the store, on the same host unless the backups
    folder (TOWER_STORE_BACKUP_DIR) is a mount of another disk."""

    model_config = SettingsConfigDict(env_prefix="TOWER_JOB_STORE_BACKUP_")

    enabled: bool = Field(False, description="Back up the embedded store on a schedule (`tower backup` does it now).")
    interval_seconds: float = Field(86400.0, gt=0, description="Seconds between backups (default daily).")
    keep: int = Field(
        7, ge=1, description="Complete backups kept; after each new one the older ones beyond it are deleted."
    )
    timeout_seconds: float = Field(3600.0, gt=0, description="How long a run waits for its backup to be created.")


def backup_job(backups: Backups) -> JobFunction:
    """The `store-backup` job function over `backups`."""

    def store_backup(context: JobContext) -> dict[str, Any]:
        """Back up the embedded store, wait for it, then delete the backups beyond the newest `keep`."""
        settings = context.settings
        assert isinstance(settings, StoreBackupSettings)
        started = backups.start()
        found = backups.wait(started.name, settings.timeout_seconds)
        if found.status != "created":
            raise BackupError(f"backup {found.name} {found.status}: {found.error or 'not created in time'}")
        removed = backups.prune(settings.keep)
        context.log.info(
            "backup %s created (%d files, %d bytes); removed %s",
            found.name,
            found.files,
            found.bytes,
            ", ".join(removed) or "none",
        )
        return {"backup": found.name, "files": found.files, "bytes": found.bytes, "removed": removed}

    return store_backup


def restore(backup: Path, data_dir: Path) -> dict[str, int]:
    """Restore `backup` (a folder `tower backup` made) into the new data directory `data_dir` (its store in
    `data_dir/clickhouse`, which must not hold one yet); answers the rows of the main tables. Needs no running
    tower; the tower started on `data_dir` afterwards applies any newer migrations as on every start."""
    from kernel.store.embedded import EmbeddedStore

    backup = backup.absolute()
    if not (backup / MARKER).is_file():
        raise BackupError(f"{backup} is not a complete backup (no {MARKER} file in it)")
    target = data_dir / "clickhouse"
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} already holds a store: restore into a new data directory")
    store = EmbeddedStore(target, backup.parent)
    try:
        store.command("RESTORE DATABASE default FROM File({path:String})", {"path": str(backup)})
        found = store.query("SELECT name, engine FROM system.tables WHERE database = 'default'")
        engines = {r["name"]: r["engine"] for r in found}
        # counted as the tower reads them: an exception's versions, a redelivered event once (not yet merged)
        counts = {
            t: int(store.query(f"SELECT count() AS n FROM {t}{' FINAL' if 'Replacing' in engines[t] else ''}")[0]["n"])
            for t in COUNTED
            if t in engines
        }
    except Exception:
        store.close()
        shutil.rmtree(target, ignore_errors=True)  # a half-restored store is worse than none
        raise
    store.close()
    return counts
