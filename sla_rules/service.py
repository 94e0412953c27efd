"""The SLA service: every evaluator (SLA engine, technical rules) run as one evaluation.

The scheduler and `POST /api/sla/evaluate` call `evaluate`; runs are serialised, so a manual
evaluation never overlaps a scheduled one. One evaluator failing does not stop the others: its
error is logged and named in the report.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from sla_rules.engine import SlaEngine
from sla_rules.model import SlaRule
from sla_rules.report import EvaluationReport

log = logging.getLogger(__name__)


class Evaluator(Protocol):
    """Something that evaluates rules and says what changed."""

    def evaluate(self, full: bool = False) -> EvaluationReport:
        """Evaluate now; `full` recomputes everything instead of what changed since the last run."""
        ...


class SlaService:
    """Runs its evaluators in order and merges their reports."""

    def __init__(self, evaluators: list[Evaluator]) -> None:
        self.evaluators = list(evaluators)
        self._lock = threading.Lock()

    @property
    def engine(self) -> SlaEngine:
        """The SLA engine (for backtests)."""
        for evaluator in self.evaluators:
            if isinstance(evaluator, SlaEngine):
                return evaluator
        raise LookupError("no SLA engine is configured")

    def evaluate(self, full: bool = False) -> EvaluationReport:
        """Run every evaluator once; errors are reported per evaluator, not raised."""
        with self._lock:
            begun = time.perf_counter()
            reports: list[EvaluationReport] = []
            errors: dict[str, str] = {}
            for evaluator in self.evaluators:
                name = type(evaluator).__name__
                try:
                    reports.append(evaluator.evaluate(full=full))
                except Exception as exc:  # one broken evaluator must not stop the others
                    log.exception("evaluator %s failed", name)
                    errors[name] = f"{type(exc).__name__}: {exc}"
            merged = EvaluationReport.combine(reports)
            merged.full = full
            merged.errors.update(errors)
            merged.duration_ms = (time.perf_counter() - begun) * 1000
            return merged

    def backtest(
        self,
        rule: SlaRule,
        since: datetime,
        until: datetime,
        statuses: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """The cases `rule` would have had for starts in [since, until), as of `until` (no writes): those with one
        of `statuses` (default all), the first `limit` by start."""
        return self.engine.backtest(rule, since, until, statuses, limit)

    def backtest_counts(self, rule: SlaRule, since: datetime, until: datetime) -> dict[str, int]:
        """How many of the cases `backtest` would find have each status (no writes)."""
        return self.engine.backtest_counts(rule, since, until)

    def side_matches(self, rule: SlaRule, since: datetime, until: datetime) -> dict[str, Any]:
        """What each side of `rule` matched in [since, until), and the period's event types (no writes)."""
        return self.engine.side_matches(rule, since, until)
