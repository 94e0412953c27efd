"""docs/integrations.md stays true: its Python snippets (OpenTelemetry SDK) and its curl commands run as written
against a running tower, and what they send is stored."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from kernel.store.embedded import EmbeddedStore
from tests.support import RunningTower

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"
FENCE = re.compile(r"^```(?P<lang>\w+)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(lang: str) -> list[str]:
    return [m.group("body") for m in FENCE.finditer(DOC.read_text()) if m.group("lang") == lang]


def snippet_env(tower: RunningTower) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TOWER_"))}
    env["CONTROL_TOWER_URL"] = tower.http_url
    for system in ("erp", "wms", "edi", "middleware"):
        env[f"{system.upper()}_TOKEN"] = tower.token(system)
    return env


def count(store: EmbeddedStore, sql: str) -> int:
    return int(store.query(sql)[0]["n"])


def test_the_python_snippets_send_spans_and_an_event(tower: RunningTower, store: EmbeddedStore, tmp_path: Path) -> None:
    snippets = blocks("python")
    assert len(snippets) == 2
    for i, code in enumerate(snippets):
        script = tmp_path / f"snippet_{i}.py"
        script.write_text(code)
        done = subprocess.run(
            [sys.executable, str(script)], env=snippet_env(tower), capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "Failed to export" not in done.stderr, done.stderr
    spans = store.query(
        "SELECT SpanName, ServiceName, SpanAttributes['order.id'] AS order_id, TraceId FROM otel_traces"
        " ORDER BY Timestamp"
    )
    names = {(s["SpanName"], s["ServiceName"], s["order_id"]) for s in spans}
    assert ("erp.order.accept", "erp-order-service", "SO-10042") in names
    assert ("erp.order.price", "erp-order-service", "SO-10042") in names, "the alias erp.order.id maps to order.id"
    assert ("erp.order.accept", "erp-order-service", "SO-10043") in names
    events = store.query(
        "SELECT source, type, order_id, customer_id, warehouse, amount, trace_id, door FROM business_events FINAL"
    )
    assert len(events) == 1
    event = events[0]
    assert (event["source"], event["type"], event["order_id"], event["customer_id"], event["warehouse"]) == (
        "erp",
        "order.accepted",
        "SO-10043",
        "C-311",
        "DAL",
    )
    assert float(event["amount"]) == 1250.0
    linked = {s["TraceId"] for s in spans if s["order_id"] == "SO-10043"}
    assert event["trace_id"] in linked, "the log record emitted inside the span links the event to its trace"
    assert count(store, "SELECT count() AS n FROM dead_letters") == 0


def test_the_curl_commands_send_events_in_every_mode(tower: RunningTower, store: EmbeddedStore) -> None:
    commands = [b for b in blocks("sh") if "curl" in b]
    assert len(commands) == 4
    for command in commands:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            env=snippet_env(tower),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        assert '"accepted":' in done.stdout and '"rejected":[]' in done.stdout.replace(" ", ""), done.stdout
    rows = store.query("SELECT source, type, subject, shipment_id, sku, quantity, trace_id, data FROM business_events")
    by_type = {(r["type"], r["source"]) for r in rows}
    assert by_type == {
        ("shipment.confirmed", "wms/dallas"),
        ("inventory.snapshot", "wms/dallas"),
        ("asn.sent", "edi"),
        ("order.released", "middleware"),
    }
    assert len(rows) == 5
    assert sorted(float(r["quantity"]) for r in rows if r["type"] == "inventory.snapshot") == [35.0, 480.0]
    asn = next(r for r in rows if r["type"] == "asn.sent")
    assert asn["subject"] == "SH-88123" and '"partner":"ACME-RETAIL"' in asn["data"].replace(" ", "")
    released = next(r for r in rows if r["type"] == "order.released")
    assert released["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert count(store, "SELECT count() AS n FROM dead_letters") == 0


def test_the_keys_table_bolds_exactly_the_keys_the_door_requires() -> None:
    from kernel.model.events import EVENT_TYPES

    rows = re.findall(r"^\| `([a-z.]+)` \| [^|]+ \| (.+) \|$", DOC.read_text(), re.MULTILINE)
    table = {kind: keys for kind, keys in rows if kind in EVENT_TYPES}
    assert set(table) == set(EVENT_TYPES)
    for kind, keys in table.items():
        assert tuple(re.findall(r"\*\*`(\w+)`\*\*", keys)) == EVENT_TYPES[kind], kind


def test_the_batch_command_fails_when_the_answer_names_a_refused_event(tower: RunningTower) -> None:
    """A batch with a bad event is answered 200 (the good ones are stored), so `curl -f` succeeds: the documented
    command checks `rejected` and exits 1."""
    (batch,) = [b for b in blocks("sh") if "cloudevents-batch+json" in b]
    bad = batch.replace('"id": "wms-inv-2026-11-04T16:00-SKU-1002-DAL-A1", "source": "wms/dallas"', '"source": "wms"')
    assert bad != batch  # the second event has no id now
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", bad], env=snippet_env(tower), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert '"accepted":1' in done.stdout.replace(" ", "") and '"index":1' in done.stdout.replace(" ", "")
    assert "some events were refused: see rejected" in done.stderr
