"""The alerting policy: whether an exception is alerted now, and where.

In order, for an exception about to be alerted:
1. routing (the routing file's `alerts:` tree) gives its destinations; none with a channel: `unrouted`;
2. an active silence that matches it: `silenced` (reason: the silence id);
3. a maintenance window in force that matches it: `window` (reason: the window's name);
4. an open technical exception that explains it (alerting/suppression.py): `held` (reason: its id);
5. otherwise it is alerted (`posted`, or put in a digest by alerting/grouping.py).

Held-back decisions are looked at again on every dispatcher run: when the silence ends, the
window closes or the technical exception resolves, an exception still open is alerted then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from alerting.silences import Silence
from alerting.state import Decision
from alerting.suppression import RootCauses, first_per_source
from alerting.windows import window_for
from kernel.exceptions import ExceptionRecord
from kernel.routing import Destination, Routing


def exception_values(record: ExceptionRecord) -> dict[str, Any]:
    """What matchers test on an exception: its context's scalar fields, then rule, kind, severity, owner, key."""
    values: dict[str, Any] = {
        name: str(value)
        for name, value in record.context.items()
        if isinstance(value, (str, int, float)) and not isinstance(value, bool)
    }
    values.update(rule=record.rule, kind=record.kind, severity=record.severity, owner=record.owner, key=record.key)
    return values


@dataclass(frozen=True)
class Verdict:
    """What the policy decided for one exception now."""

    decision: Decision  # posted (alert now), unrouted, silenced, window or held
    reason: str = ""
    destinations: list[Destination] = field(default_factory=list)
    holder: ExceptionRecord | None = None  # the technical exception holding it back

    @property
    def alert(self) -> bool:
        """True when the exception is to be alerted now."""
        return self.decision == "posted"

    @property
    def channels(self) -> tuple[str, ...]:
        """The destinations' channels."""
        return tuple(d.channel for d in self.destinations if d.channel)


@dataclass(frozen=True)
class Conditions:
    """What holds alerts back at one moment: active silences, open technical exceptions with their sources
    (oldest first)."""

    now: datetime
    silences: Sequence[Silence] = ()
    technical: Sequence[tuple[ExceptionRecord, str]] = ()
    # the oldest open technical exception of each source: a burst with thousands of them open is decided
    # against their few sources, not against each of them
    holders: tuple[tuple[ExceptionRecord, str], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "holders", first_per_source(self.technical))


class Policy:
    """Decides, for one exception at one moment, whether it is alerted now and where."""

    def __init__(self, routing: Routing, root_causes: RootCauses) -> None:
        self.routing = routing
        self.root_causes = root_causes

    def destinations(self, record: ExceptionRecord) -> list[Destination]:
        """Where the exception's alerts go (channels first, in route order)."""
        return self.routing.destinations(exception_values(record))

    def decide(self, record: ExceptionRecord, conditions: Conditions) -> Verdict:
        """The verdict for `record` under `conditions` (see the module's docstring for the order)."""
        values = exception_values(record)
        destinations = [d for d in self.routing.destinations(values) if d.channel]
        if not destinations:
            return Verdict("unrouted", f"no Slack channel for owner {record.owner!r} in the routing file")
        for silence in conditions.silences:
            if silence.matches(values):
                return Verdict("silenced", silence.id, destinations)
        window = window_for(self.routing.alerts.windows, values, conditions.now)
        if window is not None:
            return Verdict("window", window.name, destinations)
        holder = self.root_causes.holder(values, conditions.holders)
        if holder is not None:
            return Verdict("held", holder.id, destinations, holder)
        return Verdict("posted", "", destinations)
