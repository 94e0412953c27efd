"""What a reconciliation rule's `params` may say, validated into typed configs.

A rule file names its reconciler with `compare:` (`inventory` or `invoice`) and gives its
parameters under `params:`. `PARAMS_MODELS` maps each reconciler to the pydantic model of its
parameters; the rule loader validates `params` with it at start-up (every problem reported as
`file:line: params.field: message`), with `params_context(...)` as the validation context so a
pull names only configured databases. The composition root then turns each rule into a
`RuleConfig` for the reconcilers: they never see the rule-file models of `sla_rules`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from kernel.durations import parse_duration
from kernel.model.events import checked_source, source_covers

Kind = Literal["business", "technical"]

_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

# The validation context key holding the database names configured in TOWER_RECONCILE_SOURCES.
SOURCES_CONTEXT = "reconcile_sources"

# The titles of the finding rules an inventory rule opens besides its own (its own is the rule file's `title`):
# what an alert's header, the API's rule_title and the facets say (`oversell.title`, `stale_title` change them).
OVERSELL_TITLE = "Storefront sells more than the warehouse has"
STALE_TITLE = "Inventory snapshots stale"


_WHOLE = re.compile(r"^[+-]?[0-9][0-9_]*$")


def _positive_duration(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be a positive duration")
    return value


def _rule_id(value: str) -> str:
    if not _RULE_ID.fullmatch(value):
        raise ValueError("must be lowercase letters, digits and dashes, e.g. inventory-stale")
    return value


def _number(value: Any) -> Any:
    # YAML `yes` reads as True and True as 1: a boolean (or text) where a number belongs is a mistake. A whole
    # number not written plainly (`010`, `1_000`) reaches here as its text (sla_rules/loader.py): read in decimal.
    if isinstance(value, str) and _WHOLE.fullmatch(value):
        return int(value.replace("_", ""))
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ValueError(f"expected a number, got {value!r}")
    return value


Duration = Annotated[timedelta, AfterValidator(_positive_duration)]
Source = Annotated[str, AfterValidator(checked_source)]
RuleId = Annotated[str, AfterValidator(_rule_id)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PullParams(_Params):
    """Read one side from a SQL database instead of from snapshot events."""

    database: str = Field(description="A name in TOWER_RECONCILE_SOURCES (its SQLAlchemy URL is a secret there).")
    query: str = Field(
        min_length=1,
        description="A SELECT returning the columns sku, location, quantity and optionally as_of (a timestamp).",
    )

    @field_validator("database")
    @classmethod
    def _configured(cls, value: str, info: ValidationInfo) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a database name: letters, digits, '_', '.', '-'")
        context = info.context if isinstance(info.context, Mapping) else {}
        configured: Collection[str] | None = context.get(SOURCES_CONTEXT)
        if configured is not None and value not in configured:
            named = ", ".join(sorted(configured)) if configured else "none"
            raise ValueError(f"unknown database {value!r}; TOWER_RECONCILE_SOURCES names {named}")
        return value

    @field_validator("query")
    @classmethod
    def _select(cls, value: str) -> str:
        first = value.strip().split(None, 1)[0].lower() if value.strip() else ""
        if first not in ("select", "with"):
            raise ValueError("must be a SELECT (or WITH ... SELECT) query")
        if ";" in value.strip().rstrip(";"):
            raise ValueError("must be one statement")
        return value.strip().rstrip(";")


class OversellParams(_Params):
    """eCommerce sellable quantity against the WMS (the second source): selling more than the warehouse has."""

    source: Source = Field("ecommerce", description="The source whose snapshots are the sellable quantity.")
    tolerance: float = Field(0, ge=0, description="Units the sellable quantity may exceed the WMS's by.")
    rule: RuleId = Field("inventory-oversell", description="The rule id of oversell findings.")
    title: str = Field(OVERSELL_TITLE, min_length=1, max_length=150, description="The title of oversell findings.")

    @field_validator("tolerance", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        return _number(value)


class InventoryParams(_Params):
    """`compare: inventory`: the latest snapshot per (sku, location) of two sources, and staleness."""

    sources: list[Source] = Field(
        default_factory=lambda: ["erp", "wms"],
        min_length=2,
        max_length=2,
        description="The two sides: the book (e.g. erp) and the count (e.g. wms). A system covers its paths.",
    )
    tolerance: float = Field(0, ge=0, description="Units the two sides may differ by (exactly at it: no finding).")
    stale_after: Duration = Field(timedelta(hours=2), description="A side source silent this long is stale.")
    lookback: Duration = Field(timedelta(days=7), description="Snapshots older than this are not compared.")
    oversell: OversellParams | None = Field(None, description="Also compare sellable quantity with the WMS.")
    stale_rule: RuleId = Field("inventory-stale", description="The rule id of the technical stale findings.")
    stale_title: str = Field(
        STALE_TITLE, min_length=1, max_length=150, description="The title of the technical stale findings."
    )
    pull: dict[str, PullParams] = Field(
        default_factory=dict, description="Sides read from a SQL database, by source name (a name in `sources`)."
    )

    @field_validator("tolerance", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        return _number(value)

    @field_validator("sources", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("stale_after", "lookback", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return parse_duration(value)

    @model_validator(mode="after")
    def _consistent(self) -> InventoryParams:
        sides = list(self.sources) + ([self.oversell.source] if self.oversell else [])
        for i, first in enumerate(sides):
            for second in sides[i + 1 :]:
                if source_covers(first, second) or source_covers(second, first):
                    raise ValueError(f"sources {first!r} and {second!r} overlap; each side needs its own source")
        for name in self.pull:
            if name not in sides:
                raise ValueError(f"pull names {name!r}, which is not a side ({', '.join(sides)})")
        if self.lookback < self.stale_after:
            raise ValueError("`lookback` must be at least `stale_after`")
        return self


class InvoiceSources(_Params):
    """Which systems each document is read from (DESIGN.md's "sent by"); a system covers its paths. A document
    of another source is ignored: one system's ingest token cannot amend another's order, shipment or invoice."""

    orders: list[Source] = Field(default_factory=lambda: ["erp"], min_length=1, description="order.accepted")
    shipments: list[Source] = Field(default_factory=lambda: ["wms"], min_length=1, description="shipment.confirmed")
    invoices: list[Source] = Field(default_factory=lambda: ["erp"], min_length=1, description="invoice.posted")

    @field_validator("orders", "shipments", "invoices", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class InvoiceParams(_Params):
    """`compare: invoice`: invoices against accepted orders and shipments."""

    amount_tolerance_pct: Decimal = Field(
        Decimal("0.5"), ge=0, le=100, decimal_places=4, description="Percent of the order amount."
    )
    quantity_tolerance: float = Field(0, ge=0, description="Units the invoiced quantity may differ by.")
    uninvoiced_after: Duration = Field(
        timedelta(days=7),
        description="Shipped this long ago with no invoice: never invoiced (invoice-posting covers late ones).",
    )
    unmatched_after: Duration = Field(
        timedelta(hours=2), description="An invoice this old with no shipment, or no accepted order, is a finding."
    )
    lookback: Duration = Field(timedelta(days=30), description="Invoices and shipments older than this are ignored.")
    sources: InvoiceSources = Field(
        default_factory=InvoiceSources, description="The systems orders, shipments and invoices are read from."
    )

    @field_validator("amount_tolerance_pct", "quantity_tolerance", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        return _number(value)

    @field_validator("uninvoiced_after", "unmatched_after", "lookback", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> Any:
        return parse_duration(value)

    @model_validator(mode="after")
    def _consistent(self) -> InvoiceParams:
        if self.lookback <= self.uninvoiced_after:
            raise ValueError("`lookback` must be longer than `uninvoiced_after`")
        return self


PARAMS_MODELS: dict[str, type[BaseModel]] = {"inventory": InventoryParams, "invoice": InvoiceParams}
"""The parameters model of each reconciler, by the `compare:` value that names it."""


def params_context(databases: Collection[str]) -> dict[str, Any]:
    """The validation context of rule params: the database names a pull may use."""
    return {SOURCES_CONTEXT: frozenset(databases)}


@dataclass(frozen=True)
class FindingRule:
    """A rule id exceptions are opened under, and how: one reconciliation rule may open several
    (inventory-sync opens inventory-sync, inventory-oversell and inventory-stale), each with its own title."""

    id: str
    source_rule: str  # the rule file's id, for routing
    kind: Kind
    owner: str
    severity: str
    title: str = ""  # what alerts and the API call it (the rule file's title for the rule's own id)


@dataclass(frozen=True)
class RuleConfig:
    """A reconciliation rule as the reconcilers take it: the rule file's fields and its typed params."""

    id: str
    title: str
    kind: Kind
    owner: str
    severity: str
    params: InventoryParams | InvoiceParams

    @property
    def compare(self) -> str:
        """The reconciler: inventory or invoice."""
        return "inventory" if isinstance(self.params, InventoryParams) else "invoice"

    def finding_rules(self) -> list[FindingRule]:
        """The rule ids this rule opens exceptions under, with their kind, owner and title."""
        main = FindingRule(self.id, self.id, self.kind, self.owner, self.severity, self.title)
        if not isinstance(self.params, InventoryParams):
            return [main]
        params, rules = self.params, [main]
        if params.oversell is not None:
            oversell = params.oversell
            rules.append(FindingRule(oversell.rule, self.id, self.kind, self.owner, self.severity, oversell.title))
        rules.append(
            FindingRule(params.stale_rule, self.id, "technical", "integration", self.severity, params.stale_title)
        )
        return rules


def rule_config(
    rule_id: str,
    title: str,
    kind: str,
    owner: str,
    severity: str,
    compare: str,
    params: Mapping[str, Any],
    databases: Collection[str] | None = None,
) -> RuleConfig:
    """A RuleConfig from a rule's fields; ValueError (or pydantic's ValidationError) when `params` is invalid."""
    model = PARAMS_MODELS.get(compare)
    if model is None:
        raise ValueError(f"rule {rule_id}: unknown reconciler {compare!r}; one of {', '.join(PARAMS_MODELS)}")
    context = params_context(databases) if databases is not None else None
    typed = model.model_validate(dict(params), context=context)
    assert isinstance(typed, (InventoryParams, InvoiceParams))
    if kind not in ("business", "technical"):
        raise ValueError(f"rule {rule_id}: kind must be business or technical")
    return RuleConfig(rule_id, title, "technical" if kind == "technical" else "business", owner, severity, typed)


def check_finding_rules(configs: list[RuleConfig]) -> None:
    """ValueError when two reconciliation rules would open exceptions under the same rule id."""
    seen: dict[str, str] = {}
    for config in configs:
        for finding in config.finding_rules():
            other = seen.get(finding.id)
            if other is not None:
                raise ValueError(
                    f"rules {other} and {config.id} both open exceptions under {finding.id!r}; "
                    "give one of them its own (params.stale_rule / params.oversell.rule)"
                )
            seen[finding.id] = config.id
