"""A side pulled from a system of record's SQL database (SQLite files here), compared by the same SQL as
snapshot events; failures are recorded runs whose messages never show the URL."""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from kernel.store import Store
from reconcilers.config import RuleConfig
from reconcilers.replay import NotReplayable, ReplayService, ReplaySettings
from reconcilers.settings import ReconcileSettings
from tests.reconcilers.factories import NOW, Harness, inventory_rule, snapshot

T = NOW - timedelta(minutes=10)
QUERY = "SELECT item AS sku, bin_location AS location, on_hand AS quantity, counted_at AS as_of FROM stock"


def wms_database(path: Path, rows: list[tuple[str, str, float, str | None]]) -> str:
    """A SQLite file with a `stock` table; its SQLAlchemy URL."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE stock (item TEXT, bin_location TEXT, on_hand REAL, counted_at TEXT)")
        db.executemany("INSERT INTO stock VALUES (?, ?, ?, ?)", rows)
    return f"sqlite:///{path}"


def pulled_rule(query: str = QUERY, database: str = "wms_replica", **params: object) -> RuleConfig:
    return inventory_rule(oversell=None, pull={"wms": {"database": database, "query": query}}, **params)


def settings(timeout: float = 300.0, **urls: str) -> ReconcileSettings:
    return ReconcileSettings(
        sources={name: SecretStr(url) for name, url in urls.items()}, pull_batch_rows=2, pull_timeout_seconds=timeout
    )


def test_a_pulled_side_is_compared_with_snapshot_events(store: Store, tmp_path: Path) -> None:
    counted = "2026-11-02 17:30:00"
    url = wms_database(
        tmp_path / "wms.db",
        [
            ("SKU-1", "DAL", 10, counted),
            ("SKU-2", "DAL", 4, counted),  # the ERP says 5
            ("SKU-3", "DAL", 2, counted),  # two bins of one location add up: 2 + 3 = 5
            ("SKU-3", "DAL", 3, counted),
            ("SKU-4", "RNO", 1, None),  # no as_of: counted now
        ],
    )
    h = Harness(store, pulled_rule(), settings=settings(wms_replica=url))
    h.send(
        snapshot("erp", "SKU-1", "DAL", 10, T),
        snapshot("erp", "SKU-2", "DAL", 5, T),
        snapshot("erp", "SKU-3", "DAL", 5, T),
        snapshot("erp", "SKU-4", "RNO", 1, T),
        snapshot("wms/dallas", "SKU-1", "DAL", 99, T),  # wms events are ignored: the side is pulled
    )
    run = h.run()
    assert run.rows_compared == 4
    active = h.active("inventory-sync")
    assert set(active) == {"SKU-2@DAL"}
    erp, wms = active["SKU-2@DAL"].context["sides"]
    assert (wms["name"], wms["source"], wms["quantity"], wms["as_of"]) == (
        "wms",
        "wms",
        4,
        "2026-11-02T17:30:00.000000Z",
    )
    assert [e.phase for e in h.progress][:2] == ["pull wms", "pull wms"]
    assert any(e.message == "5 rows from wms_replica" for e in h.progress)
    assert h.active("inventory-stale") == {}  # counted 30 minutes ago
    assert store.query("SELECT count() AS n FROM system.tables WHERE name LIKE 'recon_stage_%'") == [{"n": 0}]


@pytest.mark.parametrize(
    ("as_of", "query"),
    [
        ("seconds", QUERY),  # a TEXT column holding strftime('%s'): the text of an integer
        ("seconds", QUERY.replace("counted_at AS as_of", "CAST(counted_at AS INTEGER) + 0.25 AS as_of")),  # REAL
        ("20261102", QUERY),  # an ISO basic date stays a date (00:00 UTC, stale)
    ],
    ids=["text", "real", "basic date"],
)
def test_a_pulled_as_of_in_unix_seconds_is_read_whatever_its_column_type(
    store: Store, tmp_path: Path, as_of: str, query: str
) -> None:
    counted = T - timedelta(minutes=20)
    value = str(int(counted.timestamp())) if as_of == "seconds" else as_of
    url = wms_database(tmp_path / "wms.db", [("SKU-1", "DAL", 4, value)])
    h = Harness(store, pulled_rule(query), settings=settings(wms_replica=url))
    h.send(snapshot("erp", "SKU-1", "DAL", 5, T))
    run = h.run()
    assert run.error == ""
    [wms] = [side for side in h.active("inventory-sync")["SKU-1@DAL"].context["sides"] if side["name"] == "wms"]
    expected = counted + timedelta(seconds=0.25) if "0.25" in query else counted
    if as_of == "seconds":
        assert wms["as_of"] == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert h.active("inventory-stale") == {}
    else:
        assert wms["as_of"] == "2026-11-02T00:00:00.000000Z" and set(h.active("inventory-stale")) == {"wms"}


def test_a_pull_whose_counts_are_old_is_stale(store: Store, tmp_path: Path) -> None:
    url = wms_database(tmp_path / "wms.db", [("SKU-1", "DAL", 10, "2026-11-02 15:00:00")])
    h = Harness(store, pulled_rule(), settings=settings(wms_replica=url))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T))
    h.run()
    stale = h.active("inventory-stale")
    assert set(stale) == {"wms"} and stale["wms"].context["pulled"] is True


def test_a_pull_returning_nothing_leaves_the_pairs_unchecked(store: Store, tmp_path: Path) -> None:
    url = wms_database(tmp_path / "wms.db", [])
    h = Harness(store, pulled_rule(), settings=settings(wms_replica=url))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T))
    run = h.run()
    assert run.details["rules"]["inventory-sync"]["checked"] is False
    assert h.active("inventory-stale")["wms"].context["summary"] == "wms: the pull returned no rows"


@pytest.mark.parametrize(
    ("rows", "query", "error"),
    [
        (
            [("SKU-1", "DAL", 1, None)],
            "SELECT item, bin_location AS location, on_hand AS quantity FROM stock",
            "pull wms from wms_replica: the query returns item, location, quantity; it must return sku, location,"
            " quantity (and optionally as_of)",
        ),
        (
            [("SKU-1", "DAL", 1, None), ("SKU-2", "DAL", None, None)],
            QUERY,
            "pull wms from wms_replica: row 2: quantity None is not a number",
        ),
        (
            [("SKU-1", "DAL", 1, "yesterday")],
            QUERY,
            "pull wms from wms_replica: row 1: as_of 'yesterday' is not a timestamp",
        ),
        (
            [("SKU-1", "DAL", 1, None), ("SKU-2", "DAL", float("inf"), None)],
            QUERY,
            "pull wms from wms_replica: row 2: quantity inf is out of range",
        ),
        (
            [("SKU-1", "DAL", 1e14, None)],
            QUERY,
            "pull wms from wms_replica: row 1: quantity 100000000000000.0 is out of range",
        ),
        (
            [("SKU\x001", "DAL", 1, None)],
            QUERY,
            "pull wms from wms_replica: row 1: sku 'SKU\\x001' contains the control character U+0000",
        ),
        (
            [("SKU-1", "DAL", 1, "0001-01-01 00:00:00")],
            QUERY,
            "pull wms from wms_replica: row 1: as_of '0001-01-01 00:00:00' is outside 1970-01-01..2262-04-11,"
            " the times the store holds",
        ),
        (
            [("SKU-1", "DAL", 1, None), ("SKU-2", "DAL", 1, "2026-11-04 18:00:01")],
            QUERY,
            "pull wms from wms_replica: row 2: as_of 2026-11-04T18:00:01.000000Z is 48.0 hours ahead of the tower's"
            " clock; counts more than 1440 minutes ahead are refused, as events are"
            " (TOWER_COLLECTOR_EVENT_MAX_AHEAD_MINUTES; the replica's clock or time zone?)",
        ),
        (
            [("SKU-1", " ", 1, None)],
            QUERY,
            "pull wms from wms_replica: row 1: location is empty",
        ),
        (
            [],
            "SELECT * FROM no_such_table",
            "pull wms from wms_replica: OperationalError: no such table: no_such_table",
        ),
    ],
    ids=[
        "missing column",
        "bad quantity",
        "bad as_of",
        "infinite",
        "too big",
        "control character",
        "year 1",
        "ahead of the clock",
        "empty location",
        "bad query",
    ],
)
def test_a_failing_pull_is_a_failed_run_with_its_reason(
    store: Store, tmp_path: Path, rows: list[tuple[str, str, float, str | None]], query: str, error: str
) -> None:
    url = wms_database(tmp_path / "wms.db", rows)
    h = Harness(store, pulled_rule(query), settings=settings(wms_replica=url))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T))
    (record,) = h.service.run()
    assert record.status == "error"
    assert record.error == f"PullError: {error}"
    assert h.service.runs.get(record.run_id) is not None
    assert h.service.runs.list("inventory-sync")[0].status == "error"
    assert h.all("inventory-sync") == []
    assert store.query("SELECT count() AS n FROM system.tables WHERE name LIKE 'recon_stage_%'") == [{"n": 0}]


def test_an_unreachable_database_never_shows_its_password(store: Store, tmp_path: Path) -> None:
    url = "postgresql+psycopg://tower:s3cr3t-pw@127.0.0.1:1/wms"  # no driver installed, or nothing listening
    h = Harness(store, pulled_rule(), settings=settings(wms_replica=url))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T))
    (record,) = h.service.run()
    assert record.status == "error" and record.error.startswith("PullError: pull wms from wms_replica: ")
    assert "s3cr3t-pw" not in record.error


def test_a_database_missing_from_the_settings_fails_the_run(store: Store) -> None:
    h = Harness(store, pulled_rule(database="gone"), settings=settings())
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T))
    (record,) = h.service.run()
    assert record.error == "PullError: pull wms: database 'gone' is not in TOWER_RECONCILE_SOURCES"


def test_a_pull_that_hangs_is_cancelled_and_fails_the_run(store: Store, tmp_path: Path) -> None:
    url = wms_database(tmp_path / "wms.db", [("SKU-1", "DAL", 10, None)])
    # a query that never returns a row: a recursive count that never ends
    endless = (
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n)"
        " SELECT 'SKU' AS sku, 'DAL' AS location, x AS quantity FROM n WHERE x < 0"
    )
    h = Harness(store, pulled_rule(endless), settings=settings(0.5, wms_replica=url))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T))
    began = time.monotonic()
    (record,) = h.service.run()
    assert time.monotonic() - began < 10
    assert record.status == "error"
    assert record.error == (
        "PullError: pull wms from wms_replica: did not finish in 0.5 s and was cancelled"
        " (TOWER_RECONCILE_PULL_TIMEOUT_SECONDS); give the query an index or the replica a statement timeout"
    )
    assert store.query("SELECT count() AS n FROM system.tables WHERE name LIKE 'recon_stage_%'") == [{"n": 0}]
    # nothing is left holding the database: a query that ends reads it at once
    again = Harness(store, pulled_rule(), settings=settings(0.5, wms_replica=url))
    assert again.run().rows_compared == 1


def test_pulled_rows_older_than_the_lookback_are_not_compared(store: Store, tmp_path: Path) -> None:
    """As for snapshot events: a side whose rows are all older than the lookback is not compared (only stale),
    and an old row among fresh ones is left out of its pair."""
    old = "2026-10-01 18:00:00"  # 32 days ago
    url = wms_database(tmp_path / "wms.db", [("SKU-1", "DAL", 7, old)])
    h = Harness(store, pulled_rule(lookback="7d"), settings=settings(wms_replica=url))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T))
    run = h.run()
    assert (run.rows_compared, run.opened) == (0, 1)
    assert run.details["rules"]["inventory-sync"]["checked"] is False
    assert run.details["rules"]["inventory-sync"]["note"] == "no snapshot from wms in the last 7d"
    assert h.all("inventory-sync") == [] and set(h.active("inventory-stale")) == {"wms"}

    fresh = wms_database(tmp_path / "fresh.db", [("SKU-1", "DAL", 10, "2026-11-02 17:30:00"), ("SKU-1", "DAL", 7, old)])
    h = Harness(store, pulled_rule(lookback="7d"), settings=settings(wms_replica=fresh))
    run = h.run()  # the old bin is not added to the fresh one: 10 against the ERP's 10
    assert (run.rows_compared, run.opened) == (1, 0) and h.all("inventory-sync") == []


def test_a_stale_pulled_side_cannot_be_replayed(store: Store, tmp_path: Path) -> None:
    """Events of a pulled side are ignored, so resent events cannot fix its staleness: the replay is refused."""
    url = wms_database(tmp_path / "wms.db", [("SKU-1", "DAL", 10, "2026-11-02 15:00:00")])
    h = Harness(store, pulled_rule(), settings=settings(wms_replica=url))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T))
    h.run()
    stale = h.active("inventory-stale")["wms"]
    hook: dict[str, object] = {"url": "http://127.0.0.1:4571/replay", "secret": "replay-test-secret-0123456789"}
    replay = ReplayService(store, h.exceptions, h.clock, ReplaySettings.model_validate({"webhooks": {"wms": hook}}))
    with pytest.raises(NotReplayable, match=r"read from a database \(`pull`\): its events are ignored"):
        replay.request(stale.id)
    assert replay.requests.search() == ([], 0)
    hook["auto"] = True  # nor does the policy ask for it, every minute, to be refused
    policy = ReplayService(store, h.exceptions, h.clock, ReplaySettings.model_validate({"webhooks": {"wms": hook}}))
    assert policy.auto_request().requested == [] and policy.requests.search() == ([], 0)


def test_a_missing_sqlite_file_fails_the_run_and_is_not_created(store: Store, tmp_path: Path) -> None:
    missing = tmp_path / "gone.db"
    h = Harness(store, pulled_rule(), settings=settings(wms_replica=f"sqlite:///{missing}"))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T))
    (record,) = h.service.run()
    assert record.error == (
        "PullError: pull wms from wms_replica: the SQLite database file does not exist"
        " (its path is in TOWER_RECONCILE_SOURCES)"
    )
    assert not missing.exists()


def test_the_pull_cannot_write_to_a_sqlite_replica(store: Store, tmp_path: Path) -> None:
    url = wms_database(tmp_path / "wms.db", [("SKU-1", "DAL", 10, None)])
    h = Harness(store, pulled_rule("WITH x AS (SELECT 1) DELETE FROM stock"), settings=settings(wms_replica=url))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T))
    (record,) = h.service.run()
    assert record.error == (
        "PullError: pull wms from wms_replica: OperationalError: attempt to write a readonly database"
    )
    with sqlite3.connect(tmp_path / "wms.db") as db:
        assert db.execute("SELECT count(*) FROM stock").fetchone() == (1,)


def test_unix_seconds_and_numbers_as_text_are_read(store: Store, tmp_path: Path) -> None:
    url = wms_database(tmp_path / "wms.db", [("SKU-1", "DAL", 7, "2026-11-02 17:30:00")])
    query = (
        "SELECT item AS sku, bin_location AS location, CAST(on_hand AS TEXT) AS quantity,"
        " CAST(strftime('%s', counted_at) AS INTEGER) AS as_of FROM stock"
    )
    h = Harness(store, pulled_rule(query), settings=settings(wms_replica=url))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T))
    h.run()
    wms = h.active("inventory-sync")["SKU-1@DAL"].context["sides"][1]
    assert (wms["quantity"], wms["as_of"]) == (7, "2026-11-02T17:30:00.000000Z")


def test_a_count_ahead_of_the_clock_within_the_allowance_is_read(store: Store, tmp_path: Path) -> None:
    url = wms_database(tmp_path / "wms.db", [("SKU-1", "DAL", 10, "2026-11-03 17:59:00")])  # 23 h 59 min ahead
    h = Harness(store, pulled_rule(), settings=settings(wms_replica=url))
    h.send(snapshot("erp", "SKU-1", "DAL", 10, T))
    assert h.run().rows_compared == 1
