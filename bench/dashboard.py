"""Dashboard API benchmark: the calls behind the overview and the first queue page, with 100,000 open
exceptions and 5,000,000 business events stored.

    .venv/bin/python -m bench.dashboard [--events N] [--open N] [--spans N] [--runs N] [--keep]

1. Builds the data inside ClickHouse (INSERT ... SELECT from numbers(), no row through Python) in an
   embedded store in a temp dir: the 30 days of orders of bench/sla.py, as many as make about
   `--events` distinct business events (plus 0.4% redeliveries); `--spans` spans of seven
   integrations over the last two days (2% errors).
2. Builds a tower on that store with its clock at the end of the history, and evaluates the SLA and
   technical rules once (full): about 4 million SLA cases and the exceptions of the breached ones.
   Tops the open exceptions up to `--open` (spread over 30 days, owners, rules, severities, customers
   and warehouses, each with its `opened` audit entry) and adds 1,000 notes in the last 24 hours.
3. Serves the API (uvicorn in a thread, as `tower serve` does) and calls, over HTTP, what each page
   asks for, `--runs` times after one warm-up call:
   - overview: GET /api/whoami, GET /api/overview (changes of the last 24 hours), GET /api/sources/health;
   - first queue page: GET /api/facets, GET /api/exceptions?status=active&sort=newest&limit=50
     (the queue's default) and ?status=open (the link Slack digests use).
   Prints p50 and p95 of each call and of each page (its calls one after the other, as the
   dashboard makes them on a cold cache). Target: p95 under 300 ms for each call. Then, figures
   only, the SLA page's calls (GET /api/sla/trend?days=30, GET /api/sla/breaches) and, beside
   them, the same trend read from `sla_cases` FINAL (what the route did before it used the kept
   reading); and a Prometheus scrape of GET /metrics with the store's counts read every time
   (TOWER_METRICS_CACHE_SECONDS=0, the worst case).
4. The overview right after an evaluation wrote cases: before each run, one more minute of business
   (the events of the following minute of the same orders, from bench/sla.py's generator, and the
   clock moved on a minute) and an incremental evaluation through the tower's SLA service, as the `sla-evaluate` job
   runs it every minute. The evaluation ends by reading the cases again for the overview
   (tower/case_days.py); its time and that reading's share are printed beside the overview's figures.
5. For reference (no target): the overview after a write to `sla_cases` that no evaluation followed
   (one changed case written directly), which reads the cases itself: what an overview costs when no
   reading is ready (the first one for a zone, or one arriving while an evaluation runs).
After step 4, checks that the kept reading equals a direct FINAL read of the cases (exit code 1 if not).
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bench.sla import DAYS, DUPLICATE, NOW, generate
from bench.workdir import temp_workdir
from kernel.clock import FixedClock
from kernel.jobs import SchedulerSettings
from kernel.schema.migrations import migrate
from kernel.settings import ApiSettings, CollectorSettings, Settings, StoreSettings, TelemetrySettings
from kernel.store.embedded import EmbeddedStore
from tower import insights
from tower.app import Tower, build_tower, create_app
from tower.case_days import READ, case_days, window_start

TARGET_MS = 300.0
EVENTS_PER_ORDER = 4.9315  # distinct events per order of bench/sla.py's story (slightly under: at least `--events`)
_T6 = "DateTime64(6, 'UTC')"

# Open exceptions beside the engine's, opened over the last 30 days.
TOP_UP = f"""
INSERT INTO exceptions (id, rule, key, kind, owner, severity, status, opened_at, due_at, resolved_at, resolution,
    resolution_detail, assignee, context, updated_at, version)
SELECT
    concat('bench-', toString(n)) AS id,
    ['order-release', 'ship-cutoff', 'asn-sent', 'invoice-posting', 'integration-errors'][1 + n % 5] AS rule,
    concat('BX-', leftPad(toString(n), 8, '0')) AS key,
    if(rule = 'integration-errors', 'technical', 'business') AS kind,
    multiIf(rule = 'order-release', 'customer_service', rule = 'ship-cutoff', 'warehouse',
            rule = 'asn-sent', 'transportation', rule = 'invoice-posting', 'finance', 'integration') AS owner,
    ['low', 'medium', 'high', 'critical'][1 + cityHash64(n, 3) % 4] AS severity,
    'open' AS status,
    {{now:{_T6}}} - toIntervalSecond(cityHash64(n, 4) % (30 * 86400)) AS opened_at,
    opened_at - toIntervalMinute(30) AS due_at,
    NULL AS resolved_at,
    '' AS resolution,
    '' AS resolution_detail,
    '' AS assignee,
    concat('{{"customer_id":"C-', toString(cityHash64(n, 5) % 20000), '","warehouse":"',
           ['DAL', 'ATL', 'RNO'][1 + cityHash64(n, 6) % 3], '","source":"erp"}}') AS context,
    opened_at AS updated_at,
    1 AS version
FROM (SELECT number AS n FROM numbers({{count:UInt64}}))
"""

TOP_UP_AUDIT = """
INSERT INTO exception_audit (exception_id, at, actor, seq, action, detail)
SELECT id, opened_at, 'engine', toUInt64(toUnixTimestamp64Micro(opened_at)) * 1000, 'opened', '{}'
FROM exceptions WHERE startsWith(id, 'bench-')
"""

NOTES = f"""
INSERT INTO exception_audit (exception_id, at, actor, seq, action, detail)
SELECT id, {{now:{_T6}}} - toIntervalSecond(cityHash64(id) % 86400), 'bench', cityHash64(id, 'seq'), 'note',
    '{{"text":"called the carrier"}}'
FROM exceptions WHERE startsWith(id, 'bench-') ORDER BY id LIMIT 1000
"""

SPANS = f"""
INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName,
    ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage)
SELECT
    {{now:{_T6}}} - toIntervalMillisecond(cityHash64(n, 1) % (2 * 86400000)) AS Timestamp,
    lower(hex(cityHash64(intDiv(n, 4), 2))) AS TraceId,
    lower(hex(cityHash64(n, 3))) AS SpanId,
    '' AS ParentSpanId,
    '' AS TraceState,
    ['POST /orders', 'poll wave status', 'send 856 ASN', 'poll carrier tracking'][1 + n % 4] AS SpanName,
    'Server' AS SpanKind,
    service.1 AS ServiceName,
    map('service.name', service.1, 'tower.source', service.2) AS ResourceAttributes,
    'bench' AS ScopeName,
    '' AS ScopeVersion,
    map('order.id', concat('SO-', leftPad(toString(cityHash64(n, 5) % 1000000), 8, '0'))) AS SpanAttributes,
    toUInt64(1000000 + cityHash64(n, 6) % 400000000) AS Duration,
    if(cityHash64(n, 7) % 100 < 2, 'Error', 'Ok') AS StatusCode,
    '' AS StatusMessage
FROM (
    SELECT number AS n,
        [('erp-order-api', 'erp'), ('wms-connector', 'wms'), ('edi-gateway', 'edi'), ('tms-sync', 'tms'),
         ('middleware', 'middleware'), ('storefront', 'ecommerce'), ('crm-connector', 'crm')]
            [1 + cityHash64(number, 8) % 7] AS service
    FROM numbers({{count:UInt64}})
)
"""


def timed(fn: Callable[[], Any]) -> float:
    """Seconds `fn()` took."""
    begun = time.perf_counter()
    fn()
    return time.perf_counter() - begun


def build_data(store: EmbeddedStore, events: int, spans: int) -> int:
    """The events (and their redeliveries) and the spans; the number of orders."""
    # As many orders as make `events` events, all of them written (no cut: the last minutes have their traffic).
    orders = math.ceil(events / EVENTS_PER_ORDER)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    seconds = timed(lambda: generate(store, orders, 0, orders, epoch, NOW, 2**62))
    store.command(DUPLICATE, {"hi": NOW})
    distinct = int(store.query("SELECT count() AS n FROM business_events FINAL")[0]["n"])
    total = int(store.query("SELECT count() AS n FROM business_events")[0]["n"])
    print(f"events: {distinct:,} distinct + {total - distinct:,} redeliveries = {total:,} rows ({seconds:.1f} s)")
    seconds = timed(lambda: store.command(SPANS, {"now": NOW, "count": spans}))
    print(f"spans: {spans:,} over the last 2 days ({seconds:.1f} s)")
    return orders


def top_up(store: EmbeddedStore, wanted: int) -> None:
    """Open exceptions up to `wanted`, with their audit entries, and 1,000 recent notes."""
    engine = int(store.query("SELECT count() AS n FROM exceptions FINAL WHERE status = 'open'")[0]["n"])
    store.command(TOP_UP, {"now": NOW, "count": max(0, wanted - engine)})
    store.command(TOP_UP_AUDIT)
    store.command(NOTES, {"now": NOW})
    total = int(store.query("SELECT count() AS n FROM exceptions FINAL WHERE status = 'open'")[0]["n"])
    print(f"open exceptions: {total:,} ({engine:,} from the engine, {total - engine:,} added)")


def rewrite_case(store: EmbeddedStore) -> None:
    """A new version of one SLA case, written directly (no evaluation reads the cases again after it)."""
    store.command(
        "INSERT INTO sla_cases SELECT * REPLACE (version + 1 AS version, evaluated_at + toIntervalSecond(1) AS"
        " evaluated_at) FROM sla_cases FINAL WHERE rule = 'asn-sent' ORDER BY version DESC LIMIT 1"
    )


class Business:
    """The business going on: each `minute()` writes the events of the next minute of the orders of
    bench/sla.py's story, moves the tower's clock on a minute and evaluates the rules incrementally
    through the tower's SLA service (as the `sla-evaluate` job does)."""

    def __init__(self, store: EmbeddedStore, tower: Tower, clock: FixedClock, orders: int) -> None:
        self.store, self.tower, self.clock, self.orders = store, tower, clock, orders
        self.evaluations: list[float] = []  # seconds of each evaluation, its reading of the cases included
        self.readings: list[float] = []  # seconds of the evaluation's reading of the cases for the overview
        self.changed: list[int] = []

    def minute(self) -> None:
        begun = self.clock.now()
        self.clock.advance(timedelta(minutes=1))
        recent = self.orders * 4 // DAYS  # orders whose later steps can still fall after NOW, and the next ones
        generate(self.store, self.orders, self.orders - recent, recent * 2, begun, self.clock.now(), 2**62)
        read_before = case_days.compute_seconds
        started = time.perf_counter()
        report = self.tower.sla.evaluate()
        self.evaluations.append(time.perf_counter() - started)
        self.readings.append(case_days.compute_seconds - read_before)
        self.changed.append(report.cases_changed)


@contextmanager
def serving(settings: Settings, store: EmbeddedStore, clock: FixedClock) -> Iterator[tuple[str, Tower]]:
    """A tower on `store` (on `clock`, no scheduled jobs) serving HTTP in a thread; its base URL and itself."""
    tower = build_tower(settings, clock=clock, store=store, scheduler=SchedulerSettings(enabled=False))
    evaluated = timed(lambda: tower.sla.evaluate(full=True))
    cases = int(store.query("SELECT count() AS n FROM sla_cases FINAL")[0]["n"])
    print(f"SLA and technical rules evaluated (full): {cases:,} cases in {evaluated:.1f} s")
    base = f"http://127.0.0.1:{settings.collector.http_port}"
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(tower), host="127.0.0.1", port=settings.collector.http_port, log_level="warning", lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the tower did not start")
        time.sleep(0.02)
    try:
        yield base, tower
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def percentile(values: list[float], share: float) -> float:
    """The `share` percentile (nearest rank) of `values`."""
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, max(0, round(share * len(ranked) + 0.5) - 1))]


def measure(
    http: httpx.Client,
    calls: dict[str, tuple[str, dict[str, Any]]],
    runs: int,
    before: Callable[[], Any] | None = None,
) -> dict[str, list[float]]:
    """Milliseconds of each call, `runs` times after a warm-up; each run makes the calls in order (after
    `before()`, not timed)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for run in range(runs + 1):
        if before is not None:
            before()
        for name, (path, params) in calls.items():
            begun = time.perf_counter()
            response = http.get(path, params=params)
            elapsed = (time.perf_counter() - begun) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
            if run:
                times[name].append(elapsed)
    return times


def timed_ms(fn: Callable[[], Any]) -> float:
    """Milliseconds `fn()` took."""
    begun = time.perf_counter()
    fn()
    return (time.perf_counter() - begun) * 1000


def report(page: str, times: dict[str, list[float]], target: bool = True) -> bool:
    """Print p50/p95 of each call and of the page; True when every call's p95 is under the target (`target`
    False: figures only)."""
    ok = True
    print(f"\n{page}")
    print(f"  {'call':<58} {'p50 ms':>8} {'p95 ms':>8}")
    for name, values in times.items():
        p95 = percentile(values, 0.95)
        ok &= p95 < TARGET_MS
        verdict = "" if p95 < TARGET_MS or not target else "  over the target"
        print(f"  {name:<58} {statistics.median(values):>8.1f} {p95:>8.1f}{verdict}")
    page_times = [sum(run) for run in zip(*times.values(), strict=True)]
    print(
        f"  {'the page (its calls one after the other)':<58} {statistics.median(page_times):>8.1f} "
        f"{percentile(page_times, 0.95):>8.1f}"
    )
    return ok


def run(workdir: Path, events: int, open_exceptions: int, spans: int, runs: int) -> int:
    """The benchmark in `workdir`; 0 when every call meets the target."""
    store = EmbeddedStore(workdir / "store")
    migrate(store)
    orders = build_data(store, events, spans)
    port = _free_port()
    token = secrets.token_urlsafe(24)
    settings = Settings(
        store=StoreSettings(backend="embedded", data_dir=workdir / "tower"),
        collector=CollectorSettings(host="127.0.0.1", http_port=port, grpc_port=0),
        api=ApiSettings(tokens={token: "admin"}),
        telemetry=TelemetrySettings(exporter="none"),
    )
    clock = FixedClock(NOW)
    os.environ["TOWER_METRICS_CACHE_SECONDS"] = "0"  # the scrape below reads the store every time
    with serving(settings, store, clock) as (url, tower):
        top_up(store, open_exceptions)
        since = (NOW - timedelta(hours=24)).isoformat()
        overview = {
            "GET /api/whoami": ("/api/whoami", {}),
            "GET /api/overview (changes of the last 24 h)": ("/api/overview", {"since": since}),
            "GET /api/sources/health": ("/api/sources/health", {}),
        }
        queue = {
            "GET /api/facets": ("/api/facets", {}),
            "GET /api/exceptions?status=active&sort=newest&limit=50": (
                "/api/exceptions",
                {"status": "active", "sort": "newest", "limit": 50, "offset": 0},
            ),
            "GET /api/exceptions?status=open&limit=50": ("/api/exceptions", {"status": "open", "limit": 50}),
        }
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as http:
            answer = http.get("/api/overview").json()
            page = http.get("/api/exceptions", params={"status": "open", "limit": 50}).json()
            print(
                f"overview: {answer['active']:,} active exceptions, {len(answer['compliance'])} rules, "
                f"{answer['at_risk']:,} at risk, {sum(answer['changes']['counts'].values()):,} changes in 24 h; "
                f"queue: {page['total']:,} open, first page of {len(page['items'])}"
            )
            print(f"\n{runs} runs after one warm-up; target p95 < {TARGET_MS:.0f} ms per call")
            ok = report("overview page", measure(http, overview, runs))
            ok &= report("first queue page", measure(http, queue, runs))
            # The SLA page: figures only (its calls read weeks of cases; the targets are the overview and queue).
            sla_page = {
                "GET /api/sla/trend?days=30": ("/api/sla/trend", {"days": 30}),
                "GET /api/sla/breaches (the last 30 days)": ("/api/sla/breaches", {}),
            }
            report("SLA page, no target: figures only", measure(http, sla_page, runs), target=False)
            start = datetime.combine(clock.now().date() - timedelta(days=29), datetime.min.time(), UTC)
            end = start + timedelta(days=30)
            final = [timed_ms(lambda: insights.sla_trend(store, start, end)) for _ in range(runs)]
            print(
                f"  for comparison, the same trend read from sla_cases FINAL (as the route did before it used the"
                f" kept reading): p50 {statistics.median(final):.1f} ms, p95 {percentile(final, 0.95):.1f} ms"
            )
            # A Prometheus scrape of GET /metrics, reading the store's counts every time (the bench sets
            # TOWER_METRICS_CACHE_SECONDS=0: the worst case; by default a scrape reuses them for 15 s).
            report(
                "Prometheus scrape, no target: figures only",
                measure(http, {"GET /metrics (the store's counts read every scrape)": ("/metrics", {})}, runs),
                target=False,
            )
            # Before each run, a minute of business and the evaluation the `sla-evaluate` job makes of it.
            business = Business(store, tower, clock, orders)
            after = {
                "GET /api/overview right after an evaluation": overview["GET /api/overview (changes of the last 24 h)"]
            }
            ok &= report(
                "overview right after an SLA evaluation wrote cases (a minute of business, then evaluated)",
                measure(http, after, runs, business.minute),
            )
            evaluations = business.evaluations[1:]  # as measure(), without the warm-up's
            readings = business.readings[1:]
            print(
                f"  the evaluations before these runs: {statistics.median(business.changed[1:]):,.0f} cases changed"
                f" (median), {statistics.median(evaluations) * 1000:,.0f} ms p50,"
                f" {percentile(evaluations, 0.95) * 1000:,.0f} ms p95, of which reading the cases again for the"
                f" overview {statistics.median(readings) * 1000:,.0f} ms p50, {percentile(readings, 0.95) * 1000:,.0f}"
                " ms p95"
            )
            # The reading the evaluations kept (merges may have run since) against a direct read of the cases.
            kept = case_days.kept(store, "UTC")
            direct = store.query(READ, {"tz": "UTC", "first_day": window_start(clock.now(), "UTC")})
            same = kept is not None and _ordered(kept.rows) == _ordered(direct)
            print(f"  the overview's kept reading equals a direct FINAL read of the cases: {'yes' if same else 'NO'}")
            ok &= same
            # For reference: a write no evaluation followed, so the overview reads the cases itself.
            cold = {
                "GET /api/overview after a write, no reading ready": after[
                    "GET /api/overview right after an evaluation"
                ]
            }
            report(
                "for reference, no target: overview after a write to sla_cases that no evaluation followed",
                measure(http, cold, runs, lambda: rewrite_case(store)),
                target=False,
            )
    store.close()
    print("\nevery call meets the target" if ok else "\nSOME CALLS MISS THE TARGET")
    return 0 if ok else 1


def _ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["rule"], r["day"], r["status"]))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5_000_000, help="distinct business events")
    parser.add_argument("--open", type=int, default=100_000, help="open exceptions")
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans over the last two days")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    with temp_workdir("tower-bench-dashboard-", args.keep) as workdir:
        return run(workdir, args.events, args.open, args.spans, args.runs)


if __name__ == "__main__":
    raise SystemExit(main())
