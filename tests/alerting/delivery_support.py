"""Helpers for the delivery tests: a fixed clock, Slack settings pointing at a stand-in, senders with the
real slack-sdk WebClient, and a loop that drains the outbox on the fixed clock."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import SecretStr

from alerting.outbox import Action, OutboundMessage, Outbox
from alerting.sender import METADATA_EVENT, SendReport, SlackSender
from alerting.settings import SlackSettings
from alerting.standin import SlackStandIn
from kernel.clock import FixedClock
from kernel.store import Store

T0 = datetime(2026, 11, 2, 16, 0, tzinfo=UTC)
BOT_TOKEN = "xoxb-test-token"
TIMEOUT = 5.0  # the client's timeout in tests: the stand-in's answers come in time on a loaded machine too
FAULT_TIMEOUT = 0.2  # the timeout of the tests of slow answers (a slow fault answers after twice it)


def slack_settings(standin: SlackStandIn, **overrides: Any) -> SlackSettings:
    """Bot-mode settings against the stand-in, with a short timeout."""
    values: dict[str, Any] = {
        "bot_token": SecretStr(BOT_TOKEN),
        "api_url": standin.api_url,
        "timeout_seconds": TIMEOUT,
        "backoff_initial_seconds": 2.0,
        "backoff_max_seconds": 60.0,
        "max_attempts": 5,
    }
    values.update(overrides)
    return SlackSettings(**values)


def webhook_settings(standin: SlackStandIn, **overrides: Any) -> SlackSettings:
    """Webhook-mode settings: a default webhook to #alerts."""
    values: dict[str, Any] = {
        "webhook_url": SecretStr(standin.webhook_url("#alerts")),
        "timeout_seconds": TIMEOUT,
        "backoff_initial_seconds": 2.0,
        "max_attempts": 5,
    }
    values.update(overrides)
    return SlackSettings(**values)


def sender_for(store: Store, clock: FixedClock, settings: SlackSettings) -> SlackSender:
    """A SlackSender over a new Outbox on `store`; its WebClient is the real one `make_client` builds."""
    return SlackSender(Outbox(store, clock), settings, clock, sleep=lambda seconds: advance(clock, seconds))


def advance(clock: FixedClock, seconds: float) -> None:
    clock.advance(timedelta(seconds=seconds))


def msg(
    key: str,
    channel: str = "#ops",
    *,
    action: Action = "post",
    parent: str | None = None,
    text: str | None = None,
    exception_id: str = "",
    blocks: list[dict[str, Any]] | None = None,
) -> OutboundMessage:
    """An outbound message whose text names its key."""
    return OutboundMessage(
        key=key,
        channel=channel,
        text=text or f"alert {key}",
        blocks=blocks,
        action=action,
        parent=parent,
        exception_id=exception_id or key,
    )


def drain(sender: SlackSender, clock: FixedClock, step: float = 1.0, passes: int = 200) -> list[SendReport]:
    """Run passes, moving the clock by `step` between them, until nothing is open; the reports of every pass."""
    reports: list[SendReport] = []
    for _ in range(passes):
        reports.append(sender.send_due())
        if not sender.outbox.open_entries():
            return reports
        advance(clock, step)
    raise AssertionError(f"the outbox did not drain in {passes} passes: {sender.outbox.counts()}")


def keys_in(standin: SlackStandIn, channel: str) -> list[str]:
    """The outbox keys of a channel's top-level messages (from their metadata), in order."""
    return [
        m["metadata"]["event_payload"]["key"]
        for m in standin.messages(channel)
        if m.get("metadata", {}).get("event_type") == METADATA_EVENT
    ]


def posted_keys(standin: SlackStandIn) -> Counter[str]:
    """How many times each outbox key was posted, in every channel and thread."""
    counts: Counter[str] = Counter()
    for channel in standin.snapshot()["channels"]:
        for message in channel["messages"]:
            for m in [message, *message["thread"]]:
                key = (m.get("metadata") or {}).get("event_payload", {}).get("key")
                if key:
                    counts[key] += 1
    return counts
