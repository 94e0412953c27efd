"""SLA: compliance per rule and period, evaluate now, backtest a rule over stored history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kernel.api_auth import AUTH_RESPONSES, ApiError, OperateDep, ReadDep
from kernel.clock import Clock
from kernel.store.base import stored_time
from sla_rules.loader import sla_rule_problems
from sla_rules.model import SlaRule
from sla_rules.service import SlaService
from sla_rules.summary import Group, Order, sla_summary
from tower.routes.deps import ClockDep, KnownQueryDep, SlaDep, StoreDep, invalid, utc
from tower.routes.models import RequestBody, ValidationErrors

router = APIRouter(prefix="/api/sla", tags=["sla"], responses=AUTH_RESPONSES)

DEFAULT_PERIOD = timedelta(days=7)
PERIOD_ERROR: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationErrors, "description": "A parameter or the body is invalid, or `from` is not before `to`."}
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ApiError, "description": "The tower runs without the SLA engine."}
}

From = Annotated[
    datetime | None, Query(alias="from", description="Start of the period, RFC 3339 (default: `to` minus 7 days).")
]
To = Annotated[datetime | None, Query(alias="to", description="End of the period, excluded (default: now).")]


def period(since: datetime | None, until: datetime | None, clock: Clock, where: str) -> tuple[datetime, datetime]:
    """[since, until) in UTC with the defaults (the last 7 days); 422 unless since < until."""
    end = utc(until) if until else clock.now()
    if since is None and end - datetime.min.replace(tzinfo=UTC) < DEFAULT_PERIOD:  # the default start: before year 1
        raise invalid((where, "to"), "`to` is too early for the default period of 7 days")
    start = utc(since) if since else end - DEFAULT_PERIOD
    if start >= end:
        raise invalid((where, "from"), "`from` must be before `to`")
    return start, end


class RuleCompliance(BaseModel):
    """The cases of one rule that started in the period, by status."""

    rule: str
    cases: int
    met: int
    late: int
    breached: int
    pending: int = Field(description="Cases with no end and the deadline ahead, those at risk included.")
    at_risk: int = Field(description="Pending cases inside the rule's warning window.")
    compliance: float | None = Field(description="met / (met + late + breached); null when no case is decided.")


class GroupCompliance(RuleCompliance):
    """The cases of one rule and one warehouse (or customer) that started in the period, by status."""

    group: str = Field(description="The warehouse or customer of these cases ('' for cases without one).")


class SlaComplianceBy(BaseModel):
    """Compliance per rule and warehouse (or customer) for cases started in [from, to)."""

    since: datetime = Field(serialization_alias="from")
    until: datetime = Field(serialization_alias="to")
    by: Group
    groups: list[GroupCompliance]


class SlaSummary(BaseModel):
    """Compliance per rule for cases started in [from, to)."""

    since: datetime = Field(serialization_alias="from")
    until: datetime = Field(serialization_alias="to")
    rules: list[RuleCompliance]


class RuleEvaluation(BaseModel):
    """What one evaluation did for one rule (the engine may add more fields)."""

    model_config = ConfigDict(extra="allow")

    cases_changed: int
    opened: list[str] = Field(description="Ids of the exceptions opened.")
    resolved: list[str] = Field(description="Ids of the exceptions resolved.")
    duration_ms: float
    mode: str | None = Field(None, description="SLA rules: full or incremental.")
    keys_evaluated: int | None = Field(None, description="SLA rules: the keys (cases) recomputed.")


class Evaluation(BaseModel):
    """What one evaluation of every rule changed."""

    model_config = ConfigDict(extra="allow")

    full: bool = Field(False, description="Whether every case was re-evaluated.")
    evaluated_at: datetime | None
    duration_ms: float
    cases_changed: int
    opened: int = Field(description="Exceptions opened, over every rule.")
    resolved: int = Field(description="Exceptions resolved, over every rule.")
    rules: dict[str, RuleEvaluation]
    errors: dict[str, str] = Field(description="Evaluators that failed, with their error.")


CaseStatus = Literal["met", "late", "breached", "pending", "at_risk"]


class BacktestRequest(RequestBody):
    """A rule (as in a rule file) and the period of stored history to run it over."""

    rule: dict[str, Any] = Field(description="The rule mapping, as written in a rule file (type sla).")
    since: datetime | None = Field(None, alias="from", description="Default: `to` minus 7 days.")
    until: datetime | None = Field(None, alias="to", description="Default: now.")
    statuses: list[CaseStatus] | None = Field(
        None, description="List only the cases with one of these statuses (default: every case); counts cover all."
    )
    limit: int = Field(1000, ge=0, le=100_000, description="Cases listed at most, the earliest started first.")


class BacktestCase(BaseModel):
    """One case the rule would have had, with its status as of the end of the period."""

    key: str
    started_at: datetime
    ended_at: datetime | None
    due_at: datetime
    status: str = Field(description="met, late, breached, pending or at_risk")
    customer_id: str
    warehouse: str
    source: str

    @classmethod
    def of(cls, case: dict[str, Any]) -> BacktestCase:
        """A case as the engine answers it (stored time texts)."""
        times = {
            name: stored_time(case[name]) if isinstance(case.get(name), str) and case[name] else case.get(name)
            for name in ("started_at", "ended_at", "due_at")
        }
        return cls.model_validate({**case, **times})


class SideMatches(BaseModel):
    """What the rule's sides matched among the period's events: a rule that finds nothing is told from a quiet
    period (a misspelt type, a source filter no event meets, a key the events do not carry)."""

    start_events: int = Field(description="Events of the period matching the start side.")
    start_keyed: int = Field(description="Of those, the ones carrying the rule's key (each starts a case).")
    end_events: int = Field(description="Events of the period matching the end side.")
    end_keyed: int = Field(description="Of those, the ones carrying the rule's key.")
    types: list[tuple[str, int]] = Field(description="The period's event types with their counts, most first (20).")


class BacktestResult(BaseModel):
    """The cases the rule would have found, without touching live exceptions."""

    rule: str
    since: datetime = Field(serialization_alias="from")
    until: datetime = Field(serialization_alias="to")
    cases: list[BacktestCase] = Field(description="The cases with the asked statuses, at most `limit`.")
    listed_of: int = Field(description="How many cases have the asked statuses: more than listed when cut by `limit`.")
    counts: dict[str, int] = Field(description="Every case by status.")
    matched: SideMatches


@router.get(
    "/summary",
    summary="SLA compliance per rule for cases started in a period",
    description="Every rule the engine runs is listed, with zeros when it had no case. "
    "Roles: viewer, operator, finance, admin.",
    responses=PERIOD_ERROR,
)
def summary(
    _: ReadDep,
    _known: KnownQueryDep,
    request: Request,
    store: StoreDep,
    clock: ClockDep,
    since: From = None,
    until: To = None,
) -> SlaSummary:
    start, end = period(since, until, clock, "query")
    rows = sla_summary(store, start, end, rules=_configured_rules(request))
    return SlaSummary(since=start, until=end, rules=[RuleCompliance(**row.as_dict()) for row in rows])


@router.get(
    "/compliance",
    summary="SLA compliance per rule and warehouse, or per rule and customer, for cases started in a period",
    description="One row per rule and value that had cases (the case's warehouse or customer: its first start"
    " event's, else the first of its key's events that has one), ordered by rule and value, or `sort=worst`: the"
    " lowest share met first (none decided last), then the most breached; at most `limit`. "
    "Roles: viewer, operator, finance, admin.",
    responses=PERIOD_ERROR,
)
def compliance_by(
    _: ReadDep,
    _known: KnownQueryDep,
    store: StoreDep,
    clock: ClockDep,
    by: Annotated[Group, Query(description="`warehouse` or `customer`.")],
    since: From = None,
    until: To = None,
    rule: Annotated[str | None, Query(description="One rule; default every rule.")] = None,
    sort: Annotated[Order, Query(description="`group` (rule, value) or `worst` first.")] = "group",
    limit: Annotated[int, Query(ge=1, le=100_000, description="Rows at most.")] = 1000,
) -> SlaComplianceBy:
    start, end = period(since, until, clock, "query")
    rows = sla_summary(store, start, end, by=by, order=sort, limit=limit, rule=rule)
    groups = [GroupCompliance(**row.as_dict()) for row in rows]
    return SlaComplianceBy(since=start, until=end, by=by, groups=groups)


def _configured_rules(request: Request) -> list[str]:
    """The ids of the rules the SLA engine runs; none when it does not run (the summary still reads the cases)."""
    sla: SlaService | None = getattr(request.app.state, "sla", None)
    try:
        return [rule.id for rule in sla.engine.rules] if sla else []
    except LookupError:
        return []


@router.post(
    "/evaluate",
    summary="Evaluate every rule now and answer what changed",
    description="Incremental by default (what changed since the last run); `full=true` re-evaluates every case. "
    "An evaluator that fails is named in `errors`; the others still run. Roles: operator, admin.",
    responses=UNAVAILABLE,
)
def evaluate(
    _: OperateDep,
    _known: KnownQueryDep,
    sla: SlaDep,
    full: Annotated[bool, Query(description="Re-evaluate every case, not only what changed.")] = False,
) -> Evaluation:
    report = sla.evaluate(full=full)
    return Evaluation.model_validate(
        {**report.as_dict(), "evaluated_at": utc(report.evaluated_at) if report.evaluated_at else None}
    )


@router.post(
    "/backtest",
    summary="Run a rule over stored history and answer the cases it would have found",
    description="Writes nothing: no case, no exception. Roles: operator, admin.",
    responses=PERIOD_ERROR | UNAVAILABLE,
)
def backtest(_: OperateDep, sla: SlaDep, clock: ClockDep, body: BacktestRequest) -> BacktestResult:
    kind = body.rule.get("type", "sla")
    if kind != "sla":
        raise invalid(("body", "rule", "type"), f"only sla rules can be backtested, this is a {kind} rule")
    try:
        rule = SlaRule.model_validate(body.rule)
    except ValidationError as exc:
        raise invalid_rule(exc) from exc
    problems = sla_rule_problems(rule)  # as rules check and the tower's start refuse them
    if problems:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "rule", *loc), "msg": msg, "input": None} for loc, msg in problems]
        )
    start, end = period(body.since, body.until, clock, "body")
    try:
        engine = sla.engine  # LookupError when the tower runs no SLA engine
        cases, counts = engine.backtest(rule, start, end, body.statuses, body.limit)
        matched = engine.side_matches(rule, start, end)
    except LookupError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    asked = counts if body.statuses is None else {k: n for k, n in counts.items() if k in body.statuses}
    return BacktestResult(
        rule=rule.id,
        since=start,
        until=end,
        cases=[BacktestCase.of(case) for case in cases],
        listed_of=sum(asked.values()),
        counts=counts,
        matched=SideMatches.model_validate(matched),
    )


def invalid_rule(exc: ValidationError) -> RequestValidationError:
    """The rule's validation errors as a 422, located in the body."""
    errors = exc.errors(include_url=False, include_context=False)
    return RequestValidationError(
        [{**error, "loc": ("body", "rule", *error["loc"]), "input": None} for error in errors]
    )
