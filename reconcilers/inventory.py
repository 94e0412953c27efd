"""Inventory reconciliation: the book (ERP) against the count (WMS), sellable (eCommerce) against the
WMS, and sides that went quiet. One rule (`inventory-sync` by default) opens three kinds of findings:

- `inventory-sync` (business, owner by routing: warehouse) per `sku@location`: the latest
  snapshot of the two sources differs by more than `tolerance` units. A pair one side does not
  report counts as 0 there (a side with no data at all is not compared: see stale);
- `inventory-oversell` (business, when `params.oversell` is set) per `sku@location`: the
  sellable quantity exceeds the WMS's by more than `oversell.tolerance` units;
- `inventory-stale` (technical, integration) per source: no snapshot for `stale_after`. Keyed by
  the source path that went quiet (`wms/reno`), or by the side (`wms`) when it never sent one (the
  sellable side excepted: an eCommerce that never sent leaves oversell unchecked, nothing more).

"Latest" is the snapshot with the newest event time per (source side, sku, location) among those
of the last `lookback`, and of two with the same time the later received (a corrected count re-sent for
the same instant; `reconcilers.sql.newest`); a redelivered snapshot carries the same time and quantity,
so no de-duplication pass is needed. Every pair is compared in one GROUP BY over both sides inside
ClickHouse (and the staging table of pulled sides); only differing and watched pairs come back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from kernel.durations import duration_text
from kernel.model.events import source_covers
from kernel.store import Store
from reconcilers.config import FindingRule, InventoryParams, RuleConfig
from reconcilers.model import Comparison, Observation, RunContext, gc_paused
from reconcilers.pull import PullError, PullResult, Staging, pull
from reconcilers.sql import Binder, T, iso, newest, parse_time, source_condition, watch_condition

SNAPSHOT = "inventory.snapshot"


def pair_key(gk: str, bind: Binder) -> str:
    """SQL of the finding key of a pair from `gk` (sku NUL location): `sku@location`. When the sku or the location
    contains an '@' (where `sku@location` would be ambiguous), each part with '%' and '@' written %25 and %40,
    joined by '@@' (`X%401@@DAL` for sku `X@1`): no two pairs share a key, and a key without '@' in its parts
    stays as it always was. The escapes are bound, so no '%' is in the text."""
    percent = f"replaceAll({gk}, {bind.bind('%', 'String')}, {bind.bind('%25', 'String')})"
    escaped = f"replaceAll({percent}, '@', {bind.bind('%40', 'String')})"
    return f"if(position({gk}, '@') = 0, replaceOne({gk}, char(0), '@'), replaceOne({escaped}, char(0), '@@'))"


def stamp(text: str) -> str:
    """A stored UTC timestamp ('YYYY-MM-DD HH:MM:SS.ffffff') as RFC 3339 text, as `iso` writes it."""
    return text.replace(" ", "T") + "Z"


def fmt(value: float | None) -> str:
    """A quantity for a person: 12 rather than 12.0; `none` when missing."""
    if value is None:
        return "none"
    whole = int(value)
    return str(whole) if whole == value else f"{value:g}"


class InventoryReconciler:
    """Compares inventory snapshots for one `compare: inventory` rule."""

    def __init__(self, store: Store, config: RuleConfig) -> None:
        assert isinstance(config.params, InventoryParams)
        self.store = store
        self.config = config
        self.params: InventoryParams = config.params
        rules = {r.id: r for r in config.finding_rules()}
        self.sync_rule = rules[config.id]
        self.stale_rule = rules[self.params.stale_rule]
        self.oversell_rule: FindingRule | None = rules[self.params.oversell.rule] if self.params.oversell else None
        # side number -> source name: 1 the book, 2 the count, 3 the sellable quantity
        self.sides: dict[int, str] = {1: self.params.sources[0], 2: self.params.sources[1]}
        if self.params.oversell is not None:
            self.sides[3] = self.params.oversell.source
        self._tolerance = float(self.params.tolerance)
        self._tolerance_text = fmt(self._tolerance)

    def phases(self) -> list[str]:
        """Pull each pulled side, then compare."""
        return [f"pull {name}" for name in self.params.pull] + ["compare"]

    def compare(self, run: RunContext) -> list[Comparison]:
        """Pull the pulled sides, check freshness, compare every pair; the staging table is dropped after."""
        staging = Staging(self.store, run.run_id)
        try:
            pulled: dict[int, PullResult] = {}
            for number, name in self.sides.items():
                spec = self.params.pull.get(name)
                if spec is None:
                    continue
                run.progress(f"pull {name}", f"reading {spec.database}")
                url = run.databases.get(spec.database)
                if url is None:
                    raise PullError(f"pull {name}: database {spec.database!r} is not in TOWER_RECONCILE_SOURCES")
                pulled[number] = pull(
                    self.store,
                    staging,
                    number,
                    name,
                    spec,
                    url,
                    run.now,
                    run.pull_batch_rows,
                    run.pull_max_rows,
                    lambda message, name=name: run.progress(f"pull {name}", message),
                    timeout=run.pull_timeout_seconds,
                    max_ahead=run.pull_max_ahead,
                )
            run.progress("compare", "freshness and pairs")
            last = self._freshness(pulled)
            stale = self._stale(last, pulled, run.now)
            pairs = self._pairs(run, staging, last, pulled)
        finally:
            staging.drop()
        return [*pairs, stale]

    # freshness

    def freshness_statement(self, sides: list[str]) -> tuple[str, dict[str, Any]]:
        """The newest snapshot time of each source of `sides`: answered from the `freshness` projection of
        business_events (migration 15), a few rows per part, instead of a scan of every event."""
        bind = Binder()
        condition = " OR ".join(source_condition(side, bind) for side in sides)
        sql = (
            f"SELECT toString(source) AS source, max(time) AS last FROM business_events"
            f" WHERE type = {bind.bind(SNAPSHOT, 'String')} AND ({condition}) GROUP BY source"
        )
        return sql, bind.params

    def _freshness(self, pulled: dict[int, PullResult]) -> dict[int, dict[str, datetime]]:
        """Per side, the newest snapshot time of each source that ever sent one (pulled: the newest as_of,
        or the pull time when the query has none)."""
        found: dict[int, dict[str, datetime]] = {number: {} for number in self.sides}
        events = {n: s for n, s in self.sides.items() if n not in pulled}
        if events:
            rows = self.store.query(*self.freshness_statement(list(events.values())))
            for row in rows:
                at = parse_time(row["last"])
                number = next((n for n, s in events.items() if source_covers(s, row["source"])), None)
                if number is not None and at is not None:
                    found[number][row["source"]] = at
        return found

    def _stale(self, last: dict[int, dict[str, datetime]], pulled: dict[int, PullResult], now: datetime) -> Comparison:
        rule = self.stale_rule
        if not any(last.values()) and not any(p.rows for p in pulled.values()):
            return Comparison(rule, checked=False, note="no side has sent an inventory snapshot yet")
        observations: list[Observation] = []
        for number, side in self.sides.items():
            result = pulled.get(number)
            if result is not None:
                observations.append(self._staleness(side, side, result.last(now), now, pulled=True))
                continue
            for source, at in sorted(last[number].items()):
                observations.append(self._staleness(source, side, at, now))
            if side not in last[number] and (number != 3 or last[number]):
                # the side as a whole: never sent (a finding), or sending from its paths (agrees). The sellable
                # side is optional: one that never sent leaves oversell unchecked, it is not stale.
                newest = max(last[number].values(), default=None)
                observations.append(self._staleness(side, side, newest, now, whole_side=True))
        return Comparison(rule, checked=True, compared=len(observations), observations=observations)

    def _staleness(
        self, key: str, side: str, at: datetime | None, now: datetime, pulled: bool = False, whole_side: bool = False
    ) -> Observation:
        limit = self.params.stale_after
        hours = limit.total_seconds() / 3600
        age = None if at is None else round((now - at).total_seconds() / 3600, 3)
        values: dict[str, Any] = {
            "check": "stale",
            "side": side,
            "source": key,
            "last_snapshot": iso(at),
            "age_hours": age,
            "stale_after_hours": hours,
            "pulled": pulled,
        }
        if at is None:
            what = "the pull returned no rows" if pulled else "never sent an inventory snapshot"
            return Observation(key, True, values, {"source": key}, f"{key}: {what}")
        differs = now - at > limit and not whole_side
        summary = f"{key}: last inventory snapshot {iso(at)} ({age} h ago; stale after {hours:g} h)"
        return Observation(key, differs, values, {"source": key}, summary)

    # pairs

    def _pairs(
        self, run: RunContext, staging: Staging, last: dict[int, dict[str, datetime]], pulled: dict[int, PullResult]
    ) -> list[Comparison]:
        since = run.now - self.params.lookback
        # a pulled side as an event side: rows older than the lookback are not compared (staging's `as_of >= since`)
        counted = {n: [at] if (at := pulled[n].last(run.now)) else [] for n in pulled}
        present = {n: any(at >= since for at in counted.get(n, last[n].values())) for n in self.sides}
        check_sync = present[1] and present[2]
        check_oversell = self.oversell_rule is not None and present.get(3, False) and present[2]
        span = duration_text(self.params.lookback)
        unseen = f"neither side has reported it in the last {span}: the difference can no longer be checked"
        comparisons = [Comparison(self.sync_rule, checked=check_sync, unseen=unseen)]
        if self.oversell_rule is not None:
            comparisons.append(Comparison(self.oversell_rule, checked=check_oversell, unseen=unseen))
        missing = [self.sides[n] for n, ok in present.items() if not ok]
        for comparison in comparisons:
            if not comparison.checked:
                comparison.note = f"no snapshot from {', '.join(missing)} in the last {span}"
        if not check_sync and not check_oversell:
            return comparisons
        sources = sorted({source for found in last.values() for source in found} | set(self.sides.values()))
        # a side with a single source (or pulled) needs no per-pair source: it is known already
        fixed = {
            n: self.sides[n] if n in pulled else next(iter(last[n]))
            for n in self.sides
            if n in pulled or len(last[n]) == 1
        }
        sql, params, columns = self.statement(
            run, staging if pulled else None, since, check_sync, bool(check_oversell), sources, fixed
        )
        by_rule = {c.rule.id: c for c in comparisons}
        sync = by_rule[self.sync_rule.id] if check_sync else None
        oversell = by_rule[self.oversell_rule.id] if check_oversell and self.oversell_rule is not None else None
        with gc_paused():  # thousands of findings, all kept
            groups = self.store.query(sql, params)
            compared = sum(int(group["compared"]) for group in groups)
            for comparison in comparisons:
                comparison.compared = compared if comparison.checked else 0
            self._observe(groups, columns, sources, fixed, sync, oversell)
        return comparisons

    def _observe(
        self,
        groups: list[dict[str, Any]],
        columns: list[str],
        sources: list[str],
        fixed: dict[int, str],
        sync: Comparison | None,
        oversell: Comparison | None,
    ) -> None:
        """Turn the statement's kept pairs into observations of `sync` and `oversell` (None: not checked)."""
        at = {c: i for i, c in enumerate(columns)}
        names: list[str | None] = [None, *sources]  # a 1-based source index -> its source; 0: none
        readers = [
            (n, self.sides[n], at[f"has{n}"], at[f"q{n}"], at[f"t{n}"], at[f"src{n}"], fixed.get(n)) for n in self.sides
        ]
        key_at, gk_at, warehouse_at, difference_at = at["key"], at["gk"], at["warehouse"], at["difference"]
        sync_at, oversell_at = at["sync_differs"], at["oversell_differs"]
        for group in groups:
            for values in group["rows"]:
                sku, _, location = values[gk_at].partition("\0")
                sides: dict[int, dict[str, Any]] = {}
                for n, name, has, quantity, time, source, known in readers:
                    if values[has]:
                        sides[n] = {
                            "name": name,
                            "source": known or names[values[source]],
                            "quantity": float(values[quantity]),
                            "as_of": stamp(values[time]),
                        }
                    else:
                        sides[n] = {"name": name, "source": None, "quantity": None, "as_of": None}
                route = {"sku": sku, "location": location, "warehouse": values[warehouse_at] or ""}
                if sides[2]["source"]:
                    route["source"] = sides[2]["source"]
                pair = _Pair(values[key_at], sku, location, sides, route, float(values[difference_at]))
                if sync is not None:
                    sync.observations.append(self._sync(pair, bool(values[sync_at])))
                if oversell is not None:
                    oversell.observations.append(self._oversell(pair, bool(values[oversell_at])))

    def statement(
        self,
        run: RunContext,
        staging: Staging | None,
        since: datetime,
        check_sync: bool,
        check_oversell: bool,
        sources: list[str],
        fixed: dict[int, str] | None = None,
    ) -> tuple[str, dict[str, Any], list[str]]:
        """The comparison: the latest snapshot per (side, sku, location), every pair in one GROUP BY over both
        sides; answers the number of pairs compared and the pairs that differ or are watched (as tuples of
        the returned columns; sources as 1-based indexes into `sources`, 0 for the sides in `fixed`)."""
        fixed = fixed or {}
        bind = Binder()
        cases = ", ".join(
            f"{source_condition(name, bind)}, {number}"
            for number, name in self.sides.items()
            if name not in self.params.pull
        )
        side = f"multiIf({cases}, 0)" if cases else "0"
        known = bind.bind(sources, "Array(String)")
        source_index = f"indexOf({known}, source)" if len(fixed) < len(self.sides) else "0"
        parts = [
            f"SELECT sku AS s, location AS l, assumeNotNull(quantity) AS quantity, time,"
            f" {newest('time', 'received_at')} AS v, {source_index} AS si, warehouse AS w, {side} AS side"
            f" FROM business_events WHERE type = {bind.bind(SNAPSHOT, 'String')}"
            f" AND quantity IS NOT NULL AND sku != '' AND time >= {bind.bind(since, T)}"
        ]
        if staging is not None:
            parts.append(
                f"SELECT sku AS s, location AS l, sum(quantity) AS quantity, max(as_of) AS time,"
                f" {newest('max(as_of)', 'max(as_of)')} AS v, indexOf({known}, any(source)) AS si, '' AS w, side"
                f" FROM {staging.name} WHERE as_of >= {bind.bind(since, T)} GROUP BY side, sku, location"
            )
        # Per side its latest quantity, time and source. A side without a snapshot of the pair has the epoch as
        # its time. One string key (sku NUL location, split again in Python) groups faster than the pair of
        # columns and spares copying them into the aggregation; numbers (source indexes) aggregate faster than
        # strings; grouping the result by `keep` counts every pair compared while only the kept ones come back.
        latest = ", ".join(
            f"argMaxIf(quantity, v, side = {n}) AS q{n}, maxIf(time, side = {n}) AS t{n},"
            + (" toUInt64(0)" if n in fixed else f" argMaxIf(si, v, side = {n})")
            + f" AS src{n}"
            for n in self.sides
        )
        present = ", ".join(f"t{n} > 0 AS has{n}" for n in self.sides)
        columns = ["key", "gk", *(f"{c}{n}" for n in self.sides for c in ("q", "t", "src", "has"))]
        columns += ["warehouse", "difference", "sync_differs", "oversell_differs"]
        sellable = "has3 AND round(q3 - if(has2, q2, 0), 6)" if 3 in self.sides else "0 AND 0"
        oversell_tolerance = self.params.oversell.tolerance if self.params.oversell else 0.0
        watch = watch_condition("key", run.watch, bind)
        sql = f"""
SELECT keep, count() AS compared, groupArrayIf(({", ".join(columns)}), keep) AS rows
FROM (
    SELECT *, {pair_key("gk", bind)} AS key, {present},
        round(if(has1, q1, 0) - if(has2, q2, 0), 6) AS difference,
        {bind.bind(int(check_sync), "UInt8")} AND abs(difference) > {bind.bind(self.params.tolerance, "Float64")}
            AS sync_differs,
        {bind.bind(int(check_oversell), "UInt8")} AND {sellable} > {bind.bind(oversell_tolerance, "Float64")}
            AS oversell_differs,
        sync_differs OR oversell_differs OR {watch} AS keep
    FROM (
        SELECT concat(s, char(0), l) AS gk, {latest}, toString(argMaxIf(w, v, w != '')) AS warehouse
        FROM ({" UNION ALL ".join(parts)})
        WHERE side != 0
        GROUP BY gk
    )
)
GROUP BY keep
"""
        return sql, bind.params, columns

    def _sync(self, pair: _Pair, differs: bool) -> Observation:
        left, right = pair.sides[1], pair.sides[2]
        tolerance = self._tolerance
        values = {
            "check": "quantity",
            "sku": pair.sku,
            "location": pair.location,
            "sides": [left, right],
            "difference": pair.difference,
            "tolerance": tolerance,
        }
        summary = (
            f"{pair.key}: {left['source'] or left['name']} {fmt(left['quantity'])} vs"
            f" {right['source'] or right['name']} {fmt(right['quantity'])}"
            f" (difference {fmt(pair.difference)}, tolerance {self._tolerance_text})"
        )
        return Observation(pair.key, differs, values, pair.route, summary)

    def _oversell(self, pair: _Pair, differs: bool) -> Observation:
        sellable, count = pair.sides[3], pair.sides[2]
        assert self.params.oversell is not None
        excess = round((sellable["quantity"] or 0.0) - (count["quantity"] or 0.0), 6)
        tolerance = float(self.params.oversell.tolerance)
        values = {
            "check": "oversell",
            "sku": pair.sku,
            "location": pair.location,
            "sides": [sellable, count],
            "difference": excess,
            "tolerance": tolerance,
        }
        summary = (
            f"{pair.key}: sellable {fmt(sellable['quantity'])} on {sellable['source'] or sellable['name']},"
            f" {fmt(count['quantity'])} available in {count['source'] or count['name']}"
            f" (excess {fmt(excess)}, tolerance {fmt(tolerance)})"
        )
        return Observation(pair.key, differs, values, pair.route, summary)


class _Pair(NamedTuple):
    """One (sku, location) as the comparison answered it: each side's values and the routing data."""

    key: str
    sku: str
    location: str
    sides: dict[int, dict[str, Any]]
    route: dict[str, str]
    difference: float
