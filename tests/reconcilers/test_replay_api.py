"""Replay through the API, the jobs and the CLI of a running tower, against a real webhook receiver."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from kernel.exceptions import ExceptionRecord, NewException
from kernel.store import Store
from reconcilers.replay import verify_signature
from tests.factories import make_event
from tests.reconcilers.replay_receiver import Receiver, running_receiver
from tests.support import RunningTower, start_in_process
from tower.cli import main

SECRET = "replay-api-test-secret-0123"
STRUCTURED = {"Content-Type": "application/cloudevents+json"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from running_receiver()


@pytest.fixture
def replay_tower(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> Iterator[RunningTower]:
    """A tower whose `wms` source declares the receiver as its replay webhook (TOWER_REPLAY_WEBHOOKS)."""
    hooks = {"wms": {"url": receiver.url, "secret": SECRET, "wait_minutes": 30}}
    monkeypatch.setenv("TOWER_REPLAY_WEBHOOKS", orjson.dumps(hooks).decode())
    with start_in_process(tmp_path, store) as running:
        yield running


def open_silence(running: RunningTower, source: str = "wms") -> ExceptionRecord:
    assert running.tower is not None
    last_seen = (datetime.now(UTC) - timedelta(minutes=40)).isoformat().replace("+00:00", "Z")
    context = {"source": source, "last_seen": last_seen, "silent_for": "40m"}
    (record,) = running.tower.exceptions.open_many(
        [NewException("source-silence", source, "technical", "integration", "high", context=context)]
    )
    return record


def test_request_list_and_resolve_through_the_api(replay_tower: RunningTower, receiver: Receiver) -> None:
    assert replay_tower.tower is not None
    record = open_silence(replay_tower)
    with replay_tower.api("admin") as http:
        answer = http.post(f"/api/exceptions/{record.id}/replay", json={"keys": ["SH-41"], "note": "WMS fixed"})
        assert answer.status_code == 200, answer.text
        again = http.post(f"/api/exceptions/{record.id}/replay", json={"keys": [" SH-41 "]})
    first, second = answer.json(), again.json()
    assert first["created"] is True and second["created"] is False
    replay = first["replay"]
    assert second["replay"]["id"] == replay["id"] and replay["status"] == "sent" and replay["keys"] == ["SH-41"]
    assert replay["exception_ids"] == [record.id] and replay["responses"][0]["status"] == 200

    (call,) = receiver.calls
    assert verify_signature(SECRET, call.headers["x-tower-timestamp"], call.headers["x-tower-signature"], call.body)
    assert call.json()["reason"].endswith(": WMS fixed") and call.json()["keys"] == ["SH-41"]
    for _ in range(2):  # the jobs, twice: nothing is asked again
        assert replay_tower.tower.scheduler.run_job("replay-send").ok
        assert replay_tower.tower.scheduler.run_job("replay-watch").result["satisfied"] == []
    assert len(receiver.calls) == 1

    with replay_tower.api("viewer") as http:
        page = http.get("/api/replays", params={"exception_id": record.id}).json()
        assert page["total"] == 1 and page["items"][0]["id"] == replay["id"]
        assert http.get("/api/replays", params={"status": "escalated"}).json() == {"items": [], "total": 0}
        assert http.get("/api/replays", params={"source": "wms"}).json()["total"] == 1
        assert http.get("/api/replays", params={"source": "erp"}).json()["total"] == 0

    event = make_event("shipment.confirmed", 41, source="wms")
    with replay_tower.client("wms") as http:
        assert http.post("/v1/events", content=orjson.dumps(event), headers=STRUCTURED).status_code in (200, 202)
    assert replay_tower.tower.scheduler.run_job("replay-watch").result["satisfied"] == [replay["id"]]

    with replay_tower.api("viewer") as http:
        resolved = http.get(f"/api/exceptions/{record.id}").json()
        listed = http.get("/api/replays").json()["items"][0]
    assert (resolved["status"], resolved["resolution"]) == ("resolved", "replayed")
    assert resolved["resolution_detail"]["keys_matched"] == ["SH-41"]
    assert listed["status"] == "satisfied" and listed["detail"]["events"] == 1


def test_refusals_are_readable(replay_tower: RunningTower) -> None:
    assert replay_tower.tower is not None
    (business,) = replay_tower.tower.exceptions.open_many(
        [NewException("order-release", "SO-1", "business", "customer_service", "high")]
    )
    silent_tms = open_silence(replay_tower, "tms")
    silent_wms = open_silence(replay_tower)
    with replay_tower.api("admin") as http:
        missing = http.post("/api/exceptions/nope/replay")
        assert (missing.status_code, missing.json()) == (404, {"detail": "no exception with id 'nope'"})
        not_technical = http.post(f"/api/exceptions/{business.id}/replay")
        assert not_technical.status_code == 409 and "only technical exceptions" in not_technical.json()["detail"]
        no_webhook = http.post(f"/api/exceptions/{silent_tms.id}/replay")
        assert no_webhook.status_code == 409 and "TOWER_REPLAY_WEBHOOKS" in no_webhook.json()["detail"]
        backwards = http.post(
            f"/api/exceptions/{silent_wms.id}/replay",
            json={"from": "2026-11-02T18:00:00Z", "to": "2026-11-02T17:00:00Z"},
        )
        assert backwards.status_code == 422 and "`from` must be before `to`" in backwards.text
        unknown = http.post(f"/api/exceptions/{silent_wms.id}/replay", json={"key": "SH-1"})
        assert unknown.status_code == 422
    with replay_tower.api("viewer") as http:
        assert http.post(f"/api/exceptions/{silent_wms.id}/replay").status_code == 403


@pytest.mark.parametrize(
    ("note", "character"),
    [
        ("WMS fixed\x00", "control character U+0000"),
        ("WMS \x1b[2Jfixed", "control character U+001B"),
        ("WMS \u202edexif", "bidirectional formatting character U+202E"),
    ],
)
def test_a_note_with_a_control_character_is_422_and_nothing_is_sent(
    replay_tower: RunningTower, receiver: Receiver, note: str, character: str
) -> None:
    """The note goes to the source's team in the request's reason: newlines and tabs, no other control character
    nor bidirectional override; a refused note sends nothing."""
    record = open_silence(replay_tower)
    with replay_tower.api("admin") as http:
        refused = http.post(f"/api/exceptions/{record.id}/replay", json={"keys": ["SH-41"], "note": note})
        listed = http.get("/api/replays").json()
    assert refused.status_code == 422, refused.text
    (problem,) = refused.json()["detail"]
    assert problem["loc"] == ["body", "note"] and f"the {character}:" in problem["msg"]
    assert listed["total"] == 0 and receiver.calls == []


def cli(args: list[str], running: RunningTower) -> Result:
    env = {"TOWER_TOKEN": None, "TOWER_URL": None}
    auth = ["--url", running.http_url, "--token", running.api_token("admin")]
    return CliRunner().invoke(main, [*args, *auth], env=env, catch_exceptions=False)


def test_the_cli_requests_and_lists(replay_tower: RunningTower, receiver: Receiver) -> None:
    record = open_silence(replay_tower)
    first = cli(["replay", record.id, "--key", "SH-7", "--key", "SO-7", "--note", "after the fix"], replay_tower)
    assert first.exit_code == 0, first.output
    assert first.output.startswith("requested:\nreplay ") and "sent  source wms" in first.output
    assert "asks for 2 keys (SH-7, SO-7)" in first.output
    again = cli(["replay", record.id, "--key", "SO-7", "--key", "SH-7"], replay_tower)
    assert again.exit_code == 0 and again.output.startswith("already requested")
    assert len(receiver.calls) == 1

    listed = orjson.loads(cli(["replays", "--json", "--status", "sent"], replay_tower).output)
    assert listed["total"] == 1 and listed["items"][0]["keys"] == ["SH-7", "SO-7"]
    assert cli(["replays", "--status", "failed"], replay_tower).output.strip() == "no replay requests match"

    ranged = cli(
        ["replay", record.id, "--from", "2026-11-02T11:00:00-06:00", "--to", "2026-11-02T18:00:00Z", "--json"],
        replay_tower,
    )
    answer = orjson.loads(ranged.output)
    assert answer["created"] is True and answer["replay"]["keys"] == []
    assert (answer["replay"]["from"], answer["replay"]["to"]) == ("2026-11-02T17:00:00Z", "2026-11-02T18:00:00Z")

    refused = cli(["replay", "not-an-exception"], replay_tower)
    assert (
        refused.exit_code == 2 and "the tower answered 404: no exception with id 'not-an-exception'" in refused.output
    )


def test_a_failed_replay_is_asked_again_through_the_api_and_the_cli(
    replay_tower: RunningTower, receiver: Receiver
) -> None:
    record = open_silence(replay_tower)
    receiver.answer((400, {"error": "unknown source"}))  # a broken webhook, fixed afterwards
    with replay_tower.api("admin") as http:
        failed = http.post(f"/api/exceptions/{record.id}/replay").json()
        assert failed["created"] is True and failed["replay"]["status"] == "failed"
        plain = http.post(f"/api/exceptions/{record.id}/replay").json()
        assert plain["created"] is False and plain["replay"]["id"] == failed["replay"]["id"]
        assert "`again: true`" in plain["message"] and len(receiver.calls) == 1
        again = http.post(f"/api/exceptions/{record.id}/replay", json={"again": True})
        assert again.status_code == 200, again.text
        new = again.json()
        assert new["created"] is True and new["replay"]["status"] == "sent"
        assert new["replay"]["supersedes"] == failed["replay"]["id"] and len(receiver.calls) == 2
        assert receiver.calls[1].headers["idempotency-key"] == new["replay"]["id"] != failed["replay"]["id"]
        twice = http.post(f"/api/exceptions/{record.id}/replay", json={"again": True})
        assert twice.status_code == 409 and "is sent" in twice.json()["detail"]
        old = http.get("/api/replays", params={"status": "failed"}).json()["items"][0]
        assert old["superseded_by"] == new["replay"]["id"]

    refused = cli(["replay", record.id, "--again"], replay_tower)
    assert refused.exit_code == 2 and "is sent" in refused.output and len(receiver.calls) == 2
    shown = cli(["replays", "--status", "failed"], replay_tower)
    assert f"superseded by: {new['replay']['id']}" in shown.output


def test_the_cli_says_how_to_ask_again(replay_tower: RunningTower, receiver: Receiver) -> None:
    record = open_silence(replay_tower)
    receiver.answer((400, {"error": "unknown source"}))
    assert cli(["replay", record.id], replay_tower).exit_code == 1  # the webhook refused it
    plain = cli(["replay", record.id], replay_tower)
    assert plain.exit_code == 1 and "to ask again, pass `again: true` (API) or --again" in plain.output
    again = cli(["replay", record.id, "--again"], replay_tower)
    assert again.exit_code == 0, again.output
    assert again.output.startswith("requested:\nreplay ") and "supersedes: " in again.output
    assert len(receiver.calls) == 2
