"""CloudEvents receiver (placeholder until the CloudEvents door lands)."""

from __future__ import annotations

from fastapi import APIRouter

from collector.service import IngestService

router = APIRouter(tags=["events"])


def register_replayers(service: IngestService) -> None:
    """Register the events door's dead-letter replayer."""
