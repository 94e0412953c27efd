"""Self-observability: the tower traces its own HTTP app and jobs with the OpenTelemetry SDK.

Off by default (`TOWER_TELEMETRY_EXPORTER=none`). `console` prints spans to stdout; `otlp`
sends them over OTLP/HTTP to `TOWER_TELEMETRY_ENDPOINT`, with the headers the SDK reads from
`OTEL_EXPORTER_OTLP_TRACES_HEADERS` or `OTEL_EXPORTER_OTLP_HEADERS` (e.g.
`Authorization=Bearer%20<token>` to send them to a tower, this one included). The SDK's
other `OTEL_*` variables (batch delay, timeout, compression) apply as usual.

Every HTTP request but the health probes gets a server span. Jobs (rule evaluation,
reconcilers, the spool drain) use `job_span(name)`; library code in the feature packages
uses the OpenTelemetry API's global tracer, which this module installs.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from kernel.settings import TelemetrySettings

EXCLUDED_URLS = "healthz,readyz"
TRACER_NAME = "control-tower"

_provider: TracerProvider | None = None


def build_exporter(settings: TelemetrySettings) -> SpanExporter | None:
    """The exporter the settings name; None for `none`."""
    if settings.exporter == "none":
        return None
    if settings.exporter == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.endpoint)  # headers: OTEL_EXPORTER_OTLP_(TRACES_)HEADERS


def setup_telemetry(
    settings: TelemetrySettings,
    app: FastAPI | None = None,
    exporter: SpanExporter | None = None,
    install_global: bool = True,
) -> TracerProvider | None:
    """Trace the app (if given) and the jobs; returns the provider, or None when the exporter is `none`.

    `exporter` replaces the one the settings name (tests pass an in-memory exporter); it is
    ignored when telemetry is off. `install_global=False` keeps the process-wide provider
    untouched (the OpenTelemetry API lets it be set only once per process).
    """
    global _provider
    if settings.exporter == "none":
        return None
    exporter = exporter or build_exporter(settings)
    if exporter is None:
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name, "service.version": package_version()})
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if install_global:
        trace.set_tracer_provider(provider)
        atexit.register(provider.shutdown)  # flush what is buffered when the server exits
    _provider = provider
    if app is not None:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=EXCLUDED_URLS)
    return provider


def shutdown_telemetry() -> None:
    """Flush and stop the provider `setup_telemetry` made; jobs' spans are no-ops again."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def tracer() -> trace.Tracer:
    """The tracer jobs use for their own spans (a no-op until telemetry is set up)."""
    if _provider is not None:
        return _provider.get_tracer(TRACER_NAME)
    return trace.get_tracer(TRACER_NAME)


@contextmanager
def job_span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span around one run of a job (`sla.evaluate`, `reconcile.inventory`, ...); errors are recorded."""
    with tracer().start_as_current_span(name, attributes=attributes or None) as span:
        yield span


def package_version() -> str:
    """The installed version of the tower's package ("unknown" when run from a tree that is not installed)."""
    try:
        return version("distribution-control-tower")
    except PackageNotFoundError:
        return "unknown"
