"""The API routes of the control tower: exceptions, SLA, timelines (`router` includes them all)."""

from fastapi import APIRouter

from tower.routes import alerts_delivery, backups, exceptions, overview, replay, reports, silences, sla, slack, timeline
from tower.routes import reconcile as reconcile_routes
from tower.routes.sla_runs import router as sla_runs_router

router = APIRouter()
router.include_router(exceptions.router)
router.include_router(backups.router)
router.include_router(sla.router)
router.include_router(sla_runs_router)
router.include_router(timeline.router)
router.include_router(replay.router)
router.include_router(overview.router)
router.include_router(reports.router)
router.include_router(alerts_delivery.router)
router.include_router(silences.router)
router.include_router(slack.router)
router.include_router(reconcile_routes.router)
