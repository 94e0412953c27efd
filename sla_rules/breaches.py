"""SLA breaches of a period, one row each, for finance reports, with an estimated chargeback per breach.

What counts (the precise definitions the reports document):

- a **breach** is an SLA case (`sla_cases`, latest version) whose deadline (`due_at`) falls in the
  period [since, until) and that missed it: status `late` (its end came after the deadline) or
  `breached` (no end, the deadline passed). A case still stored as `pending`/`at_risk` whose
  deadline passed before the report's `as_of` is a breach too (the engine has not re-evaluated it
  yet): the report does not depend on when the scheduler last ran;
- `opened` is when the case started (its first start event: when the SLA clock began), `due` its
  deadline; `flagged` is when the breach's exception opened, when there is one (a case first seen
  already late has none);
- `closed` is the case's end (`ended_at`) when it came, else when its exception was resolved
  (by hand: `fixed`, ...), else nothing: the breach is **open**;
- `hours late` runs from `due` to `closed`, or to `as_of` while open (rounded to 0.01 h);
- `owner` is the exception's owner, else the owner the routing gives the case now; `resolution`
  the exception's resolution when resolved, else `late` for a late case, else empty (open);
- the **penalty** is the rule's `penalty.fixed` plus `penalty.percent` of the order amount, the
  `amount` of the order's first `order.accepted` event from the systems the rules read that event
  from (erp by default; any system when a rule reads it from any, or none reads it). The order is
  the case key for `order_id` rules, and the `order_id` events of the shipment or invoice carry for `shipment_id` and
  `invoice_id` rules. With no amount found, a negative amount, an order without a currency or in
  another currency than the penalty's, only the fixed part counts and `note` says why: a penalty
  is never below zero. Rounded to cents, half up.

Rows come in (due_at, rule, key) order, a page at a time (keyset paging), so a year of breaches
never sits in memory at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from kernel.store.base import Store, stored_time_or_none
from sla_rules.model import Penalty, Rule, SlaRule
from sla_rules.sql import Binder, sources_condition

OwnerFor = Callable[[Rule, Mapping[str, str]], str]

PAGE_SIZE = 5_000
CENTS = Decimal("0.01")
ORDER_EVENT = "order.accepted"
# Key columns whose events carry the order_id the penalty's order amount comes from.
_LINKED_KEYS = frozenset(("shipment_id", "invoice_id"))
_T = "DateTime64(6, 'UTC')"

# The cases that are breaches of [since, until) as of `as_of`: the report's rows, and what /api/sla/breaches counts.
BREACH_CASES = f"""due_at >= {{since:{_T}}} AND due_at < {{until:{_T}}}
  AND (status IN ('late', 'breached') OR (status IN ('pending', 'at_risk') AND due_at < {{as_of:{_T}}}))"""

CASES_PAGE = f"""
SELECT rule, key, started_at, ended_at, due_at, status, customer_id, warehouse, source
FROM sla_cases FINAL
WHERE {BREACH_CASES}
  AND (due_at, rule, key) > ({{after_due:{_T}}}, {{after_rule:String}}, {{after_key:String}})
ORDER BY due_at, rule, key
LIMIT {{limit:UInt32}}
"""

EXCEPTIONS_OF = """
SELECT id, rule, key, owner, status, opened_at, resolved_at, resolution
FROM exceptions FINAL
WHERE rule IN {rules:Array(String)} AND key IN {keys:Array(String)}
"""

ORDERS_OF = """
SELECT {column} AS k, argMinIf(order_id, (time, id), order_id != '') AS order_id
FROM business_events
WHERE {column} IN {{keys:Array(String)}}
GROUP BY k
"""

COUNT = f"""
SELECT count() AS n FROM sla_cases FINAL WHERE {BREACH_CASES}
"""

# Every breach of the period (of one rule, or all with rule ''), closed as the report closes it (at its end, else at
# the resolution of its latest exception by (opened_at, id)), with its hours late in hundredths, rounded half up as
# `hours` does: what the report's rows say, added up in the store.
LATENESS = f"""
SELECT c.rule AS rule, c.key AS key, c.customer_id AS customer_id, c.warehouse AS warehouse,
    coalesce(c.ended_at, if(tupleElement(x.latest, 1) = 'resolved', tupleElement(x.latest, 2), NULL)) AS closed,
    closed IS NULL AS is_open,
    intDiv(greatest(toUnixTimestamp64Micro(ifNull(closed, {{as_of:{_T}}})) - toUnixTimestamp64Micro(c.due_at), 0)
        + 18000000, 36000000) AS hundredths
FROM (
    SELECT rule, key, customer_id, warehouse, due_at, ended_at FROM sla_cases FINAL
    WHERE {BREACH_CASES} AND ({{rule:String}} = '' OR rule = {{rule:String}})
) AS c
LEFT JOIN (
    SELECT rule, key, argMax((status, resolved_at), (opened_at, id)) AS latest
    FROM exceptions FINAL
    WHERE (rule, key) IN (
        SELECT rule, key FROM sla_cases FINAL
        WHERE {BREACH_CASES} AND ({{rule:String}} = '' OR rule = {{rule:String}})
    )
    GROUP BY rule, key
) AS x ON x.rule = c.rule AND x.key = c.key
"""

# {sources}: which systems' events may give the amount (sla_rules.sql's condition on `system`/`source`, or true).
ORDER_AMOUNTS = """
SELECT order_id, argMin(toString(amount), (time, id)) AS order_amount, argMin(currency, (time, id)) AS order_currency
FROM business_events
WHERE type = {{type:String}} AND order_id IN {{orders:Array(String)}} AND amount IS NOT NULL AND {sources}
GROUP BY order_id
"""


@dataclass(frozen=True)
class Breach:
    """One breach of an SLA rule (see the module docstring for what each field means)."""

    rule: str
    key: str
    customer_id: str
    warehouse: str
    source: str
    status: str  # late | breached (the case's status as the report counts it)
    opened: datetime
    due: datetime
    closed: datetime | None
    hours_late: Decimal
    owner: str
    resolution: str
    exception_id: str
    flagged: datetime | None
    order_id: str
    order_amount: Decimal | None
    order_currency: str
    penalty: Decimal
    penalty_currency: str
    note: str

    @property
    def is_open(self) -> bool:
        """No end and no resolved exception: the breach is still running."""
        return self.closed is None


def penalty_of(penalty: Penalty | None, amount: Decimal | None, currency: str) -> tuple[Decimal, str, str]:
    """(estimated penalty, its currency, a note) for one breach of a rule with `penalty`, for an order of
    `amount` in `currency` (None / '' when unknown)."""
    if penalty is None:
        return Decimal(0), "", ""
    total = penalty.fixed
    note = ""
    if penalty.percent:
        if amount is None:
            note = "no order amount: fixed part only"
        elif amount < 0:
            note = f"negative order amount ({amount}): fixed part only"
        elif not currency:
            note = f"order without a currency, penalty in {penalty.currency}: fixed part only"
        elif currency != penalty.currency:
            note = f"order in {currency}, penalty in {penalty.currency}: fixed part only"
        else:
            total += amount * penalty.percent / 100
    return total.quantize(CENTS, ROUND_HALF_UP), penalty.currency, note


def hours(start: datetime, end: datetime) -> Decimal:
    """Hours from `start` to `end` (never negative), to 0.01 h."""
    micros = max(0, round((end - start).total_seconds() * 1_000_000))
    return (Decimal(micros) / Decimal(3_600_000_000)).quantize(CENTS, ROUND_HALF_UP)


class BreachQuery:
    """Reads the breaches of a period from the store: cases, their exceptions and order amounts."""

    def __init__(
        self,
        store: Store,
        rules: Mapping[str, SlaRule],
        owner_for: OwnerFor | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.store = store
        self.rules = dict(rules)
        self.owner_for = owner_for
        self.page_size = page_size
        self.amount_sources = amount_sources(self.rules.values())

    def count(self, since: datetime, until: datetime, as_of: datetime) -> int:
        """How many breaches `breaches` gives for the same arguments (one read, no rows)."""
        since, until, as_of = (t.astimezone(UTC) for t in (since, until, as_of))
        rows = self.store.query(COUNT, {"since": since, "until": until, "as_of": as_of})
        return int(rows[0]["n"]) if rows else 0

    def breaches(self, since: datetime, until: datetime, as_of: datetime) -> Iterator[Breach]:
        """Every breach whose deadline is in [since, until), as of `as_of`, in (due, rule, key) order."""
        since, until, as_of = (t.astimezone(UTC) for t in (since, until, as_of))
        after: tuple[datetime, str, str] = (since, "", "")  # no rule id is empty: the first row is after this
        while True:
            page = self.store.query(
                CASES_PAGE,
                {
                    "since": since,
                    "until": until,
                    "as_of": as_of,
                    "after_due": after[0],
                    "after_rule": after[1],
                    "after_key": after[2],
                    "limit": self.page_size,
                },
            )
            if not page:
                return
            yield from self._rows(page, as_of)
            last = page[-1]
            due = stored_time_or_none(last["due_at"])
            assert due is not None
            after = (due, last["rule"], last["key"])
            if len(page) < self.page_size:
                return

    def _rows(self, page: list[dict[str, Any]], as_of: datetime) -> Iterator[Breach]:
        exceptions = self._exceptions(page)
        orders = self._orders(page)
        amounts = self._amounts(set(orders.values()))
        for case in page:
            rule, key = case["rule"], case["key"]
            config = self.rules.get(rule)
            found = exceptions.get((rule, key))
            due = stored_time_or_none(case["due_at"])
            started = stored_time_or_none(case["started_at"])
            assert due is not None and started is not None
            ended = stored_time_or_none(case["ended_at"])
            resolved = stored_time_or_none(found["resolved_at"]) if found and found["status"] == "resolved" else None
            closed = ended or resolved
            status = "late" if case["status"] == "late" else "breached"  # pending past its deadline: breached
            if found is not None and found["status"] == "resolved":
                resolution = found["resolution"]
            else:
                resolution = "late" if status == "late" else ""
            order_id = orders.get((rule, key), "")
            amount, currency = amounts.get(order_id, (None, ""))
            penalty, penalty_currency, note = penalty_of(config.penalty if config else None, amount, currency)
            yield Breach(
                rule=rule,
                key=key,
                customer_id=case["customer_id"],
                warehouse=case["warehouse"],
                source=case["source"],
                status=status,
                opened=started,
                due=due,
                closed=closed,
                hours_late=hours(due, closed or as_of),
                owner=found["owner"] if found else self._owner(config, case),
                resolution=resolution,
                exception_id=found["id"] if found else "",
                flagged=stored_time_or_none(found["opened_at"]) if found else None,
                order_id=order_id,
                order_amount=amount,
                order_currency=currency,
                penalty=penalty,
                penalty_currency=penalty_currency,
                note=note,
            )

    def _owner(self, rule: SlaRule | None, case: Mapping[str, Any]) -> str:
        if rule is None:
            return ""
        if self.owner_for is None:
            return rule.owner
        return self.owner_for(rule, rule.case_data(case))

    def _exceptions(self, page: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
        """The latest exception (by opened_at) of each case of the page that has one."""
        wanted = {(c["rule"], c["key"]) for c in page}
        rows = self.store.query(
            EXCEPTIONS_OF,
            {"rules": sorted({r for r, _ in wanted}), "keys": sorted({k for _, k in wanted})},
        )
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            pair = (row["rule"], row["key"])
            if pair in wanted and (pair not in found or (row["opened_at"], row["id"]) > _order(found[pair])):
                found[pair] = row
        return found

    def _orders(self, page: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
        """The order of each case whose rule links to one: its key, or the order its shipment/invoice carries."""
        orders: dict[tuple[str, str], str] = {}
        linked: dict[str, set[str]] = {}
        for case in page:
            config = self.rules.get(case["rule"])
            if config is None:
                continue
            if config.key == "order_id":
                orders[(case["rule"], case["key"])] = case["key"]
            elif config.key in _LINKED_KEYS:
                linked.setdefault(config.key, set()).add(case["key"])
        for column, keys in linked.items():
            rows = self.store.query(ORDERS_OF.format(column=column), {"keys": sorted(keys)})
            by_key = {row["k"]: row["order_id"] for row in rows if row["order_id"]}
            for case in page:
                config = self.rules.get(case["rule"])
                if config is not None and config.key == column and case["key"] in by_key:
                    orders[(case["rule"], case["key"])] = by_key[case["key"]]
        return orders

    def _amounts(self, orders: set[str]) -> dict[str, tuple[Decimal, str]]:
        """(amount, currency) of each order's first order.accepted with an amount, from `amount_sources`."""
        if not orders:
            return {}
        bind = Binder()
        condition = sources_condition(self.amount_sources, bind) if self.amount_sources else "true"
        params = {**bind.params, "type": ORDER_EVENT, "orders": sorted(orders)}
        rows = self.store.query(ORDER_AMOUNTS.format(sources=condition), params)
        return {row["order_id"]: (_cents(Decimal(row["order_amount"])), row["order_currency"]) for row in rows}


def amount_sources(rules: Iterable[SlaRule]) -> list[str]:
    """The systems whose `order.accepted` gives an order's amount: those the rules read it from (erp, by default),
    so one integration cannot set another's chargeback; every system (empty) when a rule reads it from any, or no
    rule reads it."""
    sides = [side for rule in rules for side in (rule.start, rule.end) if ORDER_EVENT in side.types]
    if not sides or any(not side.sources for side in sides):
        return []
    return sorted({source for side in sides for source in side.sources})


def _order(row: Mapping[str, Any]) -> tuple[str, str]:
    return (row["opened_at"], row["id"])


def _cents(amount: Decimal) -> Decimal:
    """An amount written to cents at least (`3222.7` as `3222.70`, as the penalties are); finer ones kept exact."""
    cents = amount.quantize(CENTS)
    return cents if cents == amount else amount
