"""What the dashboard reads besides exceptions: who am I, the overview, facets, source health, SLA trend and breaches.

The routes parse parameters and answer the read models of `tower.insights`; every one is read-only
(viewer, operator, finance, admin).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from kernel.api_auth import AUTH_RESPONSES, FINANCE_ROLES, OPERATE_ROLES, ReadDep, token_grants
from kernel.settings import Role
from sla_rules.model import SlaRule
from tower import insights
from tower.routes.deps import ClockDep, KnownQueryDep, RulesDep, StoreDep, invalid, utc
from tower.routes.models import ValidationErrors
from tower.routes.reports import ReportsDep

router = APIRouter(prefix="/api", tags=["overview"], responses=AUTH_RESPONSES)

READ_ROLES_TEXT = "Roles: viewer, operator, finance, admin."
INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationErrors, "description": "A parameter is invalid (`loc` says which)."}
}
SEVERITIES = ("critical", "high", "medium", "low")


class Identity(BaseModel):
    """The caller: its role, the id audit trails name it by, and what the role may do."""

    role: Role
    token_id: str = Field(description="A short hash of the token; audit trails name the caller by it.")
    may_act: bool = Field(description="May acknowledge, assign, resolve and add notes (operator, admin).")
    may_report: bool = Field(description="May download finance reports (finance, admin).")
    now: datetime = Field(description="The tower's clock.")


class RuleFacet(insights.RuleInfo):
    """A configured rule, for filters and labels; with the finding rules a reconciliation rule opens besides its own
    id (inventory-oversell, inventory-stale)."""

    # in the exception's answer and the alerts, not in the facets
    runbook: str | None = Field(None, exclude=True)
    opened_by: str = Field("", exclude=True)


class Facets(BaseModel):
    """The values the exception filters take: owners, rules, statuses, kinds, severities."""

    owners: list[str]
    rules: list[RuleFacet]
    statuses: list[str]
    kinds: list[str]
    severities: list[str]


@router.get(
    "/whoami",
    summary="The caller's role and what it may do",
    description=f"The dashboard signs in with this. {READ_ROLES_TEXT}",
)
def whoami(who: ReadDep, clock: ClockDep) -> Identity:
    return Identity(
        role=who.role,
        token_id=who.token_id,
        may_act=who.role in OPERATE_ROLES,
        may_report=who.role in FINANCE_ROLES,
        now=clock.now(),
    )


@router.get(
    "/facets",
    summary="Owners, rules and the other values exceptions are filtered by",
    description=f"From the rule files and the routing file the tower runs with. {READ_ROLES_TEXT}",
)
def facets(_: ReadDep, ruleset: RulesDep) -> Facets:
    rules = insights.rule_infos(ruleset)  # the rule files' rules and the reconcilers' other finding rules
    owners = set(ruleset.routing.owners) | {rule.owner for rule in rules} | {"integration"}
    owners |= {route.owner for route in ruleset.routing.routes}
    return Facets(
        owners=sorted(owners),
        rules=[RuleFacet.model_validate(r.model_dump()) for r in rules],
        statuses=["open", "acknowledged", "resolved"],
        kinds=["business", "technical"],
        severities=list(SEVERITIES),
    )


@router.get(
    "/overview",
    summary="Active exceptions by owner and severity, SLA compliance, at-risk cases, what changed",
    description="Compliance per SLA rule for cases started today, in the last 7 and the last 30 days (calendar "
    "days in `tz`, today included); "
    "the pending cases inside their warning window, due soonest first; the changes to exceptions since "
    "`since` (default: 24 hours ago); the active exceptions of rules nothing evaluates any more (`unevaluated`); "
    "the SLA rules without a case in 7 days although events of their start types arrived (`idle`). "
    f"{READ_ROLES_TEXT}",
    responses=INVALID,
)
def get_overview(
    _: ReadDep,
    _known: KnownQueryDep,
    request: Request,
    ruleset: RulesDep,
    store: StoreDep,
    clock: ClockDep,
    since: Annotated[
        datetime | None, Query(description="Changes at or after this moment, RFC 3339 (default: 24 hours ago).")
    ] = None,
    tz: Annotated[str, Query(description="The IANA time zone `today` starts in.")] = "UTC",
    top: Annotated[int, Query(ge=1, le=500, description="At-risk cases and latest changes to list.")] = 20,
) -> insights.Overview:
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a name too long for a file name
        raise invalid(("query", "tz"), f"unknown time zone {tz[:100]!r}") from exc
    now = clock.now()
    sla_rules = [r for r in ruleset.enabled if isinstance(r, SlaRule)]
    changed_since = utc(since) if since else now - timedelta(hours=24)
    tower = request.app.state.tower
    return insights.overview(
        store,
        now,
        zone.key,
        changed_since,
        rules=[r.id for r in sla_rules],
        top=top,
        evaluated=tower.evaluated_rules,
        starts={r.id: r.start.types for r in sla_rules},
    )


@router.get(
    "/sources/health",
    summary="Integration health per source: spans and events per minute, error rate, p95 latency, last seen",
    description="Over the last `minutes` (business time: span start, event time). Last seen looks back "
    f"{insights.HEALTH_LOOK_BACK.days} days. {READ_ROLES_TEXT}",
    responses=INVALID,
)
def sources_health(
    _: ReadDep,
    _known: KnownQueryDep,
    request: Request,
    store: StoreDep,
    clock: ClockDep,
    minutes: Annotated[float, Query(ge=1, le=24 * 60, description="The window, in minutes (1 to 1440).")] = 15,
) -> insights.SourcesHealth:
    tokens = token_grants(request.app.state.tower.settings.ingest.tokens)
    return insights.sources_health(store, clock.now(), timedelta(minutes=minutes), tokens)


@router.get(
    "/sla/trend",
    summary="SLA compliance per rule and day",
    description="Cases started on each UTC day of the last `days` (today included, whole days: `to` is the end"
    f" of today), by status. {READ_ROLES_TEXT}",
    responses=INVALID,
)
def sla_trend(
    _: ReadDep,
    _known: KnownQueryDep,
    store: StoreDep,
    clock: ClockDep,
    rule: Annotated[str | None, Query(description="One rule; default every rule.")] = None,
    days: Annotated[int, Query(ge=1, le=366)] = 30,
) -> insights.SlaTrend:
    return insights.sla_trend_days(store, clock.now(), days, rule=rule)


@router.get(
    "/sla/breaches",
    summary="How late SLA breaches were, and the customers and warehouses with the most",
    description="Breaches whose deadline falls in [from, to), counted as the finance report counts them now (its "
    "rows): `late` ones are closed (ended after their deadline, or their exception resolved by a person) and "
    "bucketed by how late they closed, `breached` ones are still open and bucketed by how late they are now; a case "
    "still pending past its deadline is a breach. A `from`/`to` without an offset is in the report time zone "
    "(TOWER_REPORTS_TIMEZONE), as for the report. " + READ_ROLES_TEXT,
    responses=INVALID,
)
def sla_breaches(
    _: ReadDep,
    _known: KnownQueryDep,
    store: StoreDep,
    clock: ClockDep,
    reports: ReportsDep,
    rule: Annotated[str | None, Query(description="One rule; default every rule.")] = None,
    since: Annotated[
        datetime | None, Query(alias="from", description="Start of the period (default: `to` minus 30 days).")
    ] = None,
    until: Annotated[
        datetime | None, Query(alias="to", description="End of the period, excluded (default: now).")
    ] = None,
    top: Annotated[int, Query(ge=1, le=100, description="Customers and warehouses to list.")] = 10,
) -> insights.BreachStats:
    now = clock.now()

    def aware(at: datetime) -> datetime:
        return utc(reports.local(at))

    try:
        end = aware(until) if until else now
        given = aware(since) if since else None
    except OverflowError as exc:  # a local time at the edge of year 1 or 9999
        raise invalid(("query", "from" if until is None else "to"), f"the period is out of range: {exc}") from exc
    if given is None and end - datetime.min.replace(tzinfo=UTC) < timedelta(days=30):  # default start before year 1
        raise invalid(("query", "to"), "`to` is too early for the default period of 30 days")
    start = given or end - timedelta(days=30)
    if start >= end:
        raise invalid(("query", "from"), "`from` must be before `to`")
    return insights.sla_breaches(store, start, end, now, rule=rule, top=top)
