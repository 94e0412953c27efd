"""The demo distributor's story: orders, shipments, invoices, inventory, integration spans and injected faults.

Pure and deterministic: every choice comes from a random generator seeded with the seed and the injected
clock's `now`, and nothing here reads the wall clock or the network. `build_scenario` backfills the last
`history_hours` before now, so the deadlines of DESIGN.md's default rules are already decided for most
cases; `LiveFeed` keeps the same world going after now. The happy path meets every default rule with a
margin; each injected fault violates exactly the rule it names and is written to the manifest.
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from kernel.clock import Clock
from kernel.model.events import source_system

# The default rules of DESIGN.md, as the scenario designs around them.
RELEASE_WITHIN = timedelta(hours=2)
ASN_WITHIN = timedelta(hours=1)
INVOICE_WITHIN = timedelta(hours=24)
SHIP_CUTOFF = time(14, 0)
DEFAULT_CUTOFF_ZONE = "America/Chicago"
ERROR_WINDOW = timedelta(minutes=15)
ERROR_MIN_SPANS = 20
SILENCE_AFTER = timedelta(minutes=30)
STALE_AFTER = timedelta(hours=2)

# A faulted case is decided at least this long before now, so a slightly later evaluation agrees.
DECIDED_MARGIN = timedelta(minutes=30)
BURST_EVERY = timedelta(seconds=15)

FAULT_RULES: dict[str, str] = {
    "late-release": "order-release",
    "missed-ship-cutoff": "ship-cutoff",
    "late-asn": "asn-sent",
    "missing-invoice": "invoice-posting",
    "invoice-mismatch": "invoice-match",
    "inventory-drift": "inventory-sync",
    "error-burst": "integration-errors",
    "silent-source": "source-silence",
    "duplicate-delivery": "",
    "out-of-order-delivery": "",
}
DEFAULT_FAULTS: dict[str, int] = {
    "late-release": 3,
    "missed-ship-cutoff": 3,
    "late-asn": 3,
    "missing-invoice": 2,
    "invoice-mismatch": 4,
    "inventory-drift": 2,
    "error-burst": 1,
    "silent-source": 1,
    "duplicate-delivery": 5,
    "out-of-order-delivery": 4,
}
SLA_RULES = ("order-release", "ship-cutoff", "asn-sent", "invoice-posting")

# Simulated services and the source system each one sends for.
SERVICES: dict[str, str] = {
    "erp-order-api": "erp",
    "middleware": "middleware",
    "wms-connector": "wms",
    "edi-gateway": "edi",
    "tms-sync": "tms",
    "crm-connector": "crm",
    "storefront": "ecommerce",
}
# One periodic job per service: its heartbeat, so no healthy source is ever silent for 30 minutes.
POLL_SPANS: dict[str, str] = {
    "erp-order-api": "process outbound queue",
    "middleware": "erp->wms inventory sync",
    "wms-connector": "poll wave status",
    "edi-gateway": "poll AS2 mailbox",
    "tms-sync": "poll carrier tracking",
    "crm-connector": "poll CRM changes",
    "storefront": "sync catalog prices",
}
# Integrations that can carry an error burst (one each), and sources that can fall silent.
BURST_SERIES = (
    ("middleware", "erp->wms inventory sync"),
    ("edi-gateway", "poll AS2 mailbox"),
    ("crm-connector", "poll CRM changes"),
)
SILENT_CANDIDATES = ("tms", "crm")
# Spans that sometimes fail once and succeed on retry (kept below the integration-errors threshold).
RETRIED_SPANS = ("POST /orders", "POST /wms/orders", "POST /shipments", "send 856 ASN")
CHANNELS = ("crm", "ecommerce", "edi")
CARRIERS = ("ODFL", "XPO", "Estes", "FedEx Freight", "Saia")

SpanKindName = Literal["server", "client", "internal", "producer", "consumer"]
AttrValue = str | int | float | bool
Attrs = Mapping[str, AttrValue]


@dataclass(frozen=True)
class Warehouse:
    """A distribution center with its own WMS source and time zone."""

    code: str
    city: str
    tz: str
    source: str


WAREHOUSES = (
    Warehouse("DAL", "Dallas", "America/Chicago", "wms/dallas"),
    Warehouse("ATL", "Atlanta", "America/New_York", "wms/atlanta"),
    Warehouse("RNO", "Reno", "America/Los_Angeles", "wms/reno"),
)


@dataclass(frozen=True)
class Customer:
    """A wholesale customer ordering through one channel, served from one warehouse."""

    id: str
    name: str
    channel: str
    warehouse: Warehouse


@dataclass(frozen=True)
class Sku:
    """A stocked item."""

    id: str
    name: str
    unit_cents: int


@dataclass(frozen=True)
class Line:
    """One order line."""

    sku: str
    quantity: int
    unit_cents: int


@dataclass(frozen=True)
class ScenarioConfig:
    """What to simulate: volumes, history, and how many faults of each kind."""

    seed: int = 7
    orders: int = 300
    history_hours: float = 48.0
    skus: int = 16
    customers: int = 40
    faults: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_FAULTS))
    poll_minutes: int = 10
    snapshot_minutes: int = 60
    silence_minutes: int = 45
    transient_error_rate: float = 0.03
    chunk_minutes: int = 240
    live_rate: float = 1.0

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULT_RULES)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_RULES)}")
        if any(n < 0 for n in self.faults.values()):
            raise ValueError("fault counts must not be negative")
        if self.orders < 0 or self.skus < 1 or self.customers < 1:
            raise ValueError("orders must be >= 0, skus and customers >= 1")
        if self.history_hours <= 0 or self.live_rate <= 0:
            raise ValueError("history hours and live rate must be positive")
        if not 0 < self.poll_minutes * 3 <= SILENCE_AFTER.total_seconds() / 60:
            raise ValueError("poll_minutes must leave no healthy source silent for 30 minutes (<= 10)")
        if not 0 < self.snapshot_minutes < STALE_AFTER.total_seconds() / 60:
            raise ValueError("snapshot_minutes must be under the 2-hour staleness limit")
        if self.silence_minutes <= SILENCE_AFTER.total_seconds() / 60:
            raise ValueError("silence_minutes must exceed the 30-minute source-silence threshold")

    def count(self, kind: str) -> int:
        """How many faults of `kind` to inject."""
        return int(self.faults.get(kind, 0))


@dataclass(frozen=True)
class DemoEvent:
    """One business event as its source system would send it."""

    id: str
    source: str
    type: str
    time: datetime
    subject: str
    data: dict[str, Any]
    trace_id: str = ""
    span_id: str = ""
    zone: str = "UTC"

    @property
    def at(self) -> datetime:
        """When it is sent (its business time)."""
        return self.time

    @property
    def system(self) -> str:
        """The system part of the source (`wms` for `wms/dallas`)."""
        return source_system(self.source)

    @property
    def traceparent(self) -> str:
        """W3C traceparent of the span that produced it, or ''."""
        return f"00-{self.trace_id}-{self.span_id}-01" if self.trace_id else ""

    def cloudevent(self) -> dict[str, Any]:
        """The structured CloudEvent (JSON-ready); times carry the sender's UTC offset."""
        local = self.time.astimezone(ZoneInfo(self.zone)).isoformat(timespec="milliseconds")
        event: dict[str, Any] = {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": local.replace("+00:00", "Z"),
            "subject": self.subject,
            "datacontenttype": "application/json",
            "data": self.data,
        }
        if self.trace_id:
            event["traceparent"] = self.traceparent
        return event


@dataclass(frozen=True)
class DemoSpan:
    """One span of a simulated integration, with its place in the timeline."""

    service: str
    name: str
    kind: SpanKindName
    trace_id: str
    span_id: str
    parent_span_id: str
    start: datetime
    end: datetime
    attributes: Attrs
    error: str = ""

    @property
    def at(self) -> datetime:
        """When it is exported (it ends)."""
        return self.end

    @property
    def system(self) -> str:
        """The source system whose token sends this span."""
        return SERVICES[self.service]


Item = DemoEvent | DemoSpan


@dataclass(frozen=True)
class Delivery:
    """What the demo sends in one step; deliveries go out strictly in plan order."""

    at: datetime
    events: tuple[DemoEvent, ...] = ()
    spans: tuple[DemoSpan, ...] = ()
    note: Literal["", "duplicate", "out-of-order"] = ""

    @property
    def size(self) -> int:
        """Records in this delivery."""
        return len(self.events) + len(self.spans)


@dataclass(frozen=True)
class Fault:
    """One manifest entry: an injected fault, the rule it must (or, for deliveries, must not) trip."""

    fault: str
    rule: str
    key: str
    expected: Literal["late", "breached", "exception", "none"]
    detail: str
    refs: dict[str, str] = field(default_factory=dict)
    due_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {
            "fault": self.fault,
            "rule": self.rule,
            "key": self.key,
            "expected": self.expected,
            "detail": self.detail,
            "refs": self.refs,
        }
        if self.due_at is not None:
            out["due_at"] = iso(self.due_at)
        return out


@dataclass(frozen=True)
class PendingCase:
    """A case started before now whose deadline is still ahead (neither met nor breached yet)."""

    rule: str
    key: str
    started_at: datetime
    due_at: datetime

    def as_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {"rule": self.rule, "key": self.key, "started_at": iso(self.started_at), "due_at": iso(self.due_at)}


@dataclass
class OrderPlan:
    """One order's planned flow: step offsets, and which steps a fault removed."""

    n: int
    order_id: str
    shipment_id: str
    invoice_id: str
    customer: Customer
    warehouse: Warehouse
    lines: tuple[Line, ...]
    carrier: str
    created: datetime
    accept_after: timedelta
    release_after: timedelta
    ship_after: timedelta
    asn_after: timedelta
    deliver_after: timedelta
    invoice_after: timedelta
    missing: frozenset[str] = frozenset()
    invoice_amount_cents: int | None = None
    invoice_quantity: int | None = None
    fault: str = ""

    @property
    def amount_cents(self) -> int:
        """The accepted order amount in cents."""
        return sum(line.quantity * line.unit_cents for line in self.lines)

    @property
    def quantity(self) -> int:
        """Units ordered (and shipped: one shipment per order)."""
        return sum(line.quantity for line in self.lines)

    @property
    def accepted(self) -> datetime:
        """When the ERP accepted it."""
        return self.created + self.accept_after

    @property
    def released(self) -> datetime | None:
        """When the ERP released it to the WMS (None: never)."""
        return None if "release" in self.missing else self.accepted + self.release_after

    @property
    def shipped(self) -> datetime | None:
        """When the WMS confirmed the shipment (None: never)."""
        released = self.released
        return None if released is None or "ship" in self.missing else released + self.ship_after

    @property
    def asn(self) -> datetime | None:
        """When EDI sent the ASN (None: never)."""
        shipped = self.shipped
        return None if shipped is None or "asn" in self.missing else shipped + self.asn_after

    @property
    def delivered(self) -> datetime | None:
        """When the carrier delivered it (None: never)."""
        shipped = self.shipped
        return None if shipped is None else shipped + self.deliver_after

    @property
    def invoiced(self) -> datetime | None:
        """When the ERP posted the invoice (None: never)."""
        shipped = self.shipped
        return None if shipped is None or "invoice" in self.missing else shipped + self.invoice_after

    def rule_times(self) -> list[datetime]:
        """Times of every step a default rule reads."""
        steps = (self.accepted, self.released, self.shipped, self.asn, self.invoiced)
        return [t for t in steps if t is not None]


@dataclass
class Scenario:
    """A generated backfill: what to send, in which order, and what the tower should conclude."""

    config: ScenarioConfig
    now: datetime
    start: datetime
    orders: list[OrderPlan]
    events: list[DemoEvent]
    spans: list[DemoSpan]
    deliveries: list[Delivery]
    faults: list[Fault]
    pending: list[PendingCase]
    cases: dict[str, dict[str, int]]
    shortfall: dict[str, int]
    silent_since: dict[str, datetime]
    world: DemoWorld
    deferred: list[Item]

    def manifest(self) -> dict[str, Any]:
        """The fault manifest (JSON-ready): faults, expected pending cases, case counts, volumes."""
        events = Counter(e.type for e in self.events)
        return {
            "version": 1,
            "seed": self.config.seed,
            "now": iso(self.now),
            "window": {"from": iso(self.start), "to": iso(self.now)},
            "ship_cutoff_zones": "every fault and every met case holds in the warehouse's zone and in America/Chicago",
            "warehouses": {w.code: {"tz": w.tz, "source": w.source, "city": w.city} for w in WAREHOUSES},
            "key_formats": {
                "order-release": "order_id",
                "ship-cutoff": "order_id",
                "asn-sent": "shipment_id",
                "invoice-posting": "order_id",
                "invoice-match": "invoice_id",
                "inventory-sync": "sku@location",
                "integration-errors": "service|span name",
                "source-silence": "source system",
            },
            "faults": [f.as_dict() for f in self.faults],
            "shortfall": self.shortfall,
            "pending": [p.as_dict() for p in self.pending],
            "cases": self.cases,
            "silent_since": {k: iso(v) for k, v in self.silent_since.items()},
            "volumes": {
                "orders": len(self.orders),
                "events": dict(sorted(events.items())),
                "events_total": len(self.events),
                "log_records": sum(1 for e in self.events if e.system in LOG_SYSTEMS),
                "spans": len(self.spans),
                "spans_by_service": dict(sorted(Counter(s.service for s in self.spans).items())),
                "redelivered": sum(d.size for d in self.deliveries if d.note == "duplicate"),
            },
        }

    def injected(self) -> dict[str, int]:
        """Faults injected per kind."""
        return dict(Counter(f.fault for f in self.faults))


# Business events of these systems go through OTLP logs (EventName); the rest through CloudEvents.
LOG_SYSTEMS = ("wms",)


def iso(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ship_cutoff_due(released: datetime, zone: str) -> datetime:
    """Deadline of ship-cutoff: 23:59:59 the release day if released before 14:00 on a business day
    (in `zone`), otherwise 23:59:59 of the next business day."""
    tz = ZoneInfo(zone)
    local = released.astimezone(tz)
    day = local.date()
    if not (local.weekday() < 5 and local.time() < SHIP_CUTOFF):
        day = _next_business_day(day)
    return datetime.combine(day, time(23, 59, 59), tzinfo=tz).astimezone(UTC)


def _next_business_day(day: date) -> date:
    day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def cutoff_zones(warehouse: Warehouse) -> tuple[str, ...]:
    """Zones the ship-cutoff rule may be configured with for this warehouse: its own and the default."""
    return tuple(dict.fromkeys((warehouse.tz, DEFAULT_CUTOFF_ZONE)))


def case_status(end: datetime | None, due: datetime, now: datetime) -> str:
    """met / late / breached / pending, as DESIGN.md defines them."""
    if end is not None and end <= now:
        return "met" if end <= due else "late"
    return "breached" if due < now else "pending"


def _ms(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _floor(value: datetime, step: timedelta) -> datetime:
    seconds = step.total_seconds()
    return datetime.fromtimestamp(math.floor(value.timestamp() / seconds) * seconds, UTC)


def _grid(start: datetime, end: datetime, step: timedelta, offset: timedelta = timedelta(0)) -> list[datetime]:
    """Times `k * step + offset` (aligned to the epoch) in (start, end]."""
    first = _floor(start - offset, step) + offset
    out: list[datetime] = []
    t = first
    while t <= end:
        if t > start:
            out.append(t)
        t += step
    return out


class DemoWorld:
    """The simulated distributor and its generator state; shared by the backfill and the live phase."""

    def __init__(self, config: ScenarioConfig, now: datetime) -> None:
        self.config = config
        self.now = now
        catalog = random.Random(f"tower-demo-catalog:{config.seed}")
        self.rng = random.Random(f"tower-demo:{config.seed}:{now.isoformat()}")
        self.tag = "".join(self.rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(3))
        self.skus = [
            Sku(f"SKU-{10001 + i}", f"{catalog.choice(_ADJ)} {catalog.choice(_NOUNS)}", catalog.randint(250, 18_000))
            for i in range(config.skus)
        ]
        self.customers = [
            Customer(
                f"C-{1001 + i}",
                f"{catalog.choice(_CUSTOMER_PREFIX)} {catalog.choice(_CUSTOMER_SUFFIX)}",
                catalog.choices(CHANNELS, weights=(35, 40, 25))[0],
                WAREHOUSES[i % len(WAREHOUSES)],
            )
            for i in range(config.customers)
        ]
        self.inventory = {(s.id, w.code): catalog.randint(40, 400) for w in WAREHOUSES for s in self.skus}
        self.drift: dict[tuple[str, str], tuple[datetime, int]] = {}
        self.silent_since: dict[str, datetime] = {}
        self.bursts: dict[tuple[str, str], datetime] = {}
        self.transient_errors = True
        self._seq = 0
        self._burst_count: Counter[tuple[str, str]] = Counter()

    # ids -------------------------------------------------------------------------------------------
    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _trace_id(self) -> str:
        return f"{self.rng.getrandbits(128) | 1:032x}"

    def _span_id(self) -> str:
        return f"{self.rng.getrandbits(64) | 1:016x}"

    def between(self, low_minutes: float, high_minutes: float) -> timedelta:
        """A random duration between the bounds, in whole milliseconds."""
        return timedelta(milliseconds=round(self.rng.uniform(low_minutes, high_minutes) * 60_000))

    # orders ----------------------------------------------------------------------------------------
    def new_order(self, created: datetime) -> OrderPlan:
        """A happy order created at `created`: every step well within its rule."""
        self._seq += 1
        n = self._seq
        customer = self.rng.choice(self.customers)
        skus = self.rng.sample(self.skus, k=min(len(self.skus), self.rng.randint(1, 4)))
        lines = tuple(Line(s.id, self.rng.randint(1, 24), s.unit_cents) for s in skus)
        return OrderPlan(
            n=n,
            order_id=f"SO-{self.tag}-{n:05d}",
            shipment_id=f"SH-{self.tag}-{n:05d}",
            invoice_id=f"INV-{self.tag}-{n:05d}",
            customer=customer,
            warehouse=customer.warehouse,
            lines=lines,
            carrier=self.rng.choice(CARRIERS),
            created=_ms(created),
            accept_after=self.between(1, 8),
            release_after=self.between(10, 75),  # rule: 2 h
            ship_after=self.between(90, 330),  # rule: >= 10 h left when released before 14:00
            asn_after=self.between(5, 40),  # rule: 1 h
            deliver_after=self.between(8 * 60, 40 * 60),
            invoice_after=self.between(30, 8 * 60),  # rule: 24 h
        )

    def render_order(self, plan: OrderPlan) -> list[Item]:
        """Events and spans of every step of the order that happens (future steps included)."""
        items: list[Item] = []
        order, customer, wh = plan.order_id, plan.customer, plan.warehouse
        keys = {"order.id": order, "customer.id": customer.id}
        amount = plan.amount_cents / 100
        lines = [{"sku": x.sku, "quantity": x.quantity, "unit_price": x.unit_cents / 100} for x in plan.lines]

        # created, by the customer's channel
        kind: SpanKindName
        attrs: Attrs
        if customer.channel == "ecommerce":
            service, name, kind = "storefront", "POST /checkout", "server"
            attrs = {
                **keys,
                "http.request.method": "POST",
                "http.route": "/checkout",
                "http.response.status_code": 201,
            }
        elif customer.channel == "crm":
            service, name, kind = "crm-connector", "create sales order", "internal"
            attrs = {**keys, "crm.opportunity.id": f"OPP-{plan.n:06d}"}
        else:
            service, name, kind = "edi-gateway", "receive 850 purchase order", "consumer"
            attrs = {**keys, "edi.transaction_set": "850", "edi.partner": customer.id}
        created = self._root(service, name, kind, plan.created, (0.15, 0.9), attrs)
        data = {"order_id": order, "customer_id": customer.id, "amount": amount, "currency": "USD", "lines": lines}
        items.append(created)
        items.append(
            self._event(customer.channel, "order.created", plan.created, order, data, created.trace_id, created.span_id)
        )

        # accepted by the ERP, through the middleware
        items += self._hop(
            plan.accepted,
            [
                ("middleware", "order->erp", "consumer", dict(keys)),
                ("erp-order-api", "POST /orders", "server", {**keys, "http.request.method": "POST"}),
                ("erp-order-api", "credit check", "internal", dict(keys)),
            ],
            event=("erp", "order.accepted", order, {**data, "warehouse": wh.code}, 1),
        )
        if plan.released is None:
            return items
        items += self._hop(
            plan.released,
            [
                ("erp-order-api", "release order", "internal", {**keys, "warehouse": wh.code}),
                ("middleware", "erp->wms release", "producer", {**keys, "warehouse": wh.code}),
                ("wms-connector", "POST /wms/orders", "server", {**keys, "warehouse": wh.code}),
            ],
            event=("erp", "order.released", order, {"order_id": order, "warehouse": wh.code}, 0),
        )
        if plan.shipped is None:
            return items
        ship_keys = {**keys, "shipment.id": plan.shipment_id, "warehouse": wh.code}
        items += self._hop(
            plan.shipped,
            [
                ("wms-connector", "confirm shipment", "internal", {**ship_keys, "shipment.quantity": plan.quantity}),
                ("middleware", "wms->erp shipment", "consumer", dict(ship_keys)),
                ("erp-order-api", "POST /shipments", "server", dict(ship_keys)),
            ],
            event=(
                wh.source,
                "shipment.confirmed",
                plan.shipment_id,
                {
                    "order_id": order,
                    "shipment_id": plan.shipment_id,
                    "quantity": plan.quantity,
                    "warehouse": wh.code,
                    "carrier": plan.carrier,
                },
                0,
            ),
        )
        booked = plan.shipped + self.between(2, 10)
        items.append(
            self._root("tms-sync", "book load", "client", booked, (0.3, 2.5), {**ship_keys, "carrier": plan.carrier})
        )
        if plan.asn is not None:
            items += self._hop(
                plan.asn,
                [("edi-gateway", "send 856 ASN", "producer", {**ship_keys, "edi.transaction_set": "856"})],
                event=(
                    "edi",
                    "asn.sent",
                    plan.shipment_id,
                    {"shipment_id": plan.shipment_id, "order_id": order, "customer_id": customer.id},
                    0,
                ),
            )
        if plan.delivered is not None:
            items += self._hop(
                plan.delivered,
                [("tms-sync", "carrier delivery update", "consumer", {**ship_keys, "carrier": plan.carrier})],
                event=(
                    "tms",
                    "shipment.delivered",
                    plan.shipment_id,
                    {"shipment_id": plan.shipment_id, "order_id": order, "carrier": plan.carrier},
                    0,
                ),
            )
        if plan.invoiced is not None:
            cents = plan.amount_cents if plan.invoice_amount_cents is None else plan.invoice_amount_cents
            quantity = plan.quantity if plan.invoice_quantity is None else plan.invoice_quantity
            items += self._hop(
                plan.invoiced,
                [("erp-order-api", "post invoice", "internal", {**keys, "invoice.id": plan.invoice_id})],
                event=(
                    "erp",
                    "invoice.posted",
                    plan.invoice_id,
                    {
                        "invoice_id": plan.invoice_id,
                        "order_id": order,
                        "shipment_id": plan.shipment_id,
                        "customer_id": customer.id,
                        "amount": cents / 100,
                        "currency": "USD",
                        "quantity": quantity,
                    },
                    0,
                ),
            )
        return items

    def _hop(
        self,
        at: datetime,
        chain: list[tuple[str, str, SpanKindName, Attrs]],
        event: tuple[str, str, str, dict[str, Any], int],
    ) -> list[Item]:
        """One step: a chain of nested spans (each a child of the previous) ending at `at`, and its event.

        `event` is (source, type, subject, data, index of the span in the chain the event links to).
        """
        items: list[Item] = []
        trace = self._trace_id()
        total = self.between(0.004, 0.04)  # 0.24 s .. 2.4 s for the whole hop
        start, end = at - total, at
        parent = ""
        ids: list[str] = []
        for service, name, kind, attrs in chain:
            span_id = self._span_id()
            if name in RETRIED_SPANS and self.transient_errors and self.rng.random() < self.config.transient_error_rate:
                # An earlier attempt failed and the caller retried: its own trace, seconds before.
                failed_end = start - self.between(0.3, 0.8)
                failed = {**attrs, "http.response.status_code": 504, "retry.failed_attempt": True}
                items.append(self._root(service, name, kind, failed_end, (0.5, 5), failed, "504 Gateway Timeout"))
            items.append(DemoSpan(service, name, kind, trace, span_id, parent, _ms(start), _ms(end), attrs))
            ids.append(span_id)
            parent = span_id
            width = end - start
            start = start + width * self.rng.uniform(0.05, 0.2)
            end = end - width * self.rng.uniform(0.05, 0.2)
        source, event_type, subject, data, link = event
        items.append(self._event(source, event_type, at, subject, data, trace, ids[link]))
        return items

    def _root(
        self,
        service: str,
        name: str,
        kind: SpanKindName,
        end: datetime,
        seconds: tuple[float, float],
        attrs: Attrs,
        error: str = "",
    ) -> DemoSpan:
        """A span in a trace of its own, lasting between `seconds` and ending at `end`."""
        duration = timedelta(milliseconds=round(self.rng.uniform(*seconds) * 1000))
        trace, span = self._trace_id(), self._span_id()
        return DemoSpan(service, name, kind, trace, span, "", _ms(end - duration), _ms(end), attrs, error)

    def _event(
        self, source: str, event_type: str, at: datetime, subject: str, data: dict[str, Any], trace: str, span: str
    ) -> DemoEvent:
        zone = "America/Chicago" if source == "erp" else "UTC"
        return DemoEvent(self._uuid(), source, event_type, _ms(at), subject, data, trace, span, zone)

    # inventory and periodic jobs ----------------------------------------------------------------------
    def inventory_run(self, at: datetime) -> list[Item]:
        """Snapshots of every (sku, warehouse) from the ERP, each WMS and the storefront, all taken at `at`."""
        items: list[Item] = []
        runs: dict[str, tuple[str, str]] = {}
        size = {"inventory.items": len(self.inventory)}
        erp_run = self._root("erp-order-api", "publish inventory snapshot", "internal", at, (0.8, 4), size)
        shop_run = self._root("storefront", "refresh available-to-sell", "internal", at, (0.5, 3), size)
        items += [erp_run, shop_run]
        for wh in WAREHOUSES:
            attrs: Attrs = {"warehouse": wh.code, "inventory.items": len(self.skus)}
            span = self._root("wms-connector", "export inventory snapshot", "internal", at, (0.5, 3), attrs)
            items.append(span)
            runs[wh.code] = (span.trace_id, span.span_id)
        for sku in self.skus:
            for wh in WAREHOUSES:
                pair = (sku.id, wh.code)
                quantity = max(0, self.inventory[pair] + self.rng.randint(-6, 3))
                if quantity < 15:
                    quantity += self.rng.randint(60, 160)  # a replenishment arrived
                self.inventory[pair] = quantity
                drift = self.drift.get(pair)
                counted = quantity + drift[1] if drift is not None and at >= drift[0] else quantity
                subject = f"{sku.id}@{wh.code}"
                data = {"sku": sku.id, "location": wh.code, "warehouse": wh.code}
                for source, q, (trace_id, span_id) in (
                    ("erp", quantity, (erp_run.trace_id, erp_run.span_id)),
                    (wh.source, counted, runs[wh.code]),
                    ("ecommerce", quantity, (shop_run.trace_id, shop_run.span_id)),
                ):
                    data_q = {**data, "quantity": q}
                    items.append(self._event(source, "inventory.snapshot", at, subject, data_q, trace_id, span_id))
        return items

    def periodic(self, start: datetime, end: datetime) -> list[Item]:
        """Inventory runs, each service's polling job, and any ongoing error burst, in (start, end]."""
        items: list[Item] = []
        for at in _grid(start, end, timedelta(minutes=self.config.snapshot_minutes)):
            items += self.inventory_run(at)
        for index, (service, name) in enumerate(POLL_SPANS.items()):
            burst_since = self.bursts.get((service, name))
            offset = timedelta(minutes=index % self.config.poll_minutes, seconds=7 * index)
            for at in _grid(start, end, timedelta(minutes=self.config.poll_minutes), offset):
                if burst_since is not None and at > burst_since:
                    continue
                items.append(self._root(service, name, "client", at, (0.05, 1.5), {"job": name}))
        for (service, name), since in sorted(self.bursts.items()):
            for at in _grid(max(start, since), end, BURST_EVERY):
                self._burst_count[(service, name)] += 1
                failed = self._burst_count[(service, name)] % 2 == 1
                attrs: Attrs = {
                    "job": name,
                    "http.response.status_code": 503 if failed else 200,
                    "retry.attempt": self._burst_count[(service, name)],
                }
                error = "503 Service Unavailable from downstream" if failed else ""
                items.append(self._root(service, name, "client", at, (0.05, 2), attrs, error))
        return items

    def keeps(self, item: Item) -> bool:
        """False for anything a silent source would have sent."""
        since = self.silent_since.get(item.system)
        if since is None:
            return True
        first = item.start if isinstance(item, DemoSpan) else item.time
        return first <= since and item.at <= since


_ADJ = ("Steel", "Brass", "Nylon", "Copper", "Poly", "Heavy-duty", "Compact", "Insulated", "Galvanized", "Coated")
_NOUNS = ("Fitting", "Valve", "Bracket", "Hose", "Coupling", "Flange", "Gasket", "Conduit", "Fastener kit", "Pump")
_CUSTOMER_PREFIX = ("Lone Star", "Peachtree", "Sierra", "Gulf Coast", "Blue Ridge", "High Desert", "Prairie", "Summit")
_CUSTOMER_SUFFIX = ("Supply", "Builders", "Mechanical", "Plumbing", "Industrial", "Contractors", "Hardware")


def build_scenario(config: ScenarioConfig, clock: Clock) -> Scenario:
    """Generate the backfill ending at `clock.now()`: orders, inventory, spans, faults and the delivery plan."""
    now = _ms(clock.now().astimezone(UTC))
    start = now - timedelta(hours=config.history_hours)
    world = DemoWorld(config, now)
    rng = world.rng

    plans = [world.new_order(t) for t in _order_times(rng, config.orders, start, now)]
    faults: list[Fault] = []
    shortfall: dict[str, int] = {}
    plans = _inject_order_faults(world, plans, now, faults, shortfall)
    _choose_world_faults(world, now, start, faults, shortfall)

    items: list[Item] = []
    for plan in plans:
        items += world.render_order(plan)
    items += world.periodic(start, now)
    items = _calm_transient_errors(items, set(world.bursts), now)
    world.transient_errors = False  # the live phase adds no retried failures (nothing to re-check them)

    kept = [i for i in items if world.keeps(i)]
    backfill = sorted((i for i in kept if i.at <= now), key=_order_key)
    deferred = sorted((i for i in kept if i.at > now), key=_order_key)
    events = [i for i in backfill if isinstance(i, DemoEvent)]
    spans = [i for i in backfill if isinstance(i, DemoSpan)]

    deliveries = _delivery_plan(world, plans, backfill, now, faults, shortfall)
    cases, pending = _expected_cases(plans, events, now)
    _check_faults(faults, plans, now)
    return Scenario(
        config=config,
        now=now,
        start=start,
        orders=plans,
        events=events,
        spans=spans,
        deliveries=deliveries,
        faults=faults,
        pending=pending,
        cases=cases,
        shortfall=shortfall,
        silent_since=dict(world.silent_since),
        world=world,
        deferred=deferred,
    )


def _order_key(item: Item) -> tuple[datetime, int, str]:
    return (item.at, 0 if isinstance(item, DemoSpan) else 1, item.span_id if isinstance(item, DemoSpan) else item.id)


def _order_times(rng: random.Random, count: int, start: datetime, now: datetime) -> list[datetime]:
    """`count` creation times in the window, busier in Central business hours."""
    chicago = ZoneInfo("America/Chicago")
    span = (now - start).total_seconds()
    times: list[datetime] = []
    while len(times) < count:
        t = start + timedelta(seconds=rng.uniform(0, span))
        local = t.astimezone(chicago)
        weight = 1.0 if local.weekday() < 5 and 7 <= local.hour < 19 else 0.35
        if rng.random() < weight:
            times.append(t)
    return sorted(times)


def _decided(plan: OrderPlan, now: datetime) -> bool:
    """Every rule-relevant step of the order lies well before now (no pending case left)."""
    times = plan.rule_times()
    return not times or max(times) <= now - DECIDED_MARGIN


def _fmt(delta: timedelta) -> str:
    minutes = round(delta.total_seconds() / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _inject_order_faults(
    world: DemoWorld, plans: list[OrderPlan], now: datetime, faults: list[Fault], shortfall: dict[str, int]
) -> list[OrderPlan]:
    """Turn some happy orders into faulted ones; every faulted order is fully decided before now."""
    rng = world.rng
    config = world.config
    order = list(range(len(plans)))
    rng.shuffle(order)
    taken: set[int] = set()

    def pick(kind: str, make: Callable[[OrderPlan, int], tuple[OrderPlan, Fault] | None]) -> None:
        wanted = config.count(kind)
        for i in range(wanted):
            for index in order:
                if index in taken:
                    continue
                result = make(plans[index], i)
                if result is None:
                    continue
                plan, fault = result
                if not _decided(plan, now):
                    continue
                plans[index] = replace(plan, fault=kind)
                taken.add(index)
                faults.append(fault)
                break
            else:
                shortfall[kind] = wanted - i
                return

    def late_release(p: OrderPlan, i: int) -> tuple[OrderPlan, Fault] | None:
        due = p.accepted + RELEASE_WITHIN
        refs = {"order_id": p.order_id, "warehouse": p.warehouse.code}
        if i % 2 == 0:
            q = replace(p, release_after=RELEASE_WITHIN + world.between(20, 100))
            detail = f"released {_fmt(q.release_after)} after acceptance (limit 2h00m)"
            return q, Fault("late-release", "order-release", p.order_id, "late", detail, refs, due)
        if due > now - DECIDED_MARGIN:
            return None
        q = replace(p, missing=frozenset({"release"}))
        return q, Fault("late-release", "order-release", p.order_id, "breached", "accepted, never released", refs, due)

    def missed_cutoff(p: OrderPlan, i: int) -> tuple[OrderPlan, Fault] | None:
        released = p.released
        assert released is not None
        dues = [ship_cutoff_due(released, z) for z in cutoff_zones(p.warehouse)]
        due = ship_cutoff_due(released, p.warehouse.tz)
        refs = {"order_id": p.order_id, "warehouse": p.warehouse.code}
        if i % 2 == 0:
            ship_at = max(dues) + world.between(40, 240)
            q = replace(p, ship_after=ship_at - released)
            detail = f"released {iso(released)}, shipped {iso(ship_at)} after the cutoff deadline {iso(due)}"
            return q, Fault("missed-ship-cutoff", "ship-cutoff", p.order_id, "late", detail, refs, due)
        if max(dues) > now - DECIDED_MARGIN:
            return None
        q = replace(p, missing=frozenset({"ship"}))
        detail = f"released {iso(released)}, never shipped (deadline {iso(due)})"
        return q, Fault("missed-ship-cutoff", "ship-cutoff", p.order_id, "breached", detail, refs, due)

    def late_asn(p: OrderPlan, i: int) -> tuple[OrderPlan, Fault] | None:
        shipped = p.shipped
        assert shipped is not None
        refs = {"shipment_id": p.shipment_id, "order_id": p.order_id}
        if i % 2 == 0:
            q = replace(p, asn_after=ASN_WITHIN + world.between(15, 150))
            detail = f"ASN sent {_fmt(q.asn_after)} after shipment (limit 1h00m)"
            return q, Fault("late-asn", "asn-sent", p.shipment_id, "late", detail, refs, shipped + ASN_WITHIN)
        if shipped + ASN_WITHIN > now - DECIDED_MARGIN:
            return None
        q = replace(p, missing=frozenset({"asn"}))
        return q, Fault(
            "late-asn", "asn-sent", p.shipment_id, "breached", "shipped, no ASN", refs, shipped + ASN_WITHIN
        )

    def missing_invoice(p: OrderPlan, i: int) -> tuple[OrderPlan, Fault] | None:
        shipped = p.shipped
        assert shipped is not None
        if shipped + INVOICE_WITHIN > now - DECIDED_MARGIN:
            return None
        q = replace(p, missing=frozenset({"invoice"}))
        detail = f"shipped {iso(shipped)}, no invoice within 24h"
        refs = {"order_id": p.order_id, "shipment_id": p.shipment_id}
        return q, Fault(
            "missing-invoice", "invoice-posting", p.order_id, "breached", detail, refs, shipped + INVOICE_WITHIN
        )

    def mismatch(p: OrderPlan, i: int) -> tuple[OrderPlan, Fault] | None:
        refs = {"invoice_id": p.invoice_id, "order_id": p.order_id, "shipment_id": p.shipment_id}
        if i % 2 == 0:
            factor = 1 + rng.choice((-1, 1)) * rng.uniform(0.02, 0.08)
            cents = round(p.amount_cents * factor)
            detail = f"invoiced {cents / 100:.2f} USD, accepted {p.amount_cents / 100:.2f} USD"
            q = replace(p, invoice_amount_cents=cents)
        else:
            quantity = p.quantity + rng.choice((-2, -1, 1, 2)) if p.quantity > 2 else p.quantity + 1
            detail = f"invoiced {quantity} units, shipped {p.quantity}"
            q = replace(p, invoice_quantity=quantity)
        return q, Fault("invoice-mismatch", "invoice-match", p.invoice_id, "exception", detail, refs)

    pick("late-release", late_release)
    pick("missed-ship-cutoff", missed_cutoff)
    pick("late-asn", late_asn)
    pick("missing-invoice", missing_invoice)
    pick("invoice-mismatch", mismatch)
    return plans


def _choose_world_faults(
    world: DemoWorld, now: datetime, start: datetime, faults: list[Fault], shortfall: dict[str, int]
) -> None:
    """Inventory drift, error bursts and silent sources: they hold at now and go on in the live phase."""
    rng, config = world.rng, world.config
    step = timedelta(minutes=config.snapshot_minutes)
    runs = _grid(start, now, step)
    wanted = config.count("inventory-drift")
    pairs = sorted(world.inventory)
    if wanted and len(runs) >= 3:
        for sku, location in rng.sample(pairs, k=min(wanted, len(pairs))):
            since = rng.choice(runs[len(runs) // 2 : -1])
            delta = rng.choice((-1, 1)) * rng.randint(3, 12)
            world.drift[(sku, location)] = (since, delta)
            faults.append(
                Fault(
                    "inventory-drift",
                    "inventory-sync",
                    f"{sku}@{location}",
                    "exception",
                    f"WMS counts {delta:+d} units against the ERP since {iso(since)}",
                    {"sku": sku, "location": location},
                )
            )
            if delta < 0:  # the storefront sells the ERP's count: more than the WMS has
                faults.append(
                    Fault(
                        "inventory-drift",
                        "inventory-oversell",
                        f"{sku}@{location}",
                        "exception",
                        f"the storefront sells {-delta} units more than the WMS counts since {iso(since)}",
                        {"sku": sku, "location": location},
                    )
                )
        if wanted > len(pairs):
            shortfall["inventory-drift"] = wanted - len(pairs)
    elif wanted:
        shortfall["inventory-drift"] = wanted

    wanted = config.count("silent-source")
    for system in SILENT_CANDIDATES[:wanted]:
        since = now - timedelta(minutes=config.silence_minutes)
        world.silent_since[system] = since
        faults.append(
            Fault(
                "silent-source",
                "source-silence",
                system,
                "exception",
                f"no spans and no events since {iso(since)} ({config.silence_minutes} minutes)",
                {"source": system},
            )
        )
    if wanted > len(SILENT_CANDIDATES):
        shortfall["silent-source"] = wanted - len(SILENT_CANDIDATES)

    wanted = config.count("error-burst")
    # A silent source sends nothing, so its integrations cannot show a burst.
    series = [(svc, name) for svc, name in BURST_SERIES if SERVICES[svc] not in world.silent_since]
    for service, name in series[:wanted]:
        world.bursts[(service, name)] = now - ERROR_WINDOW
        spans = int(ERROR_WINDOW / BURST_EVERY)
        faults.append(
            Fault(
                "error-burst",
                "integration-errors",
                f"{service}|{name}",
                "exception",
                f"{spans} attempts in the last 15 minutes, every other one failing with 503 (50%)",
                {"service": service, "span_name": name},
            )
        )
    if wanted > len(series):
        shortfall["error-burst"] = wanted - len(series)


def error_windows_flag(spans: Iterable[DemoSpan]) -> bool:
    """True when some 15-minute stretch of these spans (one service and span name) holds at least 20 spans
    and more than 5% errors. Checks every contiguous run of spans, so it is at least as strict as any
    evaluation time the integration-errors rule may pick."""
    ordered = sorted((s.start, bool(s.error)) for s in spans)
    errors = [0]
    for _, failed in ordered:
        errors.append(errors[-1] + failed)
    last = 0
    for i, (first, _) in enumerate(ordered):
        last = max(last, i)
        while last + 1 < len(ordered) and ordered[last + 1][0] - first <= ERROR_WINDOW:
            last += 1
        for j in range(i + ERROR_MIN_SPANS - 1, last + 1):
            if (errors[j + 1] - errors[i]) * 20 > j - i + 1:
                return True
    return False


def _calm_transient_errors(items: list[Item], bursts: set[tuple[str, str]], now: datetime) -> list[Item]:
    """Drop failed attempts (the bursts excepted) where they could trip integration-errors: in any series
    where some 15-minute stretch would, and in the last 15 minutes before now or later, where live traffic
    not generated yet joins the window."""
    items = [
        i
        for i in items
        if not (
            isinstance(i, DemoSpan) and i.error and (i.service, i.name) not in bursts and i.start > now - ERROR_WINDOW
        )
    ]
    series: dict[tuple[str, str], list[DemoSpan]] = defaultdict(list)
    for item in items:
        if isinstance(item, DemoSpan):
            series[(item.service, item.name)].append(item)
    noisy = {key for key, spans in series.items() if key not in bursts and error_windows_flag(spans)}
    return [i for i in items if not (isinstance(i, DemoSpan) and i.error and (i.service, i.name) in noisy)]


def _happy_and_done(plan: OrderPlan, now: datetime) -> bool:
    return not plan.fault and plan.invoiced is not None and plan.asn is not None and _decided(plan, now)


def _delivery_plan(
    world: DemoWorld,
    plans: list[OrderPlan],
    backfill: list[Item],
    now: datetime,
    faults: list[Fault],
    shortfall: dict[str, int],
) -> list[Delivery]:
    """Deliveries of `chunk_minutes` of history each, in time order, with redeliveries and end-before-start
    deliveries woven in."""
    rng, config = world.rng, world.config
    by_key: dict[tuple[str, str], DemoEvent] = {}
    for item in backfill:
        if isinstance(item, DemoEvent):
            by_key.setdefault(
                (item.type, item.subject if item.type != "shipment.confirmed" else item.data["order_id"]), item
            )

    def event(kind: str, plan: OrderPlan) -> DemoEvent:
        subject = {
            "order.accepted": plan.order_id,
            "order.released": plan.order_id,
            "shipment.confirmed": plan.order_id,
            "asn.sent": plan.shipment_id,
            "invoice.posted": plan.invoice_id,
        }[kind]
        return by_key[(kind, subject)]

    happy = [p for p in plans if _happy_and_done(p, now)]
    rng.shuffle(happy)
    used = iter(happy)

    # (start type, end type, rule, key attribute) of end-before-start deliveries, in rotation.
    pairs = (
        ("order.accepted", "order.released", "order-release", "order_id"),
        ("shipment.confirmed", "asn.sent", "asn-sent", "shipment_id"),
        ("order.released", "shipment.confirmed", "ship-cutoff", "order_id"),
        ("shipment.confirmed", "invoice.posted", "invoice-posting", "order_id"),
    )
    out_of_order: list[tuple[DemoEvent, DemoEvent]] = []
    wanted = config.count("out-of-order-delivery")
    for i in range(wanted):
        plan = next(used, None)
        if plan is None:
            shortfall["out-of-order-delivery"] = wanted - i
            break
        start_type, end_type, rule, attr = pairs[i % len(pairs)]
        first, last = event(start_type, plan), event(end_type, plan)
        out_of_order.append((last, first))
        key = plan.order_id if attr == "order_id" else plan.shipment_id
        faults.append(
            Fault(
                "out-of-order-delivery",
                rule,
                key,
                "none",
                f"{end_type} ({last.id}) delivered before {start_type} ({first.id}); the case is met",
                {"order_id": plan.order_id, "end_event": last.id, "start_event": first.id},
            )
        )

    duplicates: list[Item] = []
    kinds = (
        ("order.accepted", "order-release"),
        ("shipment.confirmed", "asn-sent"),
        ("invoice.posted", "invoice-posting"),
        ("order.released", "ship-cutoff"),
        ("asn.sent", "asn-sent"),
    )
    wanted = config.count("duplicate-delivery")
    for i in range(wanted):
        plan = next(used, None)
        if plan is None:
            shortfall["duplicate-delivery"] = wanted - i
            break
        kind, rule = kinds[i % len(kinds)]
        again = event(kind, plan)
        duplicates.append(again)
        key = plan.shipment_id if rule == "asn-sent" else plan.order_id
        faults.append(
            Fault(
                "duplicate-delivery",
                rule,
                key,
                "none",
                f"{kind} {again.id} from {again.source} delivered twice",
                {"order_id": plan.order_id, "event_id": again.id},
            )
        )
    healthy = [s for s in backfill if isinstance(s, DemoSpan) and not s.error and s.name in RETRIED_SPANS]
    for span in rng.sample(healthy, k=min(len(healthy), wanted)):
        duplicates.append(span)
        faults.append(
            Fault(
                "duplicate-delivery",
                "",
                f"{span.trace_id}:{span.span_id}",
                "none",
                f"span {span.name!r} of {span.service} exported twice",
                {"trace_id": span.trace_id, "span_id": span.span_id, "service": span.service},
            )
        )

    hour = timedelta(minutes=config.chunk_minutes)
    moved = {end.id for end, _ in out_of_order}
    buckets: dict[datetime, list[Item]] = defaultdict(list)
    for item in backfill:
        if not (isinstance(item, DemoEvent) and item.id in moved):
            buckets[_floor(item.at, hour)].append(item)
    keys = sorted(buckets)
    early: dict[datetime, list[DemoEvent]] = defaultdict(list)
    for end, first in out_of_order:
        early[_floor(first.at, hour)].append(end)
    again_after: dict[datetime, list[Item]] = defaultdict(list)
    for item in duplicates:
        index = keys.index(_floor(item.at, hour))
        again_after[keys[min(len(keys) - 1, index + rng.randint(1, 3))]].append(item)

    deliveries: list[Delivery] = []
    for hour_at in keys:
        deliveries += [Delivery(hour_at, events=(end,), note="out-of-order") for end in early[hour_at]]
        chunk = buckets[hour_at]
        deliveries.append(
            Delivery(
                hour_at,
                events=tuple(i for i in chunk if isinstance(i, DemoEvent)),
                spans=tuple(i for i in chunk if isinstance(i, DemoSpan)),
            )
        )
        for item in again_after[hour_at]:
            if isinstance(item, DemoEvent):
                deliveries.append(Delivery(hour_at, events=(item,), note="duplicate"))
            else:
                deliveries.append(Delivery(hour_at, spans=(item,), note="duplicate"))
    return [d for d in deliveries if d.size]


def _expected_cases(
    plans: list[OrderPlan], events: list[DemoEvent], now: datetime
) -> tuple[dict[str, dict[str, int]], list[PendingCase]]:
    """Case counts per rule at now (by construction) and the cases still pending."""
    counts: dict[str, Counter[str]] = {rule: Counter() for rule in SLA_RULES}
    pending: list[PendingCase] = []

    def case(rule: str, key: str, begun: datetime | None, end: datetime | None, due: datetime) -> None:
        if begun is None or begun > now:
            return
        status = case_status(end, due, now)
        counts[rule][status] += 1
        if status == "pending":
            pending.append(PendingCase(rule, key, begun, due))

    for p in plans:
        case("order-release", p.order_id, p.accepted, p.released, p.accepted + RELEASE_WITHIN)
        if p.released is not None:
            due = ship_cutoff_due(p.released, p.warehouse.tz)
            case("ship-cutoff", p.order_id, p.released, p.shipped, due)
        if p.shipped is not None:
            case("asn-sent", p.shipment_id, p.shipped, p.asn, p.shipped + ASN_WITHIN)
            case("invoice-posting", p.order_id, p.shipped, p.invoiced, p.shipped + INVOICE_WITHIN)
    cases: dict[str, dict[str, int]] = {}
    for rule, counter in counts.items():
        cases[rule] = {"cases": sum(counter.values())} | {s: counter[s] for s in ("met", "late", "breached", "pending")}
    invoices = sum(1 for e in events if e.type == "invoice.posted")
    cases["invoice-match"] = {"cases": invoices}
    cases["inventory-sync"] = {"cases": len({e.subject for e in events if e.type == "inventory.snapshot"})}
    return cases, sorted(pending, key=lambda c: (c.rule, c.due_at, c.key))


def _check_faults(faults: list[Fault], plans: list[OrderPlan], now: datetime) -> None:
    """Guard against a generator bug: each SLA fault has exactly its expected status at now."""
    by_order = {p.order_id: p for p in plans}
    by_shipment = {p.shipment_id: p for p in plans}
    for f in faults:
        if f.rule not in SLA_RULES or f.expected == "none":
            continue
        p = by_shipment[f.key] if f.rule == "asn-sent" else by_order[f.key]
        ends = {"order-release": p.released, "ship-cutoff": p.shipped, "asn-sent": p.asn, "invoice-posting": p.invoiced}
        assert f.due_at is not None
        due = f.due_at
        if f.rule == "ship-cutoff" and p.released is not None:
            due = max(ship_cutoff_due(p.released, z) for z in cutoff_zones(p.warehouse))
        status = case_status(ends[f.rule], due, now)
        if status != f.expected:
            raise RuntimeError(f"demo generator bug: {f.fault} {f.key} is {status}, expected {f.expected}")


class LiveFeed:
    """The world after the backfill: deferred steps of earlier orders, new happy orders at `rate` per minute,
    inventory runs, polling jobs, the ongoing error burst; the silent source stays silent."""

    def __init__(self, scenario: Scenario, rate: float | None = None) -> None:
        self.world = scenario.world
        self.cursor = scenario.now
        self.interval = timedelta(minutes=1) / (rate or scenario.config.live_rate)
        self.next_order = scenario.now + self.interval
        self.orders = 0
        self._heap: list[tuple[datetime, int, Item]] = []
        self._seq = 0
        for item in scenario.deferred:
            self._push(item)

    def _push(self, item: Item) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (item.at, self._seq, item))

    def advance(self, until: datetime) -> Delivery | None:
        """Everything due in (cursor, until], as one delivery (None when nothing is due)."""
        if until <= self.cursor:
            return None
        world = self.world
        while self.next_order <= until:
            for item in world.render_order(world.new_order(self.next_order)):
                self._push(item)
            self.orders += 1
            self.next_order += self.interval
        for item in world.periodic(self.cursor, until):
            self._push(item)
        self.cursor = until
        due: list[Item] = []
        while self._heap and self._heap[0][0] <= until:
            item = heapq.heappop(self._heap)[2]
            if world.keeps(item):
                due.append(item)
        if not due:
            return None
        return Delivery(
            until,
            events=tuple(i for i in due if isinstance(i, DemoEvent)),
            spans=tuple(i for i in due if isinstance(i, DemoSpan)),
        )
