"""The SLA engine's SQL: the cases of every rule computed by set-based queries inside ClickHouse.

A case is a value of a rule's key (a column of `business_events`). Rules that share a key
column are computed together, from one scan and one GROUP BY of that column:

1. events -> one row per key: per rule its first start event (time, source, customer, warehouse,
   zone field: one string minimum, see `cases`) and its first end; per key the first event with a
   customer and the first with a warehouse from the systems the group's rules read (the fallbacks
   when the start event has none). "First"
   orders by time, then by the event's own fields, so every run picks the same event;
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

import orjson

from kernel.model.events import STRING_KEYS
from sla_rules.model import CORRELATION_KEYS, WEEKDAYS, EventMatch, SlaRule

Scope = Literal["all", "changed", "window"]

# Columns of business_events a rule may read by name.
_FILTER_COLUMNS = frozenset((*STRING_KEYS, "currency"))
_KEY_COLUMNS = frozenset(CORRELATION_KEYS)
_T = "DateTime64(6, 'UTC')"
_CASE_COLUMNS = "rule, key, started_at, ended_at, due_at, status, customer_id, warehouse, source"


def _column(name: str, allowed: frozenset[str]) -> str:
    if name not in allowed:
        raise ValueError(f"not a column the SLA engine reads: {name!r}")
    return name


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# Raised when the same rule computes different cases after an upgrade (2: fallback fields only from the systems
# the rules read), so every rule's stored cases are recomputed in full once.
CASE_LOGIC = "2"


def rule_fingerprint(rule: SlaRule) -> str:
    """A hash of what decides a rule's cases (key, start, end, deadline, warning): a change forces a full run."""
    parts = rule.model_dump_json(include={"key", "start", "end", "deadline", "warning"})
    return hashlib.sha256((CASE_LOGIC + parts).encode()).hexdigest()[:16]


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


def holiday_overrides(
    business_days: Sequence[str], holidays: Sequence[date]
) -> tuple[tuple[list[date], list[date]], tuple[list[date], list[date]]]:
    """Where holidays change a cutoff's deadline day, as (start dates, due dates) pairs: for a start before the
    cutoff time on a business weekday (due that day, unless the day is a holiday), and for a start after it or on
    another day (due the next business weekday, unless that is a holiday). Dates are local; only the days whose
    answer the weekdays alone get wrong are listed, so the SQL looks up a handful of dates."""
    weekdays = {WEEKDAYS.index(d) for d in business_days}
    closed = set(holidays)

    def next_open(day: date) -> date:
        day += timedelta(days=1)
        while day.weekday() not in weekdays or day in closed:
            day += timedelta(days=1)
        return day

    offsets = next_business_day_offsets(business_days)
    before: dict[date, date] = {}
    after: dict[date, date] = {}
    for holiday in sorted(closed):
        if holiday.weekday() in weekdays:
            before[holiday] = next_open(holiday)
        for back in range(15):  # a weekday answer lands at most 7 days on
            start = holiday - timedelta(days=back)
            if start + timedelta(days=offsets[start.weekday()]) != next_open(start):
                after[start] = next_open(start)
    return (list(before), list(before.values())), (sorted(after), [after[d] for d in sorted(after)])


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


Namer = Callable[..., str]


def _plain(expression: str, written: Callable[[], str] | None = None) -> str:
    """The Namer that names nothing: an expression's canonical text."""
    return expression


class Names:
    """Inline aliases within one SELECT: an expression used several times is written out once, as
    `(expression AS name)`, and by name elsewhere (ClickHouse resolves an alias wherever it is used
    in the same SELECT). A much shorter query text is faster to analyse, which matters most to
    incremental runs, whose work is small."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._names: dict[str, str] = {}

    def __call__(self, expression: str, written: Callable[[], str] | None = None) -> str:
        """`expression` by name, written out (as `written()`, when given: the same expression with its
        own repeated parts named) the first time."""
        name = self._names.get(expression)
        if name is not None:
            return name
        name = self._names[expression] = f"{self.prefix}{len(self._names)}"
        return f"({written() if written is not None else expression} AS {name})"


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
    (their first run), so nothing needs comparing. `peers`: every rule evaluated on this key column, in this
    group or another (a changed rule runs in full apart from the others): the systems they read are the ones a
    case's fallback fields may come from, so those fields never depend on how a run grouped its rules; empty: the
    group's own rules.
    """

    key: str
    scope: Scope
    parts: list[RulePart] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    first: bool = False
    peers: list[SlaRule] = field(default_factory=list)


def _trusted(group: Group, bind: Binder, condition: str) -> str:
    """`condition`, held only by events of the systems the rules of the group's key column read (every side's
    sources: its `peers`, else its own rules), so a fallback field never comes from a system the rules do not
    trust; unrestricted when a side takes any source."""
    rules = group.peers or [part.rule for part in group.parts]
    sides = [side for rule in rules for side in (rule.start, rule.end)]
    if any(not side.sources for side in sides):
        return condition
    sources = sorted({source for side in sides for source in side.sources})
    return f"({condition} AND {sources_condition(sources, bind)})"


def sources_condition(sources: Sequence[str], bind: Binder) -> str:
    """The boolean expression selecting events sent by `sources` (systems, or paths of one)."""
    systems = [s for s in sources if "/" not in s]
    paths = [s for s in sources if "/" in s]
    either = []
    if systems:
        either.append(f"system IN {bind(systems, 'Array(String)')}")
    if paths:
        # a path covers itself and its sub-paths: wms/dallas covers wms/dallas/dock-2
        either.append(
            f"arrayExists(p -> source = p OR startsWith(source, concat(p, '/')), {bind(paths, 'Array(String)')})"
        )
    return "(" + " OR ".join(either) + ")"


def _match(side: EventMatch, bind: Binder) -> str:
    """The boolean expression selecting one side's events."""
    clauses = [f"type IN {bind(list(side.types), 'Array(String)')}"]
    if side.sources:
        clauses.append(sources_condition(side.sources, bind))
    for name, values in sorted(side.where.items()):
        clauses.append(f"{_column(name, _FILTER_COLUMNS)} IN {bind(sorted(values), 'Array(String)')}")
    for name, values in sorted(side.where_not.items()):
        clauses.append(f"{_column(name, _FILTER_COLUMNS)} NOT IN {bind(sorted(values), 'Array(String)')}")
    return "(" + " AND ".join(clauses) + ")"


def _cutoff_due(rule: SlaRule, started: str, zone_value: str | None, bind: Binder, names: Namer) -> str:
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
    holidays: tuple[tuple[str, str], tuple[str, str]] | None = None
    if cutoff.holidays:
        (starts_b, dues_b), (starts_a, dues_a) = holiday_overrides(cutoff.business_days, cutoff.holidays)
        holidays = (
            (bind(starts_b, "Array(Date)"), bind(dues_b, "Array(Date)")),
            (bind(starts_a, "Array(Date)"), bind(dues_a, "Array(Date)")),
        )

    def due_in(zone_name: str) -> str:
        zone = bind(zone_name, "String")
        local = f"toTimeZone({started}, {zone})"
        weekday, date = f"toDayOfWeek({local})", f"toDate({local})"

        def local_us(part: Callable[[str], str]) -> str:
            return (
                f"(toHour({part(local)}) * 3600000000 + toMinute({part(local)}) * 60000000"
                f" + toSecond({part(local)}) * 1000000 + toUnixTimestamp64Micro({started}) % 1000000)"
            )

        def day(part: Callable[[str], str]) -> str:
            """The day the deadline ends on, its parts written by `part`."""
            same_day, next_day_of = part(date), f"addDays({part(date)}, arrayElement({next_day}, {part(weekday)}))"
            if holidays is not None:  # the few start days whose deadline a holiday moves
                (starts_b, dues_b), (starts_a, dues_a) = holidays
                same_day = f"transform({same_day}, {starts_b}, {dues_b}, {same_day})"
                next_day_of = f"transform({part(date)}, {starts_a}, {dues_a}, {next_day_of})"
            return f"if(has({business}, {part(weekday)}) AND {local_us(part)} < {limit_us}, {same_day}, {next_day_of})"

        def named(expression: str) -> str:
            if expression == local:
                return names(local)
            function = "toDayOfWeek" if expression == weekday else "toDate"  # the local time inside named too
            return names(expression, lambda: f"{function}({names(local)})")

        def day_named() -> str:
            return names(day(str), lambda: day(named))

        end_of_day = (
            f"makeDateTime64(toYear({day_named()}), toMonth({day_named()}), toDayOfMonth({day_named()}),"
            f" 23, 59, 59, 0, 6, {zone})"
        )
        return f"toTimeZone({end_of_day}, 'UTC')"

    if len(zones) == 1 or zone_value is None:
        return due_in(zones[0])
    index_text = (
        f"transform({zone_value}, {bind(list(mapping), 'Array(String)')},"
        f" {bind(list(mapping.values()), 'Array(UInt8)')}, toUInt8(0))"
    )
    branches = ", ".join(f"{names(index_text)} = {i}, {due_in(zones[i])}" for i in range(1, len(zones)))
    return f"multiIf({branches}, {due_in(zones[0])})"


def changed_keys(groups: Sequence[Group], now: datetime, limit: int) -> tuple[str, dict[str, Any]]:
    """The keys incremental runs recompute, as rows (g: the group's index in `groups`, k: a key), at most
    `limit` + 1 per group: keys with events received since the last run's watermark, and pending cases
    whose warning time or deadline passed since the last run's now. Every group in one read.

    Reads `sla_cases` without FINAL: an older version selects a key at most once too often, and
    recomputing a key is idempotent.
    """
    bind = Binder()
    at = bind(now, _T)
    selects = []
    timed: list[str] = []  # per rule: its cases whose status changes with time alone
    group_of: list[str] = []  # per rule: its group's index
    for g, group in enumerate(groups):
        key = _column(group.key, _KEY_COLUMNS)
        received = bind(min(p.since_received for p in group.parts if p.since_received is not None), _T)
        selects.append(
            f"SELECT {g} AS g, {key} AS k FROM business_events WHERE received_at > {received} AND {key} != ''"
        )
        for part in group.parts:
            assert part.since_now is not None
            since = bind(part.since_now, _T)
            # breached once now is past due_at: the last run, at `since`, saw a case due exactly then still open
            crossed = [f"(due_at >= {since} AND due_at < {at})"]
            if part.rule.warning is not None:
                warned = f"due_at - toIntervalMicrosecond({bind(_micros(part.rule.warning), 'Int64')})"
                crossed.append(f"(status = 'pending' AND {warned} <= {at} AND {warned} > {since})")
            rule = bind(part.rule.id, "String")
            timed.append(f"(rule = {rule} AND ({' OR '.join(crossed)}))")
            group_of.append(f"rule = {rule}, {g}")
    # every rule's pending cases in one pass over the status column
    selects.append(
        f"SELECT multiIf({', '.join(group_of)}, 0) AS g, key AS k FROM sla_cases"
        f" WHERE status IN ('pending', 'at_risk') AND ({' OR '.join(timed)})"
    )
    union = " UNION ALL ".join(selects)
    sql = f"SELECT DISTINCT g, k FROM ({union}) LIMIT {bind(limit + 1, 'UInt64')} BY g"
    return sql, bind.params


def _keys(keys: Sequence[str], bind: Binder) -> str:
    """A set of keys to test a column against with IN: the keys travel as one JSON text (a large array
    literal costs ClickHouse far more to parse and analyse), and a subquery's set is built once and
    still selects the primary key's (or a projection's) ranges."""
    return f"(SELECT arrayJoin(JSONExtract({bind(orjson.dumps(list(keys)).decode(), 'String')}, 'Array(String)')))"


def _zone_field(rule: SlaRule, bind: Binder) -> str | None:
    """The inner column (expression) a cutoff rule's `zone_by` field reads, if any."""
    cutoff = rule.deadline.cutoff
    if cutoff is None or cutoff.zone_by is None:
        return None
    name = cutoff.zone_by.field
    if name in ("warehouse", "customer_id"):
        return name
    if name in _FILTER_COLUMNS:
        return f"toString({name})"
    # `data.NAME` (validated by ZoneBy): a field of the event's data object
    return f"JSONExtractString(data, {bind(name.removeprefix('data.'), 'String')})"


class _Event:
    """The encoding of an event as one string (see `cases`): the expression that builds it and the
    expressions that read its fields back from an aggregate of such strings."""

    def __init__(self, fields: list[str]) -> None:
        self.fields = fields  # inner columns, each stored with its length; the customer comes last
        self.header = 8 + 4 * len(fields)

    def build(self) -> str:
        lengths = [f"reinterpretAsFixedString(toUInt32(length({f})))" for f in self.fields]
        return f"concat({_TIME_BYTES}, {', '.join(lengths)}, {', '.join(self.fields)}, customer_id)"

    def time(self, value: str) -> str:
        """The time of the event `value`, NULL for the empty string (no such event)."""
        bits = f"bitXor(reinterpretAsUInt64(reverse(substring({value}, 1, 8))), toUInt64(9223372036854775808))"
        return f"if({value} = '', NULL, fromUnixTimestamp64Micro(reinterpretAsInt64({bits}), 'UTC'))"

    def field(self, value: str, expression: str, names: Namer) -> str:
        """Field `expression` of the event `value` ('' for the empty string: no such event)."""

        def length(i: int) -> str:  # each call writes (or names) the length once in the text
            return names(f"reinterpretAsUInt32(substring({value}, {9 + 4 * i}, 4))")

        if expression == "customer_id":
            offset = " + ".join([str(self.header + 1), *(length(j) for j in range(len(self.fields)))])
            return f"substring({value}, {offset})"
        i = self.fields.index(expression)
        offset = " + ".join([str(self.header + 1), *(length(j) for j in range(i))])
        return f"substring({value}, {offset}, {length(i)})"


# An event's time as 8 bytes whose byte order is time order (big-endian, sign bit flipped).
_TIME_BYTES = (
    "reverse(reinterpretAsFixedString(bitXor(reinterpretAsUInt64(toUnixTimestamp64Micro(time)),"
    " toUInt64(9223372036854775808))))"
)


def cases(
    group: Group, bind: Binder, now: datetime, since: datetime | None = None, until: datetime | None = None
) -> str:
    """The SELECT of the group's cases: rule, key, started_at, ended_at, due_at, status, customer_id,
    warehouse, source. Scope `changed` recomputes the group's keys; scope `window` keeps cases
    started in [since, until) and reads only events before `until`.

    A case takes its source, customer and warehouse (and its cutoff zone) from its first start
    event. Each event read is encoded as one string: its time in 8 bytes whose byte order is time
    order, then the lengths and values of source, warehouse and any zone field, then the
    customer. The smallest such string among a key's start events is its first start event,
    earliest first and a tie at the same instant broken by the fields themselves (every run picks
    the same event), and every field comes from that one event: a string minimum aggregates far
    faster than an argMin of a tuple. The first event with a customer (or warehouse, or zone
    field) from the systems the group's rules read is the fallback when the start event has none:
    another system's event cannot route a case or move its cutoff.
    """
    key = _column(group.key, _KEY_COLUMNS)
    flags: dict[str, str] = {}  # expression -> alias: equal filters are computed once

    def flag(expression: str) -> str:
        return flags.setdefault(expression, f"f{len(flags)}")

    aggregates: dict[str, str] = {}  # expression -> alias

    def agg(expression: str) -> str:
        return aggregates.setdefault(expression, f"a{len(aggregates)}")

    zones = [z for z in dict.fromkeys(_zone_field(p.rule, bind) for p in group.parts) if z is not None]
    extra_columns = {z: f"x{i}" for i, z in enumerate(z for z in zones if z not in ("warehouse", "customer_id"))}
    event = _Event(["source", "warehouse", *extra_columns.values()])

    def first_with(column: str) -> str:
        """The first event whose `column` (an inner column or alias) is set."""
        return agg(f"minIf(v, {column} != '')")

    def value(first: str, column: str, names: Namer) -> str:
        """`column` of the first start event `first`, else of the first event that has it."""
        own, fallback = (
            names(event.field(e, column, _plain), lambda e=e: event.field(e, column, names))
            for e in (first, first_with(column))
        )
        return f"if({own} != '', {names(event.field(first, column, _plain))}, {fallback})"

    at = bind(now, _T)
    sides = [(flag(_match(p.rule.start, bind)), flag(_match(p.rule.end, bind))) for p in group.parts]
    # a start side's first event (its time included); an end side's time, read from the first event of
    # the same side when that side starts another rule, else its own (cheaper) minimum
    firsts = {start: agg(f"minIf(v, {start})") for start, _ in sides}
    times: dict[str, str] = {}  # expression -> alias

    def time_of(side: str) -> str:
        expression = event.time(firsts[side]) if side in firsts else agg(f"minIfOrNull(t, {side})")
        return times.setdefault(expression, f"s{len(times)}")

    due_names, out_names = Names("d"), Names("o")
    rows: list[str] = []
    per_rule: list[str] = []
    for i, (part, (start, end)) in enumerate(zip(group.parts, sides, strict=True)):
        rule = part.rule
        first = firsts[start]
        s, e = time_of(start), time_of(end)
        started = f"assumeNotNull({s})"
        if rule.deadline.after is not None:
            due = f"{started} + toIntervalMicrosecond({bind(_micros(rule.deadline.after), 'Int64')})"
        else:
            zone = _zone_field(rule, bind)
            zone_value = value(first, extra_columns.get(zone, zone), due_names) if zone is not None else None
            due = _cutoff_due(rule, started, zone_value, bind, due_names)
        status = [f"{e} IS NOT NULL, if(assumeNotNull({e}) <= due_{i}, 'met', 'late')", f"{at} > due_{i}, 'breached'"]
        if rule.warning is not None:
            status.append(f"{at} >= due_{i} - toIntervalMicrosecond({bind(_micros(rule.warning), 'Int64')}), 'at_risk'")
        per_rule.append(f"{due} AS due_{i}")
        rows.append(
            f"({bind(rule.id, 'String')}, {s}, {e}, due_{i}, multiIf({', '.join(status)}, 'pending'),"
            f" {value(first, 'customer_id', out_names)}, {value(first, 'warehouse', out_names)},"
            f" {event.field(first, 'source', out_names)})"
        )

    where = [f"{key} != ''"]
    if group.scope == "changed":
        where.append(f"{key} IN {_keys(group.keys, bind)}")
    elif group.scope == "window":
        assert since is not None and until is not None
        where.append(f"time < {bind(until, _T)}")
    fallbacks = ["customer_id != ''", "warehouse != ''", *(f"{a} != ''" for a in extra_columns.values())]
    wanted = [*flags.values(), _trusted(group, bind, "(" + " OR ".join(fallbacks) + ")")]
    where.append("(" + " OR ".join(wanted) + ")")
    starts = " OR ".join(f"{a} != ''" for a in firsts.values())
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
    SELECT *, {", ".join(per_rule)}
    FROM (
    SELECT key, {", ".join(aggregates.values())}, {", ".join(f"{expr} AS {alias}" for expr, alias in times.items())}
    FROM (
        SELECT k AS key, {", ".join(f"{expression} AS {alias}" for expression, alias in aggregates.items())}
        FROM (
            SELECT {key} AS k, time AS t, customer_id, warehouse, {inner_columns},
                {event.build()} AS v
            FROM business_events
            WHERE {" AND ".join(where)}
        )
        GROUP BY key
        HAVING {starts}
    )
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
        rules = bind([p.rule.id for p in group.parts], "Array(String)")
        stored = f"sla_cases FINAL WHERE rule IN {rules}"
        columns = ", ".join(f"c.{name} AS {name}" for name in _CASE_COLUMNS.split(", "))
        if group.scope == "changed":
            # few keys: one read of their stored versions (the newest of each, by version: cheaper than
            # FINAL over the granules they share with other keys), joined on (rule, key), compared by hash
            branches.append(f"""
SELECT {columns}, p.status AS previous_status
FROM (SELECT *, {_STATE} AS h FROM ({select})) AS c
LEFT JOIN (
    SELECT rule, key, argMax(status, version) AS status, argMax(state_hash, version) AS state_hash
    FROM sla_cases WHERE rule IN {rules} AND key IN {_keys(group.keys, bind)}
    GROUP BY rule, key
) AS p ON p.rule = c.rule AND p.key = c.key
WHERE p.state_hash != c.h""")
            continue
        branches.append(f"""
SELECT {columns}, p.status AS previous_status
FROM (SELECT rule, key, status FROM {stored}) AS p
RIGHT JOIN (
    SELECT * FROM ({select}) WHERE {_STATE} NOT IN (SELECT state_hash FROM {stored})
) AS c ON p.rule = c.rule AND p.key = c.key""")
    settings = _FEW_KEYS if all(g.scope == "changed" for g in groups) else _MANY
    sql = f"""
INSERT INTO sla_cases ({_CASE_COLUMNS}, previous_status, state_hash, evaluated_at, version)
SELECT {_CASE_COLUMNS}, previous_status, {_STATE}, {bind(now, _T)}, {bind(version, "UInt64")}
FROM ({" UNION ALL ".join(branches)})
SETTINGS join_use_nulls = 0, optimize_on_insert = 0{settings}"""
    return sql, bind.params


# An incremental run groups few keys: a two-level aggregation would split them into 256 small blocks, and
# the per-block cost of the case expressions (hundreds of functions) would outweigh the work itself. Its
# events are found through the key projections: checking the bloom filter indexes of every part first
# costs more (about 15 ms for 8,000 keys) than it saves.
_FEW_KEYS = ", group_by_two_level_threshold = 0, group_by_two_level_threshold_bytes = 0, use_skip_indexes = 0"
# A full run writes millions of cases: sorting and compressing them is a third of its time, and two sinks do
# it in parallel (the bench's full INSERT alone, two cores: about 0.2 s less of 3 s; within bench/sla.py's noise).
_MANY = ", max_insert_threads = 2"


def _backtest_cases(
    rule: SlaRule, since: datetime, until: datetime, peers: Sequence[SlaRule], as_of: datetime | None, bind: Binder
) -> str:
    """The query of every case of `rule` started in [since, until), as of `as_of` (default `until`)."""
    others = [peer for peer in peers if peer.key == rule.key and peer.id != rule.id]
    group = Group(rule.key, "window", [RulePart(rule)], peers=[rule, *others])
    return cases(group, bind, until if as_of is None else as_of, since, until)


# A backtest's listed fields, in the order its query gives each case.
BACKTEST_FIELDS = ("started_at", "key", "ended_at", "due_at", "customer_id", "warehouse", "source")


def backtest(
    rule: SlaRule,
    since: datetime,
    until: datetime,
    peers: Sequence[SlaRule] = (),
    as_of: datetime | None = None,
    statuses: Sequence[str] | None = None,
    limit: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """The cases of `rule` started in [since, until), as of `as_of` (default `until`), from events before `until`,
    in one pass: a row per status with how many cases have it (`cases`) and the first `limit` by start of those with
    one of `statuses` (`first`: BACKTEST_FIELDS tuples; default every case, all of them). The first `limit` of the
    whole listing are among the rows' firsts. `peers`: the other rules evaluated on its key column, whose systems its
    cases' fallback fields may come from (as in a live run)."""
    bind = Binder()
    select = _backtest_cases(rule, since, until, peers, as_of, bind)
    fields = f"({', '.join(BACKTEST_FIELDS)})"
    wanted = "1" if statuses is None else f"status IN {bind(list(statuses), 'Array(String)')}"
    if limit == 0:
        first = "[]"
    elif limit is None:
        first = f"arraySort(groupArrayIf({fields}, {wanted}))"
    else:  # the earliest `limit` of each status, kept as they stream by
        first = f"groupArraySortedIf({bind(limit, 'UInt64')})({fields}, {wanted})"
    return f"SELECT status, count() AS cases, {first} AS first FROM ({select}) GROUP BY status", bind.params


def side_matches(rule: SlaRule, since: datetime, until: datetime) -> tuple[str, dict[str, Any]]:
    """How many events of [since, until) each side of `rule` matches, and how many of those carry its key (a case
    needs both): what tells a rule that finds nothing from a quiet period. Each event counted once."""
    bind = Binder()
    key = _column(rule.key, _KEY_COLUMNS)
    start, end = _match(rule.start, bind), _match(rule.end, bind)
    sql = f"""
SELECT uniqExactIf((source, id), {start}) AS start_events,
    uniqExactIf((source, id), {start} AND {key} != '') AS start_keyed,
    uniqExactIf((source, id), {end}) AS end_events,
    uniqExactIf((source, id), {end} AND {key} != '') AS end_keyed
FROM business_events
WHERE time >= {bind(since, _T)} AND time < {bind(until, _T)}"""
    return sql, bind.params


# The event types of a period, most frequent first: what a rule's sides can be compared with.
PERIOD_TYPES = f"""
SELECT toString(type) AS type, uniqExact(source, id) AS events
FROM business_events
WHERE time >= {{since:{_T}}} AND time < {{until:{_T}}}
GROUP BY type ORDER BY events DESC, type LIMIT 20
"""


def transitions(after: Mapping[str, int], version: int) -> tuple[str, dict[str, Any]]:
    """The versions written since each rule's last completed run (`after`: its version, 0 before its
    first) that open or close an exception: a case newly breached, or a breached case that is no
    longer (its end arrived). Reading every version since the last completed run also picks up the
    transitions of a run that stopped half-way. Every rule in one read; the version index skips the
    parts older than the oldest of those runs."""
    bind = Binder()
    since = " OR ".join(
        f"(rule = {bind(rule, 'String')} AND version > {bind(last, 'UInt64')})" for rule, last in after.items()
    )
    sql = f"""
SELECT rule, key, status, previous_status, started_at, ended_at, due_at, customer_id, warehouse, source, version
FROM sla_cases
WHERE version > {bind(min(after.values()), "UInt64")} AND version <= {bind(version, "UInt64")} AND ({since})
  AND ((status = 'breached' AND previous_status NOT IN ('breached', 'met', 'late'))
       OR (previous_status = 'breached' AND status != 'breached'))
ORDER BY rule, version, key"""
    return sql, bind.params


# The versions a run wrote, per rule: how many, and how many are new cases (no stored state before).
WRITTEN = """
SELECT rule, count() AS n, countIf(previous_status = '') AS new
FROM sla_cases WHERE version = {version:UInt64} GROUP BY rule
"""

CASE_COUNT = "SELECT count() AS n FROM sla_cases FINAL WHERE rule = {rule:String}"

# Read in received_at order (the `sla_by_received` projection): the newest row without a scan.
NEWEST_RECEIVED = "SELECT received_at AS at FROM business_events ORDER BY received_at DESC LIMIT 1"

# Each rule's last completed run, and (on every row, saving a round trip) the newest received_at.
LAST_RUNS = f"""
SELECT rule, max(version) AS last_version, argMax(started_at, version) AS as_of,
    argMax(watermark, version) AS last_watermark, argMax(rule_hash, version) AS last_hash,
    argMax(cases_total, version) AS last_total,
    maxIf(started_at, mode = 'full') AS last_full, countIf(mode = 'full') AS full_runs,
    ({NEWEST_RECEIVED}) AS newest
FROM sla_runs WHERE rule IN {{rules:Array(String)}}
GROUP BY rule
"""
