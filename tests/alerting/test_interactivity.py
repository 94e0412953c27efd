"""Slack interactivity: a valid signed request acknowledges or resolves; a bad signature, a stale timestamp,
a replayed request and an unknown user are refused and change nothing. End to end: an exception opened by
the engine reaches the stand-in through the real WebClient, and an Acknowledge click updates the message and
adds a line to its thread."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest

from alerting.interactivity import InteractionHandler
from alerting.messages import ACTION_ACKNOWLEDGE, ACTION_RESOLVE
from alerting.standin import SlackStandIn
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionRecord, ExceptionStore
from kernel.jobs import SchedulerSettings
from kernel.store import Store
from tests.alerting.policy_support import T0, open_exception, settings
from tests.factories import BASE_TIME, event_row, make_event, make_settings
from tower.app import Tower, build_tower, create_app

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def signed(
    payload: dict[str, Any], at: float, secret: str = SECRET, body: bytes | None = None
) -> tuple[bytes, dict[str, str]]:
    """A form body `payload=<JSON>` with Slack's headers, signed as Slack signs (v0 HMAC-SHA256)."""
    raw = body if body is not None else urlencode({"payload": orjson.dumps(payload).decode()}).encode()
    timestamp = str(int(at))
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + raw, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": f"v0={digest}",
    }
    return raw, headers


def click(exception_id: str, action_id: str = ACTION_ACKNOWLEDGE, user: str = "U0ANN") -> dict[str, Any]:
    """The block_actions payload Slack sends for a button click."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": "ann"},
        "team": {"id": "T0TEAM"},
        "container": {"type": "message", "channel_id": "C0CSORDERS", "message_ts": "1.000001"},
        "actions": [{"type": "button", "action_id": action_id, "value": exception_id, "block_id": "b"}],
        "response_url": "https://hooks.slack.test/actions/1",
    }


def outcomes(store: Store) -> list[str]:
    return [r["outcome"] for r in store.query("SELECT outcome FROM slack_interactions ORDER BY received_at, outcome")]


@pytest.fixture
def setup(store: Store) -> tuple[FixedClock, ExceptionStore, ExceptionRecord, InteractionHandler]:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    record = open_exception(exceptions)
    handler = InteractionHandler(store, exceptions, clock, settings(slack_users={"U0ANN": "ann"}), SECRET)
    return clock, exceptions, record, handler


Setup = tuple[FixedClock, ExceptionStore, ExceptionRecord, InteractionHandler]


def test_a_valid_signed_request_acknowledges_then_resolves(store: Store, setup: Setup) -> None:
    clock, exceptions, record, handler = setup
    changed: list[str] = []
    handler.on_change = changed.append
    result = handler.handle(*signed(click(record.id), clock.now().timestamp()))
    assert (result.status, result.outcome, result.operator) == (200, "acknowledged", "ann")
    assert exceptions.get(record.id).status == "acknowledged"
    assert exceptions.audit(record.id)[-1]["actor"] == "ann"
    assert changed == [record.id]

    clock.advance(timedelta(seconds=10))
    again = handler.handle(*signed(click(record.id), clock.now().timestamp()))  # a second click: a new request
    assert (again.status, again.outcome) == (200, "already")
    resolved = handler.handle(*signed(click(record.id, ACTION_RESOLVE), clock.now().timestamp()))
    assert (resolved.status, resolved.outcome) == (200, "resolved")
    final = exceptions.get(record.id)
    assert (final.status, final.resolution) == ("resolved", "fixed")
    assert exceptions.audit(record.id)[-1]["detail"] == {"resolution": "fixed", "note": "resolved from Slack"}
    assert outcomes(store) == ["acknowledged", "already", "resolved"]
    assert changed == [record.id, record.id]


@pytest.mark.parametrize(
    ("case", "status", "outcome"),
    [
        ("bad signature", 401, "bad-signature"),
        ("signed with another secret", 401, "bad-signature"),
        ("stale timestamp", 401, "stale"),
        ("timestamp from the future", 401, "stale"),
        ("no timestamp", 401, "bad-timestamp"),
        ("body changed after signing", 401, "bad-signature"),
        ("unknown user", 403, "unknown-user"),
    ],
)
def test_refused_requests_change_nothing(store: Store, setup: Setup, case: str, status: int, outcome: str) -> None:
    clock, exceptions, record, handler = setup
    now = clock.now().timestamp()
    body, headers = signed(click(record.id, user="U0MALLORY" if case == "unknown user" else "U0ANN"), now)
    if case == "bad signature":
        headers["X-Slack-Signature"] = "v0=" + "0" * 64
    elif case == "signed with another secret":
        body, headers = signed(click(record.id), now, secret="not-the-secret")
    elif case == "stale timestamp":
        body, headers = signed(click(record.id), now - 301)
    elif case == "timestamp from the future":
        body, headers = signed(click(record.id), now + 301)
    elif case == "no timestamp":
        del headers["X-Slack-Request-Timestamp"]
    elif case == "body changed after signing":
        body = body.replace(record.id.encode(), b"another-exception")
    result = handler.handle(body, headers)
    assert (result.status, result.outcome) == (status, outcome)
    assert exceptions.get(record.id).status == "open"
    assert [entry["action"] for entry in exceptions.audit(record.id)] == ["opened"]
    if outcome == "unknown-user":  # signed by Slack: recorded, the audit of Slack activity
        assert outcomes(store) == [outcome] and handler.refusals == {}
    else:  # anyone can send these: counted, not stored
        assert outcomes(store) == [] and handler.refusals == {outcome: 1}


def test_a_replayed_request_is_refused(store: Store, setup: Setup) -> None:
    clock, exceptions, record, handler = setup
    body, headers = signed(click(record.id, ACTION_RESOLVE), clock.now().timestamp())
    exceptions.acknowledge(record.id, actor="bob")
    first = handler.handle(body, headers)
    assert first.outcome == "resolved"
    exceptions.reopen(record.id, actor="bob", reason="not fixed after all")
    clock.advance(timedelta(minutes=4))  # still inside the five-minute window
    replayed = handler.handle(body, headers)
    assert (replayed.status, replayed.outcome) == (401, "replayed")
    assert exceptions.get(record.id).status == "open"  # the replay did not resolve it again
    assert outcomes(store) == ["resolved"] and handler.refusals == {"replayed": 1}  # the first is the memory
    # A new handler (a restarted tower) remembers, from the store.
    restarted = InteractionHandler(store, exceptions, clock, handler.settings, SECRET)
    assert restarted.handle(body, headers).outcome == "replayed"
    clock.advance(timedelta(minutes=2))  # and past the window it is stale anyway
    assert restarted.handle(body, headers).outcome == "stale"


def test_unauthenticated_requests_are_counted_not_stored_and_logged_once_a_minute(
    store: Store, setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    """300 POSTs with bad signatures were 300 rows kept 90 days and 300 warnings: now none stored, one warning,
    and a summary with the count once the minute is over (on the handler's clock)."""
    clock, exceptions, record, handler = setup
    forged, headers = signed(click(record.id, ACTION_RESOLVE), clock.now().timestamp(), secret="guessed")
    caplog.set_level(logging.INFO, "alerting.interactivity")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    for _ in range(300):
        assert handler.handle(forged, headers).outcome == "bad-signature"
    assert outcomes(store) == [] and handler.refusals == {"bad-signature": 300}
    assert warnings() == ["Slack interaction refused (bad-signature): the request signature does not verify"]

    clock.advance(timedelta(seconds=30))
    stale, old_headers = signed(click(record.id), clock.now().timestamp() - 600)
    assert handler.handle(stale, old_headers).outcome == "stale"
    assert len(warnings()) == 1  # still within the minute: counted only
    clock.advance(timedelta(seconds=31))
    assert handler.handle(*signed(click(record.id), clock.now().timestamp())).outcome == "acknowledged"
    assert warnings()[1] == (  # the next request of any kind after the minute writes the summary
        "Slack interactions refused; 300 more since 2026-11-02 16:00:00 UTC, not logged one by one"
        " (bad-signature 299, stale 1)"
    )
    assert outcomes(store) == ["acknowledged"]
    assert handler.handle(forged, headers).outcome == "bad-signature"
    assert len(warnings()) == 2  # the summary opened a new minute
    clock.advance(timedelta(minutes=1))
    assert handler.handle(forged, headers).outcome == "bad-signature"
    assert warnings()[2].startswith("Slack interaction refused (bad-signature): the request signature does not")
    assert warnings()[2].endswith("; 1 more since 2026-11-02 16:01:01 UTC, not logged one by one (bad-signature 1)")
    assert handler.refusals == {"bad-signature": 302, "stale": 1}
    assert exceptions.get(record.id).status == "acknowledged"


def test_without_a_signing_secret_interactivity_is_off(store: Store, setup: Setup) -> None:
    clock, exceptions, record, _ = setup
    handler = InteractionHandler(store, exceptions, clock, settings(), None)
    for _ in range(50):
        result = handler.handle(*signed(click(record.id), clock.now().timestamp()))
        assert (result.status, result.outcome) == (503, "not-configured")
    assert exceptions.get(record.id).status == "open"
    assert outcomes(store) == [] and handler.refusals == {"not-configured": 50}  # not one row per request


def test_other_payloads_are_answered_and_ignored(store: Store, setup: Setup) -> None:
    clock, exceptions, record, handler = setup
    now = clock.now().timestamp()
    link = click(record.id)
    link["actions"] = [{"type": "button", "action_id": "open-dashboard", "url": "https://x"}]
    assert handler.handle(*signed(link, now)).outcome == "ignored"
    assert handler.handle(*signed({**click(record.id), "type": "view_submission"}, now)).outcome == "ignored"
    assert handler.handle(*signed({}, now, body=b"payload=not-json")).status == 400
    assert handler.handle(*signed(click("no-such-id"), now)).outcome == "unknown-exception"
    assert exceptions.get(record.id).status == "open"


@pytest.fixture
def slack_tower(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Tower, SlackStandIn]]:
    """A tower on a fixed clock with Slack (bot mode) pointed at a stand-in, interactivity and one operator."""
    with SlackStandIn() as standin:
        for name, value in {
            "TOWER_SLACK_BOT_TOKEN": "xoxb-test",
            "TOWER_SLACK_API_URL": standin.api_url,
            "TOWER_SLACK_SIGNING_SECRET": SECRET,
            "TOWER_SLACK_CHANNEL_INTERVAL_SECONDS": "0",
            "TOWER_SLACK_DASHBOARD_URL": "http://dash.test",
            "TOWER_ALERTING_SLACK_USERS": '{"U0ANN": "ann"}',
        }.items():
            monkeypatch.setenv(name, value)
        clock = FixedClock(BASE_TIME + timedelta(hours=3))
        tower = build_tower(make_settings(tmp_path / "data"), clock, store, SchedulerSettings(enabled=False))
        yield tower, standin


def test_end_to_end_engine_to_slack_and_back(store: Store, slack_tower: tuple[Tower, SlackStandIn]) -> None:
    tower, standin = slack_tower
    assert tower.alerts is not None and tower.slack_sender is not None and isinstance(tower.clock, FixedClock)
    assert "alerts-dispatch" in tower.jobs and tower.jobs.get("alerts-dispatch").settings().interval_seconds == 15
    late, recent = make_event("order.accepted", 7, data={"customer_id": "C-77"}), make_event("order.accepted", 170)
    store.insert("business_events", [event_row(late), event_row(recent)])  # the ERP is not silent: 17:50
    report = tower.sla.evaluate(full=True)  # SO-7 accepted at 15:07, due 17:07; the clock says 18:00
    (exception_id,) = report.rules["order-release"].opened

    assert tower.alerts.run().posted == 1
    assert tower.slack_sender.send_due().sent == 1
    (message,) = standin.messages("#cs-orders")
    assert "SO-7" in message["text"] and "C-77" in orjson.dumps(message["blocks"]).decode()
    buttons = [e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [b["action_id"] for b in buttons] == [ACTION_ACKNOWLEDGE, ACTION_RESOLVE]

    app = create_app(tower)  # called through ASGI without its lifespan: nothing scheduled
    body, headers = signed(click(exception_id), tower.clock.now().timestamp())

    async def post(extra: dict[str, str]) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tower") as http:
            return await http.post("/slack/interactions", content=body, headers={**headers, **extra})

    assert asyncio.run(post({"X-Slack-Signature": "v0=00"})).status_code == 401
    assert asyncio.run(post({})).status_code == 200  # the ASGI call includes its background task
    assert tower.exceptions.get(exception_id).status == "acknowledged"
    assert asyncio.run(post({})).status_code == 401  # replayed

    # The answer's background task already enqueued the update and the thread line.
    assert tower.alerts.run().enqueued == 0
    assert tower.slack_sender.send_due().sent == 2
    (message,) = standin.messages("#cs-orders")
    assert "Acknowledged" in orjson.dumps(message["blocks"]).decode() and len(message["edits"]) == 1
    assert [b["action_id"] for b in message["blocks"][-1]["elements"]] == [ACTION_RESOLVE]
    (line,) = standin.thread("#cs-orders", message["ts"])
    assert line["text"] == ":eyes: Acknowledged by ann."
