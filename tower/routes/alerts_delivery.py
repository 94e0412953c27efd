"""Alert delivery: the Slack delivery log (every attempt) and the outbox's counts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from alerting.outbox import Outbox
from kernel.api_auth import AUTH_RESPONSES, ReadDep

router = APIRouter(prefix="/api/alerts", tags=["alerts"], responses=AUTH_RESPONSES)


def get_outbox(request: Request) -> Outbox:
    """The tower's alert outbox (a reader over its store when the tower has none)."""
    tower = request.app.state.tower
    outbox: Outbox | None = getattr(tower, "outbox", None)
    return outbox if outbox is not None else Outbox(tower.store, tower.clock)


OutboxDep = Annotated[Outbox, Depends(get_outbox)]


class DeliveryOut(BaseModel):
    """One attempt to deliver an alert message (or a decision taken without a call)."""

    at: datetime = Field(description="When (the tower's clock).")
    key: str = Field(description="The message's outbox key.")
    exception_id: str = Field(description="The exception the message is about ('' for digests and uploads).")
    channel: str = Field(description="The channel as the message names it.")
    channel_id: str = Field(description="Slack's channel id, when Slack answered it.")
    action: str = Field(description="post, update, reply or upload: what was sent.")
    mode: str = Field(description="bot (Web API) or webhook.")
    status: str = Field(
        description="ok, retry (another attempt is scheduled), failed (no more attempts) or superseded (an update "
        "replaced by a later one before it was sent)."
    )
    attempt: int = Field(description="The message's attempt number.")
    http_status: int = Field(description="Slack's HTTP status; 0 when no answer came (timeout, connection error).")
    error: str = Field(description="Slack's error, or what went wrong reaching it.")
    note: str = Field(description="Why this attempt went as it did (retry delay, confirmed in history, ...).")
    ts: str = Field(description="The ts of the posted message, when sent.")
    duration_ms: float = Field(description="How long the call took.")


class DeliveryPage(BaseModel):
    """The delivery log, newest first, and how many outbox messages are in each status."""

    items: list[DeliveryOut]
    outbox: dict[str, int] = Field(description="Messages per status: pending, attempting, sent, failed, superseded.")


@router.get(
    "/deliveries",
    summary="The Slack delivery log, newest first",
    description="Every attempt to deliver an alert message: sent, retried (429, 5xx, timeouts) or failed. "
    "Roles: viewer, operator, finance, admin.",
)
def list_deliveries(
    _: ReadDep,
    outbox: OutboxDep,
    exception_id: Annotated[str | None, Query(description="Only the attempts for this exception's messages.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveryPage:
    items = [DeliveryOut(**row) for row in outbox.deliveries(exception_id, limit)]
    return DeliveryPage(items=items, outbox=outbox.counts())
