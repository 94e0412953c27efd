"""A real Prometheus (Debian's package) scrapes a tower's GET /metrics with an API token and evaluates the alerting
rules shipped in docs/prometheus/tower-alerts.yml against it. Skipped, saying so, where it is not installed
(`make test` installs it as root on Debian, like Chromium)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from kernel.clock import FixedClock
from kernel.store.embedded import EmbeddedStore
from tests.factories import make_event
from tests.support import RunningTower, free_port, start_in_process

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
RULES = Path(__file__).resolve().parents[2] / "docs" / "prometheus" / "tower-alerts.yml"
BATCH = {"Content-Type": "application/cloudevents-batch+json"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None, reason="Debian's prometheus package is not installed"),
]


def test_the_shipped_alerting_rules_are_valid() -> None:
    assert PROMTOOL is not None
    checked = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 16 rules found" in checked.stdout


JOB_RULE_TESTS = """
rule_files: ["{rules}"]
evaluation_interval: 1m
tests:
  # restarted into a failing sla-evaluate: no last success, so the Stale rule has nothing to measure
  - interval: 1m
    input_series:
      - series: 'tower_job_runs_total{{instance="t:4318", job="tower", job_name="sla-evaluate", outcome="error"}}'
        values: '1+1x40'
      - series: 'tower_job_consecutive_failures{{instance="t:4318", job="tower", job_name="sla-evaluate"}}'
        values: '1+1x40'
    alert_rule_test:
      - eval_time: 5m
        alertname: TowerJobNeverSucceeded
        exp_alerts: []
      - eval_time: 15m
        alertname: TowerJobNeverSucceeded
        exp_alerts:
          - exp_labels: {{severity: critical, instance: "t:4318", job_name: sla-evaluate}}
            exp_annotations:
              summary: "Job sla-evaluate has failed since t:4318 started and never succeeded"
      - eval_time: 15m
        alertname: TowerSlaEvaluationStale
        exp_alerts: []
  # an hourly job failing once and again an hour later: never 3 failures in 15 minutes
  - interval: 1m
    input_series:
      - series: 'tower_job_runs_total{{instance="t:4318", job="tower", job_name="finance-report", outcome="error"}}'
        values: '1x59 2x60'
      - series: 'tower_job_last_success_timestamp_seconds{{instance="t:4318", job="tower", job_name="finance-report"}}'
        values: '0x119'
      - series: 'tower_job_consecutive_failures{{instance="t:4318", job="tower", job_name="finance-report"}}'
        values: '1x59 2x60'
    alert_rule_test:
      - eval_time: 10m
        alertname: TowerJobLastRunFailed
        exp_alerts: []
      - eval_time: 90m
        alertname: TowerJobFailing
        exp_alerts: []
      - eval_time: 90m
        alertname: TowerJobLastRunFailed
        exp_alerts:
          - exp_labels: {{severity: warning, instance: "t:4318", job_name: finance-report}}
            exp_annotations:
              summary: "Job finance-report has failed 2 times in a row, nothing since succeeded, on t:4318"
"""


def test_the_job_rules_fire_for_a_slow_job_and_one_that_never_succeeded(tmp_path: Path) -> None:
    """`promtool test rules` on synthetic series: what the rate rule and the staleness rules cannot see."""
    assert PROMTOOL is not None
    tests = tmp_path / "job-rules-test.yml"
    tests.write_text(JOB_RULE_TESTS.format(rules=RULES))
    tested = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@pytest.fixture
def behind(store: EmbeddedStore, tmp_path: Path) -> Iterator[RunningTower]:
    """A tower whose clock is an hour behind: the job runs it records succeeded an hour ago."""
    with start_in_process(tmp_path, store, FixedClock(datetime.now(UTC) - timedelta(hours=1))) as running:
        yield running


@pytest.fixture
def prometheus(behind: RunningTower, tmp_path: Path) -> Iterator[httpx.Client]:
    """Prometheus scraping `behind` every second as job `control-tower`, with a viewer token, and evaluating the
    shipped rules every second; a client of its HTTP API."""
    assert PROMETHEUS is not None
    token = tmp_path / "tower-token"
    token.write_text(behind.api_token("viewer"))
    port = free_port()
    target = behind.http_url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: ["{RULES}"]
scrape_configs:
  - job_name: control-tower
    authorization: {{type: Bearer, credentials_file: "{token}"}}
    static_configs: [{{targets: ["{target}"]}}]
"""
    )
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def eventually(read: Callable[[], Any], timeout: float = 30) -> Any:
    """Poll `read` until it returns something truthy; that value (fails after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = read()
        except httpx.TransportError:  # Prometheus still starting
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, "Prometheus did not get there in time"
        time.sleep(0.25)


def query(prometheus: httpx.Client, expression: str) -> list[dict[str, Any]]:
    answer = prometheus.get("/api/v1/query", params={"query": expression}).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def test_prometheus_scrapes_the_tower_and_evaluates_the_rules(behind: RunningTower, prometheus: httpx.Client) -> None:
    assert behind.tower is not None
    assert behind.tower.scheduler.run_job("sla-evaluate").ok  # succeeded an hour ago, on the tower's clock

    def up() -> list[dict[str, Any]]:
        targets = prometheus.get("/api/v1/targets").json()["data"]["activeTargets"]
        return [t for t in targets if t["health"] == "up"]

    (target,) = eventually(up)
    good, bad = make_event("order.accepted", 1), make_event("order.accepted", 2)
    del bad["id"]
    with behind.client("erp") as http:  # after a scrape saw the counters at 0: the rate sees the event arrive
        assert http.post("/v1/events", content=orjson.dumps([good, bad]), headers=BATCH).status_code == 200
    assert target["labels"]["job"] == "control-tower" and target["lastError"] == ""
    (info,) = eventually(lambda: query(prometheus, "tower_build_info"))
    assert info["metric"]["role"] == "all" and info["metric"]["backend"] == "embedded"
    rows = eventually(lambda: query(prometheus, 'tower_ingest_rows_total{table="business_events"} > 0'))
    assert float(rows[0]["value"][1]) == 1
    (pending,) = eventually(lambda: query(prometheus, 'tower_dead_letters_pending{door="events"} > 0'))
    assert float(pending["value"][1]) == 1
    # the tower's labels survive the scrape as they are: none is renamed to exported_* by a clash with the target's
    (run,) = eventually(lambda: query(prometheus, 'tower_job_runs_total{job_name="sla-evaluate"}'))
    assert run["metric"]["job"] == "control-tower" and not any(k.startswith("exported_") for k in run["metric"])

    def evaluated() -> list[dict[str, Any]]:
        groups = prometheus.get("/api/v1/rules").json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        done = [r for r in rules if r.get("lastEvaluation", "").startswith("2") and r["health"] != "unknown"]
        return rules if len(done) == len(rules) == 16 else []

    for rule in eventually(evaluated):
        assert rule["health"] == "ok", rule  # every expression evaluates against the tower's real series

    def stale() -> list[dict[str, Any]]:
        alerts = prometheus.get("/api/v1/alerts").json()["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "TowerSlaEvaluationStale"]

    # the rule's selector finds the job's series: its last success an hour ago makes it pending (it fires after 2 m)
    (alert,) = eventually(stale)
    assert alert["state"] == "pending" and "has not succeeded for 1h" in alert["annotations"]["summary"], alert
    others = [a for a in prometheus.get("/api/v1/alerts").json()["data"]["alerts"] if a != alert]
    # nothing else is wrong with this tower, unless this machine's disk really is under 10% free
    usage = shutil.disk_usage(behind.settings.store.data_dir)
    low = ["TowerDiskLow"] if usage.free / usage.total < 0.10 else []
    assert [a["labels"]["alertname"] for a in others] == low
