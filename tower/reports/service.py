"""The SLA breach report of a period as files: periods, file names, and the CSV/XLSX builders."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import IO, Literal
from zoneinfo import ZoneInfo

from kernel.clock import Clock
from kernel.store import Store
from sla_rules.breaches import Breach, BreachQuery
from sla_rules.loader import RuleSet
from sla_rules.model import SlaRule
from tower.reports.files import (
    CSV_TYPE,
    XLSX_TYPE,
    Summary,
    XlsxInfo,
    breaches_csv,
    check_rows,
    summary_csv,
    write_xlsx,
)
from tower.reports.settings import ReportSettings

Format = Literal["csv", "xlsx"]
Sheet = Literal["breaches", "summary"]
MEDIA_TYPES: dict[str, str] = {"csv": CSV_TYPE, "xlsx": XLSX_TYPE}
SPOOL_IN_MEMORY = 16 * 1024 * 1024  # an XLSX larger than this is spooled to disk while it is sent


@dataclass(frozen=True)
class Period:
    """[since, until), aware datetimes."""

    since: datetime
    until: datetime

    def label(self, zone: ZoneInfo) -> str:
        """`2026-10` for a calendar month, else `2026-10-01_2026-10-15` (times added when not midnight)."""
        since, until = self.since.astimezone(zone), self.until.astimezone(zone)
        months = (until.year * 12 + until.month) - (since.year * 12 + since.month)
        if _midnight(since) and _midnight(until) and since.day == 1 and until.day == 1 and months == 1:
            return f"{since.year:04d}-{since.month:02d}"
        return f"{_stamp(since)}_{_stamp(until)}"


def _midnight(at: datetime) -> bool:
    return at.time() == time(0)


def _stamp(at: datetime) -> str:
    """A period end in a file name: the day, the minute, or the second when it has one (two periods a second apart
    must not share a name); a fraction of a second is left out."""
    day = f"{at.year:04d}-{at.month:02d}-{at.day:02d}"  # strftime's %Y does not pad years before 1000
    if _midnight(at):
        return day
    return day + at.strftime("T%H%M%S" if at.second else "T%H%M")


def month_of(at: datetime, zone: ZoneInfo, offset: int = 0) -> Period:
    """The calendar month (in `zone`) holding `at`, moved by `offset` months (-1: the month before)."""
    local = at.astimezone(zone)
    index = local.year * 12 + local.month - 1 + offset
    first = date(index // 12, index % 12 + 1, 1)
    after = date((index + 1) // 12, (index + 1) % 12 + 1, 1)
    return Period(_local_midnight(first, zone), _local_midnight(after, zone))


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


@dataclass
class ReportFile:
    """A built report: its name, media type, the bytes to send and what is in it (XLSX: known up front)."""

    filename: str
    media_type: str
    chunks: Iterator[bytes]
    size: int | None = None
    info: XlsxInfo | None = None


class BreachReports:
    """Builds SLA breach reports from the store, with the rules' penalties and the routing's owners."""

    def __init__(self, store: Store, clock: Clock, rules: RuleSet, settings: ReportSettings | None = None) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings or ReportSettings()
        self.zone = self.settings.zone
        self.routing = rules.routing
        sla_rules = {rule.id: rule for rule in rules.rules if isinstance(rule, SlaRule)}
        # the rules the SLA engine evaluates (its runs in `sla_runs`): the monthly job waits for one past the month
        self.evaluated_rules = [rule.id for rule in rules.enabled if isinstance(rule, SlaRule)]
        self.query = BreachQuery(store, sla_rules, rules.routing.owner_for, self.settings.page_size)

    def local(self, at: datetime) -> datetime:
        """An aware datetime as is; a naive one read in the report time zone."""
        return at.replace(tzinfo=self.zone) if at.tzinfo is None else at

    def default_period(self) -> Period:
        """The previous calendar month, in the report time zone."""
        return month_of(self.clock.now(), self.zone, -1)

    def period(self, since: datetime | None, until: datetime | None) -> Period:
        """The period asked for (naive times in the report time zone). Neither end given: the previous month;
        only `since`: up to the start of the month after its month; only `until`: from the start of the month
        it ends. Not checked for since < until."""
        if since is None and until is None:
            return self.default_period()
        if until is None:
            assert since is not None
            start = self.local(since)
            return Period(start, month_of(start, self.zone, 1).since)
        end = self.local(until)
        start = self.local(since) if since is not None else month_of(end - timedelta(microseconds=1), self.zone).since
        return Period(start, end)

    def breaches(self, period: Period, as_of: datetime | None = None) -> Iterator[Breach]:
        """The breaches whose deadline is in the period, as of `as_of` (default: now)."""
        return self.query.breaches(period.since, period.until, as_of or self.clock.now())

    def filename(self, period: Period, fmt: Format, sheet: Sheet = "breaches") -> str:
        """`sla-breaches_2026-10.xlsx`, `sla-breaches-summary_2026-10-01_2026-10-15.csv`."""
        name = "sla-breaches" if sheet == "breaches" else "sla-breaches-summary"
        return f"{name}_{period.label(self.zone)}.{fmt}"

    def title(self, period: Period) -> str:
        """`SLA breaches 2026-10` (the workbook's title and the Slack upload's)."""
        return f"SLA breaches {period.label(self.zone)}"

    def csv(self, period: Period, sheet: Sheet = "breaches") -> ReportFile:
        """The breaches (or the summary) as CSV, streamed: nothing is read before the first chunk is asked for."""
        if sheet == "breaches":
            chunks = breaches_csv(self.breaches(period), self.zone)
        else:
            summary = Summary(self.zone)
            chunks = _lazy_summary(self, period, summary)
        return ReportFile(self.filename(period, "csv", sheet), CSV_TYPE, chunks)

    def xlsx_to(self, period: Period, target: IO[bytes]) -> XlsxInfo:
        """Write the workbook of the period to `target`; TooManyRows, before anything is read or written, when
        its breaches do not fit a worksheet."""
        as_of = self.clock.now()
        check_rows(self.query.count(period.since, period.until, as_of))
        description = (
            f"SLA breaches whose deadline is in [{period.since.astimezone(self.zone).isoformat()}, "
            f"{period.until.astimezone(self.zone).isoformat()}), as of {as_of.astimezone(self.zone).isoformat()}; "
            f"times in {self.zone.key}. Penalties are estimates from the rules' `penalty`."
        )
        return write_xlsx(self.breaches(period, as_of), target, self.zone, self.title(period), description, as_of)

    def xlsx_bytes(self, period: Period) -> tuple[bytes, XlsxInfo]:
        """The workbook as bytes (for an upload)."""
        with tempfile.TemporaryFile() as spool:
            info = self.xlsx_to(period, spool)
            spool.seek(0)
            return spool.read(), info

    def xlsx(self, period: Period, chunk_size: int = 256 * 1024) -> ReportFile:
        """The workbook, built before the first byte is sent (its size is known), then streamed in chunks."""
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 (closed by the stream)
        try:
            info = self.xlsx_to(period, spool)
            size = spool.tell()
            spool.seek(0)
        except BaseException:
            spool.close()
            raise

        def chunks() -> Iterator[bytes]:
            with spool:
                while block := spool.read(chunk_size):
                    yield block

        return ReportFile(self.filename(period, "xlsx"), XLSX_TYPE, chunks(), size, info)


def _lazy_summary(reports: BreachReports, period: Period, summary: Summary) -> Iterator[bytes]:
    for breach in reports.breaches(period):
        summary.add(breach)
    yield from summary_csv(summary)
