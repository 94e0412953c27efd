"""The API routes of the control tower (exceptions, SLA, timelines)."""

from fastapi import APIRouter

router = APIRouter()
