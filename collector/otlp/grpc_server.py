"""OTLP/gRPC receiver (placeholder until the OTLP door lands)."""

from __future__ import annotations

from typing import Any

from collector.service import IngestService
from kernel.settings import CollectorSettings


def start_grpc_server(service: IngestService, settings: CollectorSettings) -> Any:
    """Start the OTLP/gRPC server; returns the grpc.Server."""
    raise NotImplementedError
