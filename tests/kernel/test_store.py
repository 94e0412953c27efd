"""The embedded store: typed parameters, inserts, migrations, many threads, who holds a data directory (another
process holding it: tests/tower/test_serve.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.deadletters import Refusal, dead_letter_row
from kernel.schema.migrations import MIGRATIONS, applied_versions, migrate
from kernel.store.base import StoreUnavailable
from kernel.store.embedded import EmbeddedStore, holder_of
from tests.factories import event_row, make_event


def test_parameters_are_bound_not_formatted(store: EmbeddedStore) -> None:
    hostile = "x'); DROP TABLE business_events; --"
    rows = store.query(
        "SELECT {s:String} AS s, {a:Array(String)} AS a, {t:DateTime64(6, 'UTC')} AS t, {n:UInt32} + 1 AS n",
        {"s": hostile, "a": ["it's", "b\\c"], "t": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "n": 41},
    )
    assert rows == [{"s": hostile, "a": ["it's", "b\\c"], "t": "2026-01-02 03:04:05.000006", "n": 42}]
    assert store.query("EXISTS TABLE business_events") == [{"result": 1}]


def test_migrations_are_recorded_and_safe_to_run_twice(store: EmbeddedStore) -> None:
    assert applied_versions(store) == {m.version for m in MIGRATIONS}
    assert migrate(store) == []
    store.command("DELETE FROM tower_schema_migrations WHERE version = 2")  # as if interrupted before recording
    assert migrate(store) == [2]
    assert migrate(store) == []


def test_insert_and_query_many_threads(store: EmbeddedStore) -> None:
    errors: list[Exception] = []

    def work(worker: int) -> None:
        try:
            for i in range(25):
                store.insert(
                    "dead_letters",
                    [
                        {
                            "id": f"00000000-0000-0000-{worker:04d}-{i:012d}",
                            "received_at": "2026-01-01 00:00:00",
                            "door": "events",
                            "source": "erp",
                            "token_id": "t",
                            "reason": "r",
                            "raw": "{}",
                            "content_type": "application/json",
                            "status": "pending",
                            "status_at": "2026-01-01 00:00:00",
                            "status_note": "",
                            "version": 1,
                        }
                    ],
                )
                store.query("SELECT count() AS n FROM dead_letters WHERE door = {d:String}", {"d": "events"})
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.query("SELECT count() AS n FROM dead_letters") == [{"n": 200}]


def test_a_directory_this_process_holds_or_nobody_holds_has_no_other_holder(
    store: EmbeddedStore, tmp_path: Path
) -> None:
    status = store.data_dir / "status"
    assert status.exists() and "PID:" in status.read_text()  # the engine's lock file, held by this process
    assert holder_of(store.data_dir) is None
    assert holder_of(tmp_path) is None  # no status file
    (tmp_path / "status").write_text("PID: 1\nStarted at: 2026-11-27 08:00:00\n")  # left by a stopped process
    assert holder_of(tmp_path) is None


def test_an_insert_the_engine_cannot_write_raises_and_stores_nothing_silently(store: EmbeddedStore) -> None:
    """chDB's streaming insert answered success when the part could not be written (too many parts, a full disk)
    and the rows were lost; every acknowledged write relies on insert raising instead. Too many parts stands in
    for a full disk here (the same silent path; a full disk was seen losing 64,750 acknowledged events)."""
    store.command(
        "CREATE TABLE parts_test (id String) ENGINE = MergeTree ORDER BY id"
        " SETTINGS parts_to_throw_insert = 2, parts_to_delay_insert = 1"
    )
    try:
        store.command("SYSTEM STOP MERGES parts_test")
        refused = 0
        for n in range(4):
            try:
                store.insert("parts_test", [{"id": f"r{n}"}])
            except StoreUnavailable as exc:  # for now: the doors answer 503 and the sender tries again
                assert "TOO_MANY_PARTS" in str(exc)
                refused += 1
        stored = int(store.query("SELECT count() AS n FROM parts_test")[0]["n"])
        assert refused >= 1 and stored + refused == 4  # every row stored or refused, none lost quietly
    finally:
        store.command("DROP TABLE parts_test")


def test_writes_wait_while_the_disk_has_less_free_than_the_guard(store: EmbeddedStore) -> None:
    store.min_free_bytes = 2**62  # more than any disk: the guard is always under
    try:
        with pytest.raises(StoreUnavailable, match="TOWER_STORE_MIN_FREE_MIB"):
            store.insert("business_events", [event_row(make_event("order.accepted", id="guarded-1"))])
    finally:
        store.min_free_bytes = 0
    assert store.query("SELECT count() AS n FROM business_events WHERE id = 'guarded-1'") == [{"n": 0}]
    store.insert("business_events", [event_row(make_event("order.accepted", id="guarded-1"))])
    assert store.query("SELECT count() AS n FROM business_events WHERE id = 'guarded-1'") == [{"n": 1}]


def test_an_upgraded_store_remembers_the_ids_of_events_stored_before_event_ids(store: EmbeddedStore) -> None:
    """Migration 18 fills `event_ids` from the events already kept: an id reused before the upgrade (both events
    still unmerged) or after it (the first sent before) is found by the event-id-reuse rule."""
    store.command("DROP VIEW IF EXISTS event_ids_view")
    store.command("DROP TABLE IF EXISTS event_ids")
    store.command("DELETE FROM tower_schema_migrations WHERE version IN (17, 18)")  # a store of before migration 17
    now = datetime.now(UTC)
    first = make_event("order.accepted", 1, id="evt-1")
    again = make_event("order.released", 2, id="evt-1", data={"order_id": "SO-1"})  # the id given to another event
    kept = make_event("order.accepted", 3, id="evt-2")
    store.insert("business_events", [event_row(first, now), event_row(kept, now)])
    store.insert("business_events", [event_row(again, now)])

    assert migrate(store) == [17, 18]
    ids = store.query("SELECT id, min(lo) != max(hi) AS reused FROM event_ids GROUP BY id ORDER BY id")
    assert ids == [{"id": "evt-1", "reused": 1}, {"id": "evt-2", "reused": 0}]


def test_an_upgraded_store_keys_its_new_dead_letters_and_keeps_the_old_ones(store: EmbeddedStore) -> None:
    """Migration 19 adds `refusal_key` to dead_letters: a letter stored before keeps it empty (the ingest-refusals
    rule keys it by its token's current grant), a letter refused after carries the key of the grant it was refused
    under."""
    store.command("ALTER TABLE dead_letters DROP COLUMN IF EXISTS refusal_key")
    store.command("DELETE FROM tower_schema_migrations WHERE version = 19")  # a store of before migration 19
    try:
        at = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)
        before = dead_letter_row(Refusal("events", "source: 'crm' is not allowed", "{}", "crm"), "tok-edi", at)
        del before["refusal_key"]
        store.insert("dead_letters", [before])
        assert migrate(store) == [19]
        assert migrate(store) == []
    finally:
        migrate(store)  # the session's store keeps its schema whatever happened
    after = dead_letter_row(Refusal("events", "r", "{}", "crm"), "tok-edi", at + timedelta(seconds=1), ["edi"])
    store.insert("dead_letters", [after])
    rows = store.query("SELECT toString(id) AS id, refusal_key FROM dead_letters ORDER BY received_at")
    assert rows == [{"id": before["id"], "refusal_key": ""}, {"id": after["id"], "refusal_key": "edi"}]
