"""Runs as records: every reconciliation run of every rule is a row of `recon_runs`.

A run is written when it starts (`running`) and again when it ends (`ok` or `error`, with the
error); the table is a ReplacingMergeTree on the run id, so the last word wins. A run that never
ended (the process died) stays `running`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from kernel.store import Store
from reconcilers.sql import parse_time

COLUMNS = (
    "run_id, rule, compare, trigger, status, started_at, finished_at, rows_compared, findings, opened, resolved,"
    " reopened, duration_ms, error, details"
)


@dataclass
class RunRecord:
    """One run of one rule: when, what it compared, what it changed, how long it took, how it ended."""

    run_id: str
    rule: str
    compare: str
    trigger: str  # schedule, api, cli
    started_at: datetime
    status: str = "running"  # running, ok, error
    finished_at: datetime | None = None
    rows_compared: int = 0
    findings: int = 0  # subjects differing at the end of the run
    opened: int = 0
    resolved: int = 0
    reopened: int = 0
    duration_ms: float = 0.0
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # per finding rule: counts, ids; phases: ms

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "run_id": self.run_id,
            "rule": self.rule,
            "compare": self.compare,
            "trigger": self.trigger,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "rows_compared": self.rows_compared,
            "findings": self.findings,
            "opened": self.opened,
            "resolved": self.resolved,
            "reopened": self.reopened,
            "duration_ms": round(self.duration_ms, 3),
            "error": self.error,
            "details": self.details,
        }

    def row(self, version: int) -> dict[str, Any]:
        """The `recon_runs` row."""
        row = self.as_dict()
        row["details"] = orjson.dumps(self.details, default=str).decode()
        row["version"] = version
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunRecord:
        """A record from a `recon_runs` row."""
        started = parse_time(row["started_at"])
        assert started is not None
        return cls(
            run_id=row["run_id"],
            rule=row["rule"],
            compare=row["compare"],
            trigger=row["trigger"],
            started_at=started,
            status=row["status"],
            finished_at=parse_time(row["finished_at"]),
            rows_compared=int(row["rows_compared"]),
            findings=int(row["findings"]),
            opened=int(row["opened"]),
            resolved=int(row["resolved"]),
            reopened=int(row["reopened"]),
            duration_ms=float(row["duration_ms"]),
            error=row["error"],
            details=orjson.loads(row["details"] or "{}"),
        )


class RunLog:
    """Reads and writes `recon_runs`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._last_version = 0

    def _version(self) -> int:
        self._last_version = max(self._last_version + 1, time.time_ns())
        return self._last_version

    def write(self, record: RunRecord) -> None:
        """Insert the record's current state (a new version of its row)."""
        self.store.insert("recon_runs", [record.row(self._version())])

    def list(self, rule: str | None = None, status: str | None = None, limit: int = 50) -> list[RunRecord]:
        """Runs, newest first; only those of `rule` / with `status` when given."""
        clauses: list[str] = []
        params: dict[str, Any] = {"limit": limit}
        if rule:
            clauses.append("rule = {rule:String}")
            params["rule"] = rule
        if status:
            clauses.append("status = {status:String}")
            params["status"] = status
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM recon_runs FINAL {where} ORDER BY started_at DESC, version DESC"
            " LIMIT {limit:UInt32}",
            params,
        )
        return [RunRecord.from_row(row) for row in rows]

    def get(self, run_id: str) -> RunRecord | None:
        """One run by id."""
        rows = self.store.query(f"SELECT {COLUMNS} FROM recon_runs FINAL WHERE run_id = {{id:String}}", {"id": run_id})
        return RunRecord.from_row(rows[0]) if rows else None
