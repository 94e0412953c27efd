"""The spool: batches the store could not take, fsync'd to local disk until it can.

Each spooled batch is one file, written to a temporary name, fsync'd, renamed into place and
the directory fsync'd, so a file either exists whole or not at all after a crash. Draining
inserts a file's rows and then deletes it; a crash between the two re-inserts the batch on
the next drain, which the idempotency keys fold away.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from kernel.store import Store, StoreError


class SpoolFull(Exception):
    """The spool has reached its configured size."""


class Spool:
    """Spooled batches in `directory`, at most `max_bytes` on disk."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.tmp"):
            leftover.unlink()  # never renamed, so never acknowledged
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()

    def append(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Write one batch durably; raises SpoolFull or OSError when it cannot."""
        payload = orjson.dumps({"table": table, "rows": list(rows)})
        with self._lock:
            if self.size_bytes() + len(payload) > self.max_bytes:
                raise SpoolFull(f"spool at {self.directory} would pass {self.max_bytes} bytes")
            name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
            tmp = self.directory / f"{name}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, self.directory / f"{name}.batch")
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def files(self) -> list[Path]:
        """Spooled batches, oldest first."""
        return sorted(self.directory.glob("*.batch"))

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    def pending_rows(self) -> int:
        return sum(len(orjson.loads(p.read_bytes())["rows"]) for p in self.files())

    def drain(self, store: Store) -> int:
        """Insert every spooled batch, oldest first; stops at the first failure. Returns rows drained."""
        drained = 0
        with self._drain_lock:
            for path in self.files():
                batch = orjson.loads(path.read_bytes())
                try:
                    store.insert(batch["table"], batch["rows"])
                except StoreError:
                    break
                path.unlink()
                drained += len(batch["rows"])
        return drained
