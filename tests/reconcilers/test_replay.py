"""Replay against a real webhook receiver on 127.0.0.1, on a fixed clock: signature, retries with
backoff, no duplicates, resolution when the replayed events arrive, escalation when they do not."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from collector.deadletters import Refusal, dead_letter_row
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionRecord, ExceptionStore, NewException
from kernel.jobs import JobRegistry, SchedulerSettings
from kernel.store import Store
from reconcilers.replay import NotReplayable, ReplayService, ReplaySettings, round_key, verify_signature
from reconcilers.replay.jobs import register_replay_jobs
from tests.factories import event_row, make_event
from tests.reconcilers.replay_receiver import Receiver, running_receiver
from tests.support import free_port
from tower.scheduler import Scheduler

SECRET = "replay-test-secret-0123456789"
OPENED = datetime(2026, 11, 2, 18, 0, tzinfo=UTC)
LAST_SEEN = "2026-11-02T17:20:00.000000Z"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "reconcilers.md"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from running_receiver()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(OPENED)


@pytest.fixture
def exceptions(store: Store, clock: FixedClock) -> ExceptionStore:
    return ExceptionStore(store, clock)


def settings(url: str, **webhook: Any) -> ReplaySettings:
    hook = {"url": url, "secret": SECRET, "wait_minutes": 30, **webhook}
    return ReplaySettings.model_validate({"webhooks": {"wms": hook}, "backoff_seconds": 30, "max_attempts": 4})


@pytest.fixture
def service(store: Store, exceptions: ExceptionStore, clock: FixedClock, receiver: Receiver) -> ReplayService:
    return ReplayService(store, exceptions, clock, settings(receiver.url))


def silence(exceptions: ExceptionStore, source: str = "wms", rule: str = "source-silence") -> ExceptionRecord:
    """A source-silence exception as the technical engine opens it, at the clock's now."""
    context = {"source": source, "last_seen": LAST_SEEN, "silent_for": "40m", "window": "30m"}
    (record,) = exceptions.open_many([NewException(rule, source, "technical", "integration", "high", context=context)])
    return record


def deliver(store: Store, shipment: int, received_at: datetime, source: str = "wms", time: str | None = None) -> None:
    """A shipment.confirmed event of `source` stored as the collector stores it, received at `received_at`."""
    raw = make_event("shipment.confirmed", shipment, source=source, time=time or "2026-11-02T17:30:00Z")
    store.insert("business_events", [event_row(raw, received_at)])


def actions(exceptions: ExceptionStore, exception_id: str) -> list[tuple[str, str]]:
    return [(a["actor"], a["action"]) for a in exceptions.audit(exception_id)]


# signature -------------------------------------------------------------------------------------------


def test_the_request_is_signed_as_documented(
    service: ReplayService, exceptions: ExceptionStore, clock: FixedClock, receiver: Receiver
) -> None:
    record = silence(exceptions)
    clock.advance(timedelta(minutes=5))
    outcome = service.request(record.id, actor="ann")
    assert outcome.created and outcome.request.status == "sent"
    (call,) = receiver.calls
    timestamp, signature = call.headers["x-tower-timestamp"], call.headers["x-tower-signature"]
    assert timestamp == str(int(clock.now().timestamp()))
    # the scheme, written out independently: v1 = hex HMAC-SHA256(secret, "<timestamp>.<raw body>")
    mac = hmac.new(SECRET.encode(), timestamp.encode() + b"." + call.body, hashlib.sha256).hexdigest()
    assert signature == f"v1={mac}"
    now = clock.now().timestamp()
    assert verify_signature(SECRET, timestamp, signature, call.body, now=now)
    assert not verify_signature(SECRET, timestamp, signature, call.body.replace(b"wms", b"erp"), now=now)
    assert not verify_signature("another-secret-0123456789", timestamp, signature, call.body, now=now)
    assert not verify_signature(SECRET, str(int(timestamp) + 1), signature, call.body, now=now)
    assert not verify_signature(SECRET, timestamp, signature, call.body, now=now + 301)  # too old: a replay
    assert call.headers["idempotency-key"] == outcome.request.id
    assert call.headers["x-tower-replay-attempt"] == "1"
    assert call.json() == {
        "idempotency_key": outcome.request.id,
        "source": "wms",
        "exception_id": record.id,
        "rule": "source-silence",
        "exception_key": "wms",
        "keys": [],
        "from": LAST_SEEN,  # where the silence began ...
        "to": "2026-11-02T18:00:00.000000Z",  # ... to when it was found: [from, to)
        "reason": f"source-silence wms (silent_for 40m, last_seen {LAST_SEEN})",
        "requested_at": "2026-11-02T18:05:00.000000Z",
        "dead_letters": [],
    }
    assert actions(exceptions, record.id) == [("engine", "opened"), ("ann", "note")]


def test_the_verification_helper_in_the_docs_verifies(
    service: ReplayService, exceptions: ExceptionStore, clock: FixedClock, receiver: Receiver
) -> None:
    section = DOCS.read_text().split("## Replay", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "docs/reconcilers.md ## Replay shows the verification helper"
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)  # the snippet an integration team copies, as written
    verify = namespace["verify_replay_signature"]
    service.request(silence(exceptions).id)
    (call,) = receiver.calls
    headers = {
        "X-Tower-Timestamp": call.headers["x-tower-timestamp"],
        "X-Tower-Signature": call.headers["x-tower-signature"],
    }
    now = clock.now().timestamp()
    assert verify(SECRET.encode(), headers, call.body, now=now) is True
    assert verify(SECRET.encode(), headers, call.body + b" ", now=now) is False
    assert verify(SECRET.encode(), headers, call.body, now=now + 600) is False


# retries ---------------------------------------------------------------------------------------------


def test_a_5xx_is_retried_after_backoff_then_succeeds(
    service: ReplayService, exceptions: ExceptionStore, clock: FixedClock, receiver: Receiver
) -> None:
    record = silence(exceptions)
    receiver.answer((503, {"error": "busy"}), (502, "bad gateway"))
    outcome = service.request(record.id)
    request = outcome.request
    assert (request.status, request.attempts, request.next_attempt_at) == ("requested", 1, "2026-11-02 18:00:30.000000")

    clock.advance(timedelta(seconds=29))
    assert service.send_due().as_dict() == service.send_due().as_dict() == {k: [] for k in service.send_due().as_dict()}
    assert len(receiver.calls) == 1  # not due yet: no call before the backoff ends

    clock.advance(timedelta(seconds=1))
    assert service.send_due().retrying == [request.id]  # 502: the wait doubles
    assert service.requests.get(request.id).next_attempt_at == "2026-11-02 18:01:30.000000"  # type: ignore[union-attr]
    clock.advance(timedelta(seconds=59))
    assert service.send_due().sent == [] and len(receiver.calls) == 2
    clock.advance(timedelta(seconds=1))
    assert service.send_due().sent == [request.id]

    sent = service.requests.get(request.id)
    assert sent is not None and sent.status == "sent" and sent.attempts == 3
    assert [r["status"] for r in sent.responses] == [503, 502, 200]
    assert sent.sent_at == "2026-11-02 18:01:30.000000" and sent.wait_until == "2026-11-02 18:31:30.000000"
    # one request, sent three times: the same body and idempotency key, a fresh signature each time
    assert len({c.body for c in receiver.calls}) == 1
    assert {c.headers["idempotency-key"] for c in receiver.calls} == {request.id}
    assert [c.headers["x-tower-replay-attempt"] for c in receiver.calls] == ["1", "2", "3"]
    for call in receiver.calls:
        assert verify_signature(
            SECRET,
            call.headers["x-tower-timestamp"],
            call.headers["x-tower-signature"],
            call.body,
            now=clock.now().timestamp(),
        )
    assert len({c.headers["x-tower-signature"] for c in receiver.calls}) == 3


def test_a_429_waits_as_long_as_retry_after_says(
    service: ReplayService, exceptions: ExceptionStore, clock: FixedClock, receiver: Receiver
) -> None:
    receiver.answer((429, {"error": "slow down"}), headers={"Retry-After": "300"})
    request = service.request(silence(exceptions).id).request
    assert (request.status, request.next_attempt_at) == ("requested", "2026-11-02 18:05:00.000000")
    clock.advance(timedelta(seconds=299))
    assert service.send_due().sent == []
    clock.advance(timedelta(seconds=1))
    assert service.send_due().sent == [request.id] and len(receiver.calls) == 2


def test_unreachable_is_retried_until_attempts_run_out_and_a_4xx_fails_at_once(
    store: Store, exceptions: ExceptionStore, clock: FixedClock, receiver: Receiver
) -> None:
    nowhere = ReplayService(store, exceptions, clock, settings(f"http://127.0.0.1:{free_port()}/replay"))
    record = silence(exceptions)
    request = nowhere.request(record.id).request
    assert request.status == "requested" and "error" in request.responses[0]
    for wait in (30, 60, 120):  # 4 attempts in all, each after a doubled wait
        clock.advance(timedelta(seconds=wait))
        nowhere.send_due()
    failed = nowhere.requests.get(request.id)
    assert failed is not None and (failed.status, failed.attempts) == ("failed", 4)
    assert "no success in 4 attempts" in failed.detail["failure"]
    assert exceptions.audit(record.id)[-1]["detail"]["text"].startswith("replay failed:")

    other = silence(exceptions, "wms/dallas")
    receiver.answer((400, {"error": "unknown source"}))
    service = ReplayService(store, exceptions, clock, settings(receiver.url))
    refused = service.request(other.id).request
    assert (refused.status, refused.attempts) == ("failed", 1)
    assert "refused" in refused.detail["failure"] and "HTTP 400" in refused.detail["failure"]
    clock.advance(timedelta(hours=2))
    service.send_due()
    assert len(receiver.calls) == 1  # a refusal is not retried


def test_a_webhook_that_does_not_answer_costs_one_timeout_a_run(
    store: Store, exceptions: ExceptionStore, clock: FixedClock, receiver: Receiver
) -> None:
    receiver.delay_seconds = 3  # it takes the request, never answers in time
    service = ReplayService(store, exceptions, clock, settings(receiver.url, timeout_seconds=0.3))
    asked = [service.request(silence(exceptions, f"wms/dc-{n}").id).request for n in range(3)]
    assert [r.attempts for r in asked] == [1, 1, 1] and len(receiver.calls) == 3  # each asked at once
    clock.advance(timedelta(seconds=30))  # all three due again
    run = service.send_due()
    assert len(receiver.calls) == 4, "one call, not one timeout per due request"
    assert len(run.retrying) == 1 and len(run.deferred) == 2
    assert {*run.retrying, *run.deferred} == {r.id for r in asked}
    left = [service.requests.get(i) for i in run.deferred]
    assert [(r.attempts, r.status) for r in left if r is not None] == [(1, "requested"), (1, "requested")]
    second = service.send_due()  # the next run takes the next one (the first waits out its backoff)
    assert len(receiver.calls) == 5 and len(second.retrying) == 1 and len(second.deferred) == 1
    assert {*second.retrying, *second.deferred} == set(run.deferred)
    service.stop()  # a stopping tower: the run ends before the next call
    assert service.send_due().retrying == [] and len(receiver.calls) == 5


# no duplicates ---------------------------------------------------------------------------------------


def test_the_same_thing_is_never_requested_twice(
    service: ReplayService, store: Store, exceptions: ExceptionStore, clock: FixedClock, receiver: Receiver
) -> None:
    record = silence(exceptions)
    first = service.request(record.id)
    second = service.request(record.id)
    assert first.created and not second.created and second.request.id == first.request.id
    assert len(receiver.calls) == 1

    jobs = JobRegistry()
    register_replay_jobs(jobs, service)
    scheduler = Scheduler(jobs, clock, SchedulerSettings(enabled=False))
    for _ in range(2):  # every job, twice
        for name in ("replay-send", "replay-watch", "replay-auto"):
            assert scheduler.run_job(name).ok
    clock.advance(timedelta(minutes=10))
    for _ in range(2):
        scheduler.run_job("replay-send")
    assert len(receiver.calls) == 1
    assert service.requests.search()[1] == 1
    assert service.requests.search(offset=2**32) == ([], 1)  # past 2**32 once wrapped around to the first page

    # another exception asking for the same source and range joins the request instead of asking again
    stale = silence(exceptions, rule="inventory-stale")
    since, until = datetime(2026, 11, 2, 17, 20, tzinfo=UTC), OPENED
    joined = service.request(stale.id, since=since, until=until)
    assert not joined.created and joined.request.id == first.request.id
    assert joined.request.exception_ids == [record.id, stale.id]
    assert "already asks wms" in exceptions.audit(stale.id)[-1]["detail"]["text"]
    assert len(receiver.calls) == 1
    # a different range is a different thing
    wider = service.request(record.id, since=since - timedelta(hours=1), until=until)
    assert wider.created and wider.request.id != first.request.id and len(receiver.calls) == 2


def test_the_policy_asks_once_per_exception(
    store: Store, exceptions: ExceptionStore, clock: FixedClock, receiver: Receiver
) -> None:
    service = ReplayService(store, exceptions, clock, settings(receiver.url, auto=True))
    wms, dallas = silence(exceptions), silence(exceptions, "wms/dallas")
    silence(exceptions, "tms")  # no webhook for tms
    exceptions.open_many([NewException("order-release", "SO-1", "business", "customer_service", "high")])
    exceptions.open_many(
        [NewException("integration-errors", "wms|pick", "technical", "integration", "high", context={"source": "wms"})]
    )
    first = service.auto_request()
    assert len(first.requested) == 2 and service.auto_request().requested == []
    assert len(receiver.calls) == 2
    asked = {tuple(r.exception_ids) for r in service.requests.search()[0]}
    assert asked == {(wms.id,), (dallas.id,)}
    assert {r.requested_by for r in service.requests.search()[0]} == {"policy"}


# resolution and escalation ---------------------------------------------------------------------------


def test_resolves_when_the_replayed_keys_arrive(
    service: ReplayService, store: Store, exceptions: ExceptionStore, clock: FixedClock
) -> None:
    record = silence(exceptions)
    deliver(store, 1, OPENED)  # received before the request: not a replay
    clock.advance(timedelta(minutes=5))
    request = service.request(record.id, keys=["SH-1", "SH-2"]).request
    assert request.keys == ["SH-1", "SH-2"] and request.status == "sent"
    assert service.watch().satisfied == []

    deliver(store, 1, clock.now() + timedelta(minutes=1), time="2026-11-01T09:00:00Z")  # keys match at any time
    clock.advance(timedelta(minutes=2))
    assert service.watch().satisfied == []
    assert service.evidence(request)["keys_missing"] == ["SH-2"]
    assert exceptions.get(record.id).status == "open"

    deliver(store, 2, clock.now(), source="wms/dallas")  # a path of the source counts
    clock.advance(timedelta(minutes=1))
    assert service.watch().satisfied == [request.id]
    resolved = exceptions.get(record.id)
    assert (resolved.status, resolved.resolution) == ("resolved", "replayed")
    evidence = orjson.loads(resolved.resolution_detail)
    assert evidence["keys_matched"] == ["SH-1", "SH-2"] and evidence["events"] == 2
    assert evidence["replay_id"] == request.id and evidence["keys_missing"] == []
    assert actions(exceptions, record.id)[-1] == ("replay", "resolved")
    done = service.requests.get(request.id)
    assert done is not None and done.status == "satisfied" and done.closed_at == "2026-11-02 18:08:00.000000"
    assert service.watch().satisfied == []  # closed: nothing happens twice


def test_resolves_on_events_in_the_range_and_counts_what_the_webhook_announced(
    store: Store, exceptions: ExceptionStore, clock: FixedClock, receiver: Receiver
) -> None:
    service = ReplayService(store, exceptions, clock, settings(receiver.url))
    record = silence(exceptions)
    receiver.answer((202, {"expected_events": 2}))
    request = service.request(record.id).request
    assert request.expected_events == 2
    clock.advance(timedelta(minutes=1))
    deliver(store, 1, clock.now(), time="2026-11-02T18:30:00Z")  # after the range: not what was lost
    deliver(store, 2, clock.now(), source="erp")  # another source
    deliver(store, 3, clock.now(), time="2026-11-02T17:45:00Z")
    assert service.watch().satisfied == []  # 1 of the 2 announced
    deliver(store, 4, clock.now(), time="2026-11-02T17:20:00Z")  # `from` is inclusive
    assert service.watch().satisfied == [request.id]
    evidence = orjson.loads(exceptions.get(record.id).resolution_detail)
    assert (evidence["events"], evidence["expected_events"]) == (2, 2)


def test_escalates_when_the_events_do_not_arrive(
    service: ReplayService, store: Store, exceptions: ExceptionStore, clock: FixedClock
) -> None:
    record = silence(exceptions)
    request = service.request(record.id).request
    assert request.wait_until == "2026-11-02 18:30:00.000000"
    clock.advance(timedelta(minutes=29, seconds=59))
    assert service.watch().escalated == []
    clock.advance(timedelta(seconds=1))
    assert service.watch().escalated == [request.id]

    escalated = service.requests.get(request.id)
    assert escalated is not None and escalated.status == "escalated"
    assert "did not all arrive within 30 minutes (0 events)" in escalated.detail["escalation"]
    still = exceptions.get(record.id)
    assert still.status == "open"  # escalated, not resolved: a person takes it from here
    note = exceptions.audit(record.id)[-1]
    assert (note["actor"], note["action"]) == ("replay", "note") and "escalated" in note["detail"]["text"]
    assert [r.id for r in service.requests.search(status="escalated")[0]] == [request.id]

    deliver(store, 1, clock.now())  # too late: the escalation stands
    clock.advance(timedelta(minutes=1))
    assert service.watch().as_dict() == {k: [] for k in service.watch().as_dict()}
    assert service.request(record.id).created is False  # and it is not asked again


def test_dead_letters_of_the_source_say_what_to_resend(
    service: ReplayService, store: Store, exceptions: ExceptionStore, clock: FixedClock, receiver: Receiver
) -> None:
    lost = make_event("shipment.confirmed", 7, source="wms")
    refused = Refusal(
        door="events", reason="data.quantity: not a number", raw=orjson.dumps(lost).decode(), source="wms"
    )
    garbled = Refusal(door="events", reason="not JSON", raw="{not json", source="wms/dallas")
    numbered = Refusal(door="events", reason="id: required", raw='{"id": 5, "type": "x"}', source="wms")  # no string id
    elsewhere = Refusal(
        door="events", reason="x", raw=orjson.dumps(make_event("order.accepted", 8)).decode(), source="erp"
    )
    at = datetime(2026, 11, 2, 17, 40, tzinfo=UTC)
    store.insert("dead_letters", [dead_letter_row(r, "token", at) for r in (refused, garbled, numbered, elsewhere)])
    record = silence(exceptions)
    request = service.request(record.id).request
    assert request.keys == [lost["id"]]
    body = receiver.calls[0].json()
    assert body["keys"] == [lost["id"]]
    assert sorted(d["reason"] for d in body["dead_letters"]) == [
        "data.quantity: not a number",
        "id: required",
        "not JSON",
    ]

    clock.advance(timedelta(minutes=3))
    store.insert("business_events", [event_row(lost, clock.now())])
    assert service.watch().satisfied == [request.id]
    assert exceptions.get(record.id).resolution == "replayed"


def test_the_range_and_reason_come_from_the_exception(service: ReplayService, exceptions: ExceptionStore) -> None:
    stale_context = {
        "source": "wms/reno",
        "last_snapshot": "2026-11-02T15:00:00.000000Z",
        "summary": "wms/reno: last inventory snapshot 2026-11-02T15:00:00Z (3.0 h ago; stale after 2 h)",
    }
    errors_context = {"source": "wms", "since": "2026-11-02T17:45:00.000000Z", "until": "2026-11-02T18:00:00.000000Z"}
    stale, errors, bare = exceptions.open_many(
        [
            NewException("inventory-stale", "wms/reno", "technical", "integration", "high", context=stale_context),
            NewException("integration-errors", "wms|pick", "technical", "integration", "high", context=errors_context),
            NewException("source-silence", "wms/dallas", "technical", "integration", "high"),  # key only
        ]
    )
    ranges = {}
    for record in (stale, errors, bare):
        request = service.request(record.id, send=False).request
        assert request.status == "requested" and request.attempts == 0  # the replay-send job sends it
        ranges[record.rule] = (request.source, request.range_from, request.range_to)
    assert ranges == {
        "inventory-stale": ("wms/reno", "2026-11-02 15:00:00.000000", "2026-11-02 18:00:00.000000"),
        "integration-errors": ("wms", "2026-11-02 17:45:00.000000", "2026-11-02 18:00:00.000000"),
        "source-silence": ("wms/dallas", "2026-11-01 18:00:00.000000", "2026-11-02 18:00:00.000000"),  # 24 h back
    }
    assert orjson.loads(service.requests.for_exception(stale.id)[0].body)["reason"] == (
        f"inventory-stale wms/reno ({stale_context['summary']})"
    )
    assert service.send_due().sent != [] and len(service.requests.search(status="sent")[0]) == 3


# what cannot be replayed -----------------------------------------------------------------------------


def test_what_cannot_be_replayed_says_why(service: ReplayService, exceptions: ExceptionStore) -> None:
    (business,) = exceptions.open_many([NewException("order-release", "SO-9", "business", "customer_service", "high")])
    with pytest.raises(NotReplayable, match="only technical exceptions"):
        service.request(business.id)
    with pytest.raises(NotReplayable, match="no replay webhook is configured for source 'tms'"):
        service.request(silence(exceptions, "tms").id)
    (errors,) = exceptions.open_many(
        [NewException("integration-errors", "wms|pick", "technical", "integration", "high", context={"source": ""})]
    )
    with pytest.raises(NotReplayable, match="names no source"):
        service.request(errors.id)
    record = silence(exceptions)
    with pytest.raises(NotReplayable, match="the range is empty"):
        service.request(record.id, since=OPENED, until=OPENED)
    exceptions.resolve(record.id, actor="ann")
    with pytest.raises(NotReplayable, match="resolved"):
        service.request(record.id)


# settings --------------------------------------------------------------------------------------------


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    hooks = {
        "wms": {"url": "https://wms.example.com/replay", "secret": SECRET, "auto": True},
        "wms/dallas": {"url": "https://dallas.example.com/replay", "secret": SECRET, "wait_minutes": 15},
    }
    monkeypatch.setenv("TOWER_REPLAY_WEBHOOKS", orjson.dumps(hooks).decode())
    loaded = ReplaySettings()
    assert SECRET not in repr(loaded)
    found = loaded.webhook_for("wms/dallas/dock-2")
    assert found is not None and found[0] == "wms/dallas" and loaded.wait_for(found[1]) == 15
    found = loaded.webhook_for("wms/austin")
    assert found is not None and found[0] == "wms" and found[1].auto and loaded.wait_for(found[1]) == 60
    assert loaded.webhook_for("wmsx") is None and loaded.webhook_for("erp") is None


@pytest.mark.parametrize(
    ("hook", "source", "message"),
    [
        ({"url": "https://wms.example.com/replay"}, "wms", "secret"),
        ({"url": "https://wms.example.com/replay", "secret": "short"}, "wms", "at least 16 characters"),
        ({"url": "ftp://wms.example.com/replay", "secret": SECRET}, "wms", "URL scheme should be 'http' or 'https'"),
        ({"url": "not a url", "secret": SECRET}, "wms", "url"),
        ({"url": "https://sap.example.com/replay", "secret": SECRET}, "sap", "unknown source 'sap'"),
        ({"url": "https://wms.example.com/replay", "secret": SECRET}, "wms/dallas\n", "'wms/dallas\\\\n'"),
    ],
)
def test_bad_webhooks_are_refused(hook: dict[str, Any], source: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ReplaySettings.model_validate({"webhooks": {source: hook}})


def test_an_event_the_tower_already_had_is_no_replayed_event(
    service: ReplayService, store: Store, exceptions: ExceptionStore, clock: FixedClock
) -> None:
    """The default range of a stale exception begins at its last snapshot, inclusive: resending that snapshot (same
    id, time and data) is a redelivery, not a lost event, before and after the store folds the two copies."""
    last = make_event("inventory.snapshot", 1, source="wms/reno", time="2026-11-02T15:00:00Z")
    store.insert("business_events", [event_row(last, datetime(2026, 11, 2, 15, 1, tzinfo=UTC))])
    context = {"source": "wms/reno", "last_snapshot": "2026-11-02T15:00:00.000000Z", "check": "stale"}
    (stale,) = exceptions.open_many(
        [NewException("inventory-stale", "wms/reno", "technical", "integration", "high", context=context)]
    )
    request = service.request(stale.id).request
    assert request.detail == {"stored_before": 1}
    clock.advance(timedelta(minutes=1))
    store.insert("business_events", [event_row(last, clock.now())])  # the same snapshot again
    for merge in (False, True):
        if merge:
            store.command("OPTIMIZE TABLE business_events FINAL")
        assert service.watch().satisfied == [], merge
        assert service.evidence(request)["events"] == 0
    lost = make_event("inventory.snapshot", 2, source="wms/reno", time="2026-11-02T16:00:00Z")
    store.insert("business_events", [event_row(lost, clock.now())])
    assert service.watch().satisfied == [request.id]
    evidence = orjson.loads(exceptions.get(stale.id).resolution_detail)
    assert (evidence["events"], evidence["stored_before"]) == (1, 1)


# asking again ----------------------------------------------------------------------------------------


def test_a_failed_request_is_asked_again_only_when_asked_to(
    service: ReplayService, exceptions: ExceptionStore, clock: FixedClock, receiver: Receiver
) -> None:
    record = silence(exceptions)
    receiver.answer((400, {"error": "unknown source"}))  # the webhook is broken ...
    first = service.request(record.id, actor="ann")
    assert first.created and first.request.status == "failed"
    clock.advance(timedelta(minutes=10))  # ... and fixed: a plain ask still returns the failed request
    plain = service.request(record.id, actor="ann")
    assert not plain.created and plain.request.id == first.request.id and len(receiver.calls) == 1
    assert "again" in plain.message

    again = service.request(record.id, actor="ann", again=True)
    assert again.created and again.request.id != first.request.id and again.request.status == "sent"
    assert again.request.detail["supersedes"] == first.request.id and again.request.detail["round"] == 2
    (range_from, range_to) = (first.request.range_from, first.request.range_to)
    assert (again.request.range_from, again.request.range_to, again.request.keys) == (range_from, range_to, [])
    old = service.requests.get(first.request.id)
    assert old is not None and old.status == "failed" and old.detail["superseded_by"] == again.request.id
    assert len(receiver.calls) == 2
    call = receiver.calls[1]
    assert call.headers["idempotency-key"] == again.request.id == call.json()["idempotency_key"]
    assert call.headers["x-tower-replay-attempt"] == "1"

    # the new request is the one asked for now: a plain ask returns it, asking again while it waits is refused
    assert service.request(record.id).request.id == again.request.id
    with pytest.raises(NotReplayable, match="is sent"):
        service.request(record.id, again=True)
    assert len(receiver.calls) == 2


def test_an_escalated_request_is_asked_again_under_a_derived_key(
    store: Store, exceptions: ExceptionStore, clock: FixedClock, receiver: Receiver
) -> None:
    record = silence(exceptions)
    one = ReplayService(store, exceptions, clock, settings(receiver.url))
    first = one.request(record.id).request
    clock.advance(timedelta(minutes=30))
    assert one.watch().escalated == [first.id]
    # the key is derived from the first round's, so two towers asking again at once write one request; one after
    # the other, the second is refused while the first waits
    two = ReplayService(store, exceptions, clock, settings(receiver.url))
    a = one.request(record.id, again=True, send=False).request
    assert a.id == round_key(first.id, 2) != first.id and a.detail["supersedes"] == first.id
    with pytest.raises(NotReplayable, match=f"replay {a.id} asks wms .* is requested"):
        two.request(record.id, again=True, send=False)
    assert one.requests.search()[1] == 2 and orjson.loads(a.body)["supersedes"] == first.id
    clock.advance(timedelta(minutes=1))
    deliver(store, 1, clock.now())
    assert one.send_due().sent == [a.id] and one.watch().satisfied == [a.id]
    assert exceptions.get(record.id).resolution == "replayed"


def test_a_satisfied_or_new_request_is_not_asked_again(
    service: ReplayService, store: Store, exceptions: ExceptionStore, clock: FixedClock
) -> None:
    record = silence(exceptions)
    request = service.request(record.id, send=False).request
    with pytest.raises(NotReplayable, match="is requested"):
        service.request(record.id, again=True)
    service.send_due()
    clock.advance(timedelta(minutes=1))
    deliver(store, 1, clock.now())
    assert service.watch().satisfied == [request.id]
    # another exception asking for the same thing after it was satisfied is resolved by it, not left open
    stale = silence(exceptions, rule="inventory-stale")
    since, until = datetime(2026, 11, 2, 17, 20, tzinfo=UTC), OPENED
    joined = service.request(stale.id, since=since, until=until)
    assert not joined.created and joined.request.id == request.id
    resolved = exceptions.get(stale.id)
    assert (resolved.status, resolved.resolution) == ("resolved", "replayed")
    assert orjson.loads(resolved.resolution_detail)["replay_id"] == request.id
    (other,) = exceptions.open_many(
        [NewException("integration-errors", "wms|pick", "technical", "integration", "high", context={"source": "wms"})]
    )
    with pytest.raises(NotReplayable, match="satisfied"):
        service.request(other.id, since=since, until=until, again=True)
