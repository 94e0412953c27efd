"""Exceptions: list and filter, one with its timeline, and the actions people take on them.

The routes only translate HTTP; transitions, validation of changes and the audit trail live in
`kernel.exceptions.ExceptionStore`, which Slack uses too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Body, Depends, HTTPException, Query, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, StringConstraints, model_validator

from kernel.api_auth import AUTH_RESPONSES, ApiError, OperateDep, ReadDep
from kernel.exceptions import ExceptionFilter, ExceptionNotFound, InvalidTransition
from kernel.model.text import Name
from tower import insights
from tower.reports.files import csv_chunks
from tower.routes.deps import ClockDep, ExceptionsDep, KnownQueryDep, RulesDep, StoreDep, invalid
from tower.routes.models import ExceptionOut, FreeText, RequestBody
from tower.routes.timeline import TimelineEntry, audit_entries, key_timeline

router = APIRouter(prefix="/api/exceptions", tags=["exceptions"], responses=AUTH_RESPONSES)

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ApiError, "description": "No exception has that id."}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ApiError, "description": "The change does not apply in the exception's status."}
}

Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=10_000), FreeText]
Resolution = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,39}$")]
Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000), FreeText]
MAX_AGE_HOURS = 100 * 365 * 24  # ages past a century would reach before the store's earliest time (1900)


class ExceptionPage(BaseModel):
    """A page of exceptions, newest first, and how many match the filters."""

    items: list[ExceptionOut]
    total: int


class ExceptionDetail(ExceptionOut):
    """An exception with its timeline: the key's events and spans, and every change to the exception."""

    timeline: list[TimelineEntry] = Field(description="Events, spans and audit entries, oldest first.")
    truncated: bool = Field(description="True when the key had too many events or spans to show them all.")
    rule_title: str | None = Field(None, description="The rule's title; null when the tower runs no such rule.")
    runbook: str | None = Field(None, description="The rule's runbook link, when it has one.")


class AssignBody(RequestBody):
    """Who takes the exception; an empty assignee clears it."""

    assignee: Name = Field(
        description="A name or handle, at most 200 characters on one line: no control character (newline, tab, NUL,"
        " escape, C1 controls), line or paragraph separator or bidirectional override or isolate."
    )


class ResolveBody(RequestBody):
    """How it was resolved, and why."""

    resolution: Resolution = Field("fixed", description="A short word: fixed, false_positive, duplicate, ...")
    note: Text = ""


class NoteBody(RequestBody):
    """A note for the audit trail."""

    text: Note


class BulkResolveBody(RequestBody):
    """Which active exceptions to resolve at once, and why: an incident's breaches, a rule switched off."""

    rule: str | None = None
    owner: str | None = None
    kind: Literal["business", "technical"] | None = None
    key: str | None = None
    customer: str | None = Field(None, description="The customer id in the exception's context.")
    warehouse: str | None = Field(None, description="The warehouse in the exception's context.")
    status: Literal["open", "acknowledged", "active"] = Field("active", description="`active`: open or acknowledged.")
    min_age_hours: float | None = Field(
        None, ge=0, le=MAX_AGE_HOURS, description="Only those opened at least this many hours ago (the tower's clock)."
    )
    resolution: Resolution = "fixed"
    note: Note = Field(
        description="Why, for every exception's audit trail (e.g. `ERP outage INC-123, releases held by the ERP`)."
    )
    dry_run: bool = Field(False, description="Only count and list what would be resolved.")
    max: int = Field(10_000, ge=1, le=100_000, description="At most this many, oldest first.")

    @model_validator(mode="after")
    def _narrowed(self) -> BulkResolveBody:
        if not any((self.rule, self.owner, self.kind, self.key, self.customer, self.warehouse)):
            raise ValueError("name at least one of rule, owner, kind, key, customer, warehouse: not every exception")
        return self


class BulkResolveOut(BaseModel):
    """What a bulk resolution did (or would do)."""

    matched: int = Field(description="Active exceptions the filters match.")
    resolved: int = Field(description="Resolved now (0 on a dry run); `matched` - `resolved` are left when over max.")
    ids: list[str] = Field(description="The exceptions resolved (on a dry run: that would be), oldest first.")
    dry_run: bool


@contextmanager
def _answers() -> Iterator[None]:
    """ExceptionStore errors as HTTP answers: 404 unknown id, 409 invalid transition."""
    try:
        yield
    except ExceptionNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no exception with id {exc.args[0]!r}") from exc
    except InvalidTransition as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc


def exception_filters(
    clock: ClockDep,
    status: Annotated[
        Literal["open", "acknowledged", "resolved", "active", "all", ""] | None,
        Query(description="`active` is open or acknowledged; `all`, empty or none: every status."),
    ] = None,
    owner: str | None = None,
    rule: str | None = None,
    kind: Literal["business", "technical"] | None = None,
    key: str | None = None,
    customer: Annotated[str | None, Query(description="The customer id in the exception's context.")] = None,
    warehouse: Annotated[str | None, Query(description="The warehouse in the exception's context.")] = None,
    min_age_hours: Annotated[
        float | None,
        Query(ge=0, le=MAX_AGE_HOURS, description="Opened at least this many hours ago (the tower's clock)."),
    ] = None,
    max_age_hours: Annotated[
        float | None,
        Query(ge=0, le=MAX_AGE_HOURS, description="Opened at most this many hours ago (the tower's clock)."),
    ] = None,
) -> ExceptionFilter:
    """The exception list's filters, from the query (the list and its CSV export share them)."""
    if min_age_hours is not None and max_age_hours is not None and min_age_hours > max_age_hours:
        # opened at least 48 hours ago and at most 24: no exception can be, and an empty list would say "none"
        raise invalid(("query", "min_age_hours"), "`min_age_hours` must not be more than `max_age_hours`")
    now = clock.now()
    return ExceptionFilter(
        status=None if status in ("all", "") else status,
        owner=owner,
        rule=rule,
        kind=kind,
        key=key,
        customer=customer,
        warehouse=warehouse,
        opened_before=now - timedelta(hours=min_age_hours) if min_age_hours is not None else None,
        opened_after=now - timedelta(hours=max_age_hours) if max_age_hours is not None else None,
    )


FiltersDep = Annotated[ExceptionFilter, Depends(exception_filters)]
Sort = Annotated[
    Literal["newest", "oldest", "due", "severity"],
    Query(description="newest or oldest opened first, soonest `due` first, or highest severity first."),
]


@router.get(
    "",
    summary="List exceptions, newest first, with filters",
    description="Filters combine (AND); `sort` picks the order. Roles: viewer, operator, finance, admin.",
)
def list_exceptions(
    _: ReadDep,
    _known: KnownQueryDep,
    exceptions: ExceptionsDep,
    filters: FiltersDep,
    sort: Sort = "newest",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ExceptionPage:
    items, total = exceptions.search(filters, limit=limit, offset=offset, order=sort)
    return ExceptionPage(items=[ExceptionOut.of(r) for r in items], total=total)


EXPORT_MAX = 100_000
# The export's columns: (name, header, kind) as tower/reports/files.py writes them; the last ones from the context.
_EXPORT_FIELDS = (
    "id", "rule", "key", "kind", "owner", "severity", "status", "opened_at", "due_at", "resolved_at", "resolution",
    "assignee",
)  # fmt: skip
_EXPORT_CONTEXT = ("customer_id", "warehouse", "source")
EXPORT_COLUMNS: tuple[tuple[str, str, str], ...] = tuple(
    (name, name, "text") for name in (*_EXPORT_FIELDS, *_EXPORT_CONTEXT)
)


@router.get(
    "/export",
    summary="The exceptions the filters match, as CSV",
    description="The list's filters and `sort`; at most `max` rows (the header `X-Total-Count` says how many match)."
    " Times in UTC (RFC 3339); customer, warehouse and source from each exception's context. Text that a spreadsheet"
    " would take for a formula starts with an apostrophe. Roles: viewer, operator, finance, admin.",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The CSV (a header row), with `Content-Disposition: attachment` and `X-Total-Count`.",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
def export_exceptions(
    _: ReadDep,
    _known: KnownQueryDep,
    exceptions: ExceptionsDep,
    filters: FiltersDep,
    clock: ClockDep,
    sort: Sort = "newest",
    max: Annotated[int, Query(ge=1, le=EXPORT_MAX, description="Rows at most.")] = 10_000,
) -> StreamingResponse:
    items, total = exceptions.search(filters, limit=max, order=sort)

    def rows() -> Iterator[dict[str, Any]]:
        for record in items:
            out = ExceptionOut.of(record)
            yield {**dict(out), **{name: str(out.context.get(name) or "") for name in _EXPORT_CONTEXT}}

    stamp = clock.now().astimezone(UTC).strftime("%Y%m%d-%H%M")
    return StreamingResponse(
        csv_chunks(rows(), EXPORT_COLUMNS, ZoneInfo("UTC")),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="exceptions-{stamp}.csv"',
            "X-Total-Count": str(total),
        },
    )


@router.get(
    "/{exception_id}",
    summary="One exception with its timeline (events, spans, audit trail)",
    description="Roles: viewer, operator, finance, admin.",
    responses=NOT_FOUND,
)
def get_exception(
    exception_id: str, _: ReadDep, ruleset: RulesDep, exceptions: ExceptionsDep, store: StoreDep
) -> ExceptionDetail:
    with _answers():
        record = exceptions.get(exception_id)
    trail = audit_entries(record.id, exceptions.audit(record.id))
    timeline, truncated = key_timeline(store, record.key, trail)
    rule = insights.rule_info(ruleset, record.rule)  # a reconciler's finding rule (inventory-oversell) too
    return ExceptionDetail(
        **ExceptionOut.of(record).model_dump(),
        timeline=timeline,
        truncated=truncated,
        rule_title=rule.title if rule else None,
        runbook=rule.runbook if rule else None,
    )


@router.post(
    "/{exception_id}/acknowledge",
    summary="Acknowledge an open exception",
    description="open -> acknowledged. Roles: operator, admin.",
    responses=NOT_FOUND | CONFLICT,
)
def acknowledge(exception_id: str, who: OperateDep, exceptions: ExceptionsDep) -> ExceptionOut:
    with _answers():
        return ExceptionOut.of(exceptions.acknowledge(exception_id, actor=who.token_id))


@router.post(
    "/{exception_id}/assign",
    summary="Assign an active exception to someone (an empty assignee clears it)",
    description="Roles: operator, admin.",
    responses=NOT_FOUND | CONFLICT,
)
def assign(exception_id: str, body: AssignBody, who: OperateDep, exceptions: ExceptionsDep) -> ExceptionOut:
    with _answers():
        return ExceptionOut.of(exceptions.assign(exception_id, body.assignee, actor=who.token_id))


@router.post(
    "/{exception_id}/resolve",
    summary="Resolve an active exception",
    description="The body is optional (resolution `fixed`, no note). Roles: operator, admin.",
    responses=NOT_FOUND | CONFLICT,
)
def resolve(
    exception_id: str,
    who: OperateDep,
    exceptions: ExceptionsDep,
    body: Annotated[ResolveBody | None, Body()] = None,
) -> ExceptionOut:
    body = body or ResolveBody()
    with _answers():
        return ExceptionOut.of(
            exceptions.resolve(exception_id, actor=who.token_id, resolution=body.resolution, note=body.note)
        )


@router.post(
    "/resolve",
    summary="Resolve every active exception the filters match",
    description="An incident's worth at once, each with the note in its audit trail, as a person's resolution "
    "(a reconciler reopens one still wrong, once). At least one filter; `dry_run` only counts. Roles: operator, admin.",
)
def resolve_matching(
    body: BulkResolveBody, who: OperateDep, exceptions: ExceptionsDep, clock: ClockDep
) -> BulkResolveOut:
    aged = body.min_age_hours
    filters = ExceptionFilter(
        opened_before=clock.now() - timedelta(hours=aged) if aged is not None else None,
        status=body.status,
        owner=body.owner,
        rule=body.rule,
        kind=body.kind,
        key=body.key,
        customer=body.customer,
        warehouse=body.warehouse,
    )
    done, matched = exceptions.resolve_matching(
        filters, who.token_id, body.resolution, body.note, body.max, dry_run=body.dry_run
    )
    return BulkResolveOut(
        matched=matched, resolved=0 if body.dry_run else len(done), ids=[r.id for r in done], dry_run=body.dry_run
    )


@router.post(
    "/{exception_id}/notes",
    summary="Add a note to an exception's audit trail (any status)",
    description="Roles: operator, admin.",
    responses=NOT_FOUND,
)
def add_note(exception_id: str, body: NoteBody, who: OperateDep, exceptions: ExceptionsDep) -> ExceptionOut:
    with _answers():
        return ExceptionOut.of(exceptions.add_note(exception_id, body.text, actor=who.token_id))
