"""What alerting decided and did for each exception, per digest, and where it is in the change feed.

- `alert_state`, one row per exception (latest version wins): the decision (posted, digest,
  silenced, window, held, unrouted, quiet) and why (a silence id, a window name, the technical
  exception that holds it back, ...), the channels it was posted to, escalation progress, the
  last change-feed sequence handled, and a revision counter that names its message updates.
  The dashboard can show why an exception was not alerted from here.
- `alert_digests`: one row per digest (a burst of one owner and rule).
- `alert_cursors`: the dispatcher's position in the change feed (exception_audit.seq).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from alerting.outbox import versions
from kernel.store import Store
from kernel.store.base import stored_time_or_none, utc_text

Decision = Literal["posted", "digest", "silenced", "window", "held", "unrouted", "quiet"]
HELD_BACK: tuple[Decision, ...] = ("silenced", "window", "held", "unrouted")
"""Decisions that keep an exception's alert back for now; each run looks at them again."""

_STATE_COLUMNS = (
    "exception_id, decision, reason, channels, group_key, digest_id, decided_at, alerted_at, notified_at, "
    "repeats, escalated, revision, held, last_seq, active, version"
)
_DIGEST_COLUMNS = (
    "id, group_key, owner, rule, severity, channels, started_at, count, keys, revision, notified_at, repeats, "
    "escalated, active, version"
)


_EPOCH = "1970-01-01 00:00:00.000000"


@dataclass(frozen=True)
class AlertState:
    """What alerting decided and did for one exception."""

    exception_id: str
    decision: Decision
    reason: str = ""
    channels: tuple[str, ...] = ()
    group_key: str = ""
    digest_id: str = ""
    decided_at: datetime | None = None
    alerted_at: datetime | None = None  # first posted or put in a digest
    notified_at: datetime | None = None  # last alerted or re-notified (the repeat interval counts from it)
    repeats: int = 0
    escalated: bool = False
    revision: int = 0  # message updates enqueued; names the next update's key
    held: int = 0  # technical exceptions: business exceptions held back, as the message last said
    last_seq: int = 0  # the last change-feed sequence handled
    active: bool = True  # False once the exception is resolved and that was handled

    def with_(self, **changes: Any) -> AlertState:
        """A copy with `changes`."""
        return replace(self, **changes)


@dataclass(frozen=True)
class Digest:
    """One digest message: a burst of exceptions of one owner and rule, to the same channels."""

    id: str
    group_key: str
    owner: str
    rule: str
    severity: str
    channels: tuple[str, ...]
    started_at: datetime
    count: int
    keys: tuple[str, ...]
    revision: int = 0
    notified_at: datetime | None = None
    repeats: int = 0
    escalated: bool = False
    active: bool = True
    exception_ids: list[str] = field(default_factory=list, compare=False)  # members added in this run

    def with_(self, **changes: Any) -> Digest:
        """A copy with `changes`."""
        return replace(self, **changes)


def _state(row: dict[str, Any]) -> AlertState:
    return AlertState(
        exception_id=row["exception_id"],
        decision=row["decision"],
        reason=row["reason"],
        channels=tuple(row["channels"]),
        group_key=row["group_key"],
        digest_id=row["digest_id"],
        decided_at=stored_time_or_none(row["decided_at"]),
        alerted_at=stored_time_or_none(row["alerted_at"]),
        notified_at=stored_time_or_none(row["notified_at"]),
        repeats=int(row["repeats"]),
        escalated=bool(row["escalated"]),
        revision=int(row["revision"]),
        held=int(row["held"]),
        last_seq=int(row["last_seq"]),
        active=bool(row["active"]),
    )


def _digest(row: dict[str, Any]) -> Digest:
    notified = stored_time_or_none(row["notified_at"])
    started = stored_time_or_none(row["started_at"])
    assert started is not None
    return Digest(
        id=row["id"],
        group_key=row["group_key"],
        owner=row["owner"],
        rule=row["rule"],
        severity=row["severity"],
        channels=tuple(row["channels"]),
        started_at=started,
        count=int(row["count"]),
        keys=tuple(row["keys"]),
        revision=int(row["revision"]),
        notified_at=notified,
        repeats=int(row["repeats"]),
        escalated=bool(row["escalated"]),
        active=bool(row["active"]),
    )


def _time(value: datetime | None) -> str | None:
    return None if value is None else utc_text(value)


class PolicyStore:
    """Reads and writes alert states, digests and the feed cursor."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # states

    def states(self, exception_ids: Iterable[str]) -> dict[str, AlertState]:
        """The states of these exceptions (those never seen are left out)."""
        ids = sorted(set(exception_ids))
        if not ids:
            return {}
        rows = self.store.query(
            f"SELECT {_STATE_COLUMNS} FROM alert_state FINAL WHERE exception_id IN {{ids:Array(String)}}",
            {"ids": ids},
        )
        return {r["exception_id"]: _state(r) for r in rows}

    def active_states(self, decisions: Sequence[Decision]) -> list[AlertState]:
        """Active states with one of these decisions."""
        rows = self.store.query(
            f"SELECT {_STATE_COLUMNS} FROM alert_state FINAL"
            " WHERE active = 1 AND decision IN {decisions:Array(String)} ORDER BY decided_at, exception_id",
            {"decisions": list(decisions)},
        )
        return [_state(r) for r in rows]

    def alerted_since(self, group_keys: Iterable[str], since: datetime) -> dict[str, int]:
        """Per group key, exceptions alerted (posted or digested) at or after `since`."""
        keys = sorted(set(group_keys))
        if not keys:
            return {}
        rows = self.store.query(
            "SELECT group_key, count() AS n FROM alert_state FINAL"
            " WHERE group_key IN {keys:Array(String)} AND decision IN ('posted', 'digest')"
            " AND alerted_at >= {since:DateTime64(6, 'UTC')} GROUP BY group_key",
            {"keys": keys, "since": since},
        )
        return {r["group_key"]: int(r["n"]) for r in rows}

    def held_counts(self) -> dict[str, int]:
        """Per technical exception id, the active business exceptions it holds back."""
        rows = self.store.query(
            "SELECT reason, count() AS n FROM alert_state FINAL WHERE active = 1 AND decision = 'held' GROUP BY reason"
        )
        return {r["reason"]: int(r["n"]) for r in rows}

    def save_states(self, states: Iterable[AlertState]) -> None:
        """Write new versions of these states."""
        rows = [
            {
                "exception_id": s.exception_id,
                "decision": s.decision,
                "reason": s.reason,
                "channels": list(s.channels),
                "group_key": s.group_key,
                "digest_id": s.digest_id,
                "decided_at": _time(s.decided_at) or _EPOCH,
                "alerted_at": _time(s.alerted_at),
                "notified_at": _time(s.notified_at),
                "repeats": s.repeats,
                "escalated": int(s.escalated),
                "revision": s.revision,
                "held": s.held,
                "last_seq": s.last_seq,
                "active": int(s.active),
                "version": versions.next(),
            }
            for s in states
        ]
        if rows:
            self.store.insert("alert_state", rows)

    # digests

    def open_digests(self, group_keys: Iterable[str], since: datetime) -> dict[str, Digest]:
        """Per group key, the latest digest started at or after `since` (the one a burst still joins)."""
        keys = sorted(set(group_keys))
        if not keys:
            return {}
        rows = self.store.query(
            f"SELECT {_DIGEST_COLUMNS} FROM alert_digests FINAL"
            " WHERE group_key IN {keys:Array(String)} AND started_at >= {since:DateTime64(6, 'UTC')}"
            " ORDER BY started_at",
            {"keys": keys, "since": since},
        )
        return {r["group_key"]: _digest(r) for r in rows}

    def active_digests(self) -> list[Digest]:
        """Digests with members still to watch (for escalation)."""
        rows = self.store.query(f"SELECT {_DIGEST_COLUMNS} FROM alert_digests FINAL WHERE active = 1 ORDER BY id")
        return [_digest(r) for r in rows]

    def digest_members(self, digest_ids: Iterable[str]) -> dict[str, list[str]]:
        """Per digest, the ids of its exceptions."""
        ids = sorted(set(digest_ids))
        if not ids:
            return {}
        rows = self.store.query(
            "SELECT digest_id, groupArray(exception_id) AS ids FROM alert_state FINAL"
            " WHERE digest_id IN {ids:Array(String)} AND decision = 'digest' GROUP BY digest_id",
            {"ids": ids},
        )
        return {r["digest_id"]: list(r["ids"]) for r in rows}

    def save_digests(self, digests: Iterable[Digest]) -> None:
        """Write new versions of these digests."""
        rows = [
            {
                "id": d.id,
                "group_key": d.group_key,
                "owner": d.owner,
                "rule": d.rule,
                "severity": d.severity,
                "channels": list(d.channels),
                "started_at": utc_text(d.started_at),
                "count": d.count,
                "keys": list(d.keys),
                "revision": d.revision,
                "notified_at": utc_text(d.notified_at or d.started_at),
                "repeats": d.repeats,
                "escalated": int(d.escalated),
                "active": int(d.active),
                "version": versions.next(),
            }
            for d in digests
        ]
        if rows:
            self.store.insert("alert_digests", rows)

    # the change-feed cursor

    def cursor(self, name: str) -> int:
        """The last change-feed sequence the named reader handled (0 at first)."""
        rows = self.store.query("SELECT seq FROM alert_cursors FINAL WHERE name = {name:String}", {"name": name})
        return int(rows[0]["seq"]) if rows else 0

    def save_cursor(self, name: str, seq: int, at: datetime) -> None:
        """Move the named reader's cursor."""
        self.store.insert(
            "alert_cursors", [{"name": name, "seq": seq, "updated_at": utc_text(at), "version": versions.next()}]
        )
