"""Size benchmark: the bytes each table grows by per 1,000,000 orders, and compression codecs compared.

    .venv/bin/python -m bench.size [--orders N] [--spans-per-event N] [--no-codecs] [--keep]

1. Builds a month of a distributor's business in an embedded store (a temp dir), inside
   ClickHouse like bench/sla.py (the same orders, faults and redeliveries), with realistic event
   bodies: each event's `data` as the collector stores it, a UUID id and a W3C trace link.
2. Spans: `--spans-per-event` spans (default 2) for each event, linked to it by trace id: the
   sending system's adapter (SERVER) and the middleware route (CLIENT), with the resource and
   span attributes an instrumented Java integration sends (business keys, HTTP, host), 0.5%
   errors with an exception span event.
3. Cases and exceptions: a full SLA evaluation of the default rules (`sla_cases`, `sla_runs`, the
   breached cases' exceptions and audit), then, as the minute-by-minute evaluations of the month
   would have done, an exception opened at the deadline and resolved `late` for every late case
   (`kernel.exceptions.ExceptionStore`, the only writer, so the rows are the real ones).
4. Every table is merged (`OPTIMIZE ... FINAL`, the steady state background merges reach) and its
   active parts are read from `system.parts`: rows, compressed and uncompressed bytes, bytes on
   disk (with indexes, marks and projections), scaled to 1,000,000 orders; the biggest columns
   from `system.columns`.
5. Codecs: each big column is copied, in its table's sort order, into probe tables with other
   codecs (or LowCardinality), and the compressed sizes are compared with the current one. A column
   without a codec is compressed with the default: LZ4 on a ClickHouse server as installed; chDB
   uses ZSTD(3) for big merged parts (`system.parts.default_compression_codec`), so the table sizes
   of such columns are smaller here than on a server, and the probes' explicit LZ4 shows the server.

Prints plain tables (`--markdown` for docs/operations.md). About 6 minutes at the default size on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.sla import DUPLICATE, GENERATE, NOW
from bench.workdir import temp_workdir
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore, NewException
from kernel.schema.migrations import migrate
from kernel.store.base import utc_text
from kernel.store.embedded import EmbeddedStore
from sla_rules.engine import SlaEngine
from sla_rules.loader import default_rules_dir, load_rules
from sla_rules.model import Rule, SlaRule

MILLION = 1_000_000

# bench/sla.py's generator, with the event bodies, ids and trace links real events have.
_REPLACE = {
    "    lower(hex(cityHash64(n, ev.1))) AS id,": "    lower(toString(reinterpretAsUUID(concat(reinterpretAsString("
    "cityHash64(n, ev.1)), reinterpretAsString(cityHash64(n, ev.1, 'uuid')))))) AS id,",
    """    concat('{"order_id":"', order_id, '"}') AS data,""": """    multiIf(
        type = 'order.accepted', concat('{"order_id":"', order_id, '","customer_id":"', customer,
            '","amount":', toString(round(amount, 2)), ',"currency":"USD","warehouse":"', wh, '"}'),
        type = 'order.released', concat('{"order_id":"', order_id, '","warehouse":"', wh, '"}'),
        type = 'shipment.confirmed', concat('{"order_id":"', order_id, '","shipment_id":"', shipment_id,
            '","quantity":', toString(assumeNotNull(quantity)), ',"warehouse":"', wh, '"}'),
        type = 'asn.sent', concat('{"shipment_id":"', shipment_id, '","order_id":"', order_id, '"}'),
        concat('{"invoice_id":"', invoice_id, '","order_id":"', order_id, '","shipment_id":"', shipment_id,
            '","amount":', toString(round(amount, 2)), ',"currency":"USD","quantity":',
            toString(assumeNotNull(quantity)), '}')
    ) AS data,""",
    "    '' AS trace_id,": "    lower(concat(leftPad(hex(cityHash64(n, ev.1, 't1')), 16, '0'),"
    " leftPad(hex(cityHash64(n, ev.1, 't2')), 16, '0'))) AS trace_id,",
    "    '' AS span_id,": "    lower(leftPad(hex(cityHash64(n, ev.1, 's')), 16, '0')) AS span_id,",
}


def _events_sql() -> str:
    sql = GENERATE
    for old, new in _REPLACE.items():
        assert sql.count(old) == 1, f"bench/sla.py's generator changed: {old!r}"
        sql = sql.replace(old, new)
    return sql


# Each event's spans: j = 0 is the sending system's adapter receiving the call (the root, the
# event's own span id), j >= 1 the middleware routes it calls.
SPANS = """
INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName,
    ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage,
    `Events.Timestamp`, `Events.Name`, `Events.Attributes`,
    `Links.TraceId`, `Links.SpanId`, `Links.TraceState`, `Links.Attributes`)
SELECT
    toDateTime64(time, 9) + toIntervalMicrosecond(j * 40000 + cityHash64(id, j) % 30000) AS ts,
    trace_id,
    if(j = 0, span_id, lower(leftPad(hex(cityHash64(id, j, 'span')), 16, '0'))),
    if(j = 0, '', span_id),
    '',
    if(j = 0, concat(system, '.', replaceAll(type, '.', '_'), '.receive'),
        concat('mule.route.', splitByChar('.', type)[1])),
    if(j = 0, 'Server', 'Client'),
    service,
    map('service.name', service, 'service.version', '4.2.1', 'deployment.environment', 'production',
        'host.name', concat(service, '-node-', toString(cityHash64(id) % 4)), 'telemetry.sdk.language', 'java',
        'telemetry.sdk.name', 'opentelemetry', 'tower.source', source),
    'io.opentelemetry.integration',
    '2.9.0',
    mapFilter((k, v) -> v != '', map(
        'order.id', order_id, 'shipment.id', shipment_id, 'invoice.id', invoice_id, 'customer.id', customer_id,
        'http.request.method', 'POST', 'http.response.status_code', if(failed, '504', '200'),
        'http.route', concat('/api/v2/', splitByChar('.', type)[1], 's'), 'server.address', concat(system, '.internal'),
        'messaging.destination.name', if(j = 0, '', concat(splitByChar('.', type)[1], '.v1')),
        'code.function', 'handle', 'thread.name', concat('worker-', toString(cityHash64(id, j) % 16)))),
    toUInt64(200000 + cityHash64(id, j, 'duration') % 80000000),
    if(failed, 'Error', 'Unset'),
    if(failed, 'timeout calling partner', ''),
    if(failed, [ts], []),
    if(failed, ['exception'], []),
    if(failed, [map('exception.type', 'java.net.SocketTimeoutException', 'exception.message', 'Read timed out')], []),
    [], [], [], []
FROM (
    SELECT *, j, if(j = 0, concat(system, '-adapter'), 'middleware') AS service,
        cityHash64(id, j, 'error') % 200 = 0 AS failed
    FROM business_events ARRAY JOIN range({spans:UInt8}) AS j
)
"""

LATE_CASES = """
SELECT rule, key, due_at, ended_at, customer_id, warehouse, source, started_at
FROM sla_cases FINAL WHERE status = 'late' ORDER BY due_at
"""

PARTS = """
SELECT table, sum(rows) AS rows, sum(data_compressed_bytes) AS compressed,
    sum(data_uncompressed_bytes) AS uncompressed, sum(secondary_indices_compressed_bytes) AS indexes,
    sum(bytes_on_disk) AS on_disk, count() AS parts
FROM system.parts WHERE active AND database = currentDatabase() GROUP BY table ORDER BY on_disk DESC
"""

PROJECTIONS = """
SELECT table, sum(bytes_on_disk) AS on_disk
FROM system.projection_parts WHERE active AND database = currentDatabase() GROUP BY table
"""

COLUMNS = """
SELECT table, name, type, compression_codec AS codec, data_compressed_bytes AS compressed,
    data_uncompressed_bytes AS uncompressed
FROM system.columns WHERE database = currentDatabase() AND table IN {tables:Array(String)}
ORDER BY compressed DESC LIMIT {limit:UInt32}
"""


@dataclass(frozen=True)
class Probe:
    """A column of a table stored with another type/codec, in the table's order."""

    table: str
    column: str
    variants: tuple[tuple[str, str], ...]  # (type, codec) to try; the first is the column as migrated


def _p(table: str, column: str, *variants: tuple[str, str]) -> Probe:
    return Probe(table, column, variants)


_TIME6 = "DateTime64(6, 'UTC')"
PROBES: tuple[Probe, ...] = (
    _p(
        "otel_traces",
        "Timestamp",
        ("DateTime64(9)", "Delta(8), ZSTD(1)"),
        ("DateTime64(9)", "DoubleDelta, ZSTD(1)"),
        ("DateTime64(9)", "ZSTD(1)"),
    ),
    _p("otel_traces", "TraceId", ("String", "ZSTD(1)"), ("String", "ZSTD(3)")),
    _p("otel_traces", "SpanId", ("String", "ZSTD(1)"), ("String", "ZSTD(3)")),
    _p(
        "otel_traces",
        "SpanAttributes",
        ("Map(LowCardinality(String), String)", "ZSTD(3)"),
        ("Map(LowCardinality(String), String)", "ZSTD(1)"),
        ("Map(LowCardinality(String), String)", "ZSTD(6)"),
    ),
    _p(
        "otel_traces",
        "ResourceAttributes",
        ("Map(LowCardinality(String), String)", "ZSTD(3)"),
        ("Map(LowCardinality(String), String)", "ZSTD(1)"),
    ),
    _p("otel_traces", "Duration", ("UInt64", "T64, ZSTD(1)"), ("UInt64", "ZSTD(1)")),
    _p("business_events", "id", ("String", "ZSTD(1)"), ("String", "ZSTD(3)")),
    _p("business_events", "data", ("String", "ZSTD(3)"), ("String", "ZSTD(1)"), ("String", "ZSTD(6)")),
    _p(
        "business_events",
        "time",
        (_TIME6, "Delta(8), ZSTD(1)"),
        (_TIME6, "DoubleDelta, ZSTD(1)"),
        (_TIME6, "ZSTD(1)"),
        (_TIME6, "T64, ZSTD(1)"),
    ),
    _p("business_events", "received_at", (_TIME6, "Delta(8), ZSTD(1)"), (_TIME6, "ZSTD(1)")),
    _p("business_events", "order_id", ("String", "ZSTD(1)"), ("String", "ZSTD(3)")),
    _p("business_events", "trace_id", ("String", "ZSTD(1)"), ("String", "ZSTD(3)")),
    _p("business_events", "customer_id", ("String", "ZSTD(1)"), ("LowCardinality(String)", "ZSTD(1)")),
    _p("sla_cases", "key", ("String", "ZSTD(3)"), ("String", "LZ4"), ("String", "ZSTD(1)")),
    _p(
        "sla_cases",
        "started_at",
        (_TIME6, "ZSTD(3)"),
        (_TIME6, "LZ4"),
        (_TIME6, "ZSTD(1)"),
        (_TIME6, "Delta(8), ZSTD(1)"),
        (_TIME6, "Delta(8), ZSTD(3)"),
        (_TIME6, "DoubleDelta, ZSTD(1)"),
    ),
    _p("sla_cases", "due_at", (_TIME6, "ZSTD(3)"), (_TIME6, "LZ4"), (_TIME6, "Delta(8), ZSTD(1)")),
    _p(
        "sla_cases",
        "ended_at",
        (f"Nullable({_TIME6})", "ZSTD(3)"),
        (f"Nullable({_TIME6})", "LZ4"),
        (f"Nullable({_TIME6})", "Delta(8), ZSTD(1)"),
    ),
    _p("sla_cases", "evaluated_at", (_TIME6, "LZ4"), (_TIME6, "DoubleDelta, ZSTD(1)"), (_TIME6, "ZSTD(1)")),
    _p(
        "sla_cases",
        "customer_id",
        ("String", "ZSTD(3)"),
        ("String", "LZ4"),
        ("String", "ZSTD(1)"),
        ("LowCardinality(String)", "LZ4"),
    ),
    _p("sla_cases", "state_hash", ("UInt64", "LZ4"), ("UInt64", "ZSTD(3)")),
    _p("sla_cases", "version", ("UInt64", "LZ4"), ("UInt64", "DoubleDelta, ZSTD(1)"), ("UInt64", "T64, ZSTD(1)")),
    _p("exceptions", "context", ("String", "ZSTD(3)"), ("String", "ZSTD(6)")),
    _p("exception_audit", "detail", ("String", "LZ4"), ("String", "ZSTD(3)")),
)

# the sort key of each probed table (probes keep the rows in that order)
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "otel_traces": ("ServiceName", "SpanName", "Timestamp"),
    "business_events": ("source", "id"),
    "sla_cases": ("rule", "key"),
    "exceptions": ("id",),
    "exception_audit": ("exception_id", "at", "seq"),
}


def timed(label: str, fn: Callable[[], Any]) -> Any:
    """Run fn, print how long it took, return its result."""
    began = time.perf_counter()
    result = fn()
    print(f"  {label}: {time.perf_counter() - began:.1f} s", flush=True)
    return result


def build(store: EmbeddedStore, orders: int, spans_per_event: int) -> None:
    """The month of business: events, spans, SLA cases, exceptions (see the module docstring)."""
    start = NOW - timedelta(days=30)
    step_us = timedelta(days=30).total_seconds() * 1e6 / orders
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    params = {"start": start, "step_us": step_us, "first": 0, "count": orders, "lo": epoch, "hi": NOW, "limit": 2**62}
    timed("business events", lambda: store.command(_events_sql(), params))
    timed("redeliveries", lambda: store.command(DUPLICATE, {"hi": NOW}))
    if spans_per_event:
        timed("spans", lambda: store.command(SPANS, {"spans": spans_per_event}))
    rules: list[Rule] = load_rules(default_rules_dir())
    sla = [r for r in rules if isinstance(r, SlaRule) and r.enabled]
    clock = FixedClock(NOW)
    exceptions = ExceptionStore(store, clock)
    owners: Callable[[Rule, Mapping[str, str]], str] = lambda rule, data: rule.owner  # noqa: E731
    engine = SlaEngine(store, exceptions, clock, sla, owners, sweep_every=None)
    timed("SLA evaluation (cases, breached exceptions)", lambda: engine.evaluate(full=True))
    timed("late cases' exceptions, opened and resolved", lambda: late_exceptions(store, exceptions, clock, sla))


def late_exceptions(store: EmbeddedStore, exceptions: ExceptionStore, clock: FixedClock, rules: list[SlaRule]) -> int:
    """Open at its deadline and resolve `late` at its end an exception for each late case (batches of 1,000)."""
    by_id = {r.id: r for r in rules}
    cases = store.query(LATE_CASES)
    for begin in range(0, len(cases), 1000):
        batch = cases[begin : begin + 1000]
        clock.set(datetime.fromisoformat(batch[-1]["due_at"]).replace(tzinfo=UTC))
        found = [
            NewException(
                rule=c["rule"],
                key=c["key"],
                kind=by_id[c["rule"]].kind,
                owner=by_id[c["rule"]].owner,
                severity=by_id[c["rule"]].severity,
                due_at=datetime.fromisoformat(c["due_at"]).replace(tzinfo=UTC),
                context={k: c[k] for k in ("warehouse", "customer_id", "source", "started_at")},
            )
            for c in batch
        ]
        opened = exceptions.open_many(found)
        clock.set(max(datetime.fromisoformat(c["ended_at"]).replace(tzinfo=UTC) for c in batch))
        ended = {(c["rule"], c["key"]): c for c in batch}
        details = {
            e.id: {
                "hours_late": round(
                    (
                        datetime.fromisoformat(ended[(e.rule, e.key)]["ended_at"])
                        - datetime.fromisoformat(ended[(e.rule, e.key)]["due_at"])
                    ).total_seconds()
                    / 3600,
                    2,
                ),
                "ended_at": ended[(e.rule, e.key)]["ended_at"],
            }
            for e in opened
        }
        exceptions.resolve_many(opened, "late", details, actor="engine")
    return len(cases)


def merge_all(store: EmbeddedStore) -> None:
    """Merge every table's parts (OPTIMIZE FINAL): the state background merges converge to."""
    for row in store.query("SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%Tree'"):
        store.command(f"OPTIMIZE TABLE `{row['name']}` FINAL")


def probe(store: EmbeddedStore, spec: Probe) -> list[tuple[str, str, int, float]]:
    """(type, codec, compressed bytes, seconds to write and merge) of the column under each variant."""
    keys = [k for k in SORT_KEYS[spec.table] if k != spec.column]
    types = {
        r["name"]: r["type"]
        for r in store.query(
            "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String}",
            {"t": spec.table},
        )
    }
    results = []
    for kind, codec in spec.variants:
        store.command("DROP TABLE IF EXISTS size_probe")
        columns = ", ".join([*(f"`{k}` {types[k]}" for k in keys), f"`{spec.column}` {kind} CODEC({codec})"])
        order = ", ".join(f"`{k}`" for k in SORT_KEYS[spec.table])
        store.command(
            f"CREATE TABLE size_probe ({columns}) ENGINE = MergeTree ORDER BY ({order})"
            " SETTINGS min_bytes_for_wide_part = 0, min_rows_for_wide_part = 0"  # per-column sizes
        )
        select = ", ".join(f"`{c}`" for c in [*keys, spec.column])
        began = time.perf_counter()
        store.command(f"INSERT INTO size_probe SELECT {select} FROM `{spec.table}`")
        store.command("OPTIMIZE TABLE size_probe FINAL")
        seconds = time.perf_counter() - began
        row = store.query(
            "SELECT data_compressed_bytes AS c FROM system.columns"
            " WHERE database = currentDatabase() AND table = 'size_probe' AND name = {n:String}",
            {"n": spec.column},
        )[0]
        results.append((kind, codec, int(row["c"]), seconds))
    store.command("DROP TABLE IF EXISTS size_probe")
    return results


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def report(store: EmbeddedStore, orders: int, markdown: bool) -> None:
    """Print what each table holds and how much space it takes, per 1,000,000 orders."""
    scale = MILLION / orders
    parts = store.query(PARTS)
    total_c = sum(int(p["compressed"]) for p in parts)
    total_disk = sum(int(p["on_disk"]) for p in parts)
    print()
    print(f"per {MILLION:,} orders (measured with {orders:,}; sizes in MB = 10^6 bytes):")
    projections = {r["table"]: int(r["on_disk"]) for r in store.query(PROJECTIONS)}
    head = (
        "table",
        "rows",
        "columns MB",
        "uncompressed MB",
        "ratio",
        "skip indexes MB",
        "projections MB",
        "on disk MB",
        "bytes/row",
    )
    rows = []
    for p in parts:
        n, c, u, i, d = (int(p[k]) for k in ("rows", "compressed", "uncompressed", "indexes", "on_disk"))
        if not n:
            continue
        rows.append(
            (
                p["table"],
                f"{n * scale:,.0f}",
                _mb(c * scale),
                _mb(u * scale),
                f"{u / c:.1f}x" if c else "-",
                _mb(i * scale),
                _mb(projections.get(p["table"], 0) * scale),
                _mb(d * scale),
                f"{d / n:,.0f}",
            )
        )
    label = "**all tables**" if markdown else "all tables"
    rows.append((label, "", _mb(total_c * scale), "", "", "", "", _mb(total_disk * scale), ""))
    _table(head, rows, markdown)
    print()
    print("biggest columns (compressed, per 1,000,000 orders):")
    big = store.query(COLUMNS, {"tables": [p["table"] for p in parts], "limit": 20})
    _table(
        ("table", "column", "type", "codec", "compressed MB", "uncompressed MB", "ratio"),
        [
            (
                r["table"],
                r["name"],
                r["type"],
                r["codec"] or "none (default)",
                _mb(int(r["compressed"]) * scale),
                _mb(int(r["uncompressed"]) * scale),
                f"{int(r['uncompressed']) / int(r['compressed']):.1f}x" if int(r["compressed"]) else "-",
            )
            for r in big
        ],
        markdown,
    )


def codecs(store: EmbeddedStore, orders: int, markdown: bool) -> None:
    """Print each probe's variants against the column as migrated (the first variant)."""
    scale = MILLION / orders
    print()
    print("codecs (the column alone, in its table's order; per 1,000,000 orders; first line = as migrated):")
    rows = []
    for spec in PROBES:
        results = probe(store, spec)
        base = results[0][2]
        for i, (kind, codec, c, seconds) in enumerate(results):
            change = "" if i == 0 else f"{(c - base) / base * 100:+.0f}%" if base else "-"
            rows.append((f"{spec.table}.{spec.column}", kind, codec, _mb(c * scale), change, f"{seconds:.2f}"))
        print(f"  probed {spec.table}.{spec.column}", flush=True)
    head = ("column", "type", "codec", "compressed MB", "vs as migrated", "write + merge s (measured size)")
    _table(head, rows, markdown)


def _table(head: tuple[str, ...], rows: Sequence[tuple[Any, ...]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("| " + " | ".join("---" for _ in head) + " |")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    for row in (head, *rows):
        print("  " + "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=MILLION)
    parser.add_argument("--spans-per-event", type=int, default=2)
    parser.add_argument("--no-codecs", action="store_true", help="skip the codec comparison")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    with temp_workdir("tower-bench-size-", args.keep) as workdir:
        store = EmbeddedStore(workdir / "store")
        migrate(store)
        print(f"building {args.orders:,} orders, {args.spans_per_event} spans per event, as of {utc_text(NOW)} UTC:")
        build(store, args.orders, args.spans_per_event)
        timed("merging every table", lambda: merge_all(store))
        report(store, args.orders, args.markdown)
        if not args.no_codecs:
            codecs(store, args.orders, args.markdown)
        store.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
