"""The exception lifecycle: one active per (rule, key), transitions, audit trail."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from kernel.clock import FixedClock
from kernel.exceptions import (
    ATTEMPTS,
    ConcurrentChange,
    ExceptionFilter,
    ExceptionNotFound,
    ExceptionStore,
    InvalidTransition,
    NewException,
    _new_ids,
)
from kernel.store import Store
from kernel.store.base import Params, Row

T0 = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)


def finding(key: str = "SO-1", rule: str = "order-release", **context: str) -> NewException:
    return NewException(rule, key, "business", "customer_service", "high", T0 - timedelta(hours=1), dict(context))


def test_one_active_exception_per_rule_and_key(store: Store) -> None:
    exceptions = ExceptionStore(store, FixedClock(T0))
    first = exceptions.open_many([finding("SO-1"), finding("SO-1"), finding("SO-2")])
    assert [e.key for e in first] == ["SO-1", "SO-2"]
    assert exceptions.open_many([finding("SO-1")]) == []
    assert set(exceptions.active_by_key("order-release")) == {"SO-1", "SO-2"}
    assert set(exceptions.active_by_key("order-release", ["SO-2", "SO-9"])) == {"SO-2"}
    assert exceptions.active_by_key("order-release", []) == {}
    exceptions.resolve(first[0].id, "alice")
    again = exceptions.open_many([finding("SO-1")])
    assert len(again) == 1 and again[0].id != first[0].id  # a new breach after resolution is a new exception


def test_transitions_and_audit_trail(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    (opened,) = exceptions.open_many([finding(customer_id="C-1", warehouse="DAL")])
    clock.advance(timedelta(minutes=5))
    acked = exceptions.acknowledge(opened.id, "alice")
    assert acked.status == "acknowledged"
    with pytest.raises(InvalidTransition):
        exceptions.acknowledge(opened.id, "alice")
    assert exceptions.assign(opened.id, "bob", "alice").assignee == "bob"
    exceptions.add_note(opened.id, "carrier called", "bob")
    clock.advance(timedelta(minutes=5))
    resolved = exceptions.resolve(opened.id, "bob", resolution="fixed", note="re-sent the release")
    assert (resolved.status, resolved.resolution, resolved.resolved_at) == (
        "resolved",
        "fixed",
        "2026-11-02 15:10:00.000000",
    )
    with pytest.raises(InvalidTransition):
        exceptions.assign(opened.id, "carol", "alice")
    reopened = exceptions.reopen(opened.id, "reconciler", "still wrong")
    assert reopened.status == "open" and reopened.resolved_at is None

    stored = exceptions.get(opened.id)
    assert (
        stored.status == "open"
        and stored.assignee == "bob"
        and stored.context == {"customer_id": "C-1", "warehouse": "DAL"}
    )
    trail = exceptions.audit(opened.id)
    assert [(a["actor"], a["action"]) for a in trail] == [
        ("engine", "opened"),
        ("alice", "acknowledged"),
        ("alice", "assigned"),
        ("bob", "note"),
        ("bob", "resolved"),
        ("reconciler", "reopened"),
    ]
    assert trail[3]["detail"] == {"text": "carrier called"}
    assert trail[4]["at"] == "2026-11-02 15:10:00.000000"


def test_resolve_many_skips_resolved_and_records_details(store: Store) -> None:
    exceptions = ExceptionStore(store, FixedClock(T0))
    a, b = exceptions.open_many([finding("SO-1"), finding("SO-2")])
    exceptions.resolve(b.id, "alice")
    changed = exceptions.resolve_many([a, exceptions.get(b.id)], "late", {a.id: {"hours_late": 1.5}}, "engine")
    assert [e.id for e in changed] == [a.id]
    assert exceptions.get(a.id).resolution == "late"
    assert exceptions.audit(a.id)[-1]["detail"] == {"resolution": "late", "hours_late": 1.5}


def test_search_filters_and_pages(store: Store) -> None:
    exceptions = ExceptionStore(store, FixedClock(T0))
    exceptions.open_many([finding(f"SO-{i}", warehouse="DAL" if i % 2 else "ATL") for i in range(5)])
    exceptions.open_many([finding("SH-1", rule="asn-sent")])
    page, total = exceptions.search(ExceptionFilter(rule="order-release"), limit=2)
    assert total == 5 and len(page) == 2
    assert exceptions.search(ExceptionFilter(warehouse="DAL"))[1] == 2
    assert exceptions.search(ExceptionFilter(rule="asn-sent", key="SH-1"))[1] == 1
    assert exceptions.search(ExceptionFilter(status="resolved"))[1] == 0
    with pytest.raises(ExceptionNotFound):
        exceptions.get("no-such-id")


def test_active_of_reads_only_the_pairs_asked_for(store: Store) -> None:
    exceptions = ExceptionStore(store, FixedClock(T0))
    exceptions.open_many([finding("SO-1"), finding("SO-2"), finding("SO-1", rule="ship-cutoff")])
    found = exceptions.active_of({"order-release": {"SO-1"}, "ship-cutoff": {"SO-1", "SO-2"}})
    assert set(found) == {("order-release", "SO-1"), ("ship-cutoff", "SO-1")}  # not order-release SO-2
    assert all(record.rule == rule and record.key == key for (rule, key), record in found.items())
    assert exceptions.active_of({}) == {} and exceptions.active_of({"order-release": set()}) == {}


def test_open_and_resolve_in_one_call_across_rules(store: Store) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    (earlier,) = exceptions.open_many([finding("SO-1", rule="ship-cutoff")])
    clock.advance(timedelta(minutes=5))
    opened, resolved = exceptions.open_and_resolve(
        [finding("SO-1"), finding("SO-2"), finding("SO-1", rule="ship-cutoff")],  # ship-cutoff SO-1 is open
        {
            ("ship-cutoff", "SO-1"): ("late", {"hours_late": 2.0}),
            ("order-release", "SO-2"): ("deadline-moved", {"due_at": "2026-11-02 18:00:00.000000"}),
            ("order-release", "SO-9"): ("late", {}),  # no exception: nothing to resolve
        },
    )
    assert sorted((e.rule, e.key) for e in opened) == [("order-release", "SO-1"), ("order-release", "SO-2")]
    # the one opened a moment ago by another call, and the one this call opened, are resolved
    assert sorted((e.rule, e.key, e.resolution) for e in resolved) == [
        ("order-release", "SO-2", "deadline-moved"),
        ("ship-cutoff", "SO-1", "late"),
    ]
    assert {e.id for e in resolved} == {earlier.id, next(e.id for e in opened if e.key == "SO-2")}
    assert [e.key for e in exceptions.search(ExceptionFilter(status="active"))[0]] == ["SO-1"]
    moved = next(e for e in resolved if e.key == "SO-2")
    assert [a["action"] for a in exceptions.audit(moved.id)] == ["opened", "resolved"]
    assert exceptions.audit(moved.id)[-1]["detail"] == {
        "resolution": "deadline-moved",
        "due_at": "2026-11-02 18:00:00.000000",
    }
    assert exceptions.get(earlier.id).resolved_at == "2026-11-02 15:05:00.000000"
    assert exceptions.open_and_resolve([], {}) == ([], [])


def test_new_exception_ids_are_random_uuid4s() -> None:
    ids = _new_ids(500)
    assert len(set(ids)) == 500
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text


def test_resolve_many_applies_to_the_stored_state_not_the_engines_earlier_read(store: Store) -> None:
    """An engine reads the active exceptions, works, then resolves those that recovered: a person's assignment or
    resolution in between was overwritten by the engine's copy (the assignee cleared, `fixed` and its note replaced
    by `recovered`, a second `resolved` in the audit trail)."""
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    assigned, resolved = exceptions.open_many([finding("SO-1"), finding("SO-2")])
    read_by_engine = exceptions.active_by_key("order-release")
    clock.advance(timedelta(minutes=1))
    exceptions.acknowledge(assigned.id, "alice")
    exceptions.assign(assigned.id, "bob", "alice")
    exceptions.resolve(resolved.id, "alice", resolution="duplicate", note="same as SO-1")
    clock.advance(timedelta(minutes=1))
    changed = exceptions.resolve_many(read_by_engine.values(), "recovered", {}, "engine")
    assert [e.id for e in changed] == [assigned.id]
    kept = exceptions.get(assigned.id)
    assert (kept.status, kept.resolution, kept.assignee) == ("resolved", "recovered", "bob")
    assert changed[0].assignee == "bob"
    untouched = exceptions.get(resolved.id)
    assert (untouched.resolution, untouched.resolved_at) == ("duplicate", "2026-11-02 15:01:00.000000")
    assert [a["action"] for a in exceptions.audit(resolved.id)] == ["opened", "resolved"]
    assert [a["action"] for a in exceptions.audit(assigned.id)] == ["opened", "acknowledged", "assigned", "resolved"]


class TickingClock(FixedClock):
    """A clock a microsecond further on each reading, as the system's moves while a change is written."""

    def now(self) -> datetime:
        self.advance(timedelta(microseconds=1))
        return super().now()


def test_a_change_and_its_audit_entry_carry_the_same_moment(store: Store) -> None:
    """The clock was read again for updated_at, resolved_at and the audit entry's time: a script matching the trail's
    'resolved' to resolved_at (or 'opened' to opened_at) found them a few microseconds, or a long read, apart."""
    exceptions = ExceptionStore(store, TickingClock(T0))
    (opened,) = exceptions.open_many([finding()])
    acked = exceptions.acknowledge(opened.id, "alice")
    resolved = exceptions.resolve(opened.id, "alice", note="re-sent")
    (late,) = exceptions.open_many([finding("SO-2")])
    (recovered,) = exceptions.resolve_many([late], "late", {}, "engine")
    assert resolved.resolved_at == resolved.updated_at and recovered.resolved_at == recovered.updated_at
    trail = [(a["action"], a["at"]) for a in exceptions.audit(opened.id)]
    assert trail == [
        ("opened", opened.opened_at),
        ("acknowledged", acked.updated_at),
        ("resolved", resolved.resolved_at),
    ]
    assert [(a["action"], a["at"]) for a in exceptions.audit(late.id)] == [
        ("opened", late.opened_at),
        ("resolved", recovered.resolved_at),
    ]


# Changes from two processes ---------------------------------------------------------------------------------------


class Between:
    """Process A's view of the store: before each of its writes of exception versions, `meanwhile` (another process's
    change, through an ExceptionStore of its own on the same store) runs, while `times` lasts: a change made between
    A's read and A's write."""

    def __init__(self, store: Store, meanwhile: Callable[[], object], times: int = 1) -> None:
        self.store, self.meanwhile, self.times = store, meanwhile, times

    def query(self, sql: str, params: Params | None = None) -> list[Row]:
        return self.store.query(sql, params)

    def insert(self, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        if table == "exceptions" and self.times > 0:
            self.times -= 1
            self.meanwhile()
        return self.store.insert(table, rows)


def two_processes(
    store: Store, meanwhile: Callable[[ExceptionStore], object], times: int = 1
) -> tuple[ExceptionStore, ExceptionStore]:
    """ExceptionStores of processes A and B on one store (each with its own lock); A's writes come after B's
    `meanwhile`."""
    b = ExceptionStore(store, FixedClock(T0))
    a = ExceptionStore(cast(Store, Between(store, lambda: meanwhile(b), times)), FixedClock(T0))
    return a, b


def actions(exceptions: ExceptionStore, exception_id: str) -> list[tuple[str, str]]:
    return [(entry["actor"], entry["action"]) for entry in exceptions.audit(exception_id)]


def test_a_change_another_process_overtook_is_made_again_on_the_newer_state(store: Store) -> None:
    (opened,) = ExceptionStore(store, FixedClock(T0)).open_many([finding("SO-1")])
    a, b = two_processes(store, lambda b: b.acknowledge(opened.id, "bea"))
    assigned = a.assign(opened.id, "bob", "ann")
    now = a.get(opened.id)
    assert (now.status, now.assignee) == ("acknowledged", "bob") == (assigned.status, assigned.assignee)
    assert actions(b, opened.id) == [("engine", "opened"), ("bea", "acknowledged"), ("ann", "assigned")]


def test_a_change_of_what_another_process_resolved_meanwhile_is_refused(store: Store) -> None:
    (opened,) = ExceptionStore(store, FixedClock(T0)).open_many([finding("SO-1")])
    a, _ = two_processes(store, lambda b: b.resolve_many([opened], "late", {}, "engine"))
    with pytest.raises(InvalidTransition, match="only open exceptions can be acknowledged"):
        a.acknowledge(opened.id, "ann")
    assert (a.get(opened.id).status, a.get(opened.id).resolution) == ("resolved", "late")
    assert actions(a, opened.id) == [("engine", "opened"), ("engine", "resolved")]  # no acknowledgement it lost


def test_the_engines_resolutions_overtaken_by_a_person_are_made_again(store: Store) -> None:
    one, two = ExceptionStore(store, FixedClock(T0)).open_many([finding("SO-1"), finding("SO-2")])
    a, _ = two_processes(store, lambda b: b.assign(one.id, "bob", "ann"))
    resolved = a.resolve_many([one, two], "late", {}, "engine")
    assert sorted((r.id, r.assignee) for r in resolved) == sorted([(one.id, "bob"), (two.id, "")])
    kept = a.get(one.id)
    assert (kept.status, kept.resolution, kept.assignee) == ("resolved", "late", "bob")
    assert a.get(two.id).status == "resolved"
    assert actions(a, one.id) == [("engine", "opened"), ("ann", "assigned"), ("engine", "resolved")]
    # the same through the engine's one write of openings and resolutions
    (three,) = ExceptionStore(store, FixedClock(T0)).open_many([finding("SO-3")])
    a, _ = two_processes(store, lambda b: b.acknowledge(three.id, "bea"))
    opened, ended = a.open_and_resolve([finding("SO-4")], {("order-release", "SO-3"): ("late", {"hours": 1})})
    assert [e.key for e in opened] == ["SO-4"] and [(e.key, e.status) for e in ended] == [("SO-3", "resolved")]
    assert actions(a, three.id) == [("engine", "opened"), ("bea", "acknowledged"), ("engine", "resolved")]


def test_a_change_overtaken_again_and_again_gives_up_without_an_audit_entry(store: Store) -> None:
    (opened,) = ExceptionStore(store, FixedClock(T0)).open_many([finding("SO-1")])
    names = iter(range(ATTEMPTS))
    a, _ = two_processes(store, lambda b: b.assign(opened.id, f"bob{next(names)}", "bea"), times=ATTEMPTS)
    with pytest.raises(ConcurrentChange, match=f"changed by other processes {ATTEMPTS} times"):
        a.acknowledge(opened.id, "ann")
    assert a.get(opened.id).status == "open"
    assert [actor for actor, _ in actions(a, opened.id)] == ["engine", *["bea"] * ATTEMPTS]
