"""The Slack stand-in speaks enough of Slack for slack-sdk's clients, records calls, injects faults and
enforces a per-channel rate when asked."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse
from slack_sdk.webhook import WebhookClient

from alerting.standin import Fault, SlackStandIn
from kernel.clock import FixedClock
from tests.alerting.delivery_support import T0
from tests.support import free_port


@pytest.fixture
def standin(clock: FixedClock) -> Iterator[SlackStandIn]:
    with SlackStandIn(clock=clock, token="xoxb-right") as running:
        yield running


def web(standin: SlackStandIn, token: str = "xoxb-right") -> WebClient:
    return WebClient(token=token, base_url=standin.api_url, timeout=5, retry_handlers=[])


def test_channels_threads_edits_and_the_json_view(standin: SlackStandIn) -> None:
    client = web(standin)
    posted = client.chat_postMessage(
        channel="#ops", text="disk full", metadata={"event_type": "t", "event_payload": {}}
    )
    assert posted["channel"] == standin.channel_id("ops") and posted["ts"].startswith(f"{int(T0.timestamp())}.")
    client.chat_postMessage(channel=posted["channel"], thread_ts=posted["ts"], text="on it")
    client.chat_update(channel=posted["channel"], ts=posted["ts"], text="disk full (acknowledged)")
    (message,) = standin.messages("#ops")
    assert message["text"] == "disk full (acknowledged)" and message["reply_count"] == 1
    assert [r["text"] for r in standin.thread("#ops", posted["ts"])] == ["on it"]
    view = httpx.get(f"{standin.url}/_standin/messages").json()
    (channel,) = view["channels"]
    assert channel["name"] == "ops" and channel["messages"][0]["thread"][0]["text"] == "on it"
    assert [c.method for c in standin.calls] == ["chat.postMessage", "chat.postMessage", "chat.update"]
    assert standin.calls[0].body["metadata"] == {"event_type": "t", "event_payload": {}}
    assert "authorization" not in {k.lower() for k in standin.calls[0].headers}  # tokens are not kept
    history = client.conversations_history(channel=posted["channel"])
    assert "metadata" not in history["messages"][0]  # only with include_all_metadata, as Slack does


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_api_errors_like_slacks(standin: SlackStandIn) -> None:
    with pytest.raises(SlackApiError) as wrong_token:
        web(standin, "xoxb-wrong").chat_postMessage(channel="#ops", text="x")
    assert wrong_token.value.response["error"] == "invalid_auth"
    client = web(standin)
    refusals: list[tuple[Callable[[], SlackResponse], str]] = [
        (lambda: client.chat_postMessage(channel="C9999999", text="x"), "channel_not_found"),
        (lambda: client.chat_postMessage(channel="#ops", text=""), "no_text"),
        (lambda: client.chat_update(channel="#ops", ts="1.000001", text="x"), "message_not_found"),
        (lambda: client.chat_postMessage(channel="#ops", text="x", thread_ts="1.2"), "thread_not_found"),
    ]
    for call, error in refusals:
        with pytest.raises(SlackApiError) as refused:
            call()
        assert refused.value.response["error"] == error


def test_faults_are_served_in_order_per_method(standin: SlackStandIn) -> None:
    client = web(standin)
    standin.fail("chat.postMessage", Fault.rate_limited(7), Fault.server_error(503), Fault.api_error("fatal_error"))
    with pytest.raises(SlackApiError) as limited:
        client.chat_postMessage(channel="#ops", text="1")
    assert limited.value.response.status_code == 429 and limited.value.response.headers["Retry-After"] == "7"
    with pytest.raises(SlackApiError) as unavailable:
        client.chat_postMessage(channel="#ops", text="2")
    assert unavailable.value.response.status_code == 503
    with pytest.raises(SlackApiError) as fatal:
        client.chat_postMessage(channel="#ops", text="3")
    assert fatal.value.response["error"] == "fatal_error"
    client.chat_postMessage(channel="#ops", text="4")
    assert [m["text"] for m in standin.messages("#ops")] == ["4"]  # faulted calls were not carried out
    assert [c.status for c in standin.calls] == [429, 503, 200, 200]


def test_a_slow_answer_is_a_client_timeout_but_the_post_happened(standin: SlackStandIn) -> None:
    standin.fail("chat.postMessage", Fault.slow(0.4))
    client = WebClient(token="xoxb-right", base_url=standin.api_url, timeout=0.2, retry_handlers=[])  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):
        client.chat_postMessage(channel="#ops", text="late")
    assert [m["text"] for m in standin.messages("#ops")] == ["late"]


def test_rate_limit_per_channel(clock: FixedClock) -> None:
    with SlackStandIn(clock=clock, rate_limit_seconds=1.0) as standin:
        client = web(standin)
        client.chat_postMessage(channel="#a", text="1")
        client.chat_postMessage(channel="#b", text="1")  # another channel is not limited
        with pytest.raises(SlackApiError) as limited:
            client.chat_postMessage(channel="#a", text="2")
        assert limited.value.response.status_code == 429 and limited.value.response.headers["Retry-After"] == "1"
        clock.advance(timedelta(seconds=1))
        client.chat_postMessage(channel="#a", text="2")
        assert [m["text"] for m in standin.messages("#a")] == ["1", "2"]


def test_calls_record_when_they_arrived_on_its_clock(clock: FixedClock) -> None:
    with SlackStandIn(clock=clock, rate_limit_seconds=1.0) as standin:
        client = web(standin)
        client.chat_postMessage(channel="#a", text="1")
        clock.advance(timedelta(seconds=0.5))
        with pytest.raises(SlackApiError):
            client.chat_postMessage(channel="#a", text="2")
        clock.advance(timedelta(seconds=0.5))
        client.chat_postMessage(channel="#a", text="2")
        arrived = [T0, T0 + timedelta(seconds=0.5), T0 + timedelta(seconds=1)]
        assert [(c.at, c.status) for c in standin.calls] == list(zip(arrived, [200, 429, 200], strict=True))
        listed = httpx.get(f"{standin.url}/_standin/calls").json()["calls"]
        assert [c["at"] for c in listed] == [c.at.isoformat() for c in standin.calls if c.at is not None]


def test_incoming_webhooks(clock: FixedClock) -> None:
    with SlackStandIn(clock=clock, rate_limit_seconds=1.0) as standin:
        hook = WebhookClient(standin.webhook_url("#alerts"), retry_handlers=[])
        assert hook.send(text="hello", blocks=[{"type": "divider"}]).body == "ok"
        assert hook.send(text="too soon").status_code == 429
        assert hook.send(text="").status_code == 400
        standin.fail("webhook", Fault.server_error(500))
        clock.advance(timedelta(seconds=1))
        assert hook.send(text="again").status_code == 500
        assert [m["text"] for m in standin.messages("#alerts")] == ["hello"]


def test_files_upload_v2(standin: SlackStandIn) -> None:
    response = web(standin).files_upload_v2(
        channel="#finance", filename="r.csv", content=b"a,b\n", title="Report", initial_comment="monthly"
    )
    channel_id = standin.channel_id("#finance")
    shares = response["files"][0]["shares"]["public"][channel_id]
    (message,) = standin.messages("#finance")
    assert shares[0]["ts"] == message["ts"] and message["text"] == "monthly"
    assert list(standin.uploads().values()) == [b"a,b\n"]
    methods = [c.method for c in standin.calls]
    assert methods == ["files.getUploadURLExternal", "upload", "files.completeUploadExternal"]


def test_runs_as_a_program() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "alerting.standin", "--port", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert f"127.0.0.1:{port}" in banner
        client = WebClient(token="xoxb-any", base_url=f"http://127.0.0.1:{port}/api/", timeout=5, retry_handlers=[])
        client.chat_postMessage(channel="#demo", text="from the demo")
        view = httpx.get(f"http://127.0.0.1:{port}/_standin/messages", timeout=5).json()
        assert view["channels"][0]["messages"][0]["text"] == "from the demo"
    finally:
        process.terminate()
        process.wait(timeout=10)
