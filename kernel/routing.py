"""The routing file: who owns an exception, and where its alerts go.

One YAML file (sla_rules/routing.yaml by default, loaded with line-numbered errors by
sla_rules/loader.py) holds:

- `owners:` the teams, each with an optional Slack `channel` and an on-call user group
  (`oncall`, a Slack subteam id such as S0123ABCD, mentioned when an alert escalates);
- `routes:` owner routing, read top to bottom like an Alertmanager routing tree: the first route
  whose `match` holds names the owner; when none does, the rule's own `owner` applies.
  Technical rules always go to `integration`, the on-call;
- `alerts:` where alerts go (the alerting package reads it): a routing tree matched on the
  exception (rule, kind, severity, owner, key and its data fields), first match wins unless a
  route says `continue: true`, routes may nest, and `default` applies when no route matches
  (the exception owner's channel unless it says otherwise); plus recurring maintenance
  `windows` and the `root_causes` that relate technical failures to the business exceptions
  they explain.

The models are typed against `RuleLike` (id, kind, severity, owner), so the kernel does not
depend on the rule models of sla_rules.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from kernel.model.events import checked_source, source_covers

INTEGRATION = "integration"
"""The owner of every technical exception: the on-call integration engineers."""

Kind = Literal["business", "technical"]
Severity = Literal["low", "medium", "high", "critical"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_OWNER = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
# A Slack channel name (#ops-warehouse) or id (C0123ABCD).
_CHANNEL = re.compile(r"^(#[a-z0-9][a-z0-9_-]{0,79}|[CG][A-Z0-9]{8,})$")
# A Slack user group (subteam) id.
_SUBTEAM = re.compile(r"^S[A-Z0-9]{6,}$")
_WINDOW_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")

# Case data fields a route may match, besides the rule's id, kind and severity.
DATA_FIELDS = ("source", "warehouse", "customer_id", "location", "sku", "order_id", "shipment_id", "invoice_id")
# Exception fields an alert route, window, root cause or silence may match, besides DATA_FIELDS.
EXCEPTION_FIELDS = ("rule", "kind", "severity", "owner", "key", "service", "span_name")


class RuleLike(Protocol):
    """What routing reads of a rule."""

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def severity(self) -> str: ...

    @property
    def owner(self) -> str: ...


def _owner_name(value: str) -> str:
    if not _OWNER.fullmatch(value):
        raise ValueError(f"{value!r} is not an owner name: lowercase letters, digits, '_', '-' or '.'")
    return value


def _channel_name(value: str) -> str:
    if not _CHANNEL.fullmatch(value):
        raise ValueError(f"{value!r} is not a Slack channel: '#name' (lowercase) or a channel id like C0123ABCD")
    return value


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}") from exc
    return value


OwnerName = Annotated[str, AfterValidator(_owner_name)]
SourceName = Annotated[str, AfterValidator(checked_source)]  # `wms/` would match no exception's source
ChannelName = Annotated[str, AfterValidator(_channel_name)]


def value_text(value: Any) -> Any:
    """A whole number as its text: the rule loader (sla_rules/loader.py) reads a number only when written plainly
    (`10042`; `0042` stays the text "0042", never YAML 1.1's octal 34), so its text is what was written. A number
    with a fraction is refused: its written text is lost (`1.50` reads 1.5)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        raise ValueError(f"write the value in quotes, e.g. '{value}': a number with a fraction is not kept as written")
    return value


def data_values(value: Any) -> Any:
    """One value reads as a list of one."""
    return [value] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value


# A value of a data field (an id, a warehouse): text; a whole number (customer_id: 10042) reads as its text.
DataValue = Annotated[str, BeforeValidator(value_text)]
Values = Annotated[list[DataValue], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RouteMatch(_Strict):
    """Conditions that must all hold; each is one value or a list of values (any of them)."""

    rule: Values | None = None
    kind: Annotated[list[Kind], Field(min_length=1)] | None = None
    severity: Annotated[list[Severity], Field(min_length=1)] | None = None
    source: Annotated[list[SourceName], Field(min_length=1)] | None = Field(
        None, description="A system covers its paths: `wms` matches `wms/reno`."
    )
    warehouse: Values | None = None
    customer_id: Values | None = None
    location: Values | None = None
    sku: Values | None = None
    order_id: Values | None = None
    shipment_id: Values | None = None
    invoice_id: Values | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return data_values(value)

    def holds(self, values: Mapping[str, Any]) -> bool:
        """Whether every condition holds for these values (a field the values lack never matches)."""
        for name in type(self).model_fields:
            wanted: list[str] | None = getattr(self, name)
            if wanted is None:
                continue
            value = values.get(name)
            value = "" if value is None else str(value)
            if name == "source":
                if not any(source_covers(s, value) for s in wanted):
                    return False
            elif value not in wanted:
                return False
        return True

    def matches(self, rule: RuleLike, data: Mapping[str, Any]) -> bool:
        """Whether every condition holds for this rule and case data."""
        return self.holds({**data, "rule": rule.id, "kind": rule.kind, "severity": rule.severity})


class ExceptionMatch(RouteMatch):
    """Conditions on an exception: RouteMatch's, plus its owner, key and (technical) service and span name."""

    owner: Annotated[list[OwnerName], Field(min_length=1)] | None = None
    key: Values | None = None
    service: Values | None = None
    span_name: Values | None = None

    def is_empty(self) -> bool:
        """True when it has no condition (and so matches everything)."""
        return all(getattr(self, name) is None for name in type(self).model_fields)


class Route(_Strict):
    """When `match` holds (an empty match always does), the exception belongs to `owner`."""

    match: RouteMatch = Field(default_factory=RouteMatch)
    owner: OwnerName
    description: str = ""


class OwnerConfig(_Strict):
    """An owner (a team): its Slack channel and on-call user group."""

    channel: ChannelName | None = Field(None, description="Slack channel: #name or a channel id.")
    oncall: str | None = Field(
        None, description="Slack user group (subteam) id, e.g. S0123ABCD, mentioned when an alert escalates."
    )
    description: str = ""

    @field_validator("oncall")
    @classmethod
    def _subteam(cls, value: str | None) -> str | None:
        if value is not None and not _SUBTEAM.fullmatch(value):
            raise ValueError(f"{value!r} is not a Slack user group id like S0123ABCD")
        return value


def _channels(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Channels = Annotated[list[ChannelName], Field(min_length=1)]


class AlertTarget(_Strict):
    """Where alerts go: `channel` (one or a list), or `owner` (that owner's channel and on-call group).

    With both, the channels given and the owner's on-call group; with neither, the parent route's
    target (for `default`: the exception's own owner).
    """

    channel: Channels | None = None
    owner: OwnerName | None = None

    @field_validator("channel", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _channels(value)


class AlertRoute(_Strict):
    """A node of the alert routing tree: when `match` holds, its first matching child route (if any)
    decides, else this route's target (`channel` and/or `owner`, as for AlertTarget; neither: the
    parent's); `continue: true` lets later sibling routes match too."""

    match: ExceptionMatch = Field(default_factory=ExceptionMatch)
    channel: Channels | None = None
    owner: OwnerName | None = None
    continue_: bool = Field(False, alias="continue", description="Keep matching the routes after this one.")
    routes: list[AlertRoute] = Field(default_factory=list)
    description: str = ""

    @field_validator("channel", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _channels(value)


class MaintenanceWindow(_Strict):
    """A recurring time window (e.g. the WMS maintenance on Sunday nights) in which alerts matching
    `match` are held back; those still open when it ends are alerted then. A window whose `end` is
    not after its `start` ends the next day."""

    name: str
    match: ExceptionMatch = Field(default_factory=ExceptionMatch)
    days: Annotated[list[Weekday], Field(min_length=1)] = Field(description="Days the window starts on.")
    start: dt.time = Field(description="Local start time, e.g. '22:00'.")
    end: dt.time = Field(description="Local end time, e.g. '02:00' (the next day when not after start).")
    timezone: Annotated[str, AfterValidator(_zone)] = "America/Chicago"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _WINDOW_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a window name: lowercase letters, digits, '_', '-' or '.'")
        return value

    @field_validator("days", mode="before")
    @classmethod
    def _day_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time_text(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(f"write the time as text 'HH:MM', e.g. '22:00' (got the number {value})")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> MaintenanceWindow:
        if self.start == self.end:
            raise ValueError("start and end are equal: the window would last no time (or a whole day)")
        return self


class RootCause(_Strict):
    """A relation between a technical failure and the business exceptions it explains: while a technical
    exception is open for `source` (or for a system above it: `wms` covers `wms/dallas`), business
    exceptions matching `holds` are held back."""

    source: SourceName
    holds: ExceptionMatch
    description: str = ""


class Alerts(_Strict):
    """The `alerts:` section: the alert routing tree, its default route, maintenance windows, root causes."""

    default: AlertTarget = Field(default_factory=AlertTarget, description="When no route matches.")
    routes: list[AlertRoute] = Field(default_factory=list)
    windows: list[MaintenanceWindow] = Field(default_factory=list)
    root_causes: list[RootCause] = Field(default_factory=list)


@dataclass(frozen=True)
class Destination:
    """Where one alert goes: a channel (None when the owner has none), the owner it is for, its on-call group."""

    channel: str | None
    owner: str
    oncall: str | None = None


class Routing(_Strict):
    """The routing file: owners (optional), owner routes (first match wins) and the alert routing."""

    owners: dict[OwnerName, OwnerConfig] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
    alerts: Alerts = Field(default_factory=Alerts)

    @field_validator("owners", mode="before")
    @classmethod
    def _bare_owners(cls, value: Any) -> Any:
        # `integration:` with nothing after it declares the owner with no settings.
        if isinstance(value, Mapping):
            return {k: {} if v is None else v for k, v in value.items()}
        return value

    @field_validator("alerts", mode="before")
    @classmethod
    def _bare_alerts(cls, value: Any) -> Any:
        return {} if value is None else value

    def owner_for(self, rule: RuleLike, data: Mapping[str, Any]) -> str:
        """The owner of an exception of `rule` for a case with `data` (warehouse, customer_id, source, ...)."""
        if rule.kind == "technical":
            return INTEGRATION
        for route in self.routes:
            if route.match.matches(rule, data):
                return route.owner
        return rule.owner

    def channel_for(self, owner: str) -> str | None:
        """The owner's declared channel, if any."""
        config = self.owners.get(owner)
        return None if config is None else config.channel

    def oncall_for(self, owner: str) -> str | None:
        """The owner's on-call user group id, if any."""
        config = self.owners.get(owner)
        return None if config is None else config.oncall

    def destinations(self, values: Mapping[str, Any]) -> list[Destination]:
        """Where an alert for an exception with `values` (rule, kind, severity, owner, key and context fields)
        goes, by the alerts routing tree; one entry per channel, in route order."""
        owner = str(values.get("owner", ""))
        default = self._targets(self.alerts.default, [Destination(self.channel_for(owner), owner, None)], owner)
        found = _walk(self, self.alerts.routes, values, default, owner)
        out: dict[str | None, Destination] = {}
        for target in found or default:
            out.setdefault(target.channel, target)
        return list(out.values())

    def owners_without_channel(self) -> list[str]:
        """Declared owners whose alerts reach no channel unless an alerts route that tests more than the owner sends
        them somewhere: the dispatcher records those alerts `unrouted` and posts nothing."""
        return [
            owner
            for owner in sorted(self.owners)
            if all(d.channel is None for d in self.destinations({"owner": owner}))
        ]

    def _targets(self, target: AlertTarget | AlertRoute, inherited: list[Destination], owner: str) -> list[Destination]:
        """The destinations a route's target names (the inherited ones when it names none)."""
        if target.channel is None and target.owner is None:
            return [
                Destination(d.channel, d.owner, d.oncall if d.oncall is not None else self.oncall_for(d.owner))
                for d in inherited
            ]
        who = target.owner or owner
        if target.channel is None:
            return [Destination(self.channel_for(who), who, self.oncall_for(who))]
        return [Destination(channel, who, self.oncall_for(who)) for channel in target.channel]

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """What is well-formed but wrong, each with its location in the file (for the loader's messages)."""
        found: list[tuple[tuple[str | int, ...], str]] = []
        if self.owners and INTEGRATION not in self.owners:
            found.append((("owners",), f"declare {INTEGRATION!r}: technical exceptions always go to it"))
        for index, route in enumerate(self.routes):
            if route.match.kind == ["technical"]:
                found.append(
                    (
                        ("routes", index, "match", "kind"),
                        f"technical exceptions always go to {INTEGRATION!r}; this route never applies",
                    )
                )
            if self.owners and route.owner not in self.owners:
                found.append((("routes", index, "owner"), f"owner {route.owner!r} is not declared under owners:"))
        found += self._alert_problems()
        return found

    def _alert_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        found: list[tuple[tuple[str | int, ...], str]] = []

        def check_owner(loc: tuple[str | int, ...], owner: str | None) -> None:
            if owner is not None and self.owners and owner not in self.owners:
                found.append(((*loc, "owner"), f"owner {owner!r} is not declared under owners:"))

        def check_routes(loc: tuple[str | int, ...], routes: list[AlertRoute]) -> None:
            for index, route in enumerate(routes):
                check_owner((*loc, index), route.owner)
                for name in route.match.owner or ():
                    if self.owners and name not in self.owners:
                        found.append(((*loc, index, "match", "owner"), f"owner {name!r} is not declared under owners:"))
                check_routes((*loc, index, "routes"), route.routes)

        check_owner(("alerts", "default"), self.alerts.default.owner)
        check_routes(("alerts", "routes"), self.alerts.routes)
        seen: set[str] = set()
        for index, window in enumerate(self.alerts.windows):
            if window.name in seen:
                found.append((("alerts", "windows", index, "name"), f"duplicate window name {window.name!r}"))
            seen.add(window.name)
        for index, cause in enumerate(self.alerts.root_causes):
            if cause.holds.is_empty():
                found.append(
                    (
                        ("alerts", "root_causes", index, "holds"),
                        "give at least one condition: an empty `holds` would hold back every business exception",
                    )
                )
        return found


def _walk(
    routing: Routing,
    routes: list[AlertRoute],
    values: Mapping[str, Any],
    inherited: list[Destination],
    owner: str,
) -> list[Destination]:
    """The destinations of the first matching route (and of later ones after `continue: true`); [] if none."""
    found: list[Destination] = []
    for route in routes:
        if not route.match.holds(values):
            continue
        own = routing._targets(route, inherited, owner)
        found += _walk(routing, route.routes, values, own, owner) or own
        if not route.continue_:
            break
    return found
