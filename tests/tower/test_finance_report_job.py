"""The `finance-report` job: the previous month's XLSX is uploaded to finance's channel with the real slack-sdk
WebClient (files_upload_v2) against the Slack stand-in, once per month, remembered across restarts."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from alerting.outbox import Outbox
from alerting.sender import SlackSender
from alerting.standin import SlackStandIn
from kernel.clock import FixedClock
from kernel.jobs import JobContext, JobRegistry, SchedulerSettings
from kernel.settings import Settings
from kernel.store import Store
from sla_rules.loader import RuleSet, default_rules_dir, load_rule_set
from tests.alerting.delivery_support import slack_settings
from tests.factories import make_settings
from tests.tower.test_reports import AS_OF, EXPECTED, play
from tower.app import build_sla, build_tower
from tower.reports.monthly import FinanceReportSettings, MonthlyFinanceReport, register_finance_report
from tower.reports.service import BreachReports
from tower.reports.settings import ReportSettings


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    with SlackStandIn() as running:
        yield running


class Finance:
    """The job as the tower registers it, on a fixed clock, uploading through a real SlackSender; beside it the
    SLA engine of the same rules (the `sla-evaluate` job's), whose runs the job waits for."""

    def __init__(
        self,
        store: Store,
        clock: FixedClock,
        standin: SlackStandIn | None,
        rules: RuleSet | None = None,
        channel: str | None = "#finance",
        timezone: str = "UTC",
    ) -> None:
        self.clock = clock
        rules = rules or load_rule_set()
        settings = ReportSettings(finance_channel=channel, timezone=timezone)
        self.reports = BreachReports(store, clock, rules, settings)
        sender = None
        if standin is not None:
            sender = SlackSender(
                Outbox(store, clock),
                slack_settings(standin),
                clock,
                sleep=lambda seconds: clock.advance(timedelta(seconds=seconds)),
            )
        self.jobs = JobRegistry()
        self.report = register_finance_report(self.jobs, self.reports, store, sender)
        self.sla = build_sla(Settings(), store, clock, rules).sla
        self.runs = 0

    def evaluate(self, at: datetime) -> None:
        """An SLA evaluation at `at` (a run of `sla-evaluate`)."""
        self.clock.set(at)
        assert self.sla.evaluate().errors == {}

    def run(self, at: datetime, evaluated: bool = True) -> dict[str, Any]:
        """One run of the job at `at`, as the scheduler calls it; unless `evaluated` is False, right after an
        SLA evaluation at `at` (the engine runs every minute)."""
        if evaluated:
            self.evaluate(at)
        self.clock.set(at)
        self.runs += 1
        job = self.jobs.get("finance-report")
        context = JobContext(job.name, FinanceReportSettings(), self.clock, self.runs, logging.getLogger("test"))
        result: dict[str, Any] = job.function(context)
        return result


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def uploaded_workbooks(standin: SlackStandIn, channel: str = "#finance") -> list[tuple[str, str, int]]:
    """(title, comment, breach rows) of each file posted to the channel, oldest first."""
    found = []
    uploads = standin.uploads()
    for message in standin.messages(channel):
        (file,) = message["files"]
        book = load_workbook(io.BytesIO(uploads[file["id"]]))
        assert book.sheetnames == ["Breaches", "Summary"]
        found.append((file["title"], message["text"], book["Breaches"].max_row - 1))
    return found


def test_posts_the_previous_month_once(store: Store, standin: SlackStandIn) -> None:
    clock = play(store, Settings())
    finance = Finance(store, clock, standin)

    assert finance.run(at("2026-12-01T00:30:00")) == {"posted": []}  # the month ended less than an hour ago
    assert standin.calls_to("files.completeUploadExternal") == []
    assert finance.run(AS_OF) == {"posted": ["2026-11"]}
    assert finance.run(AS_OF + timedelta(hours=1)) == {"posted": []}
    assert finance.run(at("2026-12-20T10:00:00")) == {"posted": []}

    ((title, text, rows),) = uploaded_workbooks(standin)
    assert title == "SLA breaches 2026-11" and rows == len(EXPECTED)
    assert text.startswith("SLA breach report for 2026-11: 7 breaches (2 still open), 1,057.00 hours late")
    assert "estimated chargeback exposure USD 271.00" in text
    assert len(standin.calls_to("files.completeUploadExternal")) == 1
    (posting,) = finance.report.postings()
    assert (posting["period"], posting["channel"], posting["breaches"]) == ("2026-11", "#finance", 7)
    assert posting["channel_id"] == standin.channel_id("#finance") and posting["ts"]
    assert posting["filename"] == "sla-breaches_2026-11.xlsx"

    # a restart remembers the month; the next month is posted once its turn comes
    again = Finance(store, clock, standin)
    assert again.run(at("2026-12-31T23:00:00")) == {"posted": []}
    assert again.run(at("2027-01-01T01:00:00")) == {"posted": ["2026-12"]}
    assert again.run(at("2027-01-01T02:00:00")) == {"posted": []}
    assert [(t, n) for t, _, n in uploaded_workbooks(standin)] == [
        ("SLA breaches 2026-11", 7),
        ("SLA breaches 2026-12", 1),  # SO-4, due 12-01 01:00
    ]


def test_after_an_outage_missed_months_are_posted_in_order(store: Store, standin: SlackStandIn) -> None:
    finance = Finance(store, FixedClock(AS_OF), standin)
    assert finance.run(at("2026-12-02T00:00:00")) == {"posted": ["2026-11"]}
    assert finance.run(at("2027-03-15T12:00:00")) == {"posted": ["2026-12", "2027-01", "2027-02"]}
    assert [t for t, _, _ in uploaded_workbooks(standin)] == [
        "SLA breaches 2026-11",
        "SLA breaches 2026-12",
        "SLA breaches 2027-01",
        "SLA breaches 2027-02",
    ]
    # empty months are posted too: finance sees that there was nothing
    texts = [text for _, text, _ in uploaded_workbooks(standin)]
    assert all(": 0 breaches (0 still open), 0.00 hours late, estimated chargeback exposure none." in t for t in texts)


def test_a_month_waits_for_an_evaluation_past_its_end(
    store: Store, standin: SlackStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    """A tower started after the month ended runs its jobs all at once: the report waits for the SLA engine."""
    finance = Finance(store, FixedClock(AS_OF), standin)
    caplog.set_level(logging.INFO, logger="tower.reports.monthly")
    result = finance.run(at("2026-12-01T02:00:00"), evaluated=False)
    assert result["posted"] == [] and "no SLA evaluation has run yet" in result["waiting"]

    finance.evaluate(at("2026-11-30T23:30:00"))  # before the month ended: not enough
    result = finance.run(at("2026-12-01T03:00:00"), evaluated=False)
    assert result["posted"] == []
    assert result["waiting"].startswith(
        "waiting to post the SLA breach report 2026-11: the last SLA evaluation was as of 2026-11-30 23:30:00 UTC, "
        "before the month ended (2026-12-01 00:00:00 UTC)"
    )
    assert standin.calls_to("files.completeUploadExternal") == [] and finance.report.postings() == []
    waits = [r for r in caplog.records if "waiting to post" in r.getMessage()]
    assert len(waits) == 2 and {r.levelno for r in waits} == {logging.INFO}

    finance.evaluate(at("2026-12-01T03:00:30"))
    assert finance.run(at("2026-12-01T04:00:00"), evaluated=False) == {"posted": ["2026-11"]}


def test_catching_up_posts_only_the_months_an_evaluation_went_past(store: Store, standin: SlackStandIn) -> None:
    """A store restored (or a scheduler down) across month ends: months the engine evaluated past are posted,
    the later ones wait for the next evaluation."""
    finance = Finance(store, FixedClock(AS_OF), standin)
    assert finance.run(at("2026-12-02T00:00:00")) == {"posted": ["2026-11"]}
    finance.evaluate(at("2027-01-15T00:00:00"))
    result = finance.run(at("2027-03-15T12:00:00"), evaluated=False)
    assert result["posted"] == ["2026-12"] and "report 2027-01: the last SLA evaluation" in result["waiting"]
    assert finance.run(at("2027-03-15T13:00:00")) == {"posted": ["2027-01", "2027-02"]}


def test_the_first_post_is_the_previous_month_only(store: Store, standin: SlackStandIn) -> None:
    finance = Finance(store, FixedClock(AS_OF), standin)
    assert finance.run(at("2027-05-01T00:10:00")) == {"posted": []}  # April not ready; nothing older is posted
    assert finance.run(at("2027-05-01T01:10:00")) == {"posted": ["2027-04"]}


def test_months_follow_the_report_time_zone(store: Store, standin: SlackStandIn) -> None:
    finance = Finance(store, FixedClock(AS_OF), standin, timezone="America/Chicago")
    # 2026-12-01 06:30 UTC is 00:30 in Chicago: November ended there 30 minutes ago
    assert finance.run(at("2026-12-01T06:30:00")) == {"posted": []}
    assert finance.run(at("2026-12-01T07:00:00")) == {"posted": ["2026-11"]}


def test_the_channel_comes_from_the_routing_file(store: Store, standin: SlackStandIn) -> None:
    finance = Finance(store, FixedClock(AS_OF), standin, rules=load_rule_set(), channel=None)
    assert finance.run(AS_OF) == {"posted": ["2026-11"]}
    assert [t for t, _, _ in uploaded_workbooks(standin, "#finance-ops")] == ["SLA breaches 2026-11"]


def test_without_a_channel_or_slack_it_posts_nothing_and_remembers_nothing(
    store: Store, standin: SlackStandIn, tmp_path: Path
) -> None:
    routing = tmp_path / "routing.yaml"  # owners without channels
    routing.write_text("owners: {customer_service: , warehouse: , transportation: , finance: , integration: }\n")
    rules = load_rule_set(default_rules_dir(), routing)
    no_channel = Finance(store, FixedClock(AS_OF), standin, rules=rules, channel=None)
    result = no_channel.run(AS_OF)
    assert result["posted"] == [] and "TOWER_REPORTS_FINANCE_CHANNEL" in result["skipped"]
    no_slack = Finance(store, FixedClock(AS_OF), None)
    result = no_slack.run(AS_OF)
    assert result["posted"] == [] and "TOWER_SLACK_BOT_TOKEN" in result["skipped"]
    assert standin.calls == [] and no_slack.report.postings() == []
    assert isinstance(no_slack.report, MonthlyFinanceReport) and no_slack.report.last_posted() is None


def test_a_failed_upload_is_retried_on_the_next_run(store: Store, standin: SlackStandIn) -> None:
    from alerting.sender import DeliveryError
    from alerting.standin import Fault

    finance = Finance(store, FixedClock(AS_OF), standin)
    standin.fail("files.getUploadURLExternal", *[Fault.api_error("not_in_channel")])
    with pytest.raises(DeliveryError):
        finance.run(AS_OF)
    assert finance.report.postings() == []
    assert finance.run(AS_OF + timedelta(hours=1)) == {"posted": ["2026-11"]}
    assert len(uploaded_workbooks(standin)) == 1


def test_the_tower_registers_the_job_with_its_slack_sender(
    store: Store, standin: SlackStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOWER_SLACK_BOT_TOKEN", "xoxb-test-token")
    monkeypatch.setenv("TOWER_SLACK_API_URL", standin.api_url)
    monkeypatch.setenv("TOWER_REPORTS_FINANCE_CHANNEL", "#month-end")
    clock = play(store, Settings())
    tower = build_tower(make_settings(tmp_path / "data"), clock, store, SchedulerSettings(enabled=False))
    job = tower.jobs.get("finance-report")
    assert job.settings_model is FinanceReportSettings and "once per month" in job.description
    context = JobContext(job.name, job.settings(), clock, 1, logging.getLogger("test"))
    assert job.function(context) == {"posted": ["2026-11"]}
    assert job.function(context) == {"posted": []}
    assert [t for t, _, _ in uploaded_workbooks(standin, "#month-end")] == ["SLA breaches 2026-11"]
