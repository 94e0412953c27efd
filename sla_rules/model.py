"""Rule models: what a rule file may say, validated when it is loaded.

Three types share one file format (`type:`): `sla` rules (a start event, an end event and a
deadline per business key; evaluated by the SLA engine), `reconciliation` rules (compared by
the reconcilers) and `technical` rules (error rates and silence, from spans and arrivals).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from kernel.durations import parse_duration
from kernel.model.events import (
    STRING_KEYS,
    checked_source,
    is_event_type,
    source_covers,
)
from kernel.routing import DataValue, OwnerName, Values, data_values

Kind = Literal["business", "technical"]
Severity = Literal["low", "medium", "high", "critical"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Correlation keys a rule may use: the business keys events carry as columns, plus `subject`.
CORRELATION_KEYS = ("order_id", "shipment_id", "invoice_id", "customer_id", "sku", "subject")
# Data fields a start or end side may filter on, and a cutoff's `zone_by` may read (columns of business_events).
FILTER_FIELDS = (*STRING_KEYS, "currency")
# What every SLA case carries for routing, besides its key (under the key's name): from its first start event.
CASE_FIELDS = ("source", "warehouse", "customer_id")
# A `zone_by` field outside FILTER_FIELDS is written `data.NAME` (a field of the event's data object).
_DATA_FIELD = re.compile(r"^data\.[A-Za-z_][A-Za-z0-9_.-]{0,62}$")

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_LINK = re.compile(r"^https?://[^\s<>|]{1,2000}$")


Duration = Annotated[timedelta, Field(description="A duration: 90s, 30m, 2h, 1d.")]


def _check_zone(zone: str) -> str:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a name too long for a file name
        raise ValueError(f"unknown time zone {zone[:100]!r}") from exc
    return zone


def _check_type(event_type: str) -> str:
    if not is_event_type(event_type):  # '', 'order released': the doors refuse it, so the side would match none
        raise ValueError(
            f"{event_type[:200]!r} is not a type an event can have: a letter or digit, then letters, digits, '.', '_'"
            " or '-', up to 128 characters (e.g. order.released)"
        )
    return event_type


def _one_or_many(value: Any) -> Any:
    """A single string where a list is expected reads as a list of one."""
    return [value] if isinstance(value, str) else value


def _filter_field(name: str) -> str:
    if name not in FILTER_FIELDS:
        raise ValueError(f"cannot filter on {name!r}; fields are {', '.join(FILTER_FIELDS)}")
    return name


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be a positive duration, e.g. 30m")
    return value


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must not be negative (0s: every time)")
    return value


# A duration that must be more than nothing (the windows of technical rules), or at least nothing.
PositiveDuration = Annotated[timedelta, AfterValidator(_positive)]
NonNegativeDuration = Annotated[timedelta, AfterValidator(_not_negative)]

# A data field's values in a filter: at least one, each text (a plain whole number reads as its text).
FieldValues = Values
FilterField = Annotated[str, AfterValidator(_filter_field)]
# Validated per entry, so an error's location names the entry (and a rule file error its line).
TimeZone = Annotated[str, AfterValidator(_check_zone)]
# `wms/`, `wms//dallas`, `wms/dallas dock`: no event has it, a side would match none
SourceName = Annotated[str, AfterValidator(checked_source)]
EventType = Annotated[str, AfterValidator(_check_type)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventMatch(_Strict):
    """Which events a side of a rule reads: their types, optionally their sources and data fields."""

    types: list[EventType] = Field(min_length=1, description="Event types, e.g. [order.accepted].")
    sources: list[SourceName] = Field(
        default_factory=list, description="Only these sources (a system covers its paths)."
    )
    where: dict[FilterField, FieldValues] = Field(
        default_factory=dict, description="Data fields that must equal one of these values (a value or a list)."
    )
    where_not: dict[FilterField, FieldValues] = Field(
        default_factory=dict, description="Data fields that must equal none of these values (a value or a list)."
    )

    @field_validator("types", "sources", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _one_or_many(value)

    @field_validator("where", "where_not", mode="before")
    @classmethod
    def _listify_values(cls, value: Any) -> Any:
        return {k: data_values(v) for k, v in value.items()} if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _matches_something(self) -> EventMatch:
        for name, values in self.where.items():
            if name in self.where_not and set(values) <= set(self.where_not[name]):
                raise ValueError(
                    f"where_not.{name} excludes every value where.{name} allows: the side matches no event"
                )
        return self

    def excludes(self, other: EventMatch) -> bool:
        """Whether no event can match both this side and `other` (their sources or a data field exclude each other;
        types aside)."""
        if (
            self.sources
            and other.sources
            and not any(source_covers(a, b) or source_covers(b, a) for a in self.sources for b in other.sources)
        ):
            return True
        for one, two in ((self, other), (other, self)):
            for name, values in one.where.items():
                if name in two.where and not set(values) & set(two.where[name]):
                    return True
                if name in two.where_not and set(values) <= set(two.where_not[name]):
                    return True
        return False


class ZoneBy(_Strict):
    """Take the time zone from a data field of the start event (e.g. the warehouse)."""

    field: str = Field(
        "warehouse",
        description=f"One of {', '.join(FILTER_FIELDS)}, or data.NAME for another field of the event's data.",
    )
    zones: dict[DataValue, TimeZone] = Field(description="Field value -> IANA time zone.")

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        if value not in FILTER_FIELDS and not _DATA_FIELD.fullmatch(value):
            raise ValueError(
                f"unknown field {value[:100]!r}; one of {', '.join(FILTER_FIELDS)}, or data.NAME for another field"
                " of the event's data (e.g. data.dock)"
            )
        return value


class Cutoff(_Strict):
    """Started before `time` on a business day: due at 23:59:59 that day; else 23:59:59 of the next business day."""

    time: dt.time = Field(description="Local cutoff time, e.g. '14:00'.")
    timezone: str = Field("America/Chicago", description="IANA time zone when no zone_by value applies.")
    business_days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS[:5]), min_length=1)
    holidays: list[dt.date] = Field(
        default_factory=list,
        description="Local dates that are not business days (public holidays, a closed warehouse), e.g. "
        "[2026-11-26, 2026-12-25]: a start on one counts as after the cutoff, and no deadline ends on one.",
    )
    zone_by: ZoneBy | None = None

    @field_validator("business_days", "holidays", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        # one day (`business_days: sat`, `holidays: 2026-12-25`, which YAML reads as a date) is a list of one
        return [value] if isinstance(value, (str, dt.date)) else value

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, value: list[dt.date]) -> list[dt.date]:
        for day in value:
            # the days a deadline can fall on (ClickHouse's Date), with room to look a few weeks either way
            if not dt.date(1970, 2, 1) <= day <= dt.date(2149, 5, 1):
                raise ValueError(f"{day} is outside 1970-02-01..2149-05-01")
        return sorted(set(value))

    @field_validator("time", mode="before")
    @classmethod
    def _time_text(cls, value: Any) -> Any:
        # Pydantic reads a number as seconds after midnight, and YAML 1.1 reads 14:00 as 840:
        # a number here is always a mistake, never a time.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(f"write the time as text 'HH:MM', e.g. '14:00' (got the number {value})")
        return value

    @field_validator("time")
    @classmethod
    def _local(cls, value: dt.time) -> dt.time:
        # '14:00+02:00' reads as a time with an offset, which the deadline would silently ignore (14:00 in the zone)
        if value.tzinfo is not None:
            raise ValueError(
                f"write a local time without an offset, e.g. '{value.replace(tzinfo=None):%H:%M}': the zone is"
                " `timezone` (or `zone_by`)"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        return _check_zone(value)


class Deadline(_Strict):
    """Either `after` a duration from the start, or a daily `cutoff`."""

    after: Duration | None = None
    cutoff: Cutoff | None = None

    @field_validator("after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _one_of(self) -> Deadline:
        if (self.after is None) == (self.cutoff is None):
            raise ValueError("give exactly one of `after` (a duration) or `cutoff`")
        if self.after is not None and self.after <= timedelta(0):
            raise ValueError("`after` must be positive")
        return self


# ISO 4217: three capital letters.
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class Penalty(_Strict):
    """What a customer charges back per breach of an SLA rule: a `fixed` amount and/or a `percent` of the
    order amount (from the order's first `order.accepted`), in `currency`. Used only by finance reports
    (an estimate of the chargeback exposure); it never changes how cases are evaluated."""

    fixed: Decimal = Field(Decimal(0), ge=0, max_digits=14, decimal_places=4, description="Amount per breach.")
    percent: Decimal = Field(
        Decimal(0), ge=0, le=100, max_digits=7, decimal_places=4, description="Percent of the order amount."
    )
    currency: str = Field("USD", description="ISO 4217 code of the penalty (and of the orders it applies to).")

    @field_validator("fixed", "percent", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        # YAML `yes` / `true` would otherwise read as 1; text like "25" is a mistake worth naming too.
        if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
            raise ValueError(f"expected a number, got {value!r}")
        return value

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not _CURRENCY.fullmatch(value):
            raise ValueError(f"{value!r} is not an ISO 4217 currency code like USD")
        return value

    @model_validator(mode="after")
    def _something(self) -> Penalty:
        if self.fixed == 0 and self.percent == 0:
            raise ValueError("give `fixed`, `percent` or both (a penalty of nothing is no penalty: remove it)")
        return self


class _RuleBase(_Strict):
    id: str = Field(description="Unique rule id, lowercase with dashes.")
    title: str = Field(min_length=1)
    kind: Kind
    owner: OwnerName = Field(description="Default owner (a name as in routing), which the routing file may refine.")
    severity: Severity = "medium"
    enabled: bool = True
    description: str = ""
    runbook: str | None = Field(
        None, description="A link (http or https) to what to do about the rule's exceptions: in its alerts and pages."
    )

    @field_validator("runbook")
    @classmethod
    def _link(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _LINK.fullmatch(value):
            raise ValueError("must be an http or https URL without spaces, <, > or | (it is a link in Slack)")
        return value

    @field_validator("id")
    @classmethod
    def _id_format(cls, value: str) -> str:
        if not _ID.fullmatch(value):
            raise ValueError("must be lowercase letters, digits and dashes, e.g. order-release")
        return value


class SlaRule(_RuleBase):
    """A case per key: starts at the first start event, met by the first end event by the deadline."""

    type: Literal["sla"] = "sla"
    key: str = Field(description=f"The correlation key: one of {', '.join(CORRELATION_KEYS)}.")
    start: EventMatch
    end: EventMatch
    deadline: Deadline
    warning: Duration | None = Field(None, description="A pending case is at risk this long before its deadline.")
    penalty: Penalty | None = Field(
        None, description="Estimated chargeback per breach, for finance reports; not part of the evaluation."
    )

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if value not in CORRELATION_KEYS:
            raise ValueError(f"must be one of {', '.join(CORRELATION_KEYS)}")
        return value

    @field_validator("warning", mode="before")
    @classmethod
    def _warning(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    def route_fields(self) -> tuple[str, ...]:
        """The data fields its cases carry for owner and alert routes: CASE_FIELDS and its key (but `subject`)."""
        return CASE_FIELDS if self.key in CASE_FIELDS or self.key == "subject" else (*CASE_FIELDS, self.key)

    def case_data(self, case: Mapping[str, Any]) -> dict[str, str]:
        """What routing matches for a case (a row of `sla_cases`): its `route_fields`, the key under its name."""
        data = {name: str(case[name]) for name in CASE_FIELDS}
        if self.key != "subject":
            data[self.key] = str(case["key"])
        return data

    def case_zone(self, case: Mapping[str, Any]) -> str | None:
        """The time zone a cutoff rule computed this case's deadline in (for people: the warehouse's clock); None
        for a duration rule, or a zone read from a data field the case row does not carry."""
        cutoff = self.deadline.cutoff
        if cutoff is None:
            return None
        if cutoff.zone_by is None:
            return cutoff.timezone
        if cutoff.zone_by.field not in ("warehouse", "customer_id"):
            return None
        return cutoff.zone_by.zones.get(str(case.get(cutoff.zone_by.field) or ""), cutoff.timezone)

    def ends_at_start(self) -> list[str]:
        """The event types both sides read when nothing tells a start event from an end event: a case would then
        end at its own start event (met at once)."""
        if self.start.excludes(self.end):
            return []
        return [t for t in self.end.types if t in self.start.types]


class ReconciliationRule(_RuleBase):
    """Compared by a reconciler (reconcilers/), named by `compare`, with its parameters."""

    type: Literal["reconciliation"] = "reconciliation"
    compare: str = Field(description="The reconciler, e.g. inventory or invoice.")
    params: dict[str, Any] = Field(default_factory=dict)


class ErrorRateParams(_Strict):
    """integration-errors: per (service, span name) over `window`, at least `min_spans` and more than `error_ratio`."""

    window: PositiveDuration = timedelta(minutes=15)
    min_spans: int = Field(20, ge=1)
    error_ratio: float = Field(0.05, gt=0, lt=1)

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> Any:
        return parse_duration(value)


class SilenceParams(_Strict):
    """source-silence: an expected source sends no span and no event for `window`."""

    window: PositiveDuration = timedelta(minutes=30)
    sources: list[SourceName] = Field(default_factory=list, description="Expected sources; empty: from settings.")

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> Any:
        return parse_duration(value)

    @field_validator("sources", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _one_or_many(value)


class RefusalsParams(_Strict):
    """ingest-refusals: records of a source refused into dead letters, at least `min_records` within `window`."""

    window: PositiveDuration = timedelta(minutes=15)
    min_records: int = Field(1, ge=1, description="Refused records within the window that open the exception.")

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> Any:
        return parse_duration(value)


class IdReuseParams(_Strict):
    """event-id-reuse: ids of one source that carried different events (the store keeps one event per source and id),
    at least `min_ids` of them received within `window`; checked at most every `every`."""

    window: PositiveDuration = timedelta(hours=1)
    min_ids: int = Field(1, ge=1, description="Reused ids received within the window that open the exception.")
    every: NonNegativeDuration = Field(
        timedelta(minutes=10),
        description="Check at most this often (a full evaluation checks at once): a check reads every id received"
        " within 35 days that shares an id with the window's (about 0.35 s at 5 million ids).",
    )

    @field_validator("window", "every", mode="before")
    @classmethod
    def _window(cls, value: Any) -> Any:
        return parse_duration(value)


class DeliveriesParams(_Strict):
    """slack-delivery: Slack messages to a channel that failed (no more attempts) since a message last reached it,
    at least `min_messages` of them, the last within `window`."""

    window: PositiveDuration = timedelta(hours=1)
    min_messages: int = Field(
        1, ge=1, description="Failed messages since the channel last took one that open the exception."
    )

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> Any:
        return parse_duration(value)


class JobFailuresParams(_Strict):
    """tower-jobs: a scheduled job of the tower itself failed `failures` runs in a row."""

    failures: int = Field(3, ge=1, description="Consecutive failed runs of a job before its exception opens.")


class ErrorRateRule(_RuleBase):
    """A technical rule on span error rates."""

    type: Literal["technical"] = "technical"
    check: Literal["error-rate"]
    params: ErrorRateParams = Field(default_factory=ErrorRateParams)


class SilenceRule(_RuleBase):
    """A technical rule on silent sources."""

    type: Literal["technical"] = "technical"
    check: Literal["silence"]
    params: SilenceParams = Field(default_factory=SilenceParams)


class RefusalsRule(_RuleBase):
    """A technical rule on records the doors refused (dead letters)."""

    type: Literal["technical"] = "technical"
    check: Literal["refusals"]
    params: RefusalsParams = Field(default_factory=RefusalsParams)


class DeliveriesRule(_RuleBase):
    """A technical rule on Slack messages the tower could not deliver (the delivery log)."""

    type: Literal["technical"] = "technical"
    check: Literal["deliveries"]
    params: DeliveriesParams = Field(default_factory=DeliveriesParams)


class IdReuseRule(_RuleBase):
    """A technical rule on event ids a source gave to different events (`event_ids`, migration 17)."""

    type: Literal["technical"] = "technical"
    check: Literal["id-reuse"]
    params: IdReuseParams = Field(default_factory=IdReuseParams)


class JobFailuresRule(_RuleBase):
    """A technical rule on the tower's own scheduled jobs (watched by the scheduler, tower/job_health.py)."""

    type: Literal["technical"] = "technical"
    check: Literal["job-failures"]
    params: JobFailuresParams = Field(default_factory=JobFailuresParams)


TechnicalRule = Annotated[
    ErrorRateRule | SilenceRule | RefusalsRule | DeliveriesRule | IdReuseRule | JobFailuresRule,
    Field(discriminator="check"),
]
Rule = (
    SlaRule
    | ReconciliationRule
    | ErrorRateRule
    | SilenceRule
    | RefusalsRule
    | DeliveriesRule
    | IdReuseRule
    | JobFailuresRule
)
# The technical rules sla_rules/technical.py evaluates (JobFailuresRule is the scheduler's, tower/job_health.py).
EVALUATED_TECHNICAL = (ErrorRateRule, SilenceRule, RefusalsRule, DeliveriesRule, IdReuseRule)
EvaluatedTechnical = ErrorRateRule | SilenceRule | RefusalsRule | DeliveriesRule | IdReuseRule
