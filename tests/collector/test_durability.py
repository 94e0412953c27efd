"""A 2xx means durable: kill -9 during ingest loses nothing acknowledged, and an unavailable store
costs nothing either (records are spooled, then drained, each counted once)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from kernel.clock import SystemClock
from kernel.queries import count_events, count_spans, events_for_key
from kernel.store.embedded import EmbeddedStore
from tests.collector.test_pipeline import offline, wait_until
from tests.factories import make_event
from tests.support import RunningTower, TowerProcess

ROOT = Path(__file__).resolve().parents[2]
BATCH = "application/cloudevents-batch+json"
PROTOBUF = "application/x-protobuf"

SpanKey = tuple[str, str]


def span_request(service: str, spans: int) -> tuple[bytes, list[SpanKey]]:
    """An OTLP/HTTP protobuf body of `spans` spans of one service, and their (TraceId, SpanId) in hex."""
    now = int(SystemClock().now().timestamp() * 1e9)
    keys: list[SpanKey] = []
    scope = ScopeSpans()
    for i in range(spans):
        trace_id, span_id = secrets.token_bytes(16), secrets.token_bytes(8)
        keys.append((trace_id.hex(), span_id.hex()))
        scope.spans.append(
            Span(
                trace_id=trace_id,
                span_id=span_id,
                name=f"{service}.sync",
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=now + i,
                end_time_unix_nano=now + i + 2_000_000,
                attributes=[KeyValue(key="order.id", value=AnyValue(string_value=f"SO-{i}"))],
            )
        )
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
    body = ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=resource, scope_spans=[scope])])
    return body.SerializeToString(), keys


def event_batch(n: int, source: str = "wms") -> list[dict[str, Any]]:
    return [make_event("shipment.confirmed", source=source) for _ in range(n)]


def post_events(client: httpx.Client, events: list[dict[str, Any]]) -> set[str]:
    """POST a CloudEvents batch; the ids it acknowledged (none unless the answer is 2xx)."""
    answer = client.post("/v1/events", content=orjson.dumps(events), headers={"Content-Type": BATCH})
    if not answer.is_success:
        return set()
    refused = {r["index"] for r in answer.json()["rejected"]}
    return {e["id"] for i, e in enumerate(events) if i not in refused}


def post_spans(client: httpx.Client, body: bytes, keys: list[SpanKey]) -> set[SpanKey]:
    """POST an OTLP/HTTP protobuf export; the spans it acknowledged (none unless the answer is 2xx)."""
    answer = client.post("/v1/traces", content=body, headers={"Content-Type": PROTOBUF})
    if not answer.is_success:
        return set()
    reply = ExportTraceServiceResponse.FromString(answer.content)
    assert reply.partial_success.rejected_spans == 0
    return set(keys)


_COUNT = """
import sys
from pathlib import Path
import orjson
from kernel.store.embedded import EmbeddedStore

store = EmbeddedStore(Path(sys.argv[1]))
events = [r["id"] for r in store.query("SELECT id FROM business_events FINAL")]
spans = [[r["TraceId"], r["SpanId"]] for r in store.query("SELECT TraceId, SpanId FROM otel_traces")]
sys.stdout.buffer.write(orjson.dumps({"events": events, "spans": spans}))
"""


def stored_in(data_dir: Path) -> tuple[list[str], list[SpanKey]]:
    """What a stopped tower's store holds, read by a separate process (one chDB directory per process)."""
    out = subprocess.run(
        [sys.executable, "-c", _COUNT, str(data_dir / "clickhouse")],
        capture_output=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    found = orjson.loads(out.stdout)
    return found["events"], [(t, s) for t, s in found["spans"]]


class Senders:
    """Threads that send continuously and keep what each 2xx acknowledged."""

    def __init__(self, tower: TowerProcess) -> None:
        self.tower = tower
        self.stop = threading.Event()
        self.events: set[str] = set()
        self.spans: set[SpanKey] = set()
        self.requests = 0
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(self._send_events, "wms")),
            threading.Thread(target=self._run, args=(self._send_events, "erp")),
            threading.Thread(target=self._run, args=(self._send_spans, "wms")),
            threading.Thread(target=self._run, args=(self._send_spans, "tms")),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, send: Callable[[httpx.Client, str], None], system: str) -> None:
        token = self.tower.token(system)
        with httpx.Client(
            base_url=self.tower.http_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client:
            while not self.stop.is_set():
                try:
                    send(client, system)
                except httpx.HTTPError:
                    continue  # the server died under us: that request was not acknowledged
                with self._lock:
                    self.requests += 1

    def _send_events(self, client: httpx.Client, system: str) -> None:
        acknowledged = post_events(client, event_batch(50, system))
        with self._lock:
            self.events |= acknowledged

    def _send_spans(self, client: httpx.Client, system: str) -> None:
        body, keys = span_request(f"{system}-adapter", 100)
        acknowledged = post_spans(client, body, keys)
        with self._lock:
            self.spans |= acknowledged


@pytest.mark.slow
def test_kill_9_during_ingest_loses_nothing_acknowledged(tmp_path: Path) -> None:
    tower = TowerProcess(tmp_path / "data")
    tower.start()
    try:
        senders = Senders(tower)
        senders.start()
        wait_until(lambda: senders.requests >= 40, timeout=60)  # well into the ingest, with requests in flight
        tower.kill()
        senders.join()
        acknowledged_events, acknowledged_spans = set(senders.events), set(senders.spans)
        assert acknowledged_events and acknowledged_spans

        tower.start()  # the same data directory: recovery, then ingest again
        after = Senders(tower)
        after.start()
        wait_until(lambda: after.requests >= 8, timeout=60)
        after.join()
    finally:
        tower.stop()

    events, spans = stored_in(tower.settings.store.data_dir)
    assert acknowledged_events <= set(events)
    assert acknowledged_spans <= set(spans)
    assert after.events <= set(events)
    assert after.spans <= set(spans)
    assert len(events) == len(set(events))  # each event once


def test_an_unavailable_store_costs_nothing(tower: RunningTower, store: EmbeddedStore) -> None:
    assert tower.tower is not None
    pipeline = tower.tower.pipeline
    events = event_batch(30)
    body, keys = span_request("wms-adapter", 40)
    with tower.client("wms") as wms, offline(store):
        assert post_events(wms, events[:20]) == {e["id"] for e in events[:20]}
        assert post_events(wms, events[10:]) == {e["id"] for e in events[10:]}  # overlaps: 10 sent twice
        assert post_spans(wms, body, keys) == set(keys)
        assert post_spans(wms, body, keys) == set(keys)  # the exporter retried
        assert pipeline.store_down
        assert len(pipeline.spool.files()) == 4
        ready = httpx.get(tower.http_url + "/readyz")
        assert ready.status_code == 503
        assert ready.json()["spool"]["batches"] == 4

    wait_until(lambda: not pipeline.spool.files() and not pipeline.store_down)  # the drainer, by itself
    assert httpx.get(tower.http_url + "/readyz").status_code == 200
    assert count_events(store) == 30
    assert count_spans(store) == 40
    assert [e["id"] for e in events_for_key(store, events[0]["data"]["order_id"])] == [events[0]["id"]]

    with tower.client("wms") as wms:  # delivered again with the store up: still counted once
        assert post_events(wms, events) == {e["id"] for e in events}
        assert post_spans(wms, body, keys) == set(keys)
    assert count_events(store) == 30
    assert count_spans(store) == 40
    assert count_spans(store, service="wms-adapter") == 40
