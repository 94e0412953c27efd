"""A restart mid-outbox sends each message once: a new Outbox and SlackSender over the same store carry on
where the last stopped, and a sender process killed in the middle of a call to Slack is resumed by the next
without a second post."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alerting.standin import Fault, SlackStandIn
from kernel.clock import FixedClock
from kernel.store import Store
from tests.alerting.delivery_support import advance, drain, keys_in, msg, posted_keys, sender_for, slack_settings


def test_a_new_sender_resumes_a_partial_run(store: Store, clock: FixedClock, standin: SlackStandIn) -> None:
    first = sender_for(store, clock, slack_settings(standin))
    first.outbox.enqueue(
        [msg(f"ops-{n}", "#ops") for n in range(4)]
        + [msg("ops-0/u", "#ops", action="update", parent="ops-0", text="ops-0 acknowledged")]
        + [msg(f"wms-{n}", "#wms") for n in range(3)]
    )
    assert first.send_due().sent == 2
    advance(clock, 1)
    assert first.send_due().sent == 2
    # "restart": everything the first sender knew in memory is gone; the store has the rest
    second = sender_for(store, clock, slack_settings(standin))
    assert second.send_due().calls == 0  # the pace survives the restart (from the delivery log)
    advance(clock, 1)
    drain(second, clock)
    assert keys_in(standin, "#ops") == ["ops-0", "ops-1", "ops-2", "ops-3"]
    assert keys_in(standin, "#wms") == ["wms-0", "wms-1", "wms-2"]
    assert set(posted_keys(standin).values()) == {1}
    assert standin.messages("#ops")[0]["text"] == "ops-0 acknowledged"
    assert second.outbox.counts()["sent"] == 8


def test_a_post_carried_out_before_a_crash_is_confirmed_not_resent(
    store: Store, clock: FixedClock, standin: SlackStandIn
) -> None:
    """The tower died after Slack posted the message and before the ts was recorded: the store still says
    `attempting`. The next sender finds the post in the channel's history by its key."""
    first = sender_for(store, clock, slack_settings(standin))
    first.outbox.enqueue([msg("a"), msg("b"), msg("c")])
    first.send_due()
    advance(clock, 1)
    first.send_due()
    b = first.outbox.get("b")
    assert b is not None and b.status == "sent"
    first.outbox.record(b, status="attempting", channel_id="", ts="")  # the state a crash mid-call leaves
    second = sender_for(store, clock, slack_settings(standin))
    advance(clock, 1)
    report = second.send_due()
    assert (report.confirmed, report.sent) == (1, 1)  # b confirmed, then c sent
    assert keys_in(standin, "#ops") == ["a", "b", "c"]
    posted = second.outbox.posted("b")
    assert posted is not None and posted.ts == standin.messages("#ops")[1]["ts"]


def test_a_post_that_never_left_before_a_crash_is_sent_once(
    store: Store, clock: FixedClock, standin: SlackStandIn
) -> None:
    first = sender_for(store, clock, slack_settings(standin))
    first.outbox.enqueue([msg("a"), msg("b")])
    first.send_due()
    b = first.outbox.get("b")
    assert b is not None
    first.outbox.record(b, status="attempting", attempts=1)  # recorded `attempting`, died before the call
    second = sender_for(store, clock, slack_settings(standin))
    advance(clock, 1)
    assert second.send_due().sent == 1
    assert keys_in(standin, "#ops") == ["a", "b"]
    assert second.outbox.deliveries(key="b")[0]["note"] == "not found in the channel history: re-sent"


SENDER_PROCESS = """
import json, sys, time
from pathlib import Path

from pydantic import SecretStr

from alerting.outbox import OutboundMessage, Outbox
from alerting.sender import SlackSender
from alerting.settings import SlackSettings
from kernel.clock import SystemClock
from kernel.schema.migrations import migrate
from kernel.store.embedded import EmbeddedStore

data_dir, api_url, step = sys.argv[1], sys.argv[2], sys.argv[3]
store = EmbeddedStore(Path(data_dir))
migrate(store)
clock = SystemClock()
outbox = Outbox(store, clock)
if step == "first":
    outbox.enqueue([OutboundMessage(key=f"m{n}", channel="#ops", text=f"message {n}") for n in range(6)])
settings = SlackSettings(
    bot_token=SecretStr("xoxb-restart"), api_url=api_url, channel_interval_seconds=0, timeout_seconds=30,
    backoff_initial_seconds=0.1,
)
sender = SlackSender(outbox, settings, clock)
while outbox.open_entries():
    sender.send_due()
    time.sleep(0.02)
print(json.dumps({"counts": outbox.counts(), "m3": outbox.deliveries(key="m3")}, default=str))
store.close()
"""


@pytest.mark.slow
def test_a_sender_process_killed_mid_call_is_resumed_without_a_second_post(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with SlackStandIn() as standin:
        # m0..m2 answer at once; m3 is posted but answered only after the process is killed
        standin.fail("chat.postMessage", Fault(), Fault(), Fault(), Fault.slow(60))
        command = [sys.executable, "-c", SENDER_PROCESS, str(data_dir), standin.api_url]
        first = subprocess.Popen([*command, "first"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while len(standin.calls_to("chat.postMessage")) < 4:
                assert first.poll() is None, first.communicate()[1].decode()[-2000:]
                assert time.monotonic() < deadline, "the sender process did not reach the 4th post"
                time.sleep(0.02)
        finally:
            first.kill()
            first.wait(timeout=30)
        assert keys_in(standin, "#ops") == ["m0", "m1", "m2", "m3"]
        second = subprocess.run([*command, "second"], capture_output=True, timeout=120, check=False)
        assert second.returncode == 0, second.stderr.decode()[-2000:]
        result = json.loads(second.stdout.decode().splitlines()[-1])
        assert result["counts"] == {"pending": 0, "attempting": 0, "sent": 6, "failed": 0, "superseded": 0}
        assert keys_in(standin, "#ops") == ["m0", "m1", "m2", "m3", "m4", "m5"]
        assert set(posted_keys(standin).values()) == {1}
        (confirmed,) = result["m3"]
        assert confirmed["status"] == "ok" and confirmed["note"].startswith("confirmed in the channel history")
