"""The SLA service: every evaluator (SLA engine, technical rules) run as one evaluation.

The scheduler and `POST /api/sla/evaluate` call `evaluate`; runs are serialised, so a manual
evaluation never overlaps a scheduled one. One evaluator failing does not stop the others: its
error is logged and named in the report.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from sla_rules.engine import SlaEngine
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
