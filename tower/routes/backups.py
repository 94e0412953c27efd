"""Backups of the embedded store (kernel/backups.py): start one, list them, follow one (`tower backup` polls it).

Admin only: a backup holds every record of the tower. A tower on a ClickHouse server answers 409: its backups are
made on the server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from kernel.api_auth import AUTH_RESPONSES, AdminDep, ApiError
from kernel.backups import Backup, BackupError, Backups

router = APIRouter(prefix="/api/backups", tags=["backups"], responses=AUTH_RESPONSES)

UNSUPPORTED: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ApiError,
        "description": "The tower's store is a ClickHouse server (back it up there), or the backups folder cannot"
        " be written.",
    }
}


def get_backups(request: Request) -> Backups:
    """The backups of the tower's store, named on the tower's clock; 409 when the store takes none here."""
    tower = request.app.state.tower
    backups = Backups(tower.store, tower.clock)
    if not backups.supported:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "backups of a ClickHouse server are made on the server (its `backups` configuration, or"
            " clickhouse-backup); the tower backs up its embedded store only",
        )
    return backups


BackupsDep = Annotated[Backups, Depends(get_backups)]


class BackupOut(BaseModel):
    """One backup of the store."""

    name: str = Field(description="The backup's name: when it started, UTC (`20261127T090000Z`).")
    path: str = Field(description="Its folder on the tower's host (give it to `tower restore`).")
    status: str = Field(
        description="`creating`, `created`, `failed`, or `incomplete` (no end marker: the process taking it stopped)."
    )
    started_at: datetime | None = Field(description="When it started (backups taken by this process).")
    finished_at: datetime | None = Field(description="When it finished.")
    files: int = Field(description="Files it holds (so far, while creating).")
    bytes: int = Field(description="Bytes it holds (so far, while creating).")
    error: str = Field(description="Why it failed, when it did.")

    @classmethod
    def of(cls, backup: Backup) -> BackupOut:
        return cls(**backup.__dict__)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start a backup of the store",
    description="Roles: admin. Answers at once; follow it with GET /api/backups/{name}.",
    responses=UNSUPPORTED,
)
def start_backup(_: AdminDep, backups: BackupsDep) -> BackupOut:
    try:
        return BackupOut.of(backups.start())
    except BackupError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc


@router.get("", summary="List the store's backups, newest first", description="Roles: admin.", responses=UNSUPPORTED)
def list_backups(_: AdminDep, backups: BackupsDep) -> list[BackupOut]:
    return [BackupOut.of(b) for b in backups.list()]


@router.get(
    "/{name}",
    summary="One backup and its progress",
    description="Roles: admin.",
    responses={**UNSUPPORTED, 404: {"model": ApiError, "description": "No backup has that name."}},
)
def get_backup(_: AdminDep, backups: BackupsDep, name: str) -> BackupOut:
    found = backups.status(name)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no backup named {name!r}")
    return BackupOut.of(found)
