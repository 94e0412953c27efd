"""A `tower serve` subprocess for the benches that measure a running tower (bench/ingest.py, bench/soak.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on the loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TowerProcess:
    """The process, its HTTP address and its log file."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path


@contextlib.contextmanager
def tower_process(
    data_dir: Path,
    ingest_tokens: Mapping[str, str],
    api_tokens: Mapping[str, str],
    env: Mapping[str, str] | None = None,
    start_timeout: float = 60.0,
) -> Iterator[TowerProcess]:
    """Run `tower serve` on `data_dir` (HTTP on a free loopback port, no gRPC, no telemetry export, no
    dashboard), its output in `tower.log` beside `data_dir`; `ingest_tokens` maps systems to their tokens,
    `api_tokens` tokens to roles, `env` adds TOWER_* variables. Yields once /healthz answers; stops it with
    SIGTERM (SIGKILL after 60 s) afterwards."""
    port = free_port()
    environment = dict(os.environ)
    environment.update(
        TOWER_STORE_DATA_DIR=str(data_dir),
        TOWER_COLLECTOR_HOST="127.0.0.1",
        TOWER_COLLECTOR_HTTP_PORT=str(port),
        TOWER_COLLECTOR_GRPC_PORT="0",
        TOWER_INGEST_TOKENS=orjson.dumps({t: [s] for s, t in ingest_tokens.items()}).decode(),
        TOWER_API_TOKENS=orjson.dumps(dict(api_tokens)).decode(),
        TOWER_TELEMETRY_EXPORTER="none",
        TOWER_DASHBOARD_ENABLED="false",  # the tower alone, no dashboard beside it
    )
    environment.update(env or {})
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / "tower.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tower", "serve"], cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT
        )
    running = TowerProcess(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tower exited with {proc.returncode}: {log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(running.url + "/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"tower did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
