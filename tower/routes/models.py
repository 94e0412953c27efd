"""Answer models the API routes share."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from kernel.exceptions import ExceptionRecord
from kernel.model.text import free_text
from kernel.store.base import stored_time, stored_time_or_none


class ExceptionOut(BaseModel):
    """An exception as the API shows it; times are UTC."""

    id: str
    rule: str
    key: str = Field(description="The business key (order, shipment, invoice id) or the technical subject.")
    kind: str = Field(description="business or technical")
    owner: str
    severity: str
    status: str = Field(description="open, acknowledged or resolved")
    opened_at: datetime
    due_at: datetime | None
    resolved_at: datetime | None
    resolution: str = Field(description="How it was resolved: late (by the engine), fixed, ...; empty while active.")
    resolution_detail: dict[str, Any] = Field(description="E.g. how late, or the resolver's note.")
    assignee: str
    context: dict[str, Any] = Field(description="What the rule found: customer, warehouse, times, counts.")
    updated_at: datetime

    @classmethod
    def of(cls, record: ExceptionRecord) -> ExceptionOut:
        """The API form of a stored exception."""
        detail: Any = orjson.loads(record.resolution_detail) if record.resolution_detail else {}
        return cls(
            id=record.id,
            rule=record.rule,
            key=record.key,
            kind=record.kind,
            owner=record.owner,
            severity=record.severity,
            status=record.status,
            opened_at=stored_time(record.opened_at),
            due_at=stored_time_or_none(record.due_at),
            resolved_at=stored_time_or_none(record.resolved_at),
            resolution=record.resolution,
            resolution_detail=detail if isinstance(detail, dict) else {"value": detail},
            assignee=record.assignee,
            context=record.context,
            updated_at=stored_time(record.updated_at),
        )


class ValidationProblem(BaseModel):
    """One reason a request is invalid."""

    loc: list[str | int] = Field(description="Where: query, body, ... and the field path.")
    msg: str
    type: str


class RequestBody(BaseModel):
    """A request body: a field it does not know is refused (422 naming it), never ignored. A misspelt filter of
    a bulk resolve (`warehuse`) would otherwise widen it to every exception the other filters match."""

    model_config = ConfigDict(extra="forbid")


FreeText = AfterValidator(free_text)
"""Metadata for a note or comment: `Annotated[str, StringConstraints(...), FreeText]`."""


class ValidationErrors(BaseModel):
    """The body of a 422: every reason the request is invalid."""

    detail: list[ValidationProblem]
