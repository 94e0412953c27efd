"""`tower deadletters list|replay` against a real tower."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner, Result

from collector.auth import TokenRegistry
from kernel.api_auth import token_grants, token_id
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore
from kernel.settings import IngestSettings
from kernel.store import Store
from sla_rules.technical import TechnicalEngine
from tests.factories import make_event
from tests.support import RunningTower, free_port, start_in_process
from tower.cli import main
from tower.commands.text import visible

STRUCTURED = {"Content-Type": "application/cloudevents+json"}


def run(args: list[str]) -> Result:
    env = {"TOWER_TOKEN": None, "TOWER_URL": None, "COLUMNS": "200"}
    return CliRunner().invoke(main, ["deadletters", *args], env=env, catch_exceptions=False)


def refuse_two(tower: RunningTower) -> tuple[dict[str, Any], dict[str, Any]]:
    """One event with a source the wms token may not send, one with no id; both dead-lettered."""
    foreign = make_event("order.accepted", 1, source="erp")
    broken = make_event("shipment.confirmed", 2, id=...)
    with tower.client("wms") as http:
        assert http.post("/v1/events", content=orjson.dumps(foreign), headers=STRUCTURED).status_code == 400
        assert http.post("/v1/events", content=orjson.dumps(broken), headers=STRUCTURED).status_code == 400
    return foreign, broken


def test_list_table_and_json(tower: RunningTower) -> None:
    foreign, _ = refuse_two(tower)
    auth = ["--url", tower.http_url, "--token", tower.api_token()]
    table = run(["list", *auth])
    assert table.exit_code == 0, table.output
    assert "dead letters: 2 of 2" in table.stdout
    assert "is not allowed for this token" in table.stdout and "id: required" in table.stdout
    assert table.stdout.count("pending") == 2 and "events" in table.stdout
    as_json = run(["list", "--json", "--door", "events", "--status", "pending", *auth])
    page = orjson.loads(as_json.stdout)
    assert page["total"] == 2
    raws = {item["source"]: orjson.loads(item["raw"]) for item in page["items"]}
    assert raws["erp"] == foreign
    assert run(["list", "--status", "replayed", *auth]).stdout.strip() == "no dead letters match"
    limited = orjson.loads(run(["list", "--json", "--limit", "1", *auth]).stdout)
    assert (len(limited["items"]), limited["total"]) == (1, 2)


def test_replay_after_fix_by_id_and_all(tower: RunningTower) -> None:
    assert tower.tower is not None
    foreign, _ = refuse_two(tower)
    auth = ["--url", tower.http_url, "--token", tower.api_token()]
    items = orjson.loads(run(["list", "--json", *auth]).stdout)["items"]
    by_source = {item["source"]: item["id"] for item in items}

    failing = run(["replay", "--all", *auth])
    assert failing.exit_code == 1
    assert "replayed: 0" in failing.stdout and "still failing: 2" in failing.stdout
    assert f"{by_source['erp']}: source: 'erp' is not allowed for this token" in failing.stdout

    tokens = {t: (s + ["erp"] if s == ["wms"] else s) for t, s in tower.settings.ingest.tokens.items()}
    tower.tower.ingest.tokens = TokenRegistry(IngestSettings(tokens=tokens))
    fixed = run(["replay", by_source["erp"], *auth])
    assert fixed.exit_code == 0, fixed.output
    assert fixed.stdout.strip() == "replayed: 1"
    # named again, or unknown: not replayed, each said with its status, and exit 1 (not every one was replayed)
    unknown = "00000000-0000-0000-0000-000000000001"
    again = run(["replay", by_source["erp"], unknown, *auth])
    assert again.exit_code == 1, again.output
    assert again.stdout.splitlines() == [
        "replayed: 0",
        "not pending: 2",
        f"  {by_source['erp']}: replayed",
        f"  {unknown}: unknown",
    ]
    stored = tower.tower.store.query("SELECT id FROM business_events FINAL")
    assert stored == [{"id": foreign["id"]}]
    statuses = orjson.loads(run(["list", "--json", *auth]).stdout)["items"]
    assert {i["source"]: i["status"] for i in statuses} == {"erp": "replayed", "wms": "pending"}
    # the event without an id still fails, and stays pending with the new reason
    rest = run(["replay", "--door", "events", *auth])
    assert rest.exit_code == 1 and "id: required" in rest.stdout


def test_replay_usage_and_auth_errors(tower: RunningTower) -> None:
    auth = ["--url", tower.http_url, "--token", tower.api_token()]
    assert run(["replay", *auth]).exit_code == 2
    assert run(["replay", "not-a-uuid", *auth]).exit_code == 2
    assert run(["replay", "--all", "00000000-0000-0000-0000-000000000001", *auth]).exit_code == 2
    viewer = run(["list", "--url", tower.http_url, "--token", tower.api_token("viewer")])
    assert viewer.exit_code == 2 and "403" in viewer.output
    down = run(["list", "--url", f"http://127.0.0.1:{free_port()}", "--token", "t" * 20])
    assert down.exit_code == 2 and "cannot reach the tower" in down.output


def test_discard_with_a_note_then_list_them(tower: RunningTower) -> None:
    refuse_two(tower)
    auth = ["--url", tower.http_url, "--token", tower.api_token()]
    items = orjson.loads(run(["list", "--json", *auth]).stdout)["items"]
    by_source = {item["source"]: item["id"] for item in items}
    assert run(["discard", by_source["wms"], *auth]).exit_code == 2  # --note is required
    assert run(["discard", by_source["wms"], "--note", "  ", *auth]).exit_code == 2
    assert run(["discard", "not-a-uuid", "--note", "x", *auth]).exit_code == 2
    done = run(["discard", by_source["wms"], "--note", "no id: the sender resends it with one", *auth])
    assert done.exit_code == 0 and done.stdout.strip() == "discarded: 1"
    again = run(["discard", by_source["wms"], by_source["erp"], "--note", "again", *auth])
    assert again.exit_code == 1
    assert "discarded: 1" in again.stdout and f"{by_source['wms']}: discarded" in again.stdout
    listed = run(["list", "--status", "discarded", "--source", "wms", *auth])
    assert "dead letters: 1 of 1" in listed.stdout
    assert "note:   discarded by " in listed.stdout and ": no id: the sender resends it with one" in listed.stdout
    assert run(["list", "--status", "pending", *auth]).stdout.strip() == "no dead letters match"


def test_replay_by_source_takes_only_that_sources_pending_letters(tower: RunningTower) -> None:
    assert tower.tower is not None
    foreign, _ = refuse_two(tower)  # one claiming erp, one claiming wms (no id: it can never replay)
    auth = ["--url", tower.http_url, "--token", tower.api_token()]
    tokens = {t: (s + ["erp"] if s == ["wms"] else s) for t, s in tower.settings.ingest.tokens.items()}
    tower.tower.ingest.tokens = TokenRegistry(IngestSettings(tokens=tokens))
    assert run(["replay", "--source", "erp", "00000000-0000-0000-0000-000000000001", *auth]).exit_code == 2
    wms = run(["replay", "--source", "wms", *auth])
    assert wms.exit_code == 1 and "replayed: 0" in wms.stdout and "id: required" in wms.stdout
    erp = run(["replay", "--source", "erp", *auth])
    assert erp.exit_code == 0 and erp.stdout.strip() == "replayed: 1"
    assert tower.tower.store.query("SELECT id FROM business_events FINAL") == [{"id": foreign["id"]}]
    statuses = orjson.loads(run(["list", "--json", *auth]).stdout)["items"]
    assert {i["source"]: i["status"] for i in statuses} == {"erp": "replayed", "wms": "pending"}


def test_show_prints_a_raw_record_whole(tower: RunningTower) -> None:
    body = "{" + "x" * 9_000  # longer than a listing's preview
    with tower.client("erp") as http:
        assert http.post("/v1/events", content=body.encode(), headers=STRUCTURED).status_code == 400
    auth = ["--url", tower.http_url, "--token", tower.api_token()]
    [item] = orjson.loads(run(["list", "--json", *auth]).stdout)["items"]
    assert item["raw_truncated"] is True
    shown = run(["show", item["id"], *auth])
    assert shown.exit_code == 0 and shown.stdout == body + "\n"
    letter = orjson.loads(run(["show", item["id"], "--json", *auth]).stdout)
    assert (letter["raw"], letter["door"], letter["status"]) == (body, "events", "pending")
    assert run(["show", "not-a-uuid", *auth]).exit_code == 2
    missing = run(["show", "00000000-0000-0000-0000-000000000001", *auth])
    assert missing.exit_code == 2 and "404" in missing.output


def test_what_a_sender_wrote_cannot_act_on_the_operators_terminal(tower: RunningTower) -> None:
    """A refused record is the sender's bytes: an escape sequence in it cleared the screen of whoever listed the
    letters, and a bidirectional override made what followed read reversed. In a terminal they show as escapes;
    `show` into a file or a pipe keeps the record as sent."""
    body = '{"id": "\x1b[2J\x1b[H", "note": "\u202etxet"}\n{'
    with tower.client("erp") as http:
        assert http.post("/v1/events", content=body.encode(), headers=STRUCTURED).status_code == 400
    auth = ["--url", tower.http_url, "--token", tower.api_token()]
    listed = run(["list", *auth]).stdout
    assert "\x1b" not in listed and "\u202e" not in listed
    assert '"id": "\\x1b[2J\\x1b[H", "note": "\\u202etxet"}' in listed
    [item] = orjson.loads(run(["list", "--json", *auth]).stdout)["items"]
    assert run(["show", item["id"], *auth]).stdout == body + "\n"  # not a terminal: as sent


def test_visible_escapes_what_a_terminal_acts_on_and_keeps_what_is_asked() -> None:
    assert visible("a\x1b[2Jb\x00c\x9bd\u202ee\u2066f") == "a\\x1b[2Jb\\x00c\\x9bd\\u202ee\\u2066f"
    assert visible("line\r\n\tnext", keep="\n\t") == "line\\x0d\n\tnext"
    assert visible("Zoë Müller — 東京 ✓") == "Zoë Müller — 東京 ✓"


NOW = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)


def test_the_refusal_exceptions_next_step_replays_its_letters(store: Store, tmp_path: Path) -> None:
    """The incident: the EDI token (granted edi) sends 5 records claiming crm. The ingest-refusals exception is edi's
    (a token blames no other system) and its next step must find those letters: `--source edi` (the claim) finds
    none, and says so with exit 1; the command it names replays all 5 once the token is fixed, and the exception
    stays edi's (no crm exception for the same records)."""
    with start_in_process(tmp_path, store, clock=FixedClock(NOW)) as running:
        assert running.tower is not None
        with running.client("edi") as http:
            for i in range(5):
                foreign = make_event("order.created", i, source="crm", data={"order_id": f"SO-C{i:02d}"})
                assert http.post("/v1/events", content=orjson.dumps(foreign), headers=STRUCTURED).status_code == 400
        assert running.tower.sla.evaluate(full=False).errors == {}
        exceptions = ExceptionStore(store, FixedClock(NOW))
        [record] = exceptions.active_by_key("ingest-refusals").values()
        assert (record.key, record.context["refused"], record.context["pending"]) == ("edi", 5, 5)
        commands = re.findall(r"`(tower deadletters replay [^`]*)`", record.context["next_step"])
        edi = token_id(running.token("edi"))
        assert commands == [f"tower deadletters replay --token-id {edi}"], record.context["next_step"]

        # the fix: the EDI token may send crm (the doors and the rule read the new grant)
        tokens = {t: (s + ["crm"] if s == ["edi"] else s) for t, s in running.settings.ingest.tokens.items()}
        running.tower.ingest.tokens = TokenRegistry(IngestSettings(tokens=tokens))
        [technical] = [e for e in running.tower.sla.evaluators if isinstance(e, TechnicalEngine)]
        technical.token_sources = dict(token_grants(tokens))
        assert running.tower.sla.evaluate(full=False).errors == {}
        assert list(exceptions.active_by_key("ingest-refusals")) == ["edi"]

        auth = ["--url", running.http_url, "--token", running.api_token()]
        claimed = run(["replay", "--source", "edi", *auth])  # what the step said before: the claim is crm
        assert claimed.exit_code == 1 and "no pending dead letter matches --source edi" in claimed.stdout
        listed = run(["list", "--status", "pending", "--token-id", edi, *auth])
        assert "dead letters: 5 of 5" in listed.stdout
        done = run([*commands[0].split()[2:], *auth])
        assert (done.exit_code, done.stdout) == (0, "replayed: 5\n"), done.output
        assert store.query("SELECT count() AS n FROM business_events FINAL") == [{"n": 5}]
        again = run([*commands[0].split()[2:], *auth])
        assert again.exit_code == 1 and f"no pending dead letter matches --token-id {edi}" in again.stdout
