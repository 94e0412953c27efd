"""Owner routing: which team owns a rule's exception, from the rule and the case's data.

The routing file (sla_rules/routing.yaml by default) is a list of routes, read top to bottom
like an Alertmanager routing tree: the first route whose `match` holds names the owner; when
none does, the rule's own `owner` applies. Technical rules always go to `integration`, the
on-call. An optional `owners:` section declares the owners (the alerting issue adds their Slack
channels there); when it is present every owner a route or rule names must be declared in it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from kernel.model.events import SOURCE_SYSTEMS, source_covers, source_system
from sla_rules.model import Kind, Rule, Severity

INTEGRATION = "integration"
"""The owner of every technical exception: the on-call integration engineers."""

_OWNER = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
# A Slack channel name (#ops-warehouse) or id (C0123ABCD).
_CHANNEL = re.compile(r"^(#[a-z0-9][a-z0-9_-]{0,79}|[CG][A-Z0-9]{8,})$")

# Case data fields a route may match, besides the rule's id, kind and severity.
DATA_FIELDS = ("source", "warehouse", "customer_id", "location", "sku", "order_id", "shipment_id", "invoice_id")


def _owner_name(value: str) -> str:
    if not _OWNER.match(value):
        raise ValueError(f"{value!r} is not an owner name: lowercase letters, digits, '_', '-' or '.'")
    return value


def _source_name(value: str) -> str:
    if source_system(value) not in SOURCE_SYSTEMS:
        raise ValueError(f"unknown source {value!r}; systems are {', '.join(SOURCE_SYSTEMS)}")
    return value


OwnerName = Annotated[str, AfterValidator(_owner_name)]
Values = Annotated[list[str], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RouteMatch(_Strict):
    """Conditions that must all hold; each is one value or a list of values (any of them)."""

    rule: Values | None = None
    kind: Annotated[list[Kind], Field(min_length=1)] | None = None
    severity: Annotated[list[Severity], Field(min_length=1)] | None = None
    source: Annotated[list[Annotated[str, AfterValidator(_source_name)]], Field(min_length=1)] | None = Field(
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
        # Ids are often numbers in YAML (customer_id: 10042); they match as text.
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return [str(value)]
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    def matches(self, rule: Rule, data: Mapping[str, str]) -> bool:
        """Whether every condition holds for this rule and case data."""
        if self.rule is not None and rule.id not in self.rule:
            return False
        if self.kind is not None and rule.kind not in self.kind:
            return False
        if self.severity is not None and rule.severity not in self.severity:
            return False
        if self.source is not None and not any(source_covers(s, data.get("source", "")) for s in self.source):
            return False
        for name in DATA_FIELDS[1:]:
            wanted: list[str] | None = getattr(self, name)
            if wanted is not None and data.get(name) not in wanted:
                return False
        return True


class Route(_Strict):
    """When `match` holds (an empty match always does), the exception belongs to `owner`."""

    match: RouteMatch = Field(default_factory=RouteMatch)
    owner: OwnerName
    description: str = ""


class OwnerConfig(_Strict):
    """An owner (a team). The alerting issue adds how to reach it; `channel` is accepted already."""

    channel: str | None = Field(None, description="Slack channel: #name or a channel id.")
    description: str = ""

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is not None and not _CHANNEL.match(value):
            raise ValueError(f"{value!r} is not a Slack channel: '#name' (lowercase) or a channel id like C0123ABCD")
        return value


class Routing(_Strict):
    """The routing file: owners (optional) and routes, first match wins."""

    owners: dict[OwnerName, OwnerConfig] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)

    @field_validator("owners", mode="before")
    @classmethod
    def _bare_owners(cls, value: Any) -> Any:
        # `integration:` with nothing after it declares the owner with no settings.
        if isinstance(value, Mapping):
            return {k: {} if v is None else v for k, v in value.items()}
        return value

    def owner_for(self, rule: Rule, data: Mapping[str, str]) -> str:
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
        return found
