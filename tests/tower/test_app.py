"""The tower's composition root: a tower that fails half-way through its start stops what it did start."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from kernel.jobs import SchedulerSettings
from kernel.store import Store
from tests.factories import make_settings
from tower.app import build_tower


def test_a_tower_whose_grpc_port_is_taken_stops_what_it_started(tmp_path: Path, store: Store) -> None:
    before = {t for t in threading.enumerate() if t.name.startswith("tower-")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = make_settings(tmp_path / "data", grpc_port=taken.getsockname()[1])
        tower = build_tower(settings, store=store, scheduler=SchedulerSettings(enabled=False))
        with pytest.raises(RuntimeError, match="Failed to bind"):
            tower.start()
    # the writer and the spool drainer were started before the gRPC server failed: they are stopped again
    started = [t for t in threading.enumerate() if t.name.startswith("tower-") and t not in before]
    assert started == []
    assert tower.background == []
