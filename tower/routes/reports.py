"""Finance reports: the SLA breach report of a period as a CSV or XLSX download."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from kernel.api_auth import AUTH_RESPONSES, FinanceDep
from tower.reports.files import CSV_TYPE, XLSX_TYPE, TooManyRows
from tower.reports.service import BreachReports, Format, Sheet
from tower.reports.settings import ReportSettings
from tower.routes.deps import KnownQueryDep, invalid
from tower.routes.models import ValidationErrors

router = APIRouter(prefix="/api/reports", tags=["reports"], responses=AUTH_RESPONSES)


def get_reports(request: Request) -> BreachReports:
    """The breach reports over the tower's store, clock, rules and routing (TOWER_REPORTS_* settings)."""
    tower = request.app.state.tower
    return BreachReports(tower.store, tower.clock, tower.rules, ReportSettings())


ReportsDep = Annotated[BreachReports, Depends(get_reports)]

From = Annotated[
    datetime | None,
    Query(
        alias="from",
        description="Start of the period: RFC 3339, or a date / a time without offset in the report time zone "
        "(TOWER_REPORTS_TIMEZONE, default UTC). Default: the start of the month `to` ends "
        "(with neither: the previous calendar month).",
    ),
]
To = Annotated[
    datetime | None,
    Query(alias="to", description="End of the period, excluded. Default: the start of the month after `from`."),
]

FILE_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report file, with a `Content-Disposition: attachment; filename=...` header.",
        "content": {
            CSV_TYPE.split(";")[0]: {"schema": {"type": "string"}},
            XLSX_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    },
    422: {
        "model": ValidationErrors,
        "description": "A parameter is invalid, `from` is not before `to`, or an XLSX would hold more breaches than "
        "a worksheet's 1,048,575 rows (under its header): CSV has no limit.",
    },
}


@router.get(
    "/sla-breaches",
    summary="SLA breach report of a period as CSV or XLSX",
    description="One row per breach: an SLA case whose deadline falls in [from, to) and that missed it (late, or "
    "still breached as of now), with its customer, warehouse, opened/due/closed times, hours late, owner, "
    "resolution and the estimated penalty from the rule's `penalty`. XLSX has the sheets Breaches and Summary "
    "(per rule, customer and month); CSV has the breaches, or the summary with `sheet=summary`. "
    "The CSV streams as it is read; the XLSX is built first (its size is sent). Roles: finance, admin.",
    response_class=StreamingResponse,
    responses=FILE_ANSWER,
)
def sla_breaches(
    _: FinanceDep,
    _known: KnownQueryDep,
    reports: ReportsDep,
    since: From = None,
    until: To = None,
    format: Annotated[Format, Query(description="csv or xlsx.")] = "csv",  # noqa: A002 (the API's name)
    sheet: Annotated[Sheet, Query(description="CSV only: breaches (one row per breach) or summary.")] = "breaches",
) -> StreamingResponse:
    try:
        period = reports.period(since, until)
    except (OverflowError, ValueError) as exc:  # the default other end falls before year 1 or after year 9999
        raise invalid(("query", "from" if until is None else "to"), f"the period is out of range: {exc}") from exc
    if period.since >= period.until:
        raise invalid(("query", "from"), "`from` must be before `to`")
    if format == "xlsx" and sheet != "breaches":
        raise invalid(("query", "sheet"), "the XLSX holds both sheets; `sheet` applies to CSV only")
    try:
        built = reports.xlsx(period) if format == "xlsx" else reports.csv(period, sheet)
    except TooManyRows as exc:
        raise invalid(("query", "format"), str(exc)) from exc
    headers = {"Content-Disposition": f'attachment; filename="{built.filename}"'}
    if built.size is not None:
        headers["Content-Length"] = str(built.size)
    if built.info is not None:
        headers["X-Report-Breaches"] = str(built.info.breaches)
    return StreamingResponse(built.chunks, media_type=built.media_type, headers=headers)
