"""The tower's HTTP API routes that belong to no door: dead letters (list, replay, discard)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field, field_validator

from collector.deadletters import Cursor
from collector.http_deps import IngestDep
from collector.pipeline import Overloaded
from collector.service import REPLAY_LIMIT
from kernel.api_auth import AUTH_RESPONSES, AdminDep
from tower.routes.deps import KnownQueryDep
from tower.routes.models import FreeText

router = APIRouter(prefix="/api", tags=["dead letters"], responses=AUTH_RESPONSES)

REPLAY_MAX_LIMIT = 5000  # letters one replay call may take: the answer comes in a few seconds, a discard waits less


class DeadLetterPage(BaseModel):
    """A page of dead letters."""

    items: list[dict[str, Any]]
    total: int


class ReplayRequest(BaseModel):
    """Which dead letters to replay: the ids given, or the pending ones (of a door, of a source and its paths, of
    the token that sent them) a call at a time: `limit` of them after `after` (the `cursor` of the previous answer),
    oldest first."""

    # dead letter ids are UUIDs: another text is a 422, not a store error
    ids: list[UUID] | None = Field(None, max_length=REPLAY_MAX_LIMIT)
    door: str | None = None
    source: str | None = None
    token_id: str | None = Field(
        None,
        max_length=64,
        description="Only the letters this ingest token sent (their `token_id`), whatever source they claimed.",
    )
    limit: int = Field(
        REPLAY_LIMIT,
        ge=1,
        le=REPLAY_MAX_LIMIT,
        description="Pending letters this call replays at most (and 64 MiB of raw records); not with `ids`.",
    )
    after: str | None = Field(
        None, description="The previous answer's `cursor`: go on with the pending letters after it."
    )

    @field_validator("after")
    @classmethod
    def _a_cursor(cls, value: str | None) -> str | None:
        if value:
            Cursor.parse(value)  # its ValueError is a 422 naming the field
        return value


class DiscardRequest(BaseModel):
    """The pending dead letters to give up on, and why (kept with each)."""

    ids: list[UUID] = Field(min_length=1, max_length=1000)
    note: Annotated[str, FreeText] = Field(
        min_length=1, max_length=1000, description="Why they are given up on (kept with each letter); free text."
    )

    @field_validator("note")
    @classmethod
    def _said(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("say why the records are given up on")
        return value.strip()


class DiscardResult(BaseModel):
    """How many were discarded; those named that were not pending, with their status (or `unknown`)."""

    discarded: int
    not_pending: list[dict[str, str]]


class ReplayResult(BaseModel):
    """How many were replayed, those that still fail with their reasons (they stay pending with the new reason),
    and those named that were not pending with their status (or `unknown`). Without `ids`: how many pending letters
    matched (after `after`), how many of them remain for the next call, and the `cursor` it passes as `after`."""

    replayed: int
    still_failing: list[dict[str, Any]]
    not_pending: list[dict[str, str]] = Field(default_factory=list)
    matched: int
    remaining: int
    cursor: str | None = None


@router.get("/deadletters", summary="List dead letters, newest first", description="Roles: admin.")
def list_dead_letters(
    _: AdminDep,
    _known: KnownQueryDep,
    ingest: IngestDep,
    status: Annotated[str | None, Query(pattern="^(pending|replayed|discarded)$")] = None,
    door: str | None = None,
    source: Annotated[
        str | None,
        Query(
            description="A source; its paths match too (wms finds wms/dallas), and the letters that claimed no "
            "source (a body that could not be read) sent by a token granted it."
        ),
    ] = None,
    token_id: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Only the letters this ingest token sent (their `token_id`), whatever source they claimed.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DeadLetterPage:
    items, total = ingest.list_dead_letters(status, door, limit, offset, source, token_id)
    return DeadLetterPage(items=items, total=total)


@router.get(
    "/deadletters/{letter_id}",
    summary="One dead letter with its whole raw record",
    description="Roles: admin. The list cuts each raw record to a preview (`raw_truncated`); this answers it whole.",
    responses={404: {"description": "No dead letter has this id."}},
)
def get_dead_letter(_: AdminDep, ingest: IngestDep, letter_id: UUID) -> dict[str, Any]:
    found = ingest.dead_letter(str(letter_id))
    if found is None:
        raise HTTPException(404, f"no dead letter {letter_id}")
    return found


@router.post(
    "/deadletters/replay",
    summary="Replay dead letters through their door after a fix",
    description="Roles: admin. Without `ids`, one call replays at most `limit` pending letters (oldest first): "
    "while `remaining` is above 0, call again with `after` set to the answer's `cursor` (`tower deadletters "
    "replay` does). 503 with Retry-After when the writer is overloaded before anything was replayed.",
    responses={503: {"description": "The writer is overloaded; retry after Retry-After seconds."}},
)
def replay_dead_letters(_: AdminDep, ingest: IngestDep, body: ReplayRequest) -> ReplayResult:
    ids = [str(i) for i in body.ids] if body.ids is not None else None
    after = Cursor.parse(body.after) if body.after else None
    try:
        report = ingest.replay(
            ids=ids, door=body.door, limit=body.limit, source=body.source, after=after, token_id=body.token_id
        )
    except Overloaded as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after)}) from exc
    return ReplayResult(
        replayed=report.replayed,
        still_failing=report.still_failing,
        not_pending=report.not_pending,
        matched=report.matched,
        remaining=report.remaining,
        cursor=report.cursor,
    )


@router.post(
    "/deadletters/discard",
    summary="Give up on pending dead letters, saying why",
    description="Roles: admin. Each letter is kept, marked `discarded` with the caller's token id and the note; "
    "replayed, already discarded and unknown ids are listed in `not_pending` and not changed.",
)
def discard_dead_letters(principal: AdminDep, ingest: IngestDep, body: DiscardRequest) -> DiscardResult:
    report = ingest.discard([str(i) for i in body.ids], body.note, principal.token_id)
    return DiscardResult(discarded=report.discarded, not_pending=report.not_pending)
