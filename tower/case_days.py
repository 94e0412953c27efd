"""The overview's reading of the SLA cases: cases per rule, day and status, read once per content of `sla_cases`.

The overview's compliance windows and at-risk cases come from one FINAL read of `sla_cases`, which
costs a merge of the table's parts by key (0.3 to 1 s for 4 million cases). The reading is the
same for as long as the table holds the same cases, so it is kept, per time zone, under a
*version* of the table's content, and read again only when that version changes:

- the version is read from `system.parts`: per partition, the block numbers its active parts
  cover (joined into intervals) and the newest mutation applied, and the table's UUID. An insert
  covers a new block, a mutation raises the mutation, a dropped part leaves a hole, a recreated
  table has another UUID on a server (Atomic databases). A merge changes none of them (it covers
  the blocks of the parts it merges), and a merge does not change what a FINAL read answers, so
  merges keep the reading. The embedded engine's tables have no UUID and number blocks from 1 again
  after a TRUNCATE: a table emptied and refilled within one process could repeat a version. The
  tower never empties `sla_cases`; tests that do call `forget`.
  When the table has a TTL (rows deleted in merges) the version is the list of part names;
  without local parts (a Distributed table) or with patch parts nothing is kept;
- a reading is kept in memory (per store and zone) and published in `sla_case_days`, so other
  processes of the tower (an `api` process beside a `scheduler`) and a restarted one use it. A
  published reading is taken only if one of the table's parts is older than the reading (after a
  TRUNCATE and a restart, block numbers start again and a version could repeat);
- `CaseDaysRefresh` runs last in every evaluation of the SLA service (scheduled or
  `POST /api/sla/evaluate`): when the engine wrote cases it reads them again for UTC (the
  dashboard's zone) and for the (at most 4) zones last asked for in this process in the last 24
  hours. The first overview after an evaluation finds its reading ready; the evaluation pays for it.

A reading computed for an earlier first day serves a later one (a superset of the days). A merge
across a block number a mutation took joins two intervals: the cases are read once more then.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from time import monotonic, perf_counter
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from kernel.clock import Clock
from kernel.store import Store, StoreError
from sla_rules.report import EvaluationReport

log = logging.getLogger(__name__)

# The most at-risk cases an overview lists (the route's bound on `top`): each group keeps that many.
MAX_TOP = 500
# Days of the reading: today and the 29 before it (the overview's longest window).
DAYS = 30
# Zones asked for in this process within this long are refreshed by the evaluation, beside UTC: the most
# recently asked ones, at most ZONES_REFRESHED.
ZONES_KEPT_FOR = timedelta(hours=24)
ZONES_REFRESHED = 4
ALWAYS_REFRESHED = "UTC"

# Cases per rule, day (in the zone) and status since the first day, and the at-risk cases of every day:
# each group's at-risk cases due soonest (due, key, start, customer, warehouse), at most MAX_TOP.
READ = f"""
SELECT rule, toString(toDate(started_at, {{tz:String}})) AS day, toString(status) AS status, count() AS n,
    groupArraySortedIf({MAX_TOP})((due_at, key, started_at, customer_id, toString(warehouse)), status = 'at_risk')
        AS soonest
FROM sla_cases FINAL
WHERE toDate(started_at, {{tz:String}}) >= {{first_day:Date}} OR status = 'at_risk'
GROUP BY rule, day, status
"""

_PARTS = """
SELECT partition_id,
    groupArray((min_block_number, max_block_number)) AS blocks,
    max(if(data_version != min_block_number, data_version, 0)) AS mutation,
    arraySort(groupArray(name)) AS names,
    toUnixTimestamp(min(modification_time)) AS oldest,
    toUnixTimestamp64Micro(now64(6)) AS now_us,
    (SELECT toString(uuid) FROM system.tables WHERE database = currentDatabase() AND name = 'sla_cases') AS uuid,
    (SELECT position(create_table_query, ' TTL ') > 0 FROM system.tables
        WHERE database = currentDatabase() AND name = 'sla_cases') AS ttl
FROM system.parts
WHERE database = currentDatabase() AND table = 'sla_cases' AND active
GROUP BY partition_id
ORDER BY partition_id
"""

_PUBLISHED = """
SELECT first_day, toUnixTimestamp64Micro(computed_at) AS computed_us, reading
FROM sla_case_days
WHERE tz = {tz:String} AND version = {version:String} AND first_day <= {first_day:Date}
ORDER BY computed_at DESC
LIMIT 1
"""


@dataclass(frozen=True)
class CasesVersion:
    """The version of `sla_cases`' content (equal versions, equal FINAL reads), when its oldest part was
    written (seconds since the epoch) and when the version was read (the store's clock)."""

    key: str
    oldest: int
    read_at: datetime


def _intervals(blocks: list[list[int]]) -> list[tuple[int, int]]:
    """Block ranges joined where they touch or overlap."""
    joined: list[tuple[int, int]] = []
    for low, high in sorted((int(a), int(b)) for a, b in blocks):
        if joined and low <= joined[-1][1] + 1:
            joined[-1] = (joined[-1][0], max(joined[-1][1], high))
        else:
            joined.append((low, high))
    return joined


def cases_version(store: Store) -> CasesVersion | None:
    """The version of `sla_cases`' content, or None when it cannot be told (no local parts, patch parts)."""
    rows = store.query(_PARTS)
    if not rows or any(str(r["partition_id"]).startswith("patch") for r in rows):
        return None
    described = []
    for r in rows:
        if int(r["ttl"]):
            described.append(f"{r['partition_id']}:{','.join(r['names'])}")
        else:
            spans = ",".join(f"{a}-{b}" for a, b in _intervals(r["blocks"]))
            described.append(f"{r['partition_id']}:{spans}:m{int(r['mutation'])}")
    return CasesVersion(
        f"{rows[0]['uuid']}/{';'.join(described)}",
        min(int(r["oldest"]) for r in rows),
        datetime.fromtimestamp(int(rows[0]["now_us"]) / 1e6, UTC),
    )


@dataclass(frozen=True)
class Reading:
    """One reading of the cases for a zone: its rows (READ's), from `first_day` on, of content `version`."""

    version: str
    first_day: date
    computed_at: datetime
    rows: list[dict[str, Any]]

    def serves(self, version: str, first_day: date) -> bool:
        """True when this reading answers for `version` from `first_day` on."""
        return self.version == version and self.first_day <= first_day

    def rows_from(self, first_day: date) -> list[dict[str, Any]]:
        """The rows a reading made for `first_day` would hold."""
        if first_day == self.first_day:
            return self.rows
        first = first_day.isoformat()
        return [r for r in self.rows if r["day"] >= first or r["status"] == "at_risk"]


class CaseDays:
    """The readings of the SLA cases per store and zone, read again only when the cases change.

    A reading is stamped with the store's clock when the version it is read under was read (`clock` replaces
    it in tests). `computed` and `compute_seconds` count the FINAL reads of `sla_cases` this object made (tests
    and `bench/dashboard.py` look at them).
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._readings: weakref.WeakKeyDictionary[Any, dict[str, Reading]] = weakref.WeakKeyDictionary()
        self._asked: weakref.WeakKeyDictionary[Any, dict[str, float]] = weakref.WeakKeyDictionary()
        self._computing: weakref.WeakKeyDictionary[Any, dict[str, threading.Lock]] = weakref.WeakKeyDictionary()
        self.computed = 0
        self.compute_seconds = 0.0

    def read(self, store: Store, tz: str, first_day: date) -> list[dict[str, Any]]:
        """Cases per (rule, day, status) from `first_day` in `tz`, and every day's at-risk ones."""
        with self._lock:
            asked = self._asked.setdefault(store, {})
            asked.pop(tz, None)
            asked[tz] = monotonic()  # the most recent last
            while len(asked) > ZONES_REFRESHED:
                dropped = next(iter(asked))
                del asked[dropped]
                if dropped != ALWAYS_REFRESHED:
                    self._readings.get(store, {}).pop(dropped, None)
        return self._current(store, tz, first_day)

    def refresh(self, store: Store, now: datetime) -> list[str]:
        """Bring the readings of UTC and of the zones asked for lately (the last ZONES_REFRESHED within
        ZONES_KEPT_FOR) up to date with the cases; the zones."""
        with self._lock:
            asked = self._asked.get(store, {})
            recent = {tz for tz, at in asked.items() if monotonic() - at <= ZONES_KEPT_FOR.total_seconds()}
        zones = sorted(recent | {ALWAYS_REFRESHED})
        if cases_version(store) is None:  # nothing could be kept: each overview reads the cases
            return []
        for tz in zones:
            self._current(store, tz, window_start(now, tz))
        return zones

    def kept(self, store: Store, tz: str) -> Reading | None:
        """The reading kept in memory for `tz`, if any."""
        with self._lock:
            return self._readings.get(store, {}).get(tz)

    def forget(self, store: Store) -> None:
        """Drop what is kept in memory for `store` (as a restarted process starts)."""
        with self._lock:
            self._readings.pop(store, None)
            self._asked.pop(store, None)

    def _current(self, store: Store, tz: str, first_day: date) -> list[dict[str, Any]]:
        version = cases_version(store)
        if version is None:
            return self._compute(store, tz, first_day)
        found = self.kept(store, tz)
        if found is not None and found.serves(version.key, first_day):
            return found.rows_from(first_day)
        with self._lock:
            computing = self._computing.setdefault(store, {}).setdefault(tz, threading.Lock())
        with computing:  # one reading at a time per zone: a second caller waits for it rather than reading too
            version = cases_version(store)
            if version is None:
                return self._compute(store, tz, first_day)
            found = self.kept(store, tz)
            if found is None or not found.serves(version.key, first_day):
                found = self._published(store, tz, version, first_day)
            if found is None:
                stamp = self._clock.now() if self._clock is not None else version.read_at
                found = Reading(version.key, first_day, stamp, self._compute(store, tz, first_day))
                self._publish(store, tz, found)
            with self._lock:
                self._readings.setdefault(store, {})[tz] = found
            return found.rows_from(first_day)

    def _compute(self, store: Store, tz: str, first_day: date) -> list[dict[str, Any]]:
        begun = perf_counter()
        rows = store.query(READ, {"tz": tz, "first_day": first_day})
        with self._lock:
            self.computed += 1
            self.compute_seconds += perf_counter() - begun
        return rows

    def _published(self, store: Store, tz: str, version: CasesVersion, first_day: date) -> Reading | None:
        try:
            rows = store.query(_PUBLISHED, {"tz": tz, "version": version.key, "first_day": first_day})
        except StoreError as exc:  # the table is missing (an older schema): read the cases
            log.warning("cannot read published case readings: %s", exc)
            return None
        if not rows:
            return None
        computed_at = datetime.fromtimestamp(int(rows[0]["computed_us"]) / 1e6, UTC)
        # a part older than the reading: the table was not emptied since, so the version names the same cases
        if version.oldest >= int(computed_at.timestamp()):
            return None
        return Reading(
            version.key, date.fromisoformat(rows[0]["first_day"]), computed_at, orjson.loads(rows[0]["reading"])
        )

    def _publish(self, store: Store, tz: str, reading: Reading) -> None:
        row = {
            "tz": tz,
            "version": reading.version,
            "first_day": reading.first_day,
            "computed_at": reading.computed_at,
            "reading": orjson.dumps(reading.rows).decode(),
        }
        try:
            store.insert("sla_case_days", [row])
        except StoreError as exc:  # the reading stays kept in memory; other processes read the cases
            log.warning("cannot publish the case reading: %s", exc)


def window_start(now: datetime, tz: str) -> date:
    """The first day of the overview's longest window at `now` in `tz`."""
    return now.astimezone(ZoneInfo(tz)).date() - timedelta(days=DAYS - 1)


case_days = CaseDays()


class CaseDaysRefresh:
    """Run last by the SLA service (tower/app.py): after the engine wrote cases, reads them again for the
    overview (`CaseDays.refresh`), so that the first overview after an evaluation does not wait for it."""

    def __init__(self, store: Store, clock: Clock, readings: CaseDays = case_days) -> None:
        self.store = store
        self.clock = clock
        self.readings = readings

    def evaluate(self, full: bool = False) -> EvaluationReport:
        """Refresh the readings (nothing to report: no rule is evaluated here)."""
        self.readings.refresh(self.store, self.clock.now())
        return EvaluationReport()
