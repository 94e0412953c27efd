"""The delivery log over HTTP (`GET /api/alerts/deliveries`) and the CLI (`tower alerts deliveries`), and the
`alerts-send` job's wiring in the tower."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from alerting.sender import SlackSender
from alerting.standin import Fault, SlackStandIn
from kernel.clock import FixedClock
from kernel.jobs import SchedulerSettings
from kernel.store import Store
from tests.alerting.delivery_support import T0, drain, msg, sender_for, slack_settings
from tests.factories import make_settings
from tests.support import RunningTower, start_in_process
from tower.app import build_tower
from tower.cli import main


@pytest.fixture
def delivered(store: Store, clock: FixedClock, standin: SlackStandIn) -> SlackSender:
    """Three messages delivered through a 429 and a 503; one refused for good."""
    sender = sender_for(store, clock, slack_settings(standin))
    standin.fail("chat.postMessage", Fault.rate_limited(2), Fault.api_error("is_archived"), Fault.server_error(503))
    sender.outbox.enqueue(
        [
            msg("E1", "#warehouse", exception_id="E1"),
            msg("E1/t", "#warehouse", action="reply", parent="E1", exception_id="E1"),
            msg("E2", "#oncall", exception_id="E2"),
        ]
    )
    drain(sender, clock)
    return sender


def test_the_api_shows_every_attempt_newest_first(tower: RunningTower, delivered: SlackSender) -> None:
    with tower.api("viewer") as http:
        page = http.get("/api/alerts/deliveries", params={"exception_id": "E1"}).json()
        everything = http.get("/api/alerts/deliveries").json()
        one = http.get("/api/alerts/deliveries", params={"limit": 1}).json()
        assert http.get("/api/alerts/deliveries", params={"limit": 0}).status_code == 422
    attempts = [(i["key"], i["action"], i["status"], i["http_status"]) for i in reversed(page["items"])]
    assert attempts == [
        ("E1", "post", "retry", 429),
        ("E1", "post", "retry", 503),
        ("E1", "post", "ok", 200),
        ("E1/t", "reply", "ok", 200),
    ]
    ok = page["items"][1]
    assert ok["channel"] == "#warehouse" and ok["channel_id"].startswith("C") and ok["ts"] and ok["mode"] == "bot"
    assert ok["at"].startswith("2026-11-02T16:00:0")
    assert page["outbox"] == {"pending": 0, "attempting": 0, "sent": 2, "failed": 1, "superseded": 0}
    assert len(everything["items"]) == 5
    (failed,) = [i for i in everything["items"] if i["key"] == "E2"]
    assert (failed["status"], failed["error"], failed["note"]) == ("failed", "is_archived", "Slack refused it")
    assert len(one["items"]) == 1


def run(args: list[str]) -> Result:
    env = {"TOWER_TOKEN": None, "TOWER_URL": None, "COLUMNS": "200"}
    return CliRunner().invoke(main, ["alerts", "deliveries", *args], env=env, catch_exceptions=False)


def test_the_cli_prints_the_log(tower: RunningTower, delivered: SlackSender) -> None:
    auth = ["--url", tower.http_url, "--token", tower.api_token("viewer")]
    table = run(["--exception", "E1", *auth])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0] == "outbox: 0 pending, 0 attempting, 2 sent, 1 failed, 0 superseded"
    assert "retry   post #1  #warehouse  E1  HTTP 429" in table.stdout
    assert "ratelimited; rate limited: retry after 2 s" in table.stdout
    assert "E2" not in table.stdout
    as_json = run(["--json", "--limit", "2", *auth])
    assert as_json.exit_code == 0
    assert len(orjson.loads(as_json.stdout)["items"]) == 2
    none = run(["--exception", "nope", *auth])
    assert "no deliveries for exception nope" in none.stdout


def test_the_cli_says_when_the_tower_is_unreachable() -> None:
    result = CliRunner().invoke(main, ["alerts", "deliveries", "--url", "http://127.0.0.1:9", "--token", "t"])
    assert result.exit_code == 2 and "cannot reach the tower" in result.output


def test_the_send_job_runs_only_when_slack_is_configured(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TOWER_SLACK_BOT_TOKEN", "TOWER_SLACK_WEBHOOK_URL", "TOWER_SLACK_WEBHOOK_URLS"):
        monkeypatch.delenv(name, raising=False)
    off = build_tower(make_settings(tmp_path / "a"), store=store, scheduler=SchedulerSettings(enabled=False))
    assert off.outbox is not None and off.slack_sender is None and "alerts-send" not in off.jobs
    monkeypatch.setenv("TOWER_SLACK_BOT_TOKEN", "xoxb-configured")
    monkeypatch.setenv("TOWER_SLACK_API_URL", "http://127.0.0.1:9/api/")
    on = build_tower(make_settings(tmp_path / "b"), store=store, scheduler=SchedulerSettings(enabled=False))
    assert on.slack_sender is not None and on.slack_sender.mode == "bot"
    job = on.jobs.get("alerts-send")
    assert job.settings().interval_seconds == 2.0 and "Slack" in job.description


@pytest.fixture
def fixed_tower(store: Store, tmp_path: Path, clock: FixedClock) -> Iterator[RunningTower]:
    """A tower on the senders' fixed clock (a message sent again is due at the tower's now)."""
    with start_in_process(tmp_path, store, clock=clock) as running:
        yield running


def test_a_fixed_channels_failed_messages_are_sent_again_in_their_order(
    fixed_tower: RunningTower, store: Store, clock: FixedClock, standin: SlackStandIn
) -> None:
    tower = fixed_tower
    sender = sender_for(store, clock, slack_settings(standin))
    # the bot is not in #warehouse: the post, its reply and its update all fail (a reply or update whose post
    # failed is posted as a new message, which fails too)
    standin.fail("chat.postMessage", *[Fault.api_error("not_in_channel")] * 3)
    sender.outbox.enqueue(
        [
            msg("E1", "#warehouse", exception_id="E1"),
            msg("E1/t", "#warehouse", action="reply", parent="E1", exception_id="E1"),
            msg("E1/u", "#warehouse", action="update", parent="E1", text="acknowledged by ann", exception_id="E1"),
        ]
    )
    drain(sender, clock)
    standin.fail("chat.postMessage", Fault.api_error("channel_not_found"))
    sender.outbox.enqueue([msg("E2", "#oncall", exception_id="E2")])  # another channel's failure stays as it is
    drain(sender, clock)
    assert sender.outbox.counts()["failed"] == 4
    assert "warehouse" not in [c["name"] for c in standin.snapshot()["channels"]]  # nothing reached it
    since = (T0 - timedelta(hours=1)).isoformat()
    with tower.api("viewer") as http:
        assert http.post("/api/alerts/resend", json={"channel": "#warehouse", "since": since}).status_code == 403
    with tower.api("admin") as http:
        answer = http.post("/api/alerts/resend", json={"channel": "#warehouse", "since": since}).json()
        assert http.post("/api/alerts/resend", json={"channel": ""}).status_code == 422
    assert answer == {"requeued": 3, "keys": ["E1", "E1/t", "E1/u"], "left_failed": 0, "known_channel": True}
    drain(sender, clock)  # the bot was invited meanwhile
    [post] = standin.messages("#warehouse")
    assert post["text"] == "acknowledged by ann"
    assert [m["text"] for m in standin.thread("#warehouse", post["ts"])] == ["alert E1/t"]
    assert sender.outbox.counts() == {"pending": 0, "attempting": 0, "sent": 3, "failed": 1, "superseded": 0}
    with tower.api("admin") as http:  # nothing failed is left: nothing to send again
        assert http.post("/api/alerts/resend", json={"channel": "#warehouse", "since": since}).json()["requeued"] == 0


def test_a_failed_post_whose_update_was_delivered_is_left_failed(
    fixed_tower: RunningTower, store: Store, clock: FixedClock, standin: SlackStandIn
) -> None:
    tower = fixed_tower
    sender = sender_for(store, clock, slack_settings(standin))
    standin.fail("chat.postMessage", Fault.api_error("invalid_blocks"))
    sender.outbox.enqueue([msg("E1", "#warehouse"), msg("E1/u", "#warehouse", action="update", parent="E1")])
    drain(sender, clock)  # the update went out as a new message, with the newer content
    result = CliRunner().invoke(
        main,
        ["alerts", "resend", "#warehouse", "--within", "3650d", "--url", tower.http_url],
        env={"TOWER_TOKEN": tower.api_token("admin"), "TOWER_URL": None},
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "0 failed messages to #warehouse queued again; alerts-send delivers them in order",
        "1 failed posts left: a later message of each already took its place in the channel",
    ]
    bad = CliRunner().invoke(main, ["alerts", "resend", "#warehouse", "--within", "soon", "--url", tower.http_url])
    assert bad.exit_code == 2 and "--within" in bad.output
    typo = CliRunner().invoke(
        main,
        ["alerts", "resend", "warehouse", "--url", tower.http_url],  # without its '#': no message ever went there
        env={"TOWER_TOKEN": tower.api_token("admin"), "TOWER_URL": None},
    )
    assert typo.exit_code == 1 and "'warehouse' is not a channel the routing file sends alerts to (" in typo.output
    assert "#ops-warehouse" in typo.output  # the routing's channels, to pick from
    untouched = CliRunner().invoke(
        main,
        ["alerts", "resend", "#ops-warehouse", "--url", tower.http_url],  # routed to, but nothing went there yet
        env={"TOWER_TOKEN": tower.api_token("admin"), "TOWER_URL": None},
    )
    assert untouched.exit_code == 0, untouched.output
    assert untouched.output == "nothing has been addressed to #ops-warehouse yet, so there is nothing to resend\n"
