"""Factories for test data: events, settings, tokens. Tests build what they need from these."""

from __future__ import annotations

import itertools
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kernel.model.events import SOURCE_SYSTEMS, validate_event
from kernel.settings import (
    ApiSettings,
    CollectorSettings,
    IngestSettings,
    Settings,
    StoreSettings,
    TelemetrySettings,
)

_seq = itertools.count(1)
BASE_TIME = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)

DEFAULT_DATA: dict[str, dict[str, Any]] = {
    "order.created": {"order_id": "SO-{n}", "customer_id": "C-{n}", "amount": 120.5, "currency": "USD"},
    "order.accepted": {
        "order_id": "SO-{n}",
        "customer_id": "C-{n}",
        "amount": 120.5,
        "currency": "USD",
        "warehouse": "DAL",
    },
    "order.released": {"order_id": "SO-{n}", "warehouse": "DAL"},
    "shipment.confirmed": {"order_id": "SO-{n}", "shipment_id": "SH-{n}", "quantity": 3, "warehouse": "DAL"},
    "asn.sent": {"shipment_id": "SH-{n}", "order_id": "SO-{n}"},
    "shipment.delivered": {"shipment_id": "SH-{n}", "order_id": "SO-{n}"},
    "invoice.posted": {
        "invoice_id": "IN-{n}",
        "order_id": "SO-{n}",
        "shipment_id": "SH-{n}",
        "amount": 120.5,
        "currency": "USD",
        "quantity": 3,
    },
    "inventory.snapshot": {"sku": "SKU-{n}", "location": "DAL-A1", "quantity": 10},
}

DEFAULT_SOURCE = {
    "order.created": "ecommerce",
    "order.accepted": "erp",
    "order.released": "erp",
    "shipment.confirmed": "wms",
    "asn.sent": "edi",
    "shipment.delivered": "tms",
    "invoice.posted": "erp",
    "inventory.snapshot": "erp",
}


def make_event(event_type: str = "order.accepted", n: int | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid structured CloudEvent of `event_type`; keyword arguments replace attributes."""
    n = n if n is not None else next(_seq)
    data = {k: (v.format(n=n) if isinstance(v, str) else v) for k, v in DEFAULT_DATA.get(event_type, {}).items()}
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"evt-{event_type}-{n}-{secrets.token_hex(4)}",
        "source": DEFAULT_SOURCE.get(event_type, "erp"),
        "type": event_type,
        "time": (BASE_TIME + timedelta(minutes=n)).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data,
    }
    if "data" in overrides and isinstance(overrides["data"], dict) and overrides.pop("merge_data", True):
        event["data"].update(overrides.pop("data"))
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not ...}


def make_tokens() -> dict[str, list[str]]:
    """One random ingest token per source system."""
    return {f"test-{system}-{secrets.token_hex(12)}": [system] for system in SOURCE_SYSTEMS}


def token_of(tokens: dict[str, list[str]], system: str) -> str:
    return next(t for t, s in tokens.items() if system in s)


def make_settings(data_dir: Path, http_port: int = 0, grpc_port: int = 0, **collector: Any) -> Settings:
    """Settings for a test tower in `data_dir` with fresh random tokens."""
    return Settings(
        store=StoreSettings(backend="embedded", data_dir=data_dir),
        collector=CollectorSettings(host="127.0.0.1", http_port=http_port, grpc_port=grpc_port, **collector),
        ingest=IngestSettings(tokens=make_tokens()),
        api=ApiSettings(
            tokens={f"admin-{secrets.token_hex(12)}": "admin", f"viewer-{secrets.token_hex(12)}": "viewer"}
        ),
        telemetry=TelemetrySettings(exporter="none"),
    )


def api_token(settings: Settings, role: str) -> str:
    return next(t for t, r in settings.api.tokens.items() if r == role)


RECEIVED = datetime(2026, 11, 2, 18, 0, tzinfo=UTC)


def event_row(raw: dict[str, Any], received_at: datetime = RECEIVED) -> dict[str, Any]:
    """The business_events row the collector stores for a raw CloudEvent."""
    event, problems = validate_event(raw)
    assert event is not None, problems
    return event.to_row("events", received_at)


def span_row(
    trace_id: str,
    span_id: str,
    at: datetime,
    service: str = "wms",
    name: str = "wms.pick",
    status: str = "Unset",
    **attributes: str,
) -> dict[str, Any]:
    """An otel_traces row as the OpenTelemetry exporter's schema has it."""
    return {
        "Timestamp": at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
        "TraceId": trace_id,
        "SpanId": span_id,
        "ParentSpanId": "",
        "TraceState": "",
        "SpanName": name,
        "SpanKind": "Server",
        "ServiceName": service,
        "ResourceAttributes": {"service.name": service},
        "ScopeName": "test",
        "ScopeVersion": "",
        "SpanAttributes": {k.replace("_", "."): v for k, v in attributes.items()},
        "Duration": 1_500_000,
        "StatusCode": status,
        "StatusMessage": "",
        "Events.Timestamp": [],
        "Events.Name": [],
        "Events.Attributes": [],
        "Links.TraceId": [],
        "Links.SpanId": [],
        "Links.TraceState": [],
        "Links.Attributes": [],
    }


def rule_mapping(rule_id: str = "release-in-2h", **overrides: Any) -> dict[str, Any]:
    """A rule file's mapping for an SLA rule (release within 2 hours of acceptance); keywords replace fields."""
    rule: dict[str, Any] = {
        "id": rule_id,
        "title": "Released within two hours",
        "kind": "business",
        "owner": "customer_service",
        "key": "order_id",
        "start": {"types": ["order.accepted"]},
        "end": {"types": ["order.released"]},
        "deadline": {"after": "2h"},
        "warning": "30m",
    }
    rule.update(overrides)
    return rule


def settings_with_every_role(*args: Any, **kwargs: Any) -> Settings:
    """`make_settings` with one API token per role (viewer, operator, finance, admin)."""
    settings = make_settings(*args, **kwargs)
    settings.api.tokens = {
        f"{role}-{secrets.token_hex(12)}": role for role in ("viewer", "operator", "finance", "admin")
    }
    return settings


def case_row(
    rule: str,
    key: str,
    started_at: datetime,
    due_at: datetime,
    status: str,
    ended_at: datetime | None = None,
    customer_id: str = "",
    warehouse: str = "",
    version: int = 1,
) -> dict[str, Any]:
    """An sla_cases row as the SLA engine stores one (times as stored UTC text)."""
    return {
        "rule": rule,
        "key": key,
        "started_at": started_at,
        "ended_at": ended_at,
        "due_at": due_at,
        "status": status,
        "customer_id": customer_id,
        "warehouse": warehouse,
        "source": "erp",
        "evaluated_at": due_at,
        "version": version,
    }
