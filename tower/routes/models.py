"""Answer models the API routes share."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from kernel.exceptions import ExceptionRecord
from kernel.model.text import ACTED_ON, BIDI
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


# What people type into request bodies ends up in the CLI's tables, the audit trail, Slack text and CSV exports.
# A name is one line: no control character (C0, DEL, C1: newline, tab, NUL, ESC, NEL, CSI, ...), no line or
# paragraph separator, no bidirectional override or isolate (they can make one name display as another). Free text
# (a note, a comment) keeps its newlines and tabs (and line separators; a CR is made a newline), but no other control
# character (NUL, ESC, DEL, C1) nor bidirectional override or isolate.
_NOT_IN_A_NAME = ACTED_ON
_NOT_IN_TEXT = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{BIDI}]")  # newlines and tabs kept


def _described(char: str) -> str:
    """A character a request body may not hold, named by its code point and what it is."""
    code = ord(char)
    if code in (0x2028, 0x2029):
        what = "line separator" if code == 0x2028 else "paragraph separator"
    elif 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
        what = "bidirectional formatting character"
    else:
        what = "control character"
    return f"{what} U+{code:04X}"


def one_line(value: str) -> str:
    """A name shown on one line; ValueError (a 422 at the field) naming the first character it may not hold."""
    found = _NOT_IN_A_NAME.search(value)
    if found:
        raise ValueError(
            f"contains the {_described(found.group())}: a name is one line of text, without control, line "
            "separator or bidirectional formatting characters"
        )
    return value


def free_text(value: str) -> str:
    """A note or comment, newlines and tabs kept, Windows (CR LF) and old Mac (CR) line ends made newlines; ValueError
    (a 422 at the field) naming the first other control character (NUL, ESC, DEL, C1) or bidirectional override or
    isolate in it."""
    # a pasted Windows text is not refused; a lone CR, which a terminal would use to overwrite the line, starts one
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    found = _NOT_IN_TEXT.search(value)
    if found:
        raise ValueError(
            f"contains the {_described(found.group())}: text may hold newlines and tabs, but no other control "
            "character and no bidirectional formatting character"
        )
    return value


Name = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(one_line)]
"""A person's name or handle: at most 200 characters on one line, whitespace around it dropped."""
FreeText = AfterValidator(free_text)
"""Metadata for a note or comment: `Annotated[str, StringConstraints(...), FreeText]`."""


class ValidationErrors(BaseModel):
    """The body of a 422: every reason the request is invalid."""

    detail: list[ValidationProblem]
