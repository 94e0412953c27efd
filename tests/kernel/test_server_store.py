"""The store contract on both backends: the embedded store, and a ClickHouse server when one is configured.

Set TOWER_TEST_CLICKHOUSE_URL (e.g. http://default:@127.0.0.1:8123) to run the server side;
without it those tests are skipped and the summary says why. Each run uses a fresh database
on the server and drops it afterwards.

The suite is shared, not copied: the embedded store's tests (tests/kernel/test_store.py), the read helpers' tests
(tests/kernel/test_queries.py) and the exception store's tests of changes from two processes
(tests/kernel/test_exceptions.py) are collected here a second time with `store` bound to the server, and the tests
below run once per backend through `any_store`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from kernel.schema.migrations import migrate
from kernel.store import Store, StoreError, StoreUnavailable
from kernel.store.embedded import EmbeddedStore
from kernel.store.server import ServerStore
from tests.conftest import TABLES
from tests.factories import event_row, make_event, span_row
from tests.kernel import test_exceptions, test_queries, test_store
from tests.support import free_port

SERVER_URL = os.environ.get("TOWER_TEST_CLICKHOUSE_URL", "")
NO_SERVER = (
    "TOWER_TEST_CLICKHOUSE_URL is not set: the server backend's contract tests need a ClickHouse server"
    " (e.g. TOWER_TEST_CLICKHOUSE_URL=http://default:@127.0.0.1:8123)"
)


def on_server(test: Callable[[Any], None]) -> Callable[[Store], None]:
    """The same test, collected here (so `store` is the server) and marked `server`."""

    def run(store: Store) -> None:
        test(store)

    # not functools.wraps: pytest would follow __wrapped__ and report the test at its original file
    run.__name__ = run.__qualname__ = test.__name__
    run.__doc__ = test.__doc__
    marked: Callable[[Store], None] = pytest.mark.server(run)
    return marked


test_parameters_are_bound_not_formatted = on_server(test_store.test_parameters_are_bound_not_formatted)
test_migrations_are_recorded_and_safe_to_run_twice = on_server(
    test_store.test_migrations_are_recorded_and_safe_to_run_twice
)
test_insert_and_query_many_threads = on_server(test_store.test_insert_and_query_many_threads)
test_a_redelivered_event_counts_once = on_server(test_queries.test_a_redelivered_event_counts_once)
test_events_of_a_key_are_ordered_by_time_whatever_the_arrival = on_server(
    test_queries.test_events_of_a_key_are_ordered_by_time_whatever_the_arrival
)
test_the_same_id_from_two_sources_is_two_events = on_server(
    test_queries.test_the_same_id_from_two_sources_is_two_events
)
test_a_redelivered_span_counts_once = on_server(test_queries.test_a_redelivered_span_counts_once)
test_span_stats_count_each_span_once = on_server(test_queries.test_span_stats_count_each_span_once)
# changes to one exception from two processes: where they meet, on a server
test_a_change_another_process_overtook_is_made_again_on_the_newer_state = on_server(
    test_exceptions.test_a_change_another_process_overtook_is_made_again_on_the_newer_state
)
test_a_change_of_what_another_process_resolved_meanwhile_is_refused = on_server(
    test_exceptions.test_a_change_of_what_another_process_resolved_meanwhile_is_refused
)
test_the_engines_resolutions_overtaken_by_a_person_are_made_again = on_server(
    test_exceptions.test_the_engines_resolutions_overtaken_by_a_person_are_made_again
)
test_a_change_overtaken_again_and_again_gives_up_without_an_audit_entry = on_server(
    test_exceptions.test_a_change_overtaken_again_and_again_gives_up_without_an_audit_entry
)


@pytest.fixture(scope="module")
def server_store() -> Iterator[ServerStore]:
    """A migrated fresh database on the configured ClickHouse server; skips without one."""
    if not SERVER_URL:
        pytest.skip(NO_SERVER)
    database = f"tower_test_{secrets.token_hex(4)}"
    store = ServerStore(SERVER_URL, database)
    migrate(store)
    yield store
    store.command(f"DROP DATABASE IF EXISTS {database}")  # generated above, not input
    store.close()


def _emptied(store: Store) -> Store:
    for table in TABLES:
        store.command(f"TRUNCATE TABLE IF EXISTS {table}")
    return store


@pytest.fixture
def store(server_store: ServerStore) -> Store:
    """Overrides the embedded `store` so the shared contract above runs against the server."""
    return _emptied(server_store)


@pytest.fixture(params=["embedded", pytest.param("server", marks=pytest.mark.server)])
def any_store(request: pytest.FixtureRequest) -> Store:
    """Each backend in turn, empty."""
    if request.param == "embedded":
        embedded: EmbeddedStore = request.getfixturevalue("shared_store")
        return _emptied(embedded)
    server: ServerStore = request.getfixturevalue("server_store")
    return _emptied(server)


def test_every_column_type_round_trips(any_store: Store) -> None:
    at = datetime(2026, 11, 2, 15, 30, 1, 123456, tzinfo=UTC)
    span = span_row("ab" * 16, "cd" * 8, at, order_id="SO-1", invoice_id="IN-'1\\")
    span.update(
        {
            "Events.Timestamp": ["2026-11-02 15:30:01.223456789"],
            "Events.Name": ["retry"],
            "Events.Attributes": [{"attempt": "2"}],
            "Links.TraceId": ["ef" * 16],
            "Links.SpanId": ["01" * 8],
            "Links.TraceState": [""],
            "Links.Attributes": [{}],
        }
    )
    event = event_row(make_event("invoice.posted", n=5, data={"amount": 1234.5678, "quantity": 3}))
    unpriced = event_row(make_event("asn.sent", n=5))
    assert any_store.insert("otel_traces", [span]) == 1
    assert any_store.insert("business_events", [event, unpriced]) == 2

    [stored] = any_store.query(
        "SELECT Timestamp, SpanAttributes, Duration, `Events.Timestamp` AS et, `Events.Attributes` AS ea,"
        " `Links.TraceId` AS lt FROM otel_traces WHERE TraceId = {t:String}",
        {"t": "ab" * 16},
    )
    assert stored == {
        "Timestamp": "2026-11-02 15:30:01.123456000",
        "SpanAttributes": {"order.id": "SO-1", "invoice.id": "IN-'1\\"},
        "Duration": 1_500_000,
        "et": ["2026-11-02 15:30:01.223456789"],
        "ea": [{"attempt": "2"}],
        "lt": ["ef" * 16],
    }
    rows = any_store.query("SELECT type, toString(amount) AS amount, quantity, time FROM business_events ORDER BY type")
    assert rows == [
        {"type": "asn.sent", "amount": None, "quantity": None, "time": "2026-11-02 15:05:00.000000"},
        {"type": "invoice.posted", "amount": "1234.5678", "quantity": 3, "time": "2026-11-02 15:05:00.000000"},
    ]


def test_a_refused_insert_stores_nothing_and_leaves_the_store_usable(any_store: Store) -> None:
    good, bad = event_row(make_event()), event_row(make_event())
    bad["time"] = "not a time"
    with pytest.raises(StoreError) as refused:
        any_store.insert("business_events", [good, bad])
    assert not isinstance(refused.value, StoreUnavailable)  # refused data is not an outage
    assert any_store.ping()
    assert any_store.query("SELECT count() AS n FROM business_events") == [{"n": 0}]
    assert any_store.insert("business_events", [good]) == 1
    assert any_store.query("SELECT id FROM business_events") == [{"id": good["id"]}]


def test_bad_sql_is_a_store_error_not_an_outage(any_store: Store) -> None:
    with pytest.raises(StoreError) as refused:
        any_store.query("SELECT no_such_column FROM business_events")
    assert not isinstance(refused.value, StoreUnavailable)
    with pytest.raises(StoreError):
        any_store.query("SELECT {n:UInt8} AS n", {"n": "not a number"})
    assert any_store.query("SELECT {n:UInt8} AS n", {"n": 7}) == [{"n": 7}]


@pytest.mark.parametrize("text", ["C:\\temp\\new", "trailing\\", "tab\there", "line\nbreak", "it's", "\\N", ""])
def test_string_parameters_arrive_as_given(any_store: Store, text: str) -> None:
    assert any_store.query("SELECT {s:String} AS s, length({s:String}) AS n", {"s": text}) == [
        {"s": text, "n": len(text.encode())}
    ]


def test_a_null_parameter_is_null(any_store: Store) -> None:
    assert any_store.query("SELECT isNull({v:Nullable(String)}) AS n", {"v": None}) == [{"n": 1}]


def test_an_unreachable_server_is_unavailable() -> None:
    # a port nothing listens on: the backend must report an outage (the pipeline spools), not bad data
    with pytest.raises(StoreUnavailable):
        ServerStore(f"http://default:@127.0.0.1:{free_port()}", "tower")


def _first_bytes(url_of: Callable[[int], str]) -> bytes:
    """What ServerStore(url_of(port)) sends first to a listener on `port` that closes every connection unanswered."""
    import socket
    import threading

    received: list[bytes] = []
    done = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.1)
        port = listener.getsockname()[1]

        def accept() -> None:
            while not done.is_set():
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    continue
                with connection:
                    connection.settimeout(10)
                    received.append(connection.recv(16))

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            with pytest.raises(StoreUnavailable):
                ServerStore(url_of(port), "tower")
        finally:
            done.set()
            thread.join(timeout=30)
    return received[0] if received else b""


def test_the_url_scheme_decides_tls() -> None:
    """The driver reads only the port of the URL: https:// on a port other than 443/8443 went in clear, the
    password with it."""
    assert _first_bytes(lambda port: f"https://default:S3cret@127.0.0.1:{port}")[:2] == b"\x16\x03"  # a TLS hello
    assert _first_bytes(lambda port: f"http://default:S3cret@127.0.0.1:{port}").startswith((b"GET ", b"POST "))


def test_an_unreachable_server_is_one_error_not_a_driver_warning_first(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG"), pytest.raises(StoreUnavailable, match="cannot reach ClickHouse server"):
        ServerStore(f"http://default:@127.0.0.1:{free_port()}", "tower")
    assert not [r for r in caplog.records if r.levelno >= 30 and r.name.startswith("clickhouse_connect")]
    with pytest.raises(StoreUnavailable, match="must start with http:// or https://"):
        ServerStore("notaurl://default:S3cret@127.0.0.1:1", "tower")
