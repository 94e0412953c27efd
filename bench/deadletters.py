"""Dead-letter replay benchmark: a backlog replayed after a fix, against one submit per letter and the raw insert.

    .venv/bin/python -m bench.deadletters [--letters N] [--one-by-one M] [--keep]

1. An in-process tower (no HTTP, jobs off) on an embedded store in its own temp dir; `--letters` (20,000) refused
   CloudEvents are written as dead letters: `shipment.confirmed` events claiming `tms`, sent by the `erp` token,
   which may not send it. Then the token is granted `tms` (the fix).
2. **Replay**, timed: `IngestService.replay(source="tms")` called as `tower deadletters replay --source tms` calls
   the API, a request at a time (1,000 letters each) from the last answer's cursor until none remain. Every letter
   must end replayed and every event stored.
3. **One by one** (the plain alternative, how a replay wrote before: one durable submit per letter): `--one-by-one`
   (300) more such letters, claiming `edi`, each replayed by its own call with its id.
4. **The limit**: the same events' rows inserted into the store in one batch, without validation or dead letters.

Prints letters per second for each; exit code 1 if a letter is left pending or an event is missing.
"""

from __future__ import annotations

import argparse
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.workdir import temp_workdir
from collector.auth import TokenRegistry
from collector.deadletters import Cursor, Refusal, dead_letter_row
from kernel.api_auth import token_id
from kernel.jobs import SchedulerSettings
from kernel.model.events import validate_event
from kernel.settings import ApiSettings, CollectorSettings, IngestSettings, Settings, StoreSettings, TelemetrySettings
from kernel.store.embedded import EmbeddedStore
from tower.app import build_tower


def _event(source: str, n: int, at: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"bench-{source}-{n}",
        "source": source,
        "type": "shipment.confirmed",
        "time": at,
        "data": {"order_id": f"SO-{n}", "shipment_id": f"SH-{source}-{n}", "quantity": 1, "warehouse": "DAL"},
    }


def _letters(store: EmbeddedStore, source: str, count: int, sender: str, now: datetime) -> list[dict[str, Any]]:
    """`count` dead letters of events claiming `source` from the token `sender`; returns the events."""
    at = now.isoformat().replace("+00:00", "Z")
    events = [_event(source, n, at) for n in range(count)]
    reason = f"source: the token may not send {source!r}"
    rows = [dead_letter_row(Refusal("events", reason, orjson.dumps(e).decode(), source), sender, now) for e in events]
    for start in range(0, len(rows), 5_000):
        store.insert("dead_letters", rows[start : start + 5_000])
    return events


def run(workdir: Path, letters: int, one_by_one: int) -> int:
    store = EmbeddedStore(workdir / "clickhouse")
    erp = f"bench-erp-{secrets.token_hex(12)}"
    settings = Settings(
        store=StoreSettings(backend="embedded", data_dir=workdir / "data"),
        collector=CollectorSettings(host="127.0.0.1", http_port=0, grpc_port=0),
        ingest=IngestSettings(tokens={erp: ["erp"]}),
        api=ApiSettings(tokens={f"bench-admin-{secrets.token_hex(12)}": "admin"}),
        telemetry=TelemetrySettings(exporter="none"),
    )
    tower = build_tower(settings, store=store, scheduler=SchedulerSettings(enabled=False))
    tower.pipeline.start()
    try:
        now = datetime.now(UTC)
        sender = token_id(erp)
        backlog = _letters(store, "tms", letters, sender, now)
        single = _letters(store, "edi", one_by_one, sender, now)
        tower.ingest.tokens = TokenRegistry(IngestSettings(tokens={erp: ["erp", "tms", "edi"]}))  # the fix
        print(f"{letters:,} dead letters claiming tms and {one_by_one:,} claiming edi, sent by the erp token")

        start, calls, replayed, after = time.perf_counter(), 0, 0, None
        while True:
            report = tower.ingest.replay(source="tms", after=after)
            calls += 1
            replayed += report.replayed
            if not report.remaining or report.cursor is None:
                break
            after = Cursor.parse(report.cursor)
        batched = time.perf_counter() - start
        print(f"replay, a request at a time: {replayed:,} letters in {calls} requests, {batched:.2f} s:"
              f" {replayed / batched:,.0f} letters/s")  # fmt: skip

        ids = [r["id"] for r in store.query("SELECT toString(id) AS id FROM dead_letters WHERE source = 'edi'")]
        start = time.perf_counter()
        for ident in ids:
            tower.ingest.replay(ids=[ident])
        single_s = time.perf_counter() - start
        print(f"one submit per letter: {len(ids):,} letters in {single_s:.2f} s: {len(ids) / single_s:,.0f} letters/s")

        rows = []
        for raw in backlog:
            event, _ = validate_event({**raw, "id": raw["id"] + "-limit"})
            assert event is not None
            rows.append(event.to_row("events", now))
        start = time.perf_counter()
        store.insert("business_events", rows)
        limit = time.perf_counter() - start
        print(f"the limit, one insert of the events' rows: {len(rows):,} in {limit:.2f} s: {len(rows) / limit:,.0f}/s")
        print(f"replay / one by one: {replayed / batched / (len(ids) / single_s):.0f}x;"
              f" replay / the limit: {replayed / batched / (len(rows) / limit):.2f}")  # fmt: skip

        pending = int(store.query("SELECT count() AS n FROM dead_letters FINAL WHERE status = 'pending'")[0]["n"])
        replayed_events = "SELECT count() AS n FROM business_events FINAL WHERE NOT endsWith(id, '-limit')"
        stored = int(store.query(replayed_events)[0]["n"])
        expected = len(backlog) + len(single)
        print(f"left pending: {pending}; replayed events stored: {stored:,} of {expected:,}")
        return 0 if pending == 0 and stored == expected else 1
    finally:
        tower.pipeline.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--letters", type=int, default=20_000, help="dead letters in the backlog (20,000)")
    parser.add_argument("--one-by-one", type=int, default=300, help="letters replayed one call each (300)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    with temp_workdir("tower-bench-deadletters-", args.keep) as workdir:
        return run(workdir, args.letters, args.one_by_one)


if __name__ == "__main__":
    raise SystemExit(main())
