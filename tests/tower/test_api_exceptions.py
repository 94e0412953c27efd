"""The exceptions API: list and filters, one exception with its timeline, and the actions on it."""

from __future__ import annotations

import csv
import io
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from kernel.api_auth import token_id
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionRecord, ExceptionStore, NewException
from kernel.store import Store
from kernel.store.embedded import EmbeddedStore
from sla_rules.loader import default_rules_dir
from tests.factories import event_row, make_event, span_row
from tests.support import RunningTower, start_in_process

OPENED = datetime(2026, 11, 2, 16, 0, tzinfo=UTC)


def open_one(store: Store, at: datetime, rule: str, key: str, **fields: Any) -> ExceptionRecord:
    """Open one exception at `at` through the ExceptionStore, as the engines do."""
    context = fields.pop("context", {})
    found = NewException(
        rule=rule,
        key=key,
        kind=fields.pop("kind", "business"),
        owner=fields.pop("owner", "customer_service"),
        severity=fields.pop("severity", "high"),
        due_at=at - timedelta(hours=1),
        context=context,
    )
    (record,) = ExceptionStore(store, FixedClock(at)).open_many([found])
    return record


def seed(store: Store) -> list[ExceptionRecord]:
    """Five exceptions, one minute apart (the last is the newest), over two rules, kinds and warehouses."""
    specs: list[tuple[str, str, dict[str, Any]]] = [
        ("order-release", "SO-1", {"context": {"customer_id": "C-1", "warehouse": "DAL"}}),
        ("order-release", "SO-2", {"context": {"customer_id": "C-2", "warehouse": "DAL"}}),
        ("ship-cutoff", "SO-1", {"owner": "warehouse", "context": {"customer_id": "C-1", "warehouse": "RNO"}}),
        ("ship-cutoff", "SO-3", {"owner": "warehouse", "context": {"customer_id": "C-3", "warehouse": "RNO"}}),
        ("integration-errors", "wms/wms.pick", {"kind": "technical", "owner": "integration", "severity": "medium"}),
    ]
    return [open_one(store, OPENED + timedelta(minutes=i), r, k, **f) for i, (r, k, f) in enumerate(specs)]


def ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


def get_page(http: httpx.Client, **params: Any) -> dict[str, Any]:
    response = http.get("/api/exceptions", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def test_list_filters_paging_and_totals(tower: RunningTower, store: Store) -> None:
    records = seed(store)
    e = [r.id for r in records]
    acting = ExceptionStore(store, FixedClock(OPENED + timedelta(hours=1)))
    acting.acknowledge(e[1], actor="someone")
    acting.resolve(e[3], actor="someone")
    with tower.api("viewer") as http:
        everything = get_page(http)
        assert everything["total"] == 5
        assert ids(everything) == list(reversed(e)), "newest first"
        first = everything["items"][-1]
        assert first["rule"] == "order-release" and first["key"] == "SO-1" and first["status"] == "open"
        assert first["opened_at"] == "2026-11-02T16:00:00Z" and first["due_at"] == "2026-11-02T15:00:00Z"
        assert first["context"] == {"customer_id": "C-1", "warehouse": "DAL"}
        assert first["resolved_at"] is None and first["resolution_detail"] == {}

        assert ids(get_page(http, status="open")) == [e[4], e[2], e[0]]
        assert get_page(http, status="all")["total"] == get_page(http, status="")["total"] == 5  # every status
        assert ids(get_page(http, status="acknowledged")) == [e[1]]
        resolved = get_page(http, status="resolved")["items"]
        assert [i["id"] for i in resolved] == [e[3]] and resolved[0]["resolution"] == "fixed"
        assert get_page(http, owner="warehouse")["total"] == 2
        assert ids(get_page(http, rule="order-release")) == [e[1], e[0]]
        assert ids(get_page(http, kind="technical")) == [e[4]]
        assert get_page(http, kind="business")["total"] == 4
        assert ids(get_page(http, key="SO-1")) == [e[2], e[0]]
        assert ids(get_page(http, customer="C-1")) == [e[2], e[0]]
        assert ids(get_page(http, warehouse="RNO")) == [e[3], e[2]]
        assert ids(get_page(http, warehouse="RNO", status="open")) == [e[2]]
        assert get_page(http, owner="nobody") == {"items": [], "total": 0}

        pages = [get_page(http, limit=2, offset=offset) for offset in (0, 2, 4)]
        assert [p["total"] for p in pages] == [5, 5, 5]
        assert [len(p["items"]) for p in pages] == [2, 2, 1]
        assert [i for p in pages for i in ids(p)] == ids(everything)
        assert get_page(http, limit=2, offset=10) == {"items": [], "total": 5}


@pytest.mark.parametrize(
    "params",
    [
        {"status": "closed"},
        {"kind": "human"},
        {"limit": 0},
        {"limit": 1001},
        {"offset": -1},
        {"limit": "ten"},
        {"min_age_hours": 48, "max_age_hours": 24},  # no exception can be both: an empty list said "none"
    ],
)
def test_list_rejects_bad_parameters(tower: RunningTower, params: dict[str, Any]) -> None:
    with tower.api("viewer") as http:
        response = http.get("/api/exceptions", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", next(iter(params))]


def test_detail_has_the_timeline_of_events_spans_and_changes(tower: RunningTower, store: Store) -> None:
    key = "SO-7"
    accepted = make_event("order.accepted", 7)  # erp, 15:07
    released = make_event("order.released", 9, data={"order_id": key})  # erp, 15:09
    confirmed = make_event("shipment.confirmed", 12, data={"order_id": key})  # wms, 15:12
    other = make_event("order.accepted", 8)  # SO-8, not this key
    store.insert("business_events", [event_row(e) for e in (accepted, released, confirmed, other)])
    store.insert("business_events", [event_row(accepted)])  # a redelivery counts once
    pick_at = datetime(2026, 11, 2, 15, 10, tzinfo=UTC)
    store.insert(
        "otel_traces",
        [
            span_row("a" * 32, "b" * 16, pick_at, order_id=key, status="Error"),
            span_row("a" * 32, "b" * 16, pick_at, order_id=key, status="Error"),  # a redelivered span
            span_row("c" * 32, "d" * 16, pick_at, order_id="SO-8"),
        ],
    )
    record = open_one(store, OPENED, "order-release", key, context={"customer_id": "C-7"})
    with tower.api("admin") as admin:
        assert admin.post(f"/api/exceptions/{record.id}/acknowledge").status_code == 200
    with tower.api("viewer") as http:
        response = http.get(f"/api/exceptions/{record.id}")
    assert response.status_code == 200, response.text
    detail = response.json()
    assert (detail["id"], detail["status"], detail["key"]) == (record.id, "acknowledged", key)
    timeline = detail["timeline"]
    assert [e["at"] for e in timeline] == sorted(e["at"] for e in timeline)
    assert detail["truncated"] is False
    assert (detail["rule_title"], detail["runbook"]) == (
        "Order released to the warehouse within 2 hours of acceptance",
        None,
    )

    business = [(e["at"], e["system"], e["name"]) for e in timeline if e["kind"] != "audit"]
    assert business == [
        ("2026-11-02T15:07:00Z", "erp", "order.accepted"),
        ("2026-11-02T15:09:00Z", "erp", "order.released"),
        ("2026-11-02T15:10:00Z", "wms", "wms.pick"),
        ("2026-11-02T15:12:00Z", "wms", "shipment.confirmed"),
    ]
    first = timeline[0]
    assert first["kind"] == "event" and first["status"] is None
    assert first["ids"] == {
        "id": accepted["id"],
        "source": "erp",
        "order_id": key,
        "customer_id": "C-7",
        "subject": key,
    }
    assert first["detail"]["data"]["amount"] == 120.5 and first["detail"]["door"] == "events"
    span = next(e for e in timeline if e["kind"] == "span")
    assert span["ids"] == {"trace_id": "a" * 32, "span_id": "b" * 16}
    assert span["status"] == "Error" and span["detail"]["duration_ms"] == 1.5
    assert span["detail"]["attributes"] == {"order.id": key}

    audit = [e for e in timeline if e["kind"] == "audit"]
    assert [(a["name"], a["actor"]) for a in audit] == [
        ("opened", "engine"),
        ("acknowledged", token_id(tower.api_token("admin"))),
    ]
    assert audit[0]["detail"]["owner"] == "customer_service"
    assert all(a["ids"] == {"exception_id": record.id} and a["system"] == "tower" for a in audit)


def test_unknown_exception_is_404(tower: RunningTower) -> None:
    with tower.api("admin") as http:
        for response in (
            http.get("/api/exceptions/no-such-id"),
            http.post("/api/exceptions/no-such-id/acknowledge"),
            http.post("/api/exceptions/no-such-id/assign", json={"assignee": "ann"}),
            http.post("/api/exceptions/no-such-id/resolve"),
            http.post("/api/exceptions/no-such-id/notes", json={"text": "hello"}),
        ):
            assert response.status_code == 404
            assert response.json() == {"detail": "no exception with id 'no-such-id'"}


def audit_of(http: httpx.Client, exception_id: str) -> list[dict[str, Any]]:
    timeline = http.get(f"/api/exceptions/{exception_id}").json()["timeline"]
    return [e for e in timeline if e["kind"] == "audit"]


def test_each_action_changes_the_exception_and_is_audited(tower: RunningTower, store: Store) -> None:
    record = open_one(store, OPENED, "ship-cutoff", "SO-3", owner="warehouse")
    actor = token_id(tower.api_token("admin"))
    url = f"/api/exceptions/{record.id}"
    with tower.api("admin") as http:
        acked = http.post(f"{url}/acknowledge")
        assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
        assigned = http.post(f"{url}/assign", json={"assignee": "  ann@dal  "})
        assert assigned.status_code == 200
        assert (assigned.json()["assignee"], assigned.json()["status"]) == ("ann@dal", "acknowledged")
        noted = http.post(f"{url}/notes", json={"text": "carrier picked up late"})
        assert noted.status_code == 200 and noted.json()["status"] == "acknowledged"
        resolved = http.post(f"{url}/resolve", json={"resolution": "false_positive", "note": "was shipped"})
        assert resolved.status_code == 200, resolved.text
        body = resolved.json()
        assert (body["status"], body["resolution"]) == ("resolved", "false_positive")
        assert body["resolution_detail"] == {"note": "was shipped", "by": actor}
        assert body["resolved_at"] is not None and body["updated_at"] >= body["opened_at"]
        after_resolve = http.post(f"{url}/notes", json={"text": "customer informed"})
        assert after_resolve.status_code == 200, "notes are allowed in any status"

        audit = audit_of(http, record.id)
        stored = http.get(url).json()
    assert stored["status"] == "resolved" and stored["assignee"] == "ann@dal"
    assert [(a["name"], a["actor"], a["detail"]) for a in audit] == [
        ("opened", "engine", {"owner": "warehouse", "due_at": "2026-11-02T15:00:00Z"}),
        ("acknowledged", actor, {}),
        ("assigned", actor, {"assignee": "ann@dal"}),
        ("note", actor, {"text": "carrier picked up late"}),
        ("resolved", actor, {"resolution": "false_positive", "note": "was shipped"}),
        ("note", actor, {"text": "customer informed"}),
    ]
    now = datetime.now(UTC)
    assert all(now - timedelta(minutes=5) < datetime.fromisoformat(a["at"]) <= now for a in audit[1:])


def test_resolve_without_a_body_is_fixed(tower: RunningTower, store: Store) -> None:
    record = open_one(store, OPENED, "asn-sent", "SH-1", owner="transportation")
    with tower.api("admin") as http:
        response = http.post(f"/api/exceptions/{record.id}/resolve")
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["resolution"]) == ("resolved", "fixed")


def test_invalid_transitions_are_409(tower: RunningTower, store: Store) -> None:
    record = open_one(store, OPENED, "asn-sent", "SH-2", owner="transportation")
    url = f"/api/exceptions/{record.id}"
    with tower.api("admin") as http:
        assert http.post(f"{url}/acknowledge").status_code == 200
        twice = http.post(f"{url}/acknowledge")
        assert twice.status_code == 409
        assert "only open exceptions can be acknowledged" in twice.json()["detail"]
        assert http.post(f"{url}/resolve").status_code == 200
        for response in (
            http.post(f"{url}/acknowledge"),
            http.post(f"{url}/assign", json={"assignee": "bob"}),
            http.post(f"{url}/resolve", json={"resolution": "fixed"}),
        ):
            assert response.status_code == 409
            assert "resolved" in response.json()["detail"]
        final = http.get(url).json()
    assert (final["status"], final["assignee"]) == ("resolved", "")
    assert [e["name"] for e in final["timeline"] if e["kind"] == "audit"] == ["opened", "acknowledged", "resolved"]


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("assign", {}),
        ("assign", {"assignee": 42}),
        ("notes", {}),
        ("notes", {"text": "   "}),
        ("resolve", {"resolution": "Not OK!"}),
        ("resolve", {"note": "x" * 10_001}),
    ],
)
def test_bad_bodies_are_422_and_change_nothing(
    tower: RunningTower, store: Store, action: str, body: dict[str, Any]
) -> None:
    record = open_one(store, OPENED, "asn-sent", "SH-3", owner="transportation")
    with tower.api("admin") as http:
        response = http.post(f"/api/exceptions/{record.id}/{action}", json=body)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"][0] == "body"
        unchanged = http.get(f"/api/exceptions/{record.id}").json()
    assert unchanged["status"] == "open" and unchanged["assignee"] == ""
    assert [e["name"] for e in unchanged["timeline"] if e["kind"] == "audit"] == ["opened"]


def test_detail_links_the_rules_runbook(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), rules)
    release = rules / "order-release.yaml"
    runbook = "https://wiki.example.com/runbooks/order-release"
    release.write_text(release.read_text() + f"runbook: {runbook}\n")
    monkeypatch.setenv("TOWER_SLA_RULES_DIR", str(rules))
    record = open_one(store, OPENED, "order-release", "SO-1")
    with start_in_process(tmp_path, store) as tower, tower.api("viewer") as http:
        detail = http.get(f"/api/exceptions/{record.id}").json()
    assert detail["runbook"] == runbook


def test_export_writes_the_filtered_list_as_csv(tower: RunningTower, store: Store) -> None:
    first = open_one(store, OPENED, "order-release", "SO-1", context={"customer_id": "C-1", "warehouse": "DAL"})
    second = open_one(
        store, OPENED + timedelta(minutes=5), "order-release", '=HYPERLINK("x")', context={"customer_id": "-C-2"}
    )
    open_one(store, OPENED, "ship-cutoff", "SO-3", owner="warehouse")
    with tower.api("viewer") as http:
        answer = http.get("/api/exceptions/export", params={"rule": "order-release", "sort": "oldest"})
        capped = http.get("/api/exceptions/export", params={"rule": "order-release", "max": 1})
        bad = http.get("/api/exceptions/export", params={"max": 0})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.headers["content-disposition"].startswith('attachment; filename="exceptions-')
    rows = list(csv.reader(io.StringIO(answer.text)))
    assert rows[0] == [
        "id", "rule", "key", "kind", "owner", "severity", "status", "opened_at", "due_at", "resolved_at",
        "resolution", "assignee", "customer_id", "warehouse", "source",
    ]  # fmt: skip
    assert rows[1] == [
        first.id, "order-release", "SO-1", "business", "customer_service", "high", "open",
        "2026-11-02T16:00:00+00:00", "2026-11-02T15:00:00+00:00", "", "", "", "C-1", "DAL", "",
    ]  # fmt: skip
    # text a spreadsheet would take for a formula is written as text
    assert (rows[2][0], rows[2][2], rows[2][12]) == (second.id, '\'=HYPERLINK("x")', "'-C-2")
    assert len(rows) == 3 and answer.headers["x-total-count"] == "2"
    assert len(list(csv.reader(io.StringIO(capped.text)))) == 2 and capped.headers["x-total-count"] == "2"
    assert bad.status_code == 422


def test_an_action_the_store_cannot_take_now_is_503_and_changes_nothing(tower: RunningTower, store: Store) -> None:
    """A full disk answered 200 'acknowledged' and kept nothing; under the disk guard the answer says why."""
    record = seed(store)[0]
    assert isinstance(store, EmbeddedStore)
    store.min_free_bytes = 2**62
    try:
        with tower.api("admin") as http:
            answer = http.post(f"/api/exceptions/{record.id}/acknowledge")
    finally:
        store.min_free_bytes = 0
    assert answer.status_code == 503 and answer.headers["retry-after"] == "30"
    assert "TOWER_STORE_MIN_FREE_MIB" in answer.json()["detail"]
    assert ExceptionStore(store, FixedClock(OPENED)).get(record.id).status == "open"


@pytest.mark.parametrize("offset", [2**32, 2**32 + 3, 2**64 + 1])
def test_an_offset_past_every_exception_is_an_empty_page(tower: RunningTower, store: Store, offset: int) -> None:
    """The offset was bound as a 32-bit number, which wraps around: offset 2**32 answered the first page again."""
    seed(store)
    with tower.api("viewer") as http:
        assert get_page(http, offset=offset) == {"items": [], "total": 5}


def test_a_parameter_the_list_does_not_take_is_422_not_ignored(tower: RunningTower, store: Store) -> None:
    """A misspelt filter (`warehose`) or one the list does not have (`severity`) was ignored: the list and the
    export answered every exception the other filters matched, as if asked for them."""
    seed(store)
    with tower.api("viewer") as http:
        listed = http.get("/api/exceptions", params={"warehose": "DAL", "severity": "high", "rule": "order-release"})
        exported = http.get("/api/exceptions/export", params={"stauts": "open"})
        fine = http.get("/api/exceptions", params={"warehouse": "DAL", "status": "open", "sort": "due", "offset": 0})
    assert listed.status_code == 422, listed.text
    problems = listed.json()["detail"]
    assert [p["loc"] for p in problems] == [["query", "severity"], ["query", "warehose"]]
    assert problems[1]["msg"].startswith("unknown parameter 'warehose'; this route takes ")
    assert "warehouse" in problems[1]["msg"] and "limit" in problems[1]["msg"]
    assert exported.status_code == 422 and exported.json()["detail"][0]["loc"] == ["query", "stauts"]
    assert "max" in exported.json()["detail"][0]["msg"]
    assert fine.status_code == 200 and fine.json()["total"] == 2
    assert httpx.get(f"{tower.http_url}/api/exceptions", params={"warehose": "DAL"}).status_code == 401


@pytest.mark.parametrize(("action", "field"), [("notes", "text"), ("assign", "assignee"), ("resolve", "note")])
def test_half_an_emoji_is_422_not_500(tower: RunningTower, store: Store, action: str, field: str) -> None:
    """A note cut inside a surrogate pair by a UTF-16 client (`"\\ud83d"`, half of 😀) was refused, but the 422 echoing
    it could not be encoded: a 500 and a dropped connection."""
    record = open_one(store, OPENED, "asn-sent", "SH-4", owner="transportation")
    body = '{"' + field + '": "dock closed \\ud83d"}'
    with tower.api("admin") as http:
        response = http.post(
            f"/api/exceptions/{record.id}/{action}", content=body, headers={"content-type": "application/json"}
        )
        unchanged = http.get(f"/api/exceptions/{record.id}").json()
    assert response.status_code == 422, response.text
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["body", field] and problem["input"] == "dock closed \\ud83d"
    assert [e["name"] for e in unchanged["timeline"] if e["kind"] == "audit"] == ["opened"]


@pytest.mark.parametrize(
    ("assignee", "code"),
    [
        ("ann\ndal", "U+000A"),  # a newline: a second line in the CLI table, a forged audit line
        ("ann\tdal", "U+0009"),
        ("ann\x00", "U+0000"),
        ("ann \x1b[31mdal", "U+001B"),  # a terminal escape
        ("ann\x7f", "U+007F"),
        ("ann\x85dal", "U+0085"),  # C1: NEL
        ("ann\x9b31m", "U+009B"),  # C1: CSI
        ("ann\u2028dal", "line separator U+2028"),  # a line break to Slack and to JavaScript
        ("ann\u2029dal", "paragraph separator U+2029"),
        ("\u202eladnna", "bidirectional formatting character U+202E"),  # right-to-left override: shows "anndal"
        ("ann\u202adal\u202c", "bidirectional formatting character U+202A"),
        ("\u2066ann\u2069", "bidirectional formatting character U+2066"),  # an isolate
        ("ann\u2069", "bidirectional formatting character U+2069"),
    ],
)
def test_an_assignee_with_a_control_character_is_422_naming_it(
    tower: RunningTower, store: Store, assignee: str, code: str
) -> None:
    """An assignee took any text: a newline, a tab, NUL or a terminal escape was stored, then broke the CLI's
    table, the audit trail and the Slack text. It is one line of printable text (a note may hold newlines); a
    line or paragraph separator breaks it too, and a bidirectional override or isolate can show one name as another
    (U+202E before "ladnna" displays "anndal")."""
    record = open_one(store, OPENED, "asn-sent", "SH-5", owner="transportation")
    url = f"/api/exceptions/{record.id}"
    with tower.api("admin") as http:
        refused = http.post(f"{url}/assign", json={"assignee": assignee})
        unchanged = http.get(url).json()
        noted = http.post(f"{url}/notes", json={"text": "line one\nline two\ttabbed"})
        fine = http.post(f"{url}/assign", json={"assignee": " Zoë Müller (dal) \n"})
    assert refused.status_code == 422, refused.text
    (problem,) = refused.json()["detail"]
    assert problem["loc"] == ["body", "assignee"]
    assert (f"control character {code}" if code.startswith("U+") else f"the {code}:") in problem["msg"]
    assert unchanged["assignee"] == ""
    assert [e["name"] for e in unchanged["timeline"] if e["kind"] == "audit"] == ["opened"]
    assert noted.status_code == 200, noted.text
    assert fine.status_code == 200 and fine.json()["assignee"] == "Zoë Müller (dal)"


FREE_TEXT_REFUSED = [
    ("dock closed\x00", "control character U+0000"),
    ("dock \x1b[2J\x1b[Hclosed", "control character U+001B"),  # clears the terminal of whoever lists it
    ("dock\x7f", "control character U+007F"),
    ("dock\x9b2J", "control character U+009B"),  # C1: CSI
    ("dock \u202edesolc", "bidirectional formatting character U+202E"),
    ("dock \u2066closed\u2069", "bidirectional formatting character U+2066"),
]


@pytest.mark.parametrize(
    ("action", "field"),
    [("notes", "text"), ("resolve", "note"), ("bulk", "note")],
)
@pytest.mark.parametrize(("text", "character"), FREE_TEXT_REFUSED)
def test_a_note_with_a_control_character_is_422_naming_it(
    tower: RunningTower, store: Store, action: str, field: str, text: str, character: str
) -> None:
    """Notes took any text into the audit trail, the CLI's timeline, Slack threads and CSV exports: a NUL, a
    terminal escape, a carriage return or a bidirectional override now is a 422 at the field naming the character.
    Newlines and tabs are what notes are written with, and stay."""
    record = open_one(store, OPENED, "asn-sent", "SH-5", owner="transportation")
    url = f"/api/exceptions/{record.id}"
    bodies = {
        "notes": (f"{url}/notes", {}),
        "resolve": (f"{url}/resolve", {"resolution": "fixed"}),
        "bulk": ("/api/exceptions/resolve", {"rule": "asn-sent"}),
    }
    path, body = bodies[action]
    with tower.api("admin") as http:
        refused = http.post(path, json={**body, field: text})
        unchanged = http.get(url).json()
        # line ends of any system are newlines: a lone CR, which overwrites the line in a terminal, starts one
        fine = http.post(path, json={**body, field: "line one\r\nline two\ttabbed\rforged"})
        kept = http.get(url).json()
    assert refused.status_code == 422, refused.text
    (problem,) = refused.json()["detail"]
    assert problem["loc"] == ["body", field]
    assert f"the {character}:" in problem["msg"]
    assert unchanged["status"] == "open"
    assert [e["name"] for e in unchanged["timeline"] if e["kind"] == "audit"] == ["opened"]
    assert fine.status_code == 200, fine.text
    details = [e["detail"] for e in kept["timeline"] if e["kind"] == "audit"]
    assert "line one\nline two\ttabbed\nforged" in [value for detail in details for value in detail.values()]
