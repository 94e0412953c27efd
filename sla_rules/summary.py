"""SLA compliance per rule over a period, from the engine's cases (`sla_cases`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from kernel.store.base import Store


@dataclass(frozen=True)
class RuleSummary:
    """The cases of one rule that started in the period, by status.

    `pending` counts every undecided case, those at risk included; `at_risk` counts those alone.
    `compliance` is met / (met + late + breached), None while no case is decided.
    """

    rule: str
    cases: int
    met: int
    late: int
    breached: int
    pending: int
    at_risk: int
    group: str | None = None  # the warehouse or customer of these cases, in a summary by one of them

    @property
    def compliance(self) -> float | None:
        """The share of decided cases that were met."""
        decided = self.met + self.late + self.breached
        return round(self.met / decided, 6) if decided else None

    def as_dict(self) -> dict[str, Any]:
        """The summary with its compliance (and its group, in a summary by one)."""
        values = {**asdict(self), "compliance": self.compliance}
        if self.group is None:
            del values["group"]
        return values


_COUNTS = """
    count() AS cases,
    countIf(status = 'met') AS met,
    countIf(status = 'late') AS late,
    countIf(status = 'breached') AS breached,
    countIf(status IN ('pending', 'at_risk')) AS pending,
    countIf(status = 'at_risk') AS at_risk
FROM sla_cases FINAL
WHERE started_at >= {since:DateTime64(6, 'UTC')} AND started_at < {until:DateTime64(6, 'UTC')}"""

_SUMMARY = f"SELECT rule, {_COUNTS}\nGROUP BY rule ORDER BY rule"
# By a field of the cases, in one of two orders (the SQL is fixed per field and order: nothing from the request is
# written into it). `worst`: the lowest share of decided cases met first (none decided last), then most breached.
Group = Literal["warehouse", "customer"]
Order = Literal["group", "worst"]
_FIELDS = {"warehouse": "toString(warehouse)", "customer": "customer_id"}
_ORDERS = {
    "group": "rule, grp",
    "worst": "met / nullIf(met + late + breached, 0) ASC NULLS LAST, breached DESC, rule, grp",
}
_BY: dict[tuple[str, str], str] = {
    (by, order): f"SELECT rule, {field} AS grp, {_COUNTS} AND ({{rule:String}} = '' OR rule = {{rule:String}})"
    f"\nGROUP BY rule, grp ORDER BY {_ORDERS[order]}"
    " LIMIT {limit:UInt32}"
    for by, field in _FIELDS.items()
    for order in _ORDERS
}


def _summary(row: dict[str, Any], group: str | None = None) -> RuleSummary:
    return RuleSummary(
        rule=row["rule"],
        cases=int(row["cases"]),
        met=int(row["met"]),
        late=int(row["late"]),
        breached=int(row["breached"]),
        pending=int(row["pending"]),
        at_risk=int(row["at_risk"]),
        group=group,
    )


def sla_summary(
    store: Store,
    since: datetime,
    until: datetime,
    rules: Iterable[str] = (),
    by: Group | None = None,
    order: Order = "group",
    limit: int = 100_000,
    rule: str | None = None,
) -> list[RuleSummary]:
    """Per rule, the cases started in [since, until) by status, ordered by rule; `by` a warehouse or a customer,
    per rule and value of it (the cases' own: the first start event's, else the key's first event with one from
    a system the rules read; '' when none had it), at most `limit` of them (of `rule` alone, when given), ordered
    by rule and value or (`worst`) the worst first.

    Without `by`, rules named in `rules` without a case in the period are listed with zeros, so a summary shows
    every configured rule.
    """
    params: dict[str, Any] = {"since": since, "until": until}
    if by is not None:
        rows = store.query(_BY[(by, order)], {**params, "limit": limit, "rule": rule or ""})
        return [_summary(row, str(row["grp"])) for row in rows]
    found = {row["rule"]: _summary(row) for row in store.query(_SUMMARY, params)}
    for rule in rules:
        found.setdefault(rule, RuleSummary(rule, 0, 0, 0, 0, 0, 0))
    return [found[rule] for rule in sorted(found)]
