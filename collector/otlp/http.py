"""OTLP/HTTP receiver (placeholder until the OTLP door lands)."""

from __future__ import annotations

from fastapi import APIRouter

from collector.service import IngestService
from kernel.settings import CollectorSettings

router = APIRouter(tags=["otlp"])


def register_replayers(service: IngestService, settings: CollectorSettings) -> None:
    """Register the OTLP doors' dead-letter replayers."""
