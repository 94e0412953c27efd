"""Alert delivery: the Slack delivery log (every attempt) and the outbox's counts."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, BaseModel, Field

from alerting.outbox import Outbox
from kernel.api_auth import AUTH_RESPONSES, OperateDep, ReadDep
from tower.routes.deps import ClockDep, KnownQueryDep
from tower.routes.models import RequestBody

logger = logging.getLogger(__name__)

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
    _known: KnownQueryDep,
    outbox: OutboxDep,
    exception_id: Annotated[str | None, Query(description="Only the attempts for this exception's messages.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveryPage:
    items = [DeliveryOut(**row) for row in outbox.deliveries(exception_id, limit)]
    return DeliveryPage(items=items, outbox=outbox.counts())


class ResendIn(RequestBody):
    """Which failed messages to send again."""

    channel: str = Field(min_length=1, description="The channel as alerts name it (`#ops-warehouse` or an id).")
    since: AwareDatetime | None = Field(
        None, description="Only messages enqueued since then (default: the last 24 hours of the tower's clock)."
    )


class ResendOut(BaseModel):
    """What was queued again."""

    requeued: int = Field(description="Messages back in the outbox, sent in their first order by `alerts-send`.")
    keys: list[str] = Field(description="Their outbox keys.")
    left_failed: int = Field(
        description="Failed posts left as they are: a later message of each already took its place in the channel."
    )
    known_channel: bool = Field(
        description="False when no message has been addressed to this channel yet: nothing to resend there (the CLI"
        " tells a channel of the routing file from a misspelt name)."
    )


@router.post(
    "/resend",
    summary="Send a channel's failed messages again",
    description="After fixing a channel whose messages failed (created it, invited the bot: the `slack-delivery` "
    "exception), put its failed messages back in the outbox, oldest first. Roles: operator, admin.",
)
def resend(principal: OperateDep, outbox: OutboxDep, clock: ClockDep, body: ResendIn) -> ResendOut:
    since = body.since or clock.now() - timedelta(hours=24)
    requeued, left = outbox.requeue_failed(body.channel, since)
    logger.info(
        "%d failed Slack messages to %s queued again by token %s (%s)",
        len(requeued),
        body.channel,
        principal.token_id,
        principal.role,
    )
    return ResendOut(
        requeued=len(requeued),
        keys=[e.key for e in requeued],
        left_failed=left,
        known_channel=bool(requeued) or outbox.knows_channel(body.channel),
    )
