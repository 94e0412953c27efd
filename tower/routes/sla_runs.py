"""SLA engine runs: when each evaluation ran, in which mode, how long it took and what it changed.

Read from `sla_runs`, where the engine records one row per rule and run; a run's time is the sum of
its rules' (the engine splits the statement they share evenly among them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from kernel.api_auth import AUTH_RESPONSES, ReadDep
from kernel.store.base import stored_time
from tower.routes.deps import KnownQueryDep, StoreDep
from tower.routes.models import ValidationErrors

router = APIRouter(prefix="/api/sla", tags=["sla"], responses=AUTH_RESPONSES)

_RUNS = """
SELECT run_id, min(started_at) AS started_at, max(evaluated_at) AS evaluated_at,
       arraySort(groupUniqArray(mode)) AS modes, count() AS rules, sum(duration_ms) AS duration_ms,
       sum(cases_changed) AS cases_changed, sum(keys_evaluated) AS keys_evaluated,
       sum(opened) AS opened, sum(resolved) AS resolved, max(version) AS version
FROM sla_runs
GROUP BY run_id
ORDER BY started_at DESC, version DESC
LIMIT {limit:UInt32}
"""


class SlaRun(BaseModel):
    """One evaluation of the SLA rules."""

    run_id: str
    started_at: datetime = Field(description="The moment evaluated (the tower's clock), UTC.")
    evaluated_at: datetime = Field(description="When the run was recorded (the tower's clock), UTC.")
    mode: str = Field(description="full, incremental, or mixed (some rules of the run full, some incremental).")
    rules: int = Field(description="SLA rules evaluated.")
    duration_ms: float = Field(description="Time the run took, in milliseconds.")
    cases_changed: int
    keys_evaluated: int = Field(description="Keys (cases) recomputed.")
    opened: int = Field(description="Exceptions opened.")
    resolved: int = Field(description="Exceptions resolved.")


class SlaRunPage(BaseModel):
    """The latest SLA engine runs, newest first."""

    items: list[SlaRun]


def _run(row: dict[str, Any]) -> SlaRun:
    modes = list(row["modes"])
    return SlaRun(
        run_id=row["run_id"],
        started_at=stored_time(row["started_at"]),
        evaluated_at=stored_time(row["evaluated_at"]),
        mode=modes[0] if len(modes) == 1 else "mixed",
        rules=int(row["rules"]),
        duration_ms=round(float(row["duration_ms"]), 3),
        cases_changed=int(row["cases_changed"]),
        keys_evaluated=int(row["keys_evaluated"]),
        opened=int(row["opened"]),
        resolved=int(row["resolved"]),
    )


@router.get(
    "/runs",
    summary="The latest SLA engine runs, newest first: mode, duration and what each changed",
    description="Scheduled and asked-for evaluations alike (technical rules are not SLA engine runs). "
    "Roles: viewer, operator, finance, admin.",
    responses={422: {"model": ValidationErrors, "description": "A parameter is invalid (`loc` says which)."}},
)
def sla_runs(
    _: ReadDep,
    _known: KnownQueryDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Runs to list.")] = 50,
) -> SlaRunPage:
    return SlaRunPage(items=[_run(row) for row in store.query(_RUNS, {"limit": limit})])
