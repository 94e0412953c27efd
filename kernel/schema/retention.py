"""Retention: how long each growing table keeps its rows (TOWER_RETENTION_<TABLE>_DAYS; 0 = forever).

Applied on start by the process that maintains the schema (roles `all` and `scheduler`) and by
`tower migrate`, as `ALTER TABLE ... MODIFY TTL` (or `REMOVE TTL` for 0), only where the table's
current TTL differs, read back from `system.tables`: running it twice changes nothing. ClickHouse
then drops expired rows in the background (whole daily partitions for the span and log tables,
`ttl_only_drop_parts`; row by row in merges for the others). Changing a TTL also rewrites the
table's existing parts in the background (`materialize_ttl_after_modify`), so lowering it frees
disk without waiting for new data.

Each TTL is on a column that every version of a row shares, so a ReplacingMergeTree never loses
the newest version of a key before the older ones: an SLA case by when it started, a dead letter
by when it was received, a reconciliation run by when it started. Mutable state (exceptions,
alert and replay state, reconciliation state, the lease) has no TTL: an open exception must never
expire, and those tables stay small (rows per exception, not per event).

On a cluster, where a table is a Distributed table, the TTL goes to the local table it reads,
`ON CLUSTER` (docs/scale-out.md).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.store.base import Store

log = logging.getLogger(__name__)

# table -> the DateTime expression its TTL counts from (as ClickHouse prints it back)
TTL_COLUMNS: dict[str, str] = {
    "otel_traces": "toDateTime(Timestamp)",
    "otel_logs": "TimestampTime",
    "business_events": "toDateTime(time)",
    "dead_letters": "toDateTime(received_at)",
    "sla_cases": "toDateTime(started_at)",
    "sla_runs": "toDateTime(started_at)",
    "exception_audit": "toDateTime(at)",
    "alert_deliveries": "toDateTime(at)",
    "slack_interactions": "toDateTime(received_at)",
    "recon_runs": "toDateTime(started_at)",
}


# The shortest retention of business events: the invoice reconciler compares 30 days of invoices with their
# orders, which are older still; a shorter one deletes the orders and every invoice becomes a "no-order" finding.
MIN_EVENT_DAYS = 60


def _days(default: int, what: str) -> int:
    return Field(default, ge=0, le=36_500, description=f"Days to keep {what}; 0 keeps them forever.")


class RetentionSettings(BaseSettings):
    """Days each table keeps its rows (TOWER_RETENTION_<TABLE>_DAYS); 0 keeps them forever."""

    model_config = SettingsConfigDict(env_prefix="TOWER_RETENTION_")

    otel_traces_days: int = _days(30, "spans (`otel_traces`, by span start)")
    otel_logs_days: int = _days(30, "log records (`otel_logs`, by record time)")
    dead_letters_days: int = _days(90, "dead letters (`dead_letters`, by receipt), replayed or not")
    sla_cases_days: int = _days(0, "SLA cases (`sla_cases`, by case start): the finance reports' history")
    business_events_days: int = _days(
        0,
        "business events (`business_events`, by event time): 0, or at least as many as `sla_cases` keeps (a full"
        f" evaluation recomputes the cases from them) and at least {MIN_EVENT_DAYS} (an invoice of the reconcilers'"
        " 30-day lookback must still find its order)",
    )
    sla_runs_days: int = _days(90, "the SLA engine's run log (`sla_runs`)")
    exception_audit_days: int = _days(0, "the exceptions' audit trail (`exception_audit`, by change time)")
    alert_deliveries_days: int = _days(180, "the alert delivery log (`alert_deliveries`, one row per attempt)")
    slack_interactions_days: int = _days(90, "Slack button presses (`slack_interactions`, also the replay guard)")
    recon_runs_days: int = _days(90, "reconciliation runs (`recon_runs`, by run start)")

    @field_validator("business_events_days")
    @classmethod
    def _events_outlive_their_cases(cls, days: int, info: ValidationInfo) -> int:
        cases = info.data.get("sla_cases_days", 0)
        if days and days < MIN_EVENT_DAYS:
            raise ValueError(
                f"business events must be kept at least {MIN_EVENT_DAYS} days (or 0, forever): the reconcilers"
                " compare 30 days of invoices with their older orders, and a shorter retention deletes those orders"
            )
        if days and (cases == 0 or cases > days):
            kept = "forever" if cases == 0 else f"{cases} days"
            raise ValueError(
                f"business events must be kept at least as long as SLA cases (TOWER_RETENTION_SLA_CASES_DAYS: {kept}):"
                " a full evaluation recomputes the cases from the events"
            )
        return days

    def days(self, table: str) -> int:
        """The configured days for `table` (KeyError for a table without a retention setting)."""
        if table not in TTL_COLUMNS:
            raise KeyError(table)
        return int(getattr(self, f"{table}_days"))


@dataclass(frozen=True)
class RetentionChange:
    """One table whose TTL was changed: the TTL before and after ('' = none)."""

    table: str
    before: str
    after: str


_TTL = re.compile(r"\sTTL\s(?P<ttl>.+?)(?:\sSETTINGS\s.*)?$", re.DOTALL)
_DISTRIBUTED = re.compile(r"^Distributed\(\s*'(?P<cluster>[^']+)'\s*,\s*'(?P<db>[^']+)'\s*,\s*'(?P<table>[^']+)'")


def current_ttl(engine_full: str) -> str:
    """The table TTL clause in `system.tables.engine_full` ('' when there is none)."""
    match = _TTL.search(engine_full)
    return match.group("ttl").strip() if match else ""


def desired_ttl(table: str, days: int) -> str:
    """The TTL clause for `days` days, as ClickHouse prints it back ('' for 0: no TTL)."""
    return f"{TTL_COLUMNS[table]} + toIntervalDay({int(days)})" if days else ""


def distributed_target(engine_full: str) -> tuple[str, str, str] | None:
    """(cluster, database, local table) of a Distributed engine, None for any other engine."""
    match = _DISTRIBUTED.match(engine_full)
    return (match.group("cluster"), match.group("db"), match.group("table")) if match else None


TABLE_INFO = """
SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {name:String}
"""


def _engine(store: Store, database: str, table: str) -> str | None:
    rows = store.query(TABLE_INFO, {"db": database, "name": table})
    return str(rows[0]["engine_full"]) if rows else None


def apply_retention(
    store: Store, settings: RetentionSettings, tables: Mapping[str, str] | None = None
) -> list[RetentionChange]:
    """Set each table's TTL to its configured days where it differs; returns what changed.

    `tables` maps a retention setting's table to the table it applies to in this store (default: the same
    name); tables that do not exist are skipped.
    """
    names = tables if tables is not None else {t: t for t in TTL_COLUMNS}
    database = str(store.query("SELECT currentDatabase() AS db")[0]["db"])
    changes: list[RetentionChange] = []
    for table, name in names.items():
        engine = _engine(store, database, name)
        if engine is None:
            continue
        target, on_cluster = f"`{database}`.`{name}`", ""
        distributed = distributed_target(engine)
        if distributed is not None:
            cluster, local_db, local = distributed
            engine = _engine(store, local_db, local) or ""
            target, on_cluster = f"`{local_db}`.`{local}`", f" ON CLUSTER '{cluster}'"
        before, after = current_ttl(engine), desired_ttl(table, settings.days(table))
        if before == after:
            continue
        if after:
            store.command(f"ALTER TABLE {target}{on_cluster} MODIFY TTL {after}")
        else:
            store.command(f"ALTER TABLE {target}{on_cluster} REMOVE TTL")
        log.info("retention of %s: %s -> %s", name, before or "forever", after or "forever")
        changes.append(RetentionChange(name, before, after))
    return changes
