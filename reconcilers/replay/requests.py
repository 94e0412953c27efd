"""Replay requests as records: the `replay_requests` table (one row per version, the latest wins).

A request's id is its idempotency key: a hash of the source, the keys and the time range, so the same
thing asked twice (by a person, by the policy, by a job run twice) finds the same record. A request asked
again after it failed or escalated is round 2, 3, ... of that thing, under a key derived from the first
(`round_key`), so two towers asking again at once still write one request.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from kernel.queries import PAGE, page
from kernel.store import Store
from kernel.store.base import utc_text

Status = Literal["requested", "sent", "failed", "satisfied", "escalated"]
STATUSES: tuple[Status, ...] = ("requested", "sent", "failed", "satisfied", "escalated")
# requested: waiting to be sent (first call or a retry); sent: the webhook accepted it, events awaited;
# failed: the webhook refused it or never answered within the attempts; satisfied: the replayed events
# arrived and the exceptions were resolved; escalated: they did not arrive in time.
OPEN_STATUSES: tuple[Status, ...] = ("requested", "sent")
AGAIN_STATUSES: tuple[Status, ...] = ("failed", "escalated")  # the statuses a request may be asked again from
# detail fields that link the rounds of one thing; kept when a request's detail is rewritten
CHAIN_FIELDS = ("round", "supersedes", "superseded_by")

COLUMNS = (
    "id, exception_ids, rule, source, webhook_source, keys, range_from, range_to, reason, status, requested_by, "
    "requested_at, attempts, next_attempt_at, sent_at, wait_until, expected_events, closed_at, body, responses, "
    "detail, updated_at, version"
)


def iso(value: datetime) -> str:
    """RFC 3339 UTC with microseconds: `2026-11-02T15:00:00.000000Z` (the form requests and hashes use)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def idempotency_key(source: str, keys: list[str], since: datetime, until: datetime) -> str:
    """The id of a replay: SHA-256 of source, sorted keys and range [since, until), 32 hex characters."""
    material = orjson.dumps([source, sorted(set(keys)), iso(since), iso(until)])
    return hashlib.sha256(material).hexdigest()[:32]


def round_key(first: str, number: int) -> str:
    """The id of round `number` of the request whose first round has id `first` (round 1 is `first` itself)."""
    if number <= 1:
        return first
    return hashlib.sha256(orjson.dumps([first, number])).hexdigest()[:32]


@dataclass(frozen=True)
class ReplayRequest:
    """One replay request and where it stands."""

    id: str
    exception_ids: list[str]
    rule: str
    source: str
    webhook_source: str
    keys: list[str]
    range_from: str
    range_to: str
    reason: str
    status: str
    requested_by: str
    requested_at: str
    attempts: int = 0
    next_attempt_at: str | None = None
    sent_at: str | None = None
    wait_until: str | None = None
    expected_events: int | None = None
    closed_at: str | None = None
    body: str = ""
    responses: list[dict[str, Any]] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    updated_at: str = ""
    version: int = 0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ReplayRequest:
        """A record from a `replay_requests` row."""
        data = dict(row)
        data["responses"] = orjson.loads(data["responses"] or "[]")
        data["detail"] = orjson.loads(data["detail"] or "{}")
        data["attempts"] = int(data["attempts"])
        data["version"] = int(data["version"])
        if data["expected_events"] is not None:
            data["expected_events"] = int(data["expected_events"])
        return cls(**data)

    def to_row(self) -> dict[str, Any]:
        """The `replay_requests` row of this version."""
        row = {name: getattr(self, name) for name in COLUMNS.split(", ")}
        row["responses"] = orjson.dumps(self.responses).decode()
        row["detail"] = orjson.dumps(self.detail, default=str).decode()
        return row


class ReplayRequests:
    """Reads and writes replay requests; each save is a new version (ReplacingMergeTree, read with FINAL)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._last_version = 0

    def _version(self) -> int:
        # monotonic within the process even when a fixed clock stands still
        with self._lock:
            self._last_version = max(self._last_version + 1, time.time_ns())
            return self._last_version

    def save(self, record: ReplayRequest, now: datetime) -> ReplayRequest:
        """Write `record` as the latest version and return it as written."""
        saved = replace(record, updated_at=utc_text(now), version=self._version())
        self.store.insert("replay_requests", [saved.to_row()])
        return saved

    def get(self, replay_id: str) -> ReplayRequest | None:
        """The request with that id (its idempotency key), if any."""
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM replay_requests FINAL WHERE id = {{id:String}}", {"id": replay_id}
        )
        return ReplayRequest.from_row(rows[0]) if rows else None

    def latest(self, first: str) -> ReplayRequest | None:
        """The last round of the request whose first round has id `first` (None when it was never asked)."""
        found = self.get(first)
        number = 1
        while found is not None:
            following = self.get(round_key(first, number + 1))
            if following is None:
                return found
            found, number = following, number + 1
        return None

    def for_exception(self, exception_id: str) -> list[ReplayRequest]:
        """Every request made for an exception, oldest first."""
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM replay_requests FINAL WHERE has(exception_ids, {{id:String}})"
            " ORDER BY requested_at, id",
            {"id": exception_id},
        )
        return [ReplayRequest.from_row(r) for r in rows]

    def exceptions_with_requests(self, exception_ids: list[str]) -> set[str]:
        """Which of these exceptions already have a replay request (any status)."""
        if not exception_ids:
            return set()
        rows = self.store.query(
            "SELECT DISTINCT arrayJoin(exception_ids) AS exception_id FROM replay_requests FINAL"
            " WHERE hasAny(exception_ids, {ids:Array(String)})",
            {"ids": exception_ids},
        )
        return {str(r["exception_id"]) for r in rows} & set(exception_ids)

    def due(self, now: datetime) -> list[ReplayRequest]:
        """Requests waiting to be sent whose next attempt is due at `now`, oldest first."""
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM replay_requests FINAL WHERE status = 'requested'"
            " AND next_attempt_at <= {now:DateTime64(6, 'UTC')} ORDER BY next_attempt_at, id",
            {"now": utc_text(now)},
        )
        return [ReplayRequest.from_row(r) for r in rows]

    def waiting(self) -> list[ReplayRequest]:
        """Requests the webhook accepted whose events are awaited."""
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM replay_requests FINAL WHERE status = 'sent' ORDER BY sent_at, id"
        )
        return [ReplayRequest.from_row(r) for r in rows]

    def search(
        self,
        status: str | None = None,
        source: str | None = None,
        exception_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[ReplayRequest], int]:
        """A page of requests, newest first, and how many match; empty filters do not filter."""
        where = (
            "WHERE ({status:String} = '' OR status = {status:String})"
            " AND ({source:String} = '' OR source = {source:String} OR startsWith(source, {prefix:String}))"
            " AND ({exception_id:String} = '' OR has(exception_ids, {exception_id:String}))"
        )
        params: dict[str, Any] = {
            "status": status or "",
            "source": source or "",
            "prefix": f"{source}/" if source else "",
            "exception_id": exception_id or "",
        }
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM replay_requests FINAL {where} ORDER BY requested_at DESC, id{PAGE}",
            {**params, **page(limit, offset)},
        )
        total = self.store.query(f"SELECT count() AS n FROM replay_requests FINAL {where}", params)[0]["n"]
        return [ReplayRequest.from_row(r) for r in rows], int(total)
