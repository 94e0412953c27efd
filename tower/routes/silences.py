"""Silences: create, list and expire (the CLI's `tower silences` uses these routes).

Matching, validation and storage live in `alerting.silences.SilenceStore`; the dispatcher holds
back the alerts a silence matches and posts those still open once it ends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field, StringConstraints, model_validator

from alerting.silences import InvalidSilence, Silence, SilenceNotFound, SilenceStore, parse_duration
from kernel.api_auth import AUTH_RESPONSES, ApiError, OperateDep, ReadDep
from kernel.model.text import Name
from kernel.routing import ExceptionMatch
from tower.insights import rule_infos
from tower.routes.deps import KnownQueryDep, invalid, utc
from tower.routes.models import FreeText, RequestBody

router = APIRouter(prefix="/api/silences", tags=["silences"], responses=AUTH_RESPONSES)

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ApiError, "description": "No silence has that id."}}


def get_silences(request: Request) -> SilenceStore:
    """The silences of the tower's store, on the tower's clock."""
    tower = request.app.state.tower
    dispatcher = getattr(tower, "alerts", None)
    if dispatcher is not None:
        silences: SilenceStore = dispatcher.silences
        return silences
    rules = getattr(tower, "rules", None)  # without a dispatcher: the same check of the rule a silence names
    return SilenceStore(tower.store, tower.clock, rules=[r.id for r in rule_infos(rules)] if rules else ())


SilencesDep = Annotated[SilenceStore, Depends(get_silences)]


class SilenceIn(RequestBody):
    """A new silence: matchers, an end (`ends_at`) or a duration (`duration`), and why."""

    matchers: ExceptionMatch = Field(
        description="Conditions that must all hold (each one value or a list): rule, kind, severity, owner, key, "
        "source (a system covers its paths), warehouse, customer_id, location, sku, order_id, shipment_id, "
        "invoice_id, service, span_name. At least one."
    )
    duration: str | None = Field(None, description="How long from the start: 30m, 2h, 1d, 1w.", examples=["2h"])
    ends_at: datetime | None = Field(None, description="When it ends (instead of a duration).")
    starts_at: datetime | None = Field(None, description="When it starts; default now.")
    comment: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000), FreeText] = Field(
        description="Why (shown with the silence); newlines and tabs, but no other control or bidirectional "
        "formatting character."
    )
    created_by: Name = Field(
        "",
        description="Who asks, at most 200 characters on one line (no control, line separator or bidirectional "
        "formatting character); default: the API token's id.",
    )

    @model_validator(mode="after")
    def _one_end(self) -> SilenceIn:
        if (self.duration is None) == (self.ends_at is None):
            raise ValueError("give either duration or ends_at")
        return self


class SilenceOut(BaseModel):
    """A silence and whether it is pending, active or expired now."""

    id: str
    matchers: dict[str, list[str]]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    created_at: datetime
    expired_at: datetime | None
    expired_by: str
    status: Literal["pending", "active", "expired"]

    @classmethod
    def of(cls, silence: Silence, now: datetime) -> SilenceOut:
        """The API view of a silence at `now`."""
        return cls(**silence.as_dict(now))


class SilencePage(BaseModel):
    """Silences, latest ending first."""

    items: list[SilenceOut]


@router.post(
    "",
    summary="Create a silence",
    description="Alerts of exceptions the matchers match are held back until it ends; those still open are "
    "alerted then. Roles: operator, admin.",
)
def create_silence(body: SilenceIn, who: OperateDep, silences: SilencesDep) -> SilenceOut:
    try:
        duration = parse_duration(body.duration) if body.duration is not None else None
    except ValueError as exc:
        raise invalid(("body", "duration"), str(exc)) from exc
    try:
        silence = silences.create(
            body.matchers,
            # a name given is kept with the token that sent it: the audit says which credential silenced alerts
            created_by=f"{body.created_by} (token {who.token_id})" if body.created_by else who.token_id,
            comment=body.comment,
            duration=duration,
            ends_at=utc(body.ends_at) if body.ends_at else None,
            starts_at=utc(body.starts_at) if body.starts_at else None,
        )
    except InvalidSilence as exc:
        raise invalid(("body",), str(exc)) from exc
    return SilenceOut.of(silence, silences.clock.now())


@router.get("", summary="List silences", description="Roles: viewer, operator, finance, admin.")
def list_silences(
    _: ReadDep,
    _known: KnownQueryDep,
    silences: SilencesDep,
    status: Literal["pending", "active", "expired"] | None = None,
) -> SilencePage:
    now = silences.clock.now()
    return SilencePage(items=[SilenceOut.of(s, now) for s in silences.search(status)])


@router.delete(
    "/{silence_id}",
    summary="Expire a silence now",
    description="Exceptions it held back that are still open are alerted on the dispatcher's next run. "
    "Expiring an expired silence changes nothing. Roles: operator, admin.",
    responses=NOT_FOUND,
)
def expire_silence(silence_id: str, who: OperateDep, silences: SilencesDep) -> SilenceOut:
    try:
        silence = silences.expire(silence_id, actor=who.token_id)
    except SilenceNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no silence with id {silence_id!r}") from exc
    return SilenceOut.of(silence, silences.clock.now())
