"""POST /v1/events against a real tower: every mode, every bad input, duplicates, replay after a fix."""

from __future__ import annotations

import gzip
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from collector.auth import Grant, TokenRegistry
from collector.deadletters import Refusal, dead_letter_row
from collector.otlp.convert import otlp_json
from collector.service import DiscardReport, Replay, TimeWindow
from kernel.api_auth import token_id
from kernel.clock import FixedClock
from kernel.settings import IngestSettings
from kernel.store.embedded import EmbeddedStore
from tests.collector.test_otlp_helpers import event_log, logs_request, make_log
from tests.factories import make_event
from tests.support import RunningTower, start_in_process

STRUCTURED = {"Content-Type": "application/cloudevents+json"}
BASE = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
BATCH = {"Content-Type": "application/cloudevents-batch+json"}
NDJSON = {"Content-Type": "application/x-ndjson"}
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def events(running: RunningTower, where: str = "1", params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    assert running.tower is not None
    return running.tower.store.query(
        "SELECT * FROM business_events FINAL WHERE " + where + " ORDER BY time, id", params or {}
    )


def letters(running: RunningTower) -> list[dict[str, Any]]:
    assert running.tower is not None
    return running.tower.store.query(
        "SELECT toString(id) AS id, door, source, token_id, reason, raw, status FROM dead_letters FINAL"
        " ORDER BY received_at, raw"
    )


def assert_still_serving(running: RunningTower) -> None:
    """The server answers and still stores a valid event."""
    assert httpx.get(running.http_url + "/healthz").status_code == 200
    with running.client("erp") as http:
        response = http.post("/v1/events", content=orjson.dumps(make_event()), headers=STRUCTURED)
    assert response.status_code == 200, response.text


def test_structured_event_is_stored_with_every_column(tower: RunningTower) -> None:
    event = make_event(
        "shipment.confirmed",
        id="wms-1",
        source="wms/dallas",
        time="2026-11-02T09:30:00.250-06:00",
        traceparent=TRACEPARENT,
        data={"order_id": "SO-1", "shipment_id": "SH-1", "quantity": 3, "warehouse": "DAL"},
    )
    with tower.client("wms") as http:
        response = http.post("/v1/events", content=orjson.dumps(event), headers=STRUCTURED)
    assert response.status_code == 200
    assert response.json() == {"accepted": 1, "rejected": []}
    [row] = events(tower)
    assert {k: row[k] for k in ("id", "source", "system", "type", "time", "subject", "door")} == {
        "id": "wms-1",
        "source": "wms/dallas",
        "system": "wms",
        "type": "shipment.confirmed",
        "time": "2026-11-02 15:30:00.250000",
        "subject": "SH-1",
        "door": "events",
    }
    assert (row["order_id"], row["shipment_id"], row["warehouse"], row["quantity"]) == ("SO-1", "SH-1", "DAL", 3)
    assert (row["trace_id"], row["span_id"]) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert orjson.loads(row["data"]) == event["data"]
    assert letters(tower) == []


def test_batch_stores_each_event(tower: RunningTower) -> None:
    batch = [
        make_event("order.accepted", 1, data={"amount": 1234.5, "currency": "EUR"}),
        make_event("order.released", 1),
        make_event("invoice.posted", 1, subject="INV-CUSTOM", data={"amount": "99.125", "quantity": 2}),
    ]
    with tower.client("erp") as http:
        response = http.post("/v1/events", content=orjson.dumps(batch), headers=BATCH)
    assert response.json() == {"accepted": 3, "rejected": []}
    rows = {r["type"]: r for r in events(tower)}
    assert set(rows) == {"order.accepted", "order.released", "invoice.posted"}
    accepted, invoice = rows["order.accepted"], rows["invoice.posted"]
    assert (accepted["subject"], accepted["order_id"], accepted["customer_id"]) == ("SO-1", "SO-1", "C-1")
    assert (float(accepted["amount"]), accepted["currency"], accepted["quantity"]) == (1234.5, "EUR", None)
    assert (invoice["subject"], invoice["invoice_id"], float(invoice["amount"]), invoice["quantity"]) == (
        "INV-CUSTOM",
        "IN-1",
        99.125,
        2,
    )
    assert all(r["trace_id"] == "" and r["door"] == "events" for r in rows.values())


def test_amounts_sent_as_text_the_validator_reads_are_stored_as_numbers(tower: RunningTower) -> None:
    """' 12.50 ' (a padded export) and '1_000' read as numbers, and the store refused their text: a 500 for the
    whole batch, its good events lost with them."""
    batch = [
        make_event("order.accepted", 1, data={"amount": " 12.50 "}),
        make_event("order.accepted", 2, data={"amount": "1_000"}),
        make_event("order.accepted", 3, data={"amount": "99.5"}),
    ]
    with tower.client("erp") as http:
        response = http.post("/v1/events", content=orjson.dumps(batch), headers=BATCH)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 3, "rejected": []}
    assert [(r["order_id"], float(r["amount"])) for r in events(tower)] == [
        ("SO-1", 12.5),
        ("SO-2", 1000.0),
        ("SO-3", 99.5),
    ]
    assert [orjson.loads(r["data"])["amount"] for r in events(tower)] == ["12.50", "1000", "99.5"]


def test_binary_mode_takes_attributes_from_headers_and_the_plain_traceparent(tower: RunningTower) -> None:
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "ce-specversion": "1.0",
        "ce-id": "tms-77",
        "ce-source": "tms",
        "ce-type": "shipment.delivered",
        "ce-time": "2026-11-03T01:00:00+01:00",
        "ce-subject": "SH-%C3%A9",
        "traceparent": TRACEPARENT,
    }
    with tower.client("tms") as http:
        response = http.post("/v1/events", content=b'{"shipment_id": "SH-9", "order_id": "SO-9"}', headers=headers)
    assert response.json() == {"accepted": 1, "rejected": []}
    [row] = events(tower)
    assert (row["id"], row["source"], row["type"], row["time"], row["subject"]) == (
        "tms-77",
        "tms",
        "shipment.delivered",
        "2026-11-03 00:00:00.000000",
        "SH-é",
    )
    assert (row["shipment_id"], row["order_id"], row["trace_id"]) == ("SH-9", "SO-9", TRACEPARENT[3:35])


def test_binary_mode_missing_attribute_is_refused_with_its_structured_form_kept(tower: RunningTower) -> None:
    headers = {"Content-Type": "application/json", "ce-specversion": "1.0", "ce-source": "tms", "ce-type": "x.y"}
    with tower.client("tms") as http:
        response = http.post("/v1/events", content=b"{}", headers=headers)
    assert response.status_code == 400
    body = response.json()
    assert body["accepted"] == 0 and "error" in body
    assert body["rejected"][0]["errors"] == [
        "id: required, a non-empty string",
        "time: required (RFC 3339 with an offset)",
    ]
    [letter] = letters(tower)
    assert orjson.loads(letter["raw"])["source"] == "tms"
    assert_still_serving(tower)


def test_ndjson_gzip_with_blank_and_bad_lines(tower: RunningTower) -> None:
    good = [make_event("shipment.confirmed", n) for n in range(3)]
    lines = [orjson.dumps(good[0]), b"", orjson.dumps(good[1]), b'{"id": "broken"', b"   ", orjson.dumps(good[2])]
    body = gzip.compress(b"\n".join(lines) + b"\n")
    with tower.client("wms") as http:
        response = http.post("/v1/events", content=body, headers={**NDJSON, "Content-Encoding": "gzip"})
    assert response.status_code == 200
    result = response.json()
    assert result["accepted"] == 3
    [rejected] = result["rejected"]
    assert (rejected["index"], rejected["line"], rejected["id"]) == (2, 4, None)
    assert rejected["errors"][0].startswith("line 4: not valid JSON")
    assert sorted(r["id"] for r in events(tower)) == sorted(e["id"] for e in good)
    [letter] = letters(tower)
    assert letter["raw"] == '{"id": "broken"'


def test_batch_of_100_with_3_bad_stores_97_and_names_the_3(tower: RunningTower) -> None:
    batch = [make_event("order.released", n) for n in range(100)]
    batch[7] = make_event("order.released", 7, id=...)
    batch[42] = make_event("order.released", 42, time="yesterday")
    batch[99] = make_event("order.released", 99, data={"order_id": None}, source="erp/eu")
    with tower.client("erp") as http:
        response = http.post(
            "/v1/events",
            content=gzip.compress(orjson.dumps(batch)),
            headers={
                **BATCH,
                "Content-Encoding": "gzip",
            },
        )
    assert response.status_code == 200
    result = response.json()
    assert result["accepted"] == 97
    assert [(r["index"], r["id"]) for r in result["rejected"]] == [
        (7, None),
        (42, batch[42]["id"]),
        (99, batch[99]["id"]),
    ]
    assert result["rejected"][0]["errors"] == ["id: required, a non-empty string"]
    assert result["rejected"][1]["errors"] == ["time: 'yesterday' is not RFC 3339 with an offset"]
    assert result["rejected"][2]["errors"] == ["data.order_id: required for order.released"]
    assert len(events(tower)) == 97
    dead = letters(tower)
    assert len(dead) == 3
    assert {orjson.loads(d["raw"]).get("time") for d in dead} >= {"yesterday"}
    reasons = sorted(d["reason"] for d in dead)
    assert reasons == sorted("; ".join(r["errors"]) for r in result["rejected"])
    assert {d["door"] for d in dead} == {"events"} and {d["status"] for d in dead} == {"pending"}
    assert {d["token_id"] for d in dead} == {token_id(tower.token("erp"))}
    assert {d["source"] for d in dead} == {"erp", "erp/eu"}


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"id": ...}, "id: required, a non-empty string"),
        ({"source": ...}, "source: required"),
        ({"type": ...}, "type: required"),
        ({"specversion": ...}, "specversion: must be '1.0', got None"),
        ({"specversion": "0.3"}, "specversion: must be '1.0', got '0.3'"),
        ({"time": ...}, "time: required (RFC 3339 with an offset)"),
        ({"time": "2026-11-02T15:00:00"}, "time: '2026-11-02T15:00:00' is not RFC 3339 with an offset"),
        ({"source": "sap"}, "source: 'sap' is not one of erp, wms, tms, crm, ecommerce, edi, middleware"),
        ({"traceparent": "00-zz-01"}, "traceparent: '00-zz-01' is not a W3C traceparent"),
    ],
)
def test_bad_structured_events_are_refused_readably(tower: RunningTower, override: dict[str, Any], error: str) -> None:
    event = make_event("order.released", **override)
    with tower.client("erp") as http:
        response = http.post("/v1/events", content=orjson.dumps(event), headers=STRUCTURED)
    assert response.status_code == 400
    body = response.json()
    assert body["accepted"] == 0
    [rejected] = body["rejected"]
    assert any(e.startswith(error) for e in rejected["errors"]), rejected
    [letter] = letters(tower)
    assert orjson.loads(letter["raw"]) == event and error in letter["reason"]
    assert_still_serving(tower)


def test_wrong_source_token_is_refused_and_dead_lettered(tower: RunningTower) -> None:
    event = make_event("order.accepted", source="erp")
    with tower.client("wms") as http:
        response = http.post("/v1/events", content=orjson.dumps(event), headers=STRUCTURED)
    assert response.status_code == 400
    assert response.json()["rejected"][0]["errors"] == ["source: 'erp' is not allowed for this token (it may send wms)"]
    [letter] = letters(tower)
    assert (letter["source"], letter["token_id"]) == ("erp", token_id(tower.token("wms")))
    assert events(tower) == []
    # with another problem, both at once: a sender fixing the time must not then meet the source
    both = make_event("order.accepted", source="erp", time="yesterday")
    with tower.client("wms") as http:
        answer = http.post("/v1/events", content=orjson.dumps(both), headers=STRUCTURED).json()
    assert answer["rejected"][0]["errors"] == [
        "source: 'erp' is not allowed for this token (it may send wms)",
        "time: 'yesterday' is not RFC 3339 with an offset",
    ]
    assert_still_serving(tower)


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-known-token-at-all", "Basic abc", "Bearer"])
def test_without_a_known_token_401(tower: RunningTower, authorization: str | None) -> None:
    headers = {**STRUCTURED, **({"Authorization": authorization} if authorization else {})}
    response = httpx.post(tower.http_url + "/v1/events", content=orjson.dumps(make_event()), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "ingest token" in response.json()["error"]
    assert letters(tower) == [] and events(tower) == []
    assert_still_serving(tower)


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/json"},
        {},
        {"Content-Type": "text/csv", "ce-id": "1"},
        {**STRUCTURED, "Content-Encoding": "br"},
    ],
)
def test_other_content_types_415(tower: RunningTower, headers: dict[str, str]) -> None:
    with tower.client("erp") as http:
        response = http.post("/v1/events", content=orjson.dumps(make_event()), headers=headers)
    assert response.status_code == 415
    assert response.json()["error"]
    assert letters(tower) == [] and events(tower) == []
    assert_still_serving(tower)


@pytest.mark.parametrize(
    ("headers", "content", "fragment"),
    [
        (STRUCTURED, b'{"specversion": "1.0", "id": ', "body is not valid JSON"),
        (BATCH, b"[{}, ", "body is not valid JSON"),
        (BATCH, b'{"specversion": "1.0"}', "must be a JSON array"),
        (STRUCTURED, b"\xff\xfe not utf-8", "body is not valid JSON"),
    ],
)
def test_undecodable_body_400_and_dead_lettered_whole(
    tower: RunningTower, headers: dict[str, str], content: bytes, fragment: str
) -> None:
    with tower.client("erp") as http:
        response = http.post("/v1/events", content=content, headers=headers)
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    [letter] = letters(tower)
    assert letter["raw"] == content.decode("utf-8", "replace") and fragment in letter["reason"]
    assert_still_serving(tower)


def test_a_body_starting_with_a_utf8_byte_order_mark_is_read(tower: RunningTower) -> None:
    """Windows senders (PowerShell, .NET) start the body with a BOM: it was refused 400 'BOM is not supported'."""
    bom = b"\xef\xbb\xbf"
    with tower.client("erp") as http:
        structured = http.post("/v1/events", content=bom + orjson.dumps(make_event(n=1)), headers=STRUCTURED)
        batch = http.post("/v1/events", content=bom + orjson.dumps([make_event(n=2)]), headers=BATCH)
        ndjson = http.post("/v1/events", content=bom + orjson.dumps(make_event(n=3)) + b"\n", headers=NDJSON)
        broken = http.post("/v1/events", content=bom + b'{"id": ', headers=STRUCTURED)
    assert [r.status_code for r in (structured, batch, ndjson)] == [200] * 3, [r.text for r in (structured, ndjson)]
    assert sorted(e["order_id"] for e in events(tower)) == ["SO-1", "SO-2", "SO-3"]
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
    [letter] = letters(tower)
    assert letter["raw"] == "\ufeff" + '{"id": '  # the body as sent, its BOM too


def test_a_letter_of_a_body_refused_for_its_byte_order_mark_replays(tower: RunningTower) -> None:
    """Such bodies were dead-lettered whole, as sent: a replay now reads them."""
    assert tower.tower is not None
    raw = "\ufeff" + orjson.dumps(make_event(n=4)).decode()
    refusal = Refusal(
        "events", "body is not valid JSON: BOM", raw, source="erp", content_type=STRUCTURED["Content-Type"]
    )
    tower.tower.store.insert("dead_letters", [dead_letter_row(refusal, token_id(tower.token("erp")), BASE)])
    report = tower.tower.ingest.replay(door="events")
    assert (report.replayed, report.still_failing) == (1, [])
    assert [e["order_id"] for e in events(tower)] == ["SO-4"]


def test_corrupt_gzip_400(tower: RunningTower) -> None:
    with tower.client("erp") as http:
        response = http.post("/v1/events", content=b"not gzip", headers={**STRUCTURED, "Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert "gzip" in response.json()["error"]
    assert_still_serving(tower)


def test_empty_batch_is_200_with_nothing(tower: RunningTower) -> None:
    with tower.client("erp") as http:
        response = http.post("/v1/events", content=b"[]", headers=BATCH)
    assert (response.status_code, response.json()) == (200, {"accepted": 0, "rejected": []})


def test_oversize_bodies_413(store: EmbeddedStore, tmp_path: Path) -> None:
    with start_in_process(tmp_path, store, max_body_bytes=4096, max_decompressed_bytes=16_384) as small:
        big = orjson.dumps([make_event("order.released", n) for n in range(40)])
        assert len(big) > 4096
        bomb = gzip.compress(b"[" + b" " * 1_000_000 + b"]")
        with small.client("erp") as http:
            too_big = http.post("/v1/events", content=big, headers=BATCH)
            inflates = http.post("/v1/events", content=bomb, headers={**BATCH, "Content-Encoding": "gzip"})
            fits = http.post("/v1/events", content=gzip.compress(big), headers={**BATCH, "Content-Encoding": "gzip"})
        assert too_big.status_code == 413 and "over the limit" in too_big.json()["error"]
        assert inflates.status_code == 413 and "inflates past" in inflates.json()["error"]
        assert len(bomb) < 4096
        assert fits.json() == {"accepted": 40, "rejected": []}
        assert letters(small) == []
        assert_still_serving(small)


def test_a_request_of_more_records_than_allowed_is_refused_whole_and_answers_are_bounded(
    store: EmbeddedStore, tmp_path: Path
) -> None:
    """A small gzip body of a million `{}` records cost gigabytes and a 190 MB answer: past
    TOWER_COLLECTOR_MAX_RECORDS_PER_REQUEST the request is one 413 and one dead letter; under it the answer lists
    TOWER_COLLECTOR_MAX_REJECTIONS_LISTED rejections and counts the others."""
    with (
        start_in_process(tmp_path, store, max_records_per_request=5, max_rejections_listed=3) as small,
        small.client("erp") as http,
    ):
        many = orjson.dumps([{}] * 6)
        lines = b"{}\n\n" * 6
        batch = http.post("/v1/events", content=gzip.compress(many), headers={**BATCH, "Content-Encoding": "gzip"})
        ndjson = http.post("/v1/events", content=lines, headers=NDJSON)
        assert (batch.status_code, ndjson.status_code) == (413, 413)
        assert "carries more than 5 records, over the limit of 5" in batch.json()["error"]
        assert "more than 5 records" in ndjson.json()["error"]
        assert all("TOWER_COLLECTOR_MAX_RECORDS_PER_REQUEST" in r.json()["error"] for r in (batch, ndjson))
        whole = letters(small)  # one letter a request, the body as sent (inflated)
        assert sorted(d["raw"] for d in whole) == sorted([many.decode(), lines.decode()])
        assert all("MAX_RECORDS_PER_REQUEST" in d["reason"] for d in whole)
        assert events(small) == []

        five = b"\n".join(orjson.dumps({"n": n}) for n in range(5)) + b"\n\n"
        answer = http.post("/v1/events", content=five, headers=NDJSON)
        assert answer.status_code == 400
        body = answer.json()
        assert [r["line"] for r in body["rejected"]] == [1, 2, 3]
        assert (body["rejected_total"], body["rejected_truncated"]) == (5, True)
        assert "none of the 5 records" in body["error"]
        assert len(letters(small)) == 2 + 5  # every refused record is still dead-lettered

        mixed = [make_event("order.released", n) for n in range(2)] + [{"n": n} for n in range(3)]
        stored = http.post("/v1/events", content=orjson.dumps(mixed), headers=BATCH)
        assert stored.status_code == 200
        assert stored.json()["accepted"] == 2 and len(stored.json()["rejected"]) == 3
        assert "rejected_total" not in stored.json()  # listed whole: the answer is as before
        assert_still_serving(small)


def test_a_body_refused_for_too_many_records_replays_once_the_limit_allows_it(
    store: EmbeddedStore, tmp_path: Path
) -> None:
    """Its letter is the whole batch or NDJSON body: a replay read it as one event and failed for ever ('event must
    be a JSON object'), so raising the limit never brought its records in."""
    with start_in_process(tmp_path, store, max_records_per_request=2) as small, small.client("erp") as http:
        batch = [make_event("order.released", n) for n in range(3)]
        lines = b"\n".join(orjson.dumps(make_event("order.released", n)) for n in range(3, 6)) + b"\n"
        bad = [make_event("order.released", 9), make_event("order.released", 10, data={"order_id": ""})]
        assert http.post("/v1/events", content=orjson.dumps(batch), headers=BATCH).status_code == 413
        assert http.post("/v1/events", content=lines, headers=NDJSON).status_code == 413
        assert http.post("/v1/events", content=orjson.dumps(bad + bad), headers=BATCH).status_code == 413
        assert small.tower is not None
        ingest = small.tower.ingest
        report = ingest.replay(door="events")
        assert report.replayed == 0 and all("more than 2 records" in f["errors"][0] for f in report.still_failing)

        ingest.pipeline.settings = ingest.pipeline.settings.model_copy(update={"max_records_per_request": 4})
        report = ingest.replay(door="events")
        assert report.replayed == 2
        (failing,) = report.still_failing
        assert failing["errors"] == [
            "record 1: data.order_id: required for order.released",
            "record 3: data.order_id: required for order.released",
        ]
        assert [e["order_id"] for e in events(small)] == [f"SO-{n}" for n in range(6)]
        assert sorted(d["status"] for d in letters(small)) == ["pending", "replayed", "replayed"]


def test_overloaded_pipeline_503_with_retry_after(tower: RunningTower) -> None:
    assert tower.tower is not None
    tower.tower.pipeline.stop()
    try:
        with tower.client("erp") as http:
            response = http.post("/v1/events", content=orjson.dumps(make_event()), headers=STRUCTURED)
    finally:
        tower.tower.pipeline.start()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.json()["retry_after"] == 2 and response.json()["error"]
    assert events(tower) == []
    assert_still_serving(tower)


def test_duplicates_count_once_and_out_of_order_is_fine(tower: RunningTower) -> None:
    accepted = make_event("order.accepted", 5)
    released = make_event("order.released", 5)
    shipped = make_event("shipment.confirmed", 5, source="wms", data={"order_id": "SO-5"})
    with tower.client("wms") as wms:
        assert wms.post("/v1/events", content=orjson.dumps(shipped), headers=STRUCTURED).status_code == 200
    with tower.client("erp") as erp:
        for _ in range(2):
            response = erp.post("/v1/events", content=orjson.dumps([released, accepted, accepted]), headers=BATCH)
            assert response.json() == {"accepted": 3, "rejected": []}
    assert tower.tower is not None
    counts = tower.tower.store.query(
        "SELECT type, count() AS n FROM business_events FINAL WHERE order_id = {o:String} GROUP BY type ORDER BY type",
        {"o": "SO-5"},
    )
    assert counts == [
        {"type": "order.accepted", "n": 1},
        {"type": "order.released", "n": 1},
        {"type": "shipment.confirmed", "n": 1},
    ]
    # arrival order differs from event time order; queries order by event time
    assert [r["type"] for r in events(tower)] == ["order.accepted", "order.released", "shipment.confirmed"]


def test_one_id_given_to_two_different_events_of_a_request_refuses_the_second(tower: RunningTower) -> None:
    """Both were answered as stored, and a merge kept one: the door sees the clash within a request."""
    released = make_event("order.released", 6, id="b1-1")
    accepted = make_event("order.accepted", 6, id="b1-1")  # the same id, another event
    with tower.client("erp") as erp:
        response = erp.post("/v1/events", content=orjson.dumps([released, released, accepted]), headers=BATCH)
    answer = response.json()
    assert answer["accepted"] == 2  # the repeat of the first is the same event: stored once
    (refused,) = answer["rejected"]
    assert refused["index"] == 2 and refused["id"] == "b1-1"
    assert refused["errors"] == [
        "id: 'b1-1' is also the id of record 0 of this request, a different event (the tower keeps one event per"
        " source and id: give each event its own id)"
    ]
    assert [r["type"] for r in events(tower)] == ["order.released"]
    assert [(d["status"], d["reason"][:20]) for d in letters(tower)] == [("pending", "id: 'b1-1' is also t")]


def test_replay_after_the_token_may_send_the_source(tower: RunningTower) -> None:
    assert tower.tower is not None
    event = make_event("order.accepted", 9, source="erp")
    binary = {"Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": "bin-9", "ce-source": "erp"}
    binary |= {"ce-type": "order.released", "ce-time": "2026-11-02T16:00:00Z"}
    with tower.client("wms") as wms:
        assert wms.post("/v1/events", content=orjson.dumps(event), headers=STRUCTURED).status_code == 400
        assert wms.post("/v1/events", content=b'{"order_id": "SO-9"}', headers=binary).status_code == 400
    assert len(letters(tower)) == 2
    with tower.api() as api:
        before = api.post("/api/deadletters/replay", json={"door": "events"}).json()
        assert before["replayed"] == 0 and len(before["still_failing"]) == 2
        assert "not allowed for this token" in before["still_failing"][0]["errors"][0]
        assert {d["status"] for d in letters(tower)} == {"pending"}
        # the fix: the wms token may now also send erp
        tokens = {t: (s + ["erp"] if s == ["wms"] else s) for t, s in tower.settings.ingest.tokens.items()}
        tower.tower.ingest.tokens = TokenRegistry(IngestSettings(tokens=tokens))
        after = api.post("/api/deadletters/replay", json={"door": "events"}).json()
        assert after | {"cursor": None} == {
            "replayed": 2,
            "still_failing": [],
            "not_pending": [],
            "matched": 2,
            "remaining": 0,
            "cursor": None,
        }
        assert api.post("/api/deadletters/replay", json={"door": "events"}).json() == {
            "replayed": 0,
            "still_failing": [],
            "not_pending": [],
            "matched": 0,
            "remaining": 0,
            "cursor": None,
        }
    rows = events(tower)
    assert sorted(r["id"] for r in rows) == sorted([event["id"], "bin-9"])
    assert {r["door"] for r in rows} == {"events"}
    assert {d["status"] for d in letters(tower)} == {"replayed"}


def test_a_listing_cuts_big_raw_records_and_one_letter_comes_whole(tower: RunningTower) -> None:
    body = b"{" + b'"\xc3\xa9' * 5_000  # 10,001 bytes of broken JSON, two-byte characters included
    with tower.client("erp") as http:
        assert http.post("/v1/events", content=body, headers=STRUCTURED).status_code == 400
    with tower.api() as api:
        [item] = api.get("/api/deadletters").json()["items"]
        # an offset past 2**32 once wrapped around to the first page
        assert api.get("/api/deadletters", params={"offset": 2**32}).json()["items"] == []
        assert (item["raw_bytes"], item["raw_truncated"], len(item["raw"])) == (len(body), True, 4000)
        assert body.decode().startswith(item["raw"])
        whole = api.get(f"/api/deadletters/{item['id']}").json()
        assert whole["raw"] == body.decode() and whole["status"] == "pending"
        # a replay that still fails writes a new version: the record stays whole
        assert api.post("/api/deadletters/replay", json={"door": "events"}).json()["replayed"] == 0
        again = api.get(f"/api/deadletters/{item['id']}").json()
        assert again["raw"] == body.decode() and again["status_note"].startswith("replay failed")
        missing = api.get("/api/deadletters/00000000-0000-0000-0000-000000000001")
        assert missing.status_code == 404 and "no dead letter" in missing.json()["detail"]
        assert api.get("/api/deadletters/not-a-uuid").status_code == 422
    small = make_event("order.accepted", source="erp")
    with tower.client("wms") as http:
        http.post("/v1/events", content=orjson.dumps(small), headers=STRUCTURED)
    with tower.api() as api:
        short = api.get("/api/deadletters", params={"source": "erp", "status": "pending"}).json()["items"]
    assert any(i["raw_truncated"] is False and orjson.loads(i["raw"]) == small for i in short)


def test_discarded_letters_keep_who_and_why_and_are_never_replayed(tower: RunningTower) -> None:
    assert tower.tower is not None
    sent = [make_event("order.accepted", n, source="erp") for n in (1, 2, 3)]
    with tower.client("wms") as wms:  # the wms token may not send erp: three dead letters
        assert wms.post("/v1/events", content=orjson.dumps(sent), headers=BATCH).status_code == 400
    with tower.api() as api:
        ids = sorted(d["id"] for d in api.get("/api/deadletters", params={"status": "pending"}).json()["items"])
        assert len(ids) == 3
        unknown = "00000000-0000-0000-0000-000000000001"
        blank = api.post("/api/deadletters/discard", json={"ids": ids[:1], "note": "   "})
        assert blank.status_code == 422 and "say why" in blank.text
        escaped = api.post("/api/deadletters/discard", json={"ids": ids[:1], "note": "bad \x1b[2Jdata"})
        assert escaped.status_code == 422 and "control character U+001B" in escaped.text  # kept with the letter
        answer = api.post("/api/deadletters/discard", json={"ids": [*ids[:2], unknown], "note": " test data "})
        assert answer.json() == {"discarded": 2, "not_pending": [{"id": unknown, "status": "unknown"}]}
        discarded = api.get("/api/deadletters", params={"status": "discarded", "source": "erp"}).json()
        assert discarded["total"] == 2 and sorted(d["id"] for d in discarded["items"]) == ids[:2]
        admin_id = token_id(tower.api_token("admin"))
        assert {d["status_note"] for d in discarded["items"]} == {f"discarded by {admin_id}: test data"}
        assert api.get("/api/deadletters", params={"source": "wms"}).json()["total"] == 0  # they claimed erp
        # the fix: the wms token may now send erp; a replay of all three takes only the pending one
        tokens = {t: (s + ["erp"] if s == ["wms"] else s) for t, s in tower.settings.ingest.tokens.items()}
        tower.tower.ingest.tokens = TokenRegistry(IngestSettings(tokens=tokens))
        replayed = api.post("/api/deadletters/replay", json={"ids": ids}).json()
        assert (replayed["replayed"], replayed["still_failing"], replayed["remaining"]) == (1, [], 0)
        assert sorted(replayed["not_pending"], key=lambda d: d["id"]) == [
            {"id": i, "status": "discarded"} for i in ids[:2]
        ]
        assert api.post("/api/deadletters/replay", json={"door": "events"}).json()["replayed"] == 0
        again = api.post("/api/deadletters/discard", json={"ids": ids, "note": "again"}).json()
    assert again["discarded"] == 0
    assert sorted(d["status"] for d in again["not_pending"]) == ["discarded", "discarded", "replayed"]
    [kept] = [orjson.loads(r["raw"])["id"] for r in letters(tower) if r["id"] == ids[2]]
    assert [e["id"] for e in events(tower)] == [kept]  # only the letter left pending was stored


def test_event_times_far_from_the_clock_are_refused_until_the_window_allows_them(
    store: EmbeddedStore, tmp_path: Path
) -> None:
    clock = FixedClock(datetime(2026, 11, 27, 12, 0, tzinfo=UTC))
    batch = [
        make_event("order.accepted", 1, id="epoch", time="1970-01-01T00:00:00Z"),  # an unset time
        make_event("order.accepted", 2, id="ahead", time="2026-11-28T12:00:01Z"),  # a day and a second ahead
        make_event("order.accepted", 3, id="edge", time="2026-11-28T12:00:00Z"),  # a day ahead: taken
        make_event("order.accepted", 4, id="year-1", time="0001-01-01T00:00:00Z"),  # nothing the store holds
    ]
    # an OTLP log record that is an event, stamped one nanosecond after the epoch
    log = event_log("order.released", "log-epoch", {"order_id": "SO-1", "warehouse": "DAL"})
    log.time_unix_nano = log.observed_time_unix_nano = 1
    plain = make_log(body="a plain log line, no event: any time is taken", time=1)
    with start_in_process(tmp_path, store, clock=clock) as running:
        assert running.tower is not None
        with running.client("erp") as http:
            answer = http.post("/v1/events", content=orjson.dumps(batch), headers=BATCH).json()
            logs = http.post(
                "/v1/logs",
                content=otlp_json(logs_request(log, plain)).encode(),
                headers={"Content-Type": "application/json"},
            ).json()
        assert answer["accepted"] == 1
        errors = {r["id"]: r["errors"] for r in answer["rejected"]}
        assert errors == {
            "epoch": [
                "time: 1970-01-01T00:00:00Z is 20,784 days before the tower's clock; events older than 3650 days are "
                "refused (TOWER_COLLECTOR_EVENT_MAX_AGE_DAYS)"
            ],
            "ahead": [
                "time: 2026-11-28T12:00:01Z is 24.0 hours ahead of the tower's clock; events more than 1440 minutes "
                "ahead are refused (TOWER_COLLECTOR_EVENT_MAX_AHEAD_MINUTES; a sender's clock or time zone?)"
            ],
            "year-1": ["time: '0001-01-01T00:00:00Z' is before 1970-01-01, the earliest time the store holds"],
        }
        assert int(logs["partialSuccess"]["rejectedLogRecords"]) == 1
        assert "TOWER_COLLECTOR_EVENT_MAX_AGE_DAYS" in logs["partialSuccess"]["errorMessage"]
        assert [e["id"] for e in events(running)] == ["edge"]
        assert len(letters(running)) == 4

        # the operator loading old history turns the limits off (TOWER_COLLECTOR_EVENT_MAX_AGE_DAYS=0 ...)
        running.tower.ingest.window = TimeWindow.from_settings(0, 0)
        with running.api() as api:
            replayed = [
                api.post("/api/deadletters/replay", json={"door": door}).json() for door in ("events", "otlp_logs")
            ]
    assert [r["replayed"] for r in replayed] == [2, 1]
    [still] = replayed[0]["still_failing"]
    assert "is before 1970-01-01" in still["errors"][0]
    stored = {e["id"]: e["time"] for e in events(running)}
    assert stored == {
        "epoch": "1970-01-01 00:00:00.000000",
        "log-epoch": "1970-01-01 00:00:00.000000",
        "edge": "2026-11-28 12:00:00.000000",
        "ahead": "2026-11-28 12:00:01.000000",
    }


def test_openapi_documents_the_contract(tower: RunningTower) -> None:
    spec = httpx.get(tower.http_url + "/openapi.json").json()
    route = spec["paths"]["/v1/events"]["post"]
    assert "rejected" in route["description"] and "Retry-After" in route["description"]
    assert set(route["responses"]) >= {"200", "400", "401", "413", "415", "503"}
    assert "application/cloudevents-batch+json" in route["requestBody"]["content"]


def test_a_replay_naming_no_letter_replays_none(tower: RunningTower) -> None:
    assert tower.tower is not None
    with tower.client("wms") as http:  # refused: the wms token may not send erp
        http.post("/v1/events", content=orjson.dumps(make_event("order.accepted", source="erp")), headers=STRUCTURED)
    tokens = {t: (s + ["erp"] if s == ["wms"] else s) for t, s in tower.settings.ingest.tokens.items()}
    tower.tower.ingest.tokens = TokenRegistry(IngestSettings(tokens=tokens))
    with tower.api() as api:
        # an empty selection (a page with nothing chosen) used to replay every pending letter
        nothing = api.post("/api/deadletters/replay", json={"ids": []}).json()
        assert (nothing["replayed"], nothing["still_failing"], nothing["not_pending"]) == (0, [], [])
        assert [d["status"] for d in letters(tower)] == ["pending"]
        assert api.post("/api/deadletters/replay", json={}).json()["replayed"] == 1


def test_a_sender_retrying_a_refused_body_fills_no_disk(store: EmbeddedStore, tmp_path: Path) -> None:
    clock = FixedClock(datetime(2026, 11, 27, 12, 0, tzinfo=UTC))
    bad = make_event("order.accepted", 1, time="2026-11-27T06:00:00")  # no offset
    with start_in_process(tmp_path, store, clock=clock) as running, running.client("erp") as http:
        answers = [http.post("/v1/events", content=b"{" + b"z" * 100_000, headers=STRUCTURED) for _ in range(5)]
        answers += [http.post("/v1/events", content=orjson.dumps([bad, bad]), headers=BATCH) for _ in range(3)]
        assert {a.status_code for a in answers} == {400}
        assert [len(a.json().get("rejected", [])) for a in answers[5:]] == [2, 2, 2]  # each copy still answered
        assert sorted(d["reason"][:20] for d in letters(running)) == ["body is not valid JS", "time: '2026-11-27T06"]
        clock.advance(timedelta(minutes=10))  # TOWER_COLLECTOR_DEAD_LETTER_REPEAT_SECONDS (600) later
        http.post("/v1/events", content=orjson.dumps(bad), headers=STRUCTURED)
        assert len(letters(running)) == 3
    # with the setting at 0, every copy is stored
    store.command("TRUNCATE TABLE dead_letters")
    with (
        start_in_process(tmp_path / "every", store, clock=clock, dead_letter_repeat_seconds=0) as running,
        running.client("erp") as http,
    ):
        for _ in range(3):
            http.post("/v1/events", content=orjson.dumps(bad), headers=STRUCTURED)
        http.post("/v1/events", content=orjson.dumps([bad, bad]), headers=BATCH)  # copies within one request too
        assert len(letters(running)) == 5


def test_a_discard_waits_for_a_replay_of_the_same_letter(tower: RunningTower) -> None:
    assert tower.tower is not None
    ingest = tower.tower.ingest
    entered, release = threading.Event(), threading.Event()

    def slow(raw: str, content_type: str, grant: Grant) -> Replay:
        entered.set()
        release.wait(10)
        return Replay({}, [])  # replayed: nothing to store

    ingest.register_replayer("slow-door", slow)
    letter = dead_letter_row(Refusal("slow-door", "test", "{}", source="erp"), token_id(tower.token("erp")), BASE)
    tower.tower.store.insert("dead_letters", [letter])
    replaying = threading.Thread(target=ingest.replay, kwargs={"ids": [letter["id"]]})
    replaying.start()
    assert entered.wait(10)
    discarded: list[DiscardReport] = []
    discarding = threading.Thread(target=lambda: discarded.append(ingest.discard([letter["id"]], "give up", "t")))
    discarding.start()
    discarding.join(0.5)
    assert discarding.is_alive(), "the discard went ahead while the replay of the same letter ran"
    release.set()
    replaying.join(10)
    discarding.join(10)
    [report] = discarded
    assert (report.discarded, report.not_pending) == (0, [{"id": letter["id"], "status": "replayed"}])
    [row] = letters(tower)
    assert row["status"] == "replayed"
