"""The Slack page (`tower serve --demo`'s local stand-in): the messages the stand-in received, by channel and
newest first, with their threads and edits; its buttons click through the stand-in, which sends the click to
the tower; no page without a stand-in; mrkdwn shown as Markdown."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from slack_sdk import WebClient
from streamlit.testing.v1 import AppTest

from alerting.messages import AlertView, Links, exception_blocks
from alerting.standin import SlackStandIn
from dashboard import standin
from kernel.exceptions import ExceptionFilter, ExceptionStore
from tests.dashboard.conftest import DemoTower, no_errors, open_page

Dashboard = Callable[..., AppTest]


@pytest.fixture
def slack(demo_tower: DemoTower, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackStandIn]:
    """A stand-in holding a real alert of the demo tower (its blocks, a thread line, one edit) and a plain
    message, its clicks going to the demo tower's interactivity endpoint."""
    with SlackStandIn(interactivity_url=f"{demo_tower.url}/slack/interactions", signing_secret="s" * 32) as stand_in:
        monkeypatch.setenv("TOWER_DASHBOARD_SLACK_STANDIN_URL", stand_in.url)
        assert demo_tower.running.tower is not None
        exceptions: ExceptionStore = demo_tower.running.tower.exceptions
        (record,), _ = exceptions.search(ExceptionFilter(rule="order-release"), limit=1)
        web = WebClient(token="xoxb-test", base_url=stand_in.api_url)
        view = AlertView("Order released within 2 hours", Links("http://127.0.0.1:8501"), demo_tower.now)
        first = web.chat_postMessage(channel="#cs-orders", text="first", blocks=exception_blocks(record, view))
        web.chat_postMessage(channel="#cs-orders", thread_ts=first["ts"], text=":eyes: Acknowledged by ann.")
        web.chat_update(
            channel=str(first["channel"]), ts=str(first["ts"]), text="first, edited", blocks=first["message"]["blocks"]
        )
        web.chat_postMessage(channel="#cs-orders", text="*second* <https://example.test/x|a link> &lt;b&gt;")
        web.chat_postMessage(channel="#ops-warehouse", text="elsewhere")
        yield stand_in


def test_the_slack_page_shows_the_stand_ins_messages(dashboard: Dashboard, slack: SlackStandIn) -> None:
    at = open_page(dashboard("admin"), "views/slack.py")
    no_errors(at)
    assert [t.value for t in at.title] == ["Slack (local stand-in)"]
    channel = at.radio[0]
    assert channel.options == ["#cs-orders", "#ops-warehouse"]  # no count: a label must not change as messages come
    assert any(c.value == "2 messages in #cs-orders" for c in at.caption)
    texts = [m.value for m in at.markdown]
    newest = texts.index("**second** [a link](https://example.test/x) <b>")
    header = next(i for i, t in enumerate(texts) if "Order released within 2 hours" in t)
    assert newest < header  # newest first
    assert any("[Open in the dashboard](http://127.0.0.1:8501/queue?exception=" in t for t in texts)
    assert any("**Owner** customer_service · **Severity**" in t for t in texts)  # the fields on one line
    assert any(t == "\U0001f440 Acknowledged by ann." for t in texts)  # the thread
    assert any("edited 1×" in c.value for c in at.caption)
    assert [b.label for b in at.button if b.label in ("Acknowledge", "Resolve")] == ["Acknowledge", "Resolve"]

    at.radio[0].set_value("ops-warehouse").run()
    assert [m.value for m in at.markdown if m.value == "elsewhere"] == ["elsewhere"]


def test_a_button_clicks_through_the_stand_in_to_the_tower(dashboard: Dashboard, slack: SlackStandIn) -> None:
    at = open_page(dashboard("operator"), "views/slack.py")
    next(b for b in at.button if b.label == "Acknowledge").click().run()
    no_errors(at)
    # The demo tower has no signing secret: it refuses the click (503), and the page says what it answered.
    assert any("the tower answered 503" in s.value for s in at.success)
    (call,) = [c for c in slack.calls if c.method == "chat.postMessage" and c.body.get("text") == "first"]
    assert call.status == 200


def test_viewers_see_no_buttons_and_without_a_stand_in_there_is_no_page(
    dashboard: Dashboard, slack: SlackStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page(dashboard("viewer"), "views/slack.py")
    no_errors(at)
    assert not [b for b in at.button if b.label in ("Acknowledge", "Resolve")]
    monkeypatch.delenv("TOWER_DASHBOARD_SLACK_STANDIN_URL")
    at = dashboard("admin")
    at.run()
    with pytest.raises(ValueError, match="Could not find a navigation page .*slack.py"):
        at.switch_page("views/slack.py").run()


def test_mrkdwn_as_markdown() -> None:
    assert (
        standin.markdown("*late* ~gone~ <!here> <!subteam^S1> <https://a.test>")
        == "**late** ~~gone~~ @here @S1 https://a.test"
    )
    assert standin.markdown("a\nb &amp; c :large_orange_circle: :unknown:") == "a  \nb & c \U0001f7e0 :unknown:"
