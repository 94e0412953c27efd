"""Self-observability: the tower traces its own HTTP app and jobs with the OpenTelemetry SDK."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from kernel.settings import TelemetrySettings


def setup_telemetry(settings: TelemetrySettings, app: FastAPI | None = None) -> TracerProvider | None:
    """Install a tracer provider and instrument the app; does nothing when the exporter is `none`."""
    if settings.exporter == "none":
        return None
    exporter: SpanExporter
    if settings.exporter == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.endpoint)
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if app is not None:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls="healthz,readyz")
    return provider


def tracer() -> trace.Tracer:
    """The tracer jobs use for their own spans (a no-op until telemetry is set up)."""
    return trace.get_tracer("control-tower")
