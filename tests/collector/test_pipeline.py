"""The ingest pipeline: group commit, back-pressure, the spool, and draining it, on the real store."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from collector.otlp.convert import log_items
from collector.pipeline import IngestPipeline, NotStored, Overloaded
from collector.spool import Spool
from kernel.queries import count_events
from kernel.settings import CollectorSettings
from kernel.store.embedded import EmbeddedStore
from tests.collector.test_otlp_helpers import logs_request, make_log
from tests.factories import event_row, make_event

PipelineFactory = Callable[..., IngestPipeline]


@pytest.fixture
def make_pipeline(store: EmbeddedStore, tmp_path: Path) -> Iterator[PipelineFactory]:
    """Started pipelines on the shared store with a spool in tmp_path; stopped after the test."""
    started: list[IngestPipeline] = []

    def make(spool_dir: Path | None = None, spool_max_bytes: int = 64 * 1024**2, **settings: Any) -> IngestPipeline:
        settings.setdefault("drain_interval_seconds", 3600.0)  # tests drain explicitly unless they set it
        pipeline = IngestPipeline(
            store, Spool(spool_dir or tmp_path / "spool", spool_max_bytes), CollectorSettings(**settings)
        )
        pipeline.start()
        started.append(pipeline)
        return pipeline

    yield make
    for pipeline in started:
        pipeline.stop()


@contextlib.contextmanager
def offline(store: EmbeddedStore) -> Iterator[None]:
    """The real store taken offline (its data directory released) for the block, then reopened."""
    store.close()
    try:
        yield
    finally:
        store.reopen()


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll a condition a background thread will make true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        threading.Event().wait(0.02)


def events(n: int) -> list[dict[str, Any]]:
    return [event_row(make_event("order.accepted")) for _ in range(n)]


def stored_ids(store: EmbeddedStore) -> set[str]:
    return {r["id"] for r in store.query("SELECT id FROM business_events FINAL")}


def test_concurrent_requests_share_inserts(store: EmbeddedStore, make_pipeline: PipelineFactory) -> None:
    pipeline = make_pipeline(batch_max_wait_ms=50)
    requests = 40
    start = threading.Barrier(requests)
    errors: list[Exception] = []

    def send() -> None:
        rows = events(10)
        start.wait()
        try:
            pipeline.submit({"business_events": rows})
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert count_events(store) == 400
    assert pipeline.stats.rows_stored == 400
    assert 1 <= pipeline.stats.batches < requests / 2  # group commit: far fewer inserts than requests


def test_requests_past_the_queue_limit_are_refused_with_retry_after(
    store: EmbeddedStore, make_pipeline: PipelineFactory
) -> None:
    # the writer gathers for a second, so what is submitted meanwhile stays queued
    pipeline = make_pipeline(queue_max_rows=100, batch_max_wait_ms=1000, retry_after_seconds=7)
    first, too_many, fits = events(60), events(50), events(40)
    outcomes: dict[str, Exception | None] = {}

    def submit(name: str, rows: list[dict[str, Any]]) -> None:
        try:
            pipeline.submit({"business_events": rows})
            outcomes[name] = None
        except Exception as exc:  # collected and asserted below
            outcomes[name] = exc

    queued = threading.Thread(target=submit, args=("first", first))
    queued.start()
    wait_until(lambda: pipeline.queued_rows == 60)
    with pytest.raises(Overloaded) as refused:
        pipeline.submit({"business_events": too_many})
    assert refused.value.retry_after == 7
    also = threading.Thread(target=submit, args=("fits", fits))  # 60 + 40 is exactly the limit
    also.start()
    queued.join()
    also.join()
    assert outcomes == {"first": None, "fits": None}
    assert stored_ids(store) == {r["id"] for r in first + fits}
    assert pipeline.queued_rows == 0


def test_a_request_that_times_out_in_the_queue_is_withdrawn_not_stored(
    store: EmbeddedStore, make_pipeline: PipelineFactory
) -> None:
    pipeline = make_pipeline(batch_max_wait_ms=500)
    rows = events(5)
    with pytest.raises(Overloaded):
        pipeline.submit({"business_events": rows}, timeout=0.05)
    assert pipeline.queued_rows == 0
    later = events(3)
    pipeline.submit({"business_events": later})  # the writer carries on after the withdrawal
    assert stored_ids(store) == {r["id"] for r in later}


def test_a_refused_request_fails_alone(store: EmbeddedStore, make_pipeline: PipelineFactory) -> None:
    pipeline = make_pipeline(batch_max_wait_ms=200)
    good, bad = events(20), events(1)
    bad[0]["time"] = "not a time"
    outcomes: dict[int, Exception | None] = {}

    def submit(index: int, rows: list[dict[str, Any]]) -> None:
        try:
            pipeline.submit({"business_events": rows})
            outcomes[index] = None
        except Exception as exc:  # collected and asserted below
            outcomes[index] = exc

    threads = [threading.Thread(target=submit, args=(i, [row])) for i, row in enumerate(good + bad)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert isinstance(outcomes.pop(20), NotStored)
    assert set(outcomes.values()) == {None}
    assert stored_ids(store) == {r["id"] for r in good}
    assert pipeline.spool.files() == []


def test_a_request_one_table_refuses_stores_nothing_its_resend_would_duplicate(
    store: EmbeddedStore, make_pipeline: PipelineFactory
) -> None:
    """An OTLP logs request whose business event the store refuses fails whole, and its log records (a table
    without an idempotency key) are not stored: the exporter sends the request again, and they are stored once."""
    pipeline = make_pipeline()
    logs = [item.row for item in log_items(logs_request(make_log(body="picked"), make_log(body="packed")), "wms")]
    bad = events(1)
    bad[0]["time"] = "not a time"
    with pytest.raises(NotStored):
        pipeline.submit({"otel_logs": logs, "business_events": bad})
    assert store.query("SELECT count() AS n FROM otel_logs")[0]["n"] == 0

    pipeline.submit({"otel_logs": logs, "business_events": events(1)})  # the sender's fixed resend
    assert sorted(r["Body"] for r in store.query("SELECT Body FROM otel_logs")) == ["packed", "picked"]


def test_rows_are_spooled_while_the_store_is_unavailable_and_drained_when_it_returns(
    store: EmbeddedStore, make_pipeline: PipelineFactory
) -> None:
    pipeline = make_pipeline()
    before = events(10)
    pipeline.submit({"business_events": before})
    during = [events(10) for _ in range(3)]
    with offline(store):
        for rows in during:
            pipeline.submit({"business_events": rows})  # returns: spooled, durable
        assert pipeline.store_down
        assert len(pipeline.spool.files()) == 3
        assert pipeline.spool.pending_rows() == 30
        assert pipeline.drain_now() == 0  # still offline: nothing moves
    assert count_events(store) == 10
    assert pipeline.drain_now() == 30
    assert not pipeline.store_down
    assert pipeline.spool.files() == []
    assert pipeline.spool.size_bytes() == 0
    assert stored_ids(store) == {r["id"] for r in before + [row for rows in during for row in rows]}
    assert pipeline.stats.rows_spooled == 30
    assert pipeline.stats.rows_drained == 30
    after = events(5)
    pipeline.submit({"business_events": after})
    assert pipeline.stats.rows_stored == 15  # straight to the store again
    assert count_events(store) == 45


def test_the_drainer_moves_the_spool_by_itself(store: EmbeddedStore, make_pipeline: PipelineFactory) -> None:
    pipeline = make_pipeline(drain_interval_seconds=0.05)
    rows = events(25)
    with offline(store):
        pipeline.submit({"business_events": rows[:10]})
        pipeline.submit({"business_events": rows[10:]})
        assert pipeline.spool.pending_rows() == 25
    wait_until(lambda: not pipeline.spool.files() and not pipeline.store_down)
    assert stored_ids(store) == {r["id"] for r in rows}
    assert count_events(store) == 25


def test_a_full_spool_refuses_with_retry_after(store: EmbeddedStore, make_pipeline: PipelineFactory) -> None:
    pipeline = make_pipeline(spool_max_bytes=4096, retry_after_seconds=3)
    with offline(store):
        pipeline.submit({"business_events": events(1)})
        with pytest.raises(Overloaded) as refused:
            pipeline.submit({"business_events": events(20)})
    assert refused.value.retry_after == 3
    assert pipeline.drain_now() == 1
    assert count_events(store) == 1


def test_spooled_rows_the_store_refuses_are_set_aside_without_blocking_the_rest(
    store: EmbeddedStore, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool", 1024**2)
    good, bad = events(7), events(1)
    bad[0]["time"] = "not a time"
    spool.append("business_events", good[:3])
    spool.append("business_events", bad + good[3:5])
    (tmp_path / "spool" / "00000000000000000001-garbage.batch").write_bytes(b'{"table": "business_ev')
    spool.append("business_events", good[5:])
    assert spool.drain(store) == 7 + 1  # every row left the spool; the one refused went aside
    assert stored_ids(store) == {r["id"] for r in good}
    assert spool.files() == []
    aside = spool.set_aside()
    assert [p.suffix for p in aside] == [".corrupt", ".rejected"]
    rejected = orjson.loads(aside[1].read_bytes())
    assert [r["id"] for r in rejected["rows"]] == [bad[0]["id"]]
    assert "time" in rejected["reasons"][0]


_SPOOL_WRITER = """
import sys
from pathlib import Path
import orjson
from collector.spool import Spool

spool = Spool(Path(sys.argv[1]), 1024**3)
for line in sys.stdin:
    batch = orjson.loads(line)
    spool.append("business_events", batch)
    print(batch[0]["id"], flush=True)  # acknowledged
"""


def test_a_crashed_writer_leaves_only_whole_batches_which_a_restart_drains(
    store: EmbeddedStore, make_pipeline: PipelineFactory, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    batches = [events(50) for _ in range(400)]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SPOOL_WRITER, str(spool_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert proc.stdin is not None and proc.stdout is not None
    feeder = threading.Thread(target=_feed, args=(proc.stdin, batches), daemon=True)
    feeder.start()
    acknowledged: list[str] = []
    while len(acknowledged) < 40:  # kill it mid-stream, while it is writing
        acknowledged.append(proc.stdout.readline().decode().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # a batch being written when the process died is at most a .tmp, never a partial .batch
    (spool_dir / "00000000000000000000-deadbeef.tmp").write_bytes(b'{"table": "business_events", "ro')

    pipeline = make_pipeline(spool_dir=spool_dir, drain_interval_seconds=0.05)
    assert list(spool_dir.glob("*.tmp")) == []
    spooled = pipeline.spool.files()
    assert len(spooled) >= len(acknowledged)
    wait_until(lambda: not pipeline.spool.files())
    ids = stored_ids(store)
    first_ids = {batch[0]["id"] for batch in batches}
    assert set(acknowledged) <= ids  # every acknowledged batch is stored
    assert ids <= {row["id"] for batch in batches for row in batch}
    assert len(ids) == 50 * len(spooled)  # every spooled batch whole
    assert len(ids & first_ids) == len(spooled)
    assert pipeline.spool.set_aside() == []


def _feed(stdin: Any, batches: list[list[dict[str, Any]]]) -> None:
    with contextlib.suppress(BrokenPipeError, ValueError):
        for batch in batches:
            stdin.write(orjson.dumps(batch) + b"\n")
            stdin.flush()


def test_a_disk_under_the_guard_spools_or_refuses_and_loses_nothing(
    store: EmbeddedStore, make_pipeline: PipelineFactory, tmp_path: Path
) -> None:
    """The store refusing writes for want of room (TOWER_STORE_MIN_FREE_MIB) is unavailable, not a bad batch: the
    rows go to the spool (durable) and drain once there is room; a spool on the same disk refuses too, and the
    doors answer 503. Before, a full disk answered 200 and dropped the rows."""
    pipeline = make_pipeline()
    rows = events(3)
    store.min_free_bytes = 2**62
    try:
        pipeline.submit({"business_events": rows})  # acknowledged: spooled
        assert pipeline.stats.rows_spooled == 3 and stored_ids(store).isdisjoint({r["id"] for r in rows})
        guarded = IngestPipeline(
            store, Spool(tmp_path / "guarded-spool", 64 * 1024**2, min_free_bytes=2**62), CollectorSettings()
        )
        guarded.start()
        try:
            with pytest.raises(Overloaded, match="TOWER_STORE_MIN_FREE_MIB"):
                guarded.submit({"business_events": events(1)})
        finally:
            guarded.stop()
    finally:
        store.min_free_bytes = 0
    assert pipeline.drain_now() == 3
    assert {r["id"] for r in rows} <= stored_ids(store)
