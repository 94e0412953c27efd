"""Delivery of the demo over the tower's real doors.

Spans go through the OpenTelemetry SDK: one TracerProvider per simulated service (resource `service.name`)
with a BatchSpanProcessor and the OTLP/HTTP protobuf exporter (gzip), carrying the source's ingest token.
The spans keep the scenario's ids and times: a planned-id generator hands the SDK the ids the scenario
chose, and every span is started and ended at its simulated timestamps. Business events of the WMS go as
OTLP log records with an EventName (LoggerProvider + OTLP log exporter); the other systems post CloudEvents
with httpx: batch mode, NDJSON for inventory snapshots, structured mode for redeliveries.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
import orjson
from opentelemetry import trace
from opentelemetry._logs import Logger, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import Logger as SdkLogger
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from collector.demo.scenario import LOG_SYSTEMS, SERVICES, WAREHOUSES, Delivery, DemoEvent, DemoSpan, LiveFeed
from kernel.clock import Clock

EVENTS_PATH = "/v1/events"
BATCH = "application/cloudevents-batch+json"
STRUCTURED = "application/cloudevents+json"
NDJSON = "application/x-ndjson"

_KINDS = {
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "internal": SpanKind.INTERNAL,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_QUEUE = 1 << 16  # spans/log records buffered by the SDK before the sender flushes


class DeliveryError(Exception):
    """The tower cannot take the demo's data (unreachable, or it refuses the token)."""


def unix_nanos(value: datetime) -> int:
    """Nanoseconds since the epoch, exactly (no float rounding)."""
    return (value - _EPOCH) // timedelta(microseconds=1) * 1000


def event_name_supported() -> bool:
    """Whether the installed SDK's Logger.emit takes `event_name` (else the `event.name` attribute is used)."""
    return "event_name" in inspect.signature(SdkLogger.emit).parameters


@dataclass
class SendStats:
    """What the tower acknowledged, per kind of record."""

    events: Counter[str] = field(default_factory=Counter)
    events_rejected: int = 0
    rejections: list[str] = field(default_factory=list)
    spans_exported: int = 0
    spans_failed: int = 0
    logs_exported: int = 0
    logs_failed: int = 0
    requests: int = 0
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        """Add to counters (thread-safe: SDK exporters report from their own threads)."""
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    @property
    def failed(self) -> int:
        """Records the tower did not take."""
        return self.events_rejected + self.spans_failed + self.logs_failed


class PlannedIds(IdGenerator):
    """Gives the SDK the trace and span id the scenario planned for the span being started."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_span_id(self) -> int:
        return self.span_id

    def generate_trace_id(self) -> int:
        return self.trace_id

    def is_trace_id_random(self) -> bool:
        return False


class _CountingSpanExporter(SpanExporter):
    """Delegates to the OTLP exporter and counts what it exported."""

    def __init__(self, inner: SpanExporter, stats: SendStats) -> None:
        self.inner = inner
        self.stats = stats

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.stats.add(spans_exported=len(spans), requests=1)
        else:
            self.stats.add(spans_failed=len(spans), requests=1)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _CountingLogExporter(LogRecordExporter):
    """Delegates to the OTLP log exporter and counts what it exported."""

    def __init__(self, inner: LogRecordExporter, stats: SendStats) -> None:
        self.inner = inner
        self.stats = stats

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        result = self.inner.export(batch)
        if result is LogRecordExportResult.SUCCESS:
            self.stats.add(logs_exported=len(batch), requests=1)
        else:
            self.stats.add(logs_failed=len(batch), requests=1)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


@dataclass
class _Service:
    provider: TracerProvider
    tracer: trace.Tracer
    ids: PlannedIds


class DemoSender:
    """Sends deliveries to a tower at `url`; `tokens` maps each source system to its ingest token."""

    def __init__(
        self,
        url: str,
        tokens: Mapping[str, str],
        *,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 30.0,
        batch_size: int = 500,
        max_attempts: int = 8,
    ) -> None:
        missing = sorted({*SERVICES.values(), *(w.source.split("/")[0] for w in WAREHOUSES)} - set(tokens))
        if missing:
            raise DeliveryError(f"no ingest token for {', '.join(missing)}")
        self.url = url.rstrip("/")
        self.tokens = dict(tokens)
        self.sleep = sleep
        self.timeout = timeout
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.stats = SendStats()
        self._services: dict[str, _Service] = {}
        self._loggers: dict[str, tuple[LoggerProvider, Logger]] = {}
        self._clients: dict[str, httpx.Client] = {}
        self._queued = 0
        self._event_name = event_name_supported()

    # spans -----------------------------------------------------------------------------------------
    def _service(self, name: str) -> _Service:
        found = self._services.get(name)
        if found is None:
            system = SERVICES[name]
            exporter = OTLPSpanExporter(
                endpoint=f"{self.url}/v1/traces",
                headers={"Authorization": f"Bearer {self.tokens[system]}"},
                timeout=self.timeout,
                compression=Compression.Gzip,
            )
            ids = PlannedIds()
            provider = TracerProvider(
                sampler=ALWAYS_ON,
                resource=Resource.create(
                    {
                        "service.name": name,
                        "service.namespace": "acme-distribution",
                        "service.version": "2.4.1",
                        "deployment.environment.name": "demo",
                    }
                ),
                id_generator=ids,
                shutdown_on_exit=False,
            )
            provider.add_span_processor(
                BatchSpanProcessor(
                    _CountingSpanExporter(exporter, self.stats),
                    max_queue_size=_QUEUE,
                    max_export_batch_size=512,
                    schedule_delay_millis=200,
                )
            )
            found = _Service(provider, provider.get_tracer("tower-demo", "1.0"), ids)
            self._services[name] = found
        return found

    def emit_span(self, span: DemoSpan) -> None:
        """Start and end one span through the SDK with the scenario's ids and times."""
        service = self._service(span.service)
        trace_id = int(span.trace_id, 16)
        service.ids.trace_id, service.ids.span_id = trace_id, int(span.span_id, 16)
        context = Context()
        if span.parent_span_id:
            parent = SpanContext(
                trace_id, int(span.parent_span_id, 16), is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
            )
            context = trace.set_span_in_context(NonRecordingSpan(parent), context)
        started = service.tracer.start_span(
            span.name,
            context=context,
            kind=_KINDS[span.kind],
            attributes=dict(span.attributes),
            start_time=unix_nanos(span.start),
        )
        if span.error:
            started.set_status(Status(StatusCode.ERROR, span.error))
        started.end(end_time=unix_nanos(span.end))
        self._queued += 1

    # events as OTLP log records --------------------------------------------------------------------
    def _logger(self, source: str) -> Logger:
        found = self._loggers.get(source)
        if found is None:
            system, _, site = source.partition("/")
            exporter = OTLPLogExporter(
                endpoint=f"{self.url}/v1/logs",
                headers={"Authorization": f"Bearer {self.tokens[system]}"},
                timeout=self.timeout,
                compression=Compression.Gzip,
            )
            attributes = {"service.name": f"{system}-connector", "service.namespace": "acme-distribution"}
            if site:
                attributes["service.instance.id"] = f"{system}-connector-{site}"
            provider = LoggerProvider(resource=Resource.create(attributes), shutdown_on_exit=False)
            provider.add_log_record_processor(
                BatchLogRecordProcessor(
                    _CountingLogExporter(exporter, self.stats),
                    max_queue_size=_QUEUE,
                    max_export_batch_size=512,
                    schedule_delay_millis=200,
                )
            )
            found = (provider, provider.get_logger("tower-demo", "1.0"))
            self._loggers[source] = found
        return found[1]

    def emit_log_event(self, event: DemoEvent) -> None:
        """One business event as an OTLP log record: EventName = type, body = data, CloudEvents attributes."""
        context = Context()
        if event.trace_id:
            parent = SpanContext(
                int(event.trace_id, 16),
                int(event.span_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
            context = trace.set_span_in_context(NonRecordingSpan(parent), context)
        attributes: dict[str, str] = {
            "cloudevents.event_id": event.id,
            "cloudevents.event_source": event.source,
            "cloudevents.event_spec_version": "1.0",
            "cloudevents.event_type": event.type,
            "cloudevents.event_subject": event.subject,
        }
        record: dict[str, Any] = {
            "timestamp": unix_nanos(event.time),
            "context": context,
            "severity_number": SeverityNumber.INFO,
            "severity_text": "INFO",
            "body": event.data,
            "attributes": attributes,
        }
        if self._event_name:
            record["event_name"] = event.type
        else:
            attributes["event.name"] = event.type
        self._logger(event.source).emit(**record)
        self._queued += 1

    # events as CloudEvents -------------------------------------------------------------------------
    def _client(self, system: str) -> httpx.Client:
        found = self._clients.get(system)
        if found is None:
            found = httpx.Client(
                base_url=self.url,
                headers={"Authorization": f"Bearer {self.tokens[system]}"},
                timeout=self.timeout,
            )
            self._clients[system] = found
        return found

    def post_events(self, events: Sequence[DemoEvent], mode: str) -> None:
        """POST events of one system in `mode` (batch, structured or NDJSON), retrying on 429/503."""
        if not events:
            return
        system = events[0].system
        if mode == STRUCTURED:
            for event in events:
                self._post(system, STRUCTURED, orjson.dumps(event.cloudevent()), [event])
            return
        for start in range(0, len(events), self.batch_size):
            chunk = events[start : start + self.batch_size]
            if mode == NDJSON:
                body = b"\n".join(orjson.dumps(e.cloudevent()) for e in chunk) + b"\n"
            else:
                body = orjson.dumps([e.cloudevent() for e in chunk])
            self._post(system, mode, body, chunk)

    def _post(self, system: str, content_type: str, body: bytes, events: Sequence[DemoEvent]) -> None:
        client = self._client(system)
        delay = 0.5
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = client.post(EVENTS_PATH, content=body, headers={"Content-Type": content_type})
            except httpx.TransportError as error:
                if attempt == self.max_attempts:
                    raise DeliveryError(f"cannot reach the tower at {self.url}: {error}") from error
                self.stats.add(retries=1)
                self.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self.stats.add(requests=1)
            if response.status_code in (429, 502, 503, 504) and attempt < self.max_attempts:
                self.stats.add(retries=1)
                self.sleep(_retry_after(response, delay))
                delay = min(delay * 2, 10.0)
                continue
            if response.status_code in (401, 403):
                raise DeliveryError(f"the tower refused the {system} token ({response.status_code}): {response.text}")
            self._account(response, events)
            return

    def _account(self, response: httpx.Response, events: Sequence[DemoEvent]) -> None:
        """Count what a CloudEvents answer accepted; the door names refused records in `rejected`."""
        reasons: dict[str, str] = {}
        if response.is_success:
            try:
                answer = response.json()
            except ValueError:
                answer = {}
            refused = answer.get("rejected", []) if isinstance(answer, dict) else []
            for index, item in enumerate(refused if isinstance(refused, list) else []):
                item = item if isinstance(item, dict) else {}
                ident = item.get("id") or (events[item["index"]].id if isinstance(item.get("index"), int) else index)
                reasons[str(ident)] = str(item.get("errors", item))
        else:
            reasons = {e.id: f"HTTP {response.status_code}: {response.text[:300]}" for e in events}
        with self.stats.lock:
            self.stats.events.update(e.type for e in events if e.id not in reasons)
            self.stats.events_rejected += len(reasons)
            room = max(0, 20 - len(self.stats.rejections))
            self.stats.rejections.extend(f"{ident}: {why}" for ident, why in list(reasons.items())[:room])

    # deliveries ------------------------------------------------------------------------------------
    def send(self, delivery: Delivery) -> None:
        """Send one delivery. CloudEvents are acknowledged before this returns; spans and log records are
        exported in the background (log records flushed before returning when the delivery carries a note)."""
        for span in delivery.spans:
            self.emit_span(span)
        groups: dict[tuple[str, str], list[DemoEvent]] = defaultdict(list)
        for event in delivery.events:
            if event.system in LOG_SYSTEMS:
                mode = "otlp-logs"
            elif delivery.note == "duplicate":
                mode = STRUCTURED
            elif event.type == "inventory.snapshot":
                mode = NDJSON
            else:
                mode = BATCH
            groups[(event.system, mode)].append(event)
        for (_, mode), events in groups.items():
            if mode == "otlp-logs":
                for event in events:
                    self.emit_log_event(event)
            else:
                self.post_events(events, mode)
        if delivery.note:
            self._flush_logs()  # a redelivery or an end-before-start must be out before the next delivery
        if self._queued > _QUEUE // 2:
            self.flush()

    def send_all(self, deliveries: Iterable[Delivery], progress: Callable[[Delivery], None] | None = None) -> None:
        """Send deliveries in order, then flush every exporter."""
        for delivery in deliveries:
            self.send(delivery)
            if progress is not None:
                progress(delivery)
        self.flush()

    def _flush_logs(self) -> None:
        for provider, _ in self._loggers.values():
            provider.force_flush(int(self.timeout * 1000))

    def flush(self) -> None:
        """Export everything the SDK still buffers."""
        for service in self._services.values():
            service.provider.force_flush(int(self.timeout * 1000))
        self._flush_logs()
        self._queued = 0

    def close(self) -> None:
        """Flush and shut down exporters and HTTP clients."""
        self.flush()
        for service in self._services.values():
            service.provider.shutdown()
        for provider, _ in self._loggers.values():
            provider.shutdown()
        for client in self._clients.values():
            client.close()
        self._services.clear()
        self._loggers.clear()
        self._clients.clear()


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", default)), 0.1), 30.0)
    except ValueError:
        return default


class Sink(Protocol):
    """Where live deliveries go (a DemoSender, or a test's recorder)."""

    def send(self, delivery: Delivery) -> None: ...

    def flush(self) -> None: ...


def run_live(
    feed: LiveFeed,
    sender: Sink,
    clock: Clock,
    *,
    sleep: Callable[[float], None] = time.sleep,
    until: datetime | None = None,
    tick_seconds: float = 2.0,
    progress: Callable[[Delivery], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Keep the world going: every tick, send what became due by the clock's now (until `until`, if given)."""
    try:
        while not stop():
            now = clock.now()
            target = now if until is None else min(now, until)
            delivery = feed.advance(target)
            if delivery is not None:
                sender.send(delivery)
                if progress is not None:
                    progress(delivery)
            if until is not None and target >= until:
                break
            sleep(tick_seconds)
    finally:
        sender.flush()
