"""slack-delivery: Slack messages the tower could not deliver open a technical exception per channel, through the
real sender and slack-sdk client against the Slack stand-in; a message reaching the channel again resolves it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from alerting.sender import SlackSender
from alerting.standin import Fault, SlackStandIn
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionFilter, ExceptionRecord, ExceptionStore
from kernel.store import Store
from sla_rules.loader import default_rules_dir, load_rules
from sla_rules.model import DeliveriesParams, DeliveriesRule
from sla_rules.technical import TechnicalEngine
from sla_rules.texts import RECOVERED, iso
from tests.alerting.delivery_support import drain, msg, sender_for, slack_settings

RULE = DeliveriesRule(
    id="slack-delivery",
    title="Slack messages not delivered",
    kind="technical",
    owner="integration",
    severity="high",
    check="deliveries",
    params=DeliveriesParams(window=timedelta(hours=1), min_messages=1),
)


class Tower:
    """A sender and the technical engine on one clock and store."""

    def __init__(self, store: Store, clock: FixedClock, standin: SlackStandIn, rule: DeliveriesRule = RULE) -> None:
        self.clock = clock
        self.sender: SlackSender = sender_for(store, clock, slack_settings(standin))
        self.exceptions = ExceptionStore(store, clock)
        self.engine = TechnicalEngine(store, self.exceptions, clock, [rule])

    def send(self, *keys_and_channels: tuple[str, str]) -> None:
        self.sender.outbox.enqueue([msg(key, channel) for key, channel in keys_and_channels])
        drain(self.sender, self.clock)

    def evaluate(self) -> tuple[list[str], list[str]]:
        report = self.engine.evaluate()
        return report.opened, report.resolved

    def active(self) -> dict[str, ExceptionRecord]:
        return self.exceptions.active_by_key("slack-delivery")

    def all(self) -> list[ExceptionRecord]:
        return self.exceptions.search(ExceptionFilter(rule="slack-delivery"), limit=100)[0]


def test_a_channel_refusing_every_message_is_an_exception_until_one_reaches_it(
    store: Store, clock: FixedClock, standin: SlackStandIn
) -> None:
    t = Tower(store, clock, standin)
    t.send(("E0", "#ops-warehouse"))  # the channel took messages, until the bot was removed from it
    clock.advance(timedelta(minutes=5))
    standin.fail("chat.postMessage", Fault.api_error("not_in_channel"), Fault.api_error("not_in_channel"))
    t.send(("E1", "#ops-warehouse"), ("E2", "#ops-warehouse"))
    t.send(("E3", "#ops-oncall"))  # no fault left: delivered
    opened, resolved = t.evaluate()
    assert len(opened) == 1 and resolved == []
    [record] = t.active().values()
    assert (record.key, record.owner, record.kind, record.severity) == (
        "#ops-warehouse",
        "integration",
        "technical",
        "high",
    )
    context = record.context
    assert (context["channel"], context["failed"], context["reasons"], context["exceptions"]) == (
        "#ops-warehouse",
        2,
        ["not_in_channel"],
        ["E1", "E2"],
    )
    assert context["root_cause"] is False and context["window"] == "1h"
    assert context["summary"] == "2 Slack messages to #ops-warehouse failed: not_in_channel"
    assert "invite the tower's bot" in context["next_step"]
    assert "`tower alerts resend #ops-warehouse`" in context["next_step"]
    # evaluating again opens nothing; a quiet hour and more does not resolve it: nothing proves the channel works
    assert t.evaluate() == ([], [])
    clock.advance(timedelta(hours=3))
    assert t.evaluate() == ([], []) and list(t.active()) == ["#ops-warehouse"]
    # the bot is invited: the next alert to the channel reaches it, and the exception resolves itself
    t.send(("E4", "#ops-warehouse"))
    opened, resolved = t.evaluate()
    assert opened == [] and resolved == [record.id]
    [done] = t.all()
    assert (done.status, done.resolution) == ("resolved", RECOVERED)
    detail = t.exceptions.audit(done.id)[-1]["detail"]
    assert detail["delivered_at"].startswith(clock.now().date().isoformat()) and "tower alerts resend" in detail["note"]
    assert t.evaluate() == ([], [])  # the failures still in the window came before the channel took a message


def test_a_failure_the_channel_took_a_message_after_opens_nothing(
    store: Store, clock: FixedClock, standin: SlackStandIn
) -> None:
    t = Tower(store, clock, standin)
    standin.fail("chat.postMessage", Fault.api_error("invalid_blocks"))
    t.send(("E1", "#ops-finance"), ("E2", "#ops-finance"))
    assert [d["status"] for d in t.sender.outbox.deliveries(key="E1")] == ["failed"]
    assert t.evaluate() == ([], [])


@pytest.mark.parametrize(("failed", "flagged"), [(1, False), (2, True)])
def test_min_messages(store: Store, clock: FixedClock, standin: SlackStandIn, failed: int, flagged: bool) -> None:
    rule = RULE.model_copy(update={"params": DeliveriesParams(window=timedelta(hours=1), min_messages=2)})
    t = Tower(store, clock, standin, rule)
    standin.fail("chat.postMessage", *[Fault.api_error("channel_not_found")] * failed)
    t.send(*[(f"E{n}", "#gone") for n in range(failed)])
    t.evaluate()
    assert bool(t.active()) is flagged


def test_min_messages_counts_every_failure_since_the_channel_last_took_one(
    store: Store, clock: FixedClock, standin: SlackStandIn
) -> None:
    # the docs: failed since the channel last took a message, at least min_messages, the last within the window; so
    # two failures 70 minutes ago and one now are three, since the first of them
    rule = RULE.model_copy(update={"params": DeliveriesParams(window=timedelta(hours=1), min_messages=3)})
    t = Tower(store, clock, standin, rule)
    t.send(("E0", "#gone"))  # the channel took this one
    clock.advance(timedelta(minutes=5))
    first = clock.now()
    standin.fail("chat.postMessage", *[Fault.api_error("channel_not_found")] * 3)
    t.send(("E1", "#gone"), ("E2", "#gone"))
    clock.advance(timedelta(minutes=70))
    t.send(("E3", "#gone"))
    opened, _ = t.evaluate()
    assert len(opened) == 1
    [record] = t.active().values()
    assert (record.context["failed"], record.context["exceptions"]) == (3, ["E1", "E2", "E3"])
    assert iso(first) <= record.context["since"] < iso(clock.now() - timedelta(hours=1))  # before the window


def test_failures_older_than_the_window_open_nothing(store: Store, clock: FixedClock, standin: SlackStandIn) -> None:
    t = Tower(store, clock, standin)
    standin.fail("chat.postMessage", Fault.api_error("channel_not_found"))
    t.send(("E1", "#gone"))
    clock.advance(timedelta(hours=1, seconds=5))
    assert t.evaluate() == ([], [])


def test_the_shipped_rule() -> None:
    rule = {r.id: r for r in load_rules(default_rules_dir())}["slack-delivery"]
    assert isinstance(rule, DeliveriesRule) and rule.enabled
    assert rule.params == DeliveriesParams(window=timedelta(hours=1), min_messages=1)
    assert (rule.owner, rule.kind, rule.severity) == ("integration", "technical", "high")
