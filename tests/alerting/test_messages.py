"""Block Kit messages: what an exception's message says in each state, digests, thread lines; every block
passes slack-sdk's own Block Kit validation (lengths, element shapes)."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from slack_sdk.models.blocks import Block

from alerting.messages import (
    ACTION_ACKNOWLEDGE,
    ACTION_RESOLVE,
    AlertView,
    DigestView,
    Links,
    change_line,
    digest_blocks,
    duration_text,
    escape,
    exception_blocks,
    notification_text,
    resolution_line,
)
from alerting.standin import block_problems
from kernel.exceptions import ExceptionRecord

NOW = datetime(2026, 11, 2, 18, 5, tzinfo=UTC)
LINKS = Links("https://tower.example/dash/")


def record(**overrides: Any) -> ExceptionRecord:
    values: dict[str, Any] = {
        "id": "e-1",
        "rule": "order-release",
        "key": "SO-1",
        "kind": "business",
        "owner": "customer_service",
        "severity": "high",
        "status": "open",
        "opened_at": "2026-11-02 16:00:00.000000",
        "due_at": "2026-11-02 16:00:00.000000",
        "resolved_at": None,
        "resolution": "",
        "resolution_detail": "",
        "assignee": "",
        "context": {"customer_id": "C-1001", "warehouse": "DAL", "source": "erp"},
        "updated_at": "2026-11-02 16:00:00.000000",
        "version": 1,
    }
    values.update(overrides)
    return ExceptionRecord(**values)


def valid(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The blocks, after slack-sdk parsed and validated each one."""
    for block in blocks:
        parsed = Block.parse(block)
        assert parsed is not None, block
        parsed.validate_json()
    assert block_problems(blocks) == []  # nor any limit beyond slack-sdk's that the Slack stand-in enforces
    return blocks


def texts(blocks: list[dict[str, Any]]) -> str:
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                found.append(item) if name == "text" and isinstance(item, str) else walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(blocks)
    return "\n".join(found)


def view(**overrides: Any) -> AlertView:
    values: dict[str, Any] = {"title": "Order released within 2 hours", "links": LINKS, "now": NOW}
    values.update(overrides)
    return AlertView(**values)


def test_an_open_business_exception() -> None:
    blocks = valid(exception_blocks(record(), view()))
    header, summary, links, context, actions = blocks
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Missed: Order released within 2 hours", "emoji": True},
    }  # the rule's title says what should have happened
    assert summary["text"]["text"] == ":red_circle: *order-release* · business exception"
    assert [f["text"] for f in summary["fields"]] == [
        "*Key*\nSO-1",
        "*Customer*\nC-1001",
        "*Warehouse*\nDAL",
        "*Late by*\n2h05m (due 2026-11-02 16:00 UTC)",
        "*Owner*\ncustomer_service",
        "*Severity*\nhigh",
        "*Status*\nOpen",
    ]
    assert links["text"]["text"] == (
        "<https://tower.example/dash/queue?exception=e-1|Open in the dashboard> · "
        "<https://tower.example/dash/timeline?key=SO-1|Timeline>"
    )
    assert context["elements"][0]["text"] == "Opened 2026-11-02 16:00 UTC · exception e-1"
    assert [(b["action_id"], b["value"], b["style"]) for b in actions["elements"]] == [
        (ACTION_ACKNOWLEDGE, "e-1", "primary"),
        (ACTION_RESOLVE, "e-1", "danger"),
    ]
    assert notification_text(record(), "Order released") == "[high] Missed: Order released: SO-1 (customer_service)"


def test_acknowledged_assigned_and_resolved() -> None:
    acknowledged = valid(exception_blocks(record(status="acknowledged", assignee="bob"), view()))
    assert "*Status*\nAcknowledged, assigned to bob" in texts(acknowledged)
    assert [b["action_id"] for b in acknowledged[-1]["elements"]] == [ACTION_RESOLVE]
    resolved = record(status="resolved", resolution="late", resolved_at="2026-11-02 18:00:00.000000")
    blocks = valid(exception_blocks(resolved, view()))
    assert all(b["type"] != "actions" for b in blocks)
    assert blocks[1]["text"]["text"].startswith(":white_check_mark:")
    assert "*Status*\nResolved (late)" in texts(blocks) and "*Due*\n2026-11-02 16:00 UTC" in texts(blocks)
    assert notification_text(resolved, "Order released") == "Resolved: Order released: SO-1 (customer_service)"


def test_a_pending_deadline_and_unknown_context() -> None:
    blocks = valid(exception_blocks(record(due_at="2026-11-02 19:00:00.000000", context={}), view()))
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert fields[0] == "*Key*\nSO-1" and "*Due in*\n55m (2026-11-02 19:00 UTC)" in fields
    assert not any(f.startswith(("*Customer*", "*Warehouse*")) for f in fields)
    assert blocks[0]["text"]["text"] == "Order released within 2 hours"  # not missed yet


def test_a_cutoff_rules_due_time_is_also_shown_in_the_warehouse_zone() -> None:
    """A Dallas lead reads the cutoff in Dallas time; UTC stays for the others (the zone is the case's, from the
    cutoff rule)."""
    zoned = record(context={"warehouse": "DAL", "zone": "America/Chicago"})
    fields = [f["text"] for f in valid(exception_blocks(zoned, view()))[1]["fields"]]
    assert "*Late by*\n2h05m (due 2026-11-02 16:00 UTC, Mon 10:00 CST)" in fields
    unknown = record(context={"zone": "Mars/Olympus"})  # never shown wrong: UTC alone
    assert "*Late by*\n2h05m (due 2026-11-02 16:00 UTC)" in texts(valid(exception_blocks(unknown, view())))


def test_technical_exceptions_say_how_long_silent_or_how_many_errors() -> None:
    silent = record(
        rule="source-silence",
        key="wms/dallas",
        kind="technical",
        owner="integration",
        due_at=None,
        context={"source": "wms/dallas", "last_seen": "2026-11-02T17:20:00.000000Z", "silent_for": "30m"},
    )
    blocks = valid(exception_blocks(silent, view(title="Source stopped sending", held=3)))
    assert "*Source*\nwms/dallas" in texts(blocks)
    assert "*Silent for*\n45m (last seen 2026-11-02 17:20 UTC)" in texts(blocks)
    assert "Holding back *3* business exceptions this failure explains" in texts(blocks)
    assert "timeline?key=wms%2Fdallas" in texts(blocks)
    errors = record(
        rule="integration-errors",
        key="wms-connector|POST /wms/orders",
        kind="technical",
        owner="integration",
        due_at=None,
        context={
            "service": "wms-connector",
            "span_name": "POST /wms/orders",
            "spans": 40,
            "errors": 9,
            "ratio": 0.225,
            "window": "15m",
        },
    )
    blocks = valid(exception_blocks(errors, view(title="Integration errors", escalated_to="<!subteam^S0ONCALL1>")))
    assert "*Service*\nwms-connector / POST /wms/orders" in texts(blocks)
    assert "*Errors when opened*\n9 of 40 spans (22%) in 15m" in texts(blocks)
    assert "timeline?key=wms-connector%7CPOST%20%2Fwms%2Forders" in texts(blocks)
    assert "escalated to <!subteam^S0ONCALL1>" in texts(blocks)
    refusals = record(
        rule="ingest-refusals",
        key="wms/dallas",
        kind="technical",
        owner="integration",
        due_at=None,
        context={
            "source": "wms/dallas",
            "root_cause": False,
            "refused": 12,
            "window": "15m",
            "reasons": ["time: '2026-11-02T09:00:00' is not RFC 3339"],
        },
    )
    blocks = valid(exception_blocks(refusals, view(title="Records refused into dead letters")))
    assert "*Source*\nwms/dallas" in texts(blocks) and "*Refused when opened*\n12 records in 15m" in texts(blocks)
    assert "*Reason*\ntime: '2026-11-02T09:00:00' is not RFC 3339" in texts(blocks)
    reuse = record(
        rule="event-id-reuse",
        key="erp",
        kind="technical",
        owner="integration",
        due_at=None,
        context={"source": "erp", "reused_ids": 4, "window": "1h", "examples": ["SO-1", "SO-2", "SO-3", "SO-4"]},
    )
    blocks = valid(exception_blocks(reuse, view(title="Event ids reused for different events")))
    assert "*Source*\nerp" in texts(blocks) and "*Reused ids*\n4 in 1h: SO-1, SO-2, SO-3, ..." in texts(blocks)
    deliveries = record(
        rule="slack-delivery",
        key="#ops-warehouse",
        kind="technical",
        owner="integration",
        due_at=None,
        context={
            "channel": "#ops-warehouse",
            "root_cause": False,
            "failed": 3,
            "reasons": ["not_in_channel"],
            "next_step": "invite the bot, then `tower alerts resend #ops-warehouse`",
        },
    )
    blocks = valid(exception_blocks(deliveries, view(title="Slack messages not delivered")))
    assert "*Failed*\n3 messages to #ops-warehouse" in texts(blocks) and "*Reason*\nnot_in_channel" in texts(blocks)
    assert "Next: invite the bot, then `tower alerts resend #ops-warehouse`" in texts(blocks)
    done = dataclasses.replace(deliveries, status="resolved", resolved_at="2026-11-02 17:00:00.000000")
    assert "Next:" not in texts(valid(exception_blocks(done, view(title="Slack messages not delivered"))))


def finding(rule: str, key: str, owner: str, summary: str, kind: str = "business", **context: Any) -> ExceptionRecord:
    """An exception a reconciler opened: its context holds the run and the summary (reconcilers/loop.py)."""
    return record(
        rule=rule,
        key=key,
        kind=kind,
        owner=owner,
        severity="medium",
        due_at=None,
        context={**context, "summary": summary, "run_id": "run-1"},
    )


def test_a_reconciliation_finding_says_what_is_wrong() -> None:
    invoice = finding(
        "invoice-match",
        "INV-JBR-00180",
        "finance",
        "INV-JBR-00180: invoiced 1822.76 vs order 1701.60 USD (tolerance 0.5%)",
        customer_id="C-JBR",
        invoice_id="INV-JBR-00180",
    )
    blocks = valid(exception_blocks(invoice, view(title="Invoice matches the order and the shipment")))
    assert [f["text"] for f in blocks[1]["fields"]] == [
        "*Key*\nINV-JBR-00180",
        "*Customer*\nC-JBR",
        "*Finding*\ninvoiced 1822.76 vs order 1701.60 USD (tolerance 0.5%)",
        "*Owner*\nfinance",
        "*Severity*\nmedium",
        "*Status*\nOpen",
    ]
    assert notification_text(invoice, "Invoice matches the order and the shipment") == (
        "[medium] Invoice matches the order and the shipment: INV-JBR-00180 (finance)"
        " — invoiced 1822.76 vs order 1701.60 USD (tolerance 0.5%)"
    )
    oversell = finding(
        "inventory-oversell",
        "SKU-10012@ATL",
        "warehouse",
        "SKU-10012@ATL: sellable 44 on ecommerce, 37 available in wms/atlanta (excess 7, tolerance 0)",
        warehouse="ATL",
        sku="SKU-10012",
    )
    blocks = valid(exception_blocks(oversell, view(title="Storefront sells more than the warehouse has")))
    assert "*Warehouse*\nATL" in texts(blocks)
    assert "*Finding*\nsellable 44 on ecommerce, 37 available in wms/atlanta (excess 7, tolerance 0)" in texts(blocks)
    stale = finding(
        "inventory-stale",
        "wms/reno",
        "integration",
        "wms/reno: last inventory snapshot 2026-11-02T15:00:00Z (3.1 h ago; stale after 2 h)",
        kind="technical",
        source="wms/reno",
    )
    blocks = valid(exception_blocks(stale, view(title="Inventory snapshots stale")))
    assert "*Source*\nwms/reno" in texts(blocks)
    assert "*Finding*\nlast inventory snapshot 2026-11-02T15:00:00Z (3.1 h ago; stale after 2 h)" in texts(blocks)
    # resolved: the message still says what was found; the notification no longer reads as if it still were
    done = dataclasses.replace(oversell, status="resolved", resolution="reconciled", resolved_at=invoice.opened_at)
    assert "*Finding*\nsellable 44 on ecommerce" in texts(valid(exception_blocks(done, view())))
    assert notification_text(done, "Oversold") == "Resolved: Oversold: SKU-10012@ATL (warehouse)"


def test_a_findings_summary_is_escaped_on_one_line_and_bounded() -> None:
    nasty = finding(
        "inventory-sync", "SKU-<1>@DAL", "warehouse", "SKU-<1>@DAL: erp 10 vs\nwms <!channel> & co " + "x" * 5000
    )
    blocks = valid(exception_blocks(nasty, view(title="ERP and WMS inventory agree")))
    (found,) = [f["text"] for f in blocks[1]["fields"] if f["text"].startswith("*Finding*")]
    assert found.startswith("*Finding*\nerp 10 vs wms &lt;!channel&gt; &amp; co xxx")
    assert len(found) < 600 and found.endswith("x…")
    text = notification_text(nasty, "ERP and WMS inventory agree")
    assert text.startswith("[medium] ERP and WMS inventory agree: SKU-&lt;1&gt;@DAL (warehouse) — erp 10 vs wms &lt;!")
    assert "\n" not in text and len(text) < 300 and text.endswith("x…")


def test_other_exceptions_show_no_finding_of_their_summary() -> None:
    # technical rules put a summary in their context too, but their own figures (Refused, Reason) already say it
    refusals = record(
        rule="ingest-refusals",
        key="wms",
        kind="technical",
        owner="integration",
        due_at=None,
        context={"source": "wms", "refused": 2, "window": "15m", "reasons": ["bad"], "summary": "2 records refused"},
    )
    blocks = valid(exception_blocks(refusals, view(title="Records refused into dead letters")))
    assert "Finding" not in texts(blocks)
    assert notification_text(refusals, "Records refused") == "[high] Records refused: wms (integration)"


def test_text_is_escaped_and_cut_to_slacks_limits() -> None:
    context = {"customer_id": "x" * 5000, "warehouse": "w" * 5000, "reasons": ["r" * 5000], "next_step": "n" * 5000}
    nasty = record(key="<!channel> & co", context=context)
    blocks = valid(exception_blocks(nasty, view(title="T" * 400, note="N" * 5000)))
    assert len(blocks[0]["text"]["text"]) == 150
    assert "*Key*\n&lt;!channel&gt; &amp; co" in texts(blocks)
    assert escape("a<b>&c") == "a&lt;b&gt;&amp;c"


def test_a_digest() -> None:
    digest = DigestView(
        owner="warehouse",
        rule="ship-cutoff",
        title="Shipped by the daily cutoff",
        severity="high",
        count=37,
        keys=["SO-1", "SO-2"],
        started_at=NOW,
        window=timedelta(seconds=60),
        threshold=5,
    )
    blocks = valid(digest_blocks(digest, LINKS))
    assert blocks[0]["text"]["text"] == "37 × Shipped by the daily cutoff"
    assert "*37* exceptions of *ship-cutoff* for *warehouse*" in texts(blocks)
    assert "First keys: SO-1, SO-2 and 35 more" in texts(blocks)
    assert "<https://tower.example/dash/queue?owner=warehouse&rule=ship-cutoff&status=open|" in texts(blocks)
    assert "Grouped: more than 5 within 1m." in texts(blocks)
    one = valid(digest_blocks(replace(digest, count=1, keys=["SO-9"]), LINKS))  # the first of a new window
    assert "*1* exception of *ship-cutoff* for *warehouse*" in texts(one) and "Key: SO-9" in texts(one)


def test_thread_lines() -> None:
    r = record()
    assert change_line("acknowledged", "ann", {}, r) == ":eyes: Acknowledged by ann."
    assert change_line("assigned", "ann", {"assignee": ""}, r) == "Unassigned by ann."
    assert change_line("reopened", "engine", {"reason": "still wrong"}, r) == (
        ":arrows_counterclockwise: Reopened by engine: still wrong"
    )
    assert change_line("opened", "engine", {}, r) is None
    assert resolution_line("engine", {"resolution": "recovered"}) == ":white_check_mark: Resolved: recovered."
    assert (
        resolution_line("engine", {"resolution": "recovered", "pending": 0})
        == ":white_check_mark: Resolved: recovered."
    )
    assert resolution_line("engine", {"resolution": "recovered", "pending": 1200}) == (
        ":white_check_mark: Resolved: recovered. 1,200 refused records still wait in dead letters: replay them once"
        " fixed (`tower deadletters replay`)."
    )
    assert resolution_line("engine", {"resolution": "late", "hours_late": 26.5}) == (
        ":white_check_mark: Resolved: the awaited event arrived 1d2h after the deadline."
    )
    assert resolution_line("ann", {"resolution": "duplicate"}) == ":white_check_mark: Resolved by ann (duplicate)."
    assert [duration_text(timedelta(seconds=s)) for s in (5, 600, 7500, 90000)] == ["5s", "10m", "2h05m", "1d1h"]
