"""The embedded backend: chDB, ClickHouse's engine in-process, over a data directory.

chDB allows one data directory per process and one active statement per connection, so
every call takes the store's lock; many request threads can share one EmbeddedStore.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kernel.store.base import Params, Row, StoreError, StoreUnavailable, decode_rows, encode_rows, param_text


class EmbeddedStore:
    """A Store on chDB in `data_dir` (created if missing)."""

    backend = "embedded"

    def __init__(self, data_dir: Path) -> None:
        from chdb.session import Session

        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self._lock = threading.Lock()
        try:
            self._session: Any = Session(str(data_dir))  # type: ignore[no-untyped-call]
        except Exception as exc:  # chDB raises plain RuntimeError for a second data directory
            raise StoreUnavailable(f"cannot open embedded store at {data_dir}: {exc}") from exc
        self._closed = False

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
        if not rows:
            return 0
        payload = encode_rows(rows)
        with self._lock:
            if self._closed:
                raise StoreUnavailable("embedded store is closed")
            try:
                inserter = self._session.send_insert(f"INSERT INTO {_ident(table)}", "JSONEachRow")
                inserter.append(payload)
                result = inserter.finish()
            except Exception as exc:
                raise StoreError(f"insert into {table} failed: {exc}") from exc
        return int(result.rows_written)

    def ping(self) -> bool:
        try:
            return self.query("SELECT 1 AS ok") == [{"ok": 1}]
        except StoreError:
            return False

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._session.close()


def _ident(name: str) -> str:
    """Table names come from code, never from input; refuse anything but a plain identifier."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a table name: {name!r}")
    return name
