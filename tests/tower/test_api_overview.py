"""The dashboard's read routes on hand-built data with known answers: who am I, facets, the overview, source
health, SLA trend and breaches; and the exception list's age filters and sorts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import tests.support
from collector.deadletters import REPLAYED, Refusal, dead_letter_row, status_row
from kernel.api_auth import token_id
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore, NewException
from kernel.store import Store
from tests.factories import case_row, event_row, make_event, settings_with_every_role, span_row
from tests.support import RunningTower, start_in_process
from tower.case_days import case_days

NOW = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)  # a Wednesday; Chicago is UTC-6
H = timedelta(hours=1)
M = timedelta(minutes=1)


@pytest.fixture
def tower_at_now(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningTower]:
    """An in-process tower whose clock stands at NOW, with a token for each role."""
    monkeypatch.setattr(tests.support, "make_settings", settings_with_every_role)
    with start_in_process(tmp_path, store, clock=FixedClock(NOW)) as running:
        yield running


def get(tower: RunningTower, path: str, role: str = "viewer", **params: Any) -> Any:
    with tower.api(role) as http:
        response = http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def open_at(store: Store, at: datetime, *found: NewException) -> list[str]:
    """Open exceptions with the clock at `at`; their ids."""
    return [e.id for e in ExceptionStore(store, FixedClock(at)).open_many(list(found))]


def exc(
    key: str, owner: str = "warehouse", severity: str = "high", rule: str = "ship-cutoff", **ctx: Any
) -> NewException:
    return NewException(rule, key, "business", owner, severity, due_at=NOW - 2 * H, context=ctx)


def test_whoami_names_the_role_and_its_rights(tower_at_now: RunningTower) -> None:
    rights = {role: get(tower_at_now, "/api/whoami", role) for role in ("viewer", "operator", "finance", "admin")}
    assert {r: (a["role"], a["may_act"], a["may_report"]) for r, a in rights.items()} == {
        "viewer": ("viewer", False, False),
        "operator": ("operator", True, False),
        "finance": ("finance", False, True),
        "admin": ("admin", True, True),
    }
    assert rights["viewer"]["now"] == "2026-11-04T15:30:00Z"
    assert len({a["token_id"] for a in rights.values()}) == 4


def test_facets_list_the_configured_owners_and_rules(tower_at_now: RunningTower) -> None:
    facets = get(tower_at_now, "/api/facets")
    assert {"customer_service", "warehouse", "transportation", "finance", "integration"} <= set(facets["owners"])
    types = {r["id"]: r["type"] for r in facets["rules"]}
    assert types["order-release"] == "sla" and types["invoice-match"] == "reconciliation"
    assert types["source-silence"] == "technical"
    assert facets["statuses"] == ["open", "acknowledged", "resolved"]


def test_overview_counts_active_exceptions_by_owner_and_severity(tower_at_now: RunningTower, store: Store) -> None:
    a, b, c, d = open_at(
        store,
        NOW - 30 * H,
        exc("SO-1"),
        exc("SO-2"),
        exc("SO-3", severity="medium"),
        exc("SO-4", owner="finance", severity="critical", rule="invoice-posting"),
    )
    people = ExceptionStore(store, FixedClock(NOW - H))
    people.acknowledge(c, actor="ann")
    people.resolve(d, actor="ann")
    people.add_note(a, "calling the carrier", actor="bob")
    overview = get(tower_at_now, "/api/overview")
    assert (overview["active"], overview["open"], overview["acknowledged"]) == (3, 2, 1)
    assert overview["by_owner"] == [
        {"owner": "warehouse", "severity": "high", "open": 2, "acknowledged": 0},
        {"owner": "warehouse", "severity": "medium", "open": 0, "acknowledged": 1},
    ]
    # changes in the last 24 hours: the ack, the resolution and the note (the openings were 30 hours ago)
    changes = overview["changes"]
    assert changes["since"] == "2026-11-03T15:30:00Z"
    assert changes["counts"] == {"acknowledged": 1, "note": 1, "resolved": 1}
    assert {(x["action"], x["key"], x["actor"], x["status"]) for x in changes["latest"]} == {
        ("acknowledged", "SO-3", "ann", "acknowledged"),
        ("resolved", "SO-4", "ann", "resolved"),
        ("note", "SO-1", "bob", "open"),
    }
    # since an earlier moment: the openings too, newest first
    earlier = get(tower_at_now, "/api/overview", since="2026-11-03T00:00:00Z")["changes"]
    assert earlier["counts"] == {"acknowledged": 1, "note": 1, "opened": 4, "resolved": 1}
    assert [x["at"] for x in earlier["latest"]] == sorted((x["at"] for x in earlier["latest"]), reverse=True)
    assert b in {x["exception_id"] for x in earlier["latest"]}


def test_overview_compliance_today_7_and_30_days_and_at_risk(tower_at_now: RunningTower, store: Store) -> None:
    day = datetime(2026, 11, 4, tzinfo=UTC)
    rows = [
        # today (UTC): started 03:00 (before Chicago's day began at 06:00 UTC) and 10:00
        case_row("order-release", "T1", day + 3 * H, day + 5 * H, "met", ended_at=day + 4 * H),
        case_row("order-release", "T2", day + 10 * H, day + 12 * H, "late", ended_at=day + 13 * H, customer_id="C-1"),
        case_row("order-release", "R1", NOW - H, NOW + 10 * M, "at_risk", customer_id="C-2"),
        case_row("order-release", "R2", NOW - H, NOW + 5 * M, "at_risk", warehouse="DAL"),
        # three days ago
        *(
            case_row("order-release", f"W{i}", NOW - 72 * H, NOW - 70 * H, "met", ended_at=NOW - 71 * H)
            for i in range(2)
        ),
        case_row("order-release", "W2", NOW - 72 * H, NOW - 70 * H, "breached"),
        # twenty days ago
        case_row("order-release", "M1", NOW - 480 * H, NOW - 478 * H, "met", ended_at=NOW - 479 * H),
        case_row("order-release", "M2", NOW - 480 * H, NOW - 478 * H, "late", ended_at=NOW - 477 * H),
        # forty days ago: in no window
        *(case_row("order-release", f"O{i}", NOW - 960 * H, NOW - 958 * H, "met") for i in range(5)),
        case_row("asn-sent", "SH-1", NOW - 2 * H, NOW - H, "breached"),
    ]
    store.insert("sla_cases", rows)
    overview = get(tower_at_now, "/api/overview")
    by_rule = {r["rule"]: r for r in overview["compliance"]}
    release = by_rule["order-release"]
    assert release["today"] == {"cases": 4, "met": 1, "late": 1, "breached": 0, "compliance": 0.5}
    assert release["last_7_days"] == {"cases": 7, "met": 3, "late": 1, "breached": 1, "compliance": 0.6}
    assert release["last_30_days"] == {"cases": 9, "met": 4, "late": 2, "breached": 1, "compliance": 0.571429}
    assert by_rule["asn-sent"]["today"]["compliance"] == 0.0
    # every configured SLA rule is listed, with zeros when it has no case
    assert by_rule["invoice-posting"]["last_30_days"] == {
        "cases": 0,
        "met": 0,
        "late": 0,
        "breached": 0,
        "compliance": None,
    }
    assert overview["at_risk"] == 2 and release["at_risk"] == 2
    assert [(c["key"], c["due_at"]) for c in overview["at_risk_cases"]] == [
        ("R2", "2026-11-04T15:35:00Z"),
        ("R1", "2026-11-04T15:40:00Z"),
    ]
    assert overview["at_risk_cases"][0]["warehouse"] == "DAL"
    # the reading is reused until the engine writes cases: then the next overview reads them again
    store.insert("sla_cases", [case_row("order-release", "R1", NOW - H, NOW + 10 * M, "breached", version=2)])
    again = {r["rule"]: r for r in get(tower_at_now, "/api/overview")["compliance"]}["order-release"]
    assert again["today"] == {"cases": 4, "met": 1, "late": 1, "breached": 1, "compliance": 0.333333}
    assert again["at_risk"] == 1
    # today in Chicago starts at 06:00 UTC: the 03:00 case is yesterday's
    chicago = get(tower_at_now, "/api/overview", tz="America/Chicago")
    assert chicago["today_starts"] == "2026-11-04T06:00:00Z"
    today = {r["rule"]: r for r in chicago["compliance"]}["order-release"]["today"]
    assert today == {"cases": 3, "met": 0, "late": 1, "breached": 1, "compliance": 0.0}


def test_overview_refuses_an_unknown_time_zone(tower_at_now: RunningTower) -> None:
    with tower_at_now.api("viewer") as http:
        response = http.get("/api/overview", params={"tz": "Mars/Olympus"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "tz"]


def test_sources_health_per_source(tower_at_now: RunningTower, store: Store) -> None:
    spans = [
        span_row(
            "t1",
            f"s{i}",
            NOW - timedelta(minutes=14) + timedelta(minutes=i),
            service="wms-connector",
            status="Error" if i < 2 else "Ok",
        )
        | {"Duration": (i + 1) * 1_000_000, "ResourceAttributes": {"tower.source": "wms/dallas"}}
        for i in range(10)
    ]
    spans.append(
        span_row("t1", "s0", NOW - timedelta(minutes=14), service="wms-connector")  # a redelivery
        | {"ResourceAttributes": {"tower.source": "wms/dallas"}, "StatusCode": "Error"}
    )
    spans.append(
        span_row("t2", "old", NOW - 2 * H, service="wms-connector")
        | {"ResourceAttributes": {"tower.source": "wms/dallas"}}
    )
    spans.append(span_row("t3", "x", NOW - 5 * M, service="own-exporter"))  # no tower.source
    store.insert("otel_traces", spans)
    events = [
        event_row(make_event("order.accepted", time=(NOW - timedelta(minutes=m)).isoformat())) for m in (1, 2, 3, 20)
    ]
    events.append(event_row(make_event("asn.sent", source="tms", time=(NOW - 3 * H).isoformat())))
    store.insert("business_events", events)
    open_at(
        store, NOW, NewException("source-silence", "tms", "technical", "integration", "high", context={"source": "tms"})
    )
    refusals = [Refusal("events", "time: not RFC 3339", f'{{"n": {n}}}', source="crm") for n in range(3)]
    crm_token = token_id(tower_at_now.token("crm"))  # a refusal counts for a claim its token may send
    letters = [dead_letter_row(r, crm_token, NOW - timedelta(minutes=2)) for r in refusals]
    letters.append(status_row(letters[0], REPLAYED, "replayed", NOW))  # a second version of one: counted once
    letters.append(
        dead_letter_row(Refusal("events", "old", "{}", source="crm"), crm_token, NOW - timedelta(minutes=20))
    )
    # the erp token claiming crm blames no one else: counted for erp, its one source
    letters.append(
        dead_letter_row(Refusal("events", "not allowed", "{}", source="crm"), token_id(tower_at_now.token("erp")), NOW)
    )
    # a body that could not be read claims no source: it counts for its token's one source (erp)
    unreadable = Refusal("events", "body: not JSON", "<xml/>", source="")
    letters.append(dead_letter_row(unreadable, token_id(tower_at_now.token("erp")), NOW - M))
    letters.append(dead_letter_row(unreadable, "unknown-token", NOW - M))  # nobody's: not listed
    store.insert("dead_letters", letters)

    health = get(tower_at_now, "/api/sources/health")
    assert health["window_minutes"] == 15
    rows = {r["source"]: r for r in health["sources"]}
    assert set(rows) == {"wms/dallas", "own-exporter", "erp", "tms", "crm"}
    crm = rows["crm"]  # every record refused: listed for its refusals alone
    assert (crm["refused"], crm["events"], crm["spans"], crm["last_seen"]) == (3, 0, 0, None)
    assert rows["erp"]["refused"] == 2
    wms = rows["wms/dallas"]
    assert (wms["spans"], wms["errors"], wms["error_rate"], wms["events"]) == (10, 2, 0.2, 0)
    assert wms["spans_per_minute"] == round(10 / 15, 3)
    assert 9.0 <= wms["latency_p95_ms"] <= 10.0
    assert wms["last_seen"] == "2026-11-04T15:25:00Z" and wms["silent_minutes"] == 5.0
    erp = rows["erp"]
    assert (erp["spans"], erp["events"], erp["error_rate"], erp["latency_p95_ms"]) == (0, 3, None, None)
    assert erp["last_event"] == "2026-11-04T15:29:00Z" and erp["silent_minutes"] == 1.0
    tms = rows["tms"]
    assert (tms["events"], tms["silent_minutes"], tms["open_technical"]) == (0, 180.0, 1)
    assert rows["own-exporter"]["spans"] == 1
    wider = {r["source"]: r for r in get(tower_at_now, "/api/sources/health", minutes=30)["sources"]}
    assert wider["erp"]["events"] == 4
    assert erp["arrival_lag_p50_seconds"] is None  # none of its events was received in the window


def test_sources_health_says_how_late_events_arrive(tower_at_now: RunningTower, store: Store) -> None:
    """A WMS that sends its confirmations in batches: each arrives minutes to an hour after it happened."""

    def confirmed(n: int, happened: timedelta, received: timedelta) -> dict[str, Any]:
        event = make_event("shipment.confirmed", n, source="wms", time=(NOW - happened).isoformat())
        return event_row(event, received_at=NOW - received)

    store.insert(
        "business_events",
        [
            *(confirmed(n, timedelta(minutes=3 + 2 * n), M) for n in range(1, 5)),  # 4, 6, 8, 10 minutes late
            confirmed(5, 61 * M, M),  # an hour late
            confirmed(6, 40 * M, 30 * M),  # received before the window: not counted
        ],
    )
    ahead = make_event("order.accepted", 9, source="erp", time=(NOW + 4 * H - 2 * M).isoformat())
    store.insert("business_events", [event_row(ahead, received_at=NOW - 2 * M)])  # a clock 4 hours ahead
    sources = {r["source"]: r for r in get(tower_at_now, "/api/sources/health")["sources"]}
    wms = sources["wms"]
    assert wms["arrival_lag_p50_seconds"] == 480.0
    assert 600.0 < wms["arrival_lag_p95_seconds"] <= 3600.0
    erp = sources["erp"]
    assert erp["arrival_lag_p50_seconds"] == -4 * 3600.0  # arrived four hours before it happened
    assert (erp["events"], erp["last_event"], erp["silent_minutes"]) == (0, None, None)  # not seen in the future


def test_sla_trend_per_rule_and_day(tower_at_now: RunningTower, store: Store) -> None:
    day = datetime(2026, 11, 3, tzinfo=UTC)
    store.insert(
        "sla_cases",
        [
            case_row("order-release", "A", day + H, day + 3 * H, "met"),
            case_row("order-release", "B", day + 2 * H, day + 4 * H, "late"),
            case_row("order-release", "C", day + 25 * H, day + 27 * H, "pending"),
            case_row("asn-sent", "S", day + H, day + 2 * H, "breached"),
            case_row("asn-sent", "OLD", day - 40 * 24 * H, day, "met"),
        ],
    )
    trend = get(tower_at_now, "/api/sla/trend", days=7)
    assert trend["from"] == "2026-10-29T15:30:00Z"[:11] + "00:00:00Z"
    assert [
        (d["rule"], d["day"], d["cases"], d["met"], d["late"], d["breached"], d["pending"], d["compliance"])
        for d in trend["days"]
    ] == [
        ("asn-sent", "2026-11-03", 1, 0, 0, 1, 0, 0.0),
        ("order-release", "2026-11-03", 2, 1, 1, 0, 0, 0.5),
        ("order-release", "2026-11-04", 1, 0, 0, 0, 1, None),
    ]
    assert trend["to"] == "2026-11-05T00:00:00Z"  # whole days: today's cases all count
    # up to 30 days the trend is the kept reading of the cases: asked again, nothing is read again
    computed = case_days.computed
    assert get(tower_at_now, "/api/sla/trend", days=7) == trend
    assert case_days.computed == computed
    one = get(tower_at_now, "/api/sla/trend", rule="asn-sent", days=60)  # past 30 days: read from the cases
    assert [(d["day"], d["cases"]) for d in one["days"]] == [("2026-09-24", 1), ("2026-11-03", 1)]
    # both ways count the same: the reading (30 days) and the cases (31) agree on the days they share
    kept = get(tower_at_now, "/api/sla/trend", days=30)["days"]
    read = [d for d in get(tower_at_now, "/api/sla/trend", days=31)["days"] if d["day"] >= "2026-10-06"]
    assert kept == read and len(kept) == 3
    store.insert("sla_cases", [case_row("asn-sent", "LATER", NOW + H, NOW + 2 * H, "pending")])  # started later today
    later = {(d["rule"], d["day"]): d["cases"] for d in get(tower_at_now, "/api/sla/trend", days=2)["days"]}
    assert later == {
        ("asn-sent", "2026-11-03"): 1,
        ("asn-sent", "2026-11-04"): 1,
        ("order-release", "2026-11-03"): 2,
        ("order-release", "2026-11-04"): 1,
    }


def test_sla_breaches_by_lateness_customer_and_warehouse(tower_at_now: RunningTower, store: Store) -> None:
    due = NOW - 60 * H
    rows = [
        case_row(
            "order-release", "L1", due - 2 * H, due, "late", ended_at=due + 0.5 * H, customer_id="C-1", warehouse="DAL"
        ),
        case_row(
            "order-release", "L2", due - 2 * H, due, "late", ended_at=due + 3 * H, customer_id="C-1", warehouse="DAL"
        ),
        case_row(
            "ship-cutoff", "L3", due - 2 * H, due, "late", ended_at=due + 30 * H, customer_id="C-2", warehouse="ATL"
        ),
        case_row("order-release", "B1", due - 2 * H, due + 10 * H, "breached", customer_id="C-1", warehouse="RNO"),
        case_row("order-release", "M1", due - 2 * H, due, "met", ended_at=due - H, customer_id="C-3"),
        # the deadline fell before the period
        case_row(
            "order-release", "OLD", due - 900 * H, due - 800 * H, "late", ended_at=due - 700 * H, customer_id="C-9"
        ),
    ]
    store.insert("sla_cases", rows)
    stats = get(tower_at_now, "/api/sla/breaches", **{"from": "2026-11-01T00:00:00Z"})
    assert (stats["total"], stats["late"], stats["breached"]) == (4, 3, 1)
    assert {b["label"]: b["breaches"] for b in stats["buckets"]} == {
        "0-1 h": 1,
        "1-2 h": 0,
        "2-4 h": 1,
        "4-8 h": 0,
        "8-24 h": 0,
        "24-48 h": 1,
        "48 h or more": 1,
    }
    assert [(c["name"], c["breaches"], c["still_open"]) for c in stats["customers"]] == [("C-1", 3, 1), ("C-2", 1, 0)]
    c1 = stats["customers"][0]
    assert c1["max_hours_late"] == 50.0 and c1["avg_hours_late"] == round((0.5 + 3 + 50) / 3, 3)
    assert [w["name"] for w in stats["warehouses"]] == ["DAL", "ATL", "RNO"]
    top = get(tower_at_now, "/api/sla/breaches", rule="order-release", top=1, **{"from": "2026-11-01T00:00:00Z"})
    assert top["total"] == 3 and [c["name"] for c in top["customers"]] == ["C-1"]
    assert len(top["buckets"]) == 7
    with tower_at_now.api("viewer") as http:
        bad = http.get("/api/sla/breaches", params={"from": "2026-11-05T00:00:00Z", "to": "2026-11-01T00:00:00Z"})
    assert bad.status_code == 422


def test_exception_list_age_filters_and_sorts(tower_at_now: RunningTower, store: Store) -> None:
    (old,) = open_at(
        store, NOW - 50 * H, NewException("ship-cutoff", "SO-OLD", "business", "warehouse", "low", due_at=NOW - 40 * H)
    )
    (mid,) = open_at(
        store, NOW - 5 * H, NewException("ship-cutoff", "SO-MID", "business", "warehouse", "critical", due_at=NOW + H)
    )
    (new,) = open_at(store, NOW - H, NewException("ship-cutoff", "SO-NEW", "business", "warehouse", "medium"))
    ExceptionStore(store, FixedClock(NOW)).acknowledge(mid, actor="ann")

    def ids(**params: Any) -> list[str]:
        return [e["id"] for e in get(tower_at_now, "/api/exceptions", **params)["items"]]

    assert ids() == [new, mid, old]
    assert ids(sort="oldest") == [old, mid, new]
    assert ids(sort="due") == [old, mid, new]  # no deadline last
    assert ids(sort="severity") == [mid, new, old]
    assert ids(min_age_hours=4) == [mid, old]
    assert ids(min_age_hours=4, max_age_hours=24) == [mid]
    assert ids(status="active") == [new, mid, old]
    assert ids(status="open") == [new, old]
    ExceptionStore(store, FixedClock(NOW)).resolve(old, actor="ann")
    assert ids(status="active") == [new, mid]
    with tower_at_now.api("viewer") as http:
        assert http.get("/api/exceptions", params={"sort": "random"}).status_code == 422


def test_active_exceptions_of_rules_nothing_evaluates_are_listed(tower_at_now: RunningTower, store: Store) -> None:
    resolved_retired = NewException("retired-rule", "SO-9", "business", "warehouse", "high")
    ids = open_at(
        store,
        NOW - H,
        exc("SO-1"),  # ship-cutoff: evaluated
        NewException("inventory-oversell", "SKU-1@DAL", "business", "warehouse", "medium"),  # a finding rule
        NewException("tower-jobs", "reconcile", "technical", "integration", "high"),  # the scheduler's own
        NewException("retired-rule", "SO-2", "business", "warehouse", "high"),  # switched off or removed
        NewException("retired-rule", "SO-3", "business", "warehouse", "high"),
        NewException("order-relase", "SO-4", "business", "customer_service", "medium"),  # a renamed rule's
        resolved_retired,
    )
    ExceptionStore(store, FixedClock(NOW)).resolve(ids[-1], actor="ann")
    overview = get(tower_at_now, "/api/overview")
    assert overview["unevaluated"] == [{"rule": "order-relase", "active": 1}, {"rule": "retired-rule", "active": 2}]
    assert overview["active"] == 6


def test_rules_without_a_case_while_their_start_events_arrive_are_idle(
    tower_at_now: RunningTower, store: Store
) -> None:
    def at(event_type: str, n: int, when: datetime) -> dict[str, Any]:
        return event_row(make_event(event_type, n, time=when.isoformat()), received_at=when)

    store.insert(
        "business_events",
        [
            at("order.accepted", 1, NOW - 24 * H),  # order-release has a case of it: not idle
            at("order.released", 2, NOW - 9 * 24 * H),  # ship-cutoff's last start is older than 7 days: a quiet source
            at("shipment.confirmed", 3, NOW - 9 * 24 * H),
            at("shipment.confirmed", 4, NOW - 3 * 24 * H),  # starts asn-sent and invoice-posting: both idle
        ],
    )
    store.insert("sla_cases", [case_row("order-release", "SO-1", NOW - 24 * H, NOW - 22 * H, "breached")])
    assert get(tower_at_now, "/api/overview")["idle"] == [
        {"rule": rule, "start_types": ["shipment.confirmed"], "last_start_event": "2026-11-01T15:30:00Z"}
        for rule in ("asn-sent", "invoice-posting")
    ]
    store.insert("sla_cases", [case_row("asn-sent", "SH-4", NOW - 72 * H, NOW - 71 * H, "met", ended_at=NOW - 71 * H)])
    assert [r["rule"] for r in get(tower_at_now, "/api/overview")["idle"]] == ["invoice-posting"]


def test_sla_breaches_read_times_without_offset_in_the_report_time_zone(
    tower_at_now: RunningTower, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # due 2026-11-01 03:00 UTC: October 31st in Chicago (UTC-5), so outside Chicago's November
    store.insert(
        "sla_cases", [case_row("order-release", "Z1", NOW - 100 * H, datetime(2026, 11, 1, 3, tzinfo=UTC), "breached")]
    )
    november = {"from": "2026-11-01T00:00:00", "to": "2026-12-01T00:00:00"}
    assert get(tower_at_now, "/api/sla/breaches", **november)["total"] == 1  # the default report zone: UTC
    monkeypatch.setenv("TOWER_REPORTS_TIMEZONE", "America/Chicago")
    assert get(tower_at_now, "/api/sla/breaches", **november)["total"] == 0  # as the report reads the same period
    assert (
        get(tower_at_now, "/api/sla/breaches", **{"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"})[
            "total"
        ]
        == 1
    )
    with tower_at_now.api("viewer") as http:
        edge = http.get("/api/sla/breaches", params={"from": "9999-12-31T00:00:00", "to": "9999-12-31T23:00:00"})
    assert edge.status_code == 422 and "out of range" in edge.text
