"""The stand-in plays Slack's part in a button click: the `block_actions` request goes to a running tower's
/slack/interactions signed with the signing secret, which the tower verifies; an unknown button, an unmapped
user and a wrong secret change nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from slack_sdk import WebClient

from alerting.messages import ACTION_ACKNOWLEDGE, ACTION_RESOLVE, AlertView, Links, exception_blocks
from alerting.standin import SlackStandIn
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore
from kernel.store import Store
from tests.alerting.policy_support import T0, open_exception
from tests.support import start_in_process

SECRET = "0123456789abcdef0123456789abcdef"


def test_a_click_reaches_the_tower_signed_as_slack_signs(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOWER_SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("TOWER_ALERTING_SLACK_USERS", '{"U0DEMO": "ann"}')
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    record = open_exception(exceptions)
    blocks = exception_blocks(record, AlertView("Order released", Links("http://dash.test"), T0))

    with start_in_process(tmp_path, store, clock=clock) as tower:
        url = f"{tower.http_url}/slack/interactions"
        with SlackStandIn(clock=clock, interactivity_url=url, signing_secret=SECRET, click_user="U0DEMO") as slack:
            posted = WebClient(token="xoxb-test", base_url=slack.api_url).chat_postMessage(
                channel="#cs-orders", text="Order released late: SO-1", blocks=blocks
            )
            ts = str(posted["ts"])

            status, _ = slack.click("#cs-orders", ts, ACTION_ACKNOWLEDGE)
            assert status == 200
            assert exceptions.get(record.id).status == "acknowledged"
            assert [(a["action"], a["actor"]) for a in exceptions.audit(record.id)][-1] == ("acknowledged", "ann")

            # The same over the stand-in's HTTP endpoint, as the dashboard's Slack page clicks.
            answer = httpx.post(
                f"{slack.url}/_standin/click", json={"channel": "#cs-orders", "ts": ts, "action_id": ACTION_RESOLVE}
            )
            assert answer.json() == {"ok": True, "status": 200, "answer": ""}
            assert exceptions.get(record.id).status == "resolved"

            missing = httpx.post(
                f"{slack.url}/_standin/click", json={"channel": "#cs-orders", "ts": ts, "action_id": "x"}
            )
            assert missing.status_code == 404 and "no button" in missing.json()["error"]

            # A user the tower does not know is refused by the tower (403), not by the stand-in.
            stranger = slack.click("#cs-orders", ts, ACTION_ACKNOWLEDGE, user="U0STRANGER")
            assert stranger[0] == 403

        # Signed with another secret: the tower refuses the click and nothing changes.
        other = open_exception(exceptions, key="SO-2")
        blocks = exception_blocks(other, AlertView("Order released", Links("http://dash.test"), T0))
        with SlackStandIn(clock=clock, interactivity_url=url, signing_secret="f" * 32, click_user="U0DEMO") as forged:
            posted = WebClient(token="xoxb-test", base_url=forged.api_url).chat_postMessage(
                channel="#cs-orders", text="SO-2", blocks=blocks
            )
            assert forged.click("#cs-orders", str(posted["ts"]), ACTION_ACKNOWLEDGE)[0] == 401
        assert exceptions.get(other.id).status == "open"


def test_a_click_needs_an_interactivity_url_and_a_secret() -> None:
    with SlackStandIn() as slack:
        with pytest.raises(RuntimeError, match="no interactivity URL"):
            slack.click("#x", "1.000001", ACTION_ACKNOWLEDGE)
        answer = httpx.post(f"{slack.url}/_standin/click", json={"channel": "#x", "ts": "1", "action_id": "a"})
        assert answer.status_code == 409
