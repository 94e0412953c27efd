"""Ingest benchmark: end-to-end OTLP/HTTP spans/s against the limit measured in the same run.

    .venv/bin/python -m bench.ingest [--spans N] [--events N] [--senders N]

1. End to end: a `tower serve` subprocess on its own data directory (embedded store) receives
   pre-encoded OTLP/HTTP protobuf exports of 512 realistic spans (business keys, HTTP and
   messaging attributes, some errors and span events) from concurrent senders; the clock runs
   from the first request to the last acknowledgement.
2. The limit: the same payloads decoded with the protobuf library, converted by the door's own
   `trace_rows`, and inserted as ONE batch into an embedded store in this process's temp
   directory: the work any door must do, without HTTP, queueing or many inserts.
3. CloudEvents: batches of 500 structured events to POST /v1/events from the same senders.
4. The server's peak resident memory (VmHWM from /proc/<pid>/status).

Prints each figure and the ratio end-to-end / limit (target >= 0.5).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from bench.tower_process import ROOT, tower_process
from bench.workdir import temp_workdir

PROTOBUF = "application/x-protobuf"
CE_BATCH = "application/cloudevents-batch+json"
SYSTEMS = ("erp", "wms", "tms", "edi", "crm", "ecommerce", "middleware")

# (service, span names, attributes beyond the business keys) per integration
INTEGRATIONS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "erp": (("POST /orders/accept", "erp.order.price", "erp.invoice.post"), {"http.request.method": "POST"}),
    "wms": (("wms.pick.release", "wms.shipment.confirm", "GET /inventory"), {"messaging.system": "kafka"}),
    "tms": (("tms.tender", "tms.track"), {"http.request.method": "PUT"}),
    "edi": (("edi.856.send", "edi.850.receive"), {"edi.partner": "ACME-RETAIL"}),
    "middleware": (("mule.route.order", "mule.route.asn"), {"messaging.destination.name": "orders.v1"}),
}


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def span_payload(spans: int, rng: random.Random, start: datetime) -> bytes:
    """One OTLP/HTTP protobuf export of `spans` spans from one integration, as an SDK would batch them."""
    system = rng.choice(tuple(INTEGRATIONS))
    names, extra = INTEGRATIONS[system]
    resource = Resource(
        attributes=[
            _kv("service.name", f"{system}-adapter"),
            _kv("service.version", "4.2.1"),
            _kv("deployment.environment", "production"),
            _kv("host.name", f"{system}-node-{rng.randrange(4)}"),
            _kv("telemetry.sdk.language", "java"),
        ]
    )
    scope = ScopeSpans(scope=InstrumentationScope(name="io.opentelemetry.integration", version="2.9.0"))
    base = int(start.timestamp() * 1e9)
    trace_id = secrets.token_bytes(16)
    for i in range(spans):
        if i % 8 == 0:
            trace_id = secrets.token_bytes(16)
        order = rng.randrange(1, 200_000)
        attributes = [
            _kv("order.id", f"SO-{order}"),
            _kv("customer.id", f"C-{order % 5000}"),
            _kv("net.peer.name", f"{system}.internal"),
            _kv("code.function", "handle"),
            _kv("http.response.status_code", 200),
            *(_kv(k, v) for k, v in extra.items()),
        ]
        if rng.random() < 0.3:
            attributes.append(_kv("shipment_id", f"SH-{order}"))  # an alias the collector normalises
        error = rng.random() < 0.02
        began = base + i * 1_000_000 + rng.randrange(1_000_000)
        span = Span(
            trace_id=trace_id,
            span_id=secrets.token_bytes(8),
            parent_span_id=b"" if i % 8 == 0 else secrets.token_bytes(8),
            name=rng.choice(names),
            kind=Span.SPAN_KIND_SERVER if i % 8 == 0 else Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=began,
            end_time_unix_nano=began + rng.randrange(200_000, 80_000_000),
            attributes=attributes,
            status=Status(code=Status.STATUS_CODE_ERROR, message="timeout calling partner")
            if error
            else Status(code=Status.STATUS_CODE_UNSET),
        )
        if error:
            span.events.add(name="exception", time_unix_nano=began + 1000).attributes.append(
                _kv("exception.type", "java.net.SocketTimeoutException")
            )
        scope.spans.append(span)
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[scope])]
    ).SerializeToString()


def event_payload(events: int, system: str, rng: random.Random, start: datetime) -> bytes:
    """A CloudEvents batch of `events` shipment confirmations from `system`."""
    batch = []
    for _ in range(events):
        order = rng.randrange(1, 200_000)
        batch.append(
            {
                "specversion": "1.0",
                "id": secrets.token_hex(12),
                "source": system,
                "type": "shipment.confirmed",
                "time": (start + timedelta(seconds=rng.randrange(3600))).isoformat(),
                "subject": f"SH-{order}",
                "datacontenttype": "application/json",
                "data": {"order_id": f"SO-{order}", "shipment_id": f"SH-{order}", "quantity": 3, "warehouse": "DAL"},
            }
        )
    return orjson.dumps(batch)


# --- the tower under test -------------------------------------------------------------------


@dataclass
class Server:
    """A `tower serve` subprocess on its own data directory."""

    proc: subprocess.Popen[bytes]
    url: str
    tokens: dict[str, str]
    log: Path

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_memory_kib(self) -> int:
        """VmHWM (peak resident set) of the server process, in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0


@contextlib.contextmanager
def tower_server(data_dir: Path) -> Iterator[Server]:
    """Start `tower serve` (HTTP only) and stop it afterwards."""
    tokens = {system: f"bench-{system}-{secrets.token_hex(12)}" for system in SYSTEMS}
    with tower_process(data_dir, tokens, {f"bench-admin-{secrets.token_hex(12)}": "admin"}) as running:
        yield Server(running.proc, running.url, tokens, running.log)


def send_all(
    server: Server,
    path: str,
    content_type: str,
    payloads: list[tuple[str, bytes]],
    senders: int,
    check: Callable[[httpx.Response], None],
) -> float:
    """POST every (system, payload) from `senders` threads; returns seconds from first send to last answer."""
    queue = list(reversed(payloads))
    lock = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(senders + 1)

    def run() -> None:
        clients = {
            system: httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
            for system, token in server.tokens.items()
        }
        try:
            start.wait()
            while True:
                with lock:
                    if not queue or errors:
                        return
                    system, body = queue.pop()
                answer = clients[system].post(path, content=body, headers={"Content-Type": content_type})
                if answer.status_code == 503:  # back-pressure: honour Retry-After, send it again
                    time.sleep(float(answer.headers.get("Retry-After", "1")))
                    with lock:
                        queue.append((system, body))
                    continue
                check(answer)
        except BaseException as exc:  # reported after the run
            with lock:
                errors.append(exc)
        finally:
            for client in clients.values():
                client.close()

    threads = [threading.Thread(target=run) for _ in range(senders)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"a sender failed: {errors[0]!r}") from errors[0]
    return elapsed


def _check_spans(answer: httpx.Response) -> None:
    if answer.status_code != 200:
        raise RuntimeError(f"/v1/traces answered {answer.status_code}: {answer.text[:500]}")
    reply = ExportTraceServiceResponse.FromString(answer.content)
    if reply.partial_success.rejected_spans:
        raise RuntimeError(f"spans rejected: {reply.partial_success.error_message}")


def _check_events(answer: httpx.Response) -> None:
    if answer.status_code != 200 or answer.json()["rejected"]:
        raise RuntimeError(f"/v1/events answered {answer.status_code}: {answer.text[:500]}")


def stored_spans(data_dir: Path) -> int:
    """Distinct spans in a stopped tower's store (read in a subprocess: one chDB directory per process)."""
    script = (
        "import sys; from pathlib import Path; from kernel.store.embedded import EmbeddedStore; from kernel.queries"
        " import count_spans; print(count_spans(EmbeddedStore(Path(sys.argv[1]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(data_dir / "clickhouse")], cwd=ROOT, capture_output=True, check=True
    )
    return int(out.stdout)


# --- the limit ------------------------------------------------------------------------------


@dataclass
class Limit:
    """Where the limit run's time went."""

    rows: int
    decode: float
    convert: float
    insert: float

    @property
    def seconds(self) -> float:
        """The whole run: decode + convert + insert."""
        return self.decode + self.convert + self.insert


def measure_limit(payloads: list[bytes], workdir: Path) -> Limit:
    """Decode (protobuf) + trace_rows + ONE insert of every row into a fresh embedded store."""
    from collector.otlp.convert import trace_rows
    from kernel.schema.migrations import migrate
    from kernel.settings import CollectorSettings
    from kernel.store.embedded import EmbeddedStore

    store = EmbeddedStore(workdir / "limit-store")
    migrate(store)
    aliases = CollectorSettings().key_aliases
    try:
        began = time.perf_counter()
        requests = [ExportTraceServiceRequest.FromString(body) for body in payloads]
        decoded = time.perf_counter()
        rows: list[dict[str, Any]] = []
        for request in requests:
            converted, refused = trace_rows(request, "wms", aliases)
            if refused:
                raise RuntimeError(f"the limit run refused spans: {refused[0].reason}")
            rows.extend(converted)
        converted_at = time.perf_counter()
        store.insert("otel_traces", rows)
        inserted = time.perf_counter()
        stored = int(store.query("SELECT count() AS n FROM otel_traces")[0]["n"])
    finally:
        store.close()
    if stored != len(rows):
        raise RuntimeError(f"the limit run stored {stored} of {len(rows)} rows")
    return Limit(len(rows), decoded - began, converted_at - decoded, inserted - converted_at)


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=204_800, help="spans to send (rounded up to whole batches)")
    parser.add_argument("--batch", type=int, default=512, help="spans per OTLP export")
    parser.add_argument("--events", type=int, default=100_000, help="CloudEvents to send (0 to skip)")
    parser.add_argument("--event-batch", type=int, default=500, help="events per CloudEvents batch")
    parser.add_argument("--senders", type=int, default=4, help="concurrent sender threads")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (and the server log)")
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    start = datetime.now(UTC) - timedelta(hours=1)
    batches = -(-args.spans // args.batch)
    print(f"encoding {batches} OTLP exports of {args.batch} spans ...", flush=True)
    span_bodies = [span_payload(args.batch, rng, start) for _ in range(batches)]
    spans = batches * args.batch
    event_batches = -(-args.events // args.event_batch) if args.events else 0
    systems = ("erp", "wms", "tms", "edi")
    event_bodies = [
        (systems[i % len(systems)], event_payload(args.event_batch, systems[i % len(systems)], rng, start))
        for i in range(event_batches)
    ]
    megabytes = sum(len(b) for b in span_bodies) / 1e6

    with temp_workdir("tower-bench-", args.keep) as workdir:
        data_dir = workdir / "tower"
        with tower_server(data_dir) as server:
            systems_cycle = [("wms", body) for body in span_bodies]
            cpu_before = server.cpu_seconds()
            span_seconds = send_all(server, "/v1/traces", PROTOBUF, systems_cycle, args.senders, _check_spans)
            span_cpu = server.cpu_seconds() - cpu_before
            event_seconds = (
                send_all(server, "/v1/events", CE_BATCH, event_bodies, args.senders, _check_events)
                if event_bodies
                else 0.0
            )
            peak_kib = server.peak_memory_kib()
        stored = stored_spans(data_dir)
        limit_run = measure_limit(span_bodies, workdir)

    e2e = spans / span_seconds
    limit = limit_run.rows / limit_run.seconds
    print(f"payload: {spans:,} spans in {batches} exports, {megabytes:.1f} MB of protobuf")
    print(
        f"end-to-end OTLP/HTTP protobuf, {args.batch}-span batches, {args.senders} senders:"
        f" {spans:,} spans in {span_seconds:.2f} s = {e2e:,.0f} spans/s (stored: {stored:,})"
    )
    print(
        f"  server CPU {span_cpu:.2f} s = {span_cpu / span_seconds:.2f} cores busy,"
        f" {span_cpu / spans * 1e6:.1f} µs per span ({os.cpu_count()} cores on this machine)"
    )
    print(
        f"limit (protobuf decode + trace_rows + one insert, no HTTP): {limit_run.rows:,} spans in"
        f" {limit_run.seconds:.2f} s = {limit:,.0f} spans/s"
    )
    print(
        f"  decode {limit_run.decode:.2f} s, trace_rows {limit_run.convert:.2f} s, one insert {limit_run.insert:.2f} s"
        f" ({limit_run.seconds / limit_run.rows * 1e6:.1f} µs per span in one thread)"
    )
    print(f"ratio end-to-end / limit: {e2e / limit:.2f} (target >= 0.5)")
    if event_bodies:
        events = event_batches * args.event_batch
        print(
            f"CloudEvents batch mode, {args.event_batch} events a batch, {args.senders} senders:"
            f" {events:,} events in {event_seconds:.2f} s = {events / event_seconds:,.0f} events/s"
        )
    print(f"server peak memory (VmHWM): {peak_kib / 1024:,.0f} MiB")
    if stored != spans:
        print(f"ERROR: {spans - stored:,} acknowledged spans are missing from the store")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
