"""`tower deadletters` on a backlog: replay request after request with progress, the latest failure in the list
and `show`, letters without a source under their token's source."""

from __future__ import annotations

import re

import orjson
import pytest
from click.testing import CliRunner, Result

from collector.auth import TokenRegistry
from kernel.settings import IngestSettings
from tests.collector.test_deadletters_replay import grant, refused_events
from tests.support import RunningTower
from tower.cli import main
from tower.commands import deadletters as commands

STRUCTURED = {"Content-Type": "application/cloudevents+json"}


def run(tower: RunningTower, args: list[str]) -> Result:
    env = {"TOWER_TOKEN": None, "TOWER_URL": None, "TOWER_TIMEOUT": None, "COLUMNS": "200"}
    auth = ["--url", tower.http_url, "--token", tower.api_token()]
    return CliRunner().invoke(main, ["deadletters", *args, *auth], env=env, catch_exceptions=False)


def test_replay_goes_on_request_after_request_until_none_remain(
    tower: RunningTower, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commands, "PER_REQUEST", 4)
    refused_events(tower, 9)
    refused_events(tower, 2, source="crm", start=100)  # never granted: still failing, and no endless loop
    grant(tower, "erp", "tms")
    done = run(tower, ["replay", "--source", "tms"])
    assert done.exit_code == 0, done.output
    assert done.stdout == "replayed: 9\n"
    # stderr is no terminal here: a plain line per request, with how far it is
    progress = [re.sub(r"^\[ *[\d.]+ s\] ", "", line) for line in done.stderr.splitlines()]
    assert progress == [
        "4 of 9 letters: 4 replayed, 0 still failing",
        "8 of 9 letters: 8 replayed, 0 still failing",
        "9 of 9 letters: 9 replayed, 0 still failing",
    ]
    rest = run(tower, ["replay", "--all"])
    assert rest.exit_code == 1 and rest.stdout.startswith("replayed: 0\nstill failing: 2\n")
    assert rest.stderr.splitlines()[-1].endswith("2 of 2 letters: 0 replayed, 2 still failing")
    # nothing pending matches: said, and exit 1 (0 replayed with 0 read as "all done")
    nothing = run(tower, ["replay", "--source", "tms"])
    assert (nothing.exit_code, nothing.stderr) == (1, "")
    assert nothing.stdout == (
        "replayed: 0\nno pending dead letter matches --source tms: nothing was replayed"
        " (`tower deadletters list --source tms` lists them whatever their status)\n"
    )


def test_list_and_show_give_the_latest_failure_and_the_first_reason(tower: RunningTower) -> None:
    assert tower.tower is not None
    [row] = refused_events(tower, 1)
    tokens = {t: s for t, s in tower.settings.ingest.tokens.items() if s != ["erp"]}  # the sender's token is gone
    tower.tower.ingest.tokens = TokenRegistry(IngestSettings(tokens=tokens))
    assert run(tower, ["replay", "--all"]).exit_code == 1
    listed = run(tower, ["list"])
    assert "  reason: source: 'tms' is not allowed\n" in listed.stdout
    failed = re.search(r"  replay failed \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: (.*)\n", listed.stdout)
    assert failed and "the token that sent it" in failed[1] and "is no longer configured" in failed[1]
    shown = run(tower, ["show", row["id"]])
    assert shown.stdout == row["raw"] + "\n"  # the record alone on stdout, as it was sent
    assert "reason: source: 'tms' is not allowed" in shown.stderr and failed[0].strip() in shown.stderr


def test_list_by_source_shows_the_unread_bodies_its_token_sent(tower: RunningTower) -> None:
    with tower.client("erp") as http:
        assert http.post("/v1/events", content=b"{not json", headers=STRUCTURED).status_code == 400
    with tower.client("wms") as http:
        assert http.post("/v1/events", content=b"[1, 2", headers=STRUCTURED).status_code == 400
    erp = run(tower, ["list", "--source", "erp"])
    assert "dead letters: 1 of 1" in erp.stdout and "(no source; token " in erp.stdout and "{not json" in erp.stdout
    page = orjson.loads(run(tower, ["list", "--source", "wms", "--json"]).stdout)
    assert [item["raw"] for item in page["items"]] == ["[1, 2"]
    assert run(tower, ["list", "--source", "tms"]).stdout.strip() == "no dead letters match"
