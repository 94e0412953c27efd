"""The embedded backend: chDB, ClickHouse's engine in-process, over a data directory.

chDB allows one data directory per process and one active statement per connection, so
every call takes the store's lock; many request threads can share one EmbeddedStore.

`close()` takes the store offline (every call then raises StoreUnavailable, as a server
backend does when the server is down) and `reopen()` brings it back on the same data
directory; tests use the pair to exercise the spool against the real store.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kernel.store.base import Params, Row, StoreError, StoreUnavailable, decode_rows, encode_rows, param_text


def holder_of(data_dir: Path) -> str | None:
    """Another process holding the data directory, as its `status` file describes it ('PID 123, started at
    ...'), or None when none does. The engine keeps an exclusive lock on that file while it runs."""
    status = data_dir / "status"
    try:
        with status.open("rb") as file:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = file.read(4096).decode("utf-8", "replace")
            else:
                fcntl.flock(file.fileno(), fcntl.LOCK_UN)
                return None
    except OSError:
        return None
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    pid, started = fields.get("PID", "").strip(), fields.get("Started at", "").strip()
    if pid == str(os.getpid()):
        return None  # this process: the engine refuses a second directory itself, with its own message
    return f"PID {pid or 'unknown'}" + (f", started at {started}" if started else "")


class EmbeddedStore:
    """A Store on chDB in `data_dir` (created if missing)."""

    backend = "embedded"

    def __init__(self, data_dir: Path, backup_dir: Path | None = None, min_free_bytes: int = 0) -> None:
        """`backup_dir`: the one folder BACKUP may write to and RESTORE read from (default: `backups` beside
        `data_dir`; kernel/backups.py). `min_free_bytes`: inserts are refused (StoreUnavailable) while the data
        directory's disk has less free (TOWER_STORE_MIN_FREE_MIB; 0: no guard)."""
        from chdb.session import Session

        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.min_free_bytes = min_free_bytes
        self.backup_dir = (backup_dir or data_dir.parent / "backups").absolute()
        self._lock = threading.Lock()
        self._session: Any = self._open(Session)
        self._closed = False

    def _open(self, session_type: Any) -> Any:
        # asked first: the engine's own refusal is an obscure message (and a line on stderr)
        holder = holder_of(self.data_dir)
        if holder is not None:
            raise StoreUnavailable(
                f"the embedded store at {self.data_dir} is in use by another process ({holder}): it serves one"
                " process at a time. Stop that process, or use it through its API, or give this one another"
                " data directory (--data-dir, TOWER_STORE_DATA_DIR)"
            )
        try:
            return session_type(self._connection())
        except Exception as exc:  # chDB raises plain RuntimeError for a second data directory
            raise StoreUnavailable(f"cannot open embedded store at {self.data_dir}: {exc}") from exc

    def _connection(self) -> str:
        # startup arguments of the engine travel in the connection string: the backups folder is its config
        return f"file:{self.data_dir.absolute()}?backups.allowed_path={self.backup_dir}"

    def beside(self, sql: str, params: Params | None = None) -> None:
        """Run one long statement (a BACKUP) on a second connection to the same data directory, outside the
        store's lock: every other call goes on meanwhile. The engine's ASYNC form is no substitute: the next
        statement on this connection fails while it runs (same query id)."""
        from chdb.session import Session

        if self._closed:
            raise StoreUnavailable("embedded store is closed")
        session = self._open(Session)
        try:
            session.query(sql, "CSV", params=self._params(params))
        except Exception as exc:
            raise StoreError(str(exc)) from exc
        finally:
            session.close()

    def _params(self, params: Params | None) -> dict[str, str] | None:
        if not params:
            return None
        return {k: param_text(v) for k, v in params.items()}

    def query(self, sql: str, params: Params | None = None) -> list[Row]:
        data = self._run(sql, "JSONEachRow", params)
        return decode_rows(data)

    def command(self, sql: str, params: Params | None = None) -> None:
        self._run(sql, "CSV", params)

    def _run(self, sql: str, fmt: str, params: Params | None) -> bytes:
        with self._lock:
            if self._closed:
                raise StoreUnavailable("embedded store is closed")
            try:
                result = self._session.query(sql, fmt, params=self._params(params))
            except Exception as exc:
                raise StoreError(str(exc)) from exc
        return bytes(result.bytes()) if result is not None else b""

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert `rows`; raises StoreError when the engine refuses them, StoreUnavailable when it cannot take
        them now (a disk under `min_free_bytes` or full, too many parts, no memory) and they may be sent again.

        The rows travel inline, after FORMAT, in one statement: chDB's streaming insert (`send_insert`, used
        before) reports success when writing the part fails (a full disk, too many parts) and the rows are lost."""
        if not rows:
            return 0
        statement = f"INSERT INTO {_ident(table)} {_INSERT_SETTINGS} FORMAT JSONEachRow\n"
        payload = encode_rows(rows).decode("utf-8")
        with self._lock:
            if self._closed:
                raise StoreUnavailable("embedded store is closed")
            self._check_free_space()
            try:
                self._session.query(statement + payload, "CSV")
            except Exception as exc:
                if _RESOURCE_ERRORS.search(str(exc)):
                    raise StoreUnavailable(f"insert into {table} failed, for now: {exc}") from exc
                raise StoreError(f"insert into {table} failed: {exc}") from exc
        # the engine's count would add the rows materialized views wrote from these (event_ids)
        return len(rows)

    def _check_free_space(self) -> None:
        """Refuse writes before the disk is full: the engine's background merges need room, and a merge that
        meets a full disk can leave an empty part in place of the ones it merged (the rows are lost)."""
        if not self.min_free_bytes:
            return
        try:
            free = shutil.disk_usage(self.data_dir).free
        except OSError:
            return  # the insert itself will say what is wrong with the directory
        if free < self.min_free_bytes:
            raise StoreUnavailable(
                f"the disk of {self.data_dir} has {free // 2**20:,} MiB free, under TOWER_STORE_MIN_FREE_MIB ="
                f" {self.min_free_bytes // 2**20:,}: writes wait until there is room (a full disk loses stored data)"
            )

    def ping(self) -> bool:
        try:
            return self.query("SELECT 1 AS ok") == [{"ok": 1}]
        except StoreError:
            return False

    @property
    def closed(self) -> bool:
        """True between `close()` and `reopen()`."""
        return self._closed

    def close(self) -> None:
        """Release the data directory; until `reopen()` every call raises StoreUnavailable."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._session.close()

    def reopen(self) -> None:
        """Open the same data directory again after `close()` (a no-op while open)."""
        from chdb.session import Session

        with self._lock:
            if self._closed:
                self._session = self._open(Session)
                self._closed = False


# chDB enables async inserts by default; the ingest pipeline already gathers requests into one
# insert, so each insert is written synchronously: when it returns, its rows are in a part.
_INSERT_SETTINGS = "SETTINGS async_insert = 0"

# Errors of an insert the engine could not take now, not of the rows: they may be sent again later.
_RESOURCE_ERRORS = re.compile(
    r"NOT_ENOUGH_SPACE|TOO_MANY_PARTS|MEMORY_LIMIT_EXCEEDED|CANNOT_ALLOCATE_MEMORY|No space left on device"
)


def _ident(name: str) -> str:
    """Table names come from code, never from input; refuse anything but a plain identifier."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a table name: {name!r}")
    return name
