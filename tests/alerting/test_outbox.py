"""The outbox in the store: one message per key, state rows read with FINAL, the delivery log."""

from __future__ import annotations

from datetime import timedelta

import pytest

from alerting.outbox import OutboundMessage, Outbox, Posted
from kernel.clock import FixedClock
from kernel.store import Store
from tests.alerting.delivery_support import T0, msg


@pytest.fixture
def outbox(store: Store) -> Outbox:
    return Outbox(store, FixedClock(T0))


def test_a_key_is_enqueued_once(outbox: Outbox) -> None:
    assert outbox.enqueue([msg("a"), msg("b"), msg("a", text="again in the same batch")]) == 2
    assert outbox.enqueue([msg("b", text="changed"), msg("c")]) == 1
    assert outbox.enqueue([]) == 0
    entries = outbox.open_entries()
    assert [e.key for e in entries] == ["a", "b", "c"]  # FIFO: enqueue order
    assert entries[0].message.text == "alert a"  # the first enqueue of a key wins
    assert entries[1].message.text == "alert b"
    assert {e.status for e in entries} == {"pending"}


def test_blocks_round_trip_and_parents_are_kept(outbox: Outbox) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*late* release \\ \t tab"}}]
    outbox.enqueue([msg("p", blocks=blocks), msg("u", action="update", parent="p", exception_id="E1")])
    entries = outbox.get_many(["p", "u", "missing"])
    assert set(entries) == {"p", "u"}
    assert entries["p"].message.blocks == blocks
    assert entries["u"].message.parent == "p" and entries["u"].message.action == "update"
    assert entries["u"].message.exception_id == "E1"


def test_messages_are_validated() -> None:
    with pytest.raises(ValueError, match="parent"):
        OutboundMessage(key="u", channel="#ops", text="x", action="update")
    with pytest.raises(ValueError, match="neither text nor blocks"):
        OutboundMessage(key="k", channel="#ops", text="")
    with pytest.raises(ValueError, match="no channel"):
        OutboundMessage(key="k", channel="", text="x")


def test_state_changes_win_over_the_enqueue_row(outbox: Outbox, store: Store) -> None:
    outbox.enqueue([msg("a")])
    (entry,) = outbox.open_entries()
    assert outbox.posted("a") is None
    attempting = outbox.record(entry, status="attempting", attempts=1)
    assert outbox.get("a") == attempting
    sent = outbox.record(attempting, status="sent", channel_id="C1", ts="1.000001")
    assert outbox.posted("a") == Posted("C1", "1.000001")
    assert outbox.open_entries() == []
    # enqueueing the key again after it was sent changes nothing
    assert outbox.enqueue([msg("a")]) == 0
    assert outbox.get("a") == sent
    assert outbox.counts() == {"pending": 0, "attempting": 0, "sent": 1, "failed": 0, "superseded": 0}
    assert outbox.channel_ids() == {"#ops": "C1"}


def test_delivery_log_newest_first_and_filtered(outbox: Outbox) -> None:
    clock = outbox.clock
    assert isinstance(clock, FixedClock)
    outbox.enqueue([msg("a", exception_id="E1"), msg("b", exception_id="E2")])
    a, b = outbox.open_entries()
    outbox.log(a, "retry", action="post", mode="bot", http_status=503, error="server_error", note="retry in 2 s")
    clock.advance(timedelta(seconds=2))
    outbox.log(b, "ok", action="post", mode="bot", http_status=200, ts="2.000002", channel_id="C1")
    outbox.log(a, "ok", action="post", mode="bot", http_status=200, ts="2.000003", channel_id="C1")
    everything = outbox.deliveries()
    assert [(d["key"], d["status"]) for d in everything] == [("a", "ok"), ("b", "ok"), ("a", "retry")]
    only_e1 = outbox.deliveries(exception_id="E1")
    assert [(d["status"], d["http_status"], d["error"]) for d in only_e1] == [
        ("ok", 200, ""),
        ("retry", 503, "server_error"),
    ]
    assert only_e1[1]["at"] == T0 and only_e1[0]["at"] == T0 + timedelta(seconds=2)
    assert len(outbox.deliveries(limit=1)) == 1
    assert outbox.last_attempts(timedelta(seconds=5)) == {"#ops": T0 + timedelta(seconds=2)}
