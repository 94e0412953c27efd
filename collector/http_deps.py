"""FastAPI dependencies of the doors: the ingest service and the caller's ingest grant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from collector.auth import Grant
from collector.service import IngestService


def get_ingest(request: Request) -> IngestService:
    """The ingest service the composition root put on the app."""
    service: IngestService = request.app.state.ingest
    return service


def get_grant(request: Request, ingest: Annotated[IngestService, Depends(get_ingest)]) -> Grant:
    """The ingest token's grant; 401 without a known bearer token."""
    grant = ingest.tokens.authenticate(request.headers.get("authorization"))
    if grant is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid ingest token is required (Authorization: Bearer <token>)",
            {"WWW-Authenticate": "Bearer"},
        )
    return grant


IngestDep = Annotated[IngestService, Depends(get_ingest)]
GrantDep = Annotated[Grant, Depends(get_grant)]
