"""Running towers for tests: in-process (uvicorn in a thread) or as a `tower serve` subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest
import uvicorn

from kernel.clock import Clock
from kernel.jobs import SchedulerSettings
from kernel.settings import Settings
from kernel.store import Store
from tests.factories import api_token, make_settings, token_of
from tower.app import Tower, build_tower, create_app

T = TypeVar("T")


def run_tower(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m tower ARGS` in a process of its own (another data directory, or one that must exit), with this
    environment less its TOWER_* variables plus `env`; its output as text."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TOWER_")} | (env or {})
    command = [sys.executable, "-m", "tower", *args]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningTower:
    """A tower reachable over HTTP (and gRPC); `tower` is set when it runs in this process."""

    settings: Settings
    http_url: str
    grpc_target: str
    tower: Tower | None = None

    def token(self, system: str) -> str:
        return token_of(self.settings.ingest.tokens, system)

    def api_token(self, role: str = "admin") -> str:
        return api_token(self.settings, role)

    def client(self, system: str = "erp") -> httpx.Client:
        return httpx.Client(
            base_url=self.http_url, headers={"Authorization": f"Bearer {self.token(system)}"}, timeout=30
        )

    def api(self, role: str = "admin") -> httpx.Client:
        return httpx.Client(
            base_url=self.http_url, headers={"Authorization": f"Bearer {self.api_token(role)}"}, timeout=30
        )


def _serve(server: uvicorn.Server) -> None:
    # uvicorn exits the process (SystemExit) when it cannot bind; in a thread that is a failed start to retry.
    with contextlib.suppress(SystemExit):
        server.run()


@contextlib.contextmanager
def start_in_process(
    tmp_path: Path, store: Store, clock: Clock | None = None, **collector: Any
) -> Iterator[RunningTower]:
    """A tower on `store` serving HTTP (and gRPC) on free ports in a thread; `clock` defaults to the system's.

    A port found free can be taken before the server binds it (by another test's client or subprocess), so a
    start that fails is tried again on new ports, up to three times."""
    for attempt in range(3):
        http_port, grpc_port = free_port(), free_port()
        settings = make_settings(tmp_path / "data", http_port=http_port, grpc_port=grpc_port, **collector)
        # No scheduled jobs: tests evaluate the rules when they say so, on the clock they choose.
        tower = build_tower(settings, clock=clock, store=store, scheduler=SchedulerSettings(enabled=False))
        app = create_app(tower)
        config = uvicorn.Config(app, host="127.0.0.1", port=http_port, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=_serve, args=(server,), daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if server.started:
            break
        server.should_exit = True
        thread.join(timeout=30)
        if thread.is_alive() or attempt == 2:
            raise RuntimeError("test tower did not start")
    try:
        yield RunningTower(settings, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", tower)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# what `tower serve`, uvicorn and the gRPC server say when a port is taken
UNBOUND = ("in use by another process", "address already in use", "cannot bind")


class TowerProcess:
    """`tower serve` in a subprocess with its own data directory; can be killed and restarted."""

    def __init__(self, data_dir: Path, **collector: Any) -> None:
        self.settings = make_settings(data_dir, http_port=free_port(), grpc_port=free_port(), **collector)
        self.http_url = f"http://127.0.0.1:{self.settings.collector.http_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = False
        self.log = data_dir.parent / f"{data_dir.name}.log"

    def env(self) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        env.update(
            TOWER_STORE_DATA_DIR=str(s.store.data_dir),
            TOWER_COLLECTOR_HOST="127.0.0.1",
            TOWER_COLLECTOR_HTTP_PORT=str(s.collector.http_port),
            TOWER_COLLECTOR_GRPC_PORT=str(s.collector.grpc_port),
            TOWER_INGEST_TOKENS=orjson.dumps(s.ingest.tokens).decode(),
            TOWER_API_TOKENS=orjson.dumps(s.api.tokens).decode(),
            TOWER_SCHEDULER_ENABLED="false",
            TOWER_DASHBOARD_ENABLED="false",  # tests that want the dashboard start it themselves
        )
        return env

    def start(self, timeout: float = 60) -> None:
        """Start and wait until /healthz answers. A first start that fails to bind its ports (taken since they
        were found free) is tried again on new ones; a restart keeps its ports, which clients already hold."""
        for attempt in range(3):
            written = self.log.stat().st_size if self.log.exists() else 0
            if self._start(timeout):
                self.started = True
                return
            said = self.log.read_bytes()[written:].decode(errors="replace")
            unbound = any(m in said.lower() for m in UNBOUND)
            if self.started or not unbound or attempt == 2:
                raise RuntimeError(f"tower exited with {self.proc and self.proc.returncode}: {said[-3000:]}")
            self.settings.collector.http_port, self.settings.collector.grpc_port = free_port(), free_port()
            self.http_url = f"http://127.0.0.1:{self.settings.collector.http_port}"

    def _start(self, timeout: float) -> bool:
        """Whether the process answered /healthz; False when it exited first. Raises when it never answers."""
        self.settings.store.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tower", "serve"], env=self.env(), stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.http_url + "/healthz", timeout=1).status_code == 200:
                    return True
            time.sleep(0.1)
        raise RuntimeError(f"tower did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def token(self, system: str) -> str:
        return token_of(self.settings.ingest.tokens, system)

    def api_token(self, role: str = "admin") -> str:
        return api_token(self.settings, role)


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float, log: Path | None = None, interval: float = 0.5
) -> T:
    """Poll `probe` every `interval` seconds until it answers something truthy; fail with `what` (and the
    log's end) after `timeout`. Connection errors and half-written files count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError, OSError, ValueError):  # not up yet, a file half written
            found = probe()
            if found:
                return found
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log is not None and log.exists() else ""
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}\n{tail}")
        time.sleep(interval)
