"""The ingest pipeline: every door hands rows here and gets an answer only once they are durable.

Requests enqueue their rows and wait. One writer thread gathers what is queued (group commit),
inserts each table's rows as one batch, and wakes the requests. When the store is unavailable
the batch is written to the spool instead, which also counts as durable; a drainer thread
moves the spool into the store when it is back. Once the store has been found unavailable,
batches go straight to the spool (no insert that would only time out first) until the
drainer finds it answering and the spool empty. Past `queue_max_rows` waiting rows, or with
the spool full, requests are refused with `Overloaded` (the doors answer 503 + Retry-After).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from collector.spool import Spool, SpoolFull
from kernel.settings import CollectorSettings
from kernel.store import Store, StoreError, StoreUnavailable

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

Rows = dict[str, list[dict[str, Any]]]

# Tables without an idempotency key (the OpenTelemetry exporter's schema: a row sent twice is stored twice).
APPEND_ONLY = frozenset({"otel_traces", "otel_logs"})


class Overloaded(Exception):
    """The tower cannot take more right now; the caller should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotStored(Exception):
    """The rows were neither stored nor spooled (the store refused them as invalid)."""


@dataclass(eq=False)  # identity: a request's item is found in the queue by `is`, not by content
class _Item:
    tables: Rows
    rows: int
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None


@dataclass
class PipelineStats:
    """Counters since start, for /readyz and the benchmarks."""

    batches: int = 0
    rows_stored: int = 0
    rows_spooled: int = 0
    rows_drained: int = 0


def write_order(items: list[_Item]) -> list[str]:
    """The tables of `items` in the order they are written: as the requests name them, the append-only ones last.
    A request whose rows a table refuses fails and is sent again; every table written before that one folds the
    resent rows away by its idempotency key, and an append-only table written before it would hold them twice."""
    tables = dict.fromkeys(table for item in items for table, rows in item.tables.items() if rows)
    return sorted(tables, key=lambda table: table in APPEND_ONLY)


class IngestPipeline:
    """Group-commit writer in front of the store, with a spool behind it."""

    def __init__(self, store: Store, spool: Spool, settings: CollectorSettings) -> None:
        self.store = store
        self.spool = spool
        self.settings = settings
        self.stats = PipelineStats()
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._running = False
        self._threads: list[threading.Thread] = []
        self._stop_drain = threading.Event()
        self._store_down = False

    @property
    def store_down(self) -> bool:
        """True while batches go straight to the spool because the store was found unavailable."""
        return self._store_down

    def start(self) -> None:
        """Start the writer and the spool drainer."""
        self._running = True
        self._stop_drain.clear()
        self._threads = [
            threading.Thread(target=self._writer, name="tower-writer", daemon=True),
            threading.Thread(target=self._drainer, name="tower-spool-drainer", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Finish what is queued, then stop both threads."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        self._stop_drain.set()
        for thread in self._threads:
            thread.join(timeout=30)

    @property
    def queued_rows(self) -> int:
        """Rows waiting for (or in) the current write."""
        return self._queued_rows

    def submit(self, tables: Rows, timeout: float = 60.0) -> None:
        """Hand rows (table -> rows) to the writer and wait until they are stored or spooled."""
        rows = sum(len(r) for r in tables.values())
        if rows == 0:
            return
        item = _Item(tables=tables, rows=rows)
        with self._cond:
            if not self._running:
                raise Overloaded("the tower is shutting down", self.settings.retry_after_seconds)
            if self._queued_rows + rows > self.settings.queue_max_rows and self._queued_rows > 0:
                raise Overloaded(
                    f"{self._queued_rows} rows are waiting to be written", self.settings.retry_after_seconds
                )
            self._queue.append(item)
            self._queued_rows += rows
            self._cond.notify()
        if not item.done.wait(timeout):
            with self._cond:
                withdrawn = item in self._queue
                if withdrawn:  # never taken by the writer: nothing of it is stored, so refusing is exact
                    self._queue.remove(item)
                    self._queued_rows -= rows
            if withdrawn:
                raise Overloaded("the write did not start in time", self.settings.retry_after_seconds)
            item.done.wait()  # being written: its outcome is the answer, whatever it takes
        if item.error is not None:
            raise item.error

    def _take(self) -> list[_Item]:
        """The next group of queued requests; empty only when stopping with nothing queued."""
        with self._cond:
            while True:
                while not self._queue and self._running:
                    self._cond.wait()
                if not self._queue:
                    return []
                deadline = time.monotonic() + self.settings.batch_max_wait_ms / 1000
                while self._queued_rows < self.settings.batch_max_rows and self._running:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._queue:  # requests that timed out meanwhile withdrew themselves
                    break
            items: list[_Item] = []
            taken = 0
            while self._queue and (not items or taken + self._queue[0].rows <= self.settings.batch_max_rows):
                item = self._queue.popleft()
                items.append(item)
                taken += item.rows
            return items

    def _writer(self) -> None:
        while True:
            items = self._take()
            if not items:
                return
            try:
                self._write(items)
            except Exception as exc:  # never let the writer die; the requests get the error
                log.exception("writer failed")
                for item in items:
                    item.error = item.error or exc
            finally:
                with self._cond:
                    self._queued_rows -= sum(i.rows for i in items)
                for item in items:
                    item.done.set()

    def _write(self, items: list[_Item]) -> None:
        with tracer.start_as_current_span(
            "tower.pipeline.write", attributes={"tower.requests": len(items), "tower.rows": sum(i.rows for i in items)}
        ) as span:
            for table in write_order(items):
                # a request one table refused writes nothing more: it fails and its sender sends it again
                live = [item for item in items if item.error is None and item.tables.get(table)]
                if not live:
                    continue
                if not self._store_down:
                    live = self._insert(table, [row for item in live for row in item.tables[table]], live)
                if live:
                    self._spool(table, [row for item in live for row in item.tables[table]], live)
            span.set_attribute("tower.spooled", self._store_down)
        self.stats.batches += 1

    def _insert(self, table: str, rows: list[dict[str, Any]], items: list[_Item]) -> list[_Item]:
        """Insert a table's rows; the items whose rows must be spooled instead (the store is unavailable)."""
        try:
            self.store.insert(table, rows)
            self.stats.rows_stored += len(rows)
            return []
        except StoreUnavailable as exc:
            self._mark_down(exc)
            return items
        except StoreError as exc:
            if not self.store.ping():
                self._mark_down(exc)
                return items
        return self._isolate(table, items)

    def _mark_down(self, exc: Exception) -> None:
        if not self._store_down:
            log.warning("the store is unavailable (%s); spooling until it is back", exc)
        self._store_down = True

    def _isolate(self, table: str, items: list[_Item]) -> list[_Item]:
        """The store is up but refused the batch: insert item by item so one bad request fails alone.

        Returns the items not inserted when the store became unavailable meanwhile, for the caller to spool (not
        the ones already in: an append-only table would hold their rows twice).
        """
        for n, item in enumerate(items):
            rows = item.tables[table]
            try:
                self.store.insert(table, rows)
                self.stats.rows_stored += len(rows)
            except StoreUnavailable as exc:
                self._mark_down(exc)
                return items[n:]
            except StoreError as exc:
                log.error("store refused %d rows for %s: %s", len(rows), table, exc)
                item.error = NotStored(f"the store refused the rows: {exc}")
        return []

    def _spool(self, table: str, rows: list[dict[str, Any]], items: list[_Item]) -> None:
        try:
            self.spool.append(table, rows)
            self.stats.rows_spooled += len(rows)
        except (SpoolFull, OSError) as exc:
            log.error("cannot spool %d rows for %s: %s", len(rows), table, exc)
            for item in items:
                if item.tables.get(table):
                    item.error = Overloaded(
                        f"the store is unavailable and the spool cannot take more: {exc}",
                        self.settings.retry_after_seconds,
                    )

    def drain_now(self) -> int:
        """Move spooled batches into the store if it answers; returns rows drained.

        When the spool is empty and the store answers, batches go to the store again.
        """
        if not self.store.ping():
            return 0
        drained = 0
        if self.spool.files():
            with tracer.start_as_current_span("tower.spool.drain") as span:
                drained = self.spool.drain(self.store, self.settings.batch_max_rows)
                span.set_attribute("tower.rows", drained)
            self.stats.rows_drained += drained
            if drained:
                log.info("drained %d spooled rows into the store", drained)
        if self._store_down and not self.spool.files():
            log.info("the store is back")
            self._store_down = False
        return drained

    def _drainer(self) -> None:
        while True:
            try:
                self.drain_now()
            except Exception:
                log.exception("spool drain failed")
            if self._stop_drain.wait(self.settings.drain_interval_seconds):
                return
