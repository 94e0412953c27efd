"""The dashboard's tests run against a real tower holding the demo's story: sent through the doors by the
demo's sender and evaluated by the SLA engine at the story's `now` (the tower's fixed clock).

The demo tower is built once for the package (on the shared embedded store, emptied first); tests that
change an exception pick one no other test reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import streamlit as st
from streamlit.components.v2 import manifest_scanner
from streamlit.testing.v1 import AppTest

import tests.support
from collector.demo.scenario import SERVICES, ScenarioConfig, build_scenario
from collector.demo.senders import DemoSender
from kernel.clock import FixedClock
from kernel.store.embedded import EmbeddedStore
from tests.conftest import empty
from tests.factories import settings_with_every_role
from tests.support import RunningTower, start_in_process

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
WEDNESDAY = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)  # the demo story ends here (09:30 in Dallas)


@dataclass
class DemoTower:
    """A running tower with the demo story evaluated in it."""

    running: RunningTower
    now: datetime
    manifest: dict[str, Any]

    @property
    def url(self) -> str:
        return self.running.http_url

    def token(self, role: str) -> str:
        return self.running.api_token(role)

    def api(self, role: str = "admin") -> httpx.Client:
        return self.running.api(role)


def send_demo(
    url: str, tokens: dict[str, str], seed: int = 21, orders: int = 80, at: datetime = WEDNESDAY
) -> dict[str, Any]:
    """Send the demo story ending at `at` to a tower; its manifest."""
    story = build_scenario(ScenarioConfig(seed=seed, orders=orders, skus=3), FixedClock(at))
    sender = DemoSender(url, tokens)
    try:
        sender.send_all(story.deliveries)
    finally:
        sender.close()
    assert sender.stats.failed == 0, sender.stats.rejections
    return story.manifest()


@pytest.fixture(scope="package", autouse=True)
def components_looked_for_once() -> Iterator[None]:
    """Every new AppTest looks for installed Streamlit components, reading every installed package's metadata
    (about 0.2 s here). Nothing is installed while the tests run, so they are looked for once."""
    found = manifest_scanner.scan_component_manifests()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(manifest_scanner, "scan_component_manifests", lambda max_workers=None: list(found))
        yield


@pytest.fixture(scope="package")
def demo_tower(shared_store: EmbeddedStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoTower]:
    empty(shared_store)
    manifest_now = datetime.fromisoformat(
        build_scenario(ScenarioConfig(seed=21, orders=80, skus=3), FixedClock(WEDNESDAY)).manifest()["now"]
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tests.support, "make_settings", settings_with_every_role)
        with start_in_process(tmp_path_factory.mktemp("demo"), shared_store, clock=FixedClock(manifest_now)) as running:
            tokens = {system: running.token(system) for system in set(SERVICES.values())}
            manifest = send_demo(running.http_url, tokens)
            assert running.tower is not None
            report = running.tower.sla.evaluate(full=True)
            assert report.errors == {}
            yield DemoTower(running, manifest_now, manifest)


@pytest.fixture
def dashboard(demo_tower: DemoTower, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., AppTest]:
    """Makes AppTests of the dashboard against the demo tower, signed in with a role's token (or not)."""
    monkeypatch.setenv("TOWER_DASHBOARD_API_URL", demo_tower.url)
    monkeypatch.setenv("TOWER_DASHBOARD_STATE_DIR", str(tmp_path / "dashboard-state"))
    monkeypatch.delenv("TOWER_DASHBOARD_TOKEN", raising=False)
    st.cache_data.clear()

    def make(role: str | None = "admin") -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=60)
        if role is not None:
            at.session_state["token"] = demo_tower.token(role)
        return at

    return make


def open_page(at: AppTest, page: str, **query: str) -> AppTest:
    """Run the app, then open `page` (e.g. "views/queue.py") with the URL query `query`."""
    at.run()
    at.query_params.clear()
    at.query_params.update(query)
    return at.switch_page(page).run()


def no_errors(at: AppTest) -> None:
    """The run raised nothing and showed no error."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
