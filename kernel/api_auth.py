"""Bearer tokens with roles for the HTTP API: viewer, operator, finance, admin.

Routes declare who may call them with one of the Annotated aliases below; the alias both checks
the token (401 without one or with an unknown one, 403 for a role that may not) and hands the
route the caller as a `Principal`:

- `ReadDep`: viewer, operator, finance, admin: reading exceptions, timelines and SLA summaries;
- `OperateDep`: operator, admin: acting on exceptions, evaluating and backtesting rules;
- `FinanceDep`: finance, admin: finance reports;
- `AdminDep`: admin only: dead letters and anything that changes the tower itself.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from pydantic import BaseModel

from kernel.settings import Role

ROLES: tuple[Role, ...] = ("viewer", "operator", "finance", "admin")

READ_ROLES: frozenset[Role] = frozenset(ROLES)
OPERATE_ROLES: frozenset[Role] = frozenset({"operator", "admin"})
FINANCE_ROLES: frozenset[Role] = frozenset({"finance", "admin"})
ADMIN_ROLES: frozenset[Role] = frozenset({"admin"})


@dataclass(frozen=True)
class Principal:
    """Who is calling the API: the token's role and a stable, non-secret id of the token (for audit trails)."""

    role: Role
    token_id: str


class ApiError(BaseModel):
    """The body of every error the API answers itself: a readable message."""

    detail: str


# OpenAPI documentation of the answers every authenticated route may give.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ApiError, "description": "No bearer token, or an unknown one."},
    403: {"model": ApiError, "description": "The token's role may not use this route."},
}


def token_id(token: str) -> str:
    """A short hash naming a token in audit trails without revealing it."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def token_grants(tokens: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Ingest token id -> the sources it may send: whose name a refused record of the token is counted under."""
    return {token_id(token): list(sources) for token, sources in tokens.items()}


def _lookup(request: Request) -> Principal:
    tokens: dict[str, Role] = request.app.state.api_tokens
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    token = token.strip()
    found: Role | None = None
    # Compare against every token so the time taken does not tell which prefix matched.
    for candidate, role in tokens.items():
        if hmac.compare_digest(candidate.encode(), token.encode()):
            found = role
    if found is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown token", {"WWW-Authenticate": "Bearer"})
    return Principal(role=found, token_id=token_id(token))


def require(*roles: Role) -> Callable[[Request], Principal]:
    """A dependency that admits the given roles (admin is always admitted)."""

    allowed = set(roles) | {"admin"}

    def check(request: Request) -> Principal:
        principal = _lookup(request)
        if principal.role not in allowed:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {principal.role!r} may not do this")
        return principal

    return check


ReadDep = Annotated[Principal, Depends(require(*READ_ROLES))]
OperateDep = Annotated[Principal, Depends(require(*OPERATE_ROLES))]
FinanceDep = Annotated[Principal, Depends(require(*FINANCE_ROLES))]
AdminDep = Annotated[Principal, Depends(require(*ADMIN_ROLES))]
# The name issue 2 used for read access.
ViewerDep = ReadDep
