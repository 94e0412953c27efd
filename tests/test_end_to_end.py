"""The whole loop, as a newcomer runs it: the README's `tower serve --demo` (what `make run DEMO=1` runs) in a
subprocess on a temporary data directory and free ports, followed through the public surfaces only.

1. One command starts the server, the dashboard, the demo and a local Slack stand-in, and its banner names
   every address and the tokens.
2. Exceptions open for the demo's injected faults (its manifest), and none for the delivery faults.
3. The stand-in receives the owners' messages, each in its owner's channel.
4. An Acknowledge through a Slack interaction, signed with the signing secret as Slack signs it, acknowledges
   an exception, and its message is updated with a thread line.
5. A late event, sent through the events door, resolves another (resolution `late`) at the next evaluation.
6. A snapshot that agrees, then a reconciliation run through the API, closes a third (`reconciled`).
7. The finance report of the period lists the breaches, the late one closed and the others still open.
8. The dashboard (the running Streamlit answers; its pages run with AppTest against the running API) shows
   the resolved and the acknowledged exceptions and the Slack messages.
9. Ctrl-C (SIGINT to the process group, as a terminal sends it) stops everything: no process is left.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.support import free_port, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "app.py"
SLA_RULES = ("order-release", "ship-cutoff", "asn-sent", "invoice-posting")
OWNER_CHANNELS = {  # sla_rules/routing.yaml
    "customer_service": "cs-orders",
    "warehouse": "ops-warehouse",
    "transportation": "ops-transport",
    "finance": "finance-ops",
    "integration": "integration-oncall",
}
# The event that ends a case of each SLA rule, sent late: (source, type, data from the fault's refs).
LATE_EVENTS: dict[str, tuple[str, str, Callable[[dict[str, str]], dict[str, str]]]] = {
    "asn-sent": ("edi", "asn.sent", lambda r: {"shipment_id": r["shipment_id"], "order_id": r["order_id"]}),
    "order-release": ("erp", "order.released", lambda r: {"order_id": r["order_id"], "warehouse": r["warehouse"]}),
    "invoice-posting": (
        "erp",
        "invoice.posted",
        lambda r: {"order_id": r["order_id"], "invoice_id": "INV-LATE-" + r["order_id"]},
    ),
}


def tower_command() -> list[str]:
    """`.venv/bin/tower serve --demo`, as the README says (`python -m tower` where the script is missing)."""
    script = Path(sys.executable).parent / "tower"
    return [str(script) if script.exists() else sys.executable, *([] if script.exists() else ["-m", "tower"])]


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


@dataclass
class Loop:
    """The running tower and what a newcomer reads off its data directory."""

    proc: subprocess.Popen[bytes]
    data: Path
    log: Path
    api_url: str
    dashboard_url: str
    env: dict[str, str]

    @property
    def tokens(self) -> dict[str, Any]:
        tokens: dict[str, Any] = json.loads((self.data / "tokens.json").read_text())
        return tokens

    @property
    def admin(self) -> str:
        return str(next(t for t, role in self.tokens["api"].items() if role == "admin"))

    def ingest_token(self, system: str) -> str:
        return str(next(t for t, sources in self.tokens["ingest"].items() if system in sources))

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, headers={"Authorization": f"Bearer {self.admin}"}, timeout=60)

    def banner(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    data = tmp_path / "var" / "tower"
    http, grpc, dash = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOWER_", "OTEL_"))}
    env.update(
        TOWER_STORE_DATA_DIR=str(data),
        TOWER_COLLECTOR_HTTP_PORT=str(http),
        TOWER_COLLECTOR_GRPC_PORT=str(grpc),
        TOWER_DASHBOARD_PORT=str(dash),
        TOWER_DASHBOARD_STATE_DIR=str(tmp_path / "var" / "dashboard"),
    )
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        # A session of its own: its process group stands for the terminal's foreground group (Ctrl-C).
        proc = subprocess.Popen(
            [*tower_command(), "serve", "--demo"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Loop(proc, data, log, f"http://127.0.0.1:{http}", f"http://127.0.0.1:{dash}", env)
    try:
        yield running
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def signed_click(
    secret: str, user: str, exception_id: str, action_id: str, message: dict[str, Any]
) -> tuple[bytes, dict[str, str]]:
    """A block_actions request as Slack sends it for a button click: the form body and the signed headers."""
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": "newcomer", "team_id": "T0NEWCOMER"},
        "team": {"id": "T0NEWCOMER"},
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": message["channel_id"]},
        "message": {"ts": message["ts"], "text": message["text"]},
        "actions": [{"type": "button", "action_id": action_id, "value": exception_id, "block_id": "b1"}],
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": f"v0={digest}",
    }
    return body, headers


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """action_id -> value of a message's buttons."""
    return {
        e["action_id"]: e.get("value", "")
        for b in message.get("blocks") or []
        if b.get("type") == "actions"
        for e in b.get("elements") or []
    }


def standin_messages(url: str) -> dict[str, list[dict[str, Any]]]:
    """Channel name -> its top-level messages (each with `thread` and `channel_id`)."""
    body = httpx.get(f"{url}/_standin/messages", timeout=10).json()
    return {c["name"]: [{**m, "channel_id": c["id"]} for m in c["messages"]] for c in body["channels"]}


def test_the_whole_loop(loop: Loop) -> None:
    started = time.monotonic()

    # 1. One command: the server, then the dashboard, the demo and the Slack stand-in; the banner says where.
    wait_for("the API", lambda: httpx.get(f"{loop.api_url}/healthz", timeout=2).status_code == 200, 90, loop.log)
    banner = loop.banner()
    for line in (
        f"OTLP/HTTP  {loop.api_url}/v1/traces  {loop.api_url}/v1/logs",
        f"OTLP/gRPC  127.0.0.1:{loop.env['TOWER_COLLECTOR_GRPC_PORT']}",
        f"events     {loop.api_url}/v1/events",
        f"API        {loop.api_url}/api  (OpenAPI: {loop.api_url}/docs)",
        f"dashboard  {loop.dashboard_url}",
        "Slack      local stand-in http://127.0.0.1:",
        f"demo       tower demo --live  (log: {loop.data / 'demo.log'}",
        f"tokens     {loop.data / 'tokens.json'}",
        f"admin      {loop.admin}",
    ):
        assert line in banner, f"{line!r} not in the banner:\n{banner}"
    assert httpx.get(f"{loop.api_url}/openapi.json", timeout=10).json()["info"]["title"] == "Control tower"
    slack = json.loads((loop.data / "slack-standin.json").read_text())
    assert (loop.data / "slack-standin.json").stat().st_mode & 0o777 == 0o600
    assert f"Slack      local stand-in {slack['url']}" in banner
    wait_for(
        "the dashboard", lambda: httpx.get(f"{loop.dashboard_url}/_stcore/health", timeout=2).text == "ok", 90, loop.log
    )
    children = children_of(loop.proc.pid)
    assert len(children) == 2, children  # the dashboard and the demo

    # 2. Exceptions open for the injected faults; the delivery faults (duplicates, out of order) open none.
    manifest = wait_for(
        "the demo's manifest", lambda: json.loads((loop.data / "demo-manifest.json").read_text()), 60, loop.log
    )
    faults = manifest["faults"]
    expected = {(f["rule"], f["key"]) for f in faults if f["expected"] in ("breached", "exception")}
    harmless = {(f["rule"], f["key"]) for f in faults if f["expected"] == "none" and f["rule"]}
    assert {rule for rule, _ in expected} >= {"inventory-sync", "invoice-match", "integration-errors"}
    assert {rule for rule, _ in expected} & set(SLA_RULES)

    def exceptions() -> dict[tuple[str, str], dict[str, Any]]:
        with loop.api() as api:
            answer = api.get("/api/exceptions", params={"limit": 1000})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        return {(e["rule"], e["key"]): e for e in page["items"]}

    def all_opened() -> dict[tuple[str, str], dict[str, Any]] | None:
        found = exceptions()
        return found if expected <= set(found) else None

    found = wait_for(f"exceptions for {sorted(expected)}", all_opened, 90, loop.log)
    assert not harmless & set(found), sorted(harmless & set(found))
    for rule, key in expected:
        if rule in SLA_RULES:
            assert found[(rule, key)]["status"] == "open", found[(rule, key)]
    opened_after = time.monotonic() - started

    # 3. The stand-in receives the owners' messages, each in the owner's channel.
    alerted = {e["id"]: e for k, e in found.items() if k in expected}

    def messages_for_all() -> dict[str, dict[str, Any]] | None:
        by_exception = {
            value: {**m, "channel": name}
            for name, channel in standin_messages(slack["url"]).items()
            for m in channel
            for value in buttons(m).values()
        }
        return by_exception if set(alerted) <= set(by_exception) else None

    posted = wait_for("a Slack message per exception", messages_for_all, 60, loop.log)
    for exception_id, exception in alerted.items():
        assert posted[exception_id]["channel"] == OWNER_CHANNELS[exception["owner"]], exception
        assert exception["key"].replace(">", "&gt;") in posted[exception_id]["text"]
    alerts_after = time.monotonic() - started

    # Three different exceptions for the three ways out: acknowledge, a late event, a reconciliation.
    late_fault = next(f for rule in LATE_EVENTS for f in faults if f["rule"] == rule and f["expected"] == "breached")
    late = found[(late_fault["rule"], late_fault["key"])]
    drift_fault = next(f for f in faults if f["rule"] == "inventory-sync" and f["expected"] == "exception")
    drift = found[("inventory-sync", drift_fault["key"])]
    acked = next(e for e in alerted.values() if e["id"] not in (late["id"], drift["id"]) and e["kind"] == "business")

    # 4. Acknowledge through a Slack interaction, signed as Slack signs it.
    message = posted[acked["id"]]
    assert buttons(message)["exception_acknowledge"] == acked["id"]
    body, headers = signed_click(
        slack["signing_secret"], slack["slack_user"], acked["id"], "exception_acknowledge", message
    )
    forged = {**headers, "X-Slack-Signature": "v0=" + "0" * 64}
    assert httpx.post(f"{loop.api_url}/slack/interactions", content=body, headers=forged).status_code == 401
    answer = httpx.post(f"{loop.api_url}/slack/interactions", content=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    with loop.api() as api:
        detail = api.get(f"/api/exceptions/{acked['id']}").json()
    assert detail["status"] == "acknowledged"
    audit = [e for e in detail["timeline"] if e.get("kind") == "audit"]
    assert audit[-1]["actor"] == slack["operator"], audit

    def updated() -> dict[str, Any] | None:
        channel = standin_messages(slack["url"])[message["channel"]]
        now = next(m for m in channel if m["ts"] == message["ts"])
        done = now.get("edits") and any("Acknowledged by" in r["text"] for r in now["thread"])
        return now if done else None

    now_message = wait_for("the acknowledged message's update and thread line", updated, 30, loop.log)
    assert "exception_acknowledge" not in buttons(now_message)  # only Resolve is left
    assert f"Acknowledged by {slack['operator']}" in now_message["thread"][-1]["text"]

    # 5. A late event through the events door resolves another exception at the next evaluation.
    source, event_type, data = LATE_EVENTS[late_fault["rule"]]
    event = {
        "specversion": "1.0",
        "id": f"late-{late_fault['key']}",
        "source": source,
        "type": event_type,
        "time": datetime.now(UTC).isoformat(),
        "data": data(late_fault["refs"]),
    }
    sent = httpx.post(
        f"{loop.api_url}/v1/events",
        json=event,
        headers={
            "Authorization": f"Bearer {loop.ingest_token(source)}",
            "Content-Type": "application/cloudevents+json",
        },
        timeout=30,
    )
    assert sent.status_code in (200, 202), sent.text

    def resolved(exception_id: str) -> dict[str, Any] | None:
        with loop.api() as api:
            record: dict[str, Any] = api.get(f"/api/exceptions/{exception_id}").json()
        return record if record["status"] == "resolved" else None

    late_now = wait_for(f"{late['rule']} {late['key']} resolved by its late event", lambda: resolved(late["id"]), 45)
    assert late_now["resolution"] == "late" and late_now["resolution_detail"]["hours_late"] > 0

    # 6. The WMS recounts and agrees with the ERP; a reconciliation run closes the drift.
    erp = next(side for side in drift["context"]["sides"] if side["name"] == "erp")
    wms = next(side for side in drift["context"]["sides"] if side["name"] == "wms")
    snapshot = {
        "specversion": "1.0",
        "id": f"recount-{drift['key']}",
        "source": wms["source"],
        "type": "inventory.snapshot",
        "subject": drift["key"],
        "time": datetime.now(UTC).isoformat(),
        "data": {
            "sku": drift["context"]["sku"],
            "location": drift["context"]["location"],
            "warehouse": drift["context"]["warehouse"],
            "quantity": erp["quantity"],
        },
    }
    sent = httpx.post(
        f"{loop.api_url}/v1/events",
        json=snapshot,
        headers={"Authorization": f"Bearer {loop.ingest_token('wms')}", "Content-Type": "application/cloudevents+json"},
        timeout=30,
    )
    assert sent.status_code in (200, 202), sent.text
    with loop.api() as api:
        run = api.post("/api/reconcile/run", params={"rule": "inventory-sync"}, timeout=120).json()
    (record,) = run["runs"]
    assert record["status"] == "ok" and drift["id"] in record["details"]["rules"]["inventory-sync"]["resolved"]
    drift_now = resolved(drift["id"])
    assert drift_now is not None and drift_now["resolution"] == "reconciled"

    # 7. The finance report of the period lists the breaches: the late one closed, the others still open.
    sla_faults = [f for f in faults if f["rule"] in SLA_RULES and f["expected"] in ("late", "breached")]
    days = [datetime.fromisoformat(f["due_at"].replace("Z", "+00:00")).date() for f in sla_faults]
    period = {"from": min(days).isoformat(), "to": (max(days) + timedelta(days=1)).isoformat(), "format": "csv"}
    with loop.api() as api:
        report = api.get("/api/reports/sla-breaches", params=period)
    assert report.status_code == 200, report.text
    rows = {(r["rule"], r["key"]): r for r in csv.DictReader(io.StringIO(report.text))}
    missing = [(f["rule"], f["key"]) for f in sla_faults if (f["rule"], f["key"]) not in rows]
    assert missing == [], f"breaches missing from the report: {missing}"
    late_row = rows[(late["rule"], late["key"])]
    assert late_row["closed"] and float(late_row["hours_late"]) > 0 and late_row["exception_id"] == late["id"]
    for f in sla_faults:
        if f["expected"] == "breached" and f["key"] != late["key"]:
            assert rows[(f["rule"], f["key"])]["open"].lower() == "true", rows[(f["rule"], f["key"])]

    # 8. The dashboard: the pages show the resolved and acknowledged states and the owners' Slack messages.
    dashboard_env = {
        "TOWER_DASHBOARD_API_URL": loop.api_url,
        "TOWER_DASHBOARD_SLACK_STANDIN_URL": slack["url"],
        "TOWER_DASHBOARD_STATE_DIR": loop.env["TOWER_DASHBOARD_STATE_DIR"],
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in dashboard_env.items():
            patch.setenv(name, value)
        patch.delenv("TOWER_DASHBOARD_TOKEN", raising=False)
        st.cache_data.clear()
        for exception, status, resolution in ((late, "resolved", "late"), (drift, "resolved", "reconciled")):
            page = dashboard_page(loop, "views/queue.py", exception=exception["id"])
            shown = [m.value for m in page.markdown]
            assert any(f"-badge[{status}]" in m for m in shown), shown
            assert any(f"({resolution})" in c.value for c in page.caption), [c.value for c in page.caption]
            assert f"{exception['rule']} · {exception['key']}" in [s.value for s in page.subheader]
        page = dashboard_page(loop, "views/queue.py", exception=acked["id"])
        assert any("-badge[acknowledged]" in m.value for m in page.markdown)
        page = dashboard_page(loop, "views/slack.py")
        channels = [label.split(" ")[0] for label in page.radio[0].options]
        assert {f"#{OWNER_CHANNELS[e['owner']]}" for e in alerted.values()} <= set(channels)
        for exception, line in ((acked, f"Acknowledged by {slack['operator']}"), (late, late["key"])):
            page.radio[0].set_value(OWNER_CHANNELS[exception["owner"]]).run()  # the channel's name
            everything = "\n".join(m.value for m in page.markdown)
            assert exception["key"] in everything and line in everything, everything
    assert httpx.get(f"{loop.dashboard_url}/_stcore/health", timeout=5).text == "ok"

    # 9. Ctrl-C stops everything, children first, and leaves no process behind.
    os.killpg(loop.proc.pid, signal.SIGINT)
    assert loop.proc.wait(timeout=60) == 0, loop.banner()[-3000:]
    log = loop.banner()
    assert "tower.server: stopped (SIGINT)" in log and "Traceback" not in log, log[-3000:]
    assert log.index("demo stopped") < log.index("dashboard stopped") < log.index("stopped (SIGINT)")
    assert not [pid for pid in children if alive(pid)]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{slack['url']}/_standin/messages", timeout=2)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{loop.dashboard_url}/_stcore/health", timeout=2)
    print(
        f"\nexceptions after {opened_after:.1f}s, Slack messages after {alerts_after:.1f}s,"
        f" the whole loop in {time.monotonic() - started:.1f}s"
    )


def dashboard_page(loop: Loop, page: str, **query: str) -> AppTest:
    """A page of the dashboard, run against the running tower's API, signed in with the admin token."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["token"] = loop.admin
    at.run()
    at.query_params.clear()
    at.query_params.update(query)
    at = at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at
