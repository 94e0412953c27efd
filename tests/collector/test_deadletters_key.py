"""The refusal key a door stores with each dead letter (the grant its token had when it refused the record), kept by
every replay; and the letters one token sent, found by its id whatever source they claimed."""

from __future__ import annotations

import orjson

from kernel.api_auth import token_id
from tests.collector.test_deadletters_replay import grant
from tests.factories import make_event
from tests.support import RunningTower

STRUCTURED = {"Content-Type": "application/cloudevents+json"}


def keys(tower: RunningTower) -> dict[str, tuple[str, str, str]]:
    """Per letter id: its status, claimed source and refusal key (the current version)."""
    assert tower.tower is not None
    rows = tower.tower.store.query("SELECT toString(id) AS id, status, source, refusal_key FROM dead_letters FINAL")
    return {str(r["id"]): (str(r["status"]), str(r["source"]), str(r["refusal_key"])) for r in rows}


def test_the_door_stores_the_key_of_the_grant_a_record_was_refused_under_and_a_replay_keeps_it(
    tower: RunningTower,
) -> None:
    with tower.client("edi") as http:
        for i in range(3):  # another system's source: the EDI token's refusal, keyed edi
            foreign = make_event("order.created", i, source="crm", data={"order_id": f"SO-C{i:02d}"})
            assert http.post("/v1/events", content=orjson.dumps(foreign), headers=STRUCTURED).status_code == 400
        assert http.post("/v1/events", content=b"{not json", headers=STRUCTURED).status_code == 400  # unread
        late = make_event("asn.sent", 9, source="edi/dallas", time="2026-11-04T09:00:00")  # no offset: its own path
        assert http.post("/v1/events", content=orjson.dumps(late), headers=STRUCTURED).status_code == 400
    refused = keys(tower)
    assert sorted(refused.values()) == [
        ("pending", "", "edi"),
        ("pending", "crm", "edi"),
        ("pending", "crm", "edi"),
        ("pending", "crm", "edi"),
        ("pending", "edi/dallas", "edi/dallas"),
    ]
    # the fix: the EDI token may send crm too; its letters are replayed (new versions), each keeping its key
    grant(tower, "edi", "crm")
    with tower.api() as api:
        answer = api.post("/api/deadletters/replay", json={"token_id": token_id(tower.token("edi"))}).json()
    assert (answer["matched"], answer["replayed"], len(answer["still_failing"])) == (5, 3, 2)
    assert sorted(keys(tower).values()) == [
        ("pending", "", "edi"),  # still unreadable: pending with the new reason, still edi's
        ("pending", "edi/dallas", "edi/dallas"),
        ("replayed", "crm", "edi"),
        ("replayed", "crm", "edi"),
        ("replayed", "crm", "edi"),
    ]


def test_a_token_id_finds_the_letters_that_token_sent_whatever_they_claimed(tower: RunningTower) -> None:
    with tower.client("edi") as http:
        foreign = make_event("order.created", 1, source="crm", data={"order_id": "SO-C01"})
        assert http.post("/v1/events", content=orjson.dumps(foreign), headers=STRUCTURED).status_code == 400
    with tower.client("crm") as http:
        broken = make_event("order.created", 2, source="crm", id=...)  # the CRM's own refusal
        assert http.post("/v1/events", content=orjson.dumps(broken), headers=STRUCTURED).status_code == 400
    edi, crm = token_id(tower.token("edi")), token_id(tower.token("crm"))
    with tower.api() as api:
        page = api.get("/api/deadletters", params={"token_id": edi}).json()
        assert [(item["source"], item["token_id"], item["refusal_key"]) for item in page["items"]] == [
            ("crm", edi, "edi")
        ]
        assert page["total"] == 1
        assert api.get("/api/deadletters", params={"source": "edi"}).json()["total"] == 0  # the claim was crm
        both = api.get("/api/deadletters", params={"source": "crm", "token_id": crm}).json()
        assert [item["token_id"] for item in both["items"]] == [crm]
        assert api.get("/api/deadletters", params={"token_id": "x" * 65}).status_code == 422
        # a replay by token id takes only that token's pending letters
        grant(tower, "edi", "crm")
        answer = api.post("/api/deadletters/replay", json={"token_id": edi}).json()
        assert (answer["matched"], answer["replayed"], answer["still_failing"]) == (1, 1, [])
        assert api.post("/api/deadletters/replay", json={"token_id": edi}).json()["matched"] == 0
