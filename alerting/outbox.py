"""The alert outbox: Slack messages waiting to be sent, their delivery state, and the delivery log.

Alerting decides *what* to say and enqueues `OutboundMessage`s; the sender (alerting/sender.py)
delivers them. Both tables live in the store, so nothing waits in memory:

- `alert_outbox` holds one state row per message and change (ReplacingMergeTree on `version`,
  read with FINAL): `pending` -> `attempting` (written *before* the call to Slack) -> `sent`
  (with Slack's channel id and ts) or back to `pending` with a `next_at`, or `failed`. An update
  still pending when a later update of the same message is queued behind it is `superseded`
  (not sent: the later one carries the newer content).
- `alert_deliveries` holds one row per attempt (ok, retry, failed), which the API shows.

A key is enqueued once: enqueueing it again changes nothing, so a dispatcher that runs twice
over the same change never doubles a message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson

from kernel.clock import Clock
from kernel.store.base import Row, Store, stored_time

Action = Literal["post", "update", "reply"]
Status = Literal["pending", "attempting", "sent", "failed", "superseded"]
DeliveryStatus = Literal["ok", "retry", "failed", "superseded"]
OPEN: tuple[Status, ...] = ("pending", "attempting")

_COLUMNS = (
    "key, seq, channel, action, parent, exception_id, text, blocks, status, attempts, errors, in_doubt, "
    "next_at, enqueued_at, updated_at, channel_id, ts, error, version"
)


class _Versions:
    """Strictly increasing integers from the wall clock's nanoseconds (row versions and FIFO order).

    Not a deadline, so not the injected clock: versions must grow across restarts even when a test's
    fixed clock does not move.
    """

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            return self._last


versions = _Versions()


@dataclass(frozen=True)
class OutboundMessage:
    """One logical Slack message for the outbox.

    `key` is its idempotency key (enqueueing a key twice keeps the first). `update` and `reply` name
    the key of an earlier `post` as `parent`: they wait until it is sent and then use its channel id
    and ts (`chat.update`, or `chat.postMessage` with `thread_ts`).
    """

    key: str
    channel: str  # '#name' or a channel id
    text: str  # notification and fallback text
    blocks: list[dict[str, Any]] | None = None
    action: Action = "post"
    parent: str | None = None
    exception_id: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("an outbound message needs a key")
        if not self.channel:
            raise ValueError(f"message {self.key!r} has no channel")
        if self.action not in ("post", "update", "reply"):
            raise ValueError(f"message {self.key!r}: unknown action {self.action!r}")
        if self.action != "post" and not self.parent:
            raise ValueError(f"message {self.key!r}: an {self.action} needs the key of its parent post")
        if not self.text and not self.blocks:
            raise ValueError(f"message {self.key!r} has neither text nor blocks")


@dataclass(frozen=True)
class Posted:
    """Where Slack put a delivered message: its channel id and ts (both empty in incoming-webhook mode)."""

    channel_id: str
    ts: str


@dataclass(frozen=True)
class OutboxEntry:
    """A message with its current delivery state."""

    message: OutboundMessage
    seq: int
    status: Status
    attempts: int  # calls made, 429s included
    errors: int  # failed calls that count against max_attempts
    in_doubt: bool  # an earlier call may have been carried out by Slack although no answer said so
    next_at: datetime
    enqueued_at: datetime
    updated_at: datetime
    channel_id: str = ""
    ts: str = ""
    error: str = ""
    version: int = 0

    @property
    def key(self) -> str:
        """The message's idempotency key."""
        return self.message.key

    @property
    def posted(self) -> Posted | None:
        """Where it was delivered, once sent."""
        return Posted(self.channel_id, self.ts) if self.status == "sent" else None


def _entry(row: Row) -> OutboxEntry:
    blocks = orjson.loads(row["blocks"]) if row["blocks"] else None
    message = OutboundMessage(
        key=row["key"],
        channel=row["channel"],
        text=row["text"],
        blocks=blocks,
        action=row["action"],
        parent=row["parent"] or None,
        exception_id=row["exception_id"],
    )
    return OutboxEntry(
        message=message,
        seq=int(row["seq"]),
        status=row["status"],
        attempts=int(row["attempts"]),
        errors=int(row["errors"]),
        in_doubt=bool(row["in_doubt"]),
        next_at=stored_time(row["next_at"]),
        enqueued_at=stored_time(row["enqueued_at"]),
        updated_at=stored_time(row["updated_at"]),
        channel_id=row["channel_id"],
        ts=row["ts"],
        error=row["error"],
        version=int(row["version"]),
    )


def _row(entry: OutboxEntry) -> dict[str, Any]:
    m = entry.message
    return {
        "key": m.key,
        "seq": entry.seq,
        "channel": m.channel,
        "action": m.action,
        "parent": m.parent or "",
        "exception_id": m.exception_id,
        "text": m.text,
        "blocks": orjson.dumps(m.blocks).decode() if m.blocks else "",
        "status": entry.status,
        "attempts": entry.attempts,
        "errors": entry.errors,
        "in_doubt": int(entry.in_doubt),
        "next_at": entry.next_at,
        "enqueued_at": entry.enqueued_at,
        "updated_at": entry.updated_at,
        "channel_id": entry.channel_id,
        "ts": entry.ts,
        "error": entry.error,
        "version": entry.version,
    }


class Outbox:
    """The outbox and delivery log in the store; every reader and writer of both tables goes through it."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._enqueue_lock = threading.Lock()

    def enqueue(self, messages: Sequence[OutboundMessage]) -> int:
        """Add messages in order (FIFO per channel); keys already in the outbox (or twice in `messages`)
        are kept once. Returns how many were new."""
        if not messages:
            return 0
        with self._enqueue_lock:
            keys = list(dict.fromkeys(m.key for m in messages))
            rows = self.store.query(
                "SELECT DISTINCT key FROM alert_outbox WHERE key IN {keys:Array(String)}", {"keys": keys}
            )
            seen = {r["key"] for r in rows}
            now = self.clock.now()
            new: list[dict[str, Any]] = []
            for message in messages:
                if message.key in seen:
                    continue
                seen.add(message.key)
                # version 0: the enqueue row never wins over a state row, even if enqueued twice by a race
                entry = OutboxEntry(message, versions.next(), "pending", 0, 0, False, now, now, now)
                new.append(_row(entry))
            if new:
                self.store.insert("alert_outbox", new)
            return len(new)

    def get(self, key: str) -> OutboxEntry | None:
        """The message with this key and its state, None when it was never enqueued."""
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, OutboxEntry]:
        """The entries of these keys (missing keys are left out)."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM alert_outbox FINAL WHERE key IN {{keys:Array(String)}}", {"keys": wanted}
        )
        return {r["key"]: _entry(r) for r in rows}

    def posted(self, key: str) -> Posted | None:
        """Posted(channel_id, ts) of a delivered message; None while it is not (yet) sent."""
        entry = self.get(key)
        return entry.posted if entry else None

    def open_entries(self) -> list[OutboxEntry]:
        """Messages not yet sent or failed (`pending`, `attempting`), oldest first."""
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM alert_outbox FINAL WHERE status IN {{open:Array(String)}} ORDER BY seq",
            {"open": list(OPEN)},
        )
        return [_entry(r) for r in rows]

    def latest_update(self, parent: str) -> OutboundMessage | None:
        """The newest update enqueued for the post `parent`, in any state (its message's current content); None
        when it has none."""
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM alert_outbox FINAL WHERE parent = {{parent:String}} AND action = 'update'"
            " ORDER BY seq DESC LIMIT 1",
            {"parent": parent},
        )
        return _entry(rows[0]).message if rows else None

    def knows_channel(self, channel: str) -> bool:
        """Whether any message, of any age and status, was ever addressed to `channel` (as messages name it)."""
        rows = self.store.query(
            "SELECT count() AS n FROM (SELECT 1 FROM alert_outbox WHERE channel = {channel:String} LIMIT 1)",
            {"channel": channel},
        )
        return bool(rows and int(rows[0]["n"]))

    def requeue_failed(self, channel: str, since: datetime) -> tuple[list[OutboxEntry], int]:
        """Send again the messages to `channel` enqueued since `since` that failed (a channel fixed after its
        messages failed: `slack-delivery`): each back to `pending` with its attempts reset, in its first place
        in the channel's order, so a post goes before the updates and replies behind it. A failed post one of
        whose updates was delivered as a new message is left failed (that message carried newer content).
        Returns the requeued entries and how many were left."""
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM alert_outbox FINAL WHERE status = 'failed' AND channel = {{channel:String}}"
            " AND enqueued_at >= {since:DateTime64(6, 'UTC')} ORDER BY seq",
            {"channel": channel, "since": since},
        )
        failed = [_entry(r) for r in rows]
        replaced: set[str] = set()
        posts = [e.key for e in failed if e.message.action == "post"]
        if posts:
            replaced = {
                str(r["parent"])
                for r in self.store.query(
                    "SELECT parent FROM alert_outbox FINAL WHERE parent IN {posts:Array(String)} AND status = 'sent'",
                    {"posts": posts},
                )
            }
        now = self.clock.now()
        requeued = [
            replace(
                entry,
                status="pending",
                attempts=0,
                errors=0,
                next_at=now,
                error="",
                updated_at=now,
                version=versions.next(),
            )
            for entry in failed
            if entry.key not in replaced
        ]
        if requeued:  # one insert, however many: a channel broken for a day may hold thousands
            self.store.insert("alert_outbox", [_row(entry) for entry in requeued])
        return requeued, len(failed) - len(requeued)

    def record(self, entry: OutboxEntry, **changes: Any) -> OutboxEntry:
        """Write a new state of `entry` (a new version row) and return it."""
        updated = replace(entry, **changes, updated_at=self.clock.now(), version=versions.next())
        self.store.insert("alert_outbox", [_row(updated)])
        return updated

    def log(
        self,
        entry: OutboxEntry,
        status: DeliveryStatus,
        *,
        action: str,
        mode: str,
        http_status: int = 0,
        error: str = "",
        note: str = "",
        channel_id: str = "",
        ts: str = "",
        duration_ms: float = 0.0,
    ) -> None:
        """Add one attempt (or decision) to the delivery log."""
        self.log_attempt(
            key=entry.key,
            exception_id=entry.message.exception_id,
            channel=entry.message.channel,
            action=action,
            mode=mode,
            status=status,
            attempt=entry.attempts,
            http_status=http_status,
            error=error,
            note=note,
            channel_id=channel_id,
            ts=ts,
            duration_ms=duration_ms,
        )

    def log_attempt(
        self,
        *,
        key: str,
        exception_id: str,
        channel: str,
        action: str,
        mode: str,
        status: DeliveryStatus,
        attempt: int,
        http_status: int = 0,
        error: str = "",
        note: str = "",
        channel_id: str = "",
        ts: str = "",
        duration_ms: float = 0.0,
    ) -> None:
        """Add one delivery-log row (also for calls that are not outbox messages, such as file uploads)."""
        self.store.insert(
            "alert_deliveries",
            [
                {
                    "at": self.clock.now(),
                    "seq": versions.next(),
                    "key": key,
                    "exception_id": exception_id,
                    "channel": channel,
                    "channel_id": channel_id,
                    "action": action,
                    "mode": mode,
                    "status": status,
                    "attempt": attempt,
                    "http_status": http_status,
                    "error": error[:2000],
                    "note": note,
                    "ts": ts,
                    "duration_ms": duration_ms,
                }
            ],
        )

    def deliveries(
        self, exception_id: str | None = None, limit: int = 100, key: str | None = None
    ) -> list[dict[str, Any]]:
        """The delivery log, newest first: every attempt, optionally of one exception's messages or one key."""
        rows = self.store.query(
            "SELECT at, key, exception_id, channel, channel_id, action, mode, status, attempt, http_status, error,"
            " note, ts, duration_ms FROM alert_deliveries"
            " WHERE ({exception_id:String} = '' OR exception_id = {exception_id:String})"
            " AND ({key:String} = '' OR key = {key:String})"
            " ORDER BY at DESC, seq DESC LIMIT {limit:UInt32}",
            {"exception_id": exception_id or "", "key": key or "", "limit": limit},
        )
        for row in rows:
            row["at"] = stored_time(row["at"])
            row["attempt"] = int(row["attempt"])
            row["http_status"] = int(row["http_status"])
        return rows

    def counts(self) -> dict[str, int]:
        """Messages per status (pending, attempting, sent, failed, superseded) over the whole outbox."""
        rows = self.store.query("SELECT status, count() AS n FROM alert_outbox FINAL GROUP BY status")
        found = {r["status"]: int(r["n"]) for r in rows}
        return {status: found.get(status, 0) for status in ("pending", "attempting", "sent", "failed", "superseded")}

    def last_attempts(self, within: timedelta) -> dict[str, datetime]:
        """The time of the latest attempt per channel within `within` of now (channel pacing after a restart)."""
        rows = self.store.query(
            "SELECT channel, max(at) AS last FROM alert_deliveries WHERE at >= {since:DateTime64(6, 'UTC')}"
            " GROUP BY channel",
            {"since": self.clock.now() - within},
        )
        return {r["channel"]: stored_time(r["last"]) for r in rows}

    def channel_ids(self) -> dict[str, str]:
        """Channel (as messages name it) -> the Slack channel id learned from delivered posts."""
        rows = self.store.query(
            "SELECT channel, argMax(channel_id, version) AS learned FROM alert_outbox"
            " WHERE channel_id != '' GROUP BY channel"
        )
        return {r["channel"]: r["learned"] for r in rows}
