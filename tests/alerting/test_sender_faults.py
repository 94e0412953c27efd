"""The sender under Slack's faults, with the real WebClient against the stand-in: 429 Retry-After, 5xx and
connection errors with backoff, timeouts (posts in doubt), permanent errors. Nothing lost, nothing doubled."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from alerting.sender import AlertsSendSettings, SlackRefused, SlackSender, send_job
from alerting.standin import Fault, SlackStandIn
from kernel.clock import FixedClock
from kernel.jobs import JobContext
from kernel.store import Store
from tests.alerting.delivery_support import (
    BOT_TOKEN,
    FAULT_TIMEOUT,
    T0,
    advance,
    drain,
    keys_in,
    msg,
    posted_keys,
    sender_for,
    slack_settings,
)
from tests.support import free_port

SLOW = FAULT_TIMEOUT * 2  # a slow answer outlasts the client's timeout


@pytest.fixture
def sender(store: Store, clock: FixedClock, standin: SlackStandIn) -> SlackSender:
    return sender_for(store, clock, slack_settings(standin, timeout_seconds=FAULT_TIMEOUT))


def statuses(sender: SlackSender, key: str) -> list[tuple[str, int]]:
    """(status, http status) of each attempt of one message, oldest first."""
    return [(d["status"], d["http_status"]) for d in reversed(sender.outbox.deliveries(key=key))]


def test_429_holds_the_message_and_its_channel_until_retry_after(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    standin.fail("chat.postMessage", Fault.rate_limited(retry_after=3))
    sender.outbox.enqueue([msg("a", "#ops"), msg("b", "#ops"), msg("c", "#wms")])
    first = sender.send_due()
    assert (first.sent, first.retried, first.waiting) == (1, 1, 1)  # #wms is not held back by #ops's 429
    assert first.next_due == T0 + timedelta(seconds=3)
    advance(clock, 2.9)
    assert sender.send_due().calls == 0  # neither a nor b (FIFO behind a) before Retry-After is over
    advance(clock, 0.1)
    assert sender.send_due().sent == 1
    drain(sender, clock)
    assert keys_in(standin, "#ops") == ["a", "b"]
    assert statuses(sender, "a") == [("retry", 429), ("ok", 200)]
    (retry, _) = reversed(sender.outbox.deliveries(key="a"))
    assert retry["note"] == "rate limited: retry after 3 s" and retry["error"] == "ratelimited"
    assert len(standin.calls_to("chat.postMessage")) == 4  # one call per attempt: no retry inside the SDK


@pytest.mark.parametrize(
    ("header", "wait"),
    [("inf", 1.0), ("nan", 1.0), ("soon", 1.0), ("-3", 0.0), ("1e12", 3600.0), ("0.5", 0.5)],
)
def test_a_retry_after_that_is_no_usable_wait_holds_the_message_a_bounded_time(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock, header: str, wait: float
) -> None:
    """Retry-After "inf" or "nan" (a proxy's) stopped the pass with an error, every pass, so nothing went out; a huge
    one held the channel for years. Unreadable is 1 s, negative none, and no wait is over an hour."""
    standin.fail("chat.postMessage", Fault.rate_limited(retry_after=header))
    sender.outbox.enqueue([msg("a")])
    assert sender.send_due().retried == 1
    entry = sender.outbox.get("a")
    assert entry is not None and entry.status == "pending" and entry.next_at == T0 + timedelta(seconds=wait)
    drain(sender, clock, step=max(wait, 0.5))
    assert keys_in(standin, "#ops") == ["a"]


def test_5xx_retries_with_exponential_backoff_then_succeeds(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    standin.fail("chat.postMessage", Fault.server_error(500), Fault.server_error(503))
    sender.outbox.enqueue([msg("a")])
    sender.send_due()
    entry = sender.outbox.get("a")
    assert entry is not None and entry.status == "pending" and entry.next_at == T0 + timedelta(seconds=2)
    assert entry.in_doubt  # a 5xx may come after the post went out (a proxy's 502): the next attempt looks first
    advance(clock, 2)
    sender.send_due()
    entry = sender.outbox.get("a")
    assert entry is not None and entry.next_at == T0 + timedelta(seconds=6)  # 2 s, then 4 s
    advance(clock, 3.9)
    assert sender.send_due().calls == 0
    advance(clock, 0.1)
    assert sender.send_due().sent == 1
    assert statuses(sender, "a") == [("retry", 500), ("retry", 503), ("ok", 200)]
    assert keys_in(standin, "#ops") == ["a"]


def test_after_max_attempts_the_message_fails_visibly_and_the_channel_moves_on(
    store: Store, clock: FixedClock, standin: SlackStandIn
) -> None:
    sender = sender_for(store, clock, slack_settings(standin, max_attempts=3))
    standin.fail("chat.postMessage", *[Fault.server_error(502)] * 3)
    sender.outbox.enqueue([msg("doomed"), msg("next")])
    drain(sender, clock)
    assert statuses(sender, "doomed") == [("retry", 502), ("retry", 502), ("failed", 502)]
    last = sender.outbox.deliveries(key="doomed")[0]
    assert last["note"] == "gave up after 3 failed attempts (the last attempt may have been delivered)"
    assert last["attempt"] == 3
    assert sender.outbox.counts() == {"pending": 0, "attempting": 0, "sent": 1, "failed": 1, "superseded": 0}
    assert keys_in(standin, "#ops") == ["next"]


@pytest.mark.parametrize("fault", [Fault.lost_answer(502), Fault(error="internal_error", carried_out=True)])
def test_a_post_answered_with_an_error_after_it_went_out_is_not_posted_twice(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock, fault: Fault
) -> None:
    """A proxy's 502 after Slack posted, or Slack's own internal_error ('some of it may have succeeded'): the next
    attempt finds the message in the channel's history instead of posting it again."""
    standin.fail("chat.postMessage", fault)  # the stand-in posts, then answers the error
    sender.outbox.enqueue([msg("a")])
    sender.send_due()
    entry = sender.outbox.get("a")
    assert entry is not None and entry.in_doubt and entry.status == "pending"
    drain(sender, clock)
    assert keys_in(standin, "#ops") == ["a"]  # once
    entry = sender.outbox.get("a")
    assert entry is not None and entry.status == "sent"


def test_a_permanent_error_fails_at_once(sender: SlackSender, standin: SlackStandIn) -> None:
    standin.fail("chat.postMessage", Fault.api_error("channel_not_found"))
    sender.outbox.enqueue([msg("a", "#gone")])
    assert sender.send_due().failed == 1
    assert statuses(sender, "a") == [("failed", 200)]
    assert sender.outbox.deliveries(key="a")[0]["error"] == "channel_not_found"


def test_a_connection_error_is_retried(store: Store, clock: FixedClock) -> None:
    nobody = SlackStandIn(clock=clock)  # bound, never started: the port refuses connections
    port = free_port()
    nobody.stop()
    with SlackStandIn(port=port, clock=clock) as standin:
        api_url = standin.api_url
    sender = sender_for(store, clock, slack_settings(standin, api_url=api_url))
    sender.outbox.enqueue([msg("a")])
    assert sender.send_due().retried == 1  # the stand-in is stopped: connection refused
    (attempt,) = sender.outbox.deliveries()
    assert attempt["status"] == "retry" and attempt["http_status"] == 0 and "refused" in attempt["error"]
    entry = sender.outbox.get("a")
    assert entry is not None and not entry.in_doubt  # refused: nothing reached Slack
    with SlackStandIn(port=port, clock=clock) as again:
        advance(clock, 2)
        assert sender.send_due().sent == 1
        assert keys_in(again, "#ops") == ["a"]


def test_a_timed_out_post_found_in_the_history_is_not_sent_again(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    sender.outbox.enqueue([msg("first"), msg("slow")])
    sender.send_due()  # `first` teaches the sender the channel's id
    standin.fail("chat.postMessage", Fault.slow(SLOW))  # carried out, answered after the client gave up
    advance(clock, 1)
    report = sender.send_due()
    assert report.retried == 1
    entry = sender.outbox.get("slow")
    assert entry is not None and entry.in_doubt and entry.error == "timed out"
    advance(clock, 2)
    report = sender.send_due()
    assert (report.confirmed, report.sent) == (1, 0)
    assert posted_keys(standin) == {"first": 1, "slow": 1}
    posted = sender.outbox.posted("slow")
    assert posted is not None and posted.ts == standin.messages("#ops")[1]["ts"]
    ok = sender.outbox.deliveries(key="slow")[0]
    assert ok["status"] == "ok" and ok["note"].startswith("confirmed in the channel history")
    assert len(standin.calls_to("conversations.history")) == 1


def test_a_timed_out_post_not_in_the_history_is_sent_again(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    sender.outbox.enqueue([msg("first"), msg("lost")])
    sender.send_due()
    standin.fail("chat.postMessage", Fault(status=504, delay=SLOW))  # timed out and never carried out
    advance(clock, 1)
    sender.send_due()
    advance(clock, 2)
    assert sender.send_due().sent == 1
    assert posted_keys(standin) == {"first": 1, "lost": 1}
    assert sender.outbox.deliveries(key="lost")[0]["note"] == "not found in the channel history: re-sent"


def test_a_timed_out_reply_is_looked_for_in_its_thread(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    sender.outbox.enqueue([msg("p"), msg("p/t", action="reply", parent="p")])
    sender.send_due()
    standin.fail("chat.postMessage", Fault.slow(SLOW))
    advance(clock, 1)
    sender.send_due()
    advance(clock, 2)
    assert sender.send_due().confirmed == 1
    assert len(standin.calls_to("conversations.replies")) == 1
    assert len(standin.thread("#ops", standin.messages("#ops")[0]["ts"])) == 1


def test_an_unconfirmable_post_in_doubt_is_resent_by_default(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    """The first post to #new times out and the bot may not list channels (no channels:read): the id is not
    known, so the history cannot be read; `resend` (the default, at-least-once) sends it again and says it
    may show twice."""
    standin.fail("chat.postMessage", Fault.slow(SLOW))
    standin.fail("conversations.list", Fault.api_error("missing_scope"))
    sender.outbox.enqueue([msg("a", "#new")])
    sender.send_due()
    advance(clock, 2)
    assert sender.send_due().sent == 1
    assert posted_keys(standin) == {"a": 2}
    note = sender.outbox.deliveries(key="a")[0]["note"]
    assert "the id of #new is not known" in note and "may show twice" in note


def test_the_id_of_a_new_channel_is_looked_up_to_confirm_a_first_post(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    standin.fail("chat.postMessage", Fault.slow(SLOW))
    sender.outbox.enqueue([msg("a", "#new")])
    sender.send_due()
    advance(clock, 2)
    assert sender.send_due().confirmed == 1
    assert posted_keys(standin) == {"a": 1}
    assert len(standin.calls_to("conversations.list")) == 1


def test_an_unconfirmable_post_in_doubt_is_skipped_with_in_doubt_skip(
    store: Store, clock: FixedClock, standin: SlackStandIn
) -> None:
    sender = sender_for(store, clock, slack_settings(standin, in_doubt="skip", timeout_seconds=FAULT_TIMEOUT))
    standin.fail("chat.postMessage", Fault.slow(SLOW))
    standin.fail("conversations.list", Fault.api_error("missing_scope"))
    sender.outbox.enqueue([msg("a", "#new"), msg("b", "#new")])
    sender.send_due()
    advance(clock, 2)
    report = sender.send_due()
    assert report.failed == 1 and report.sent == 1  # `a` recorded as failed (in doubt); `b` goes on
    assert posted_keys(standin) == {"a": 1, "b": 1}
    failed = sender.outbox.deliveries(key="a")[0]
    assert failed["status"] == "failed" and failed["error"].startswith("in doubt")


def test_a_timed_out_update_is_simply_sent_again(sender: SlackSender, standin: SlackStandIn, clock: FixedClock) -> None:
    sender.outbox.enqueue([msg("p"), msg("p/u", action="update", parent="p", text="edited")])
    sender.send_due()
    standin.fail("chat.update", Fault.slow(SLOW))
    advance(clock, 1)
    sender.send_due()
    advance(clock, 2)
    assert sender.send_due().sent == 1
    assert standin.calls_to("conversations.history") == []  # updates are idempotent: no history check
    (message,) = standin.messages("#ops")
    assert message["text"] == "edited" and len(message["edits"]) == 2


def test_a_history_check_that_fails_keeps_the_post_in_doubt(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    sender.outbox.enqueue([msg("first"), msg("slow")])
    sender.send_due()
    standin.fail("chat.postMessage", Fault.slow(SLOW))
    standin.fail("conversations.history", Fault.server_error(503))
    advance(clock, 1)
    sender.send_due()
    advance(clock, 2)
    assert sender.send_due().retried == 1  # the history could not be read: look again later, do not post
    entry = sender.outbox.get("slow")
    assert entry is not None and entry.in_doubt and entry.status == "pending"
    advance(clock, 4)
    assert sender.send_due().confirmed == 1
    assert posted_keys(standin) == {"first": 1, "slow": 1}


def test_nothing_is_lost_or_doubled_under_mixed_faults(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    channels = ["#warehouse", "#transport", "#oncall"]
    messages = []
    for n in range(8):
        for channel in channels:
            key = f"{channel[1:]}-{n}"
            messages.append(msg(key, channel))
            if n % 3 == 2:
                messages.append(msg(f"{key}/t", channel, action="reply", parent=key))
                messages.append(msg(f"{key}/u", channel, action="update", parent=key, text=f"updated {key}"))
    sender.outbox.enqueue(messages)
    standin.fail(
        "chat.postMessage",
        Fault.rate_limited(2),
        Fault.server_error(500),
        Fault.slow(SLOW),
        Fault.server_error(503),
        Fault.rate_limited(1),
        Fault.slow(SLOW),
        Fault.server_error(502),
    )
    standin.fail("chat.update", Fault.server_error(500), Fault.slow(SLOW))
    drain(sender, clock, step=1.0)
    posts = [m.key for m in messages if m.action != "update"]
    assert posted_keys(standin) == dict.fromkeys(posts, 1)  # every post and reply exactly once
    for channel in channels:
        top = [m.key for m in messages if m.channel == channel and m.action == "post"]
        assert keys_in(standin, channel) == top  # FIFO per channel
        for message in standin.messages(channel):
            key = message["metadata"]["event_payload"]["key"]
            if key.endswith(("-2", "-5")):
                assert message["text"] == f"updated {key}"
                assert [r["text"] for r in standin.thread(channel, message["ts"])] == [f"alert {key}/t"]
    assert sender.outbox.counts() == {
        "pending": 0,
        "attempting": 0,
        "sent": len(messages),
        "failed": 0,
        "superseded": 0,
    }


def test_without_the_history_scope_the_in_doubt_setting_decides_at_once(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    sender.outbox.enqueue([msg("first"), msg("slow")])
    sender.send_due()
    standin.fail("chat.postMessage", Fault.slow(SLOW))
    standin.fail("conversations.history", Fault.api_error("missing_scope"))
    advance(clock, 1)
    sender.send_due()
    advance(clock, 2)
    assert sender.send_due().sent == 1  # re-sent (in_doubt=resend) without waiting for a scope that will not come
    assert posted_keys(standin) == {"first": 1, "slow": 2}
    assert "the history check failed: missing_scope" in sender.outbox.deliveries(key="slow")[0]["note"]


def test_a_token_problem_is_retried_not_failed_at_once(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    standin.fail("chat.postMessage", Fault.api_error("invalid_auth"), Fault.api_error("token_revoked"))
    sender.outbox.enqueue([msg("a")])
    drain(sender, clock)
    assert statuses(sender, "a") == [("retry", 200), ("retry", 200), ("ok", 200)]
    assert keys_in(standin, "#ops") == ["a"]


def test_a_refused_token_fails_the_job_until_slack_takes_it_again(
    sender: SlackSender, standin: SlackStandIn, clock: FixedClock
) -> None:
    """The messages wait (backing off), and the `alerts-send` job fails while they do, so the `tower-jobs` rule
    tells the on-call that no alert reaches Slack; the first accepted call ends it."""
    job = send_job(sender)
    context = JobContext("alerts-send", AlertsSendSettings(), clock, 1, logging.getLogger("test"))
    standin.fail("chat.postMessage", Fault.api_error("token_revoked"))
    sender.outbox.enqueue([msg("a")])
    with pytest.raises(SlackRefused, match=r"token_revoked\): 1 messages waiting"):
        job(context)
    advance(clock, 0.5)  # "a" backs off: a pass without any call still fails
    with pytest.raises(SlackRefused):
        job(context)
    drain(sender, clock)  # the token is taken again: "a" is sent
    assert sender.refused is None and job(context)["waiting"] == 0


def test_a_token_fixed_while_nothing_is_due_is_noticed_by_auth_test(
    store: Store, standin: SlackStandIn, clock: FixedClock
) -> None:
    """A message waiting for the token backs off (never failed); auth.test, at most once a minute, learns that
    the token works again, and the message is then due at once rather than at the end of its backoff (300 s)."""
    sender = sender_for(store, clock, slack_settings(standin, backoff_max_seconds=300.0))
    standin.token = "xoxb-another-token"  # the tower's token is refused: invalid_auth
    sender.outbox.enqueue([msg("a")])
    for _ in range(600):  # ten minutes, a pass a second
        sender.send_due()
        advance(clock, 1)
    assert {status for status, _ in statuses(sender, "a")} == {"retry"} and sender.refused == "invalid_auth"
    waiting = sender.outbox.get("a")
    assert waiting is not None and waiting.errors == 0  # not counted against max_attempts
    assert len(standin.calls_to("auth.test")) <= 10  # at most once a minute
    standin.token = BOT_TOKEN  # fixed
    fixed_at = clock.now()
    while not sender.send_due().sent:
        assert clock.now() - fixed_at <= timedelta(seconds=60)
        advance(clock, 1)
    assert sender.refused is None and keys_in(standin, "#ops") == ["a"]
    assert standin.calls_to("auth.test")[-1].response["ok"] is True  # noticed by auth.test, not by the backoff
    assert standin.calls_to("auth.test")[-1].at == standin.calls_to("chat.postMessage")[-1].at


def test_messages_wait_for_a_refused_token_however_long_and_go_once_it_is_fixed(
    store: Store, clock: FixedClock, standin: SlackStandIn
) -> None:
    """The audit's case: default settings (8 attempts, backoff 2 s to 300 s), the token refused for an hour with a
    pass every 10 s: nothing fails, and once the token is fixed the three alerts go out in their order."""
    sender = sender_for(store, clock, slack_settings(standin, backoff_max_seconds=300.0, max_attempts=8))
    standin.token = "xoxb-the-right-one"  # the tower's token is refused (invalid_auth)
    sender.outbox.enqueue([msg(f"p{n}", "#ops-warehouse") for n in (1, 2, 3)])
    for _ in range(360):
        sender.send_due()
        advance(clock, 10)
    assert sender.outbox.counts()["failed"] == 0 and sender.outbox.counts()["pending"] == 3
    assert len(standin.calls_to("chat.postMessage")) < 30  # the head of the channel backs off, up to 300 s
    standin.token = BOT_TOKEN  # fixed
    for _ in range(7):  # auth.test within a minute notices it; the channel then goes at its pace
        sender.send_due()
        advance(clock, 10)
    assert keys_in(standin, "#ops-warehouse") == ["p1", "p2", "p3"]
