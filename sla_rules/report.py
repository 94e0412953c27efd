"""What one evaluation did, per rule: cases changed, exceptions opened and resolved, time taken.

Every evaluator (the SLA engine, the technical rules) returns an `EvaluationReport`; the
service merges them into one, which `POST /api/sla/evaluate` returns as `as_dict()`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kernel.store.base import utc_text


@dataclass
class RuleReport:
    """One rule's part of an evaluation.

    `cases_changed` counts the cases whose stored state changed, `opened` and `resolved` hold
    exception ids. The SLA engine also says how it ran (`mode`: `full` or `incremental`) and
    how many keys it recomputed (`keys_evaluated`).
    """

    cases_changed: int = 0
    opened: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    duration_ms: float = 0.0
    mode: str = ""
    keys_evaluated: int = 0

    def merge(self, other: RuleReport) -> RuleReport:
        """Two parts of one rule's work added together."""
        modes = [m for m in dict.fromkeys((self.mode, other.mode)) if m]
        return RuleReport(
            cases_changed=self.cases_changed + other.cases_changed,
            opened=[*self.opened, *other.opened],
            resolved=[*self.resolved, *other.resolved],
            duration_ms=self.duration_ms + other.duration_ms,
            mode="+".join(modes),
            keys_evaluated=self.keys_evaluated + other.keys_evaluated,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        data: dict[str, Any] = {
            "cases_changed": self.cases_changed,
            "opened": list(self.opened),
            "resolved": list(self.resolved),
            "duration_ms": round(self.duration_ms, 3),
        }
        if self.mode:
            data["mode"] = self.mode
            data["keys_evaluated"] = self.keys_evaluated
        return data


@dataclass
class EvaluationReport:
    """The rules' reports (rule id -> RuleReport) of one evaluation; `errors`: evaluator -> message."""

    rules: dict[str, RuleReport] = field(default_factory=dict)
    full: bool = False
    evaluated_at: datetime | None = None
    duration_ms: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)

    def add(self, rule: str, report: RuleReport) -> None:
        """Add one rule's report (added up with what is there for the same rule)."""
        existing = self.rules.get(rule)
        self.rules[rule] = existing.merge(report) if existing else report

    @property
    def cases_changed(self) -> int:
        """Cases changed over every rule."""
        return sum(r.cases_changed for r in self.rules.values())

    @property
    def opened(self) -> list[str]:
        """Exception ids opened over every rule."""
        return [i for r in self.rules.values() for i in r.opened]

    @property
    def resolved(self) -> list[str]:
        """Exception ids resolved over every rule."""
        return [i for r in self.rules.values() for i in r.resolved]

    def merge(self, other: EvaluationReport) -> EvaluationReport:
        """A new report holding both reports' rules (a rule in both is added up) and errors."""
        merged = EvaluationReport(
            full=self.full or other.full,
            evaluated_at=max((t for t in (self.evaluated_at, other.evaluated_at) if t), default=None),
            duration_ms=self.duration_ms + other.duration_ms,
            errors={**self.errors, **other.errors},
        )
        for report in (self, other):
            for rule, part in report.rules.items():
                merged.add(rule, part)
        return merged

    @classmethod
    def combine(cls, reports: Iterable[EvaluationReport]) -> EvaluationReport:
        """All reports merged into one."""
        combined = cls()
        for report in reports:
            combined = combined.merge(report)
        return combined

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: totals, then per rule."""
        return {
            "full": self.full,
            "evaluated_at": utc_text(self.evaluated_at) if self.evaluated_at else None,
            "duration_ms": round(self.duration_ms, 3),
            "cases_changed": self.cases_changed,
            "opened": len(self.opened),
            "resolved": len(self.resolved),
            "rules": {rule: report.as_dict() for rule, report in sorted(self.rules.items())},
            "errors": dict(self.errors),
        }
