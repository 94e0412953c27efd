"""Backup benchmark: an online backup of the embedded store (`tower backup`) against the plain alternative it
replaces (stop the store, copy its data directory, open it again), and a restore.

    .venv/bin/python -m bench.backup [--orders N] [--keep]

1. Builds `--orders` orders over 30 days in an embedded store in its own temp dir (bench/sla.py's generator:
   about 5 events an order) and evaluates the SLA rules once, so `sla_cases` holds its cases too.
2. Online backup (`kernel.backups.Backups.start`, followed to `created`) while a writer inserts a batch of 1,000
   events every 50 ms and times each insert: the inserts' worst and median latency during the backup, beside the
   same writer's for as long again without one.
3. The plain alternative: closing the store, copying its data directory (`shutil.copytree`), opening it again
   (the tower's downtime).
4. Restores the backup into a new data directory in a subprocess (`tower restore`; one data directory per process)
   and checks every table's row count against the store at the time of the backup.

Prints the times, sizes and latencies; exit code 1 if a restored count differs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.sla import NOW, settle, write_history
from bench.workdir import temp_workdir
from kernel.backups import Backups, folder_size
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore
from kernel.schema.migrations import migrate
from kernel.store.embedded import EmbeddedStore
from sla_rules.engine import SlaEngine
from sla_rules.loader import default_rules_dir, load_rules
from sla_rules.model import SlaRule

WRITE = (
    "INSERT INTO business_events (id, source, system, type, time, order_id, received_at)"
    " SELECT concat('w-', toString(number + {first:UInt64})), 'erp', 'erp', 'order.accepted', {t:DateTime64(6, 'UTC')},"
    " concat('SO-W', toString(number + {first:UInt64})), {t:DateTime64(6, 'UTC')} FROM numbers(1000)"
)


class Writer:
    """Inserts 1,000 events every 50 ms and keeps each insert's latency."""

    def __init__(self, store: EmbeddedStore, first: int) -> None:
        self.store, self.next = store, first
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            self.store.command(WRITE, {"first": self.next, "t": NOW})
            self.latencies.append(time.perf_counter() - began)
            self.next += 1000
            self._stop.wait(0.05)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        ms = sorted(x * 1000 for x in self.latencies)
        return f"{len(ms)} inserts, median {statistics.median(ms):.1f} ms, worst {ms[-1]:.1f} ms"


def counts(store: EmbeddedStore) -> dict[str, int]:
    """Every table's rows."""
    tables = [r["name"] for r in store.query("SELECT name FROM system.tables WHERE database = 'default' ORDER BY name")]
    return {t: int(store.query(f"SELECT count() AS n FROM {t}")[0]["n"]) for t in tables}


def run(workdir: Path, orders: int) -> int:
    store = EmbeddedStore(workdir / "data" / "clickhouse")
    migrate(store)
    began = time.perf_counter()
    write_history(store, orders)
    rules = [r for r in load_rules(default_rules_dir()) if isinstance(r, SlaRule) and r.enabled]
    clock = FixedClock(NOW)
    SlaEngine(store, ExceptionStore(store, clock), clock, rules, lambda r, d: r.owner, sweep_every=None).evaluate(True)
    events = int(store.query("SELECT count() AS n FROM business_events")[0]["n"])
    print(f"data: {orders:,} orders, {events:,} events, SLA cases evaluated, in {time.perf_counter() - began:.1f} s")
    settle(store)
    _, size = folder_size(store.data_dir)
    print(f"store: {size / 1e6:,.0f} MB on disk")

    backups = Backups(store, clock)
    with Writer(store, 0) as writer:
        began = time.perf_counter()
        started = backups.start()
        while (found := backups.status(started.name)) is not None and found.status == "creating":
            time.sleep(0.02)
        online = time.perf_counter() - began
        before = counts(store)  # as of the end of the backup, less what the writer added during it
    assert found is not None and found.status == "created", found
    during = writer.summary()
    with Writer(store, 10_000_000) as quiet:
        time.sleep(online)
    print(
        f"online backup: {online:.2f} s, {found.files:,} files, {found.bytes / 1e6:,.0f} MB"
        f" ({found.bytes / 1e6 / online:,.0f} MB/s); the store kept working"
    )
    print(f"  inserts during the backup: {during}")
    print(f"  inserts without a backup:  {quiet.summary()}")

    copy = workdir / "copy"
    began = time.perf_counter()
    store.close()
    shutil.copytree(store.data_dir, copy)
    store.reopen()
    offline = time.perf_counter() - began
    print(f"plain alternative, the store closed, its folder copied, opened again: {offline:.2f} s of downtime")
    store.close()

    # a restore opens another data directory: its own process
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TOWER_")}
    command = [sys.executable, "-m", "tower", "restore", found.path, "--data-dir", str(workdir / "restored")]
    began = time.perf_counter()
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    restored_s = time.perf_counter() - began
    if result.returncode != 0:
        print(f"ERROR: restore failed: {result.stderr}")
        return 1
    print(f"restore (tower restore, a new process): {restored_s:.2f} s")
    check = [sys.executable, "-c", _COUNT, str(workdir / "restored" / "clickhouse")]
    restored = json.loads(subprocess.run(check, capture_output=True, text=True, check=True).stdout)
    # the writer ran during the backup, which copies each table as it reaches it: business_events holds the history
    # and some of the writer's rows; every other table must match
    ok = all(restored.get(t) == n for t, n in before.items() if t != "business_events")
    ok &= events <= restored.get("business_events", -1) <= before["business_events"]
    print(f"restored counts {'match' if ok else 'DIFFER'}: {restored}")
    return 0 if ok else 1


# `counts` of another data directory: its own process (one data directory per process)
_COUNT = (
    "import json, sys; from pathlib import Path; from bench.backup import counts;"
    " from kernel.store.embedded import EmbeddedStore; print(json.dumps(counts(EmbeddedStore(Path(sys.argv[1])))))"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    with temp_workdir("tower-bench-backup-", args.keep) as workdir:
        return run(workdir, args.orders)


if __name__ == "__main__":
    raise SystemExit(main())
