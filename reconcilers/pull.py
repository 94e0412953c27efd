"""Pull one side of a reconciliation from a system of record's SQL database (SQLAlchemy).

Many ERPs and WMSs expose a read replica. A rule names a database (its URL is a secret in
TOWER_RECONCILE_SOURCES) and a query returning `sku, location, quantity` and optionally `as_of`
(when the quantity was counted); the rows are streamed in batches, checked and typed, and
written into a staging table of the run (`recon_stage_<run>`), which the same comparison SQL
reads beside the snapshot events. The staging table is dropped when the run ends.

The pull only reads: a SQLite file is opened read-only (a missing file is an error, never created empty), and
PostgreSQL runs the query in a read-only transaction. Other databases rely on the user of the URL: give the pull a
read-only one.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from kernel.model.events import EARLIEST_TIME, LATEST_TIME, key_problem, number_problem
from kernel.store import Store
from kernel.store.base import utc_text
from reconcilers.config import PullParams
from reconcilers.sql import iso

REQUIRED = ("sku", "location", "quantity")
OPTIONAL = ("as_of",)


class PullError(Exception):
    """A pull that failed: the database cannot be reached, the query fails, or a row is not usable."""


@dataclass(frozen=True)
class PullResult:
    """What a pull loaded: rows, and the newest `as_of` when the query returns one."""

    rows: int
    newest: datetime | None
    has_as_of: bool

    def last(self, now: datetime) -> datetime | None:
        """When the side was last counted: its newest `as_of`, `now` when the query has none, None without rows."""
        if not self.rows:
            return None
        return self.newest if self.has_as_of else now


class Staging:
    """The staging table of one run; created on first use, dropped by `drop()`."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.name = "recon_stage_" + "".join(c for c in run_id if c.isalnum())
        self.created = False

    def create(self) -> None:
        """Create the table (once)."""
        if self.created:
            return
        self.store.command(
            f"CREATE TABLE IF NOT EXISTS {self.name} (side UInt8, source String, sku String, location String,"
            " quantity Float64, as_of DateTime64(6, 'UTC')) ENGINE = MergeTree ORDER BY (side, sku, location)"
        )
        self.created = True

    def drop(self) -> None:
        """Drop the table if it was created."""
        if self.created:
            self.store.command(f"DROP TABLE IF EXISTS {self.name}")
            self.created = False


def pull(
    store: Store,
    staging: Staging,
    side: int,
    name: str,
    params: PullParams,
    url: str,
    now: datetime,
    batch_rows: int,
    max_rows: int,
    progress: Any = None,
    timeout: float | None = None,
    max_ahead: timedelta | None = None,
) -> PullResult:
    """Run `params.query` on the database at `url` and write its rows into `staging` as side `side`.

    Rows of the same (sku, location) are added up by the comparison (the bins of a location). A
    row without `as_of` counts as counted `now`. PullError names the side, the database and, for a
    bad row, its number and field; the URL (a secret) never appears in a message. A pull running
    longer than `timeout` seconds is cancelled (`Watchdog`) and fails. A row counted more than `max_ahead`
    after `now` fails it too, as such an event is refused at the door (TOWER_COLLECTOR_EVENT_MAX_AHEAD_MINUTES).
    """
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    where = f"pull {name} from {params.database}"
    secret = _password(url)
    staging.create()
    written, newest, has_as_of = 0, None, False
    try:
        engine = sqlalchemy.create_engine(read_only_url(url, where))
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise PullError(f"{where}: cannot use the configured URL: {_clean(exc, secret)}") from exc
    watchdog = Watchdog(timeout)
    options: dict[str, Any] = {"stream_results": True}
    if engine.dialect.name == "postgresql":
        options["postgresql_readonly"] = True  # SET TRANSACTION READ ONLY: the query cannot write
    try:
        with engine.connect() as connection, watchdog.watching(connection.connection.driver_connection):
            result = connection.execution_options(**options).execute(sqlalchemy.text(params.query))
            names = result.keys()  # the result's column names (a RMKeyView, not a dict)
            columns = [str(c).lower() for c in names]
            missing = [c for c in REQUIRED if c not in columns]
            if missing:
                raise PullError(
                    f"{where}: the query returns {', '.join(columns) or 'no columns'}; it must return"
                    f" {', '.join(REQUIRED)} (and optionally as_of)"
                )
            index = {c: columns.index(c) for c in (*REQUIRED, *OPTIONAL) if c in columns}
            has_as_of = "as_of" in index
            while True:
                batch = result.fetchmany(batch_rows)
                if watchdog.fired:  # a driver that stopped quietly (closed) instead of raising
                    raise PullError(f"{where}: {watchdog.message()}")
                if not batch:
                    break
                rows: list[dict[str, Any]] = []
                for offset, raw in enumerate(batch):
                    number = written + offset + 1
                    row = _typed(raw, index, now, max_ahead, f"{where}: row {number}")
                    rows.append({"side": side, "source": name, **row})
                    if has_as_of and (newest is None or row["_at"] > newest):
                        newest = row["_at"]
                    del row["_at"]
                if written + len(rows) > max_rows:
                    raise PullError(f"{where}: more than {max_rows:,} rows (TOWER_RECONCILE_PULL_MAX_ROWS)")
                store.insert(staging.name, rows)
                written += len(rows)
                if progress is not None:
                    progress(f"{written:,} rows from {params.database}")
    except SQLAlchemyError as exc:
        if watchdog.fired:
            raise PullError(f"{where}: {watchdog.message()}") from exc
        raise PullError(f"{where}: {_clean(exc, secret)}") from exc
    finally:
        with contextlib.suppress(Exception):
            engine.dispose()
    return PullResult(written, newest, has_as_of)


def read_only_url(url: str, where: str) -> Any:
    """The URL to connect with: a SQLite file opened read-only (`mode=ro`), so a missing file is an error instead
    of a new empty database and the query cannot write; other URLs as they are. PullError when the file is missing
    (its path is not shown: the URL is a secret)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return parsed
    if not Path(database).is_file():
        raise PullError(f"{where}: the SQLite database file does not exist (its path is in TOWER_RECONCILE_SOURCES)")
    uri = "file:" + urllib.parse.quote(str(Path(database).resolve()))
    return parsed.set(database=uri, query={**parsed.query, "mode": "ro", "uri": "true"})


class Watchdog:
    """Cancels a pull's statement when it runs past its timeout: from a timer thread, with the DBAPI
    connection's own cancel (`interrupt()` for sqlite3, `cancel()` for psycopg and most server drivers), or
    by closing the connection when it has neither; the blocked call then raises and the pull fails."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.fired = False

    @contextlib.contextmanager
    def watching(self, dbapi_connection: Any) -> Iterator[None]:
        """Watch the statements run on `dbapi_connection` while the block runs."""
        if self.timeout is None:
            yield
            return
        timer = threading.Timer(self.timeout, self._cancel, (dbapi_connection,))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _cancel(self, dbapi_connection: Any) -> None:
        self.fired = True
        for method in ("interrupt", "cancel", "close"):
            cancel = getattr(dbapi_connection, method, None)
            if callable(cancel):
                with contextlib.suppress(Exception):
                    cancel()
                return

    def message(self) -> str:
        """Why the pull failed."""
        return (
            f"did not finish in {self.timeout:g} s and was cancelled (TOWER_RECONCILE_PULL_TIMEOUT_SECONDS); give"
            " the query an index or the replica a statement timeout"
        )


def _typed(raw: Any, index: dict[str, int], now: datetime, max_ahead: timedelta | None, where: str) -> dict[str, Any]:
    sku = _text(raw[index["sku"]], f"{where}: sku")
    location = _text(raw[index["location"]], f"{where}: location")  # as a snapshot event's: required
    quantity = _number(raw[index["quantity"]], f"{where}: quantity")
    at = now
    if "as_of" in index and raw[index["as_of"]] is not None:
        at = _time(raw[index["as_of"]], f"{where}: as_of")
        if max_ahead is not None and at > now + max_ahead:
            hours = (at - now).total_seconds() / 3600
            raise PullError(
                f"{where}: as_of {iso(at)} is {hours:,.1f} hours ahead of the tower's clock; counts more than"
                f" {int(max_ahead.total_seconds() // 60)} minutes ahead are refused, as events are"
                " (TOWER_COLLECTOR_EVENT_MAX_AHEAD_MINUTES; the replica's clock or time zone?)"
            )
    return {"sku": sku, "location": location, "quantity": quantity, "as_of": utc_text(at), "_at": at}


def _number(value: Any, where: str) -> float:
    """A quantity: a number, or text holding one (a SQLite TEXT column); NaN, infinity and 10^14 refused."""
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except InvalidOperation as exc:
            raise PullError(f"{where} {value!r} is not a number") from exc
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise PullError(f"{where} {value!r} is not a number")
    problem = number_problem(value)  # NaN would compare equal to anything, silently; infinity is no count
    if problem:
        raise PullError(f"{where} {problem}")
    return float(value)


def _text(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PullError(f"{where} {value!r} is not text")
    text = str(value).strip()
    if not text:
        raise PullError(f"{where} is empty")
    problem = key_problem(text)  # the same keys as snapshot events take, so the sides can join
    if problem:
        raise PullError(f"{where} {problem}")
    return text


# Unix seconds written as text (SQLite's strftime('%s'), or a number in a TEXT column): 9 digits or more, so that
# an ISO basic date (`20261128`) stays a date.
_UNIX_TEXT = re.compile(r"\d{9,}(\.\d+)?")


def _time(value: Any, where: str) -> datetime:
    shown = value
    if isinstance(value, str) and _UNIX_TEXT.fullmatch(value.strip()):
        value = float(value) if "." in value else int(value)
    # Unix seconds: an INTEGER column, a REAL one (with a fraction), or the text of either
    if (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and math.isfinite(value)):
        try:
            value = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise PullError(f"{where} {shown!r} is outside 1970-01-01..2262-04-11, the times the store holds") from exc
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise PullError(f"{where} {value!r} is not a timestamp") from exc
    if isinstance(value, date) and not isinstance(value, datetime):  # a DATE column: counted that day, 00:00 UTC
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise PullError(f"{where} {value!r} is not a timestamp")
    try:
        at = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset
        at = EARLIEST_TIME - timedelta(days=1)
    if not EARLIEST_TIME <= at < LATEST_TIME:  # the times the store holds (DateTime64 cannot keep year 1)
        raise PullError(f"{where} {shown!r} is outside 1970-01-01..2262-04-11, the times the store holds")
    return at


def _password(url: str) -> str | None:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password or None
    except Exception:
        return None


def _clean(exc: BaseException, secret: str | None) -> str:
    """The error's first line, without the password (drivers may echo connection details)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = f"{type(exc).__name__}: {text}"[:500]
    return text.replace(secret, "***") if secret else text
