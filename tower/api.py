"""The tower's HTTP API routes that belong to no door: dead letters for now."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel

from collector.http_deps import IngestDep
from kernel.api_auth import AUTH_RESPONSES, AdminDep

router = APIRouter(prefix="/api", tags=["dead letters"], responses=AUTH_RESPONSES)


class DeadLetterPage(BaseModel):
    """A page of dead letters."""

    items: list[dict[str, Any]]
    total: int


class ReplayRequest(BaseModel):
    """Which dead letters to replay: the ids given, or every pending one (of a door)."""

    ids: list[UUID] | None = None  # dead letter ids are UUIDs: another text is a 422, not a store error
    door: str | None = None


class ReplayResult(BaseModel):
    """How many were replayed, and those that still fail with their reasons."""

    replayed: int
    still_failing: list[dict[str, Any]]


@router.get("/deadletters", summary="List dead letters, newest first", description="Roles: admin.")
def list_dead_letters(
    _: AdminDep,
    ingest: IngestDep,
    status: Annotated[str | None, Query(pattern="^(pending|replayed)$")] = None,
    door: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DeadLetterPage:
    items, total = ingest.list_dead_letters(status, door, limit, offset)
    return DeadLetterPage(items=items, total=total)


@router.post(
    "/deadletters/replay", summary="Replay dead letters through their door after a fix", description="Roles: admin."
)
def replay_dead_letters(_: AdminDep, ingest: IngestDep, body: ReplayRequest) -> ReplayResult:
    ids = [str(i) for i in body.ids] if body.ids is not None else None
    report = ingest.replay(ids=ids, door=body.door)
    return ReplayResult(replayed=report.replayed, still_failing=report.still_failing)
