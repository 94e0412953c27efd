"""`tower demo`: a simulated wholesale distributor whose integrations send to the tower.

`scenario` generates the story and its injected faults (pure, deterministic, on an injected clock);
`senders` delivers it over the real doors (OTLP/HTTP through the OpenTelemetry SDK, CloudEvents).
"""

from collector.demo.scenario import (
    DEFAULT_FAULTS,
    FAULT_RULES,
    Delivery,
    DemoEvent,
    DemoSpan,
    Fault,
    LiveFeed,
    Scenario,
    ScenarioConfig,
    build_scenario,
)
from collector.demo.senders import DeliveryError, DemoSender, SendStats, run_live

__all__ = [
    "DEFAULT_FAULTS",
    "FAULT_RULES",
    "Delivery",
    "DeliveryError",
    "DemoEvent",
    "DemoSender",
    "DemoSpan",
    "Fault",
    "LiveFeed",
    "Scenario",
    "ScenarioConfig",
    "SendStats",
    "build_scenario",
    "run_live",
]
