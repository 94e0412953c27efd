"""Replaying a backlog of dead letters: batched submits, a call at a time with a cursor, discards between chunks,
the latest failure, and which letters a source finds."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from collector import service as service_module
from collector.auth import Grant, TokenRegistry
from collector.deadletters import Cursor, Refusal, dead_letter_row
from collector.service import DiscardReport, IngestService, Replay, ReplayReport
from kernel.api_auth import token_id
from kernel.settings import IngestSettings
from tests.factories import make_event
from tests.support import RunningTower

STRUCTURED = {"Content-Type": "application/cloudevents+json"}


def refused_events(
    tower: RunningTower, n: int, source: str = "tms", sender: str = "erp", start: int = 0
) -> list[dict[str, Any]]:
    """`n` CloudEvents claiming `source` refused from the `sender` token (not granted it), stored as dead letters one
    microsecond apart (oldest first); the letters' rows."""
    assert tower.tower is not None
    base = datetime.now(UTC) - timedelta(minutes=5)
    rows = []
    for i in range(start, start + n):
        event = make_event("shipment.confirmed", i, source=source, data={"order_id": f"SO-{i}"})
        event["time"] = base.isoformat().replace("+00:00", "Z")
        refusal = Refusal("events", f"source: {source!r} is not allowed", orjson.dumps(event).decode(), source=source)
        rows.append(dead_letter_row(refusal, token_id(tower.token(sender)), base + timedelta(microseconds=i)))
    tower.tower.store.insert("dead_letters", rows)
    return rows


def grant(tower: RunningTower, system: str, also: str) -> None:
    """The fix: the `system` token may now also send `also`."""
    assert tower.tower is not None
    tokens = {t: (s + [also] if s == [system] else s) for t, s in tower.settings.ingest.tokens.items()}
    tower.tower.ingest.tokens = TokenRegistry(IngestSettings(tokens=tokens))


def statuses(tower: RunningTower) -> dict[str, int]:
    assert tower.tower is not None
    rows = tower.tower.store.query("SELECT status, count() AS n FROM dead_letters FINAL GROUP BY status")
    return {str(r["status"]): int(r["n"]) for r in rows}


def stored_events(tower: RunningTower) -> int:
    assert tower.tower is not None
    return int(tower.tower.store.query("SELECT count() AS n FROM business_events FINAL")[0]["n"])


def ingest_of(tower: RunningTower) -> IngestService:
    assert tower.tower is not None
    return tower.tower.ingest


def test_a_chunk_of_letters_is_stored_in_one_submit(tower: RunningTower) -> None:
    ingest = ingest_of(tower)
    refused_events(tower, 450)
    refused_events(tower, 3, source="crm", start=1000)  # never granted: they stay pending, with the new reason
    grant(tower, "erp", "tms")
    batches = ingest.pipeline.stats.batches
    report = ingest.replay()
    assert (report.replayed, len(report.still_failing)) == (450, 3)
    # one submit per chunk of REPLAY_CHUNK (200) letters, not one per letter (453 writes before)
    assert ingest.pipeline.stats.batches - batches <= 3
    assert (report.matched, report.remaining) == (453, 0)
    assert stored_events(tower) == 450
    assert statuses(tower) == {"replayed": 450, "pending": 3}
    assert ingest.replay().replayed == 0, "a replayed letter is not replayed again"
    assert stored_events(tower) == 450


def test_a_letter_whose_rows_the_store_refuses_stays_pending_and_the_others_are_replayed(
    tower: RunningTower,
) -> None:
    ingest = ingest_of(tower)

    def door(raw: str, content_type: str, given: Grant) -> Replay:
        event = orjson.loads(raw)
        row = {"source": "erp", "id": event["id"], "type": "order.accepted", "time": event["time"]}
        if event["id"] == "bad":
            row["time"] = "not a time"  # the store refuses it: the batch is stored letter by letter
        return Replay({"business_events": [row]}, [])

    ingest.register_replayer("test-door", door)
    sender = token_id(tower.token("erp"))
    now = datetime.now(UTC)
    sent = [{"id": ident, "time": now.isoformat().replace("+00:00", "Z")} for ident in ("good-1", "bad", "good-2")]
    rows = [
        dead_letter_row(Refusal("test-door", "test", orjson.dumps(e).decode()), sender, now + timedelta(seconds=i))
        for i, e in enumerate(sent)
    ]
    assert tower.tower is not None
    tower.tower.store.insert("dead_letters", rows)
    report = ingest.replay(door="test-door")
    assert report.replayed == 2
    [failing] = report.still_failing
    assert failing["id"] == rows[1]["id"] and "the store refused the rows" in failing["errors"][0]
    ids = tower.tower.store.query("SELECT id FROM business_events FINAL ORDER BY id")
    assert ids == [{"id": "good-1"}, {"id": "good-2"}]
    letter = ingest.dead_letter(rows[1]["id"])
    assert letter is not None and letter["status"] == "pending"
    assert letter["latest_reason"].startswith("the store refused the rows")


def test_a_replay_goes_a_call_at_a_time_from_its_cursor(tower: RunningTower) -> None:
    refused_events(tower, 5)
    failing = refused_events(tower, 2, source="crm", start=100)  # after the tms ones; never granted
    grant(tower, "erp", "tms")
    with tower.api() as api:
        answers = []
        body: dict[str, Any] = {"limit": 3}
        while True:
            answer = api.post("/api/deadletters/replay", json=body).json()
            answers.append(answer)
            if not answer["remaining"]:
                break
            body["after"] = answer["cursor"]
        assert [(a["matched"], a["replayed"], len(a["still_failing"]), a["remaining"]) for a in answers] == [
            (7, 3, 0, 4),
            (4, 2, 1, 1),
            (1, 0, 1, 0),
        ]
        assert Cursor.parse(answers[-1]["cursor"]).id == failing[-1]["id"]
        # the letters still failing stay pending, and a new replay from the start takes them again
        again = api.post("/api/deadletters/replay", json={}).json()
        assert (again["matched"], again["replayed"], len(again["still_failing"])) == (2, 0, 2)
        assert api.post("/api/deadletters/replay", json={"limit": 0}).status_code == 422
        assert api.post("/api/deadletters/replay", json={"after": "yesterday"}).status_code == 422
        too_many = [str(uuid.uuid4()) for _ in range(5001)]
        assert api.post("/api/deadletters/replay", json={"ids": too_many}).status_code == 422
    assert statuses(tower) == {"replayed": 5, "pending": 2}
    assert stored_events(tower) == 5


def test_a_replay_takes_letters_received_at_the_same_time_once_each(tower: RunningTower) -> None:
    ingest = ingest_of(tower)
    rows = refused_events(tower, 7)
    assert tower.tower is not None
    tower.tower.store.command("TRUNCATE TABLE dead_letters")
    at = rows[0]["received_at"]
    tower.tower.store.insert("dead_letters", [r | {"received_at": at} for r in rows])  # one batch, one instant
    grant(tower, "erp", "tms")
    cursor: Cursor | None = None
    reports: list[ReplayReport] = []
    for _ in range(10):
        report = ingest.replay(limit=2, after=cursor)
        reports.append(report)
        if not report.remaining:
            break
        assert report.cursor is not None
        cursor = Cursor.parse(report.cursor)
    assert [r.replayed for r in reports] == [2, 2, 2, 1]
    assert statuses(tower) == {"replayed": 7}


def test_a_discard_waits_for_a_chunk_of_a_replay_not_the_whole_replay(
    tower: RunningTower, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "REPLAY_CHUNK", 1)
    ingest = ingest_of(tower)
    entered, release = threading.Event(), threading.Event()

    def slow(raw: str, content_type: str, given: Grant) -> Replay:
        if not entered.is_set():
            entered.set()
            release.wait(10)
        return Replay({}, [])  # replayed: nothing to store

    ingest.register_replayer("slow-door", slow)
    sender = token_id(tower.token("erp"))
    now = datetime.now(UTC)
    rows = [
        dead_letter_row(Refusal("slow-door", "test", "{}", source="erp"), sender, now + timedelta(seconds=i))
        for i in range(3)
    ]
    assert tower.tower is not None
    tower.tower.store.insert("dead_letters", rows)
    reports: list[ReplayReport] = []
    replaying = threading.Thread(target=lambda: reports.append(ingest.replay(door="slow-door")))
    replaying.start()
    assert entered.wait(10)
    discarded: list[DiscardReport] = []
    discarding = threading.Thread(target=lambda: discarded.append(ingest.discard([rows[2]["id"]], "give up", "t")))
    discarding.start()
    deadline = time.monotonic() + 10
    while ingest._letters_lock.waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert discarding.is_alive(), "the discard went ahead while a chunk of the replay ran"
    release.set()
    discarding.join(10)
    replaying.join(10)
    # the discard went in before the replay's next chunk: the letter it names was still pending
    [report] = discarded
    assert (report.discarded, report.not_pending) == (1, [])
    [replay] = reports
    assert (replay.replayed, replay.matched) == (2, 3)
    assert statuses(tower) == {"replayed": 2, "discarded": 1}


def test_a_failed_replay_shows_its_reason_beside_the_first(tower: RunningTower) -> None:
    refused_events(tower, 1)
    ingest = ingest_of(tower)
    # the sender's token is gone: the replay fails for another reason than the refusal
    tokens = {t: s for t, s in tower.settings.ingest.tokens.items() if s != ["erp"]}
    ingest.tokens = TokenRegistry(IngestSettings(tokens=tokens))
    [failing] = ingest.replay().still_failing
    with tower.api() as api:
        [item] = api.get("/api/deadletters").json()["items"]
        whole = api.get(f"/api/deadletters/{item['id']}").json()
    assert item["id"] == failing["id"] and item["status"] == "pending"
    assert item["reason"] == "source: 'tms' is not allowed"
    assert item["latest_reason"] == whole["latest_reason"] == failing["errors"][0]
    assert "is no longer configured" in item["latest_reason"]


def test_a_source_finds_the_unread_letters_of_a_token_granted_it(tower: RunningTower) -> None:
    ingest = ingest_of(tower)
    with tower.client("erp") as erp:
        assert erp.post("/v1/events", content=b"{not json", headers=STRUCTURED).status_code == 400
        claimed = make_event("order.accepted", 1, source="wms")
        assert erp.post("/v1/events", content=orjson.dumps(claimed), headers=STRUCTURED).status_code == 400
    with tower.client("wms") as wms:
        assert wms.post("/v1/events", content=b"[1, 2", headers=STRUCTURED).status_code == 400
    erp_letters, total = ingest.list_dead_letters(None, None, 100, 0, "erp")
    assert total == 1 and [(d["source"], d["token_id"]) for d in erp_letters] == [("", token_id(tower.token("erp")))]
    wms_letters, total = ingest.list_dead_letters(None, None, 100, 0, "wms")
    assert total == 2 and sorted(d["source"] for d in wms_letters) == ["", "wms"]  # wms's unread one, erp's claim
    assert ingest.list_dead_letters(None, None, 100, 0, "tms")[1] == 0
    # a replay of a source takes them too (they still fail: the body is not JSON)
    report = ingest.replay(source="erp")
    assert (report.matched, report.replayed, len(report.still_failing)) == (1, 0, 1)
    assert "not valid JSON" in report.still_failing[0]["errors"][0]


@pytest.mark.parametrize(
    "text",
    [
        "૯૯૯૯-૦૦-૦૦ 00:00:00/BEBFefcdAC4fDf9189DCEb3FECA94dDa942A",  # digits of another script (the fuzz test's find)
        "2026-11-27 10:00:00/------------------------------------",  # the id's characters, but no UUID
        "2026-13-45 10:00:00/6bfd33b1-c110-4667-906f-2ced799eb409",  # the shape of a time, but none
    ],
)
def test_a_cursor_that_is_none_is_a_value_error_not_a_server_error(text: str) -> None:
    with pytest.raises(ValueError, match="is not a replay cursor"):
        Cursor.parse(text)
    good = "2026-11-27 10:00:00.123456/6bfd33b1-c110-4667-906f-2ced799eb409"
    assert str(Cursor.parse(good)) == good
