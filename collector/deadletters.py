"""Dead letters: every refused record, its reason and its raw bytes, replayable after a fix."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kernel.store import Store
from kernel.store.base import utc_text

# A listing carries this much of each raw record: a body refused whole can be 32 MiB (the inflation limit), and a
# page of 200 of them must not be gigabytes. The whole record: get_dead_letters, GET /api/deadletters/{id}.
RAW_PREVIEW_CHARS = 4000

COLUMNS = (
    "id",
    "received_at",
    "door",
    "source",
    "token_id",
    "reason",
    "raw",
    "content_type",
    "status",
    "status_at",
    "status_note",
    "version",
)
# every column, the id as text: what get_dead_letters reads and a new version writes
_SELECT = ", ".join("toString(id) AS id" if name == "id" else name for name in COLUMNS)
# a listing's: the raw record cut to a preview, and its whole size
_LISTED = _SELECT.replace(
    "raw,", "substringUTF8(raw, 1, {preview:UInt32}) AS raw, length(dead_letters.raw) AS raw_bytes,", 1
)

PENDING = "pending"
REPLAYED = "replayed"
DISCARDED = "discarded"  # given up on by an admin, with a note saying why (it stays listed until retention)


@dataclass(frozen=True)
class Refusal:
    """One refused record: which door, the source it claimed, why, and its raw form."""

    door: str
    reason: str
    raw: str
    source: str = ""
    content_type: str = "application/json"


class RecentRefusals:
    """The refused records stored lately, by token, door and content (a 16-byte hash, at most `max_entries`).

    A sender stuck in a retry loop sends the same bad batch again and again; each copy would be another dead letter
    (a body refused whole can be 32 MiB: a disk filled in hours). One identical to a letter stored from the same
    token and door within `window` is answered as before and counted, but not stored again: its first copy is
    there. Nothing is marked stored until its submit succeeded, so a refusal the store could not take is stored
    by the retry."""

    def __init__(self, window: timedelta, max_entries: int = 100_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._stored: OrderedDict[bytes, datetime] = OrderedDict()  # oldest first
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """A window of 0 stores every copy."""
        return self.window > timedelta(0)

    @staticmethod
    def key(token_id: str, door: str, raw: str) -> bytes:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{token_id}\0{door}\0".encode())
        digest.update(raw.encode(errors="surrogatepass"))
        return digest.digest()

    def stored_lately(self, key: bytes, now: datetime) -> bool:
        """Whether an identical refusal was stored within the window before `now`."""
        if not self.enabled:
            return False
        with self._lock:
            at = self._stored.get(key)
            return at is not None and now - at < self.window

    def remember(self, keys: Sequence[bytes], now: datetime) -> None:
        """`keys` were stored at `now`; forget what the window or the size limit lets go."""
        if not self.enabled:
            return
        with self._lock:
            for key in keys:
                self._stored[key] = now
                self._stored.move_to_end(key)
            while self._stored and (
                len(self._stored) > self.max_entries or now - next(iter(self._stored.values())) >= self.window
            ):
                self._stored.popitem(last=False)


def dead_letter_row(refusal: Refusal, token_id: str, at: datetime) -> dict[str, Any]:
    """The `dead_letters` row of a refusal."""
    return {
        "id": str(uuid.uuid4()),
        "received_at": utc_text(at),
        "door": refusal.door,
        "source": refusal.source,
        "token_id": token_id,
        "reason": refusal.reason[:4000],
        "raw": refusal.raw,
        "content_type": refusal.content_type,
        "status": PENDING,
        "status_at": utc_text(at),
        "status_note": "",
        "version": 1,
    }


def list_dead_letters(
    store: Store,
    status: str | None = None,
    door: str | None = None,
    limit: int = 100,
    offset: int = 0,
    source: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Dead letters, newest first, with the total that match; `source` matches the source and its paths (`wms`
    finds `wms/dallas`). Each `raw` is cut to RAW_PREVIEW_CHARS characters (get_dead_letters reads them whole);
    `raw_bytes` is its whole size and `raw_truncated` says whether it was cut."""
    where = (
        "WHERE ({status:String} = '' OR status = {status:String}) AND ({door:String} = '' OR door = {door:String})"
        " AND ({source:String} = '' OR source = {source:String} OR startsWith(source, concat({source:String}, '/')))"
    )
    params = {"status": status or "", "door": door or "", "source": source or "", "limit": limit, "offset": offset}
    rows = store.query(
        f"SELECT {_LISTED} FROM dead_letters FINAL {where}"
        " ORDER BY received_at DESC, id LIMIT {limit:UInt32} OFFSET {offset:UInt32}",
        {**params, "preview": RAW_PREVIEW_CHARS},
    )
    for row in rows:
        row["raw_truncated"] = len(row["raw"].encode()) < int(row["raw_bytes"])
    total = store.query("SELECT count() AS n FROM dead_letters FINAL " + where, params)[0]["n"]
    return rows, int(total)


def get_dead_letters(store: Store, ids: list[str]) -> list[dict[str, Any]]:
    """Dead letters by id (current version)."""
    if not ids:
        return []
    return store.query(
        f"SELECT {_SELECT} FROM dead_letters FINAL WHERE dead_letters.id IN {{ids:Array(UUID)}} ORDER BY received_at",
        {"ids": ids},
    )


def status_row(letter: dict[str, Any], status: str, note: str, at: datetime) -> dict[str, Any]:
    """A new version of a dead letter with another status (ReplacingMergeTree keeps the latest); `letter` must carry
    its whole raw record (a listing's preview would cut it short for good)."""
    if letter.get("raw_truncated"):
        raise ValueError(f"dead letter {letter['id']}: its raw record was read cut short; read it whole first")
    row = {name: letter[name] for name in COLUMNS}
    row.update(status=status, status_at=utc_text(at), status_note=note[:4000], version=int(letter["version"]) + 1)
    return row
