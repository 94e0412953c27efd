"""Replays: ask a source to resend what an exception lost, and list the requests and where they stand.

The routes only translate HTTP; what to ask for, signing, retries, waiting and resolving live in
`reconcilers.replay.ReplayService`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from kernel.api_auth import AUTH_RESPONSES, ApiError, OperateDep, ReadDep
from kernel.exceptions import ExceptionNotFound
from kernel.store.base import stored_time, stored_time_or_none
from reconcilers.replay import NotReplayable, ReplayRequest, ReplayService
from tower.routes.deps import KnownQueryDep, utc
from tower.routes.models import FreeText

router = APIRouter(prefix="/api", tags=["replays"], responses=AUTH_RESPONSES)

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ApiError, "description": "No exception has that id."}}
NOT_REPLAYABLE: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ApiError,
        "description": "The exception cannot be replayed: not technical, not active, no source, or no webhook "
        "configured for its source; or, with `again`, the last request for the same thing is still requested or "
        "sent, or satisfied.",
    }
}

Key = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]


def get_replay(request: Request) -> ReplayService:
    """The tower's ReplayService (`app.state.replay`); 503 when the tower runs without it."""
    replay: ReplayService | None = getattr(request.app.state, "replay", None)
    if replay is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "replay is not running in this tower")
    return replay


ReplayDep = Annotated[ReplayService, Depends(get_replay)]


class ReplayBody(BaseModel):
    """What to ask the source to resend; every field is optional."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    keys: list[Key] = Field(
        default_factory=list,
        max_length=1000,
        description="Business keys or event ids to resend (order, shipment, invoice ids, skus). Default: the event "
        "ids of the source's pending dead letters in the range, else every event in the range.",
    )
    from_: datetime | None = Field(
        None, alias="from", description="Start of the range (inclusive). Default: where the exception's gap began."
    )
    to: datetime | None = Field(None, description="End of the range (exclusive). Default: when the exception opened.")
    dead_letters: bool = Field(True, description="Without keys, ask for the source's pending dead letters' events.")
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000), FreeText] = Field(
        "",
        description="Why, for the source's team; sent in the request's reason. Newlines and tabs, but no other "
        "control or bidirectional formatting character.",
    )
    again: bool = Field(
        False,
        description="Ask anew when the last request for the same source, keys and range failed or escalated: a new "
        "request (new idempotency key, derived from the first) supersedes it. 409 while that request is requested or "
        "sent, or once satisfied.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ReplayBody:
        if self.from_ is not None and self.to is not None and utc(self.from_) >= utc(self.to):
            raise ValueError("`from` must be before `to`")
        return self


class ReplayOut(BaseModel):
    """A replay request as the API shows it; times are UTC."""

    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(
        description="The idempotency key: a hash of source, keys and range (asked again: of the first id and round)."
    )
    status: Literal["requested", "sent", "failed", "satisfied", "escalated"] = Field(
        description="requested (to send or retry), sent (events awaited), failed (the webhook refused or never "
        "answered), satisfied (events arrived, exceptions resolved), escalated (they did not arrive in time)."
    )
    exception_ids: list[str] = Field(description="The exceptions this replay answers (the first asked first).")
    rule: str
    source: str = Field(description="The source asked to resend.")
    webhook_source: str = Field(description="The source the webhook is declared for (covers `source`).")
    keys: list[str] = Field(description="Keys asked for; empty: every event in the range.")
    from_: datetime = Field(alias="from", description="Start of the range, inclusive.")
    to: datetime = Field(description="End of the range, exclusive.")
    reason: str
    requested_by: str = Field(description="Who asked: the token id of a person, or `policy`.")
    requested_at: datetime
    attempts: int = Field(description="Webhook calls made so far.")
    next_attempt_at: datetime | None = Field(description="When the next call is due (status requested).")
    sent_at: datetime | None = Field(description="When the webhook accepted it.")
    wait_until: datetime | None = Field(description="Escalation deadline for the replayed events.")
    expected_events: int | None = Field(description="How many events the webhook said it would resend, if it did.")
    closed_at: datetime | None
    responses: list[dict[str, Any]] = Field(description="The last webhook answers: at, attempt, status, body/error.")
    detail: dict[str, Any] = Field(
        description="Evidence (satisfied), the escalation or the failure; `round`, `supersedes` and `superseded_by` "
        "link the requests asked again for the same thing."
    )
    supersedes: str | None = Field(None, description="The failed or escalated request this one asks again for.")
    superseded_by: str | None = Field(None, description="The request that asked again for the same thing.")

    @classmethod
    def of(cls, record: ReplayRequest) -> ReplayOut:
        """The API form of a stored request."""
        return cls(
            id=record.id,
            status=record.status,
            exception_ids=record.exception_ids,
            rule=record.rule,
            source=record.source,
            webhook_source=record.webhook_source,
            keys=record.keys,
            from_=stored_time(record.range_from),
            to=stored_time(record.range_to),
            reason=record.reason,
            requested_by=record.requested_by,
            requested_at=stored_time(record.requested_at),
            attempts=record.attempts,
            next_attempt_at=stored_time_or_none(record.next_attempt_at),
            sent_at=stored_time_or_none(record.sent_at),
            wait_until=stored_time_or_none(record.wait_until),
            expected_events=record.expected_events,
            closed_at=stored_time_or_none(record.closed_at),
            responses=record.responses,
            detail=record.detail,
            supersedes=record.detail.get("supersedes"),
            superseded_by=record.detail.get("superseded_by"),
        )


class ReplayAnswer(BaseModel):
    """The request asked for, whether this call created it (false: the same thing was already asked), and what
    happened in words (with how to ask again when the existing request failed or escalated)."""

    created: bool
    replay: ReplayOut
    message: str = ""


class ReplayPage(BaseModel):
    """A page of replay requests, newest first, and how many match."""

    items: list[ReplayOut]
    total: int


@router.post(
    "/exceptions/{exception_id}/replay",
    summary="Ask the exception's source to resend what was lost (signed webhook call)",
    description="Records the request under its idempotency key and calls the source's webhook now; retries, "
    "the wait for the replayed events, resolution and escalation follow on their own. Asking again for the same "
    "source, keys and range returns the existing request and sends nothing; `again: true` asks anew once that request "
    "failed or escalated (409 while it is requested or sent, or once satisfied). Roles: operator, admin.",
    responses=NOT_FOUND | NOT_REPLAYABLE,
)
def request_replay(
    exception_id: str,
    who: OperateDep,
    replay: ReplayDep,
    body: Annotated[ReplayBody | None, Body()] = None,
) -> ReplayAnswer:
    body = body or ReplayBody()
    try:
        outcome = replay.request(
            exception_id,
            keys=body.keys,
            since=utc(body.from_) if body.from_ else None,
            until=utc(body.to) if body.to else None,
            use_dead_letters=body.dead_letters,
            note=body.note,
            actor=who.token_id,
            again=body.again,
        )
    except ExceptionNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no exception with id {exc.args[0]!r}") from exc
    except NotReplayable as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return ReplayAnswer(created=outcome.created, replay=ReplayOut.of(outcome.request), message=outcome.message)


@router.get(
    "/replays",
    summary="List replay requests, newest first, with filters",
    description="Escalated and failed requests are the ones to act on. Roles: viewer, operator, finance, admin.",
)
def list_replays(
    _: ReadDep,
    _known: KnownQueryDep,
    replay: ReplayDep,
    status: Literal["requested", "sent", "failed", "satisfied", "escalated"] | None = None,
    source: Annotated[str | None, Query(description="A source; covers its paths (wms covers wms/dallas).")] = None,
    exception_id: Annotated[str | None, Query(description="Only the requests answering this exception.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ReplayPage:
    items, total = replay.requests.search(status, source, exception_id, limit, offset)
    return ReplayPage(items=[ReplayOut.of(r) for r in items], total=total)
