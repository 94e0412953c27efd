"""event-id-reuse on a fixed clock against the real store: an id a source gives to two different events opens one
exception per source (the store keeps one of the events), a redelivery does not, and a quiet window resolves it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore
from kernel.store import Store
from sla_rules.loader import default_rules_dir, load_rules
from sla_rules.model import IdReuseParams, IdReuseRule
from sla_rules.texts import RECOVERED
from tests.factories import event_row, make_event
from tests.sla_rules.test_technical import NOW, Tower
from tests.support import start_in_process

REUSE = IdReuseRule(
    id="event-id-reuse",
    title="Event ids reused for different events",
    kind="technical",
    owner="integration",
    severity="high",
    check="id-reuse",
    params=IdReuseParams(window=timedelta(hours=1), min_ids=1, every=timedelta(0)),  # checked on every evaluation
)


def send(store: Store, *events: dict[str, Any], minutes_ago: float = 10) -> None:
    """Store `events` as the collector does, received `minutes_ago` before NOW (each call: one insert)."""
    store.insert("business_events", [event_row(e, NOW - timedelta(minutes=minutes_ago)) for e in events])


def test_an_id_given_to_two_events_opens_one_exception_per_source(store: Store) -> None:
    t = Tower(store, rules=[REUSE])
    accepted = make_event("order.accepted", 1, id="SO-1")  # the order number as the event id
    released = make_event("order.released", 2, id="SO-1", data={"order_id": "SO-1"})
    other = make_event("order.accepted", 3, id="SO-3")
    send(store, accepted, other, minutes_ago=30)
    send(store, released, other, minutes_ago=5)  # `other` again: a redelivery, not a reuse
    wms = [make_event("shipment.confirmed", n, id=f"pick-{n % 2}") for n in range(4)]  # a counter from 0 again
    send(store, *wms)

    opened, _ = t.evaluate()
    active = t.active("event-id-reuse")
    assert sorted(active) == ["erp", "wms"] and len(opened) == 2
    erp, wms_one = active["erp"], active["wms"]
    assert (erp.owner, erp.kind, erp.severity) == ("integration", "technical", "high")
    context = erp.context
    assert (context["reused_ids"], context["examples"], context["window"]) == (1, ["SO-1"], "1h")
    assert context["since"] == context["last_reused"] == "2026-11-04T15:25:00.000000Z"  # when the second came
    assert context["root_cause"] is False and "SO-1" in context["summary"]
    assert context["kept"] == ["SO-1: order.released at 2026-11-02T15:02:00.000000Z (SO-1)"]  # the last received
    assert "resend the events it sent since 2026-11-04T15:25:00.000000Z with new ids" in context["next_step"]
    assert (wms_one.context["reused_ids"], sorted(wms_one.context["examples"])) == (2, ["pick-0", "pick-1"])

    assert t.evaluate() == ([], [])  # nothing opens twice

    # the loss is real: once merged, the store has one event per id; the evidence stays
    store.command("OPTIMIZE TABLE business_events FINAL")
    store.command("OPTIMIZE TABLE event_ids FINAL")
    assert store.query("SELECT count() AS n FROM business_events WHERE source = 'erp' AND id = 'SO-1'")[0]["n"] == 1
    t.exceptions.resolve(erp.id, actor="test", resolution="fixed", note="")
    opened, _ = t.evaluate()  # resolved by a person while still within the window: found again, after the merge
    assert len(opened) == 1 and t.active("event-id-reuse")["erp"].context["examples"] == ["SO-1"]


def test_a_quiet_window_resolves_and_a_new_reuse_opens_anew(store: Store) -> None:
    t = Tower(store, rules=[REUSE])
    send(store, make_event("order.accepted", 1, id="SO-1"), minutes_ago=50)
    send(store, make_event("order.released", 1, id="SO-1", data={"order_id": "SO-1"}), minutes_ago=40)
    (first,), _ = t.evaluate()
    t.clock.set(NOW + timedelta(minutes=19))  # the second event was received 59 minutes before
    assert t.evaluate() == ([], [])
    t.clock.set(NOW + timedelta(minutes=21))
    _, resolved = t.evaluate()
    assert resolved == [first]
    [record] = t.all("event-id-reuse")
    assert record.resolution == RECOVERED and record.resolution_detail  # says the window it waited
    # the same id reused again later: the id received within the window carries both contents
    store.insert(
        "business_events",
        [event_row(make_event("shipment.confirmed", 1, id="SO-1", source="erp"), NOW + timedelta(minutes=20))],
    )
    opened, _ = t.evaluate()
    assert len(opened) == 1 and t.active("event-id-reuse")["erp"].context["reused_ids"] == 1


def test_the_first_content_may_be_older_than_the_window(store: Store) -> None:
    """The id's first event came days ago: its row is outside the window, but the id is the one received now."""
    t = Tower(store, rules=[REUSE])
    send(store, make_event("order.accepted", 1, id="SO-1"), minutes_ago=3 * 24 * 60)
    send(store, make_event("order.accepted", 1, id="SO-2"), minutes_ago=3 * 24 * 60)
    assert t.evaluate() == ([], [])
    send(store, make_event("order.accepted", 2, id="SO-1"))  # another time: another event
    send(store, make_event("order.accepted", 1, id="SO-2"))  # the same event sent again: a redelivery
    assert [r.source for r in t.engine.id_reuse.reused(REUSE, NOW)] == ["erp"]
    assert t.engine.id_reuse.reused(REUSE, NOW)[0].examples == ["SO-1"]


def test_a_reuse_received_before_the_window_is_not_news(store: Store) -> None:
    t = Tower(store, rules=[REUSE])
    send(store, make_event("order.accepted", 1, id="SO-1"), minutes_ago=180)
    send(store, make_event("order.accepted", 2, id="SO-1"), minutes_ago=90)
    assert t.evaluate() == ([], [])


@pytest.mark.parametrize(("reused", "flagged"), [(2, False), (3, True)])
def test_min_ids(store: Store, reused: int, flagged: bool) -> None:
    rule = REUSE.model_copy(update={"params": REUSE.params.model_copy(update={"min_ids": 3})})
    t = Tower(store, rules=[rule])
    send(store, *(make_event("order.accepted", n, id=f"SO-{n}") for n in range(reused)), minutes_ago=20)
    send(store, *(make_event("order.accepted", n + 10, id=f"SO-{n}") for n in range(reused)))
    opened, _ = t.evaluate()
    assert bool(opened) is flagged


def test_checked_at_most_every_so_often_unless_in_full(store: Store) -> None:
    rule = REUSE.model_copy(update={"params": REUSE.params.model_copy(update={"every": timedelta(minutes=10)})})
    t = Tower(store, rules=[rule])
    assert t.evaluate() == ([], [])  # the first evaluation checks: nothing yet
    send(store, make_event("order.accepted", 1, id="SO-1"), minutes_ago=8)
    send(store, make_event("order.accepted", 2, id="SO-1"), minutes_ago=1)
    t.clock.set(NOW + timedelta(minutes=9))
    assert t.evaluate() == ([], [])  # not due: 9 minutes since the last check
    assert len(t.engine.evaluate(full=True).opened) == 1  # a full evaluation checks at once
    send(store, make_event("shipment.confirmed", 1, id="SH-1"), minutes_ago=0)
    send(store, make_event("shipment.confirmed", 2, id="SH-1"), minutes_ago=0)
    t.clock.set(NOW + timedelta(minutes=18))
    assert t.evaluate() == ([], [])  # 9 minutes since the full one
    t.clock.set(NOW + timedelta(minutes=19))
    opened, _ = t.evaluate()
    assert len(opened) == 1 and sorted(t.active("event-id-reuse")) == ["erp", "wms"]


def test_what_tells_two_events_apart(store: Store) -> None:
    """Type, time, keys, quantity and amount do; the data's other fields and the door do not."""
    t = Tower(store, rules=[REUSE])
    base = make_event("order.accepted", 1, id="A", data={"note": "first"})
    send(store, base, minutes_ago=20)
    send(store, {**base, "data": {**base["data"], "note": "sent again"}})  # free-form data: the same event
    assert t.evaluate() == ([], [])
    send(store, {**base, "data": {**base["data"], "amount": 99.5}})  # another amount: another event
    opened, _ = t.evaluate()
    assert len(opened) == 1


def test_events_sent_through_the_door_open_the_shipped_rule(store: Store, tmp_path: Path) -> None:
    with start_in_process(tmp_path, store, clock=FixedClock(NOW)) as running:
        assert running.tower is not None
        structured = {"Content-Type": "application/cloudevents+json"}
        with running.client("erp") as http:
            for event in (
                make_event("order.accepted", 1, id="SO-9"),
                make_event("order.released", 2, id="SO-9", data={"order_id": "SO-9"}),
            ):
                assert http.post("/v1/events", json=event, headers=structured).status_code == 200
        report = running.tower.sla.evaluate(full=False)
    assert report.errors == {}
    [record] = ExceptionStore(store, FixedClock(NOW)).active_by_key("event-id-reuse").values()
    assert (record.key, record.owner, record.context["examples"]) == ("erp", "integration", ["SO-9"])


def test_the_shipped_rule() -> None:
    rule = {r.id: r for r in load_rules(default_rules_dir())}["event-id-reuse"]
    assert isinstance(rule, IdReuseRule) and rule.enabled
    assert rule.params == IdReuseParams(window=timedelta(hours=1), min_ids=1, every=timedelta(minutes=10))
    assert (rule.owner, rule.kind, rule.severity) == ("integration", "technical", "high")
