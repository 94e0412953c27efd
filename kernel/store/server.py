"""The server backend: a ClickHouse server or cluster through clickhouse-connect (HTTP).

Same SQL as the embedded backend: typed `{name:Type}` parameters are bound by the server,
rows go in as JSONEachRow and come back as JSONEachRow.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from kernel.store.base import Params, Row, StoreError, StoreUnavailable, decode_rows, encode_rows, utc_text
from kernel.store.embedded import _ident


class ServerStore:
    """A Store on a ClickHouse server at `url` (http[s]://user:password@host:port)."""

    backend = "server"

    def __init__(self, url: str, database: str) -> None:
        import clickhouse_connect

        # One HTTP session would make ClickHouse refuse concurrent queries ("session is
        # locked"), so no session id; short timeouts so a dead server spools instead of
        # holding requests for minutes. The URL's scheme decides TLS: the driver reads only
        # the port from it (https://host:8123 would go in clear, http://host:8443 over TLS).
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise StoreUnavailable("the ClickHouse server URL must start with http:// or https://")
        common: dict[str, Any] = {
            "dsn": url,
            "interface": scheme,
            "autogenerate_session_id": False,
            "connect_timeout": 5,
            "send_receive_timeout": 30,
        }
        try:
            with _quiet_driver():
                admin = clickhouse_connect.get_client(**common)
                exists = admin.query(
                    "SELECT count() FROM system.databases WHERE name = {db:String}", parameters={"db": database}
                ).result_rows
                if not exists or not exists[0][0]:
                    admin.command(f"CREATE DATABASE IF NOT EXISTS {_ident(database)}")
                admin.close()
                self._client: Any = clickhouse_connect.get_client(
                    **common,
                    database=database,
                    settings={"output_format_json_quote_64bit_integers": 0},
                )
        except Exception as exc:
            raise StoreUnavailable(f"cannot reach ClickHouse server: {exc}") from exc

    def _params(self, params: Params | None) -> dict[str, Any] | None:
        # clickhouse-connect formats lists and scalars for server-side binding itself;
        # datetimes are given as UTC text so both backends read them the same way.
        if not params:
            return None
        return {k: _server_param(v) for k, v in params.items()}

    def query(self, sql: str, params: Params | None = None) -> list[Row]:
        try:
            data = self._client.raw_query(sql, parameters=self._params(params), fmt="JSONEachRow")
        except Exception as exc:
            raise _classify(exc) from exc
        return decode_rows(bytes(data))

    def command(self, sql: str, params: Params | None = None) -> None:
        try:
            self._client.raw_query(sql, parameters=self._params(params))
        except Exception as exc:
            raise _classify(exc) from exc

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        if not rows:
            return 0
        try:
            self._client.raw_insert(_ident(table), insert_block=encode_rows(rows), fmt="JSONEachRow")
        except Exception as exc:
            raise _classify(exc) from exc
        return len(rows)

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except Exception:
            return False

    def close(self) -> None:
        self._client.close()


# clickhouse-connect logs a warning of its own ("Unexpected Http Driver Exception") before it raises for a server it
# cannot reach: a stray line before the one StoreUnavailable gives, which says what happened.
_DRIVER_LOGGERS = ("clickhouse_connect.driver._backend.http_sync", "clickhouse_connect.driver.httpclient")
_DRIVER_NOISE = "Unexpected Http Driver Exception"


@contextmanager
def _quiet_driver() -> Iterator[None]:
    """Drop the driver's warning above while this thread connects (other threads' records pass)."""
    thread = threading.get_ident()

    def keep(record: logging.LogRecord) -> bool:
        return record.thread != thread or record.msg != _DRIVER_NOISE

    loggers = [logging.getLogger(name) for name in _DRIVER_LOGGERS]
    for logger in loggers:
        logger.addFilter(keep)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(keep)


def _server_param(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, bool):
        return int(value)  # clickhouse-connect would send "True", which UInt8 refuses
    return value


# Server error codes that pass by themselves (overload, timeouts, replicas and keeper away,
# memory limits): the rows are spooled and retried instead of refused.
_TRANSIENT_CODES = frozenset({159, 202, 209, 210, 241, 242, 243, 252, 319, 425, 999})


def _classify(exc: Exception) -> StoreError:
    from clickhouse_connect.driver.exceptions import OperationalError

    # clickhouse-connect raises OperationalError for transport failures (refused, timed out);
    # errors the server answered with are other DatabaseErrors.
    if isinstance(exc, OperationalError) or getattr(exc, "code", None) in _TRANSIENT_CODES:
        return StoreUnavailable(str(exc))
    return StoreError(str(exc))
