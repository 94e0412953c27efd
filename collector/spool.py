"""The spool: batches the store could not take, fsync'd to local disk until it can.

Each spooled batch is one file, written to a temporary name, fsync'd, renamed into place and
the directory fsync'd, so a `.batch` file either exists whole or not at all after a crash; a
leftover `.tmp` was never acknowledged and is discarded on open. Draining inserts batches
(consecutive ones of a table coalesced into one insert) and then deletes them; a crash
between the two re-inserts them on the next drain, which the idempotency keys fold away.

Rows the store refuses while it is up cannot be retried into success, and were already
acknowledged: they are set aside in a `.rejected` file (with the store's reason) instead of
blocking the batches behind them, and so is a `.batch` file that cannot be read.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from kernel.store import Store, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

Row = dict[str, Any]


class SpoolFull(Exception):
    """The spool has reached its configured size."""


@dataclass
class _Batch:
    path: Path
    table: str
    rows: list[Row]


class Spool:
    """Spooled batches in `directory`, at most `max_bytes` on disk."""

    def __init__(self, directory: Path, max_bytes: int, min_free_bytes: int = 0) -> None:
        """`min_free_bytes`: a batch that would leave its disk with less free is refused (SpoolFull): on the data
        directory's disk, the store needs that room (TOWER_STORE_MIN_FREE_MIB)."""
        self.directory = directory
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.tmp"):
            leftover.unlink()  # never renamed, so never acknowledged
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._size = sum(p.stat().st_size for p in self.files())

    def append(self, table: str, rows: Sequence[Row]) -> None:
        """Write one batch durably; raises SpoolFull or OSError when it cannot."""
        payload = orjson.dumps({"table": table, "rows": list(rows)})
        with self._lock:
            if self._size + len(payload) > self.max_bytes:
                raise SpoolFull(f"spool at {self.directory} would pass {self.max_bytes} bytes")
            if self.min_free_bytes:
                free = shutil.disk_usage(self.directory).free
                if free - len(payload) < self.min_free_bytes:
                    raise SpoolFull(
                        f"the disk of the spool at {self.directory} has {free // 2**20:,} MiB free, under"
                        f" {self.min_free_bytes // 2**20:,} (TOWER_STORE_MIN_FREE_MIB)"
                    )
            name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
            self._write_durably(self.directory / f"{name}.batch", payload)
            self._size += len(payload)

    def _write_durably(self, path: Path, payload: bytes) -> None:
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def files(self) -> list[Path]:
        """Spooled batches, oldest first."""
        return sorted(self.directory.glob("*.batch"))

    def set_aside(self) -> list[Path]:
        """Files put aside while draining: `.rejected` rows the store refused, `.corrupt` unreadable batches."""
        return sorted([*self.directory.glob("*.rejected"), *self.directory.glob("*.corrupt")])

    def size_bytes(self) -> int:
        """Bytes of spooled batches on disk."""
        return self._size

    def pending_rows(self) -> int:
        """Rows waiting in spooled batches."""
        return sum(len(batch.rows) for batch in map(self._read, self.files()) if batch is not None)

    def drain(self, store: Store, max_rows: int = 50_000) -> int:
        """Insert every spooled batch, oldest first, until the store is unavailable. Returns rows drained.

        Consecutive batches of one table go in as one insert of at most `max_rows` rows (a
        single larger batch goes in alone).
        """
        drained = 0
        with self._drain_lock:
            group: list[_Batch] = []
            for path in self.files():
                batch = self._read(path)
                if batch is None:
                    continue
                if group and (
                    batch.table != group[0].table or sum(len(b.rows) for b in group) + len(batch.rows) > max_rows
                ):
                    if not self._drain_group(store, group):
                        return drained
                    drained += sum(len(b.rows) for b in group)
                    group = []
                group.append(batch)
            if group and self._drain_group(store, group):
                drained += sum(len(b.rows) for b in group)
        return drained

    def _read(self, path: Path) -> _Batch | None:
        try:
            content = orjson.loads(path.read_bytes())
            return _Batch(path, str(content["table"]), list(content["rows"]))
        except FileNotFoundError:
            return None
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.error("spooled batch %s cannot be read (%s); kept as .corrupt", path.name, exc)
            self._forget(path, path.with_suffix(".corrupt"))
            return None

    def _drain_group(self, store: Store, group: list[_Batch]) -> bool:
        """Insert one group; False when the store is unavailable (the group stays spooled)."""
        table = group[0].table
        rows = [row for batch in group for row in batch.rows]
        try:
            refused = _insert_isolating(store, table, rows)
        except StoreUnavailable:
            return False
        if refused:
            log.error("the store refused %d spooled rows for %s; kept in %s", len(refused), table, group[0].path.stem)
            payload = orjson.dumps(
                {"table": table, "rows": [row for row, _ in refused], "reasons": [reason for _, reason in refused]}
            )
            self._write_durably(group[0].path.with_suffix(".rejected"), payload)
        for batch in group:
            self._forget(batch.path)
        return True

    def _forget(self, path: Path, move_to: Path | None = None) -> None:
        with self._lock:
            try:
                size = path.stat().st_size
                if move_to is None:
                    path.unlink()
                else:
                    os.rename(path, move_to)
            except FileNotFoundError:
                return
            self._size -= size


def _insert_isolating(store: Store, table: str, rows: list[Row]) -> list[tuple[Row, str]]:
    """Insert rows; when the store (still up) refuses them, halve until the refused rows are found.

    Returns the refused rows with the store's reason. Raises StoreUnavailable when the store
    goes away, leaving what was not yet inserted to a later drain.
    """
    try:
        store.insert(table, rows)
        return []
    except StoreUnavailable:
        raise
    except StoreError as exc:
        if not store.ping():
            raise StoreUnavailable(str(exc)) from exc
        if len(rows) == 1:
            return [(rows[0], str(exc)[:2000])]
    middle = len(rows) // 2
    return _insert_isolating(store, table, rows[:middle]) + _insert_isolating(store, table, rows[middle:])
