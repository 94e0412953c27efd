"""Technical rules on a fixed clock against the real store: integration-errors and source-silence open one
exception per key while the condition holds, resolve it (`recovered`) when it stops, and never open twice."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alerting.suppression import RootCauses
from collector.deadletters import PENDING, REPLAY_FAILED, REPLAYED, Refusal, dead_letter_row, refusal_key, status_row
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionFilter, ExceptionRecord, ExceptionStore, NewException
from kernel.model.events import SOURCE_SYSTEMS, source_system
from kernel.store import Store
from reconcilers.replay.service import exception_source
from sla_rules.loader import default_rules_dir, load_rules
from sla_rules.model import ErrorRateParams, ErrorRateRule, RefusalsParams, RefusalsRule, SilenceParams, SilenceRule
from sla_rules.technical import REFUSAL_KEY, TechnicalEngine, refusal_key_params
from tests.factories import event_row, make_event, span_row
from tests.support import start_in_process
from tower.insights import sources_health

NOW = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)
ERRORS = ErrorRateRule(
    id="integration-errors",
    title="Integration error rate above 5%",
    kind="technical",
    owner="integration",
    severity="high",
    check="error-rate",
    params=ErrorRateParams(window=timedelta(minutes=15), min_spans=20, error_ratio=0.05),
)
SILENCE = SilenceRule(
    id="source-silence",
    title="Expected source silent",
    kind="technical",
    owner="integration",
    severity="critical",
    check="silence",
    params=SilenceParams(window=timedelta(minutes=30)),
)


# One ingest token per system, as `refused` names them: token id -> its granted source.
TOKENS = {f"tok-{system}": system for system in SOURCE_SYSTEMS}


class Tower:
    """The engine under test, its clock and the exceptions it writes."""

    def __init__(self, store: Store, expected: list[str] | None = None, **engine: Any) -> None:
        self.store = store
        self.clock = FixedClock(NOW)
        self.exceptions = ExceptionStore(store, self.clock)
        rules = engine.pop("rules", [ERRORS, SILENCE])
        engine.setdefault("token_sources", TOKENS)
        self.engine = TechnicalEngine(
            store,
            self.exceptions,
            self.clock,
            rules,
            expected_sources=expected or [],
            seen_within=engine.pop("seen_within", timedelta(hours=24)),
            **engine,
        )

    def evaluate(self) -> tuple[list[str], list[str]]:
        report = self.engine.evaluate(full=False)
        return report.opened, report.resolved

    def active(self, rule: str) -> dict[str, ExceptionRecord]:
        return self.exceptions.active_by_key(rule)

    def all(self, rule: str) -> list[ExceptionRecord]:
        records, _ = self.exceptions.search(ExceptionFilter(rule=rule), limit=100)
        return records


def spans(
    store: Store,
    count: int,
    errors: int = 0,
    service: str = "middleware",
    name: str = "erp->wms inventory sync",
    end: datetime = NOW,
    step: timedelta = timedelta(seconds=15),
    source: str = "middleware",
    twice: bool = False,
) -> None:
    """`count` distinct spans, the first `errors` failed, one every `step` up to `end`."""
    rows = []
    for i in range(count):
        row = span_row(
            secrets.token_hex(16),
            secrets.token_hex(8),
            end - i * step,
            service,
            name,
            "Error" if i < errors else "Unset",
        )
        row["ResourceAttributes"]["tower.source"] = source
        rows.append(row)
    store.insert("otel_traces", rows + rows if twice else rows)


def event(store: Store, source: str, at: datetime, received: datetime = NOW) -> None:
    raw = make_event("order.accepted", source=source, time=at.isoformat().replace("+00:00", "Z"))
    store.insert("business_events", [event_row(raw, received)])


# --- integration-errors ---------------------------------------------------------------------------------


def test_an_error_burst_opens_one_exception_per_service_and_span_name(store: Store) -> None:
    t = Tower(store)
    spans(store, 60, errors=30)
    spans(store, 20, errors=2, name="POST /orders")
    spans(store, 20, errors=2, service="erp-order-api", name="POST /orders", source="erp")
    spans(store, 40, errors=0, service="wms-connector", name="poll wave status", source="wms")
    opened, resolved = t.evaluate()
    assert len(opened) == 3 and resolved == []
    active = t.active("integration-errors")
    assert set(active) == {
        "middleware|erp->wms inventory sync",
        "middleware|POST /orders",
        "erp-order-api|POST /orders",
    }
    burst = active["middleware|erp->wms inventory sync"]
    assert (burst.kind, burst.owner, burst.severity, burst.status) == ("technical", "integration", "high", "open")
    assert burst.context["spans"] == 60 and burst.context["errors"] == 30 and burst.context["ratio"] == 0.5
    assert burst.context["window"] == "15m" and burst.context["service"] == "middleware"
    assert burst.context["span_name"] == "erp->wms inventory sync" and burst.context["source"] == "middleware"
    assert active["erp-order-api|POST /orders"].context["ratio"] == 0.1


@pytest.mark.parametrize(
    ("count", "errors", "flagged"),
    [
        (19, 19, False),  # fewer than 20 spans, however many fail
        (20, 1, False),  # exactly 5% is not more than 5%
        (40, 2, False),
        (20, 2, True),
        (41, 3, True),
        (20, 20, True),
    ],
)
def test_thresholds(store: Store, count: int, errors: int, flagged: bool) -> None:
    t = Tower(store)
    spans(store, count, errors=errors, step=timedelta(seconds=20))
    t.evaluate()
    assert bool(t.active("integration-errors")) is flagged


def test_only_spans_in_the_last_window_count(store: Store) -> None:
    t = Tower(store)
    spans(store, 20, errors=20, end=NOW - timedelta(minutes=15, seconds=1), step=timedelta(seconds=1))  # too old
    spans(store, 20, errors=20, end=NOW + timedelta(minutes=5), step=timedelta(seconds=1))  # after now
    spans(store, 19, errors=19, end=NOW, step=timedelta(seconds=1))
    t.evaluate()
    assert t.active("integration-errors") == {}
    spans(store, 1, errors=0, end=NOW - timedelta(minutes=15))  # the window's first instant is inside
    t.evaluate()
    assert set(t.active("integration-errors")) == {"middleware|erp->wms inventory sync"}


def test_redelivered_spans_count_once(store: Store) -> None:
    t = Tower(store)
    spans(store, 10, errors=10, twice=True)  # 20 rows, 10 spans: too few
    spans(store, 20, errors=1, name="POST /orders", twice=True)  # 1 of 20 failed, not 2 of 40
    t.evaluate()
    assert t.active("integration-errors") == {}
    spans(store, 10, errors=0, twice=True)
    t.evaluate()
    (found,) = t.active("integration-errors").values()
    assert (found.context["spans"], found.context["errors"]) == (20, 10)


def test_recovery_resolves_and_a_new_burst_opens_anew(store: Store) -> None:
    t = Tower(store)
    spans(store, 40, errors=10)
    (first,) = t.evaluate()[0]
    t.clock.advance(timedelta(minutes=16))
    spans(store, 25, errors=0, end=t.clock.now())
    opened, resolved = t.evaluate()
    assert opened == [] and resolved == [first]
    record = t.exceptions.get(first)
    assert record.status == "resolved" and record.resolution == "recovered"
    detail = t.exceptions.audit(first)[-1]["detail"]
    assert detail == {"resolution": "recovered", "spans": 25, "errors": 0, "ratio": 0.0, "window": "15m"}

    t.clock.advance(timedelta(minutes=16))
    spans(store, 20, errors=5, end=t.clock.now())
    (second,) = t.evaluate()[0]
    assert second != first and set(t.active("integration-errors")) == {"middleware|erp->wms inventory sync"}


def test_a_series_with_no_spans_left_has_recovered(store: Store) -> None:
    t = Tower(store, rules=[ERRORS])
    spans(store, 20, errors=20)
    (first,) = t.evaluate()[0]
    t.clock.advance(timedelta(hours=1))
    assert t.evaluate() == ([], [first])
    assert t.exceptions.get(first).resolution_detail == '{"spans":0,"errors":0,"ratio":0.0,"window":"15m"}'


def test_running_twice_opens_nothing_twice(store: Store) -> None:
    t = Tower(store, expected=["tms"])
    spans(store, 20, errors=5)
    first = t.evaluate()
    assert len(first[0]) == 2  # the burst, and tms never seen
    assert t.evaluate() == ([], [])
    t.exceptions.acknowledge(first[0][0], "alice")  # acknowledged is still active
    assert t.evaluate() == ([], [])
    assert len(t.all("integration-errors")) == 1 and len(t.all("source-silence")) == 1


def test_one_tokens_spans_never_dilute_another_sources_error_rate(store: Store) -> None:
    """The ERP's 40 failed spans of erp-order-api / POST /orders, then 2,000 OK spans of the same service and span
    name sent with the WMS token: the ERP's series still fails, and the WMS's failing series is its own."""
    t = Tower(store)
    burst = {"service": "erp-order-api", "name": "POST /orders", "step": timedelta(seconds=20)}
    spans(store, 40, errors=40, source="erp", **burst)  # type: ignore[arg-type]
    (opened,) = t.evaluate()[0]
    assert list(t.active("integration-errors")) == ["erp-order-api|POST /orders"]
    many = {**burst, "step": timedelta(milliseconds=400)}
    spans(store, 2000, errors=0, source="wms", **many)  # type: ignore[arg-type]
    t.clock.advance(timedelta(seconds=1))
    assert t.evaluate() == ([], [])
    record = t.active("integration-errors")["erp-order-api|POST /orders"]
    assert record.id == opened and (record.context["source"], record.context["ratio"]) == ("erp", 1.0)
    assert [(s.source, s.spans, s.failing) for s in t.engine.error_rates(ERRORS, t.clock.now(), ())] == [
        ("erp", 40, True)
    ]
    # the WMS token's own burst of the same service and span name: its own exception, its source in the key
    spans(store, 200, errors=200, source="wms", end=t.clock.now(), **many)  # type: ignore[arg-type]
    opened_wms, _ = t.evaluate()
    assert len(opened_wms) == 1
    wms = t.active("integration-errors")["erp-order-api|POST /orders|wms"]
    assert (wms.context["service"], wms.context["span_name"], wms.context["source"]) == (
        "erp-order-api",
        "POST /orders",
        "wms",
    )
    # the ERP's series recovers alone: its exception resolves, the WMS's stays
    t.clock.advance(timedelta(minutes=16))
    spans(store, 30, errors=0, source="erp", end=t.clock.now(), **burst)  # type: ignore[arg-type]
    spans(store, 30, errors=30, source="wms", end=t.clock.now(), **burst)  # type: ignore[arg-type]
    assert t.evaluate() == ([], [opened])
    assert list(t.active("integration-errors")) == ["erp-order-api|POST /orders|wms"]


def test_an_exception_opened_before_series_had_a_source_is_kept_by_its_context(store: Store) -> None:
    """An upgrade neither resolves nor reopens an active exception keyed `service|span name`: its context's source
    names its series."""
    t = Tower(store)
    spans(store, 40, errors=40, service="erp-order-api", name="POST /orders", source="erp")
    [old] = t.exceptions.open_many(
        [
            NewException(
                rule="integration-errors",
                key="erp-order-api|POST /orders",
                kind="technical",
                owner="integration",
                severity="high",
                context={"service": "erp-order-api", "span_name": "POST /orders", "source": "erp", "spans": 40},
            )
        ]
    )
    assert t.evaluate() == ([], [])
    t.clock.advance(timedelta(minutes=16))
    spans(store, 30, errors=0, service="erp-order-api", name="POST /orders", source="erp", end=t.clock.now())
    assert t.evaluate() == ([], [old.id])


# --- source-silence -------------------------------------------------------------------------------------


def test_a_silent_expected_system_opens_and_arrival_resolves(store: Store) -> None:
    t = Tower(store, expected=["wms", "tms", "erp"])
    spans(store, 1, service="tms-sync", name="poll carrier tracking", source="tms", end=NOW - timedelta(minutes=45))
    event(store, "tms", NOW - timedelta(minutes=50))
    spans(store, 1, service="wms-connector", name="poll wave status", source="wms", end=NOW - timedelta(minutes=29))
    event(store, "erp", NOW - timedelta(minutes=1))
    opened, _ = t.evaluate()
    assert len(opened) == 1
    (silent,) = t.active("source-silence").values()
    assert silent.key == "tms" and silent.owner == "integration" and silent.kind == "technical"
    assert silent.severity == "critical"
    assert silent.context["last_seen"] == "2026-11-04T14:45:00.000000Z"
    assert silent.context["silent_for"] == "45m" and silent.context["silent_for_seconds"] == 45 * 60

    t.clock.advance(timedelta(minutes=5))
    event(store, "tms", t.clock.now() - timedelta(minutes=1))
    opened, resolved = t.evaluate()
    assert resolved == [silent.id]
    assert set(t.active("source-silence")) == {"wms"}  # wms has now been quiet for 34 minutes
    record = t.exceptions.get(silent.id)
    assert record.resolution == "recovered"
    detail = t.exceptions.audit(silent.id)[-1]["detail"]
    assert detail["last_seen"] == "2026-11-04T15:34:00.000000Z" and detail["silent_for"] == "1m"
    assert detail["silent_since"] == "2026-11-04T14:45:00.000000Z"


@pytest.mark.parametrize(("actor", "resolution"), [("replay", "replayed"), ("ann", "fixed")])
def test_a_silence_someone_closed_stays_closed_until_the_source_is_heard_again(
    store: Store, actor: str, resolution: str
) -> None:
    t = Tower(store, expected=["tms"])
    event(store, "tms", NOW - timedelta(minutes=45))
    t.evaluate()
    (silent,) = t.active("source-silence").values()
    t.clock.advance(timedelta(minutes=2))
    event(store, "tms", NOW - timedelta(minutes=40))  # a replay's event: dated inside the gap
    t.exceptions.resolve(silent.id, actor=actor, resolution=resolution)
    t.clock.advance(timedelta(seconds=10))
    assert t.evaluate() == ([], [])  # still silent, but closed by someone: no second exception, no second page
    assert t.active("source-silence") == {}

    t.clock.advance(timedelta(minutes=5))
    event(store, "tms", t.clock.now())  # heard again: the silence is over
    t.evaluate()
    t.clock.advance(timedelta(minutes=31))  # and a new silence begins
    opened, _ = t.evaluate()
    (again,) = t.active("source-silence").values()
    assert opened == [again.id] and again.id != silent.id


def test_a_source_whose_events_are_dated_ahead_is_silent_and_says_why(store: Store) -> None:
    t = Tower(store, expected=["wms", "tms"])
    event(store, "wms/dallas", NOW + timedelta(hours=4), received=NOW - timedelta(minutes=2))  # a zone 4 hours ahead
    event(store, "wms/dallas", NOW + timedelta(hours=5), received=NOW - timedelta(hours=2))  # before the window
    opened, _ = t.evaluate()
    assert len(opened) == 2
    wms, tms = t.active("source-silence")["wms"], t.active("source-silence")["tms"]
    assert wms.context["dated_ahead"] == 1
    assert wms.context["summary"] == (
        "not silent: 1 of its events arrived in the last 30m dated up to 4h after the tower's clock; business time"
        " says nothing happened yet"
    )
    assert "time zone" in wms.context["next_step"]
    assert "dated_ahead" not in tms.context and "summary" not in tms.context  # simply silent


def test_a_path_counts_for_its_system(store: Store) -> None:
    t = Tower(store, expected=["wms", "wms/reno"])
    event(store, "wms/dallas", NOW - timedelta(minutes=2))
    t.evaluate()
    # wms/dallas feeds wms; it says nothing about Reno.
    assert set(t.active("source-silence")) == {"wms/reno"}


def test_business_time_not_arrival_time_says_when_a_source_was_last_heard(store: Store) -> None:
    t = Tower(store, expected=["tms"])
    event(store, "tms", NOW - timedelta(hours=2), received=NOW)  # a backfill arriving now
    t.evaluate()
    (silent,) = t.active("source-silence").values()
    assert silent.context["silent_for"] == "2h"


def test_a_source_never_seen_is_silent(store: Store) -> None:
    t = Tower(store, expected=["edi"])
    t.evaluate()
    (silent,) = t.active("source-silence").values()
    assert silent.key == "edi" and silent.context["last_seen"] is None
    assert silent.context["silent_for"] == "more than 1d"


def test_without_a_list_every_system_seen_recently_is_expected(store: Store) -> None:
    t = Tower(store, seen_within=timedelta(hours=24))
    event(store, "erp", NOW - timedelta(hours=3))
    event(store, "wms/dallas", NOW - timedelta(hours=5))
    spans(store, 1, service="storefront", name="sync catalog prices", source="ecommerce", end=NOW)
    event(store, "crm", NOW - timedelta(days=3))  # not seen within 24 h: not expected
    event(store, "edi", NOW + timedelta(hours=1))  # after now: not seen yet
    t.evaluate()
    assert set(t.active("source-silence")) == {"erp", "wms"}


def test_the_rule_lists_its_sources_before_the_settings(store: Store) -> None:
    rule = SILENCE.model_copy(update={"params": SilenceParams(window=timedelta(minutes=30), sources=["crm"])})
    t = Tower(store, expected=["tms"], rules=[rule])
    t.evaluate()
    assert set(t.active("source-silence")) == {"crm"}


def test_a_source_out_of_the_list_stays_open_until_it_is_heard(store: Store) -> None:
    t = Tower(store, seen_within=timedelta(hours=24))
    event(store, "tms", NOW - timedelta(hours=1))
    t.evaluate()
    (silent,) = t.active("source-silence").values()
    t.clock.advance(timedelta(days=2))  # tms is no longer "seen within 24 h", but it is still silent
    assert t.evaluate() == ([], [])
    assert set(t.active("source-silence")) == {"tms"}
    event(store, "tms", t.clock.now())
    assert t.evaluate() == ([], [silent.id])


def test_disabled_rules_do_nothing(store: Store) -> None:
    off = [ERRORS.model_copy(update={"enabled": False}), SILENCE.model_copy(update={"enabled": False})]
    t = Tower(store, expected=["tms"], rules=off)
    spans(store, 20, errors=20)
    report = t.engine.evaluate(full=True)
    assert report.rules == {} and t.all("integration-errors") == [] and t.all("source-silence") == []


def test_the_report_names_each_rule(store: Store) -> None:
    t = Tower(store, expected=["tms"])
    spans(store, 20, errors=20)
    report = t.engine.evaluate(full=True)
    assert report.full and report.evaluated_at == NOW
    assert set(report.rules) == {"integration-errors", "source-silence"}
    assert report.rules["integration-errors"].cases_changed == 1
    assert len(report.rules["source-silence"].opened) == 1
    assert report.as_dict()["opened"] == 2


def test_the_shipped_rules_say_what_design_says() -> None:
    rules = {r.id: r for r in load_rules(default_rules_dir())}
    errors, silence = rules["integration-errors"], rules["source-silence"]
    assert isinstance(errors, ErrorRateRule) and isinstance(silence, SilenceRule)
    assert errors.params == ErrorRateParams(window=timedelta(minutes=15), min_spans=20, error_ratio=0.05)
    assert silence.params.window == timedelta(minutes=30) and silence.params.sources == []
    assert errors.owner == silence.owner == "integration"


# --- ingest-refusals -----------------------------------------------------------------------------

REFUSALS = RefusalsRule(
    id="ingest-refusals",
    title="Records refused into dead letters",
    kind="technical",
    owner="integration",
    severity="high",
    check="refusals",
    params=RefusalsParams(window=timedelta(minutes=15), min_records=1),
)


def refused(
    store: Store, source: str, at: datetime, count: int = 1, reason: str = "time: 'x' is not RFC 3339", **more: Any
) -> list[dict[str, Any]]:
    """`count` dead letters of records claiming `source`, received at `at`, sent with its system's token."""
    rows = [
        dead_letter_row(
            Refusal(door=more.get("door", "events"), reason=reason, raw=f'{{"n": {n}}}', source=source),
            more.get("token_id", "tok-" + (source_system(source) or "none")),
            at,
            more.get("granted"),  # the token's grant as the door refused it; None: a letter of before migration 19
        )
        for n in range(count)
    ]
    store.insert("dead_letters", rows)
    return rows


def test_refused_records_open_one_exception_per_source_naming_what_and_why(store: Store) -> None:
    t = Tower(store, rules=[REFUSALS])
    refused(store, "wms/dallas", NOW - timedelta(minutes=10), 3, reason="data.order_id: required for asn.sent")
    refused(
        store,
        "wms/dallas",
        NOW - timedelta(minutes=2),
        2,
        reason="time: '2026-11-04' is not RFC 3339",
        door="otlp_logs",
    )
    refused(store, "erp", NOW - timedelta(minutes=16))  # before the window: not counted
    opened, resolved = t.evaluate()
    assert len(opened) == 1 and resolved == []
    [record] = t.active("ingest-refusals").values()
    assert (record.key, record.owner, record.kind, record.severity) == (
        "wms/dallas",
        "integration",
        "technical",
        "high",
    )
    context = record.context
    assert (context["source"], context["refused"], context["window"], context["pending"]) == ("wms/dallas", 5, "15m", 5)
    assert RootCauses([], {}).source_of(record) is None  # holds back none of the source's business alerts
    assert exception_source(record) == "wms/dallas"  # a replay of its dead letters can be asked from it
    assert context["doors"] == ["events", "otlp_logs"]
    assert context["reasons"] == ["data.order_id: required for asn.sent", "time: '2026-11-04' is not RFC 3339"]
    assert (context["since"], context["last_refused"]) == ("2026-11-04T15:20:00.000000Z", "2026-11-04T15:28:00.000000Z")
    assert context["summary"].startswith("5 records refused in 15m: ")
    assert "`tower deadletters replay --source wms/dallas`" in context["next_step"]
    # more refusals, and evaluating again: still the one exception
    refused(store, "wms/dallas", NOW + timedelta(minutes=1))
    t.clock.advance(timedelta(minutes=1))
    assert t.evaluate() == ([], [])
    assert len(t.all("ingest-refusals")) == 1


def test_a_record_that_claimed_no_source_system_counts_for_its_tokens_source(store: Store) -> None:
    """`sap`, `ERP` or `wms/` in a refused record is the sender's garbage, not a source: no exception of its own."""
    t = Tower(store, rules=[REFUSALS], token_sources={"a1b2c3d4e5f6": "erp"})
    for claimed in ("sap", "ERP", "wms/"):
        refused(store, claimed, NOW - timedelta(minutes=1), token_id="a1b2c3d4e5f6", reason="source: not one of")
    t.evaluate()
    active = t.active("ingest-refusals")
    assert sorted(active) == ["erp"] and active["erp"].context["refused"] == 3
    health = sources_health(store, NOW, timedelta(minutes=15), {"a1b2c3d4e5f6": "erp"})
    assert {s.source for s in health.sources} == {"erp"}


def test_a_record_that_claimed_no_source_counts_for_its_tokens_one_source_else_for_the_token(store: Store) -> None:
    t = Tower(store, rules=[REFUSALS], token_sources={"a1b2c3d4e5f6": "tms"})
    refused(store, "", NOW - timedelta(minutes=1), token_id="272ef10c5773", reason="body is not valid JSON")
    refused(store, "", NOW - timedelta(minutes=1), token_id="a1b2c3d4e5f6", reason="body is not valid JSON")
    refused(store, "tms", NOW - timedelta(minutes=1), token_id="a1b2c3d4e5f6", reason="data.shipment_id: required")
    t.evaluate()
    active = t.active("ingest-refusals")
    assert sorted(active) == ["tms", "token 272ef10c5773"]
    assert active["tms"].context["refused"] == 2 and active["tms"].context["pending"] == 2
    assert active["tms"].context["summary"].startswith("2 records refused in 15m: ")
    assert exception_source(active["token 272ef10c5773"]) is None
    assert active["token 272ef10c5773"].context["summary"] == "1 record refused in 15m: body is not valid JSON"
    assert "`tower deadletters replay --token-id 272ef10c5773`" in active["token 272ef10c5773"].context["next_step"]
    # the tms token's unread body is found by --source tms (the token is granted tms): the usual step
    assert "`tower deadletters replay --source tms`" in active["tms"].context["next_step"]


def test_a_token_cannot_open_refusals_in_another_sources_name(store: Store) -> None:
    """The WMS token's 100 records claiming erp/site-0..49 and tms/site-0..49 are refused: one exception, the
    WMS's; its own paths' refusals stay under the path they claimed."""
    t = Tower(store, rules=[REFUSALS])
    denied = "source: '{}' is not allowed for this token (it may send wms)"
    for n in range(50):
        for system in ("erp", "tms"):
            claim = f"{system}/site-{n}"
            refused(store, claim, NOW - timedelta(minutes=1), token_id="tok-wms", reason=denied.format(claim))
    refused(store, "wms/dallas", NOW - timedelta(minutes=1), token_id="tok-wms")
    t.evaluate()
    active = t.active("ingest-refusals")
    assert sorted(active) == ["wms", "wms/dallas"]
    assert (active["wms"].context["source"], active["wms"].context["refused"]) == ("wms", 100)
    assert all("is not allowed for this token" in reason for reason in active["wms"].context["reasons"])
    # nor does the integration health blame the systems it claimed
    health = sources_health(store, NOW, timedelta(minutes=15), {"tok-wms": "wms"})
    assert {s.source: s.refused for s in health.sources} == {"wms": 100, "wms/dallas": 1}


def test_a_token_granted_several_sources_or_none_known_is_keyed_by_the_token(store: Store) -> None:
    """A token granted erp and wms: its claim of wms/reno is its own, its claim of tms is keyed by the token (no one
    source is its); a token whose grant the engine was not given: by the token, whatever it claimed."""
    t = Tower(store, rules=[REFUSALS], token_sources={"tok-both": ["erp", "wms"]})
    refused(store, "wms/reno", NOW - timedelta(minutes=1), token_id="tok-both")
    refused(store, "tms", NOW - timedelta(minutes=1), token_id="tok-both")
    refused(store, "erp", NOW - timedelta(minutes=1), token_id="tok-gone")
    t.evaluate()
    assert sorted(t.active("ingest-refusals")) == ["token tok-both", "token tok-gone", "wms/reno"]


def test_the_next_step_names_the_token_when_its_records_claimed_another_source(store: Store) -> None:
    """The EDI token (granted edi) sends 5 records claiming crm: they are the edi exception's, and `--source edi`
    (which filters on the claim) finds none of them: the next step names the token's id. Another token's records
    that claimed edi itself are found by `--source edi`, named too; the crm token's own refusals are not edi's."""
    t = Tower(store, rules=[REFUSALS], token_sources={**TOKENS, "tok-hub": ["edi", "wms"]})
    denied = "source: 'crm' is not allowed for this token (it may send edi)"
    refused(store, "crm", NOW - timedelta(minutes=3), 5, reason=denied, token_id="tok-edi", granted=["edi"])
    refused(store, "crm", NOW - timedelta(minutes=3), 2, token_id="tok-crm", granted=["crm"])
    t.evaluate()
    active = t.active("ingest-refusals")
    assert sorted(active) == ["crm", "edi"] and active["edi"].context["refused"] == 5
    step = active["edi"].context["next_step"]
    assert "`tower deadletters replay --token-id tok-edi`" in step and "--source" not in step, step
    assert "`tower deadletters replay --source crm`" in active["crm"].context["next_step"]
    # the hub's record claiming edi (its grant covers it) joins the edi exception's letters: both commands
    refused(store, "edi", NOW - timedelta(minutes=2), token_id="tok-hub", granted=["edi", "wms"])
    assert [r.replay_step() for r in t.engine.refusals(REFUSALS, NOW) if r.key == "edi"] == [
        "`tower deadletters replay --token-id tok-edi` and `tower deadletters replay --source edi`"
    ]


def test_a_fixed_grant_rekeys_none_of_the_letters_refused_under_the_old_one(store: Store) -> None:
    """The incident: the EDI token's 5 records claiming crm open the edi exception; the token is then granted crm.
    The letters stay edi's (the grant they were refused under): no crm exception pages again saying "'crm' is not
    allowed", the edi exception does not resolve before a whole quiet window, and then says how many still wait."""
    t = Tower(store, rules=[REFUSALS])
    denied = "source: 'crm' is not allowed for this token (it may send edi)"
    letters = refused(store, "crm", NOW - timedelta(minutes=1), 5, reason=denied, token_id="tok-edi", granted=["edi"])
    assert {letter["refusal_key"] for letter in letters} == {"edi"}
    opened, _ = t.evaluate()
    [record] = t.active("ingest-refusals").values()
    assert (record.key, record.context["pending"]) == ("edi", 5)
    # the fix: the EDI token may now send crm too (the engine reads the grants it was given)
    t.engine.token_sources = {**TOKENS, "tok-edi": ["edi", "crm"]}
    t.clock.advance(timedelta(seconds=13))
    assert t.evaluate() == ([], [])
    assert sorted(t.active("ingest-refusals")) == ["edi"]
    health = sources_health(store, t.clock.now(), timedelta(minutes=15), t.engine.token_sources)
    assert {s.source: s.refused for s in health.sources} == {"edi": 5}
    # two are replayed, one fails again (new versions of the same letters): each keeps its key
    store.insert(
        "dead_letters",
        [status_row(letter, REPLAYED, "replayed", t.clock.now()) for letter in letters[:2]]
        + [status_row(letters[2], PENDING, REPLAY_FAILED + "time: not RFC 3339", t.clock.now())],
    )
    t.clock.advance(timedelta(minutes=1))
    assert t.evaluate() == ([], [])
    assert t.engine.pending_letters(["edi", "crm"]) == {"edi": 3}
    # a whole window without a refusal: recovered, saying the 3 letters still wait
    t.clock.advance(timedelta(minutes=14))
    opened, resolved = t.evaluate()
    assert opened == [] and resolved == [record.id]
    audit = t.exceptions.audit(record.id)
    assert audit[-1]["action"] == "resolved" and audit[-1]["detail"]["pending"] == 3, audit[-1]
    assert t.active("ingest-refusals") == {}


@pytest.mark.parametrize(
    ("claimed", "token", "granted"),
    [
        ("wms/dallas", "tok-w", ["wms"]),
        ("wms", "tok-w", ["wms"]),
        ("erp/site-1", "tok-w", ["wms"]),
        ("", "tok-w", ["wms"]),
        ("sap", "tok-w", ["wms"]),
        ("ERP", "tok-w", ["wms"]),
        ("wms/", "tok-w", ["wms"]),
        ("wms\n", "tok-w", ["wms"]),
        ("tms", "tok-both", ["erp", "wms"]),
        ("erp", "tok-both", ["erp", "wms"]),
        ("erp", "tok-none", []),
        ("", "", []),
    ],
)
def test_the_door_keys_a_letter_as_the_rule_keys_one_stored_before_migration_19(
    store: Store, claimed: str, token: str, granted: list[str]
) -> None:
    """refusal_key (the door's, stored) and REFUSAL_KEY (the rule's, for a letter stored without one) agree."""
    [letter] = refused(store, claimed, NOW, token_id=token)
    params = refusal_key_params({token: granted} if token else {})
    [row] = store.query(f"SELECT {REFUSAL_KEY} AS key FROM dead_letters", params)
    assert row["key"] == refusal_key(letter["source"], token, granted)


@pytest.mark.parametrize(("count", "flagged"), [(2, False), (3, True)])
def test_min_records(store: Store, count: int, flagged: bool) -> None:
    rule = REFUSALS.model_copy(update={"params": RefusalsParams(window=timedelta(minutes=15), min_records=3)})
    t = Tower(store, rules=[rule])
    refused(store, "tms", NOW - timedelta(minutes=5), count)
    t.evaluate()
    assert bool(t.active("ingest-refusals")) is flagged


def test_a_replayed_letter_counts_once_and_a_quiet_window_resolves_with_what_still_waits(store: Store) -> None:
    t = Tower(store, rules=[REFUSALS])
    letters = refused(store, "edi", NOW - timedelta(minutes=5), 4)
    t.evaluate()
    # two of the four are replayed after the fix: new versions of the same letters
    store.insert("dead_letters", [status_row(letter, REPLAYED, "replayed", NOW) for letter in letters[:2]])
    t.clock.advance(timedelta(minutes=1))
    assert t.evaluate() == ([], [])
    [record] = t.active("ingest-refusals").values()
    assert t.engine.refusals(REFUSALS, t.clock.now())[0].refused == 4  # not 6
    # a whole window without a refusal: recovered, saying two records still wait for a replay
    t.clock.advance(timedelta(minutes=10))
    opened, resolved = t.evaluate()
    assert opened == [] and resolved == [record.id]
    [done] = t.all("ingest-refusals")
    assert (done.status, done.resolution) == ("resolved", "recovered")
    audit = t.exceptions.audit(done.id)
    assert audit[-1]["action"] == "resolved" and audit[-1]["detail"]["pending"] == 2, audit[-1]
    assert (audit[-1]["detail"]["refused"], audit[-1]["detail"]["window"]) == (0, "15m")
    # refusals again: a new exception
    refused(store, "edi", t.clock.now())
    opened, _ = t.evaluate()
    assert len(opened) == 1 and len(t.all("ingest-refusals")) == 2


def test_the_doors_refusals_open_the_shipped_rule(store: Store, tmp_path: Path) -> None:
    with start_in_process(tmp_path, store, clock=FixedClock(NOW)) as running:
        assert running.tower is not None
        structured = {"Content-Type": "application/cloudevents+json"}
        with running.client("wms") as http:
            bad = make_event("shipment.confirmed", 1, time="2026-11-04T09:00:00")  # no offset
            assert http.post("/v1/events", json=bad, headers=structured).status_code == 400
            # a body that names no source counts for the wms token's one source
            assert http.post("/v1/events", content=b"not json", headers=structured).status_code == 400
        report = running.tower.sla.evaluate(full=False)
    assert report.errors == {}
    [record] = ExceptionStore(store, FixedClock(NOW)).active_by_key("ingest-refusals").values()
    assert (record.key, record.owner, record.context["refused"]) == ("wms", "integration", 2)
    assert [r.split(":")[0] for r in record.context["reasons"]] == ["body is not valid JSON", "time"]
    # the overview's integration health counts it for its source
    [wms] = [s for s in sources_health(store, NOW, timedelta(minutes=15)).sources if s.source == "wms"]
    assert wms.open_technical == 1


def test_the_shipped_refusals_rule() -> None:
    rule = {r.id: r for r in load_rules(default_rules_dir())}["ingest-refusals"]
    assert isinstance(rule, RefusalsRule) and rule.enabled
    assert rule.params == RefusalsParams(window=timedelta(minutes=15), min_records=1)
    assert (rule.owner, rule.kind, rule.severity) == ("integration", "technical", "high")
