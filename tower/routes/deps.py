"""FastAPI dependencies of the API routes: the services the composition root puts on `app.state`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from kernel.clock import Clock
from kernel.exceptions import ExceptionStore
from kernel.store import Store
from sla_rules.loader import RuleSet
from sla_rules.service import SlaService


def _state(request: Request, name: str, what: str) -> Any:
    value = getattr(request.app.state, name, None)
    if value is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"{what} is not running in this tower")
    return value


def get_exceptions(request: Request) -> ExceptionStore:
    """The process's ExceptionStore (`app.state.exceptions`)."""
    exceptions: ExceptionStore = _state(request, "exceptions", "the exception store")
    return exceptions


def get_sla(request: Request) -> SlaService:
    """The SLA service (`app.state.sla`); 503 when the tower runs without it."""
    sla: SlaService = _state(request, "sla", "the SLA engine")
    return sla


def get_store(request: Request) -> Store:
    """The tower's store."""
    store: Store = request.app.state.tower.store
    return store


def get_rules(request: Request) -> RuleSet:
    """The rules and routing the tower runs with."""
    rules: RuleSet = request.app.state.tower.rules
    return rules


def get_clock(request: Request) -> Clock:
    """The tower's clock (every default period is relative to it)."""
    clock: Clock = request.app.state.tower.clock
    return clock


ExceptionsDep = Annotated[ExceptionStore, Depends(get_exceptions)]
SlaDep = Annotated[SlaService, Depends(get_sla)]
StoreDep = Annotated[Store, Depends(get_store)]
ClockDep = Annotated[Clock, Depends(get_clock)]
RulesDep = Annotated[RuleSet, Depends(get_rules)]


def utc(value: datetime) -> datetime:
    """An aware UTC datetime (a naive one is taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def invalid(where: tuple[str, ...], message: str) -> RequestValidationError:
    """A 422 in FastAPI's validation-error shape, for checks a parameter type cannot express."""
    return RequestValidationError([{"type": "value_error", "loc": where, "msg": message, "input": None}])


def _query_names(dependant: Dependant) -> frozenset[str]:
    """The query parameters a route (its dependencies included) takes, by the name a caller writes."""
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return frozenset(names)


def known_query(request: Request) -> None:
    """A 422 naming each query parameter the route does not take: a misspelt filter (`warehose=DAL`) or period
    (`start=` for `from=`) was ignored, so the list, the export or the summary answered more than was asked."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    allowed = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        takes = ", ".join(sorted(allowed))
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", name),
                    "msg": f"unknown parameter {name!r}; this route takes {takes}",
                    "input": request.query_params.get(name),
                }
                for name in unknown
            ]
        )


# After the token's dependency in a route's parameters: an unknown token is a 401 first.
KnownQueryDep = Annotated[None, Depends(known_query)]
