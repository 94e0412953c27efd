"""Retention: TTLs from configuration applied to copies of the tower's tables (the shared store's own tables
keep theirs), read back from system.tables, idempotent, and really dropping expired rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from kernel.schema.retention import (
    TTL_COLUMNS,
    RetentionSettings,
    apply_retention,
    current_ttl,
    desired_ttl,
    distributed_target,
)
from kernel.settings import settings_problems
from kernel.store.embedded import EmbeddedStore

PREFIX = "retention_copy_"


@pytest.fixture
def copies(store: EmbeddedStore) -> Iterator[dict[str, str]]:
    """A copy of each table with a retention setting (same columns, engine and TTL), dropped afterwards."""
    names = {table: PREFIX + table for table in TTL_COLUMNS}
    for table, copy in names.items():
        store.command(f"DROP TABLE IF EXISTS {copy}")
        store.command(f"CREATE TABLE {copy} AS {table}")
    yield names
    for copy in names.values():
        store.command(f"DROP TABLE IF EXISTS {copy}")


def ttl_of(store: EmbeddedStore, table: str) -> str:
    rows = store.query(
        "SELECT engine_full, create_table_query FROM system.tables"
        " WHERE database = currentDatabase() AND name = {t:String}",
        {"t": table},
    )
    assert current_ttl(rows[0]["engine_full"]) == current_ttl(rows[0]["create_table_query"])
    return current_ttl(rows[0]["engine_full"])


def test_the_defaults_are_applied_and_read_back(store: EmbeddedStore, copies: dict[str, str]) -> None:
    settings = RetentionSettings()
    assert ttl_of(store, copies["slack_interactions"]) == "toDateTime(received_at) + toIntervalDay(90)"
    changes = apply_retention(store, settings, copies)
    for table, copy in copies.items():
        assert ttl_of(store, copy) == desired_ttl(table, settings.days(table))
    assert ttl_of(store, copies["otel_traces"]) == "toDateTime(Timestamp) + toIntervalDay(30)"
    assert ttl_of(store, copies["otel_logs"]) == "TimestampTime + toIntervalDay(30)"
    assert ttl_of(store, copies["business_events"]) == "", "business events are kept forever by default"
    # only what differed was altered: slack_interactions already had its 90 days
    changed = {c.table for c in changes}
    assert copies["slack_interactions"] not in changed and copies["otel_traces"] in changed
    assert apply_retention(store, settings, copies) == [], "a second start changes nothing"


def test_configured_days_change_and_zero_removes_the_ttl(
    store: EmbeddedStore, copies: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOWER_RETENTION_BUSINESS_EVENTS_DAYS", "400")
    monkeypatch.setenv("TOWER_RETENTION_SLA_CASES_DAYS", "400")
    monkeypatch.setenv("TOWER_RETENTION_OTEL_TRACES_DAYS", "7")
    monkeypatch.setenv("TOWER_RETENTION_SLACK_INTERACTIONS_DAYS", "0")
    apply_retention(store, RetentionSettings(), copies)
    assert ttl_of(store, copies["business_events"]) == "toDateTime(time) + toIntervalDay(400)"
    assert ttl_of(store, copies["otel_traces"]) == "toDateTime(Timestamp) + toIntervalDay(7)"
    assert ttl_of(store, copies["slack_interactions"]) == ""
    monkeypatch.setenv("TOWER_RETENTION_OTEL_TRACES_DAYS", "14")
    changes = apply_retention(store, RetentionSettings(), copies)
    assert [(c.table, c.before, c.after) for c in changes] == [
        (
            copies["otel_traces"],
            "toDateTime(Timestamp) + toIntervalDay(7)",
            "toDateTime(Timestamp) + toIntervalDay(14)",
        )
    ]


def test_expired_rows_are_dropped(store: EmbeddedStore, copies: dict[str, str]) -> None:
    table = copies["dead_letters"]
    now = datetime.now(UTC)  # TTLs count on the server's clock
    rows = [
        {
            "id": f"00000000-0000-0000-0000-00000000000{i}",
            "received_at": at,
            "door": "events",
            "source": "erp",
            "token_id": "t",
            "reason": "test",
            "raw": "{}",
            "content_type": "application/json",
            "status": "pending",
            "status_at": at,
            "status_note": "",
            "version": 1,
        }
        for i, at in enumerate([now - timedelta(days=120), now - timedelta(days=10)])
    ]
    store.insert(table, rows)
    apply_retention(store, RetentionSettings(dead_letters_days=90), {"dead_letters": table})
    store.command(f"OPTIMIZE TABLE {table} FINAL")
    left = store.query(f"SELECT id FROM {table}")
    assert [r["id"] for r in left] == ["00000000-0000-0000-0000-000000000001"]


def test_a_distributed_table_is_resolved_to_its_local_table() -> None:
    engine = "Distributed('tower_cluster', 'tower', 'otel_traces_local', cityHash64(TraceId))"
    assert distributed_target(engine) == ("tower_cluster", "tower", "otel_traces_local")
    assert distributed_target("ReplicatedMergeTree('/clickhouse/tables/{shard}/x', '{replica}')") is None


def test_every_retention_setting_names_a_table_with_a_ttl_column() -> None:
    fields = {name.removesuffix("_days") for name in RetentionSettings.model_fields}
    assert fields == set(TTL_COLUMNS)
    with pytest.raises(KeyError):
        RetentionSettings().days("exceptions")


@pytest.mark.parametrize(
    ("events", "cases", "refused"),
    [
        ("1", "1", "TOWER_RETENTION_BUSINESS_EVENTS_DAYS='1': Value error, business events must be kept at least 60"),
        ("400", "0", "must be kept at least as long as SLA cases (TOWER_RETENTION_SLA_CASES_DAYS: forever)"),
        ("90", "120", "must be kept at least as long as SLA cases (TOWER_RETENTION_SLA_CASES_DAYS: 120 days)"),
        ("90", "90", None),
        ("0", "30", None),
    ],
)
def test_business_events_outlive_their_cases_and_the_reconcilers_lookback(
    monkeypatch: pytest.MonkeyPatch, events: str, cases: str, refused: str | None
) -> None:
    """A short retention deleted the orders at `tower migrate`, at once and for good, and every invoice of the
    reconcilers' 30 days became a `no-order` finding: such a value stops the command, naming the variable."""
    monkeypatch.setenv("TOWER_RETENTION_BUSINESS_EVENTS_DAYS", events)
    monkeypatch.setenv("TOWER_RETENTION_SLA_CASES_DAYS", cases)
    if refused is None:
        assert RetentionSettings().business_events_days == int(events)
        return
    with pytest.raises(ValidationError) as error:
        RetentionSettings()
    (problem,) = settings_problems(error.value) or []
    assert refused in problem
