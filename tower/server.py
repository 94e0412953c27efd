"""Run the tower server process: HTTP (OTLP/HTTP, CloudEvents, API) and OTLP/gRPC, and, in role `all`, the
dashboard beside it.

`tower serve` (role `all`) starts the dashboard (Streamlit) as a child process once the server is up
(TOWER_DASHBOARD_ENABLED, `--no-dashboard`); `--demo` adds a local Slack stand-in and `tower demo --live`
(tower/demo_mode.py). Ctrl-C or SIGTERM stops the children first (tower/children.py), then the server
shuts down gracefully (running jobs finish, queued rows are written, the store closes), and the process
exits 0.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn
from pydantic_settings import BaseSettings

from alerting.settings import SlackSettings
from kernel.jobs import JobSettings, SchedulerSettings
from kernel.schema.retention import RetentionSettings, apply_retention
from kernel.settings import Settings, loaded_settings_models, unknown_variables
from kernel.settings import check_settings as check_all
from tower.app import Tower, build_tower, create_app
from tower.bootstrap import admin_token, load_or_create_tokens, owner_only, tokens_file
from tower.children import Child, Children, env_with, is_loopback, loopback
from tower.dashboard_process import APP, DashboardProcessSettings, dashboard_settings_problems, streamlit_command
from tower.demo_mode import (
    DEMO_JOBS,
    LocalSlack,
    apply_defaults,
    demo_command,
    demo_environment,
    manifest_file,
    ready_file,
    start_local_slack,
)
from tower.roles import RoleError, check_role, plan_for
from tower.telemetry import setup_telemetry

log = logging.getLogger(__name__)

READY_WITHIN_SECONDS = 180.0  # the longest `--demo` holds the jobs back for the demo's backfill
Line = tuple[str, str]  # (label, text) of a banner line


def banner(
    settings: Settings,
    role: str = "all",
    services: Sequence[Line] = (),
    admin: str | None = None,
    generated: bool | None = None,
) -> str:
    """The addresses this process serves (by its role, tower/roles.py), the processes it runs beside it
    (`services`: the dashboard, Slack, the demo) and where its tokens are (with `admin`, the admin token;
    `generated`: whether some were generated into the data directory, by default unless both kinds are set)."""
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
    lines += [f"  {label:<10} {text}" for label, text in services]
    if generated is None:
        generated = not (settings.ingest.tokens and settings.api.tokens)
    if not generated:
        lines.append("  tokens     configured (TOWER_INGEST_TOKENS, TOWER_API_TOKENS)")
    elif role == "all" or settings.store.backend == "embedded":
        lines.append(f"  tokens     {tokens_file(settings)}")
    if admin:
        lines.append(f"  admin      {admin}  (API token: sign in to the dashboard, call the API)")
    return "\n".join(lines)


def slack_line(local: LocalSlack | None) -> Line:
    """Where alerts go: the local stand-in, the configured workspace, or nowhere yet (they wait in the outbox)."""
    if local is not None:
        url = local.standin.url
        return ("Slack", f"local stand-in {url}  (messages: {url}/_standin/messages, and the dashboard's Slack page)")
    mode = SlackSettings().mode
    if mode == "off":
        return ("Slack", "not configured: alerts wait in the outbox (TOWER_SLACK_BOT_TOKEN; --demo: a local stand-in)")
    return ("Slack", f"{'Web API (bot token)' if mode == 'bot' else 'incoming webhook'} (TOWER_SLACK_*)")


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on (host, port) now."""
    return bind_problem(host, port) is None


def bind_problem(host: str, port: int) -> OSError | None:
    """Why a server could not listen on (host, port) now, or None."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:  # socket.gaierror (a name that does not resolve) is one too
            return exc
    return None


class StartupError(RuntimeError):
    """The tower cannot start as configured (its ports are in use, its data directory unusable); the message says
    what to change."""


def port_problems(settings: Settings, role: str) -> list[str]:
    """What stops this process from listening where its settings say, each naming the setting that moves it:
    checked before anything opens (the store, its migrations, the jobs), so a second tower stops with one line."""
    c = settings.collector
    http = "--port, TOWER_COLLECTOR_HTTP_PORT"
    if c.http_port == 0:
        return [f"the HTTP port is 0 ({http}): OTLP/HTTP senders, the CLI and the dashboard need a port they can find"]
    wanted = [(c.http_port, f"HTTP: {http}")]
    if plan_for(role).doors and c.grpc_port:
        if c.grpc_port == c.http_port:
            return [
                f"HTTP and OTLP/gRPC both on port {c.http_port} ({http}; --grpc-port, TOWER_COLLECTOR_GRPC_PORT, "
                "0 disables gRPC): give each its own"
            ]
        wanted.append((c.grpc_port, "OTLP/gRPC: --grpc-port, TOWER_COLLECTOR_GRPC_PORT; 0 disables it"))
    problems = []
    for port, what in wanted:
        problem = bind_problem(c.host, port)
        if isinstance(problem, socket.gaierror) or problem is not None and problem.errno == errno.EADDRNOTAVAIL:
            return [f"cannot listen on {c.host!r} (--host, TOWER_COLLECTOR_HOST): {problem.strerror or problem}"]
        if problem is not None:
            problems.append(f"{c.host}:{port} is in use by another process (another tower?) ({what})")
    return problems


# Read by the CLI's commands (tower/client.py), not by the server; the dashboard's own (TOWER_DASHBOARD_*) are
# checked by the dashboard, which this process never imports; TOWER_TEST_* configure the test suite.
CLIENT_VARIABLES = {"TOWER_URL", "TOWER_TOKEN", "TOWER_INGEST_TOKEN", "TOWER_TIMEOUT"}
OTHER_PREFIXES = ("TOWER_DASHBOARD_", "TOWER_TEST_")


def misspelt_variables(tower: Tower) -> list[str]:
    """TOWER_* variables that no setting of this tower reads (a typo leaves the default in force, silently)."""
    models = [*loaded_settings_models().values(), *(job.settings_model for job in tower.jobs)]
    environ = {k: v for k, v in os.environ.items() if not k.startswith(OTHER_PREFIXES)}
    return unknown_variables(environ, models, CLIENT_VARIABLES)


# The variables of a job whose settings model is made when it is registered (job_settings: alerts-dispatch, the
# replay jobs), its prefix first.
_JOB_VARIABLE = re.compile(r"(TOWER_JOB_\w+?_)(ENABLED|INTERVAL_SECONDS)")


def check_settings() -> None:
    """Read every settings model of the tower from the environment now (InvalidSettings naming every refused
    value): before a command creates or opens anything (the data directory, tokens, the store and its schema),
    not when the model is first used: this module imports tower.app, which imports every module whose settings the
    tower reads. The dashboard's own (TOWER_DASHBOARD_*) are the dashboard's to check."""
    from tower.docs_config import PACKAGES

    models = [
        model
        for model in loaded_settings_models().values()
        if (prefix := str(model.model_config.get("env_prefix") or "").upper())
        and not prefix.startswith(OTHER_PREFIXES)
        and model.__module__.split(".")[0] in PACKAGES
    ]
    read = {str(model.model_config.get("env_prefix")).upper() for model in models}
    jobs: dict[str, type[BaseSettings]] = {}
    for variable in os.environ:
        found = _JOB_VARIABLE.fullmatch(variable)
        if found and found.group(1) not in read:
            jobs[found.group(1)] = JobSettings
    check_all(models, jobs)


def data_dir_problem(data_dir: Path) -> str | None:
    """Why the data directory (store, spool, generated tokens) cannot be used, or None: it is created if missing."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot use the data directory {data_dir}: {exc.strerror or exc} (--data-dir, TOWER_STORE_DATA_DIR)"
    if not os.access(data_dir, os.W_OK | os.X_OK):
        return f"the data directory {data_dir} is not writable (--data-dir, TOWER_STORE_DATA_DIR)"
    return None


def dashboard_child(settings: Settings, ui: DashboardProcessSettings, api_url: str, token: str | None) -> Child:
    """The dashboard against this tower's API (signed in with `token` unless TOWER_DASHBOARD_TOKEN is set), its
    output in `<data dir>/dashboard.log`, its visits remembered in `<data dir>/dashboard` (unless
    TOWER_DASHBOARD_STATE_DIR says where)."""
    env = {"TOWER_DASHBOARD_API_URL": api_url}
    if "TOWER_DASHBOARD_STATE_DIR" not in os.environ:
        env["TOWER_DASHBOARD_STATE_DIR"] = str(settings.store.data_dir / "dashboard")
    if token and "TOWER_DASHBOARD_TOKEN" not in os.environ:
        env["TOWER_DASHBOARD_TOKEN"] = token
    command = streamlit_command(APP, ui.host, ui.port)
    return Child("dashboard", command, env_with(env), settings.store.data_dir / "dashboard.log", restart=True)


class _Server(uvicorn.Server):
    """uvicorn's server, stopping the children before its own graceful shutdown."""

    def __init__(self, config: uvicorn.Config, children: Children) -> None:
        super().__init__(config)
        self.children = children

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await asyncio.to_thread(self.children.stop_all)
        await super().shutdown(sockets)


class _Stopped(Exception):
    """Ctrl-C or SIGTERM, raised once the server finished its graceful shutdown."""


@dataclass(frozen=True)
class _Held:
    """Jobs held back until the demo's backfill is sent: `release` starts them once `ready` exists (or the demo
    exited, or READY_WITHIN_SECONDS passed)."""

    demo: Child
    ready: Path
    release: Callable[[], None]


def _start_when_up(server: _Server, children: Children, pending: Sequence[Child], held: _Held | None) -> None:
    """Start the children once the server answers (not at all when it stops first), then release held jobs
    unless the server is stopping by then."""
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    for child in pending:
        if not children.start(child):
            return
    if held is None:
        return
    deadline = time.monotonic() + READY_WITHIN_SECONDS
    while not held.ready.exists():
        if not held.demo.running or time.monotonic() > deadline:
            log.warning("the demo's backfill did not finish (see %s); starting the jobs anyway", held.demo.log_path)
            break
        time.sleep(0.1)
    children.unless_closed(held.release)


def _run(server: _Server) -> None:
    """Run the server until Ctrl-C / SIGTERM; the signal ends it gracefully and returns normally. A failed start
    exits 3 (uvicorn), after the tower stopped what it had started."""
    if threading.current_thread() is not threading.main_thread():
        server.run()
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stopped(signal.Signals(signum).name)

    # uvicorn handles both signals while it serves and raises them again once it has shut down.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    except _Stopped as stopped:
        log.info("stopped (%s)", stopped)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(settings: Settings, role: str = "all", *, dashboard: bool | None = None, demo: bool = False) -> None:
    """Start the tower in `role` (tower/roles.py; before anything opens, RoleError when the configuration cannot
    run it, StartupError when its ports are taken or its data directory is unusable) and block until Ctrl-C /
    SIGTERM. Role `all` also runs the dashboard (`dashboard`, default TOWER_DASHBOARD_ENABLED); `demo` adds the
    local Slack stand-in and `tower demo --live`."""
    check_settings()  # every model, before anything is created: a refused value leaves no data directory behind
    plan = check_role(role, settings)
    ui = DashboardProcessSettings()
    with_dashboard = role == "all" and (ui.enabled if dashboard is None else dashboard)
    # a value the dashboard refuses stops here, one line naming it, not as a traceback in every visitor's page
    dashboard_problems = dashboard_settings_problems() if with_dashboard else []
    if dashboard_problems:
        raise StartupError("invalid settings:\n  " + "\n  ".join(dashboard_problems))
    if demo and role != "all":
        raise RoleError(f"--demo runs the whole tower in one process: it needs the role all, not {role}")
    problems = port_problems(settings, role)
    if problems:
        raise StartupError("; ".join(problems))
    # What this process creates (the store's files, the spool's raw batches, dead letters, backups) is for its user
    # alone: raw business records are no other local user's to read.
    owner_only()
    problem = data_dir_problem(settings.store.data_dir)
    if problem:
        raise StartupError(problem)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    generated_admin: str | None = None
    generated: bool | None = None
    if role == "all":
        configured = bool(settings.api.tokens)
        generated = not (settings.ingest.tokens and configured)
        load_or_create_tokens(settings)
        if not configured:  # generated into the data directory: a local tower, so the banner shows it
            generated_admin = admin_token(settings)
    base = f"http://{loopback(settings.collector.host)}:{settings.collector.http_port}"
    services: list[Line] = []
    local_slack: LocalSlack | None = None
    children = Children()
    pending: list[Child] = []
    try:
        if with_dashboard:
            apply_defaults({"TOWER_SLACK_DASHBOARD_URL": ui.url})  # links in Slack messages
        if demo:
            apply_defaults(DEMO_JOBS)
            local_slack = start_local_slack(settings, f"{base}/slack/interactions")
            if local_slack is not None:
                apply_defaults(local_slack.environment(ui.url))
        # The demo's history arrives in a few seconds; its jobs start once it is all in, so the first evaluation
        # sees the whole story (as the demo's manifest expects), not half of it.
        scheduler = SchedulerSettings()
        hold = demo and scheduler.enabled
        retention = RetentionSettings()  # TOWER_RETENTION_*, read before the store opens (and migrates)
        # every job's settings are read in build_tower, before it migrates: a bad one stops the start here
        tower = build_tower(settings, role=role, scheduler=SchedulerSettings(enabled=False) if hold else scheduler)
        if plan.maintains_schema:
            apply_retention(tower.store, retention)  # TTLs, only where they differ
        for line in misspelt_variables(tower):
            log.warning("%s", line)
        app = create_app(tower)
        setup_telemetry(settings.telemetry, app)
        data_dir = settings.store.data_dir
        if with_dashboard and not port_free(ui.host, ui.port):
            services.append(
                ("dashboard", f"not started: {ui.host}:{ui.port} is in use (TOWER_DASHBOARD_PORT, --no-dashboard)")
            )
        elif with_dashboard:
            # A local demo signs the dashboard in: open it and see, no token to paste.
            sign_in = generated_admin if demo and is_loopback(ui.host) else None
            pending.append(dashboard_child(settings, ui, base, sign_in))
            note = ", signed in as admin" if sign_in and "TOWER_DASHBOARD_TOKEN" not in os.environ else ""
            services.append(("dashboard", f"{ui.url}  (log: {data_dir / 'dashboard.log'}{note})"))
        if plan.jobs:
            services.append(slack_line(local_slack))
        held: _Held | None = None
        if demo:
            ready_file(settings).unlink(missing_ok=True)
            demo_child = Child(
                "demo", demo_command(settings, base), env_with(demo_environment(settings)), data_dir / "demo.log"
            )
            pending.append(demo_child)
            services.append(
                ("demo", f"tower demo --live  (log: {data_dir / 'demo.log'}, faults: {manifest_file(settings)})")
            )
            if hold:

                def release() -> None:
                    tower.scheduler.settings = scheduler
                    tower.scheduler.start()
                    log.info("the demo's history is in: jobs started")

                held = _Held(demo_child, ready_file(settings), release)
        print(banner(settings, role, services, generated_admin, generated), flush=True)
        print("Ctrl-C stops " + ("everything." if pending else "the tower."), flush=True)
        config = uvicorn.Config(
            app,
            host=settings.collector.host,
            port=settings.collector.http_port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=10,
        )
        server = _Server(config, children)
        if pending:
            threading.Thread(
                target=_start_when_up,
                args=(server, children, pending, held),
                name="start-children",
                daemon=True,
            ).start()
        _run(server)
    finally:
        children.stop_all()
        if local_slack is not None:
            local_slack.stop()
