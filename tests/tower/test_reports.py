"""The SLA breach report: the API's CSV and XLSX hold exactly the period's breaches (checked against the
exceptions API and the engine's cases), the summary adds up the rows, the files open with openpyxl;
`tower report` downloads the same bytes.

The data: November 2026 of the four default SLA rules, built by the SLA engine on a fixed clock from
factory events delivered as time passes (so breaches open exceptions, late ends resolve them, and
one is resolved by hand), plus cases due just outside the month.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from openpyxl import load_workbook

import tests.support
from kernel.clock import FixedClock
from kernel.settings import Settings
from kernel.store import Store
from sla_rules.breaches import BreachQuery
from sla_rules.model import SlaRule
from tests.conftest import empty
from tests.factories import case_row, event_row, make_event
from tests.support import RunningTower, start_in_process
from tests.tower.test_roles import settings_with_every_role
from tower.app import build_sla
from tower.commands.report import current_umask
from tower.commands.report import report as report_command
from tower.reports import files, service
from tower.reports.files import BREACH_COLUMNS, SUMMARY_COLUMNS

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
AS_OF = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def utc(text: str) -> datetime:
    """'11-04 12:00' in 2026 (or '10-31 23:30'), UTC."""
    return datetime.strptime(f"2026-{text}", "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


@dataclass(frozen=True)
class Order:
    """One order's flow: when each step happened (None: never), its amount and customer."""

    n: int
    accepted: str
    released: str | None = None
    shipped: str | None = None
    asn: str | None = None
    invoiced: str | None = None
    amount: float = 100.0
    currency: str = "USD"
    customer: str = "C-ACME"

    def events(self) -> list[dict[str, Any]]:
        common = {"customer_id": self.customer}
        steps: list[tuple[str, str | None, dict[str, Any]]] = [
            ("order.accepted", self.accepted, {"amount": self.amount, "currency": self.currency}),
            ("order.released", self.released, {}),
            ("shipment.confirmed", self.shipped, {}),
            ("asn.sent", self.asn, {}),
            ("invoice.posted", self.invoiced, {"amount": self.amount, "currency": self.currency}),
        ]
        return [
            make_event(kind, self.n, time=utc(at).isoformat(), data={**common, **data})
            for kind, at, data in steps
            if at is not None
        ]


ORDERS = [
    # every step on time: no breach
    Order(1, "11-03 10:00", "11-03 11:00", "11-03 14:00", "11-03 14:30", "11-03 16:00", amount=1000),
    # released 3 hours late (an exception opens, then resolves `late`); the rest on time
    Order(2, "11-04 10:00", "11-04 15:00", "11-04 20:00", "11-04 20:30", "11-04 21:00", amount=2000),
    # never released: breached, still open at the end of the month
    Order(3, "11-05 10:00", amount=500),
    # due 12-01 01:00: a December breach
    Order(4, "11-30 23:00", amount=700),
    # due 11-01 01:30, released at 02:00: late when first seen (no exception); an order in euros
    Order(5, "10-31 23:30", "11-01 02:00", "11-02 12:00", "11-02 12:30", "11-02 13:00", amount=300, currency="EUR"),
    # due 10-31 23:00: an October breach
    Order(6, "10-31 21:00", amount=800),
    # never released; its exception is resolved by hand at 11-10 12:00
    Order(7, "11-10 08:00", amount=100, customer="C-BETA"),
    # ASN 2.5 hours late (due 10:00); never invoiced (due 11-13 09:00)
    Order(8, "11-12 06:00", "11-12 07:00", "11-12 09:00", "11-12 12:30", None, amount=400, customer="C-BETA"),
    # released Monday 09:00 Chicago: due 23:59:59 Chicago (11-17 05:59:59 UTC), shipped 08:00 UTC
    Order(9, "11-16 14:00", "11-16 15:00", "11-17 08:00", "11-17 08:30", "11-17 09:00", amount=1000, customer="C-BETA"),
]
EVALUATIONS = [
    "11-01 03:00",
    "11-04 13:00",
    "11-05 13:00",
    "11-10 11:00",
    "11-12 11:00",
    "11-13 10:00",
    "11-17 07:00",
    "11-17 09:30",
    "12-01 06:00",
]
HAND_RESOLVED = ("order-release", "SO-7", "11-10 12:00")

# (rule, key, customer, due, closed, hours late, open, owner, resolution, has exception, order, penalty, note)
EXPECTED: list[tuple[Any, ...]] = [
    ("order-release", "SO-5", "C-ACME", "11-01 01:30", "11-01 02:00", "0.50", False, "customer_service", "late",
     False, "SO-5", "25.00", "order in EUR, penalty in USD: fixed part only"),
    ("order-release", "SO-2", "C-ACME", "11-04 12:00", "11-04 15:00", "3.00", False, "customer_service", "late",
     True, "SO-2", "45.00", ""),
    ("order-release", "SO-3", "C-ACME", "11-05 12:00", None, "618.00", True, "customer_service", "",
     True, "SO-3", "30.00", ""),
    ("order-release", "SO-7", "C-BETA", "11-10 10:00", "11-10 12:00", "2.00", False, "customer_service", "fixed",
     True, "SO-7", "26.00", ""),
    ("asn-sent", "SH-8", "C-BETA", "11-12 10:00", "11-12 12:30", "2.50", False, "transportation", "late",
     True, "SO-8", "100.00", ""),
    ("invoice-posting", "SO-8", "C-BETA", "11-13 09:00", None, "429.00", True, "finance", "",
     True, "SO-8", "15.00", ""),
    ("ship-cutoff", "SO-9", "C-BETA", "11-17 05:59:59", "11-17 08:00", "2.00", False, "warehouse", "late",
     True, "SO-9", "30.00", ""),
]  # fmt: skip


def play(store: Store, settings: Settings) -> FixedClock:
    """Deliver the orders' events as time passes and evaluate the default SLA rules at each EVALUATIONS time;
    the clock ends at AS_OF."""
    events = sorted((e for order in ORDERS for e in order.events()), key=lambda e: e["time"])
    clock = FixedClock(utc(EVALUATIONS[0]))
    parts = build_sla(settings, store, clock)
    delivered = 0
    for at in EVALUATIONS:
        now = utc(at)
        if HAND_RESOLVED and utc(HAND_RESOLVED[2]) <= now and clock.now() < utc(HAND_RESOLVED[2]):
            clock.set(utc(HAND_RESOLVED[2]))
            record = parts.exceptions.active_by_key(HAND_RESOLVED[0], [HAND_RESOLVED[1]])[HAND_RESOLVED[1]]
            parts.exceptions.resolve(record.id, actor="ann", resolution="fixed", note="order cancelled")
        clock.set(now)
        due = [e for e in events[delivered:] if datetime.fromisoformat(e["time"]) <= now]
        if due:
            store.insert("business_events", [event_row(e, now) for e in due])
            delivered += len(due)
        report = parts.sla.evaluate(full=True)
        assert report.errors == {}
    assert delivered == len(events) and clock.now() == AS_OF
    return clock


@pytest.fixture
def store(shared_store: Store) -> Store:
    """The embedded store, not emptied before each test: `november` plays the month once for the module's tests."""
    return shared_store


@dataclass
class Month:
    """The module's running tower (a token per role) and whether the store holds its played month unchanged."""

    running: RunningTower
    played: bool = False


@pytest.fixture(scope="module")
def month(shared_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Month]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tests.support, "make_settings", settings_with_every_role)
        with start_in_process(tmp_path_factory.mktemp("november"), shared_store) as running:
            yield Month(running)


@pytest.fixture
def november(month: Month, shared_store: Store) -> RunningTower:
    """The running tower over the played month, its clock standing at AS_OF. The month is played (on an emptied
    store) for the module's first test and again after a test that changed the store (`changed_november`)."""
    tower = month.running.tower
    assert tower is not None
    if not month.played:
        empty(shared_store)
        tower.clock = play(shared_store, tower.settings)
        month.played = True
    return month.running


@pytest.fixture
def changed_november(month: Month, november: RunningTower) -> Iterator[RunningTower]:
    """`november` for a test that adds to the store: the next test gets the month played again."""
    yield november
    month.played = False


def get_report(running: RunningTower, role: str = "finance", **params: str) -> httpx.Response:
    with running.api(role) as http:
        return http.get("/api/reports/sla-breaches", params=params)


def parse_time(text: str) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def sla_exceptions(running: RunningTower) -> dict[tuple[str, str], dict[str, Any]]:
    """Every exception of the SLA rules, from the API, by (rule, key)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    with running.api("viewer") as http:
        for rule in ("order-release", "ship-cutoff", "asn-sent", "invoice-posting"):
            body = http.get("/api/exceptions", params={"rule": rule, "limit": 1000}).json()
            for item in body["items"]:
                found[(item["rule"], item["key"])] = item
    return found


def expected_rows() -> list[dict[str, Any]]:
    rows = []
    for rule, key, customer, due, closed, late, is_open, owner, resolution, _, order, penalty, note in EXPECTED:
        rows.append(
            {
                "rule": rule,
                "key": key,
                "customer_id": customer,
                "due": datetime.strptime(
                    f"2026-{due}", "%Y-%m-%d %H:%M" if due.count(":") == 1 else "%Y-%m-%d %H:%M:%S"
                ),
                "closed": utc(closed).replace(tzinfo=None) if closed else None,
                "hours_late": Decimal(late),
                "open": is_open,
                "owner": owner,
                "resolution": resolution,
                "order_id": order,
                "penalty": Decimal(penalty),
                "note": note,
            }
        )
    return rows


def check_against_api(rows: list[dict[str, Any]], running: RunningTower, store: Store) -> None:
    """Each row agrees with the exceptions API and the engine's stored case; every SLA exception due in
    November is a row."""
    exceptions = sla_exceptions(running)
    cases = {
        (c["rule"], c["key"]): c
        for c in store.query("SELECT rule, key, started_at, ended_at, due_at, status FROM sla_cases FINAL")
    }
    by_pair = {(row["rule"], row["key"]): row for row in rows}
    for pair, row in by_pair.items():
        case = cases[pair]
        assert case["status"] in ("late", "breached")
        assert row["opened"] == datetime.fromisoformat(case["started_at"]).replace(tzinfo=UTC)
        assert row["due"] == datetime.fromisoformat(case["due_at"]).replace(tzinfo=UTC)
        found = exceptions.get(pair)
        if found is None:
            assert row["exception_id"] in ("", None) and row["flagged"] is None
            continue
        assert row["exception_id"] == found["id"]
        assert row["owner"] == found["owner"]
        assert row["flagged"] == _naive(found["opened_at"])
        if found["status"] == "resolved":
            assert row["resolution"] == found["resolution"]
            if case["ended_at"] is None:
                assert row["closed"] == _naive(found["resolved_at"])
        else:
            assert row["resolution"] in ("", None) and row["closed"] is None
    due_in_november = {
        pair
        for pair, item in exceptions.items()
        if item["due_at"] and NOV <= datetime.fromisoformat(item["due_at"]) < DEC
    }
    assert due_in_november <= set(by_pair)
    outside = {pair for pair, item in exceptions.items() if pair not in due_in_november}
    assert outside == {("order-release", "SO-4"), ("order-release", "SO-6")}  # due in December and October


def _naive(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None, microsecond=0)


def xlsx_sheets(content: bytes) -> dict[str, list[dict[str, Any]]]:
    """Each sheet as rows of header -> value, read back with openpyxl."""
    book = load_workbook(io.BytesIO(content))
    sheets: dict[str, list[dict[str, Any]]] = {}
    for sheet in book.worksheets:
        values = list(sheet.iter_rows(values_only=True))
        header = [str(v) for v in values[0]]
        sheets[sheet.title] = [dict(zip(header, row, strict=True)) for row in values[1:]]
    return sheets


def by_name(row: dict[str, Any], columns: tuple[tuple[str, str, str], ...]) -> dict[str, Any]:
    """An XLSX row keyed by the CSV column names (titles of time columns carry the zone)."""
    out = {}
    for name, title, kind in columns:
        value = row[f"{title} (UTC)" if kind == "time" else title]
        out[name] = Decimal(str(value)) if kind in ("hours", "money") and value is not None else value
    return out


def test_xlsx_holds_exactly_the_breaches_and_a_summary_that_adds_up(november: RunningTower, store: Store) -> None:
    response = get_report(november, format="xlsx", **{"from": "2026-11-01", "to": "2026-12-01"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == XLSX
    assert response.headers["content-disposition"] == 'attachment; filename="sla-breaches_2026-11.xlsx"'
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.headers["x-report-breaches"] == str(len(EXPECTED))

    sheets = xlsx_sheets(response.content)
    assert list(sheets) == ["Breaches", "Summary"]
    rows = [by_name(row, BREACH_COLUMNS) for row in sheets["Breaches"]]
    picked = [{name: row[name] for name in expected_rows()[0]} for row in rows]
    for row in picked:
        row["note"] = row["note"] or ""
        row["resolution"] = row["resolution"] or ""
    assert picked == expected_rows()
    # dates are dates, numbers are numbers
    assert all(isinstance(row["opened"], datetime) and isinstance(row["due"], datetime) for row in rows)
    assert all(isinstance(raw["Hours late"], float | int) for raw in sheets["Breaches"])
    for row in rows:  # aware UTC for the cross-check
        for name in ("opened", "due"):
            row[name] = row[name].replace(tzinfo=UTC)
    check_against_api(rows, november, store)

    summary = [by_name(row, SUMMARY_COLUMNS) for row in sheets["Summary"]]
    assert all(isinstance(row["month"], datetime) for row in summary)
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        group = groups.setdefault((row["rule"], row["customer_id"]), {"n": 0, "open": 0, "hours": 0, "money": 0})
        group["n"] += 1
        group["open"] += row["open"]
        group["hours"] += row["hours_late"]
        group["money"] += row["penalty"]
    assert {
        (s["rule"], s["customer_id"]): {
            "n": s["breaches"],
            "open": s["open"],
            "hours": s["hours_late"],
            "money": s["exposure"],
        }
        for s in summary
    } == groups
    assert {(s["month"], s["currency"]) for s in summary} == {(datetime(2026, 11, 1), "USD")}
    assert sum(s["exposure"] for s in summary) == Decimal("271.00")
    assert sum(s["breaches"] for s in summary) == len(EXPECTED)


def test_csv_holds_the_same_breaches_and_the_summary_csv_adds_up(november: RunningTower, store: Store) -> None:
    period = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
    response = get_report(november, "admin", **period)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="sla-breaches_2026-11.csv"'
    records = list(csv.DictReader(io.StringIO(response.text)))
    assert list(records[0]) == [name for name, _, _ in BREACH_COLUMNS]
    rows = []
    for record in records:
        row: dict[str, Any] = dict(record)
        for name in ("opened", "due", "closed", "flagged"):
            row[name] = parse_time(record[name])
        row["hours_late"] = Decimal(record["hours_late"])
        row["penalty"] = Decimal(record["penalty"])
        row["open"] = {"true": True, "false": False}[record["open"]]
        rows.append(row)
    picked = [{name: row[name] for name in expected_rows()[0]} for row in rows]
    for row in picked:
        row["due"] = row["due"].astimezone(UTC).replace(tzinfo=None)
        row["closed"] = row["closed"].astimezone(UTC).replace(tzinfo=None) if row["closed"] else None
    assert picked == expected_rows()
    assert records[0]["due"] == "2026-11-01T01:30:00+00:00" and records[0]["order_currency"] == "EUR"
    amounts = {r["order_amount"] for r in records if r["order_amount"]}
    assert amounts and all(re.fullmatch(r"\d+\.\d\d", a) for a in amounts), amounts  # money to cents, as penalties
    for row in rows:
        row["flagged"] = row["flagged"].replace(tzinfo=None) if row["flagged"] else None
        row["closed"] = row["closed"].replace(tzinfo=None) if row["closed"] else None
    check_against_api(rows, november, store)

    with november.api("finance") as http:
        xlsx = http.get("/api/reports/sla-breaches", params={**period, "format": "xlsx"}).content
        summary_csv = http.get("/api/reports/sla-breaches", params={**period, "sheet": "summary"})
    assert summary_csv.headers["content-disposition"] == 'attachment; filename="sla-breaches-summary_2026-11.csv"'
    from_csv = list(csv.DictReader(io.StringIO(summary_csv.text)))
    from_xlsx = [by_name(row, SUMMARY_COLUMNS) for row in xlsx_sheets(xlsx)["Summary"]]
    assert [
        (r["rule"], r["customer_id"], r["month"], int(r["breaches"]), Decimal(r["exposure"])) for r in from_csv
    ] == [(r["rule"], r["customer_id"], "2026-11", r["breaches"], r["exposure"]) for r in from_xlsx]
    assert sum(Decimal(r["hours_late"]) for r in from_csv) == sum(row["hours_late"] for row in rows)


def test_the_period_picks_breaches_by_deadline(november: RunningTower) -> None:
    def keys(**params: str) -> list[tuple[str, str]]:
        response = get_report(november, **params)
        assert response.status_code == 200, response.text
        return [(r["rule"], r["key"]) for r in csv.DictReader(io.StringIO(response.text))]

    # default: the month before the clock's (December 1st): November
    assert keys() == [(e[0], e[1]) for e in EXPECTED]
    assert keys(**{"from": "2026-12-01"}) == [("order-release", "SO-4")]  # to: the month's end
    assert keys(to="2026-11-01") == [("order-release", "SO-6")]  # from: the start of October
    # a half-open window: a deadline exactly at `to` is out, exactly at `from` is in
    assert keys(**{"from": "2026-11-04T12:00:00Z", "to": "2026-11-10T10:00:00Z"}) == [
        ("order-release", "SO-2"),
        ("order-release", "SO-3"),
    ]
    response = get_report(november, **{"from": "2026-11-01", "to": "2026-11-01"})
    assert response.status_code == 422 and "`from` must be before `to`" in response.text
    response = get_report(november, format="pdf")
    assert response.status_code == 422


def test_paging_gives_the_same_rows_in_deadline_order(november: RunningTower, store: Store) -> None:
    assert november.tower is not None
    rules = {r.id: r for r in november.tower.rules.rules if isinstance(r, SlaRule)}
    since, until = datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    whole = list(BreachQuery(store, rules, page_size=5_000).breaches(since, until, AS_OF))
    for size in (1, 2, 3):
        assert list(BreachQuery(store, rules, page_size=size).breaches(since, until, AS_OF)) == whole
    assert [(b.rule, b.key) for b in whole] == [
        ("order-release", "SO-6"),
        *[(e[0], e[1]) for e in EXPECTED],
        ("order-release", "SO-4"),
    ]
    assert [b.due for b in whole] == sorted(b.due for b in whole)


def test_tower_report_downloads_with_a_progress_bar(november: RunningTower, tmp_path: Path) -> None:
    token = november.api_token("admin")
    target = tmp_path / "out" / "november.xlsx"
    target.parent.mkdir()
    result = CliRunner().invoke(
        report_command,
        [
            "--from",
            "2026-11-01",
            "--to",
            "2026-12-01",
            "--output",
            str(target),
            "--url",
            november.http_url,
            "--token",
            token,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "sla-breaches_2026-11.xlsx" in result.output and f"wrote {target}" in result.output
    assert f"bytes, {len(EXPECTED):,} breaches)" in result.output  # the count, so an empty month is seen at once
    assert [p.name for p in target.parent.iterdir()] == ["november.xlsx"]  # no temporary file left
    assert target.stat().st_mode & 0o777 == 0o666 & ~current_umask()
    assert len(xlsx_sheets(target.read_bytes())["Breaches"]) == len(EXPECTED)

    result = CliRunner().invoke(
        report_command,
        [
            "--format",
            "csv",
            "--from",
            "2026-11-01",
            "--to",
            "2026-12-01",
            "-o",
            "-",
            "-q",
            "--url",
            november.http_url,
            "--token",
            token,
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("rule,key,customer_id,warehouse,opened,due,closed,hours_late")
    assert len(result.output.splitlines()) == len(EXPECTED) + 1

    viewer = november.api_token("viewer")
    result = CliRunner().invoke(
        report_command, ["--url", november.http_url, "--token", viewer, "-o", str(tmp_path / "x.xlsx")]
    )
    assert result.exit_code == 2 and "the tower answered 403" in result.output
    assert not (tmp_path / "x.xlsx").exists()
    result = CliRunner().invoke(report_command, ["--from", "November", "--url", november.http_url, "--token", token])
    assert result.exit_code == 2 and "is not a date" in result.output


def test_tower_report_output_a_folder_or_a_path_it_cannot_write(november: RunningTower, tmp_path: Path) -> None:
    def report(output: Path) -> Result:
        args = ["--format", "csv", "--from", "2026-11-01", "--to", "2026-12-01", "-o", str(output), "-q"]
        return CliRunner().invoke(report_command, [*args, "--url", november.http_url, "--token", november.api_token()])

    (tmp_path / "reports").mkdir()
    result = report(tmp_path / "reports")  # a folder: the tower's file name in it
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["sla-breaches_2026-11.csv"]

    missing = tmp_path / "no" / "such" / "r.csv"
    result = report(missing)
    assert result.exit_code == 2 and f"the folder {missing.parent} does not exist" in result.output
    assert not (tmp_path / "no").exists()  # not made behind the user's back

    (tmp_path / "file").write_text("x")
    result = report(tmp_path / "file" / "r.csv")
    assert result.exit_code == 2 and "does not exist" in result.output and "Traceback" not in result.output


def test_the_breaches_api_counts_as_the_report_does(changed_november: RunningTower, store: Store) -> None:
    november = changed_november
    # a case still stored as pending whose deadline passed (the engine has not looked since): the report counts it
    store.insert("sla_cases", [case_row("order-release", "SO-90", utc("11-30 20:00"), utc("11-30 22:00"), "pending")])
    period = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
    rows = list(csv.DictReader(io.StringIO(get_report(november, **period).text)))
    with november.api("finance") as http:
        stats = http.get("/api/sla/breaches", params={**period, "top": 100}).json()
    is_open = [r for r in rows if r["open"] == "true"]
    assert (stats["total"], stats["breached"], stats["late"]) == (len(rows), len(is_open), len(rows) - len(is_open))
    assert (len(rows), len(is_open)) == (len(EXPECTED) + 1, 3)  # SO-7, resolved by hand, is closed; SO-90 open
    per_customer: dict[str, list[Decimal]] = {}
    for row in rows:
        per_customer.setdefault(row["customer_id"], []).append(Decimal(row["hours_late"]))
    assert {
        c["name"]: (c["breaches"], c["still_open"], Decimal(str(c["max_hours_late"]))) for c in stats["customers"]
    } == {
        name: (len(hours), sum(r["open"] == "true" for r in rows if r["customer_id"] == name), max(hours))
        for name, hours in per_customer.items()
    }
    assert sum(b["breaches"] for b in stats["buckets"]) == len(rows)


def test_an_xlsx_past_a_sheet_s_rows_is_refused_with_a_way_out(
    november: RunningTower, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    period = {"from": "2026-11-01", "to": "2026-12-01"}
    monkeypatch.setattr(files, "XLSX_MAX_ROWS", len(EXPECTED) + 1)  # the header and every breach: fits
    assert get_report(november, format="xlsx", **period).status_code == 200
    monkeypatch.setattr(files, "XLSX_MAX_ROWS", len(EXPECTED))  # one row short
    built: list[object] = []
    monkeypatch.setattr(service, "write_xlsx", lambda *args, **kwargs: built.append(args))
    response = get_report(november, format="xlsx", **period)
    message = f"the report has {len(EXPECTED)} breaches, more than an XLSX sheet holds ({len(EXPECTED) - 1} rows"
    assert response.status_code == 422 and message in response.text and "download it as CSV" in response.text
    assert built == []  # refused from the count, before a workbook is begun
    assert get_report(november, **period).status_code == 200  # the CSV has no such limit

    target = tmp_path / "november.xlsx"
    args = ["--from", "2026-11-01", "--to", "2026-12-01", "-o", str(target), "-q"]
    result = CliRunner().invoke(report_command, [*args, "--url", november.http_url, "--token", november.api_token()])
    assert result.exit_code == 2 and "the tower answered 422" in result.output
    assert message in " ".join(result.output.split()) and not target.exists()


def test_the_workbook_is_dated_by_the_tower_s_clock(november: RunningTower) -> None:
    response = get_report(november, format="xlsx", **{"from": "2026-11-01", "to": "2026-12-01"})
    properties = load_workbook(io.BytesIO(response.content)).properties
    assert properties.created == properties.modified == AS_OF.replace(tzinfo=None)
