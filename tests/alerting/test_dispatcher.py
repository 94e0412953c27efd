"""The dispatcher: exception changes -> one post per exception, updates and thread lines, nothing twice."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson

from alerting.dispatcher import NAME, Dispatcher
from alerting.messages import ACTION_ACKNOWLEDGE, ACTION_RESOLVE
from alerting.state import PolicyStore
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore
from kernel.store import Store
from kernel.store.base import utc_text
from tests.alerting.policy_support import (
    DASHBOARD,
    T0,
    TITLES,
    block_text,
    by_key,
    dispatcher,
    messages,
    open_exception,
    open_many,
    routing_from,
    state_of,
)


def test_an_opened_exception_is_posted_once_to_its_owners_channel(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    record = open_exception(exceptions, customer_id="C-1001", warehouse="DAL", source="erp")
    alerts = dispatcher(store, clock)

    report = alerts.run()

    assert (report.changes, report.posted, report.enqueued) == (1, 1, 1)
    (post,) = messages(alerts.outbox)
    assert (post.key, post.channel, post.action, post.exception_id) == (
        f"exc:{record.id}:post",
        "#cs-orders",
        "post",
        record.id,
    )
    text = block_text(post)
    for expected in (
        TITLES["order-release"],
        "SO-1",
        "C-1001",
        "DAL",
        "*Late by*\n1h",
        "customer_service",
        f"{DASHBOARD}/queue?exception={record.id}",
        f"{DASHBOARD}/timeline?key=SO-1",
    ):
        assert expected in text, expected
    assert post.text == f"[high] Missed: {TITLES['order-release']}: SO-1 (customer_service)"
    buttons = {b["action_id"]: b["value"] for b in post.blocks[-1]["elements"]}  # type: ignore[index]
    assert buttons == {ACTION_ACKNOWLEDGE: record.id, ACTION_RESOLVE: record.id}
    state = state_of(store, record.id)
    assert (state.decision, state.channels, state.alerted_at) == ("posted", ("#cs-orders",), T0)

    again = alerts.run()
    assert (again.changes, again.enqueued) == (0, 0)


def test_a_rules_runbook_is_linked_from_its_alerts(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    release = open_exception(exceptions)
    cutoff = open_exception(exceptions, rule="ship-cutoff", key="SO-2", owner="warehouse")
    runbook = "https://wiki.example.com/runbooks/order-release#stuck-in-erp"
    alerts = dispatcher(store, clock, runbooks={"order-release": runbook})
    alerts.run()
    posts = {m.exception_id: block_text(m) for m in messages(alerts.outbox)}
    assert f"<{runbook}|Runbook>" in posts[release.id]
    assert "Runbook" not in posts[cutoff.id]


def test_changes_update_the_message_and_add_lines_to_its_thread(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    record = open_exception(exceptions)
    alerts = dispatcher(store, clock)
    alerts.run()
    post_key = f"exc:{record.id}:post"

    clock.advance(timedelta(minutes=5))
    exceptions.acknowledge(record.id, actor="ann")
    exceptions.assign(record.id, "bob", actor="ann")
    exceptions.add_note(record.id, "carrier <late> & sorry", actor="bob")
    report = alerts.run()

    assert (report.changes, report.updates, report.replies) == (3, 1, 3)
    found = by_key(alerts.outbox)
    (update,) = [m for m in found.values() if m.action == "update"]
    assert (update.key, update.parent, update.channel) == (f"exc:{record.id}:update:1", post_key, "#cs-orders")
    assert "Acknowledged, assigned to bob" in block_text(update)
    assert [b["action_id"] for b in update.blocks[-1]["elements"]] == [ACTION_RESOLVE]  # type: ignore[index]
    replies = [m for m in found.values() if m.action == "reply"]
    assert all(m.parent == post_key and m.key.startswith(f"exc:{record.id}:audit:") for m in replies)
    assert [m.text for m in replies] == [
        ":eyes: Acknowledged by ann.",
        ":bust_in_silhouette: Assigned to bob by ann.",
        ":memo: bob: carrier &lt;late&gt; &amp; sorry",
    ]

    exceptions.add_note(record.id, "calling the carrier", actor="bob")
    report = alerts.run()
    assert (report.updates, report.replies) == (0, 1)  # a note goes to the thread only

    exceptions.resolve(record.id, actor="bob", resolution="fixed", note="shipped by hand")
    report = alerts.run()
    assert (report.updates, report.replies) == (1, 1)
    found = by_key(alerts.outbox)
    assert found[f"exc:{record.id}:update:2"].blocks[-1]["type"] != "actions"  # type: ignore[index]
    assert "Resolved (fixed)" in block_text(found[f"exc:{record.id}:update:2"])
    resolution = [m for m in found.values() if m.action == "reply"][-1]
    assert resolution.text == ":white_check_mark: Resolved by bob (fixed): shipped by hand"
    assert state_of(store, record.id).active is False


def test_a_late_event_resolution_is_posted_in_the_thread(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    record = open_exception(exceptions)
    alerts = dispatcher(store, clock)
    alerts.run()

    clock.advance(timedelta(minutes=30))
    exceptions.resolve_many([record], "late", {record.id: {"hours_late": 1.5}}, actor="engine")
    alerts.run()

    reply = next(m for m in messages(alerts.outbox) if m.action == "reply")
    assert reply.text == ":white_check_mark: Resolved: the awaited event arrived 1h30m after the deadline."
    update = next(m for m in messages(alerts.outbox) if m.action == "update")
    assert "Resolved (late)" in block_text(update) and update.text.startswith("Resolved: ")


def test_an_exception_acknowledged_before_the_first_run_is_posted_with_its_history(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    record = open_exception(exceptions)
    exceptions.acknowledge(record.id, actor="ann")
    alerts = dispatcher(store, clock)

    alerts.run()

    post, reply = messages(alerts.outbox)
    assert post.action == "post" and "Acknowledged" in block_text(post)
    assert (reply.action, reply.parent, reply.text) == ("reply", post.key, ":eyes: Acknowledged by ann.")


def test_resolved_before_it_was_seen_is_not_posted(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    record = open_exception(exceptions)
    exceptions.resolve(record.id, actor="ann")
    alerts = dispatcher(store, clock)
    report = alerts.run()
    assert (report.changes, report.enqueued) == (2, 0)
    assert state_of(store, record.id).decision == "quiet"


def test_a_restart_or_lost_state_sends_nothing_twice(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    first, second = open_exception(exceptions, key="SO-1"), open_exception(exceptions, key="SO-2")
    alerts = dispatcher(store, clock)
    alerts.run()
    exceptions.acknowledge(first.id, actor="ann")
    alerts.run()
    before = sorted(m.key for m in messages(alerts.outbox))
    assert len(before) == 4  # two posts, one update, one thread line

    restarted = dispatcher(store, clock)  # a new process: state from the store only
    assert restarted.run().enqueued == 0

    # A crash after enqueueing but before saving state: the run is repeated from scratch.
    for table in ("alert_state", "alert_cursors"):
        store.command(f"TRUNCATE TABLE {table}")
    repeated = dispatcher(store, clock).run()
    assert repeated.changes == 3 and repeated.enqueued == 0
    assert sorted(m.key for m in messages(alerts.outbox)) == before
    assert state_of(store, second.id).decision == "posted"


def test_a_change_that_becomes_visible_late_is_read_within_the_overlap(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    first = open_exception(exceptions, key="SO-1")
    open_exception(exceptions, key="SO-2")
    alerts = dispatcher(store, clock)
    blind = dispatcher(store, clock, feed_overlap_seconds=0)
    alerts.run()
    cursor = PolicyStore(store).cursor(NAME)
    handled = state_of(store, first.id).last_seq
    assert 0 < handled < cursor

    # Another writer changed SO-1 before SO-2 opened, but its row became visible only now: its
    # sequence lies below the cursor.
    store.insert(
        "exception_audit",
        [
            {
                "exception_id": first.id,
                "at": utc_text(clock.now()),
                "seq": handled + 1,
                "actor": "bob",
                "action": "note",
                "detail": orjson.dumps({"text": "seen"}).decode(),
            }
        ],
    )
    assert blind.run().changes == 0  # without the overlap it would be missed
    alerts.run()
    assert [m.text for m in messages(alerts.outbox) if m.action == "reply"] == [":memo: bob: seen"]
    assert alerts.run().enqueued == 0  # handled once, though still inside the overlap


def test_a_burst_larger_than_a_feed_batch_is_handled_in_one_run(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    opened = open_many(exceptions, 230, owner="customer_service") + open_many(
        exceptions, 20, rule="ship-cutoff", owner="warehouse"
    )  # the warehouse's come last in the feed, in the third batch
    alerts = dispatcher(store, clock, feed_batch=100)

    report = alerts.run()

    assert (report.changes, report.digests, report.digested, report.updates) == (250, 2, 250, 2)
    assert (
        report.cursor
        == PolicyStore(store).cursor(NAME)
        == int(store.query("SELECT max(seq) AS s FROM exception_audit")[0]["s"])
    )
    states = PolicyStore(store).states(r.id for r in opened)
    assert len(states) == 250 and {s.decision for s in states.values()} == {"digest"}
    sent = messages(alerts.outbox)
    digests = [m for m in sent if m.action == "post"]
    assert sorted(m.channel for m in digests) == ["#cs-orders", "#ops-warehouse"]
    updates = [m for m in sent if m.action == "update"]  # the customer service digest, joined twice
    assert [m.key.rsplit(":", 1)[1] for m in updates] == ["1", "2"] and {m.channel for m in updates} == {"#cs-orders"}
    assert "*230* exceptions" in block_text(updates[-1])
    assert alerts.run().changes == 0


def test_a_full_batch_that_moves_nothing_on_ends_the_run(store: Store) -> None:
    clock = FixedClock(T0)
    alerts = dispatcher(store, clock, feed_batch=100)
    orphans = [  # audit rows without their exception: read, nothing to say, never recorded as handled
        {
            "exception_id": f"gone-{n}",
            "at": utc_text(T0),
            "seq": 1_000 + n,
            "actor": "engine",
            "action": "opened",
            "detail": "{}",
        }
        for n in range(100)
    ]
    store.insert("exception_audit", orphans)

    report = alerts.run()  # the second batch re-reads them within the overlap, and the run stops there

    assert (report.changes, report.enqueued, report.cursor) == (200, 0, 1_099)


def test_an_owner_without_a_channel_is_recorded_as_unrouted(store: Store, tmp_path: Path) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    record = open_exception(exceptions, owner="customer_service")
    routing = routing_from(tmp_path, "owners:\n  integration: {channel: '#integration-oncall'}\n  customer_service:\n")
    alerts = Dispatcher(
        store, dispatcher(store, clock).outbox, routing, dispatcher(store, clock).settings, clock, {}, DASHBOARD
    )
    report = alerts.run()
    assert (report.enqueued, report.held_back) == (0, {"unrouted": 1})
    state = state_of(store, record.id)
    assert (state.decision, state.reason) == (
        "unrouted",
        "no Slack channel for owner 'customer_service' in the routing file",
    )


def test_an_exception_routed_to_two_channels_is_posted_and_updated_in_both(store: Store, tmp_path: Path) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    routing = routing_from(
        tmp_path,
        """\
        owners:
          integration: {channel: "#integration-oncall"}
          customer_service: {channel: "#cs-orders"}
        alerts:
          routes:
            - match: {severity: critical}
              channel: ["#cs-orders", "#ops-escalations"]
        """,
    )
    record = open_exception(exceptions, severity="critical")
    alerts = Dispatcher(
        store, dispatcher(store, clock).outbox, routing, dispatcher(store, clock).settings, clock, {}, ""
    )
    alerts.run()
    exceptions.acknowledge(record.id, actor="ann")
    alerts.run()
    found = {(m.action, m.channel): m for m in messages(alerts.outbox)}
    assert found["post", "#cs-orders"].key == f"exc:{record.id}:post"
    second = found["post", "#ops-escalations"].key
    assert second == f"exc:{record.id}:post@#ops-escalations"
    assert found["update", "#ops-escalations"].parent == second
    assert found["reply", "#ops-escalations"].parent == second
    assert found["reply", "#cs-orders"].parent == f"exc:{record.id}:post"
