"""Bearer tokens with roles for the HTTP API: viewer, operator, finance, admin."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from kernel.settings import Role

ROLES: tuple[Role, ...] = ("viewer", "operator", "finance", "admin")


@dataclass(frozen=True)
class Principal:
    """Who is calling the API."""

    role: Role
    token_id: str


def _lookup(request: Request) -> Principal:
    tokens: dict[str, Role] = request.app.state.api_tokens
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token", {"WWW-Authenticate": "Bearer"})
    token = token.strip()
    for candidate, role in tokens.items():
        if hmac.compare_digest(candidate.encode(), token.encode()):
            import hashlib

            return Principal(role=role, token_id=hashlib.sha256(token.encode()).hexdigest()[:12])
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown token", {"WWW-Authenticate": "Bearer"})


def require(*roles: Role) -> Callable[[Request], Principal]:
    """A dependency that admits the given roles (admin is always admitted)."""

    allowed = set(roles) | {"admin"}

    def check(request: Request) -> Principal:
        principal = _lookup(request)
        if principal.role not in allowed:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {principal.role!r} may not do this")
        return principal

    return check


AdminDep = Annotated[Principal, Depends(require("admin"))]
ViewerDep = Annotated[Principal, Depends(require("viewer", "operator", "finance"))]
