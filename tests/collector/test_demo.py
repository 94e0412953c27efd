"""`tower demo`: the scenario on a fixed clock, checked against DESIGN.md's rules computed here from the
generated events, and end-to-end against a running tower over the real doors."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from collector.demo.scenario import (
    SERVICES,
    Delivery,
    DemoEvent,
    DemoSpan,
    LiveFeed,
    Scenario,
    ScenarioConfig,
    build_scenario,
)
from collector.demo.senders import DemoSender, run_live
from kernel.clock import FixedClock
from tests.support import RunningTower
from tower.commands.demo import demo

WEDNESDAY = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)  # 09:30 in Dallas
MONDAY_MORNING = datetime(2026, 11, 9, 13, 0, tzinfo=UTC)  # 07:00 in Dallas: the history is a weekend
ZONES = {"DAL": "America/Chicago", "ATL": "America/New_York", "RNO": "America/Los_Angeles"}
SMALL_FAULTS = {
    "late-release": 2,
    "missed-ship-cutoff": 2,
    "late-asn": 2,
    "missing-invoice": 1,
    "invoice-mismatch": 2,
    "inventory-drift": 1,
    "error-burst": 1,
    "silent-source": 1,
    "duplicate-delivery": 2,
    "out-of-order-delivery": 2,
}
BAD = {"late", "breached"}


# --- DESIGN.md's rules, computed independently from events and spans ------------------------------------


def cutoff_deadline(released: datetime, zone: str) -> datetime:
    """ship-cutoff: before 14:00 on Mon-Fri -> 23:59:59 that day, else 23:59:59 the next business day."""
    local = released.astimezone(ZoneInfo(zone))
    day: date = local.date()
    if local.isoweekday() > 5 or local.time() >= time(14):
        day += timedelta(days=1)
        while day.isoweekday() > 5:
            day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=ZoneInfo(zone))


def status(end: datetime | None, due: datetime, now: datetime) -> str:
    if end is not None and end <= now:
        return "met" if end <= due else "late"
    return "breached" if now > due else "pending"


def first(events: Iterable[DemoEvent], event_type: str, key: str, now: datetime) -> dict[str, DemoEvent]:
    out: dict[str, DemoEvent] = {}
    for e in sorted(events, key=lambda e: e.time):
        if e.type == event_type and e.time <= now and str(e.data[key]) not in out:
            out[str(e.data[key])] = e
    return out


def when(events: dict[str, DemoEvent], key: str) -> datetime | None:
    found = events.get(key)
    return None if found is None else found.time


def sla_statuses(events: list[DemoEvent], now: datetime, zone_of: dict[str, str]) -> dict[tuple[str, str], str]:
    """Status of every case of the four SLA rules at `now`."""
    accepted = first(events, "order.accepted", "order_id", now)
    released = first(events, "order.released", "order_id", now)
    shipped_by_order = first(events, "shipment.confirmed", "order_id", now)
    shipped = first(events, "shipment.confirmed", "shipment_id", now)
    asn = first(events, "asn.sent", "shipment_id", now)
    invoiced = first(events, "invoice.posted", "order_id", now)
    out: dict[tuple[str, str], str] = {}
    for order, start in accepted.items():
        out[("order-release", order)] = status(when(released, order), start.time + timedelta(hours=2), now)
    for order, start in released.items():
        due = cutoff_deadline(start.time, zone_of[start.data["warehouse"]])
        out[("ship-cutoff", order)] = status(when(shipped_by_order, order), due, now)
    for shipment, start in shipped.items():
        out[("asn-sent", shipment)] = status(when(asn, shipment), start.time + timedelta(hours=1), now)
    for order, start in shipped_by_order.items():
        out[("invoice-posting", order)] = status(when(invoiced, order), start.time + timedelta(hours=24), now)
    return out


def invoice_mismatches(events: list[DemoEvent]) -> set[str]:
    accepted = first(events, "order.accepted", "order_id", datetime.max.replace(tzinfo=UTC))
    shipped = first(events, "shipment.confirmed", "order_id", datetime.max.replace(tzinfo=UTC))
    out = set()
    for e in events:
        if e.type != "invoice.posted":
            continue
        order_amount = Decimal(str(accepted[e.data["order_id"]].data["amount"]))
        amount_off = abs(Decimal(str(e.data["amount"])) - order_amount) > order_amount * Decimal("0.005")
        if amount_off or e.data["quantity"] != shipped[e.data["order_id"]].data["quantity"]:
            out.add(e.data["invoice_id"])
    return out


def inventory_state(events: list[DemoEvent], now: datetime) -> tuple[set[str], set[str]]:
    """(pairs whose latest ERP and WMS snapshots differ, pairs with a side silent for 2 hours)."""
    latest: dict[tuple[str, str, str], DemoEvent] = {}
    for e in sorted(events, key=lambda e: e.time):
        if e.type == "inventory.snapshot" and e.system in ("erp", "wms") and e.time <= now:
            latest[(e.system, e.data["sku"], e.data["location"])] = e
    pairs = {(sku, loc) for _, sku, loc in latest}
    drift, stale = set(), set()
    for sku, loc in pairs:
        erp, wms = latest.get(("erp", sku, loc)), latest.get(("wms", sku, loc))
        if erp is None or wms is None or now - min(erp.time, wms.time) > timedelta(hours=2):
            stale.add(f"{sku}@{loc}")
        elif erp.data["quantity"] != wms.data["quantity"]:
            drift.add(f"{sku}@{loc}")
    return drift, stale


def error_series(spans: list[DemoSpan], at: datetime) -> set[str]:
    """(service|span name) with >= 20 spans and > 5% errors in the 15 minutes before `at`."""
    window: dict[str, list[bool]] = defaultdict(list)
    for s in spans:
        if at - timedelta(minutes=15) <= s.start <= at:
            window[f"{s.service}|{s.name}"].append(bool(s.error))
    return {key for key, failed in window.items() if len(failed) >= 20 and sum(failed) / len(failed) > 0.05}


def silent_sources(events: list[DemoEvent], spans: list[DemoSpan], now: datetime) -> set[str]:
    last: dict[str, datetime] = {}
    for system, at in [(e.system, e.time) for e in events] + [(SERVICES[s.service], s.start) for s in spans]:
        last[system] = max(last.get(system, at), at)
    assert set(last) == set(SERVICES.values())
    return {system for system, at in last.items() if now - at > timedelta(minutes=30)}


def expected(scenario: Scenario, rule: str) -> set[str]:
    return {f.key for f in scenario.faults if f.rule == rule and f.expected != "none"}


def assert_faults_match_rules(
    scenario: Scenario, events: list[DemoEvent], spans: list[DemoSpan], now: datetime
) -> None:
    """Every injected fault trips its rule, nothing else does, under either ship-cutoff zone."""
    for zones in (ZONES, dict.fromkeys(ZONES, "America/Chicago")):
        statuses = sla_statuses(events, now, zones)
        for rule in ("order-release", "ship-cutoff", "asn-sent", "invoice-posting"):
            flagged = {key for (r, key), s in statuses.items() if r == rule and s in BAD}
            assert flagged == expected(scenario, rule), (rule, zones)
        for f in scenario.faults:
            if f.rule in ("order-release", "ship-cutoff", "asn-sent", "invoice-posting") and f.expected != "none":
                assert statuses[(f.rule, f.key)] == f.expected, f
    assert invoice_mismatches(events) == expected(scenario, "invoice-match")
    drift, stale = inventory_state(events, now)
    assert drift == expected(scenario, "inventory-sync")
    assert stale == set()
    assert error_series(spans, now) == expected(scenario, "integration-errors")
    assert silent_sources(events, spans, now) == expected(scenario, "source-silence")


def delivered(deliveries: list[Delivery]) -> tuple[list[DemoEvent], list[DemoSpan]]:
    events = [e for d in deliveries for e in d.events]
    spans = [s for d in deliveries for s in d.spans]
    return events, spans


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return build_scenario(ScenarioConfig(seed=11), FixedClock(WEDNESDAY))


# --- scenario ----------------------------------------------------------------------------------------


def test_same_seed_and_clock_give_the_same_story() -> None:
    config = ScenarioConfig(seed=3, orders=60, skus=4)
    a, b = build_scenario(config, FixedClock(WEDNESDAY)), build_scenario(config, FixedClock(WEDNESDAY))
    assert a.manifest() == b.manifest()
    assert [e.cloudevent() for e in a.events] == [e.cloudevent() for e in b.events]
    assert a.spans == b.spans
    assert a.deliveries == b.deliveries
    other = build_scenario(ScenarioConfig(seed=4, orders=60, skus=4), FixedClock(WEDNESDAY))
    assert other.manifest()["faults"] != a.manifest()["faults"]
    assert {e.id for e in other.events}.isdisjoint({e.id for e in a.events})


def test_every_fault_trips_its_rule_and_nothing_else(scenario: Scenario) -> None:
    assert scenario.shortfall == {}
    config = scenario.config
    # an inventory drift the WMS counts short is listed twice: inventory-sync, and the oversell it causes
    injected = Counter(f.fault for f in scenario.faults if "span_id" not in f.refs and f.rule != "inventory-oversell")
    assert injected == {kind: n for kind, n in config.faults.items() if n}
    events, spans = delivered(scenario.deliveries)
    assert_faults_match_rules(scenario, events, spans, scenario.now)
    # Variants: closed breaches (late) and open ones (never happened).
    assert {f.expected for f in scenario.faults if f.fault == "late-release"} == {"late", "breached"}
    mismatches = [f.detail for f in scenario.faults if f.fault == "invoice-mismatch"]
    assert any("USD" in d for d in mismatches) and any("units" in d for d in mismatches)


def test_happy_cases_are_met_and_the_rest_pending(scenario: Scenario) -> None:
    events, _ = delivered(scenario.deliveries)
    statuses = sla_statuses(events, scenario.now, ZONES)
    faulted = {(f.rule, f.key) for f in scenario.faults if f.expected != "none"}
    pending = {(p["rule"], p["key"]) for p in scenario.manifest()["pending"]}
    assert pending, "the backfill ends mid-flow, so some cases are still open"
    for case, s in statuses.items():
        if case in faulted:
            continue
        assert s == ("pending" if case in pending else "met"), case
    for p in scenario.pending:
        assert p.due_at > scenario.now
    counts = scenario.manifest()["cases"]
    for rule in ("order-release", "ship-cutoff", "asn-sent", "invoice-posting"):
        ours = Counter(s for (r, _), s in statuses.items() if r == rule)
        assert counts[rule] == {"cases": sum(ours.values())} | {
            k: ours[k] for k in ("met", "late", "breached", "pending")
        }


def test_happy_releases_and_shipments_keep_a_margin(scenario: Scenario) -> None:
    faulted = {f.refs.get("order_id") for f in scenario.faults if f.expected != "none"}
    for plan in scenario.orders:
        if plan.order_id in faulted or plan.shipped is None or plan.released is None:
            continue
        assert plan.released - plan.accepted <= timedelta(hours=1, minutes=15)
        for zone in (ZONES[plan.warehouse.code], "America/Chicago"):
            assert cutoff_deadline(plan.released, zone) - plan.shipped >= timedelta(hours=4)


def test_duplicates_and_out_of_order_deliveries(scenario: Scenario) -> None:
    events, spans = delivered(scenario.deliveries)
    twice = {i for i, n in Counter(e.id for e in events).items() if n > 1}
    manifest = scenario.manifest()["faults"]
    assert twice == {f["refs"]["event_id"] for f in manifest if "event_id" in f["refs"]}
    assert len(twice) == scenario.config.count("duplicate-delivery")
    assert {e.system for e in events if e.id in twice} >= {"erp", "wms"}  # CloudEvents and OTLP logs
    span_twice = {ids for ids, n in Counter((s.trace_id, s.span_id) for s in spans).items() if n > 1}
    assert span_twice == {(f["refs"]["trace_id"], f["refs"]["span_id"]) for f in manifest if "span_id" in f["refs"]}
    assert len({(e.source, e.id) for e in events}) == len(scenario.events)

    position: dict[str, int] = {}
    for index, d in enumerate(scenario.deliveries):
        for e in d.events:
            position.setdefault(e.id, index)
    swapped = [f for f in scenario.faults if f.fault == "out-of-order-delivery"]
    assert len(swapped) == scenario.config.count("out-of-order-delivery")
    by_id = {e.id: e for e in events}
    for f in swapped:
        end, start = by_id[f.refs["end_event"]], by_id[f.refs["start_event"]]
        assert end.time > start.time
        assert position[end.id] < position[start.id]
        assert f.expected == "none"


def test_spans_carry_business_keys_and_link_to_events(scenario: Scenario) -> None:
    spans = {(s.trace_id, s.span_id): s for s in scenario.spans}
    for e in scenario.events:
        if e.type in ("inventory.snapshot",):
            continue
        span = spans[(e.trace_id, e.span_id)]
        assert span.attributes.get("order.id") == e.data["order_id"]
        assert span.start <= e.time
    services = Counter(s.service for s in scenario.spans)
    assert set(services) == set(SERVICES)
    for s in scenario.spans:
        assert timedelta(0) < s.end - s.start < timedelta(seconds=10)
        if s.parent_span_id:
            parent = spans[(s.trace_id, s.parent_span_id)]
            assert parent.start <= s.start and s.end <= parent.end
    bursts = [s for s in scenario.spans if s.error and s.start > scenario.now - timedelta(minutes=15)]
    assert len(bursts) == 30 and {(s.service, s.name) for s in bursts} == {("middleware", "erp->wms inventory sync")}


def test_a_weekend_history_reports_what_it_could_not_inject() -> None:
    clock = FixedClock(MONDAY_MORNING)
    monday = build_scenario(ScenarioConfig(seed=5), clock)
    # Everything released on the weekend is due Monday 23:59:59: no ship-cutoff case is decided yet.
    assert monday.shortfall.get("missed-ship-cutoff") == 3
    events, spans = delivered(monday.deliveries)
    assert_faults_match_rules(monday, events, spans, monday.now)


@pytest.mark.parametrize(
    "now",
    [
        datetime(2026, 11, 2, 8, 0, tzinfo=UTC),  # the history crosses the end of daylight saving time
        datetime(2026, 11, 6, 23, 10, tzinfo=UTC),  # Friday evening: releases after 14:00 are due Monday
        datetime(2027, 1, 1, 3, 0, tzinfo=UTC),  # New Year's Eve in Reno, a Friday
    ],
)
def test_faults_hold_on_awkward_clocks(now: datetime) -> None:
    story = build_scenario(ScenarioConfig(seed=8, orders=120, history_hours=60), FixedClock(now))
    events, spans = delivered(story.deliveries)
    assert_faults_match_rules(story, events, spans, story.now)
    assert sum(f.expected != "none" for f in story.faults) >= 10


def test_live_phase_keeps_every_rule_as_the_manifest_says(scenario: Scenario) -> None:
    clock = FixedClock(scenario.now)
    feed = LiveFeed(scenario, rate=3)
    sent: list[Delivery] = []

    class Recorder:
        def send(self, delivery: Delivery) -> None:
            sent.append(delivery)

        def flush(self) -> None:
            pass

    run_live(
        feed,
        Recorder(),
        clock,
        sleep=lambda s: clock.advance(timedelta(seconds=s)),
        until=scenario.now + timedelta(hours=3),
        tick_seconds=60,
    )
    assert clock.now() == scenario.now + timedelta(hours=3)
    live_events, live_spans = delivered(sent)
    assert feed.orders == 540
    assert Counter(e.type for e in live_events)["order.created"] == 540
    assert all(e.system != "tms" for e in live_events) and all(s.service != "tms-sync" for s in live_spans)
    backfill_events, backfill_spans = delivered(scenario.deliveries)
    events, spans = backfill_events + live_events, backfill_spans + live_spans
    assert_faults_match_rules(scenario, events, spans, clock.now())
    for minutes in range(0, 181, 5):  # windows straddling the end of the backfill included
        assert error_series(spans, scenario.now + timedelta(minutes=minutes)) == expected(
            scenario, "integration-errors"
        )
    # Pending cases of the backfill got their ends in time.
    statuses = sla_statuses(events, clock.now(), ZONES)
    assert all(statuses[(p.rule, p.key)] in ("met", "pending") for p in scenario.pending)
    assert sum(statuses[(p.rule, p.key)] == "met" for p in scenario.pending) > len(scenario.pending) // 2


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        ScenarioConfig(faults={"gremlins": 1})
    with pytest.raises(ValueError, match="silence"):
        ScenarioConfig(silence_minutes=20)


# --- end to end against a running tower ----------------------------------------------------------------


def _rows(running: RunningTower, sql: str, **params: Any) -> list[dict[str, Any]]:
    assert running.tower is not None
    return running.tower.store.query(sql, params)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def test_demo_lands_in_the_tower_over_the_real_doors(tower: RunningTower) -> None:
    clock = FixedClock(WEDNESDAY)
    story = build_scenario(ScenarioConfig(seed=2, orders=40, skus=3, faults=SMALL_FAULTS), clock)
    assert story.shortfall == {}
    sender = DemoSender(tower.http_url, {system: tower.token(system) for system in set(SERVICES.values())})
    try:
        sender.send_all(story.deliveries)
        assert sender.stats.failed == 0, sender.stats.rejections
        assert sender.stats.spans_exported == len(story.spans) + story.config.count("duplicate-delivery")

        by_type = _rows(tower, "SELECT type, count() AS n FROM business_events FINAL GROUP BY type")
        assert {r["type"]: r["n"] for r in by_type} == Counter(e.type for e in story.events)
        by_source = _rows(tower, "SELECT source, count() AS n FROM business_events FINAL GROUP BY source")
        assert {r["source"]: r["n"] for r in by_source} == Counter(e.source for e in story.events)
        doors = _rows(tower, "SELECT system, groupUniqArray(door) AS doors FROM business_events FINAL GROUP BY system")
        doors_of = {r["system"]: r["doors"] for r in doors}
        assert len(doors_of["wms"]) == 1 and doors_of["wms"] != doors_of["erp"]  # OTLP logs vs CloudEvents
        sample = next(e for e in story.events if e.type == "shipment.confirmed")
        stored = _rows(
            tower,
            "SELECT time, trace_id, span_id, quantity FROM business_events FINAL WHERE id = {id:String}",
            id=sample.id,
        )
        assert stored == [
            {
                "time": _ts(sample.time),
                "trace_id": sample.trace_id,
                "span_id": sample.span_id,
                "quantity": sample.data["quantity"],
            }
        ]
        assert _rows(tower, "SELECT count() AS n FROM dead_letters") == [{"n": 0}]

        spans = _rows(
            tower,
            "SELECT ServiceName AS service, uniqExact(TraceId, SpanId) AS n, count() AS raw"
            " FROM otel_traces GROUP BY ServiceName",
        )
        assert {r["service"]: r["n"] for r in spans} == Counter(s.service for s in story.spans)
        assert sum(r["raw"] for r in spans) == len(story.spans) + story.config.count("duplicate-delivery")
        burst = _rows(
            tower,
            "SELECT countIf(lower(StatusCode) LIKE '%error%') AS errors, count() AS n FROM otel_traces"
            " WHERE ServiceName = 'middleware' AND SpanName = 'erp->wms inventory sync'"
            " AND Timestamp >= {since:DateTime64(9, 'UTC')}",
            since=story.now - timedelta(minutes=15),
        )
        assert burst == [{"errors": 30, "n": 60}]
        logs = _rows(
            tower,
            "SELECT uniqExact(LogAttributes['cloudevents.event_id']) AS n, uniqExact(EventName) AS names"
            " FROM otel_logs",
        )
        wms_events = [e for e in story.events if e.system == "wms"]
        assert logs == [{"n": len(wms_events), "names": len({e.type for e in wms_events})}]

        silent_since = story.now - timedelta(minutes=30)
        assert _rows(
            tower,
            "SELECT count() AS n FROM business_events FINAL WHERE system = 'tms' AND time > {t:DateTime64(6, 'UTC')}",
            t=silent_since,
        ) == [{"n": 0}]
        tms_spans = _rows(
            tower,
            "SELECT countIf(Timestamp > {t:DateTime64(9, 'UTC')}) AS recent, count() AS n FROM otel_traces"
            " WHERE ResourceAttributes['tower.source'] = 'tms'",
            t=silent_since,
        )
        assert tms_spans[0]["recent"] == 0 and tms_spans[0]["n"] > 0

        # A few minutes of live phase on the same fixed clock: new orders arrive through the same doors.
        feed = LiveFeed(story, rate=1)
        run_live(
            feed,
            sender,
            clock,
            sleep=lambda s: clock.advance(timedelta(seconds=s)),
            until=story.now + timedelta(minutes=5),
            tick_seconds=60,
        )
        created = _rows(tower, "SELECT count() AS n FROM business_events FINAL WHERE type = 'order.created'")
        assert created == [{"n": 40 + feed.orders}] and feed.orders == 5
    finally:
        sender.close()


def test_cli_demo_writes_the_manifest_and_sends_it_all(tower: RunningTower, tmp_path: Path) -> None:
    token_file = tmp_path / "tokens.json"
    token_file.write_text(json.dumps(tower.settings.ingest.tokens))
    manifest_path = tmp_path / "manifest.json"
    args = ["--url", tower.http_url, "--token-file", str(token_file), "--manifest", str(manifest_path)]
    args += ["--orders", "20", "--skus", "2", "--history-hours", "30", "--seed", "9", "--no-live"]
    args += ["--fault", "duplicate-delivery=1", "--fault", "invoice-mismatch=1"]
    result = CliRunner().invoke(demo, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads(manifest_path.read_text())
    assert {"faults", "pending", "cases", "volumes", "now"} <= set(manifest)
    for fault in manifest["faults"]:
        assert {"fault", "rule", "key", "detail", "expected"} <= set(fault)
    volumes = manifest["volumes"]
    total = _rows(tower, "SELECT count() AS n FROM business_events FINAL")
    assert total == [{"n": volumes["events_total"]}]
    spans = _rows(tower, "SELECT uniqExact(TraceId, SpanId) AS n FROM otel_traces")
    assert spans == [{"n": volumes["spans"]}]
    assert "manifest" in result.output
