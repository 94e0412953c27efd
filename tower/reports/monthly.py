"""The `finance-report` job: the previous month's SLA breach report (XLSX), posted once to finance's Slack channel.

Each run (hourly by default) asks which months are due: every month after the last one posted up
to the previous month (the first post ever: the previous month only; a long outage catches up at
most 12 months), each once its end is `post_after_hours` behind (time for the last evaluations
of the month). A due month also waits for the SLA engine: it is posted only once a completed evaluation
(a run recorded in `sla_runs`) evaluated the cases as of the month's end or later, so that a tower
started (or restored, or whose scheduler was down) after the month ended never posts the cases as
they stood before the month was over; until then each run says why it waits and posts at a later
run. A due month's workbook is uploaded with `files_upload_v2` (through the alerting
package's Slack sender) and recorded in `report_deliveries`; a month recorded there is never
posted again. Months follow the report time zone (TOWER_REPORTS_TIMEZONE).

The record is written after the upload: a tower that dies between the two posts that month again
on its next run (at least once: a duplicate is possible, a lost report is not).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from alerting.outbox import Posted
from kernel.jobs import JobContext, JobFunction, JobRegistry, JobSettings
from kernel.store import Store
from kernel.store.base import stored_time_or_none
from tower.reports.files import Summary
from tower.reports.service import BreachReports, Period, month_of

log = logging.getLogger(__name__)

REPORT = "sla-breaches-monthly"
MAX_CATCH_UP = 12

LAST_POSTED = """
SELECT max(period) AS period FROM report_deliveries FINAL WHERE report = {report:String}
"""
POSTED = """
SELECT period, channel, channel_id, ts, filename, breaches, bytes, posted_at
FROM report_deliveries FINAL WHERE report = {report:String} ORDER BY period
"""
# The moment the latest completed SLA evaluation evaluated (its `now`): the engine records a run's rows at its end.
LAST_EVALUATED = """
SELECT started_at AS as_of FROM sla_runs WHERE rule IN {rules:Array(String)} ORDER BY started_at DESC LIMIT 1
"""


class FinanceReportSettings(JobSettings):
    """The `finance-report` job (TOWER_JOB_FINANCE_REPORT_*): how often it looks for a month to post, and how
    long after a month ends it waits."""

    model_config = SettingsConfigDict(env_prefix="TOWER_JOB_FINANCE_REPORT_")

    enabled: bool = Field(True, description="Post the previous month's SLA breach report to finance's channel.")
    interval_seconds: float = Field(3600.0, gt=0, description="Seconds between checks for a month to post.")
    post_after_hours: float = Field(
        1.0, ge=0, le=24 * 27, description="Hours after a month ends before its report is posted."
    )


class FileUploader(Protocol):
    """Uploads a file to a Slack channel (alerting's SlackSender: files_upload_v2)."""

    def upload(self, channel: str, filename: str, content: bytes, title: str, comment: str = "") -> Posted:
        """Post `content` as `filename` to `channel` with a title and a message; raises when Slack refuses."""
        ...


@dataclass(frozen=True)
class Posting:
    """One monthly report posted."""

    period: str  # YYYY-MM
    channel: str
    posted: Posted  # the channel id and message ts Slack answered (the ts may be empty: sharing is asynchronous)
    filename: str
    breaches: int
    bytes: int


def month_key(period: Period, reports: BreachReports) -> str:
    """`2026-10` for the month starting at `period.since` (report time zone)."""
    since = period.since.astimezone(reports.zone)
    return f"{since.year:04d}-{since.month:02d}"


def comment(period: Period, summary: Summary, reports: BreachReports) -> str:
    """The message posted with the file: counts, hours late and exposure per currency."""
    exposure = ", ".join(f"{currency} {amount:,.2f}" for currency, amount in summary.exposure().items()) or "none"
    hours = summary.hours_late.quantize(Decimal("0.01"))
    return (
        f"SLA breach report for {month_key(period, reports)}: {summary.breaches} breaches "
        f"({summary.open} still open), {hours:,} hours late, estimated chargeback exposure {exposure}. "
        f"Deadlines in the month, times in {reports.zone.key}; sheets Breaches and Summary."
    )


class MonthlyFinanceReport:
    """Finds the months due and posts each one's workbook once."""

    def __init__(
        self, reports: BreachReports, store: Store, uploader: FileUploader | None, channel: str | None
    ) -> None:
        self.reports = reports
        self.store = store
        self.uploader = uploader
        self.channel = channel

    def last_posted(self) -> str | None:
        """The last month posted (YYYY-MM), None before the first post."""
        rows = self.store.query(LAST_POSTED, {"report": REPORT})
        return rows[0]["period"] or None if rows else None

    def postings(self) -> list[dict[str, Any]]:
        """Every month posted, oldest first."""
        return self.store.query(POSTED, {"report": REPORT})

    def last_evaluated(self) -> datetime | None:
        """The moment the latest completed SLA evaluation evaluated the cases as of; None before the first."""
        rows = self.store.query(LAST_EVALUATED, {"rules": self.reports.evaluated_rules})
        return stored_time_or_none(rows[0]["as_of"]) if rows else None

    def waiting_for(self, period: Period, as_of: datetime | None) -> str | None:
        """Why the month cannot be posted yet, given the latest SLA evaluation's `as_of` (`last_evaluated`): no
        evaluation as of the month's end or later. None when it can."""
        if not self.reports.evaluated_rules:  # no SLA rule to evaluate: the engine records no runs
            return None
        if as_of is not None and as_of >= period.until:
            return None
        month, until = month_key(period, self.reports), f"{period.until:%Y-%m-%d %H:%M:%S} UTC"
        if as_of is None:
            return (
                f"waiting to post the SLA breach report {month}: no SLA evaluation has run yet; it is posted at "
                f"a run after one has evaluated past the month's end ({until})"
            )
        return (
            f"waiting to post the SLA breach report {month}: the last SLA evaluation was as of "
            f"{as_of:%Y-%m-%d %H:%M:%S} UTC, before the month ended ({until}); it is posted at a run after the "
            "next evaluation"
        )

    def due(self, now: datetime, post_after: timedelta) -> list[Period]:
        """The months to post at `now`: after the last posted, up to the last month that ended `post_after` ago."""
        previous = month_of(now, self.reports.zone, -1)
        ready = now >= previous.until + post_after
        last = self.last_posted()
        if last is None:  # the first post ever: the previous month, nothing older
            return [previous] if ready else []
        newest = previous if ready else month_of(now, self.reports.zone, -2)
        months: list[Period] = []
        cursor = newest
        while month_key(cursor, self.reports) > last and len(months) < MAX_CATCH_UP:
            months.append(cursor)
            cursor = month_of(cursor.since, self.reports.zone, -1)
        return months[::-1]

    def post(self, period: Period) -> Posting:
        """Build the month's workbook, upload it and record it."""
        assert self.uploader is not None and self.channel is not None
        content, info = self.reports.xlsx_bytes(period)
        filename = self.reports.filename(period, "xlsx")
        posted = self.uploader.upload(
            self.channel, filename, content, self.reports.title(period), comment(period, info.summary, self.reports)
        )
        posting = Posting(month_key(period, self.reports), self.channel, posted, filename, info.breaches, len(content))
        self.store.insert(
            "report_deliveries",
            [
                {
                    "report": REPORT,
                    "period": posting.period,
                    "channel": posting.channel,
                    "filename": posting.filename,
                    "channel_id": posting.posted.channel_id,
                    "ts": posting.posted.ts,
                    "breaches": posting.breaches,
                    "bytes": posting.bytes,
                    "posted_at": self.reports.clock.now(),
                    "version": time.time_ns(),
                }
            ],
        )
        return posting

    def run(self, now: datetime, post_after: timedelta) -> dict[str, Any]:
        """Post every month due; what was posted, or why nothing was."""
        if self.uploader is None:
            return {"posted": [], "skipped": "Slack is not configured for uploads (TOWER_SLACK_BOT_TOKEN)"}
        if not self.channel:
            return {
                "posted": [],
                "skipped": "no finance channel: set TOWER_REPORTS_FINANCE_CHANNEL or the finance owner's "
                "channel in the routing file",
            }
        posted: list[str] = []
        due = self.due(now, post_after)
        as_of = self.last_evaluated() if due else None
        for period in due:
            waiting = self.waiting_for(period, as_of)
            if waiting is not None:  # this month and the later ones wait: months are posted in order
                log.info("finance-report: %s", waiting)
                return {"posted": posted, "waiting": waiting}
            posting = self.post(period)
            log.info("posted the SLA breach report %s to %s", posting.period, posting.channel)
            posted.append(posting.period)
        return {"posted": posted}


def finance_report_job(report: MonthlyFinanceReport) -> JobFunction:
    """The job function over `report`."""

    def finance_report(context: JobContext) -> dict[str, Any]:
        """Post the previous month's SLA breach report (XLSX) to finance's Slack channel, once per month."""
        settings = context.settings
        hours = settings.post_after_hours if isinstance(settings, FinanceReportSettings) else 1.0
        outcome = report.run(context.now(), timedelta(hours=hours))
        if "skipped" in outcome and context.run == 1:
            context.log.info("finance-report: %s", outcome["skipped"])
        return outcome

    return finance_report


def register_finance_report(
    jobs: JobRegistry, reports: BreachReports, store: Store, uploader: FileUploader | None
) -> MonthlyFinanceReport:
    """Register the `finance-report` job; the channel is TOWER_REPORTS_FINANCE_CHANNEL, else the finance owner's
    channel in the routing file. Without an uploader (Slack not configured) each run skips and says why."""
    settings = reports.settings
    channel = settings.finance_channel or reports.routing.channel_for(settings.finance_owner)
    report = MonthlyFinanceReport(reports, store, uploader, channel)
    jobs.add("finance-report", finance_report_job(report), settings=FinanceReportSettings)
    return report
