"""Process roles: the same code runs as one process that does everything, or as separate processes.

| role | serves | runs jobs |
| --- | --- | --- |
| `all` (default) | the doors (OTLP/HTTP, OTLP/gRPC, CloudEvents), the API, health | yes |
| `collector` | the doors and health; stateless, as many replicas as the load needs | no |
| `scheduler` | health only (`/healthz`, `/readyz` with the lease) | yes, while it holds the lease |
| `api` | the API (`/api`, `/docs`) and health | no |

Roles other than `all` share one database, so they need the server backend: only one process can
open an embedded data directory. With the server backend the scheduler (in `scheduler` and `all`
processes) runs its jobs only while it holds the lease in the store (kernel/lease.py), so a second
scheduler waits as a standby.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.clock import Clock
from kernel.lease import Lease, LeaseSettings
from kernel.settings import Settings
from kernel.store import Store

ProcessRole = Literal["all", "collector", "scheduler", "api"]
ROLES: tuple[str, ...] = get_args(ProcessRole)


class RoleSettings(BaseSettings):
    """Which part of the tower this process runs (TOWER_ROLE; `tower serve --role` overrides it)."""

    model_config = SettingsConfigDict(env_prefix="TOWER_")

    role: ProcessRole = Field(
        "all",
        description="`all` (one process: doors, API, jobs), `collector` (the doors), `scheduler` (the jobs) or `api`."
        " Roles other than `all` need TOWER_STORE_BACKEND=server.",
    )


@dataclass(frozen=True)
class RolePlan:
    """What a process of one role serves and runs."""

    role: str
    doors: bool  # OTLP/HTTP, OTLP/gRPC, CloudEvents
    api: bool  # /api and the OpenAPI document
    jobs: bool  # the scheduler (SLA engine, reconcilers, alert sender, ...)
    maintains_schema: bool  # applies retention (TTL) settings on start; migrations run in every role


PLANS: dict[str, RolePlan] = {
    "all": RolePlan("all", doors=True, api=True, jobs=True, maintains_schema=True),
    "collector": RolePlan("collector", doors=True, api=False, jobs=False, maintains_schema=False),
    "scheduler": RolePlan("scheduler", doors=False, api=False, jobs=True, maintains_schema=True),
    "api": RolePlan("api", doors=False, api=True, jobs=False, maintains_schema=False),
}


class RoleError(ValueError):
    """A role this configuration cannot run (an unknown role, or a split role on the embedded store)."""


def plan_for(role: str) -> RolePlan:
    """The plan of `role`; RoleError names the roles when it is unknown."""
    try:
        return PLANS[role]
    except KeyError:
        raise RoleError(f"unknown role {role!r}; roles are {', '.join(ROLES)}") from None


def check_role(role: str, settings: Settings) -> RolePlan:
    """The role's plan, checked before anything opens: a split role needs the server backend, and the tokens of
    what it serves configured (replicas must share them; only `all` generates first-run tokens)."""
    plan = plan_for(role)
    store = settings.store
    if role != "all" and store.backend != "server":
        raise RoleError(
            f"--role {role} needs a ClickHouse server shared by every process: set TOWER_STORE_BACKEND=server and"
            " TOWER_STORE_URL=http://user:password@host:8123 (only one process can open the embedded data"
            " directory; run `tower serve` with the default role `all` to use it)"
        )
    if role != "all" and not store.url:
        raise RoleError(f"--role {role}: TOWER_STORE_URL is required with TOWER_STORE_BACKEND=server")
    if role != "all" and plan.doors and not settings.ingest.tokens:
        raise RoleError(
            f"--role {role} needs TOWER_INGEST_TOKENS (every collector replica must accept the same tokens)"
        )
    if role != "all" and plan.api and not settings.api.tokens:
        raise RoleError(f"--role {role} needs TOWER_API_TOKENS (every API replica must accept the same tokens)")
    return plan


def scheduler_lease(store: Store, clock: Clock, settings: LeaseSettings | None = None) -> Lease | None:
    """The lease the scheduler runs under: on the server backend (or TOWER_LEASE_MODE=always), None when the
    embedded data directory already makes this process the only one (or TOWER_LEASE_MODE=never)."""
    settings = settings or LeaseSettings()
    if settings.mode == "never" or (settings.mode == "auto" and store.backend != "server"):
        return None
    return Lease(store, clock, settings)
