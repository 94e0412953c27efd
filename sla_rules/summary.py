"""SLA compliance per rule over a period, from the engine's cases (`sla_cases`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

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

    @property
    def compliance(self) -> float | None:
        """The share of decided cases that were met."""
        decided = self.met + self.late + self.breached
        return round(self.met / decided, 6) if decided else None

    def as_dict(self) -> dict[str, Any]:
        """The summary with its compliance."""
        return {**asdict(self), "compliance": self.compliance}


_SUMMARY = """
SELECT
    rule,
    count() AS cases,
    countIf(status = 'met') AS met,
    countIf(status = 'late') AS late,
    countIf(status = 'breached') AS breached,
    countIf(status IN ('pending', 'at_risk')) AS pending,
    countIf(status = 'at_risk') AS at_risk
FROM sla_cases FINAL
WHERE started_at >= {since:DateTime64(6, 'UTC')} AND started_at < {until:DateTime64(6, 'UTC')}
GROUP BY rule
ORDER BY rule
"""


def sla_summary(store: Store, since: datetime, until: datetime, rules: Iterable[str] = ()) -> list[RuleSummary]:
    """Per rule, the cases started in [since, until) by status, ordered by rule.

    Rules named in `rules` without a case in the period are listed with zeros, so a summary
    shows every configured rule.
    """
    found = {
        row["rule"]: RuleSummary(
            rule=row["rule"],
            cases=int(row["cases"]),
            met=int(row["met"]),
            late=int(row["late"]),
            breached=int(row["breached"]),
            pending=int(row["pending"]),
            at_risk=int(row["at_risk"]),
        )
        for row in store.query(_SUMMARY, {"since": since, "until": until})
    }
    for rule in rules:
        found.setdefault(rule, RuleSummary(rule, 0, 0, 0, 0, 0, 0))
    return [found[rule] for rule in sorted(found)]
