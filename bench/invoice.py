"""Invoice matching benchmark: the `invoice-match` comparison over a month of a distributor's orders, with
its documents computed once each (materialized CTEs) against the same statement with plain CTEs.

    .venv/bin/python -m bench.invoice [--orders N] [--repeat N] [--keep]

1. Builds `--orders` orders over 30 days inside ClickHouse with bench/sla.py's generator (accepted,
   released, shipped, ASN, invoiced; steps late or never sent; 0.4% of the events redelivered), then
   corrects 1% of the invoices (a later `invoice.posted` of the same invoice, 2% more) and 0.5% of them
   another way (one unit more), so the latest document matters and every kind of finding occurs.
2. Runs `InvoiceReconciler.compare` both ways once and checks they answer the same: the same count
   compared, the same findings with the same values.
3. `--repeat` rounds, each timing both ways in turn (the machine is shared: rounds interleave them).

Prints the best of each, invoices and orders compared per second, the ratio, and the peak resident memory of
the process during each way's first run (its peak reset before: /proc/self/clear_refs). Exit code 1 if the two
ways disagree.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench.sla import NOW, settle, write_history
from bench.workdir import temp_workdir
from kernel.schema.migrations import migrate
from kernel.store.embedded import EmbeddedStore
from reconcilers.config import rule_config
from reconcilers.invoice import InvoiceReconciler
from reconcilers.model import Comparison, RunContext

_T = "DateTime64(6, 'UTC')"

# A corrected invoice: the same invoice id sent again an hour later with another amount (1% of the invoices)
# or another quantity (0.5%); the correction is the latest document and wins.
CORRECT = f"""
INSERT INTO business_events
SELECT * EXCEPT (bucket) REPLACE (
    concat(id, '-corrected') AS id,
    time + toIntervalHour(1) AS time,
    received_at + toIntervalHour(1) AS received_at,
    if(bucket < 2, toDecimal64(amount * 1.02, 4), amount) AS amount,
    if(bucket = 2, quantity + 1, quantity) AS quantity)
FROM (SELECT *, cityHash64(id) % 200 AS bucket FROM business_events WHERE type = 'invoice.posted')
WHERE bucket < 3 AND time + toIntervalHour(1) <= {{hi:{_T}}}
"""


def reset_peak() -> None:
    """Start the process's peak resident memory (VmHWM) again from its current size (Linux: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_mb() -> float:
    """The process's peak resident memory since the last reset, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def findings(comparison: Comparison) -> dict[str, Any]:
    """The differing keys with what a run would record of each."""
    return {o.key: (o.values, o.route, o.summary) for o in comparison.differing}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds; the best is reported")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    with temp_workdir("tower-bench-invoice-", args.keep) as workdir:
        return run(workdir, args.orders, args.repeat)


def run(workdir: Path, orders: int, repeat: int) -> int:
    """The benchmark in `workdir`; returns the exit code."""
    store = EmbeddedStore(workdir / "store")
    migrate(store)
    begun = time.perf_counter()
    write_history(store, orders)
    store.command(CORRECT, {"hi": NOW})
    rows = store.query("SELECT type, count() AS n FROM business_events GROUP BY type")
    counts = {r["type"]: int(r["n"]) for r in rows}
    print(
        f"data: {orders:,} orders over 30 days, {sum(counts.values()):,} event rows"
        f" ({counts.get('invoice.posted', 0):,} invoice.posted, corrections and redeliveries included),"
        f" built in {time.perf_counter() - begun:.1f} s; waited {settle(store):.1f} s for merges"
    )

    config = rule_config("invoice-match", "bench", "business", "finance", "high", "invoice", {})
    context = RunContext("bench", NOW, tuple(f.id for f in config.finding_rules()), lambda phase, message: None)
    ways: dict[str, Callable[[], list[Comparison]]] = {
        "documents once (materialized CTEs)": partial(InvoiceReconciler(store, config, True).compare, context),
        "plain CTEs": partial(InvoiceReconciler(store, config, False).compare, context),
    }

    answers: dict[str, Comparison] = {}
    peaks: dict[str, float] = {}
    for label, fn in ways.items():
        reset_peak()
        answers[label] = fn()[0]
        peaks[label] = peak_mb()
    first, second = answers.values()
    same = first.compared == second.compared and findings(first) == findings(second)
    by_check: dict[str, int] = {}
    for observation in first.differing:
        for check in observation.values["check"]:
            by_check[check] = by_check.get(check, 0) + 1
    print(
        f"compared {first.compared:,} invoices and never-invoiced orders; {len(first.differing):,} findings"
        f" ({', '.join(f'{check} {n:,}' for check, n in sorted(by_check.items()))});"
        f" both ways the same: {'yes' if same else 'NO'}"
    )

    times: dict[str, list[float]] = {label: [] for label in ways}
    for _ in range(repeat):
        for label, fn in ways.items():
            started = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - started)
    best = {}
    for label, seconds in times.items():
        best[label] = min(seconds)
        print(
            f"  {label}: {best[label]:.2f} s (best of {repeat}: {', '.join(f'{s:.2f}' for s in seconds)});"
            f" {first.compared / best[label]:,.0f} compared/s; peak resident memory {peaks[label]:,.0f} MB"
        )
    once, plain = best.values()
    print(f"ratio plain / once: {plain / once:.1f}x")
    store.close()
    if not same:
        print("ERROR: the two ways disagree")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
