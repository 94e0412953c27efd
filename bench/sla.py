"""SLA engine benchmark: a full and an incremental evaluation of the default SLA rules over 1,000,000
orders, against a plain pandas implementation of the same rules over the same data.

    .venv/bin/python -m bench.sla [--orders N] [--new-events N] [--keep]

1. Builds the orders inside ClickHouse (INSERT ... SELECT from numbers(), no rows through
   Python) into an embedded store in a temp dir: each order is accepted, released, shipped
   (with its ASN) and invoiced, about 5 events an order over 30 days, with realistic faults
   (steps late or never sent) and 0.4% redelivered events.
2. Times `SlaEngine.evaluate(full=True)` of the four default SLA rules twice: cold (every
   case is new and written) and warm (every case recomputed, nothing changed to write), each
   once no background merge has run for a second (the wait is printed).
3. Reads the events into a DataFrame once (not timed) and times pandas computing the same
   four rules (statuses per rule), checking both give the same counts per rule and status.
4. Inserts the next `--new-events` events (the following ~90 minutes of the same business)
   and times an incremental `evaluate()`; checks the result against pandas again and that a
   full evaluation afterwards finds nothing left to change.

Prints each figure and the ratios (targets: full at least 10x faster than pandas; incremental
under a tenth of a full evaluation). Exit code 1 if a count differs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from bench.workdir import temp_workdir
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore
from kernel.schema.migrations import migrate
from kernel.store.embedded import EmbeddedStore
from sla_rules.engine import SlaEngine
from sla_rules.loader import default_rules_dir, load_rules
from sla_rules.model import WEEKDAYS, EventMatch, Rule, SlaRule
from sla_rules.report import EvaluationReport
from sla_rules.sql import Binder, Group, RulePart, cases, next_business_day_offsets

_T = "DateTime64(6, 'UTC')"
DAYS = 30
# A Tuesday, two days after the US daylight saving change: the history crosses it.
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
STATUSES = ("met", "late", "breached", "pending", "at_risk")

Counts = dict[str, dict[str, int]]
R = TypeVar("R")


def _u(salt: int) -> str:
    """A uniform number in [0, 1), deterministic per order and salt."""
    return f"((cityHash64(n, {salt}) % 1000003) / 1000003)"


def _after(base: str, minutes_from: float, minutes_span: float, salt: int) -> str:
    return f"{base} + toIntervalSecond(toInt64(({minutes_from} + {_u(salt)} * {minutes_span}) * 60))"


# One order per number n, accepted at a steady rate with jitter. Fault rates per step: release
# 2% late / 0.3% never; ship 3% late / 0.3% never; ASN 3% late / 0.5% never; invoice 2% late /
# 0.3% never. Steps after a missing one never happen. Only events with time in (lo, hi] are
# written, the earliest `limit` of them.
GENERATE = f"""
INSERT INTO business_events (id, source, system, type, time, subject, order_id, shipment_id, invoice_id,
    customer_id, sku, location, warehouse, quantity, amount, currency, data, trace_id, span_id, door, received_at)
SELECT
    lower(hex(cityHash64(n, ev.1))) AS id,
    ev.3 AS source,
    splitByChar('/', ev.3)[1] AS system,
    ev.1 AS type,
    assumeNotNull(ev.2) AS time,
    multiIf(type IN ('shipment.confirmed', 'asn.sent'), shipment_id, type = 'invoice.posted', invoice_id, order_id)
        AS subject,
    order_id,
    if(type IN ('shipment.confirmed', 'asn.sent', 'invoice.posted'), shipment_id, '') AS shipment_id,
    if(type = 'invoice.posted', invoice_id, '') AS invoice_id,
    if(type = 'order.accepted', customer, '') AS customer_id,
    '' AS sku,
    '' AS location,
    if(type IN ('order.accepted', 'order.released', 'shipment.confirmed'), wh, '') AS warehouse,
    if(type IN ('shipment.confirmed', 'invoice.posted'), toFloat64(quantity), NULL) AS quantity,
    if(type IN ('order.accepted', 'invoice.posted'), toDecimal64(amount, 4), NULL) AS amount,
    if(type IN ('order.accepted', 'invoice.posted'), 'USD', '') AS currency,
    concat('{{"order_id":"', order_id, '"}}') AS data,
    '' AS trace_id,
    '' AS span_id,
    'events' AS door,
    least(time + toIntervalSecond(1 + cityHash64(n, ev.1, 'received') % 120), {{hi:{_T}}}) AS received_at
FROM (
    SELECT *,
        multiIf(shipped IS NULL OR {_u(4)} < 0.005, NULL,
                {_u(4)} < 0.035, {_after("shipped", 65, 300, 14)},
                {_after("shipped", 5, 50, 14)}) AS asn,
        multiIf(shipped IS NULL OR {_u(5)} < 0.003, NULL,
                {_u(5)} < 0.023, {_after("shipped", 25 * 60, 47 * 60, 15)},
                {_after("shipped", 60, 19 * 60, 15)}) AS invoiced
    FROM (
        SELECT *,
            multiIf(released IS NULL OR {_u(3)} < 0.003, NULL,
                    {_u(3)} < 0.033, {_after("released", 26 * 60, 14 * 60, 13)},
                    {_after("released", 30, 330, 13)}) AS shipped
        FROM (
            SELECT *,
                multiIf({_u(2)} < 0.003, NULL,
                        {_u(2)} < 0.023, {_after("accepted", 130, 300, 12)},
                        {_after("accepted", 5, 100, 12)}) AS released
            FROM (
                SELECT number AS n,
                    concat('SO-', leftPad(toString(n), 8, '0')) AS order_id,
                    concat('SH-', leftPad(toString(n), 8, '0')) AS shipment_id,
                    concat('IN-', leftPad(toString(n), 8, '0')) AS invoice_id,
                    concat('C-', toString(cityHash64(n, 6) % 20000)) AS customer,
                    ['DAL', 'ATL', 'RNO'][1 + cityHash64(n, 7) % 3] AS wh,
                    ['wms/dallas', 'wms/atlanta', 'wms/reno'][1 + cityHash64(n, 7) % 3] AS wms,
                    1 + cityHash64(n, 8) % 40 AS quantity,
                    round(20 + {_u(9)} * 4000, 2) AS amount,
                    toNullable({{start:{_T}}} + toIntervalMicrosecond(toInt64((n + {_u(1)}) * {{step_us:Float64}})))
                        AS accepted
                FROM numbers({{first:UInt64}}, {{count:UInt64}})
            )
        )
    )
)
ARRAY JOIN [
    ('order.accepted', accepted, 'erp'),
    ('order.released', released, 'erp'),
    ('shipment.confirmed', shipped, wms),
    ('asn.sent', asn, 'edi'),
    ('invoice.posted', invoiced, 'erp')
] AS ev
WHERE ev.2 IS NOT NULL AND ev.2 > {{lo:{_T}}} AND ev.2 <= {{hi:{_T}}}
ORDER BY time
LIMIT {{limit:UInt64}}
"""

# Redeliveries: about 0.4% of the events stored a second time, 30 s later.
DUPLICATE = f"""
INSERT INTO business_events
SELECT * REPLACE (least(received_at + toIntervalSecond(30), {{hi:{_T}}}) AS received_at)
FROM business_events WHERE cityHash64(id) % 250 = 0
"""

EXPORT = """
INSERT INTO FUNCTION file({path:String}, 'Parquet')
SELECT id, toString(source) AS source, toString(system) AS system, type, time, order_id, shipment_id, invoice_id,
    customer_id, sku, toString(warehouse) AS warehouse, toString(location) AS location, toString(currency) AS currency
FROM business_events
SETTINGS engine_file_truncate_on_insert = 1
"""

CASE_COUNTS = "SELECT rule, status, count() AS n FROM sla_cases FINAL GROUP BY rule, status"


def generate(store: EmbeddedStore, orders: int, first: int, count: int, lo: datetime, hi: datetime, limit: int) -> None:
    """Write the events of orders [first, first + count) whose time is in (lo, hi], at most `limit`."""
    start = NOW - timedelta(days=DAYS)
    step_us = timedelta(days=DAYS).total_seconds() * 1e6 / orders
    params = {"start": start, "step_us": step_us, "first": first, "count": count, "lo": lo, "hi": hi, "limit": limit}
    store.command(GENERATE, params)


def write_history(store: EmbeddedStore, orders: int) -> None:
    """The whole history up to NOW: every order's events (`generate`), then 0.4% of them redelivered."""
    generate(store, orders, 0, orders, datetime(1970, 1, 1, tzinfo=UTC), NOW, 2**62)
    store.command(DUPLICATE, {"hi": NOW})


def settle(store: EmbeddedStore, quiet: float = 1.0, limit: float = 600.0) -> float:
    """Wait until no background merge has run for `quiet` seconds (at most `limit`); the seconds waited.

    Writing the data (and the cases) leaves parts that ClickHouse merges in the background for a while;
    a run timed meanwhile would share the two cores with those merges."""
    begun = time.perf_counter()
    calm_since = begun
    while time.perf_counter() - begun < limit:
        now = time.perf_counter()
        if int(store.query("SELECT count() AS n FROM system.merges")[0]["n"]):
            calm_since = now
        elif now - calm_since >= quiet:
            break
        time.sleep(0.1)
    return time.perf_counter() - begun


def timed(fn: Callable[[], R]) -> tuple[R, float]:
    """The result of fn() and the seconds it took."""
    begun = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - begun


def engine_counts(store: EmbeddedStore) -> Counts:
    """Cases per rule and status, as the engine stored them."""
    counts: Counts = {}
    for row in store.query(CASE_COUNTS):
        counts.setdefault(row["rule"], {})[row["status"]] = int(row["n"])
    return counts


# The pandas implementation: the same rules, written as one would with pandas.


def _side(df: pd.DataFrame, side: EventMatch) -> pd.Series[bool]:
    mask = df["type"].isin(side.types)
    if side.sources:
        systems = [s for s in side.sources if "/" not in s]
        covered = df["system"].isin(systems)
        for path in (s for s in side.sources if "/" in s):
            covered |= (df["source"] == path) | df["source"].str.startswith(path + "/")
        mask &= covered
    for name, values in side.where.items():
        mask &= df[name].isin(values)
    for name, values in side.where_not.items():
        mask &= ~df[name].isin(values)
    return mask


def _first_non_empty(df: pd.DataFrame, key: str, column: str) -> pd.Series[str]:
    """Per key, the value of `column` of its earliest event where it is set."""
    found = df[df[column] != ""].sort_values(["time", "source", "id"])
    return found.drop_duplicates(key).set_index(key)[column]


def _cutoff_due(rule: SlaRule, started: pd.Series[pd.Timestamp], zones: pd.Series[str]) -> pd.Series[pd.Timestamp]:
    cutoff = rule.deadline.cutoff
    assert cutoff is not None
    business = [WEEKDAYS.index(d) + 1 for d in cutoff.business_days]
    offsets = np.array([0, *next_business_day_offsets(cutoff.business_days)])
    limit = pd.Timedelta(hours=cutoff.time.hour, minutes=cutoff.time.minute, seconds=cutoff.time.second)
    due = pd.Series(pd.NaT, index=started.index, dtype="datetime64[us, UTC]")
    for zone in zones.unique():
        here = (zones == zone).to_numpy()
        local = started[here].dt.tz_convert(zone).dt.tz_localize(None)
        day = local.dt.normalize()
        weekday = (local.dt.day_of_week + 1).to_numpy()
        same_day = np.isin(weekday, business) & ((local - day) < limit).to_numpy()
        due_day = day + pd.to_timedelta(np.where(same_day, 0, offsets[weekday]), unit="D")
        end_of_day = due_day + pd.Timedelta(hours=23, minutes=59, seconds=59)
        due[here] = end_of_day.dt.tz_localize(zone).dt.tz_convert("UTC")
    return due


def pandas_statuses(df: pd.DataFrame, rule: SlaRule, now: datetime) -> dict[str, int]:
    """Cases of `rule` per status at `now`, computed with pandas."""
    events = df[df[rule.key] != ""]
    is_start = _side(events, rule.start)
    starts = events[is_start]
    cases = starts.groupby(rule.key)["time"].min().to_frame("started_at")
    cases["ended_at"] = events[_side(events, rule.end)].groupby(rule.key)["time"].min()
    started = cases["started_at"]
    if rule.deadline.after is not None:
        due = started + pd.Timedelta(rule.deadline.after)
    else:
        cutoff = rule.deadline.cutoff
        assert cutoff is not None
        zones = pd.Series(cutoff.timezone, index=cases.index)
        if cutoff.zone_by is not None:
            field = cutoff.zone_by.field
            value = _first_non_empty(starts, rule.key, field).reindex(cases.index)
            value = value.fillna(_first_non_empty(events, rule.key, field).reindex(cases.index)).fillna("")
            zones = value.map(cutoff.zone_by.zones).fillna(cutoff.timezone)
        due = _cutoff_due(rule, started, zones)
    ended = cases["ended_at"]
    has_end = ended.notna()
    at = pd.Timestamp(now)
    warning = pd.Timedelta(rule.warning) if rule.warning is not None else None
    status = np.select(
        [
            (has_end & (ended <= due)).to_numpy(),
            has_end.to_numpy(),
            (at > due).to_numpy(),
            (at >= due - warning).to_numpy() if warning is not None else np.zeros(len(cases), dtype=bool),
        ],
        ["met", "late", "breached", "at_risk"],
        "pending",
    )
    values, counts = np.unique(status, return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts, strict=True)}


def pandas_counts(df: pd.DataFrame, rules: list[SlaRule], now: datetime) -> Counts:
    """Cases per rule and status, computed with pandas."""
    return {rule.id: pandas_statuses(df, rule, now) for rule in rules}


def compare(label: str, engine: Counts, frame: Counts) -> bool:
    """Print both count tables; True when they agree."""
    same = True
    print(f"  {label}: {'rule':<16}" + "".join(f"{s:>10}" for s in STATUSES))
    for rule in sorted(set(engine) | set(frame)):
        ours, theirs = engine.get(rule, {}), frame.get(rule, {})
        row = "".join(f"{ours.get(s, 0):>10,}" for s in STATUSES)
        agree = all(ours.get(s, 0) == theirs.get(s, 0) for s in STATUSES)
        same &= agree
        print(
            f"  {'':<{len(label)}}  {rule:<16}{row}  {'same as pandas' if agree else 'DIFFERS: pandas ' + str(theirs)}"
        )
    return same


def compute_only(store: EmbeddedStore, rules: list[SlaRule], now: datetime) -> None:
    """The engine's case computation alone (the SELECT of a full run, without comparing or writing)."""
    groups: dict[str, Group] = {}
    for rule in rules:
        groups.setdefault(rule.key, Group(rule.key, "all")).parts.append(RulePart(rule))
    bind = Binder()
    select = " UNION ALL ".join(cases(group, bind, now) for group in groups.values())
    store.query(f"SELECT * FROM ({select}) FORMAT Null", bind.params)


def show(report: EvaluationReport, seconds: float, label: str) -> None:
    """One evaluation's figures."""
    print(
        f"{label}: {seconds:.2f} s, {report.cases_changed:,} cases written, {len(report.opened):,} exceptions opened,"
        f" {len(report.resolved):,} resolved"
    )
    for rule, part in sorted(report.rules.items()):
        print(f"    {rule:<16} {part.mode:<12} {part.keys_evaluated:>10,} keys  {part.cases_changed:>10,} written")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--new-events", type=int, default=10_000)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()

    with temp_workdir("tower-bench-sla-", args.keep) as workdir:
        return run(workdir, args.orders, args.new_events)


def run(workdir: Path, orders: int, new_events: int) -> int:
    """The benchmark in `workdir`; returns the exit code."""
    store = EmbeddedStore(workdir / "store")
    migrate(store)
    _, seconds = timed(lambda: write_history(store, orders))
    total = int(store.query("SELECT count() AS n FROM business_events")[0]["n"])
    distinct = int(store.query("SELECT count() AS n FROM business_events FINAL")[0]["n"])
    print(
        f"data: {orders:,} orders over {DAYS} days, {distinct:,} events + {total - distinct:,} redeliveries"
        f" = {total:,} rows, built in ClickHouse in {seconds:.1f} s"
    )

    loaded: list[Rule] = load_rules(default_rules_dir())
    rules = [r for r in loaded if isinstance(r, SlaRule) and r.enabled]
    clock = FixedClock(NOW)
    owners: Callable[[Rule, Mapping[str, str]], str] = lambda rule, data: rule.owner  # noqa: E731
    engine = SlaEngine(store, ExceptionStore(store, clock), clock, rules, owners, sweep_every=None)
    print(f"rules: {', '.join(r.id for r in rules)}; now = {NOW.isoformat()}")

    print(f"waited {settle(store):.1f} s for the background merges of the data's parts")
    cold, cold_s = timed(lambda: engine.evaluate(full=True))
    show(cold, cold_s, "full evaluation, cold (every case new)")
    print(f"waited {settle(store):.1f} s for the background merges of the cases' parts")
    warm, warm_s = timed(lambda: engine.evaluate(full=True))
    show(warm, warm_s, "full evaluation, warm (every case recomputed)")
    stored = engine_counts(store)
    _, compute_s = timed(lambda: compute_only(store, rules, NOW))
    print(f"the case computation alone (the full run's SELECT, nothing compared or written): {compute_s:.2f} s")

    parquet = workdir / "events.parquet"
    store.command(EXPORT, {"path": str(parquet)})
    frame = pd.read_parquet(parquet)
    frame_counts, pandas_s = timed(lambda: pandas_counts(frame, rules, NOW))
    print(f"pandas, the same rules over the same {len(frame):,} rows (DataFrame already in memory): {pandas_s:.2f} s")
    ok = compare("counts at now", stored, frame_counts)

    later = NOW + timedelta(hours=6)
    recent = orders * 4 // DAYS  # orders whose later steps can still fall after now
    _, insert_s = timed(lambda: generate(store, orders, orders - recent, recent * 2, NOW, later, new_events))
    last = store.query(
        "SELECT max(received_at) AS at, count() AS n FROM business_events WHERE received_at > {t:" + _T + "}",
        {"t": NOW},
    )
    clock.set(datetime.fromisoformat(last[0]["at"]).replace(tzinfo=UTC))
    print(f"inserted {int(last[0]['n']):,} new events (the next {clock.now() - NOW} of business) in {insert_s:.2f} s")
    incremental, incremental_s = timed(lambda: engine.evaluate())
    show(incremental, incremental_s, "incremental evaluation")

    store.command(EXPORT, {"path": str(parquet)})
    frame = pd.read_parquet(parquet)
    ok &= compare("counts after", engine_counts(store), pandas_counts(frame, rules, clock.now()))
    check = engine.evaluate(full=True)
    print(f"full evaluation after the incremental one: {check.cases_changed} cases changed (expected 0)")
    ok &= check.cases_changed == 0

    print(
        f"ratio pandas / full (cold): {pandas_s / cold_s:.1f}x; pandas / full (warm): {pandas_s / warm_s:.1f}x"
        f" (target >= 10x); pandas / the case computation alone: {pandas_s / compute_s:.1f}x"
    )
    print(
        f"ratio incremental / full (cold): {incremental_s / cold_s:.3f}; incremental / full (warm):"
        f" {incremental_s / warm_s:.3f} (target < 0.1)"
    )
    if not ok:
        print("ERROR: the engine and pandas disagree")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
