"""Reconciliation: run a rule now (with progress), list the runs, and the open findings side by side.

The routes only translate HTTP; comparing, closing the loop and recording runs live in
`reconcilers.service.ReconcileService`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from kernel.api_auth import AUTH_RESPONSES, ApiError, OperateDep, ReadDep
from kernel.store.base import stored_time, stored_time_or_none
from reconcilers.model import ProgressEvent
from reconcilers.runs import RunRecord
from reconcilers.service import Finding, ReconcileService, UnknownRule
from tower.routes.deps import KnownQueryDep
from tower.routes.models import ValidationErrors

router = APIRouter(prefix="/api/reconcile", tags=["reconcile"], responses=AUTH_RESPONSES)

NDJSON = "application/x-ndjson"
UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": ApiError, "description": "No reconciliation rule has that id."}
}
INVALID: dict[int | str, dict[str, Any]] = {422: {"model": ValidationErrors, "description": "A parameter is invalid."}}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ApiError, "description": "The tower runs without reconcilers."}
}

RuleParam = Annotated[
    str | None,
    Query(description="A reconciliation rule id (inventory-sync, invoice-match) or a finding rule id (findings only)."),
]


def get_reconcile(request: Request) -> ReconcileService:
    """The tower's ReconcileService (`app.state.reconcile`); 503 when the tower runs without it."""
    service: ReconcileService | None = getattr(request.app.state, "reconcile", None)
    if service is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "reconcilers are not running in this tower")
    return service


ReconcileDep = Annotated[ReconcileService, Depends(get_reconcile)]


class RunOut(BaseModel):
    """One reconciliation run of one rule; times are UTC."""

    run_id: str
    rule: str
    compare: str = Field(description="The reconciler: inventory or invoice.")
    trigger: str = Field(description="schedule (the reconcile job) or api (POST /api/reconcile/run, the CLI).")
    status: Literal["running", "ok", "error"]
    started_at: datetime
    finished_at: datetime | None
    rows_compared: int = Field(description="Subjects compared: (sku, location) pairs, or invoices and shipped orders.")
    findings: int = Field(description="Subjects differing at the end of the run, over the rule's finding rules.")
    opened: int
    resolved: int = Field(description="Exceptions resolved as `reconciled`: the systems agree again.")
    reopened: int = Field(
        description="Exceptions resolved while the difference still stood: by a person (reopened once) or by a"
        " process such as the replay (every time)."
    )
    duration_ms: float
    error: str = Field(description="Why the run failed; empty when it did not.")
    details: dict[str, Any] = Field(description="Per finding rule: counts and exception ids; per phase: ms.")

    @classmethod
    def of(cls, record: RunRecord) -> RunOut:
        """The API form of a run."""
        return cls.model_validate(record.as_dict())


class RunResult(BaseModel):
    """The runs of one request: one per rule run."""

    runs: list[RunOut]


class RunPage(BaseModel):
    """Runs, newest first."""

    items: list[RunOut]


class FindingOut(BaseModel):
    """An open finding: its exception and what each system said at the last run that saw its key."""

    id: str = Field(description="The exception id.")
    rule: str = Field(description="inventory-sync, inventory-oversell, inventory-stale, invoice-match, ...")
    key: str = Field(description="sku@location, an invoice or order id, or a source.")
    status: str
    owner: str
    severity: str
    assignee: str
    opened_at: datetime
    check: str | list[str] = Field(description="What differs: quantity, oversell, stale; invoice checks failed.")
    summary: str = Field(description="One line: the values side by side.")
    sides: list[dict[str, Any]] = Field(description="Each system's values, side by side.")
    differences: dict[str, Any] = Field(description="The differences and tolerances.")
    differs: bool | None = Field(description="Whether the key differed at the last run that saw it.")
    seen_at: datetime | None = Field(description="When a run last saw the key (null: not since it opened).")
    run_id: str = Field(description="The run whose values these are.")

    @classmethod
    def of(cls, finding: Finding) -> FindingOut:
        """Prefer the last run's values; fall back to the values the exception opened with."""
        record, now = finding.exception, finding.now
        detail: dict[str, Any] = now["detail"] if now else {}
        values: dict[str, Any] = detail.get("values") or record.context
        return cls(
            id=record.id,
            rule=record.rule,
            key=record.key,
            status=record.status,
            owner=record.owner,
            severity=record.severity,
            assignee=record.assignee,
            opened_at=stored_time(record.opened_at),
            check=values.get("check", ""),
            summary=str(detail.get("summary") or record.context.get("summary", "")),
            sides=_sides(values),
            differences=_differences(values),
            differs=bool(now["differs"]) if now else None,
            seen_at=stored_time_or_none(now["seen_at"]) if now else None,
            run_id=str(now["run_id"] if now else record.context.get("run_id", "")),
        )


class FindingPage(BaseModel):
    """Open findings, newest first, and how many there are."""

    items: list[FindingOut]
    total: int


def _sides(values: dict[str, Any]) -> list[dict[str, Any]]:
    if isinstance(values.get("sides"), list):
        return list(values["sides"])
    if "order" in values:  # invoice-match
        sides = []
        if "invoice" in values:
            sides.append({"name": "invoice", **values["invoice"]})
        sides += [
            {"name": "invoiced (order total)", **values.get("invoiced", {})},
            {"name": "order", **values["order"]},
            {"name": "shipped", **values.get("shipped", {})},
        ]
        return sides
    if "last_snapshot" in values:  # inventory-stale
        return [
            {
                "name": values.get("source"),
                "last_snapshot": values["last_snapshot"],
                "age_hours": values.get("age_hours"),
            }
        ]
    return []


def _differences(values: dict[str, Any]) -> dict[str, Any]:
    if isinstance(values.get("differences"), dict):
        return {**values["differences"], "tolerance": values.get("tolerance")}
    keys = ("difference", "tolerance", "age_hours", "stale_after_hours")
    return {k: values[k] for k in keys if k in values}


@router.post(
    "/run",
    summary="Run one reconciliation rule (or every rule) now",
    description="Compares the systems of record, opens, resolves and reopens exceptions, and records the run. "
    "Answers the runs as JSON; with `stream=true`, answers NDJSON: one `progress` line per rule and phase, then a "
    "`result` line with the runs. Roles: operator, admin.",
    responses={
        200: {
            "description": "The runs (JSON), or progress lines then the result (NDJSON with `stream=true`).",
            "content": {NDJSON: {"schema": {"type": "string", "description": "One JSON object a line."}}},
        },
        **UNKNOWN,
        **INVALID,
        **UNAVAILABLE,
    },
    response_model=RunResult,
)
def run(
    _: OperateDep,
    _known: KnownQueryDep,
    service: ReconcileDep,
    rule: Annotated[str | None, Query(description="The rule to run (default: every reconciliation rule).")] = None,
    stream: Annotated[bool, Query(description="Answer NDJSON progress lines, then the result.")] = False,
) -> Any:
    if rule is not None and rule not in service.rules:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no reconciliation rule {rule!r}; rules: {', '.join(service.rules)}"
        )
    if not stream:
        return RunResult(runs=[RunOut.of(r) for r in service.run(rule, trigger="api")])
    return StreamingResponse(_progress_lines(service, rule), media_type=NDJSON)


def _progress_lines(service: ReconcileService, rule: str | None) -> Iterator[bytes]:
    """Run in a worker thread and yield its progress events as they come, then the result."""
    events: queue.Queue[ProgressEvent | None] = queue.Queue()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["runs"] = service.run(rule, trigger="api", progress=events.put)
        except Exception as exc:  # reported in the stream: the status line was sent already
            outcome["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            events.put(None)

    threading.Thread(target=work, name="reconcile-run", daemon=True).start()
    while (event := events.get()) is not None:
        yield orjson.dumps({"event": "progress", **event.as_dict()}) + b"\n"
    if "error" in outcome:
        yield orjson.dumps({"event": "error", "detail": outcome["error"]}) + b"\n"
        return
    result = RunResult(runs=[RunOut.of(r) for r in outcome["runs"]])
    yield orjson.dumps({"event": "result", **result.model_dump(mode="json")}) + b"\n"


@router.get(
    "/runs",
    summary="Reconciliation runs, newest first",
    description="When each rule ran, what it compared, what it opened, resolved and reopened, how long it took and "
    "how it ended. Roles: viewer, operator, finance, admin.",
    responses=INVALID | UNAVAILABLE,
)
def runs(
    _: ReadDep,
    _known: KnownQueryDep,
    service: ReconcileDep,
    rule: Annotated[str | None, Query(description="Only the runs of this rule.")] = None,
    status_: Annotated[Literal["running", "ok", "error"] | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> RunPage:
    return RunPage(items=[RunOut.of(r) for r in service.runs.list(rule, status_, limit)])


@router.get(
    "/findings",
    summary="Open reconciliation findings with each system's values side by side",
    description="The active exceptions of the reconciliation rules (of `rule` when given), newest first, each "
    "with the values the last run saw for its key. Roles: viewer, operator, finance, admin.",
    responses=UNKNOWN | INVALID | UNAVAILABLE,
)
def findings(
    _: ReadDep,
    _known: KnownQueryDep,
    service: ReconcileDep,
    rule: RuleParam = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> FindingPage:
    try:
        found, total = service.findings(rule, limit, offset)
    except UnknownRule as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no reconciliation rule {exc.args[0]!r}") from exc
    return FindingPage(items=[FindingOut.of(f) for f in found], total=total)
