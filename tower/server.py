"""Run the tower server process: HTTP (OTLP/HTTP, CloudEvents, API) and OTLP/gRPC."""

from __future__ import annotations

import logging

import uvicorn

from kernel.schema.retention import RetentionSettings, apply_retention
from kernel.settings import Settings
from tower.app import build_tower, create_app
from tower.bootstrap import load_or_create_tokens, tokens_file
from tower.roles import check_role, plan_for
from tower.telemetry import setup_telemetry


def banner(settings: Settings, role: str = "all") -> str:
    """The addresses this process serves (by its role, tower/roles.py) and where its tokens are."""
    c = settings.collector
    base = f"http://{c.host}:{c.http_port}"
    plan = plan_for(role)
    lines = [
        "Control tower" + ("" if role == "all" else f" ({role})"),
        f"  store      {settings.store.backend}"
        + (f" ({settings.store.data_dir / 'clickhouse'})" if settings.store.backend == "embedded" else ""),
    ]
    if plan.doors:
        lines += [
            f"  OTLP/HTTP  {base}/v1/traces  {base}/v1/logs",
            f"  OTLP/gRPC  {c.host}:{c.grpc_port}" if c.grpc_port else "  OTLP/gRPC  disabled",
            f"  events     {base}/v1/events",
        ]
    if plan.api:
        lines.append(f"  API        {base}/api  (OpenAPI: {base}/docs)")
    if plan.jobs and role != "all":
        lines.append(f"  jobs       scheduled here while this process holds the lease (health: {base}/readyz)")
    if role == "all" or settings.store.backend == "embedded":
        lines.append(f"  tokens     {tokens_file(settings)}")
    return "\n".join(lines)


def serve(settings: Settings, role: str = "all") -> None:
    """Start the tower in `role` (tower/roles.py; RoleError before anything opens when the configuration cannot
    run it) and block until Ctrl-C / SIGTERM."""
    plan = check_role(role, settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if role == "all":
        load_or_create_tokens(settings)
    tower = build_tower(settings, role=role)
    if plan.maintains_schema:
        apply_retention(tower.store, RetentionSettings())  # TOWER_RETENTION_*: TTLs, only where they differ
    app = create_app(tower)
    setup_telemetry(settings.telemetry, app)
    print(banner(settings, role), flush=True)
    uvicorn.run(
        app,
        host=settings.collector.host,
        port=settings.collector.http_port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
    )
