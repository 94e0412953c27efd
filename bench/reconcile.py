"""Inventory reconciliation benchmark: 1,000,000 (sku, location) pairs on each side with 1% differences,
compared inside the embedded store, beside a pandas merge of the same data in the same run.

    .venv/bin/python -m bench.reconcile [--pairs N] [--diff-pct P] [--repeat N] [--keep]

1. Builds the snapshots inside ClickHouse (INSERT ... SELECT from numbers(), no row through Python)
   in an embedded store in its own temp dir: one ERP and one WMS `inventory.snapshot` per pair,
   an older snapshot (another quantity) of 10% of the pairs on each side, so "latest" matters,
   and 0.2% of the snapshots delivered twice. `--diff-pct` of the pairs (1%) differ by 1-5 units.
2. Times the comparison statement alone (the one GROUP BY over both sides, inside the store), and
   the reconciler's whole comparison (`InventoryReconciler.compare`: the freshness query, the
   statement, the differing pairs turned into findings in Python), each best of `--repeat`.
3. Times a whole run of the service (`ReconcileService.run`): the comparison, opening an exception
   per difference, recording the state and the run; then a second run with nothing changed.
4. Reads the snapshots into a DataFrame once (not timed) and times pandas doing the same, best of
   `--repeat`: latest snapshot per (side, sku, location), an outer merge of the two sides, the
   differences beyond the tolerance. Both must find the same differing pairs.

Prints pairs per second and the ratios (targets: at least 1,000,000 pairs/s and 5x pandas). Exit
code 1 if the two disagree.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pandas as pd

from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore
from kernel.schema.migrations import migrate
from kernel.store.embedded import EmbeddedStore
from reconcilers.config import rule_config
from reconcilers.inventory import InventoryReconciler
from reconcilers.model import RunContext
from reconcilers.service import ReconcileService

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
_T = "DateTime64(6, 'UTC')"
R = TypeVar("R")

# Pair n: sku n % 50,000 at one of the locations n / 50,000 (20 locations for 1M pairs). The ERP's
# quantity is a hash of n; the WMS's equals it except for `diff_per_100k` of 100,000 pairs (+/- 1-5).
# 10% of the pairs also have an older snapshot on each side (another quantity), 0.2% are redelivered.
GENERATE = f"""
INSERT INTO business_events (id, source, system, type, time, subject, sku, location, warehouse, quantity,
    data, door, received_at)
SELECT
    concat(side, '-', toString(n), '-', toString(version)) AS id,
    if(side = 'wms', 'wms/dc', 'erp') AS source,
    side AS system,
    'inventory.snapshot' AS type,
    {{now:{_T}}} - toIntervalSecond(if(version = 0, 60 + cityHash64(n, side) % 3000, 86400 + n % 3600)) AS time,
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
ARRAY JOIN if(n % 10 = 0, [0, 1], [0]) AS version
"""

# Redeliveries: 0.2% of the snapshots stored a second time (same id, same content).
REDELIVER = "INSERT INTO business_events SELECT * FROM business_events WHERE cityHash64(id) % 500 = 0"

EXPORT = """
INSERT INTO FUNCTION file({path:String}, 'Parquet')
SELECT toString(system) AS system, sku, toString(location) AS location, assumeNotNull(quantity) AS quantity, time
FROM business_events WHERE type = 'inventory.snapshot'
SETTINGS engine_file_truncate_on_insert = 1
"""


def timed(fn: Callable[[], R]) -> tuple[R, float]:
    """The result of fn() and the seconds it took."""
    begun = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - begun


def best(repeat: int, fn: Callable[[], object]) -> tuple[float, str]:
    """The best time of `repeat` calls of fn, and every time as text."""
    times = [timed(fn)[1] for _ in range(repeat)]
    return min(times), ", ".join(f"{t:.3f}" for t in times)


def pandas_differences(frame: pd.DataFrame, tolerance: float) -> set[str]:
    """The pairs whose latest ERP and WMS quantities differ by more than `tolerance`, with pandas."""
    latest = frame.sort_values("time").drop_duplicates(["system", "sku", "location"], keep="last")
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
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tower-bench-reconcile-"))
    try:
        return run(workdir, args.pairs, args.diff_pct, args.repeat)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run(workdir: Path, pairs: int, diff_pct: float, repeat: int) -> int:
    """The benchmark in `workdir` (its own embedded store: chDB allows one data dir per process)."""
    store = EmbeddedStore(workdir / "store")
    migrate(store)
    params = {"now": NOW, "pairs": pairs, "diff_per_100k": round(diff_pct * 1000)}
    _, build_s = timed(lambda: store.command(GENERATE, params))
    store.command(REDELIVER)
    rows = int(store.query("SELECT count() AS n FROM business_events")[0]["n"])
    print(f"data: {pairs:,} pairs x 2 sides, {rows:,} snapshot rows (older snapshots and redeliveries included),")
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
    statement_s, statement_all = best(repeat, lambda: store.query(sql, sql_params))
    print(f"store, the comparison statement alone: {statement_s:.3f} s (best of {repeat}: {statement_all})")
    comparisons = reconciler.compare(context)
    compare_s, compare_all = best(repeat, lambda: reconciler.compare(context))
    sync = comparisons[0]
    ours = {o.key for o in sync.differing}
    print(
        f"store, InventoryReconciler.compare (freshness, statement, findings built in Python): {compare_s:.3f} s"
        f" (best of {repeat}: {compare_all}); {sync.compared:,} pairs compared, {len(ours):,} differ"
    )

    service = ReconcileService(store, ExceptionStore(store, clock), clock, [config], lambda rule, data: rule.owner)
    (first,), first_s = timed(lambda: service.run())
    (second,), second_s = timed(lambda: service.run())
    print(
        f"whole run, cold: {first_s:.2f} s ({first.opened:,} exceptions opened; phases ms {first.details['phases_ms']})"
    )
    print(f"whole run, warm: {second_s:.2f} s ({second.opened} opened, {second.findings:,} still differing)")

    parquet = workdir / "snapshots.parquet"
    store.command(EXPORT, {"path": str(parquet)})
    frame = pd.read_parquet(parquet)
    theirs = pandas_differences(frame, 0.0)
    pandas_s, pandas_all = best(repeat, lambda: pandas_differences(frame, 0.0))
    print(
        f"pandas: {len(frame):,} rows in memory (read untimed); latest per pair + outer merge + filter"
        f" {pandas_s:.3f} s (best of {repeat}: {pandas_all}); {len(theirs):,} differ"
    )
    same = ours == theirs
    print(
        f"same differing pairs: {'yes' if same else 'NO'} ({len(ours - theirs)} only in the store,"
        f" {len(theirs - ours)} only in pandas)"
    )
    print(
        f"pairs/s: statement {pairs / statement_s:,.0f}; compare {pairs / compare_s:,.0f};"
        f" pandas {pairs / pandas_s:,.0f}"
    )
    print(
        f"ratio pandas / statement: {pandas_s / statement_s:.1f}x; pandas / compare: {pandas_s / compare_s:.1f}x"
        " (targets: >= 5x, >= 1,000,000 pairs/s)"
    )
    store.close()
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
