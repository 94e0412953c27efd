"""The dashboard in a real browser: a `tower serve` subprocess with the demo story, `tower dashboard` (Streamlit)
as another, and headless Chromium signing in, opening the overview and an exception's timeline from a
Slack-style link, taking screenshots, downloading a report; no page shows an error."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from collector.demo.scenario import SERVICES
from tests.dashboard.conftest import send_demo
from tests.support import TowerProcess, free_port, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ERRORS = '[data-testid="stException"], [data-testid="stAlertContentError"]'

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]


@pytest.fixture
def demo_tower_process(tmp_path: Path) -> Iterator[TowerProcess]:
    """`tower serve` with the demo story of the last 48 hours, evaluated."""
    tower = TowerProcess(tmp_path / "tower")
    tower.start()
    try:
        tokens = {system: tower.token(system) for system in set(SERVICES.values())}
        send_demo(tower.http_url, tokens, at=datetime.now(UTC))
        answer = httpx.post(
            f"{tower.http_url}/api/sla/evaluate",
            params={"full": "true"},
            headers={"Authorization": f"Bearer {tower.api_token('admin')}"},
            timeout=120,
        )
        assert answer.status_code == 200 and answer.json()["errors"] == {}, answer.text
        yield tower
    finally:
        tower.stop()


@contextlib.contextmanager
def running_dashboard(tower_url: str, tmp_path: Path) -> Iterator[str]:
    """`tower dashboard` on a free port against `tower_url`; its base URL."""
    port = free_port()
    log = tmp_path / "dashboard.log"
    env = {**os.environ, "TOWER_DASHBOARD_STATE_DIR": str(tmp_path / "dashboard-state")}
    env.pop("TOWER_DASHBOARD_TOKEN", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tower", "dashboard", "--url", tower_url, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the dashboard exited with {proc.returncode}: {log.read_text()[-3000:]}")
            return httpx.get(f"{base}/_stcore/health", timeout=2).text == "ok"

        wait_for("the dashboard", up, 90, log, interval=0.25)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


# True once no script run is going on: Streamlit's running icon is gone.
NOT_RUNNING = (
    '() => !document.querySelector(\'[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]\')'
)


def idle(page: object) -> None:
    """Wait until the app's script run is over: what a fill or a click then acts on stays drawn, instead of being
    replaced by the run still going (on a loaded machine, a click on a replaced button never lands)."""
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    page.wait_for_function(NOT_RUNNING, timeout=60_000)


def sign_in(page: object, token: str) -> None:
    """Sign in from the sidebar once the signed-out page is drawn whole and idle, until the sidebar says who is signed
    in. On a loaded machine a fill or click during a run can act on an element the run replaces; the form is filled
    again if the sidebar does not change, up to three times."""
    from playwright.sync_api import Page
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    assert isinstance(page, Page)
    page.get_by_text("no token, no data").wait_for(timeout=60_000)
    for attempt in range(3):
        idle(page)
        page.get_by_label("API token", exact=True).and_(page.locator("input")).fill(token)
        page.get_by_role("button", name="Sign in").click()
        try:
            page.get_by_text("Signed in as").wait_for(timeout=30_000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise


def settle(page: object, charts: int) -> None:
    """Wait until the script run is over and `charts` charts are drawn."""
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    page.wait_for_function(
        'n => document.querySelectorAll(\'[data-testid="stVegaLiteChart"] canvas, '
        '[data-testid="stVegaLiteChart"] svg.marks\').length >= n',
        arg=charts,
        timeout=60_000,
    )
    idle(page)
    # Tables draw on a canvas after the run, charts animate in: give both a moment before a screenshot.
    page.wait_for_timeout(2500)


def test_the_dashboard_in_chromium(demo_tower_process: TowerProcess, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    tower = demo_tower_process
    admin = tower.api_token("admin")
    with httpx.Client(base_url=tower.http_url, headers={"Authorization": f"Bearer {admin}"}, timeout=60) as api:
        target = api.get("/api/exceptions", params={"rule": "order-release"}).json()["items"][0]
        now = datetime.fromisoformat(api.get("/api/whoami").json()["now"])
        last_month_end = now.date().replace(day=1)
        last_month_start = (last_month_end - timedelta(days=1)).replace(day=1)
        report = api.get(
            "/api/reports/sla-breaches",
            params={"from": last_month_start.isoformat(), "to": last_month_end.isoformat(), "format": "csv"},
        )
    # TOWER_TEST_SCREENSHOTS keeps them somewhere lasting (e.g. for the README)
    shots = Path(os.environ.get("TOWER_TEST_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {shots}")

    with running_dashboard(tower.http_url, tmp_path) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 2400}, accept_downloads=True)
            page.set_default_timeout(60_000)  # a click waits for its element through the app's reruns
            # No token, no data.
            page.goto(base)
            page.get_by_text("no token, no data").wait_for(timeout=60_000)
            assert page.locator('[data-testid="stMetric"]').count() == 0

            # The overview.
            sign_in(page, admin)
            page.get_by_text("Active exceptions", exact=True).first.wait_for(timeout=60_000)
            settle(page, charts=2)
            page.screenshot(path=str(shots / "overview.png"), full_page=True)
            assert page.locator(ERRORS).count() == 0, page.locator(ERRORS).all_inner_texts()
            assert page.get_by_text("Integration health").count() == 1

            # A Slack message's link to one exception: sign in, and the exception opens with its timeline.
            page.goto(f"{base}/queue?exception={target['id']}")
            sign_in(page, admin)
            page.get_by_text(f"order-release · {target['key']}").wait_for(timeout=60_000)
            settle(page, charts=1)
            page.screenshot(path=str(shots / "exception-timeline.png"), full_page=True)
            assert page.locator(ERRORS).count() == 0, page.locator(ERRORS).all_inner_texts()
            page.get_by_role("tab", name="Actions").click()
            # Actions one after another on the same exception: the menu must keep it when its status changes.
            idle(page)
            page.get_by_role("button", name="Acknowledge").click()
            page.get_by_text("Acknowledged.").wait_for(timeout=60_000)
            idle(page)
            page.get_by_role("tab", name="Actions").click()
            page.get_by_label("Assign to").fill("ann")
            idle(page)
            page.get_by_role("button", name="Assign").click()
            page.get_by_text("Assigned to ann").first.wait_for(timeout=60_000)
            assert page.locator(ERRORS).count() == 0, page.locator(ERRORS).all_inner_texts()
            assert f"exception={target['id']}" in page.url
            with httpx.Client(base_url=tower.http_url, headers={"Authorization": f"Bearer {admin}"}) as api:
                after = api.get(f"/api/exceptions/{target['id']}").json()
            assert (after["status"], after["assignee"]) == ("acknowledged", "ann")

            # The finance report, downloaded through the dashboard.
            page.goto(f"{base}/reports")
            sign_in(page, admin)
            page.get_by_text("Breaches in the period").wait_for(timeout=60_000)
            if report.status_code == 200:
                with page.expect_download(timeout=60_000) as download:
                    page.get_by_role("button", name="Download CSV").click()
                saved = Path(download.value.path())
                assert saved.read_bytes().splitlines()[0] == report.content.splitlines()[0]
                assert len(saved.read_bytes().splitlines()) == len(report.content.splitlines())
            assert page.locator(ERRORS).count() == 0, page.locator(ERRORS).all_inner_texts()
        except Exception:
            # what the page showed when a step failed: a screenshot, and its text in the test's report
            with contextlib.suppress(Exception):
                page.screenshot(path=str(shots / "failure.png"), full_page=True)
                print(f"the page at {page.url} when the step failed:\n{page.inner_text('body')[:4000]}")
            raise
        finally:
            browser.close()
    assert (shots / "overview.png").stat().st_size > 10_000
    assert (shots / "exception-timeline.png").stat().st_size > 10_000
