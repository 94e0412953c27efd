"""Inventory reconciliation benchmark: 1,000,000 (sku, location) pairs on each side with 1% differences,
compared inside the embedded store, beside a pandas merge of the same data in the same run.

    .venv/bin/python -m bench.reconcile [--pairs N] [--diff-pct P] [--repeat N] [--history N] [--keep]

1. Builds the snapshots inside ClickHouse (INSERT ... SELECT from numbers(), no row through Python)
   in an embedded store in its own temp dir: one ERP and one WMS `inventory.snapshot` per pair,
   an older snapshot (another quantity) of 10% of the pairs on each side, so "latest" matters,
   and 0.2% of the snapshots delivered twice. `--diff-pct` of the pairs (1%) differ by 1-5 units.
   `--history N` gives every pair N snapshots per side, 4 hours apart, as the reconciler's lookback
   (7 days) holds them when a source snapshots every 4 hours (N = 42): what a run reads grows with it.
   `--history 0`: exactly one snapshot per pair and side, none redelivered (the data as the issue states it);
   pandas then needs no "latest" step, and a plain outer merge of the two sides joins the contenders.
2. Reads the snapshots into a DataFrame once (not timed), and checks that two straightforward
   pandas versions find the same differing pairs as the store: latest snapshot per (side, sku,
   location) by sort + drop_duplicates, or by groupby + idxmax; then an outer merge of the two
   sides and the differences beyond the tolerance.
3. Before any run, `--repeat` rounds, each timing once: the comparison statement alone (the one
   GROUP BY over both sides, inside the store), the reconciler's whole comparison
   (`InventoryReconciler.compare`, what a run does before applying: the freshness query, the
   statement, the differing pairs turned into findings in Python), and each pandas version.
   Rounds interleave the store and pandas so both meet the same load (the machine is shared).
4. Times a whole run of the service (`ReconcileService.run`): the comparison, opening an exception
   per difference, recording the state and the run; then a second run with nothing changed.
5. After those runs, as every later scheduled run meets it (9,875 open exceptions and differing
   episodes whose keys the statement also answers), `--repeat` rounds of `compare` and each
   pandas version.

6. Where compare's time goes beyond the statement, each with its alternative in the same rounds:
   the freshness query from its projection or scanning every event, and whole warm runs with the
   garbage collector paused while findings are built or running (main-thread CPU time).

Prints the best of each, pairs per second and the ratios; the headline is the faster pandas
version against the slower `compare` (targets: at least 1,000,000 pairs/s and 5x pandas). Exit
code 1 if any disagree.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

import pandas as pd

from bench.workdir import temp_workdir
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore
from kernel.schema.migrations import migrate
from kernel.store.embedded import EmbeddedStore
from reconcilers import inventory
from reconcilers.config import rule_config
from reconcilers.inventory import InventoryReconciler
from reconcilers.model import RunContext, gc_paused
from reconcilers.service import ReconcileService

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
_T = "DateTime64(6, 'UTC')"
R = TypeVar("R")

# Pair n: sku n % 50,000 at one of the locations n / 50,000 (20 locations for 1M pairs). The ERP's
# quantity is a hash of n; the WMS's equals it except for `diff_per_100k` of 100,000 pairs (+/- 1-5).
# 10% of the pairs also have an older snapshot on each side (another quantity), 0.2% are redelivered. With
# `history` > 1, every pair has `history` snapshots on each side instead, 4 hours apart (a source that
# snapshots every 4 hours, kept for the reconciler's lookback), the older ones with another quantity. With
# `history` 0, every pair has exactly one snapshot on each side and none is redelivered (the data as stated).
GENERATE = f"""
INSERT INTO business_events (id, source, system, type, time, subject, sku, location, warehouse, quantity,
    data, door, received_at)
SELECT
    concat(side, '-', toString(n), '-', toString(version)) AS id,
    if(side = 'wms', 'wms/dc', 'erp') AS source,
    side AS system,
    'inventory.snapshot' AS type,
    {{now:{_T}}} - toIntervalSecond(if(version = 0, 60 + cityHash64(n, side) % 3000,
        if({{history:UInt32}} > 1, version * 14400, 86400) + n % 3600)) AS time,
    concat(sku, '@', location) AS subject,
    sku, location, '' AS warehouse,
    toFloat64(if(version = 1, book + 7,
        if(side = 'wms' AND differs, greatest(0, toInt64(book) + if(cityHash64(n, 'sign') % 2 = 0, 1, -1)
            * toInt64(1 + cityHash64(n, 'delta') % 5)), book))) AS quantity,
    '{{}}' AS data, 'bench' AS door, time AS received_at
FROM (
    SELECT number AS n,
        concat('SKU-', leftPad(toString(n % 50000), 6, '0')) AS sku,
        concat('L', leftPad(toString(intDiv(n, 50000)), 3, '0')) AS location,
        10 + cityHash64(n) % 990 AS book,
        cityHash64(n, 'diff') % 100000 < {{diff_per_100k:UInt64}} AS differs
    FROM numbers({{pairs:UInt64}})
)
ARRAY JOIN ['erp', 'wms'] AS side
ARRAY JOIN if({{history:UInt32}} > 1, range({{history:UInt32}}),
    if(n % 10 = 0 AND {{history:UInt32}} = 1, [0, 1], [0])) AS version
"""

# Redeliveries: 0.2% of the snapshots stored a second time (same id, same content).
REDELIVER = "INSERT INTO business_events SELECT * FROM business_events WHERE cityHash64(id) % 500 = 0"

EXPORT = """
INSERT INTO FUNCTION file({path:String}, 'Parquet')
SELECT toString(system) AS system, sku, toString(location) AS location, assumeNotNull(quantity) AS quantity, time
FROM business_events WHERE type = 'inventory.snapshot'
SETTINGS engine_file_truncate_on_insert = 1
"""


WATCHED = "SELECT count() AS n FROM exceptions FINAL WHERE status != 'resolved'"


def timed(fn: Callable[[], R]) -> tuple[R, float]:
    """The result of fn() and the seconds it took."""
    begun = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - begun


def rounds(repeat: int, contenders: dict[str, Callable[[], object]]) -> dict[str, list[float]]:
    """`repeat` rounds, each calling every contender once in turn; each one's times."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            times[name].append(timed(fn)[1])
    return times


def report(label: str, times: list[float]) -> float:
    """Print the best of `times` and every time; the best."""
    print(f"  {label}: {min(times):.3f} s (best of {len(times)}: {', '.join(f'{t:.3f}' for t in times)})")
    return min(times)


def latest_by_sort(frame: pd.DataFrame) -> pd.DataFrame:
    """The latest snapshot per (system, sku, location): sort by time, keep each key's last row."""
    return frame.sort_values("time").drop_duplicates(["system", "sku", "location"], keep="last")


def latest_by_idxmax(frame: pd.DataFrame) -> pd.DataFrame:
    """The latest snapshot per (system, sku, location): the row of each group's newest time."""
    return frame.loc[frame.groupby(["system", "sku", "location"])["time"].idxmax()]


PANDAS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "sort + drop_duplicates": latest_by_sort,
    "groupby + idxmax": latest_by_idxmax,
}


def every_row(frame: pd.DataFrame) -> pd.DataFrame:
    """Every snapshot as the latest (`--history 0`: one per pair and side, so no step is needed)."""
    return frame


def pandas_differences(
    frame: pd.DataFrame, tolerance: float, latest_of: Callable[[pd.DataFrame], pd.DataFrame]
) -> set[str]:
    """The pairs whose latest ERP and WMS quantities differ by more than `tolerance`, with pandas."""
    latest = latest_of(frame)
    erp = latest[latest["system"] == "erp"][["sku", "location", "quantity"]]
    wms = latest[latest["system"] == "wms"][["sku", "location", "quantity"]]
    both = erp.merge(wms, on=["sku", "location"], how="outer", suffixes=("_erp", "_wms"))
    difference = both["quantity_erp"].fillna(0) - both["quantity_wms"].fillna(0)
    found = both[difference.abs().round(6) > tolerance]
    return set(found["sku"] + "@" + found["location"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--diff-pct", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3, help="comparison timings; the best is reported")
    parser.add_argument(
        "--history",
        type=int,
        default=1,
        help="snapshots per pair and side, 4 hours apart (default 1: one, and an older one for 10%% of the pairs;"
        " 0: exactly one, none redelivered)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    with temp_workdir("tower-bench-reconcile-", args.keep) as workdir:
        return run(workdir, args.pairs, args.diff_pct, args.repeat, args.history)


def run(workdir: Path, pairs: int, diff_pct: float, repeat: int, history: int = 1) -> int:
    """The benchmark in `workdir` (its own embedded store: chDB allows one data dir per process)."""
    store = EmbeddedStore(workdir / "store")
    migrate(store)
    params = {"now": NOW, "pairs": pairs, "diff_per_100k": round(diff_pct * 1000), "history": history}
    _, build_s = timed(lambda: store.command(GENERATE, params))
    if history:
        store.command(REDELIVER)
    rows = int(store.query("SELECT count() AS n FROM business_events")[0]["n"])
    what = "one per pair and side" if history == 0 else "older snapshots and redeliveries included"
    print(f"data: {pairs:,} pairs x 2 sides, {rows:,} snapshot rows ({what}),")
    print(f"      built in ClickHouse in {build_s:.1f} s")

    config = rule_config(
        "inventory-sync", "bench", "business", "warehouse", "medium", "inventory", {"sources": ["erp", "wms"]}
    )
    clock = FixedClock(NOW)
    reconciler = InventoryReconciler(store, config)
    context = RunContext("bench", NOW, tuple(f.id for f in config.finding_rules()), lambda phase, message: None)
    since = NOW - config.params.lookback
    sql, sql_params, _ = reconciler.statement(
        context, None, since, True, False, ["erp", "wms/dc"], {1: "erp", 2: "wms/dc"}
    )
    sync = reconciler.compare(context)[0]
    ours = {o.key for o in sync.differing}
    print(f"store: {sync.compared:,} pairs compared, {len(ours):,} differ")

    parquet = workdir / "snapshots.parquet"
    store.command(EXPORT, {"path": str(parquet)})
    frame = pd.read_parquet(parquet)
    print(f"pandas: {len(frame):,} rows in memory (read untimed); latest per pair + outer merge + filter")
    same = True
    pandas_runs: dict[str, Callable[[], object]] = {}
    contenders = {**PANDAS, "plain merge, no latest step": every_row} if history == 0 else PANDAS
    for name, latest_of in contenders.items():
        theirs = pandas_differences(frame, 0.0, latest_of)
        agree = ours == theirs
        same = same and agree
        print(
            f"  {name}: {len(theirs):,} differ; the same pairs as the store: {'yes' if agree else 'NO'}"
            f" ({len(ours - theirs)} only in the store, {len(theirs - ours)} only in pandas)"
        )
        pandas_runs[f"pandas, {name}"] = partial(pandas_differences, frame, 0.0, latest_of)

    print(f"before any run, {repeat} rounds (store and pandas interleaved):")
    before = rounds(
        repeat,
        {
            "store, the comparison statement alone": lambda: store.query(sql, sql_params),
            "store, InventoryReconciler.compare": lambda: reconciler.compare(context),
            **pandas_runs,
        },
    )
    best_before = {name: report(name, times) for name, times in before.items()}

    service = ReconcileService(store, ExceptionStore(store, clock), clock, [config], lambda rule, data: rule.owner)
    (first,), first_run_s = timed(lambda: service.run())
    (second,), second_run_s = timed(lambda: service.run())
    print(
        f"whole run, cold: {first_run_s:.2f} s ({first.opened:,} exceptions opened;"
        f" phases ms {first.details['phases_ms']})"
    )
    print(
        f"whole run, warm: {second_run_s:.2f} s ({second.opened} opened, {second.findings:,} still differing;"
        f" phases ms {second.details['phases_ms']})"
    )

    later = reconciler.compare(context)[0]
    same = same and {o.key for o in later.differing} == ours
    watched = int(store.query(WATCHED)[0]["n"])
    print(f"after the runs ({watched:,} open exceptions, whose keys compare also answers), {repeat} rounds:")
    after = rounds(repeat, {"store, InventoryReconciler.compare": lambda: reconciler.compare(context), **pandas_runs})
    best_after = {name: report(name, times) for name, times in after.items()}

    statement_s = best_before["store, the comparison statement alone"]
    compare_before = best_before["store, InventoryReconciler.compare"]
    compare_after = best_after["store, InventoryReconciler.compare"]
    print(
        f"pairs/s: statement {pairs / statement_s:,.0f}; compare {pairs / compare_before:,.0f} before any run,"
        f" {pairs / compare_after:,.0f} after the runs"
    )
    for name in pandas_runs:
        print(
            f"ratio {name} / statement: {best_before[name] / statement_s:.1f}x; / compare before any run:"
            f" {best_before[name] / compare_before:.1f}x; / compare after the runs:"
            f" {best_after[name] / compare_after:.1f}x (pandas of the same rounds)"
        )
    headline = min(
        min(best_before[n] for n in pandas_runs) / compare_before,
        min(best_after[n] for n in pandas_runs) / compare_after,
    )
    print(
        f"headline: the faster pandas / the slower compare (of the same rounds): {headline:.1f}x;"
        f" {pairs / max(compare_before, compare_after):,.0f} pairs/s (targets: >= 5x, >= 1,000,000 pairs/s)"
    )
    where_the_time_goes(store, reconciler, service, repeat)
    store.close()
    return 0 if same else 1


def where_the_time_goes(
    store: EmbeddedStore, reconciler: InventoryReconciler, service: ReconcileService, repeat: int
) -> None:
    """What compare() adds to the statement, each with its alternative in the same rounds: the freshness
    query from its projection or scanning every event, and whole warm runs with the garbage collector paused
    while findings are built or not (main-thread CPU time: the work of Python, less sensitive to the load)."""
    sql, params = reconciler.freshness_statement(list(reconciler.sides.values()))
    freshness = rounds(
        repeat,
        {
            "freshness query, from the projection": lambda: store.query(sql, params),
            "freshness query, scanning": lambda: store.query(f"{sql} SETTINGS optimize_use_projections = 0", params),
        },
    )
    print(f"where compare's time goes, {repeat} rounds:")
    for name, times in freshness.items():
        report(name, times)
    cpu: dict[str, list[float]] = {"collector paused": [], "collector running": []}
    wall: dict[str, list[float]] = {name: [] for name in cpu}
    for _ in range(repeat):
        for name in cpu:
            # the reconciler looks the pause up in its module at every run: swap it for a no-op there
            vars(inventory)["gc_paused"] = gc_paused if name == "collector paused" else nullcontext
            begun = time.thread_time()
            _, seconds = timed(lambda: service.run())
            cpu[name].append(time.thread_time() - begun)
            wall[name].append(seconds)
    vars(inventory)["gc_paused"] = gc_paused
    for name in cpu:
        print(
            f"  whole warm run, {name}: main thread CPU mean {sum(cpu[name]) / repeat:.3f} s"
            f" ({', '.join(f'{t:.3f}' for t in cpu[name])}); wall best {min(wall[name]):.3f} s"
        )


if __name__ == "__main__":
    raise SystemExit(main())
