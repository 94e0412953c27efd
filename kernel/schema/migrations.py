"""Versioned schema migrations, applied on start and safe to run twice.

Each migration is a version, a name and idempotent statements (`IF NOT EXISTS`). The runner
records applied versions in `tower_schema_migrations`; a migration interrupted half-way is
simply run again. `otel_traces` and `otel_logs` keep the column names and types of the
OpenTelemetry Collector's ClickHouse exporter, so a team already running that exporter can
point the tower at its tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from kernel.store.base import Store


@dataclass(frozen=True)
class Migration:
    """One schema change."""

    version: int
    name: str
    statements: tuple[str, ...]


OTEL_TRACES = """
CREATE TABLE IF NOT EXISTS otel_traces (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""

OTEL_LOGS = """
CREATE TABLE IF NOT EXISTS otel_logs (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TimestampTime DateTime DEFAULT toDateTime(Timestamp),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    TraceFlags UInt8,
    SeverityText LowCardinality(String) CODEC(ZSTD(1)),
    SeverityNumber UInt8,
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Body String CODEC(ZSTD(1)),
    ResourceSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion LowCardinality(String) CODEC(ZSTD(1)),
    ScopeAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    LogAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    EventName String CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_log_attr_key mapKeys(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_log_attr_value mapValues(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(TimestampTime)
PRIMARY KEY (ServiceName, TimestampTime)
ORDER BY (ServiceName, TimestampTime, Timestamp)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""

# (source, id) is the idempotency key: ReplacingMergeTree folds redeliveries on merge, and
# readers use FINAL (or LIMIT 1 BY source, id) so a duplicate never counts twice before that.
BUSINESS_EVENTS = """
CREATE TABLE IF NOT EXISTS business_events (
    id String CODEC(ZSTD(1)),
    source LowCardinality(String),
    system LowCardinality(String),
    type LowCardinality(String),
    time DateTime64(6, 'UTC') CODEC(Delta(8), ZSTD(1)),
    subject String CODEC(ZSTD(1)),
    order_id String CODEC(ZSTD(1)),
    shipment_id String CODEC(ZSTD(1)),
    invoice_id String CODEC(ZSTD(1)),
    customer_id String CODEC(ZSTD(1)),
    sku String CODEC(ZSTD(1)),
    location LowCardinality(String),
    warehouse LowCardinality(String),
    quantity Nullable(Float64),
    amount Nullable(Decimal(18, 4)),
    currency LowCardinality(String),
    data String CODEC(ZSTD(3)),
    trace_id String CODEC(ZSTD(1)),
    span_id String CODEC(ZSTD(1)),
    door LowCardinality(String),
    received_at DateTime64(6, 'UTC') CODEC(Delta(8), ZSTD(1)),
    INDEX idx_order order_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_shipment shipment_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_invoice invoice_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_type type TYPE set(64) GRANULARITY 1,
    INDEX idx_time time TYPE minmax GRANULARITY 1
) ENGINE = ReplacingMergeTree
ORDER BY (source, id)
SETTINGS index_granularity = 8192
"""

# Refused records with their reason and raw bytes. A replay or discard writes a new version
# of the row; readers use FINAL.
DEAD_LETTERS = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id UUID,
    received_at DateTime64(6, 'UTC'),
    door LowCardinality(String),
    source String,
    token_id String,
    reason String,
    raw String CODEC(ZSTD(3)),
    content_type LowCardinality(String),
    status LowCardinality(String),
    status_at DateTime64(6, 'UTC'),
    status_note String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY id
"""

# Exceptions: the current state is the row with the highest version (read with FINAL); every
# change also appends to exception_audit (who, when, what).
EXCEPTIONS = """
CREATE TABLE IF NOT EXISTS exceptions (
    id String,
    rule LowCardinality(String),
    key String,
    kind LowCardinality(String),
    owner LowCardinality(String),
    severity LowCardinality(String),
    status LowCardinality(String),
    opened_at DateTime64(6, 'UTC'),
    due_at Nullable(DateTime64(6, 'UTC')),
    resolved_at Nullable(DateTime64(6, 'UTC')),
    resolution LowCardinality(String),
    resolution_detail String,
    assignee String,
    context String CODEC(ZSTD(3)),
    updated_at DateTime64(6, 'UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY id
"""

# The version of the exception a change was made on (0: opened): two processes that changed one exception from the
# same version each find out whether the other's newer version replaced theirs (kernel/exceptions.py).
EXCEPTION_BASE_VERSION = "ALTER TABLE exceptions ADD COLUMN IF NOT EXISTS base_version UInt64 DEFAULT 0 AFTER version"

EXCEPTION_AUDIT = """
CREATE TABLE IF NOT EXISTS exception_audit (
    exception_id String,
    at DateTime64(6, 'UTC'),
    actor String,
    seq UInt64,
    action LowCardinality(String),
    detail String
) ENGINE = MergeTree
ORDER BY (exception_id, at, seq)
"""

# The SLA engine's cases: one row per (rule, key), latest version wins.
SLA_CASES = """
CREATE TABLE IF NOT EXISTS sla_cases (
    rule LowCardinality(String),
    key String,
    started_at DateTime64(6, 'UTC'),
    ended_at Nullable(DateTime64(6, 'UTC')),
    due_at DateTime64(6, 'UTC'),
    status LowCardinality(String),
    customer_id String,
    warehouse LowCardinality(String),
    source LowCardinality(String),
    evaluated_at DateTime64(6, 'UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (rule, key)
"""

SLA_RUNS = """
CREATE TABLE IF NOT EXISTS sla_runs (
    run_id String,
    mode LowCardinality(String),
    started_at DateTime64(6, 'UTC'),
    evaluated_at DateTime64(6, 'UTC'),
    watermark DateTime64(6, 'UTC'),
    duration_ms Float64,
    cases_changed UInt64,
    opened UInt64,
    resolved UInt64
) ENGINE = MergeTree
ORDER BY started_at
"""

# The SLA engine's bookkeeping: each case version remembers the status it replaced (so a run
# finds its transitions, and those of a run that stopped half-way, without reading FINAL) and a
# hash of its state (so a run tells unchanged cases apart without joining them); each run is
# recorded per rule with the version it wrote, the rule's fingerprint and the keys it recomputed.
SLA_ENGINE_COLUMNS = (
    "ALTER TABLE sla_cases ADD COLUMN IF NOT EXISTS previous_status LowCardinality(String) DEFAULT '' AFTER status",
    "ALTER TABLE sla_runs ADD COLUMN IF NOT EXISTS rule LowCardinality(String) DEFAULT '' AFTER run_id",
    "ALTER TABLE sla_runs ADD COLUMN IF NOT EXISTS rule_hash String DEFAULT '' AFTER rule",
    "ALTER TABLE sla_runs ADD COLUMN IF NOT EXISTS version UInt64 DEFAULT 0",
    "ALTER TABLE sla_runs ADD COLUMN IF NOT EXISTS keys_evaluated UInt64 DEFAULT 0",
)

SLA_STATE_HASH = "ALTER TABLE sla_cases ADD COLUMN IF NOT EXISTS state_hash UInt64 DEFAULT 0 AFTER source"

# Projections of business_events sorted by the SLA engine's key columns, holding only the columns
# its case query reads: an incremental run finds the events of its changed keys from a few
# granules instead of scanning every event (the table is ordered by (source, id)). A
# ReplacingMergeTree needs `deduplicate_merge_projection_mode` for projections: `rebuild`
# rebuilds them when a merge drops duplicates. Parts written before the migration have no
# projection until merged or materialized; ClickHouse reads those parts from the table.
_SLA_PROJECTION_COLUMNS = "time, type, source, system, customer_id, warehouse"
SLA_PROJECTIONS = (
    "ALTER TABLE business_events MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild'",
    "ALTER TABLE business_events ADD PROJECTION IF NOT EXISTS sla_by_order"
    f" (SELECT order_id, {_SLA_PROJECTION_COLUMNS} ORDER BY order_id)",
    "ALTER TABLE business_events ADD PROJECTION IF NOT EXISTS sla_by_shipment"
    f" (SELECT shipment_id, {_SLA_PROJECTION_COLUMNS} ORDER BY shipment_id)",
    # an incremental run's keys: those of the events received after its watermark
    "ALTER TABLE business_events ADD PROJECTION IF NOT EXISTS sla_by_received"
    " (SELECT received_at, order_id, shipment_id ORDER BY received_at)",
)

# A run reads back only the case versions it wrote (its transitions and counts): a minmax index on
# `version` lets those reads skip every older part instead of scanning every case of the rule.
# Each run also records how many cases its rules have, so a full run need not count them.
SLA_VERSION_INDEX = (
    "ALTER TABLE sla_cases ADD INDEX IF NOT EXISTS version_range version TYPE minmax GRANULARITY 1",
    "ALTER TABLE sla_runs ADD COLUMN IF NOT EXISTS cases_total UInt64 DEFAULT 0",
)

# Alert delivery (alerting/outbox.py): the outbox, one state row per message and state change
# (latest version wins, read with FINAL), and the delivery log, one row per attempt.
ALERT_OUTBOX = """
CREATE TABLE IF NOT EXISTS alert_outbox (
    key String,
    seq UInt64,
    channel String,
    action LowCardinality(String),
    parent String,
    exception_id String,
    text String,
    blocks String,
    status LowCardinality(String),
    attempts UInt32,
    errors UInt32,
    in_doubt UInt8,
    next_at DateTime64(6, 'UTC'),
    enqueued_at DateTime64(6, 'UTC'),
    updated_at DateTime64(6, 'UTC'),
    channel_id String,
    ts String,
    error String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY key
"""

ALERT_DELIVERIES = """
CREATE TABLE IF NOT EXISTS alert_deliveries (
    at DateTime64(6, 'UTC'),
    seq UInt64,
    key String,
    exception_id String,
    channel String,
    channel_id String,
    action LowCardinality(String),
    mode LowCardinality(String),
    status LowCardinality(String),
    attempt UInt32,
    http_status UInt16,
    error String,
    note String,
    ts String,
    duration_ms Float64
) ENGINE = MergeTree
ORDER BY (exception_id, at, seq)
"""

# Reconciliation runs (reconcilers/runs.py): a row when a run starts and its final version when it ends
# (status ok or error), latest version wins (FINAL).
RECON_RUNS = """
CREATE TABLE IF NOT EXISTS recon_runs (
    run_id String,
    rule LowCardinality(String),
    compare LowCardinality(String),
    trigger LowCardinality(String),
    status LowCardinality(String),
    started_at DateTime64(6, 'UTC'),
    finished_at Nullable(DateTime64(6, 'UTC')),
    rows_compared UInt64,
    findings UInt64,
    opened UInt64,
    resolved UInt64,
    reopened UInt64,
    duration_ms Float64,
    error String,
    details String CODEC(ZSTD(3)),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (rule, run_id)
"""

# Reconciliation state (reconcilers/loop.py): per finding rule and key, whether it differed at the
# last run that saw it, since when (the episode of difference a person's resolution is checked
# against), and the values seen. Only keys that ever differed have a row.
RECON_STATE = """
CREATE TABLE IF NOT EXISTS recon_state (
    rule LowCardinality(String),
    key String,
    differs UInt8,
    since DateTime64(6, 'UTC'),
    seen_at DateTime64(6, 'UTC'),
    run_id String,
    detail String CODEC(ZSTD(3)),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (rule, key)
"""

# Replay requests (reconcilers/replay): one row per version of a request, latest wins (FINAL). The id
# is the idempotency key (hash of source, keys and range), so the same replay is never asked twice.
REPLAY_REQUESTS = """
CREATE TABLE IF NOT EXISTS replay_requests (
    id String,
    exception_ids Array(String),
    rule LowCardinality(String),
    source String,
    webhook_source String,
    keys Array(String),
    range_from DateTime64(6, 'UTC'),
    range_to DateTime64(6, 'UTC'),
    reason String,
    status LowCardinality(String),
    requested_by String,
    requested_at DateTime64(6, 'UTC'),
    attempts UInt32,
    next_attempt_at Nullable(DateTime64(6, 'UTC')),
    sent_at Nullable(DateTime64(6, 'UTC')),
    wait_until Nullable(DateTime64(6, 'UTC')),
    expected_events Nullable(UInt64),
    closed_at Nullable(DateTime64(6, 'UTC')),
    body String CODEC(ZSTD(3)),
    responses String CODEC(ZSTD(3)),
    detail String,
    updated_at DateTime64(6, 'UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY id
"""

# Alerting policy (alerting/): what was decided for each exception's alert (posted, in a digest,
# silenced, in a maintenance window, held back by a root cause) with its thread state; digests;
# silences; the dispatcher's change-feed cursor; and Slack interactions (also the replay guard).
ALERT_STATE = """
CREATE TABLE IF NOT EXISTS alert_state (
    exception_id String,
    decision LowCardinality(String),
    reason String,
    channels Array(String),
    group_key String,
    digest_id String,
    decided_at DateTime64(6, 'UTC'),
    alerted_at Nullable(DateTime64(6, 'UTC')),
    notified_at Nullable(DateTime64(6, 'UTC')),
    repeats UInt32,
    escalated UInt8,
    revision UInt32,
    held UInt32,
    last_seq UInt64,
    active UInt8,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY exception_id
"""

ALERT_DIGESTS = """
CREATE TABLE IF NOT EXISTS alert_digests (
    id String,
    group_key String,
    owner LowCardinality(String),
    rule LowCardinality(String),
    severity LowCardinality(String),
    channels Array(String),
    started_at DateTime64(6, 'UTC'),
    count UInt32,
    keys Array(String),
    revision UInt32,
    notified_at DateTime64(6, 'UTC'),
    repeats UInt32,
    escalated UInt8,
    active UInt8,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY id
"""

ALERT_SILENCES = """
CREATE TABLE IF NOT EXISTS alert_silences (
    id String,
    matchers String,
    starts_at DateTime64(6, 'UTC'),
    ends_at DateTime64(6, 'UTC'),
    created_by String,
    comment String,
    created_at DateTime64(6, 'UTC'),
    expired_at Nullable(DateTime64(6, 'UTC')),
    expired_by String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY id
"""

ALERT_CURSORS = """
CREATE TABLE IF NOT EXISTS alert_cursors (
    name String,
    seq UInt64,
    updated_at DateTime64(6, 'UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY name
"""

SLACK_INTERACTIONS = """
CREATE TABLE IF NOT EXISTS slack_interactions (
    received_at DateTime64(6, 'UTC'),
    request_ts Int64,
    signature String,
    user_id String,
    operator String,
    action LowCardinality(String),
    exception_id String,
    outcome LowCardinality(String),
    detail String
) ENGINE = MergeTree
ORDER BY (signature, received_at)
TTL toDateTime(received_at) + INTERVAL 90 DAY
"""

# Reports posted by scheduled jobs (the monthly finance report): one row per (report, period), so a
# period is posted once; a re-post writes a new version.
REPORT_DELIVERIES = """
CREATE TABLE IF NOT EXISTS report_deliveries (
    report LowCardinality(String),
    period String,
    channel String,
    channel_id String,
    ts String,
    filename String,
    breaches UInt64,
    bytes UInt64,
    posted_at DateTime64(6, 'UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (report, period)
"""

# The scheduler lease (kernel/lease.py): one row per version of a (name, term); the newest version of
# the highest term says who holds it. A claim is inserted with the deduplication token `<name>:<term>`,
# so of two claims of one term only the first is stored: the window below turns that on for MergeTree.
TOWER_LEASES = """
CREATE TABLE IF NOT EXISTS tower_leases (
    name LowCardinality(String),
    term UInt64,
    holder String,
    claim String,
    acquired_at DateTime64(6, 'UTC'),
    renewed_at DateTime64(6, 'UTC'),
    expires_at DateTime64(6, 'UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (name, term)
SETTINGS non_replicated_deduplication_window = 1000
"""

# Codecs chosen from `python -m bench.size` (docs/operations.md, "Sizing"), per 1,000,000 orders: the span
# attribute maps take 54 MB less under ZSTD(3) than ZSTD(1) (otel_traces 550 -> 496 MB; types unchanged, they
# stay the exporter's); sla_cases' keys, customer ids and times take 40 MB less under ZSTD(3) than under a
# server's default LZ4 (chDB already compresses big merged parts with ZSTD(3), which these now match). A codec
# change rewrites nothing: new and merged parts use it.
SIZE_CODECS = (
    "ALTER TABLE sla_cases MODIFY COLUMN key String CODEC(ZSTD(3))",
    "ALTER TABLE sla_cases MODIFY COLUMN customer_id String CODEC(ZSTD(3))",
    "ALTER TABLE sla_cases MODIFY COLUMN started_at DateTime64(6, 'UTC') CODEC(ZSTD(3))",
    "ALTER TABLE sla_cases MODIFY COLUMN due_at DateTime64(6, 'UTC') CODEC(ZSTD(3))",
    "ALTER TABLE sla_cases MODIFY COLUMN ended_at Nullable(DateTime64(6, 'UTC')) CODEC(ZSTD(3))",
    "ALTER TABLE otel_traces MODIFY COLUMN ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(3))",
    "ALTER TABLE otel_traces MODIFY COLUMN SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(3))",
)

# The newest event time per (type, system, source), kept as an aggregate projection of business_events: the
# inventory reconciler's freshness check (`max(time)` of each source's snapshots) reads a few rows per part
# instead of scanning every event. Parts written before the migration have none until merged; ClickHouse reads
# those parts from the table.
EVENT_FRESHNESS = (
    "ALTER TABLE business_events ADD PROJECTION IF NOT EXISTS freshness"
    " (SELECT type, system, source, max(time) GROUP BY type, system, source)",
)

# The overview's readings of sla_cases (tower/case_days.py): cases per rule, day and status in one time zone, as
# JSON, under the version of sla_cases' content they were read from, so that every process of the tower (and a
# restarted one) reuses a reading instead of reading millions of cases with FINAL again. A cache: rows expire
# after a day, and nothing needs a backup.
SLA_CASE_DAYS = """
CREATE TABLE IF NOT EXISTS sla_case_days (
    tz LowCardinality(String),
    version String,
    first_day Date,
    computed_at DateTime64(6, 'UTC'),
    reading String CODEC(ZSTD(3))
) ENGINE = MergeTree
ORDER BY (tz, version)
TTL toDateTime(computed_at) + INTERVAL 1 DAY
"""

# Every event id a source used within the last 35 days, with the range of the content hashes it carried: business_events
# keeps one event per (source, id), so an id a source gives to two different events loses one of them in a merge,
# quietly. The view sees every insert, so the table keeps the evidence after the merge: `lo != hi` is an id reused
# for a different event (the `event-id-reuse` rule, sla_rules/technical.py). A redelivery carries the same content
# hash. The hash leaves out `data` (free-form JSON whose key order a sender may change on a resend), the door and
# the arrival: two events with the same type, time, keys, quantity and amount are the same event.
EVENT_IDS = """
CREATE TABLE IF NOT EXISTS event_ids (
    source LowCardinality(String),
    id String CODEC(ZSTD(1)),
    lo SimpleAggregateFunction(min, UInt32),
    hi SimpleAggregateFunction(max, UInt32),
    last_at SimpleAggregateFunction(max, DateTime('UTC'))
) ENGINE = AggregatingMergeTree
ORDER BY (source, id)
TTL last_at + INTERVAL 35 DAY
"""
EVENT_CONTENT_HASH = (
    "toUInt32(cityHash64(type, time, subject, order_id, shipment_id, invoice_id, customer_id, sku, location,"
    " warehouse, isNull(quantity), ifNull(quantity, 0), isNull(amount), ifNull(amount, 0), currency) % 4294967296)"
)
EVENT_IDS_VIEW = f"""
CREATE MATERIALIZED VIEW IF NOT EXISTS event_ids_view TO event_ids AS
SELECT source, id, {EVENT_CONTENT_HASH} AS lo, lo AS hi, toDateTime(received_at, 'UTC') AS last_at
FROM business_events
"""
# The view sees only inserts made after it was created: on an upgraded store, the ids of the events already kept (35
# days of them, the table's TTL) are read once, so an id reused by a source after the upgrade for an event sent before
# it is found too. Running it again changes nothing (min and max). An id already reused before the upgrade is found as
# long as business_events has not merged the two events into one.
EVENT_IDS_BACKFILL = f"""
INSERT INTO event_ids (source, id, lo, hi, last_at)
SELECT source, id, {EVENT_CONTENT_HASH} AS lo, lo AS hi, toDateTime(received_at, 'UTC') AS last_at
FROM business_events WHERE received_at >= now64(6) - INTERVAL 35 DAY
"""

# Whose refusal each dead letter is (the `ingest-refusals` rule's key, sla_rules/technical.py REFUSAL_KEY), as the
# door computed it from the grant its token had when it refused the record (collector/deadletters.py refusal_key):
# fixing a token's grant afterwards re-keys no letter already refused, so the exception they opened keeps them
# until they are replayed. '' on the letters written before: those are keyed by the token's current grant.
DEAD_LETTER_REFUSAL_KEY = (
    "ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS refusal_key String DEFAULT '' AFTER token_id",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "otel tables", (OTEL_TRACES, OTEL_LOGS)),
    Migration(2, "business events and dead letters", (BUSINESS_EVENTS, DEAD_LETTERS)),
    Migration(3, "exceptions, audit trail, SLA cases and runs", (EXCEPTIONS, EXCEPTION_AUDIT, SLA_CASES, SLA_RUNS)),
    Migration(4, "SLA engine bookkeeping: previous status, runs per rule", SLA_ENGINE_COLUMNS),
    Migration(5, "SLA cases: state hash", (SLA_STATE_HASH,)),
    Migration(6, "business events: projections for the SLA engine (by order, shipment, received_at)", SLA_PROJECTIONS),
    Migration(7, "alert delivery: outbox and delivery log", (ALERT_OUTBOX, ALERT_DELIVERIES)),
    Migration(
        8,
        "alerting policy: alert state, digests, silences, feed cursor, Slack interactions",
        (ALERT_STATE, ALERT_DIGESTS, ALERT_SILENCES, ALERT_CURSORS, SLACK_INTERACTIONS),
    ),
    Migration(9, "reconcilers: runs and per-key state", (RECON_RUNS, RECON_STATE)),
    Migration(10, "replay requests", (REPLAY_REQUESTS,)),
    Migration(11, "SLA cases: version index; SLA runs: case totals", SLA_VERSION_INDEX),
    Migration(12, "report deliveries (monthly finance report)", (REPORT_DELIVERIES,)),
    Migration(13, "scheduler lease", (TOWER_LEASES,)),
    Migration(14, "codecs for sla_cases and the span attribute maps (bench/size.py)", SIZE_CODECS),
    Migration(15, "business events: newest time per type and source (projection)", EVENT_FRESHNESS),
    Migration(16, "the overview's readings of sla_cases (tower/case_days.py)", (SLA_CASE_DAYS,)),
    Migration(17, "event ids and the content they carried (event-id-reuse)", (EVENT_IDS, EVENT_IDS_VIEW)),
    Migration(18, "event ids: the events stored before migration 17", (EVENT_IDS_BACKFILL,)),
    Migration(
        19, "dead letters: the refusal key, from the grant their token had when refused", DEAD_LETTER_REFUSAL_KEY
    ),
    Migration(20, "exceptions: the version each change was made on (kernel/exceptions.py)", (EXCEPTION_BASE_VERSION,)),
)

_LEDGER = """
CREATE TABLE IF NOT EXISTS tower_schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree ORDER BY version
"""


def applied_versions(store: Store) -> set[int]:
    """Versions recorded as applied."""
    store.command(_LEDGER)
    return {int(r["version"]) for r in store.query("SELECT version FROM tower_schema_migrations FINAL")}


def migrate(store: Store, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply every migration not yet recorded; returns the versions applied by this call."""
    done = applied_versions(store)
    applied: list[int] = []
    for migration in sorted(migrations, key=lambda m: m.version):
        if migration.version in done:
            continue
        for statement in migration.statements:
            store.command(statement)
        store.insert(
            "tower_schema_migrations",
            [{"version": migration.version, "name": migration.name, "applied_at": datetime.now(UTC)}],
        )
        applied.append(migration.version)
    return applied
