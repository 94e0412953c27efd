"""The test harness itself: a tower started in a thread survives a port taken between finding it and binding it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kernel.store import Store
from tests import support


def test_a_port_taken_before_the_tower_binds_it_is_replaced(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = int(taken.getsockname()[1])
        ports: Iterator[int] = iter([busy, busy])
        real = support.free_port
        monkeypatch.setattr(support, "free_port", lambda: next(ports, None) or real())
        with support.start_in_process(tmp_path, store) as running:
            assert running.settings.collector.http_port != busy
            assert httpx.get(running.http_url + "/healthz", timeout=5).status_code == 200


def test_a_tower_process_whose_port_is_taken_starts_on_another(tmp_path: Path) -> None:
    tower = support.TowerProcess(tmp_path / "data")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", tower.settings.collector.http_port))
        taken.listen()
        try:
            tower.start()
            assert tower.settings.collector.http_port != taken.getsockname()[1]
            assert httpx.get(tower.http_url + "/healthz", timeout=5).status_code == 200
        finally:
            tower.stop()
