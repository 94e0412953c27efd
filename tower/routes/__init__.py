"""The API routes of the control tower: exceptions, SLA, timelines (`router` includes them all)."""

from fastapi import APIRouter

from tower.routes import exceptions, sla, timeline

router = APIRouter()
router.include_router(exceptions.router)
router.include_router(sla.router)
router.include_router(timeline.router)
