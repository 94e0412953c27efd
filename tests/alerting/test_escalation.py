"""Escalation on a fixed clock: re-notified every repeat interval, escalated to the on-call group after the
acknowledgement timeout, and acknowledging (or resolving) stops both."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from alerting.dispatcher import Dispatcher
from alerting.outbox import OutboundMessage
from alerting.policy_settings import AlertingSettings, Escalation
from alerting.silences import SilenceStore
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore
from kernel.routing import ExceptionMatch
from kernel.store import Store
from tests.alerting.policy_support import (
    ROUTING,
    T0,
    block_text,
    dispatcher,
    messages,
    open_exception,
    open_many,
    routing_from,
)


def new_lines(alerts: Dispatcher, seen: set[str]) -> list[OutboundMessage]:
    """Messages enqueued since the last call."""
    found = [m for m in messages(alerts.outbox) if m.key not in seen]
    seen.update(m.key for m in found)
    return found


def test_repeat_and_escalate_until_acknowledged(store: Store, tmp_path: Path) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    record = open_exception(exceptions, "ship-cutoff", owner="warehouse", severity="high")
    alerts = dispatcher(store, clock, routing_from(tmp_path))  # high: repeat 60 min, escalate 30 min
    seen: set[str] = set()
    alerts.run()
    assert [m.action for m in new_lines(alerts, seen)] == ["post"]
    post_key = f"exc:{record.id}:post"

    clock.advance(timedelta(minutes=29, seconds=59))
    alerts.run()
    assert new_lines(alerts, seen) == []

    clock.advance(timedelta(seconds=1))  # 30 min unacknowledged
    report = alerts.run()
    assert (report.escalations, report.repeats) == (1, 0)
    escalation, update = sorted(new_lines(alerts, seen), key=lambda m: m.action)
    assert (escalation.key, escalation.action, escalation.parent) == (f"exc:{record.id}:escalate", "reply", post_key)
    assert escalation.text == ":rotating_light: <!subteam^S0WAREHOUSE> not acknowledged within 30m: escalated."
    assert update.action == "update" and "escalated to <!subteam^S0WAREHOUSE>" in block_text(update)

    clock.advance(timedelta(minutes=59, seconds=59))  # the repeat counts from the escalation
    alerts.run()
    assert new_lines(alerts, seen) == []
    clock.advance(timedelta(seconds=1))
    assert alerts.run().repeats == 1
    (repeat,) = new_lines(alerts, seen)
    assert (repeat.key, repeat.parent) == (f"exc:{record.id}:repeat:1", post_key)
    assert repeat.text == ":bell: Still not acknowledged after 1h30m (high)."

    clock.advance(timedelta(minutes=10))
    exceptions.acknowledge(record.id, actor="ann")
    alerts.run()
    assert [m.text for m in new_lines(alerts, seen) if m.action == "reply"] == [":eyes: Acknowledged by ann."]
    for _ in range(4):
        clock.advance(timedelta(hours=1))
        report = alerts.run()
        assert (report.repeats, report.escalations, report.enqueued) == (0, 0, 0)


def test_severities_without_a_policy_are_never_renotified(store: Store, tmp_path: Path) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    open_exception(exceptions, severity="medium")
    alerts = dispatcher(store, clock, routing_from(tmp_path))
    alerts.run()
    clock.advance(timedelta(days=2))
    report = alerts.run()
    assert (report.repeats, report.escalations, report.enqueued) == (0, 0, 0)


def test_timings_per_severity_from_settings_and_resolve_stops(store: Store, tmp_path: Path) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    record = open_exception(exceptions, severity="critical")  # customer_service: no on-call group
    escalation = {"critical": Escalation(repeat_minutes=5, escalate_minutes=12)}
    alerts = dispatcher(store, clock, routing_from(tmp_path), escalation=escalation)
    seen: set[str] = set()
    alerts.run()
    new_lines(alerts, seen)
    steps = []
    for _ in range(3):
        clock.advance(timedelta(minutes=5))
        report = alerts.run()
        steps.append((report.repeats, report.escalations))
    assert steps == [(1, 0), (1, 0), (0, 1)]  # 5, 10, then 15 >= 12: escalated (with @here: no group)
    escalation_line = next(m for m in new_lines(alerts, seen) if m.key.endswith(":escalate"))
    assert escalation_line.text.startswith(":rotating_light: <!here> ")
    exceptions.resolve(record.id, actor="ann")
    alerts.run()
    clock.advance(timedelta(hours=1))
    assert alerts.run().enqueued == 0


def test_a_digest_is_renotified_and_escalated_while_members_are_unacknowledged(store: Store, tmp_path: Path) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    opened = open_many(exceptions, 6, rule="ship-cutoff", owner="warehouse", severity="high")
    alerts = dispatcher(store, clock, routing_from(tmp_path), group_threshold=5)
    seen: set[str] = set()
    assert alerts.run().digests == 1
    (digest,) = new_lines(alerts, seen)

    clock.advance(timedelta(minutes=30))
    exceptions.acknowledge(opened[0].id, actor="ann")
    assert alerts.run().escalations == 1
    (line,) = new_lines(alerts, seen)
    assert (line.action, line.parent) == ("reply", digest.key)
    assert line.text == ":rotating_light: <!subteam^S0WAREHOUSE> 5 of 6 still not acknowledged after 30m: escalated."

    clock.advance(timedelta(minutes=60))
    assert alerts.run().repeats == 1
    (line,) = new_lines(alerts, seen)
    assert line.text == ":bell: 5 of 6 still not acknowledged after 1h30m."

    for record in opened[1:]:
        exceptions.acknowledge(record.id, actor="ann")
    alerts.run()
    clock.advance(timedelta(hours=3))
    report = alerts.run()
    assert (report.repeats, report.escalations, report.enqueued) == (0, 0, 0)


def test_a_reopened_alert_is_escalated_after_the_delay_from_the_reopen(store: Store, tmp_path: Path) -> None:
    """The audit's case A: acknowledged and resolved, reopened hours later: not paged at the next run, but 30 min
    (high) after the reopen."""
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    record = open_exception(exceptions, "ship-cutoff", owner="warehouse", severity="high")
    alerts = dispatcher(store, clock, routing_from(tmp_path))
    seen: set[str] = set()
    alerts.run()
    clock.advance(timedelta(minutes=5))
    exceptions.acknowledge(record.id, actor="ann")
    clock.advance(timedelta(minutes=5))
    exceptions.resolve(record.id, actor="ann")
    alerts.run()
    clock.advance(timedelta(hours=3))
    exceptions.reopen(record.id, actor="bob", reason="not fixed after all")
    alerts.run()
    new_lines(alerts, seen)
    clock.advance(timedelta(seconds=15))
    assert alerts.run().escalations == 0
    clock.advance(timedelta(minutes=29, seconds=44))
    assert alerts.run().escalations == 0
    clock.advance(timedelta(seconds=1))  # 30 min after the reopen
    assert alerts.run().escalations == 1
    (line,) = [m for m in new_lines(alerts, seen) if m.key.endswith(":escalate")]
    assert line.text == ":rotating_light: <!subteam^S0WAREHOUSE> not acknowledged within 30m: escalated."


def test_a_reopened_alert_that_was_escalated_is_escalated_again(store: Store, tmp_path: Path) -> None:
    """The audit's case B: critical, escalated, resolved, reopened 5 h later: repeats count from the reopen and it
    escalates again (its second escalation line threads under the same message)."""
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    record = open_exception(exceptions, "ship-cutoff", owner="warehouse", severity="critical")  # 30 / 10 min
    alerts = dispatcher(store, clock, routing_from(tmp_path))
    seen: set[str] = set()
    alerts.run()
    clock.advance(timedelta(minutes=11))
    assert alerts.run().escalations == 1
    exceptions.resolve(record.id, actor="ann")
    alerts.run()
    clock.advance(timedelta(hours=5))
    exceptions.reopen(record.id, actor="engine", reason="late again")
    alerts.run()
    new_lines(alerts, seen)
    clock.advance(timedelta(minutes=9, seconds=59))
    report = alerts.run()
    assert (report.repeats, report.escalations) == (0, 0)
    clock.advance(timedelta(seconds=1))
    assert alerts.run().escalations == 1
    assert any("escalated to <!subteam^S0WAREHOUSE>" in block_text(m) for m in new_lines(alerts, seen))
    clock.advance(timedelta(minutes=30))
    assert alerts.run().repeats == 1
    (repeat,) = new_lines(alerts, seen)
    assert repeat.text == ":bell: Still not acknowledged after 40m (critical)."


def test_a_digest_escalates_to_the_on_call_group_of_its_route(store: Store, tmp_path: Path) -> None:
    """The audit's case: a route gives order-release at DAL to the warehouse (on-call S0WAREHOUSE); the single alert
    and the digest of that route page the same group, not `@here` (customer service, the rule's owner, has none)."""
    routing = routing_from(
        tmp_path,
        ROUTING
        + """alerts:
  routes:
    - match: {rule: order-release, warehouse: DAL}
      owner: warehouse
""",
    )
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    alerts = dispatcher(store, clock, routing, group_threshold=5)
    open_exception(exceptions, "order-release", key="SO-0", warehouse="DAL")
    alerts.run()
    clock.advance(timedelta(seconds=1))
    open_many(exceptions, 6, context={"warehouse": "DAL"})
    assert alerts.run().digests == 1
    seen: set[str] = set()
    new_lines(alerts, seen)
    clock.advance(timedelta(minutes=31))
    assert alerts.run().escalations == 2
    lines = sorted(m.text for m in new_lines(alerts, seen) if m.key.endswith(":escalate"))
    assert lines == [
        ":rotating_light: <!subteam^S0WAREHOUSE> 6 of 6 still not acknowledged after 31m: escalated.",
        ":rotating_light: <!subteam^S0WAREHOUSE> not acknowledged within 30m: escalated.",
    ]


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER_ALERTING_ESCALATION", '{"critical": {"repeat_minutes": 15, "escalate_minutes": 0}}')
    monkeypatch.setenv("TOWER_ALERTING_SLACK_USERS", '{"U024BE7LH": "ann"}')
    monkeypatch.setenv("TOWER_ALERTING_GROUP_WINDOW_SECONDS", "120")
    loaded = AlertingSettings()
    assert loaded.escalation == {"critical": Escalation(repeat_minutes=15, escalate_minutes=0)}
    assert loaded.escalation["critical"].escalate is None and loaded.escalation["critical"].repeat == timedelta(
        minutes=15
    )
    assert (loaded.slack_users, loaded.group_window) == ({"U024BE7LH": "ann"}, timedelta(minutes=2))
    monkeypatch.setenv("TOWER_ALERTING_ESCALATION", '{"urgent": {"repeat_minutes": 1, "escalate_minutes": 1}}')
    with pytest.raises(ValidationError, match="unknown severity 'urgent'"):
        AlertingSettings()
    monkeypatch.delenv("TOWER_ALERTING_ESCALATION")
    # an operator's name is the audit trail's actor, shown in Slack, the dashboard and the CLI: one line of text
    for name, refused in (("ann\u001b[2J", "control character U+001B"), ("\u202enna", "U+202E"), (" ", "not 0")):
        monkeypatch.setenv("TOWER_ALERTING_SLACK_USERS", orjson.dumps({"U024BE7LH": name}).decode())
        with pytest.raises(ValidationError, match=f"slack_users.U024BE7LH\n.*{re.escape(refused)}"):
            AlertingSettings()
    monkeypatch.setenv("TOWER_ALERTING_SLACK_USERS", '{"U024BE7LH": " ann "}')
    assert AlertingSettings().slack_users == {"U024BE7LH": "ann"}
    monkeypatch.setenv("TOWER_ALERTING_SERVICE_SOURCES", '{"wms-bridge": "wms//reno"}')  # no span's source
    with pytest.raises(ValidationError, match="wms-bridge: 'wms//reno' is not a source an event can have"):
        AlertingSettings()


def test_a_silence_made_after_the_post_pauses_repeats_and_escalation(store: Store, tmp_path: Path) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    record = open_exception(exceptions, "ship-cutoff", owner="warehouse", severity="high", warehouse="DAL")
    alerts = dispatcher(store, clock, routing_from(tmp_path))  # high: repeat 60 min, escalate 30 min
    seen: set[str] = set()
    alerts.run()
    new_lines(alerts, seen)
    clock.advance(timedelta(minutes=10))
    SilenceStore(store, clock).create(
        ExceptionMatch.model_validate({"warehouse": "DAL"}),
        created_by="ann",
        comment="DAL dock flooded: we know",
        duration=timedelta(hours=2),
    )
    for _ in range(11):  # 10 min in, then every 10 min until the silence's last minute
        clock.advance(timedelta(minutes=10))
        report = alerts.run()
        assert (report.repeats, report.escalations, report.enqueued) == (0, 0, 0)
    clock.advance(timedelta(minutes=10))  # the silence is over, the alert still unacknowledged: escalated now
    assert alerts.run().escalations == 1
    lines = [m.key for m in new_lines(alerts, seen) if m.action == "reply"]
    assert lines == [f"exc:{record.id}:escalate"]


def test_a_digest_waits_while_every_unacknowledged_member_is_silenced(store: Store, tmp_path: Path) -> None:
    clock = FixedClock(T0)
    exceptions = ExceptionStore(store, clock)
    opened = open_many(exceptions, 6, rule="ship-cutoff", owner="warehouse", severity="high")
    alerts = dispatcher(store, clock, routing_from(tmp_path), group_threshold=5)
    assert alerts.run().digests == 1
    SilenceStore(store, clock).create(
        ExceptionMatch.model_validate({"rule": "ship-cutoff", "key": [r.key for r in opened[:5]]}),
        created_by="ann",
        comment="known",
        duration=timedelta(hours=2),
    )
    clock.advance(timedelta(minutes=30))
    assert alerts.run().escalations == 1  # one member is not silenced
    exceptions.acknowledge(opened[5].id, actor="ann")
    clock.advance(timedelta(minutes=61))  # a repeat fell due at 1h30m, but the five left are silenced
    assert alerts.run().repeats == 0
    clock.advance(timedelta(minutes=30))  # the silence is over
    assert alerts.run().repeats == 1
