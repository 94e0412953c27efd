"""Helpers for the alerting policy tests: a fixed clock, routing from YAML text, a dispatcher over the real
store, exceptions opened through the ExceptionStore, and what the dispatcher put in the outbox."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alerting.dispatcher import Dispatcher
from alerting.outbox import OutboundMessage, Outbox
from alerting.policy_settings import AlertingSettings
from alerting.state import AlertState, PolicyStore
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionRecord, ExceptionStore, NewException
from kernel.routing import Routing
from kernel.store import Store
from sla_rules.loader import default_routing_file, default_rules_dir, load_routing, load_rules

T0 = datetime(2026, 11, 2, 16, 0, tzinfo=UTC)  # a Monday
DASHBOARD = "http://dash.test"
TITLES = {rule.id: rule.title for rule in load_rules(default_rules_dir())}

ROUTING = """\
owners:
  customer_service: {channel: "#cs-orders"}
  warehouse: {channel: "#ops-warehouse", oncall: S0WAREHOUSE}
  transportation: {channel: "#ops-transport"}
  finance: {channel: "#finance-ops"}
  integration: {channel: "#integration-oncall", oncall: S0ONCALL1}
"""


def routing_from(tmp_path: Path, text: str = ROUTING) -> Routing:
    """The routing file with `text`, loaded as the tower loads it."""
    path = tmp_path / "routing.yaml"
    path.write_text(textwrap.dedent(text))
    return load_routing(path)


def shipped_routing() -> Routing:
    """The routing file shipped with the tower."""
    return load_routing(default_routing_file())


def settings(**overrides: Any) -> AlertingSettings:
    """Alerting settings with test values (no environment)."""
    values: dict[str, Any] = {"slack_users": {"U0ANN": "ann"}}
    values.update(overrides)
    return AlertingSettings(**values)


def dispatcher(
    store: Store,
    clock: FixedClock,
    routing: Routing | None = None,
    runbooks: dict[str, str] | None = None,
    **overrides: Any,
) -> Dispatcher:
    """A dispatcher on the real store, over a new Outbox, with the shipped rules' titles (and `runbooks`)."""
    outbox, policy = Outbox(store, clock), settings(**overrides)
    return Dispatcher(store, outbox, routing or shipped_routing(), policy, clock, TITLES, DASHBOARD, runbooks=runbooks)


def open_exception(
    exceptions: ExceptionStore,
    rule: str = "order-release",
    key: str = "SO-1",
    *,
    owner: str = "customer_service",
    severity: str = "high",
    kind: str = "business",
    due_at: datetime | None = None,
    **context: Any,
) -> ExceptionRecord:
    """Open one exception as an engine would (actor `engine`)."""
    (record,) = exceptions.open_many(
        [NewException(rule, key, kind, owner, severity, due_at=due_at or T0 - timedelta(hours=1), context=context)]
    )
    return record


def open_many(
    exceptions: ExceptionStore, count: int, rule: str = "order-release", owner: str = "customer_service", **kw: Any
) -> list[ExceptionRecord]:
    """Open `count` exceptions of one rule and owner (keys SO-1...)."""
    return exceptions.open_many(
        [
            NewException(
                rule, f"SO-{n}", "business", owner, kw.get("severity", "high"), T0, dict(kw.get("context", {}))
            )
            for n in range(1, count + 1)
        ]
    )


def messages(outbox: Outbox) -> list[OutboundMessage]:
    """Every message in the outbox, in enqueue order."""
    return [entry.message for entry in outbox.open_entries()]


def by_key(outbox: Outbox) -> dict[str, OutboundMessage]:
    """The outbox's messages by key."""
    return {m.key: m for m in messages(outbox)}


def state_of(store: Store, exception_id: str) -> AlertState:
    """The alert state of one exception."""
    return PolicyStore(store).states([exception_id])[exception_id]


def block_text(message: OutboundMessage) -> str:
    """Every text of a message's blocks, joined (for assertions on what it says)."""
    found: list[str] = [message.text]

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                if name == "text" and isinstance(item, str):
                    found.append(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(message.blocks or [])
    return "\n".join(found)
