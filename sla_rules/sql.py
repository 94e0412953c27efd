"""The SLA engine's SQL: the cases of every rule computed by set-based queries inside ClickHouse.

A case is a value of a rule's key (a column of `business_events`). Rules that share a key
column are computed together, from one scan and one GROUP BY of that column:

1. events -> one row per key: per rule the first start and the first end (`minIfOrNull`) and
   the first start event's source, customer and warehouse; per key the first non-empty
   customer and warehouse among all its events (the fallback when the start event has none).
   "First" orders by time, then by a hash of the event, so every run picks the same event;
2. per rule, its deadline: `after` adds a duration; `cutoff` works in the zone of the start
   event's `zone_by` field (else the rule's zone) with ClickHouse's time zone functions, so
   days with a daylight saving change are right; `toTimeZone` needs a constant zone, so each
   configured zone is a branch of a `multiIf`. Then the status at `now`;
3. ARRAY JOIN: one row per (rule, key) that has a start.

Duplicates change nothing (a minimum over copies is the same minimum), so `business_events`
is read without FINAL. Every value is a typed parameter; the only names written into the SQL
are column names from the validated rule, checked against a fixed list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from kernel.model.events import STRING_KEYS
from sla_rules.model import CORRELATION_KEYS, WEEKDAYS, EventMatch, SlaRule

Scope = Literal["all", "changed", "window"]

# Columns of business_events a rule may read by name.
_FILTER_COLUMNS = frozenset((*STRING_KEYS, "currency"))
_KEY_COLUMNS = frozenset(CORRELATION_KEYS)
_T = "DateTime64(6, 'UTC')"
_CASE_COLUMNS = "rule, key, started_at, ended_at, due_at, status, customer_id, warehouse, source"
# Orders events by time, then by a hash of what the engine reads from them, so that of two events
# at the same instant every run picks the same one. An Int64 (microseconds x 1024 + 10 bits of
# hash) aggregates far faster than a tuple; it holds any time until the year 2255.
_TIE_KEY = "toUnixTimestamp64Micro(time) * 1024 + toInt64(cityHash64(type, source, customer_id, warehouse) % 1024)"


def _column(name: str, allowed: frozenset[str]) -> str:
    if name not in allowed:
        raise ValueError(f"not a column the SLA engine reads: {name!r}")
    return name


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def rule_fingerprint(rule: SlaRule) -> str:
    """A hash of what decides a rule's cases (key, start, end, deadline, warning): a change forces a full run."""
    parts = rule.model_dump_json(include={"key", "start", "end", "deadline", "warning"})
    return hashlib.sha256(parts.encode()).hexdigest()[:16]


def next_business_day_offsets(business_days: Sequence[str]) -> list[int]:
    """For ISO weekdays 1..7, the days from that day to the next business day after it."""
    days = {WEEKDAYS.index(d) + 1 for d in business_days}
    offsets = []
    for weekday in range(1, 8):
        step = 1
        while (weekday - 1 + step) % 7 + 1 not in days:
            step += 1
        offsets.append(step)
    return offsets


class Binder:
    """Typed query parameters; an equal value of the same type is bound once, so equal
    expressions have equal text (and ClickHouse computes them once)."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self._names: dict[tuple[str, str], str] = {}

    def __call__(self, value: Any, type_: str) -> str:
        """The placeholder of `value` as `type_`."""
        key = (type_, repr(value))
        name = self._names.get(key)
        if name is None:
            name = f"p{len(self._names)}"
            self._names[key] = name
            self.params[name] = value
        return f"{{{name}:{type_}}}"


@dataclass(frozen=True)
class RulePart:
    """One rule in an evaluation: for incremental runs, where its last run left off."""

    rule: SlaRule
    since_received: datetime | None = None  # events received after this (the last run's watermark)
    since_now: datetime | None = None  # the last run's now: deadlines passed after it change a status


@dataclass
class Group:
    """Rules sharing a key column and a scope, computed from one GROUP BY.

    Scope `changed` recomputes only `keys`; `first` says no case of these rules is stored yet
    (their first run), so nothing needs comparing.
    """

    key: str
    scope: Scope
    parts: list[RulePart] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    first: bool = False


def _match(side: EventMatch, bind: Binder) -> str:
    """The boolean expression selecting one side's events."""
    clauses = [f"type IN {bind(list(side.types), 'Array(String)')}"]
    if side.sources:
        systems = [s for s in side.sources if "/" not in s]
        paths = [s for s in side.sources if "/" in s]
        either = []
        if systems:
            either.append(f"system IN {bind(systems, 'Array(String)')}")
        if paths:
            # a path covers itself and its sub-paths: wms/dallas covers wms/dallas/dock-2
            either.append(
                f"arrayExists(p -> source = p OR startsWith(source, concat(p, '/')), {bind(paths, 'Array(String)')})"
            )
        clauses.append("(" + " OR ".join(either) + ")")
    for name, value in sorted(side.where.items()):
        clauses.append(f"{_column(name, _FILTER_COLUMNS)} = {bind(value, 'String')}")
    return "(" + " AND ".join(clauses) + ")"


def _cutoff_due(rule: SlaRule, started: str, zone_value: str | None, bind: Binder) -> str:
    """The deadline of a cutoff rule for the start time `started`, in the zone `zone_value` maps to."""
    cutoff = rule.deadline.cutoff
    assert cutoff is not None
    zones = [cutoff.timezone]
    mapping: dict[str, int] = {}
    if cutoff.zone_by is not None:
        for value, zone in sorted(cutoff.zone_by.zones.items()):
            if zone not in zones:
                zones.append(zone)
            mapping[value] = zones.index(zone)
    limit = cutoff.time
    limit_us = bind(((limit.hour * 60 + limit.minute) * 60 + limit.second) * 1_000_000 + limit.microsecond, "UInt64")
    business = bind(sorted(WEEKDAYS.index(d) + 1 for d in cutoff.business_days), "Array(UInt8)")
    next_day = bind(next_business_day_offsets(cutoff.business_days), "Array(UInt8)")

    def due_in(zone_name: str) -> str:
        zone = bind(zone_name, "String")
        local = f"toTimeZone({started}, {zone})"
        local_us = (
            f"(toHour({local}) * 3600000000 + toMinute({local}) * 60000000 + toSecond({local}) * 1000000"
            f" + toUnixTimestamp64Micro({started}) % 1000000)"
        )
        weekday = f"toDayOfWeek({local})"
        day = (
            f"if(has({business}, {weekday}) AND {local_us} < {limit_us}, toDate({local}),"
            f" addDays(toDate({local}), arrayElement({next_day}, {weekday})))"
        )
        end_of_day = f"makeDateTime64(toYear({day}), toMonth({day}), toDayOfMonth({day}), 23, 59, 59, 0, 6, {zone})"
        return f"toTimeZone({end_of_day}, 'UTC')"

    if len(zones) == 1 or zone_value is None:
        return due_in(zones[0])
    index = (
        f"transform({zone_value}, {bind(list(mapping), 'Array(String)')},"
        f" {bind(list(mapping.values()), 'Array(UInt8)')}, toUInt8(0))"
    )
    branches = ", ".join(f"{index} = {i}, {due_in(zones[i])}" for i in range(1, len(zones)))
    return f"multiIf({branches}, {due_in(zones[0])})"


def changed_keys(group: Group, now: datetime, limit: int) -> tuple[str, dict[str, Any]]:
    """The keys an incremental run recomputes (at most `limit` + 1 of them): keys with events received
    since the last run's watermark, and pending cases whose warning time or deadline passed
    since the last run's now.

    Reads `sla_cases` without FINAL: an older version selects a key at most once too often, and
    recomputing a key is idempotent.
    """
    bind = Binder()
    key = _column(group.key, _KEY_COLUMNS)
    received = min(p.since_received for p in group.parts if p.since_received is not None)
    selects = [f"SELECT {key} AS k FROM business_events WHERE received_at > {bind(received, _T)} AND {key} != ''"]
    at = bind(now, _T)
    for part in group.parts:
        assert part.since_now is not None
        since = bind(part.since_now, _T)
        crossed = [f"(due_at <= {at} AND due_at > {since})"]
        if part.rule.warning is not None:
            warned = f"due_at - toIntervalMicrosecond({bind(_micros(part.rule.warning), 'Int64')})"
            crossed.append(f"(status = 'pending' AND {warned} <= {at} AND {warned} > {since})")
        selects.append(
            f"SELECT key AS k FROM sla_cases WHERE rule = {bind(part.rule.id, 'String')}"
            f" AND status IN ('pending', 'at_risk') AND ({' OR '.join(crossed)})"
        )
    sql = f"SELECT DISTINCT k FROM ({' UNION ALL '.join(selects)}) LIMIT {bind(limit + 1, 'UInt64')}"
    return sql, bind.params


def cases(
    group: Group, bind: Binder, now: datetime, since: datetime | None = None, until: datetime | None = None
) -> str:
    """The SELECT of the group's cases: rule, key, started_at, ended_at, due_at, status, customer_id,
    warehouse, source. Scope `changed` recomputes the group's keys; scope `window` keeps cases
    started in [since, until) and reads only events before `until`."""
    key = _column(group.key, _KEY_COLUMNS)
    flags: dict[str, str] = {}  # expression -> alias: equal filters are computed once

    def flag(expression: str) -> str:
        return flags.setdefault(expression, f"f{len(flags)}")

    aggregates: dict[str, str] = {}  # expression -> alias

    def agg(expression: str) -> str:
        return aggregates.setdefault(expression, f"a{len(aggregates)}")

    extra_columns: dict[str, str] = {}  # inner expression -> alias, for zone_by fields that are not the usual ones
    cust_any = agg("argMinIf(cust, tk, cust != '')")
    wh_any = agg("argMinIf(wh, tk, wh != '')")
    at = bind(now, _T)
    rows: list[str] = []
    per_rule: list[str] = []
    start_aliases: list[str] = []
    for i, part in enumerate(group.parts):
        rule = part.rule
        start, end = flag(_match(rule.start, bind)), flag(_match(rule.end, bind))
        s, e = agg(f"minIfOrNull(t, {start})"), agg(f"minIfOrNull(t, {end})")
        start_aliases.append(s)
        # the first start event's source, customer and warehouse: one aggregate state, not three
        first_start = agg(f"argMinIf((src, cust, wh), tk, {start})")
        src, cust, wh = (f"{first_start}.{i}" for i in (1, 2, 3))
        started = f"assumeNotNull({s})"
        if rule.deadline.after is not None:
            due = f"{started} + toIntervalMicrosecond({bind(_micros(rule.deadline.after), 'Int64')})"
        else:
            cutoff = rule.deadline.cutoff
            zone_value: str | None = None
            if cutoff is not None and cutoff.zone_by is not None:
                name = cutoff.zone_by.field
                if name in ("warehouse", "customer_id"):
                    column = {"warehouse": "wh", "customer_id": "cust"}[name]
                elif name in _FILTER_COLUMNS:
                    column = extra_columns.setdefault(f"toString({name})", f"x{len(extra_columns)}")
                else:
                    expression = f"JSONExtractString(data, {bind(name, 'String')})"
                    column = extra_columns.setdefault(expression, f"x{len(extra_columns)}")
                first = {"wh": wh, "cust": cust}.get(column) or agg(f"argMinIf({column}, tk, {start})")
                fallback = agg(f"argMinIf({column}, tk, {column} != '')")
                zone_value = f"if({first} != '', {first}, {fallback})"
            due = _cutoff_due(rule, started, zone_value, bind)
        status = [f"{e} IS NOT NULL, if(assumeNotNull({e}) <= due_{i}, 'met', 'late')", f"{at} > due_{i}, 'breached'"]
        if rule.warning is not None:
            status.append(f"{at} >= due_{i} - toIntervalMicrosecond({bind(_micros(rule.warning), 'Int64')}), 'at_risk'")
        per_rule.append(f"{due} AS due_{i}")
        rows.append(
            f"({bind(rule.id, 'String')}, {s}, {e}, due_{i}, multiIf({', '.join(status)}, 'pending'),"
            f" if({cust} != '', {cust}, {cust_any}), toString(if({wh} != '', {wh}, {wh_any})), toString({src}))"
        )

    where = [f"{key} != ''"]
    if group.scope == "changed":
        where.append(f"{key} IN {bind(group.keys, 'Array(String)')}")
    elif group.scope == "window":
        assert since is not None and until is not None
        where.append(f"time < {bind(until, _T)}")
    wanted = [*flags.values(), "customer_id != ''", "warehouse != ''", *(f"{a} != ''" for a in extra_columns.values())]
    where.append("(" + " OR ".join(wanted) + ")")
    starts = " OR ".join(f"{s} IS NOT NULL" for s in dict.fromkeys(start_aliases))
    inner_columns = ", ".join(
        [f"{expression} AS {alias}" for expression, alias in flags.items()]
        + [f"{expression} AS {alias}" for expression, alias in extra_columns.items()]
    )
    window = ""
    if group.scope == "window":
        window = f" AND c.2 >= {bind(since, _T)} AND c.2 < {bind(until, _T)}"
    return f"""
SELECT c.1 AS rule, key, assumeNotNull(c.2) AS started_at, c.3 AS ended_at, c.4 AS due_at, c.5 AS status,
    c.6 AS customer_id, c.7 AS warehouse, c.8 AS source
FROM (
    SELECT key, {", ".join(aggregates.values())}, {", ".join(per_rule)}
    FROM (
        SELECT k AS key, {", ".join(f"{expression} AS {alias}" for expression, alias in aggregates.items())}
        FROM (
            SELECT {key} AS k, time AS t, source AS src, customer_id AS cust, warehouse AS wh,
                {_TIE_KEY} AS tk,
                {inner_columns}
            FROM business_events
            WHERE {" AND ".join(where)}
        )
        GROUP BY key
        HAVING {starts}
    )
)
ARRAY JOIN [{", ".join(rows)}] AS c
WHERE c.2 IS NOT NULL{window}"""


# A case's state as one hash; ended_at is NULL while open, and a hash of a NULL is NULL.
_STATE = (
    "cityHash64(rule, key, status, started_at, isNull(ended_at), assumeNotNull(ended_at), due_at, customer_id,"
    " warehouse, source)"
)


def evaluation(groups: Sequence[Group], now: datetime, version: int) -> tuple[str, dict[str, Any]]:
    """One INSERT ... SELECT writing, for every group, a new version of each case that is new or whose
    state differs from its stored one, with the status it replaces.

    Unchanged cases are told apart by a hash of their state (`NOT IN` the set of the stored
    `state_hash`es: far cheaper than joining every case), and only the changed ones are joined
    with their stored version for its status. A group's first run compares nothing. An incremental
    group (few keys) reads its keys' stored versions once and joins every recomputed case with them.
    """
    bind = Binder()
    branches = []
    for group in groups:
        select = cases(group, bind, now)
        if group.first:
            branches.append(f"SELECT {_CASE_COLUMNS}, '' AS previous_status FROM ({select})")
            continue
        stored = f"sla_cases FINAL WHERE rule IN {bind([p.rule.id for p in group.parts], 'Array(String)')}"
        columns = ", ".join(f"c.{name} AS {name}" for name in _CASE_COLUMNS.split(", "))
        if group.scope == "changed":
            # few keys: one read of their stored versions, joined on (rule, key) and compared by hash
            stored += f" AND key IN {bind(group.keys, 'Array(String)')}"
            branches.append(f"""
SELECT {columns}, p.status AS previous_status
FROM (SELECT *, {_STATE} AS h FROM ({select})) AS c
LEFT JOIN (SELECT rule, key, status, state_hash FROM {stored}) AS p ON p.rule = c.rule AND p.key = c.key
WHERE p.state_hash != c.h""")
            continue
        branches.append(f"""
SELECT {columns}, p.status AS previous_status
FROM (SELECT rule, key, status FROM {stored}) AS p
RIGHT JOIN (
    SELECT * FROM ({select}) WHERE {_STATE} NOT IN (SELECT state_hash FROM {stored})
) AS c ON p.rule = c.rule AND p.key = c.key""")
    sql = f"""
INSERT INTO sla_cases ({_CASE_COLUMNS}, previous_status, state_hash, evaluated_at, version)
SELECT {_CASE_COLUMNS}, previous_status, {_STATE}, {bind(now, _T)}, {bind(version, "UInt64")}
FROM ({" UNION ALL ".join(branches)})
SETTINGS join_use_nulls = 0, optimize_on_insert = 0"""
    return sql, bind.params


def backtest(rule: SlaRule, since: datetime, until: datetime) -> tuple[str, dict[str, Any]]:
    """The cases of `rule` started in [since, until), as of `until`, from events before `until`."""
    bind = Binder()
    select = cases(Group(rule.key, "window", [RulePart(rule)]), bind, until, since, until)
    columns = "key, started_at, ended_at, due_at, status, customer_id, warehouse, source"
    return f"SELECT {columns} FROM ({select}) ORDER BY started_at, key", bind.params


# Versions written since the last completed run that open or close an exception: a case newly
# breached, or a breached case that is no longer (its end arrived). Reading every version since
# the last completed run also picks up the transitions of a run that stopped half-way.
TRANSITIONS = """
SELECT key, status, previous_status, started_at, ended_at, due_at, customer_id, warehouse, source, version
FROM sla_cases
WHERE rule = {rule:String} AND version > {after_version:UInt64} AND version <= {version:UInt64}
  AND ((status = 'breached' AND previous_status NOT IN ('breached', 'met', 'late'))
       OR (previous_status = 'breached' AND status != 'breached'))
ORDER BY version, key
"""

# The versions a run wrote, per rule: how many, and how many are new cases (no stored state before).
WRITTEN = """
SELECT rule, count() AS n, countIf(previous_status = '') AS new
FROM sla_cases WHERE version = {version:UInt64} GROUP BY rule
"""

CASE_COUNT = "SELECT count() AS n FROM sla_cases FINAL WHERE rule = {rule:String}"

LAST_RUNS = """
SELECT rule, max(version) AS last_version, argMax(started_at, version) AS as_of,
    argMax(watermark, version) AS last_watermark, argMax(rule_hash, version) AS last_hash,
    argMax(cases_total, version) AS last_total,
    maxIf(started_at, mode = 'full') AS last_full, countIf(mode = 'full') AS full_runs
FROM sla_runs WHERE rule IN {rules:Array(String)}
GROUP BY rule
"""

# Read in received_at order (the `sla_by_received` projection): the newest row without a scan.
NEWEST_RECEIVED = "SELECT received_at AS at FROM business_events ORDER BY received_at DESC LIMIT 1"
