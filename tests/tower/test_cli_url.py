"""The CLI finds the local tower the way `tower serve` starts it: TOWER_URL, else TOWER_COLLECTOR_HOST and
TOWER_COLLECTOR_HTTP_PORT (as it finds the admin token through TOWER_STORE_DATA_DIR)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support import free_port
from tower.cli import main
from tower.client import tower_url


def test_the_default_url_follows_the_collectors_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOWER_URL", raising=False)
    monkeypatch.delenv("TOWER_COLLECTOR_HOST", raising=False)
    monkeypatch.delenv("TOWER_COLLECTOR_HTTP_PORT", raising=False)
    assert tower_url(None) == "http://127.0.0.1:4318"
    monkeypatch.setenv("TOWER_COLLECTOR_HTTP_PORT", "4431")
    assert tower_url(None) == "http://127.0.0.1:4431"
    monkeypatch.setenv("TOWER_COLLECTOR_HOST", "0.0.0.0")  # bound to every address: reached at the loopback
    assert tower_url(None) == "http://127.0.0.1:4431"
    monkeypatch.setenv("TOWER_COLLECTOR_HOST", "::1")
    assert tower_url(None) == "http://[::1]:4431"
    monkeypatch.setenv("TOWER_URL", "http://tower.internal:4318/")  # TOWER_URL wins, --url over both
    assert tower_url(None) == "http://tower.internal:4318"
    assert tower_url("http://other:9000") == "http://other:9000"


def test_tower_backup_asks_the_port_the_tower_was_configured_with(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: the message names the address asked
    env = {"TOWER_STORE_DATA_DIR": str(tmp_path), "TOWER_COLLECTOR_HTTP_PORT": str(port), "TOWER_URL": None}
    result = CliRunner().invoke(main, ["backup", "--token", "a-token-of-sixteen-chars"], env=env)
    assert result.exit_code == 2
    assert f"cannot reach the tower at http://127.0.0.1:{port}" in result.output
