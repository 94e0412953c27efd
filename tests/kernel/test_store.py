"""The embedded store: typed parameters, inserts, migrations, many threads, who holds a data directory (another
process holding it: tests/tower/test_serve.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

from kernel.schema.migrations import MIGRATIONS, applied_versions, migrate
from kernel.store.embedded import EmbeddedStore, holder_of


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
