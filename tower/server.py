"""Run the tower server process: HTTP (OTLP/HTTP, CloudEvents, API) and OTLP/gRPC."""

from __future__ import annotations

import logging

import uvicorn

from kernel.settings import Settings
from tower.app import build_tower, create_app
from tower.bootstrap import load_or_create_tokens, tokens_file
from tower.telemetry import setup_telemetry


def banner(settings: Settings) -> str:
    c = settings.collector
    base = f"http://{c.host}:{c.http_port}"
    lines = [
        "Control tower",
        f"  store      {settings.store.backend}"
        + (f" ({settings.store.data_dir / 'clickhouse'})" if settings.store.backend == "embedded" else ""),
        f"  OTLP/HTTP  {base}/v1/traces  {base}/v1/logs",
        f"  OTLP/gRPC  {c.host}:{c.grpc_port}" if c.grpc_port else "  OTLP/gRPC  disabled",
        f"  events     {base}/v1/events",
        f"  API        {base}/api  (OpenAPI: {base}/docs)",
        f"  tokens     {tokens_file(settings)}",
    ]
    return "\n".join(lines)


def serve(settings: Settings) -> None:
    """Start the tower and block until Ctrl-C / SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    load_or_create_tokens(settings)
    tower = build_tower(settings)
    app = create_app(tower)
    setup_telemetry(settings.telemetry, app)
    print(banner(settings), flush=True)
    uvicorn.run(
        app,
        host=settings.collector.host,
        port=settings.collector.http_port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
