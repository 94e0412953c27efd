"""The `reconcile` scheduled job: every reconciliation rule, every 5 minutes by default.

Registered by the composition root (`jobs.add("reconcile", reconcile_job(service), settings=
ReconcileJobSettings)`); set `TOWER_JOB_RECONCILE_ENABLED=false` to run reconciliations only when
asked (`tower reconcile`, `POST /api/reconcile/run`) and `TOWER_JOB_RECONCILE_INTERVAL_SECONDS` to
change how often they run.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from kernel.jobs import JobContext, JobFunction, JobSettings
from reconcilers.service import ReconcileService, summary


class ReconcileJobSettings(JobSettings):
    """The `reconcile` job (TOWER_JOB_RECONCILE_*)."""

    model_config = SettingsConfigDict(env_prefix="TOWER_JOB_RECONCILE_")

    enabled: bool = Field(True, description="Run every reconciliation rule on a schedule.")
    interval_seconds: float = Field(300.0, gt=0, description="Seconds between reconciliation runs (default 5 min).")


class ReconcileFailed(RuntimeError):
    """At least one rule's run failed; every rule still ran and each run is recorded."""


def reconcile_job(service: ReconcileService) -> JobFunction:
    """The job function running every rule of `service`."""

    def reconcile(context: JobContext) -> dict[str, Any]:
        """Run every reconciliation rule: compare, open/resolve/reopen exceptions, record the runs."""
        records = service.run(trigger="schedule")
        totals = dict(summary(records))
        if totals["opened"] or totals["resolved"] or totals["reopened"]:
            context.log.info(
                "reconciled: %d opened, %d resolved, %d reopened",
                totals["opened"],
                totals["resolved"],
                totals["reopened"],
            )
        if totals["errors"]:
            raise ReconcileFailed("; ".join(totals["errors"]))
        return totals

    return reconcile
