"""A message Slack refuses for its content (its blocks, its length) is sent again as plain text instead of lost:
the stand-in refuses what Slack refuses (slack-sdk's Block Kit validation and the documented limits beyond it),
and the real slack-sdk client sends through it."""

from __future__ import annotations

from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from alerting.messages import PLAIN_MAX, plain_text
from alerting.sender import SlackSender
from alerting.standin import TEXT_MAX, Fault, SlackStandIn, block_problems
from kernel.clock import FixedClock
from kernel.store import Store
from tests.alerting.delivery_support import BOT_TOKEN, drain, msg, sender_for, slack_settings, webhook_settings


def header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text}}


def section(text: str, *fields: str) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if fields:
        block["fields"] = [{"type": "mrkdwn", "text": f} for f in fields]
    return block


def button(text: str = "Resolve", value: str = "e-1") -> dict[str, Any]:
    element = {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": text}, "value": value}
    return {"type": "actions", "elements": [element]}


# A renderer's mistake: a section over Slack's 3,000 characters.
TOO_LONG = [header("Order not released"), section("x" * 3001, "*Customer*\nC-1001"), button()]


@pytest.fixture
def sender(store: Store, clock: FixedClock, standin: SlackStandIn) -> SlackSender:
    return sender_for(store, clock, slack_settings(standin))


@pytest.mark.parametrize(
    ("blocks", "problem"),
    [
        ([section("ok")] * 51, "51 blocks"),
        ([header("h" * 151)], "150"),
        ([section("s" * 3001)], "3000"),
        ([section("s", *["f"] * 11)], "10 items"),
        ([section("s", "f" * 2001)], "fields[0]: over 2000"),
        ([{**section("s"), "block_id": "b" * 256}], "255"),
        ([button(text="b" * 76)], "button text over 75"),
        ([button(value="v" * 2001)], "button value over 2000"),
        ([{"type": "no-such-block"}], "not a block Slack knows"),
    ],
)
def test_the_standin_refuses_blocks_slack_refuses(blocks: list[dict[str, Any]], problem: str) -> None:
    problems = block_problems(blocks)
    assert len(problems) == 1 and problem in problems[0], problems
    assert block_problems([section("ok", "f" * 2000), header("h" * 150), button(text="b" * 75)]) == []


def test_a_post_refused_for_its_blocks_goes_out_as_plain_text(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    sender.outbox.enqueue([msg("E1", "#ops", blocks=TOO_LONG), msg("E2", "#ops", blocks=[section("fine")])])
    drain(sender, clock)
    assert sender.outbox.counts()["sent"] == 2
    first, second = standin.messages("#ops")
    assert "blocks" not in first and second["blocks"] == [section("fine")]  # the other message keeps its blocks
    assert first["text"] == "*Order not released*\n" + "x" * 3001 + "\n*Customer*: C-1001"  # no buttons
    assert first["metadata"]["event_payload"]["key"] == "E1"  # still found by the in-doubt check
    sent, refused = sender.outbox.deliveries(key="E1")  # newest first
    assert (refused["status"], refused["error"]) == ("retry", "invalid_blocks")
    assert "sent again as plain text" in refused["note"]
    assert sent["status"] == "ok"


def test_an_update_refused_for_its_blocks_replaces_the_message_with_plain_text(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    sender.outbox.enqueue(
        [
            msg("E1", "#ops", blocks=[section("open"), button()]),
            msg("E1/u", "#ops", action="update", parent="E1", text="E1 acknowledged", blocks=TOO_LONG),
        ]
    )
    drain(sender, clock)
    (message,) = standin.messages("#ops")
    assert message["blocks"] == []  # the old blocks (and their buttons) are gone: Slack would keep them otherwise
    assert message["text"].startswith("*Order not released*\nxxx")
    assert [d["status"] for d in sender.outbox.deliveries(key="E1/u")] == ["ok", "retry"]


def test_webhook_mode_falls_back_to_plain_text_too(store: Store, clock: FixedClock, standin: SlackStandIn) -> None:
    sender = sender_for(store, clock, webhook_settings(standin))
    sender.outbox.enqueue([msg("E1", "#alerts", blocks=TOO_LONG)])
    drain(sender, clock)
    (message,) = standin.messages("#alerts")
    assert "blocks" not in message and message["text"].startswith("*Order not released*")
    sent, refused = sender.outbox.deliveries(key="E1")  # newest first
    assert (refused["status"], refused["http_status"], refused["error"]) == ("retry", 400, "invalid_blocks")
    assert sent["status"] == "ok"


def test_text_over_slacks_limit_is_cut(sender: SlackSender, standin: SlackStandIn, clock: FixedClock) -> None:
    sender.outbox.enqueue([msg("E1", "#ops", text="y" * (TEXT_MAX + 1))])
    drain(sender, clock)
    (message,) = standin.messages("#ops")
    assert message["text"] == "y" * (PLAIN_MAX - 1) + "…"
    assert [(d["status"], d["error"]) for d in sender.outbox.deliveries(key="E1")] == [
        ("ok", ""),
        ("retry", "msg_too_long"),
    ]


def test_plain_text_refused_again_fails_for_good(sender: SlackSender, standin: SlackStandIn, clock: FixedClock) -> None:
    standin.fail("chat.postMessage", Fault.api_error("invalid_blocks"), Fault.api_error("invalid_blocks"))
    sender.outbox.enqueue([msg("E1", "#ops", blocks=[section("fine")]), msg("E2", "#ops")])
    drain(sender, clock)
    assert [(d["status"], d["note"]) for d in sender.outbox.deliveries(key="E1")] == [
        ("failed", "Slack refused it"),
        ("retry", "Slack refused the message's content (invalid_blocks): sent again as plain text"),
    ]
    assert [m["text"] for m in standin.messages("#ops")] == ["alert E2"]  # the channel goes on


def test_plain_text_of_blocks() -> None:
    blocks = [
        header("Title"),
        section("what", "*Key*\nSO-1", "*Owner*\nwarehouse"),
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": "Opened 16:00"}, {"type": "mrkdwn", "text": "e-1"}],
        },
        button(),
    ]
    assert plain_text(blocks, "fallback") == "*Title*\nwhat\n*Key*: SO-1\n*Owner*: warehouse\nOpened 16:00 · e-1"
    assert plain_text([button()], "fallback") == "fallback"


def delete(standin: SlackStandIn, channel: str, ts: str) -> None:
    """A person deletes a message in Slack."""
    WebClient(token=BOT_TOKEN, base_url=standin.api_url, retry_handlers=[]).chat_delete(channel=channel, ts=ts)


def test_an_update_of_a_message_deleted_in_slack_is_posted_anew_and_takes_its_place(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    sender.outbox.enqueue([msg("E1", "#ops", blocks=[section("open")])])
    drain(sender, clock)
    (original,) = standin.messages("#ops")
    delete(standin, "#ops", original["ts"])
    sender.outbox.enqueue([msg("E1/u1", "#ops", action="update", parent="E1", text="E1 acknowledged")])
    drain(sender, clock)
    sender.outbox.enqueue(
        [
            msg("E1/r1", "#ops", action="reply", parent="E1", text="acknowledged by ann"),
            msg("E1/u2", "#ops", action="update", parent="E1", text="E1 resolved"),
        ]
    )
    drain(sender, clock)
    (moved,) = standin.messages("#ops")  # the first update, posted anew, then threaded and edited by the next
    assert moved["ts"] != original["ts"] and moved["text"] == "E1 resolved"
    assert [r["text"] for r in standin.thread("#ops", moved["ts"])] == ["acknowledged by ann"]
    posted, refused = sender.outbox.deliveries(key="E1/u1")  # newest first
    assert (refused["status"], refused["error"], refused["action"]) == ("retry", "message_not_found", "update")
    assert "gone from Slack" in refused["note"]
    assert (posted["status"], posted["action"]) == ("ok", "post") and "is gone from Slack" in posted["note"]
    (parent,) = sender.outbox.get_many({"E1"}).values()
    assert (parent.status, parent.ts, parent.error) == ("sent", moved["ts"], "")
    assert sender.outbox.counts()["failed"] == 0


def test_a_reply_to_a_message_deleted_in_slack_is_posted_anew(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    sender.outbox.enqueue([msg("E1", "#ops")])
    drain(sender, clock)
    delete(standin, "#ops", standin.messages("#ops")[0]["ts"])
    sender.outbox.enqueue([msg("E1/r1", "#ops", action="reply", parent="E1", text="resolved by ann")])
    drain(sender, clock)
    # the reply takes the deleted alert's place: the whole alert, its line on top
    assert [m["text"] for m in standin.messages("#ops")] == ["resolved by ann\nalert E1"]
    assert [d["status"] for d in sender.outbox.deliveries(key="E1/r1")] == ["ok", "retry"]


def test_a_standin_started_again_keeps_its_channel_ids_so_old_messages_are_posted_anew(
    store: Store, clock: FixedClock
) -> None:
    """`tower serve --demo` started again on its data directory: a new stand-in, the tower's old messages gone."""
    with SlackStandIn(clock=clock, token=BOT_TOKEN) as first:
        port, api_url = first.port, first.api_url
        first_sender = sender_for(store, clock, slack_settings(first))
        first_sender.outbox.enqueue([msg("E1", "#ops-warehouse")])
        drain(first_sender, clock)
        old_id = first.channel_id("#ops-warehouse")
    with SlackStandIn(clock=clock, token=BOT_TOKEN, port=port) as again:
        assert again.api_url == api_url
        sender = sender_for(store, clock, slack_settings(again))
        sender.outbox.enqueue([msg("E1/u1", "#ops-warehouse", action="update", parent="E1", text="E1 acknowledged")])
        drain(sender, clock)
        assert again.channel_id("#ops-warehouse") == old_id
        assert [m["text"] for m in again.messages("#ops-warehouse")] == ["E1 acknowledged"]
        assert [d["error"] for d in sender.outbox.deliveries(key="E1/u1")] == ["", "message_not_found"]


def test_an_update_to_a_channel_id_slack_no_longer_knows_is_posted_anew_by_name(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    """#ops deleted and made again (or an older stand-in's id): the parent's channel id is unknown now."""
    sender.outbox.enqueue([msg("E1", "#ops")])
    drain(sender, clock)
    (parent,) = sender.outbox.get_many({"E1"}).values()
    sender.outbox.record(parent, channel_id="C9999999")
    sender.outbox.enqueue([msg("E1/u1", "#ops", action="update", parent="E1", text="E1 acknowledged")])
    drain(sender, clock)
    assert [m["text"] for m in standin.messages("#ops")][-1] == "E1 acknowledged"
    assert [d["error"] for d in sender.outbox.deliveries(key="E1/u1")] == ["", "channel_not_found"]
    sender.outbox.enqueue([msg("E2", "#nowhere-yet", action="update", parent="E1", text="x")])
    # a channel that is really missing still fails, as a post to it does: the stand-in makes channels on first use,
    # so ask it to refuse the post as Slack would
    standin.fail("chat.postMessage", Fault.api_error("channel_not_found"))
    (moved,) = sender.outbox.get_many({"E1"}).values()
    sender.outbox.record(moved, channel_id="C9999999")
    drain(sender, clock)
    assert [d["error"] for d in sender.outbox.deliveries(key="E2")] == ["channel_not_found", "channel_not_found"]
    assert sender.outbox.counts()["failed"] == 1


def test_the_standin_deletes_messages_and_refuses_an_unknown_one(standin: SlackStandIn) -> None:
    client = WebClient(token=BOT_TOKEN, base_url=standin.api_url, retry_handlers=[])
    ts = client.chat_postMessage(channel="#ops", text="x")["ts"]
    client.chat_delete(channel="#ops", ts=ts)
    assert standin.messages("#ops") == []
    with pytest.raises(SlackApiError, match="message_not_found"):
        client.chat_update(channel="#ops", ts=ts, text="y")
