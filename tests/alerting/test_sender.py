"""The sender with the real slack-sdk WebClient against the Slack stand-in: channels, order, pacing, updates
and threads, incoming-webhook mode, file uploads and the `alerts-send` job."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import pytest
from pydantic import SecretStr

from alerting.outbox import Outbox, Posted
from alerting.sender import AlertsSendSettings, DeliveryError, SlackSender, send_job
from alerting.standin import Fault, SlackStandIn
from kernel.clock import FixedClock
from kernel.jobs import JobContext
from kernel.store import Store
from tests.alerting.delivery_support import (
    T0,
    advance,
    drain,
    keys_in,
    msg,
    posted_keys,
    sender_for,
    slack_settings,
    webhook_settings,
)

SECTION = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Late release* SO-1"}}]


@pytest.fixture
def sender(store: Store, clock: FixedClock, standin: SlackStandIn) -> SlackSender:
    return sender_for(store, clock, slack_settings(standin))


def test_the_client_is_the_real_webclient_without_retry_handlers(sender: SlackSender, standin: SlackStandIn) -> None:
    assert sender.client is not None
    assert type(sender.client).__module__ == "slack_sdk.web.client"
    assert sender.client.retry_handlers == []  # our retries go through the outbox, by the clock
    assert sender.client.base_url == standin.api_url
    assert sender.client.auth_test()["ok"] is True


def test_messages_go_to_their_channels_in_order_one_per_second(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    sender.outbox.enqueue(
        [
            msg("w1", "#warehouse", blocks=SECTION),
            msg("o1", "#oncall"),
            msg("w2", "#warehouse"),
            msg("w3", "#warehouse"),
        ]
    )
    first = sender.send_due()
    assert (first.sent, first.waiting, first.calls) == (2, 2, 2)  # one per channel
    assert first.next_due == T0 + timedelta(seconds=1)
    assert sender.send_due().sent == 0  # same instant: both channels just had a message
    advance(clock, 0.5)
    assert sender.send_due().sent == 0
    advance(clock, 0.5)
    assert sender.send_due().sent == 1
    drain(sender, clock)
    assert keys_in(standin, "#warehouse") == ["w1", "w2", "w3"]
    assert keys_in(standin, "#oncall") == ["o1"]
    first_message = standin.messages("#warehouse")[0]
    assert first_message["text"] == "alert w1" and first_message["blocks"] == SECTION
    # the delivery log shows the pace: one call per channel per second on the tower's clock
    times = sorted(d["at"] for d in sender.outbox.deliveries() if d["channel"] == "#warehouse")
    assert times == [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
    assert sender.outbox.posted("w1") == Posted(standin.channel_id("#warehouse"), first_message["ts"])
    assert posted_keys(standin) == {"w1": 1, "w2": 1, "w3": 1, "o1": 1}


def test_update_and_reply_use_the_parents_channel_id_and_ts(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    sender.outbox.enqueue(
        [
            msg("E1", "#warehouse", text="SO-1 late release"),
            msg(
                "E1/r1",
                "#warehouse",
                action="update",
                parent="E1",
                text="SO-1 late release (acknowledged by ann)",
                exception_id="E1",
            ),
            msg("E1/t1", "#warehouse", action="reply", parent="E1", text="ann acknowledged", exception_id="E1"),
            msg("E1/t2", "#warehouse", action="reply", parent="E1", text="resolved: late by 3 h", exception_id="E1"),
        ],
    )
    drain(sender, clock)
    channel_id = standin.channel_id("#warehouse")
    (message,) = standin.messages("#warehouse")  # one message per exception; the rest edits it or threads under it
    assert message["text"] == "SO-1 late release (acknowledged by ann)"
    assert [e["text"] for e in message["edits"]] == ["SO-1 late release"]
    assert [r["text"] for r in standin.thread("#warehouse", message["ts"])] == [
        "ann acknowledged",
        "resolved: late by 3 h",
    ]
    (update,) = standin.calls_to("chat.update")
    assert update.body["channel"] == channel_id and update.body["ts"] == message["ts"]
    replies = [c for c in standin.calls_to("chat.postMessage") if c.body.get("thread_ts")]
    assert {(c.body["channel"], c.body["thread_ts"]) for c in replies} == {(channel_id, message["ts"])}
    assert sender.outbox.posted("E1/t1") is not None
    assert [d["action"] for d in reversed(sender.outbox.deliveries("E1"))] == ["post", "update", "reply", "reply"]


def test_an_update_replaced_by_a_later_one_is_not_sent(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    sender.outbox.enqueue(
        [msg("digest", "#warehouse", text="12 late releases")]
        + [
            msg(f"digest/u{n}", "#warehouse", action="update", parent="digest", text=f"{12 + n} late releases")
            for n in range(1, 6)
        ]
        + [msg("other", "#warehouse")]
    )
    drain(sender, clock)
    assert len(standin.calls_to("chat.update")) == 1  # only the newest content is worth a call
    assert [m["text"] for m in standin.messages("#warehouse")] == ["17 late releases", "alert other"]
    assert sender.outbox.counts() == {"pending": 0, "attempting": 0, "sent": 3, "failed": 0, "superseded": 4}
    (skipped,) = sender.outbox.deliveries(key="digest/u1")
    assert skipped["status"] == "superseded" and skipped["note"].startswith("superseded by digest/u5")


def test_a_child_waits_for_its_parent_in_another_channel(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    standin.fail("chat.postMessage", Fault.rate_limited(retry_after=5))
    sender.outbox.enqueue(
        [msg("p", "#warehouse"), msg("p/r", "#digest", action="reply", parent="p"), msg("d2", "#digest")]
    )
    report = sender.send_due()
    assert (report.sent, report.retried) == (0, 1)
    assert report.waiting == 2  # the reply waits for its parent, and #digest (FIFO) waits behind it
    advance(clock, 5)
    sender.send_due()
    assert keys_in(standin, "#warehouse") == ["p"]
    parent_ts = standin.messages("#warehouse")[0]["ts"]
    assert [r["text"] for r in standin.thread("#warehouse", parent_ts)] == ["alert p/r"]
    drain(sender, clock)
    assert keys_in(standin, "#digest") == ["d2"]


def test_children_of_a_failed_parent_are_posted_and_an_unknown_parent_fails(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    standin.fail("chat.postMessage", Fault.api_error("invalid_blocks"))
    sender.outbox.enqueue(
        [
            msg("p", "#ops"),
            msg("p/u", "#ops", action="update", parent="p", text="updated"),
            msg("orphan", "#ops", action="reply", parent="never-enqueued"),
        ]
    )
    drain(sender, clock)
    assert sender.outbox.counts() == {"pending": 0, "attempting": 0, "sent": 1, "failed": 2, "superseded": 0}
    assert [m["text"] for m in standin.messages("#ops")] == ["updated"]  # the update's content still reaches Slack
    (update_log,) = sender.outbox.deliveries(key="p/u")
    assert update_log["action"] == "post" and "parent p failed" in update_log["note"]
    (orphan,) = sender.outbox.deliveries(key="orphan")
    assert orphan["status"] == "failed" and "never-enqueued" in orphan["error"]
    (parent,) = sender.outbox.deliveries(key="p")
    assert (parent["status"], parent["error"], parent["note"]) == ("failed", "invalid_blocks", "Slack refused it")


def test_a_failed_alerts_first_later_message_takes_its_place_so_the_exception_keeps_one_message(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    """The audit's case: the alert's post failed (the bot not in the channel yet), later calls succeed. The first
    child posts the whole current alert (its line on top) and becomes the message the rest edit and reply under."""
    standin.fail("chat.postMessage", Fault.api_error("not_in_channel"))
    alert = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Late release* SO-1: open"}}]
    sender.outbox.enqueue([msg("E1", "#warehouse", text="[high] Late release: SO-1", blocks=alert)])
    drain(sender, clock)
    head = sender.outbox.get("E1")
    assert head is not None and head.status == "failed"
    escalated = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Late release* SO-1: escalated"}}]
    resolved = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Late release* SO-1: resolved"}}]
    sender.outbox.enqueue(
        [
            msg("E1/escalate", "#warehouse", action="reply", parent="E1", text="escalated"),
            msg("E1/u1", "#warehouse", action="update", parent="E1", text="[high] Late release", blocks=escalated),
            msg("E1/ack", "#warehouse", action="reply", parent="E1", text="acknowledged by ann"),
            msg("E1/resolved", "#warehouse", action="reply", parent="E1", text="resolved by ann"),
            msg("E1/u2", "#warehouse", action="update", parent="E1", text="Resolved: Late release", blocks=resolved),
        ]
    )
    drain(sender, clock)
    (top,) = standin.messages("#warehouse")  # one message for the exception
    assert top["metadata"]["event_payload"]["key"] == "E1/escalate"
    assert top["blocks"][-1]["text"]["text"] == "*Late release* SO-1: resolved"  # edited by the later update
    assert [r["text"] for r in standin.thread("#warehouse", top["ts"])] == ["acknowledged by ann", "resolved by ann"]
    placed = standin.calls_to("chat.postMessage")[1].body  # the whole alert as it is now: its newest update's
    assert [b["text"]["text"] for b in placed["blocks"]] == ["escalated", "*Late release* SO-1: resolved"]
    (first,) = [d for d in sender.outbox.deliveries(key="E1/escalate") if d["status"] == "ok"]
    assert "posted as a new message in its place" in first["note"]
    head = sender.outbox.get("E1")
    assert sender.outbox.posted("E1/escalate") is not None and head is not None and head.ts == top["ts"]


def test_webhook_mode_posts_everything_as_new_messages(store: Store, clock: FixedClock, standin: SlackStandIn) -> None:
    settings = webhook_settings(standin, webhook_urls={"#warehouse": standin.webhook_url("#warehouse")})
    assert settings.mode == "webhook" and settings.enabled
    sender = sender_for(store, clock, settings)
    sender.outbox.enqueue(
        [
            msg("E1", "#warehouse", blocks=SECTION),
            msg("E1/u", "#warehouse", action="update", parent="E1", text="acknowledged"),
            msg("E1/t", "#warehouse", action="reply", parent="E1", text="resolved"),
            msg("X1", "#oncall"),  # no webhook of its own: the default one (#alerts)
            msg("X2", "#finance"),  # shares the default webhook: paced with #oncall
        ]
    )
    first = sender.send_due()
    assert first.sent == 2  # #warehouse's webhook and the default webhook, one each
    drain(sender, clock)
    # a reply posted on its own names the alert it is about
    assert [m["text"] for m in standin.messages("#warehouse")] == [
        "alert E1",
        "acknowledged",
        "resolved (re: alert E1)",
    ]
    assert standin.messages("#warehouse")[0]["blocks"] == SECTION
    assert [m["text"] for m in standin.messages("#alerts")] == ["alert X1", "alert X2"]
    assert standin.calls_to("chat.postMessage") == [] and len(standin.calls_to("webhook")) == 5
    notes = {d["key"]: d["note"] for d in sender.outbox.deliveries()}
    assert notes["E1/u"] == "webhook mode: the update is posted as a new message"
    assert notes["E1/t"] == "webhook mode: the reply is posted as a new message"
    assert sender.outbox.posted("E1") == Posted("", "")
    at = {d["key"]: d["at"] for d in sender.outbox.deliveries()}
    assert at["X2"] - at["X1"] >= timedelta(seconds=1)


def test_webhook_mode_honours_429_and_retries_5xx(store: Store, clock: FixedClock, standin: SlackStandIn) -> None:
    sender = sender_for(store, clock, webhook_settings(standin))
    standin.fail("webhook", Fault.rate_limited(retry_after=4), Fault.server_error(503))
    sender.outbox.enqueue([msg("a", "#alerts")])
    assert sender.send_due().retried == 1
    advance(clock, 3)
    assert sender.send_due().calls == 0  # Retry-After not yet over
    advance(clock, 1)
    assert sender.send_due().retried == 1  # 503: backoff
    advance(clock, 2)
    assert sender.send_due().sent == 1
    assert [(d["status"], d["http_status"]) for d in reversed(sender.outbox.deliveries())] == [
        ("retry", 429),
        ("retry", 503),
        ("ok", 200),
    ]
    assert [m["text"] for m in standin.messages("#alerts")] == ["alert a"]


def test_a_channel_without_a_webhook_fails_visibly(store: Store, clock: FixedClock, standin: SlackStandIn) -> None:
    settings = webhook_settings(standin, webhook_url=None, webhook_urls={"#ops": standin.webhook_url("#ops")})
    sender = sender_for(store, clock, settings)
    sender.outbox.enqueue([msg("x", "#elsewhere")])
    assert sender.send_due().failed == 1
    (entry,) = sender.outbox.deliveries()
    assert entry["status"] == "failed" and "no incoming webhook URL for #elsewhere" in entry["error"]


def test_upload_uses_files_upload_v2_and_waits_out_a_429(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    standin.fail("files.completeUploadExternal", Fault.rate_limited(retry_after=7))
    posted = sender.upload("#finance", "sla-2026-10.csv", b"rule,breaches\nship-cutoff,3\n", "SLA breaches", "October")
    assert clock.now() == T0 + timedelta(seconds=7)  # waited by the injected sleep, on the clock
    assert posted == Posted(standin.channel_id("#finance"), standin.messages("#finance")[0]["ts"])
    (message,) = standin.messages("#finance")
    assert message["text"] == "October" and message["files"][0]["title"] == "SLA breaches"
    assert list(standin.uploads().values())[-1] == b"rule,breaches\nship-cutoff,3\n"
    assert [(d["action"], d["status"]) for d in reversed(sender.outbox.deliveries())] == [
        ("upload", "retry"),
        ("upload", "ok"),
    ]


def test_upload_failures_raise(store: Store, clock: FixedClock, standin: SlackStandIn) -> None:
    sender = sender_for(store, clock, slack_settings(standin, max_attempts=2))
    standin.fail("files.getUploadURLExternal", Fault.server_error(500), Fault.server_error(502))
    with pytest.raises(DeliveryError, match="failed"):
        sender.upload("#finance", "r.csv", b"x", "R")
    assert [d["status"] for d in reversed(sender.outbox.deliveries())] == ["retry", "failed"]
    webhook_only = sender_for(store, clock, webhook_settings(standin))
    with pytest.raises(DeliveryError, match="bot token"):
        webhook_only.upload("#finance", "r.csv", b"x", "R")


def test_an_upload_with_a_refused_token_fails_at_once(store: Store, clock: FixedClock, standin: SlackStandIn) -> None:
    sender = sender_for(store, clock, slack_settings(standin, bot_token=SecretStr("xoxb-not-the-right-one")))
    with pytest.raises(DeliveryError, match=r"refuses the tower's token \(invalid_auth\).*TOWER_SLACK_BOT_TOKEN"):
        sender.upload("#finance", "r.csv", b"x", "R")
    # no retry within the run (none could succeed): one attempt logged, no backoff waited on the clock
    assert [(d["status"], d["error"]) for d in sender.outbox.deliveries()] == [("failed", "invalid_auth")]
    assert clock.now() == T0


def test_a_stopping_sender_ends_an_uploads_backoff_at_once(
    store: Store, clock: FixedClock, standin: SlackStandIn
) -> None:
    # the real wait (no injected sleep), a 60 s backoff after a 500: stop() must not wait for it
    settings = slack_settings(standin, backoff_initial_seconds=60.0)
    sender = SlackSender(Outbox(store, clock), settings, clock)
    standin.fail("files.getUploadURLExternal", Fault.server_error(500))
    failed: list[BaseException] = []

    def upload() -> None:
        try:
            sender.upload("#finance", "r.csv", b"x", "R")
        except DeliveryError as exc:
            failed.append(exc)

    thread = threading.Thread(target=upload)
    thread.start()
    deadline = time.monotonic() + 10
    while not sender.outbox.deliveries() and time.monotonic() < deadline:  # the first attempt failed: it waits
        time.sleep(0.02)
    began = time.monotonic()
    sender.stop()
    thread.join(timeout=10)
    assert not thread.is_alive() and time.monotonic() - began < 5
    assert len(failed) == 1 and "abandoned: the tower is stopping" in str(failed[0])
    assert [d["status"] for d in sender.outbox.deliveries()] == ["retry"]


def test_without_slack_settings_nothing_is_sent(store: Store, clock: FixedClock, standin: SlackStandIn) -> None:
    sender = sender_for(store, clock, slack_settings(standin, bot_token=None))
    assert sender.mode == "off" and sender.client is None
    sender.outbox.enqueue([msg("a")])
    report = sender.send_due()
    assert (report.sent, report.waiting) == (0, 1)
    assert standin.calls == []


def test_the_job_runs_one_pass(sender: SlackSender, standin: SlackStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    assert AlertsSendSettings().interval_seconds == 2.0
    monkeypatch.setenv("TOWER_JOB_ALERTS_SEND_INTERVAL_SECONDS", "5")
    monkeypatch.setenv("TOWER_JOB_ALERTS_SEND_BATCH", "1")
    settings = AlertsSendSettings()
    assert settings.interval_seconds == 5.0 and settings.enabled
    job = send_job(sender)
    assert job.__doc__ and "Slack" in job.__doc__
    sender.outbox.enqueue([msg("a", "#one"), msg("b", "#two")])
    context = JobContext("alerts-send", settings, sender.clock, 1, logging.getLogger("test"))
    result = job(context)
    assert (result["sent"], result["waiting"]) == (1, 1)  # batch=1: one call per run
    assert len(standin.calls_to("chat.postMessage")) == 1


def test_the_job_asks_to_run_again_when_a_channels_next_message_is_due_before_the_next_pass(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    job = send_job(sender)
    settings = AlertsSendSettings()  # a pass every 2 s; a channel takes a message a second
    sender.outbox.enqueue([msg("a", "#one"), msg("b", "#one")])
    first = JobContext("alerts-send", settings, clock, 1, logging.getLogger("test"))
    result = job(first)
    assert (result["sent"], result["waiting"]) == (1, 1)
    assert len(standin.calls_to("chat.postMessage")) == 1
    assert first.again == [1.0]  # "b" is due a second after "a": run again then, not in 2 s
    clock.advance(timedelta(seconds=1))
    second = JobContext("alerts-send", settings, clock, 2, logging.getLogger("test"))
    assert job(second)["sent"] == 1 and second.again == []  # nothing left: no early run asked
    assert len(standin.calls_to("chat.postMessage")) == 2


def test_a_stopping_sender_sends_nothing_more(sender: SlackSender, standin: SlackStandIn) -> None:
    sender.outbox.enqueue([msg("a", "#ops"), msg("b", "#oncall")])
    sender.stop()
    report = sender.send_due()
    assert (report.sent, report.waiting, report.calls) == (0, 2, 0)
    assert standin.calls == []  # not one call to Slack
    assert {e.key for e in sender.outbox.open_entries()} == {"a", "b"}  # still in the outbox for the next start
