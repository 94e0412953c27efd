"""Dead letters: every refused record, its reason and its raw bytes, replayable after a fix."""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kernel.model.events import is_source, source_covers
from kernel.queries import PAGE, page
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
    "refusal_key",
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
REPLAY_FAILED = "replay failed: "  # how the status note of a letter still failing after a replay begins


@dataclass(frozen=True)
class Cursor:
    """Where a replay of every pending letter (of a door, of a source) stopped: the last letter it took, in the
    order letters are replayed (received_at, then id). Its text, `<received_at>/<id>`, is the API's `cursor`."""

    received_at: str
    id: str

    # ASCII digits only: `\d` also takes other scripts' digits ('૯'), which neither the store nor UUID read
    PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?/[0-9a-fA-F-]{36}$"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """A cursor from its text; ValueError when it is not one (a time that is no time, an id that is no UUID)."""
        received_at, _, ident = text.rpartition("/")
        try:
            if not re.fullmatch(cls.PATTERN, text):
                raise ValueError("not <received_at>/<id>")
            datetime.fromisoformat(received_at)
            return cls(received_at, str(uuid.UUID(ident)))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a replay cursor (<received_at>/<id>): {exc}") from exc

    def __str__(self) -> str:
        return f"{self.received_at}/{self.id}"


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


def refusal_key(claimed: str, token_id: str, granted: Sequence[str]) -> str:
    """Whose refusal a record is, as the `ingest-refusals` rule keys it (sla_rules/technical.py REFUSAL_KEY): the
    source it claimed when the token may send it (a system covers its paths), else the token's granted source when
    it has exactly one, else `token <id>`. The door computes it from the grant the token has when it refuses the
    record and stores it with the letter: a grant fixed afterwards re-keys nothing already refused."""
    if claimed and is_source(claimed) and any(source_covers(g, claimed) for g in granted):
        return claimed
    return granted[0] if len(granted) == 1 else f"token {token_id}"


def dead_letter_row(
    refusal: Refusal, token_id: str, at: datetime, granted: Sequence[str] | None = None
) -> dict[str, Any]:
    """The `dead_letters` row of a refusal; `granted`: the sources the token may send now, whose refusal_key it
    stores (None: no grant known, '' stored, keyed by the token's grant when read)."""
    return {
        "id": str(uuid.uuid4()),
        "received_at": utc_text(at),
        "door": refusal.door,
        "source": refusal.source,
        "token_id": token_id,
        "refusal_key": "" if granted is None else refusal_key(refusal.source, token_id, granted),
        "reason": refusal.reason[:4000],
        "raw": refusal.raw,
        "content_type": refusal.content_type,
        "status": PENDING,
        "status_at": utc_text(at),
        "status_note": "",
        "version": 1,
    }


def _source_filter(
    source: str | None, token_ids: Sequence[str], token_id: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The condition of a `source` filter: the letters claiming it or one of its paths, and those that claimed no
    source (a body that could not be read) sent by one of `token_ids` (the tokens granted it); always true without
    a source. With `token_id`, only the letters that token sent (whatever they claimed)."""
    condition = (
        "({source:String} = '' OR source = {source:String} OR startsWith(source, concat({source:String}, '/'))"
        " OR (source = '' AND has({source_tokens:Array(String)}, token_id)))"
        " AND ({sender:String} = '' OR token_id = {sender:String})"
    )
    return condition, {
        "source": source or "",
        "source_tokens": list(token_ids) if source else [],
        "sender": token_id or "",
    }


def sourceless_tokens(store: Store) -> list[str]:
    """The ids of the tokens that sent letters claiming no source (few: one per integration at most)."""
    rows = store.query("SELECT DISTINCT token_id FROM dead_letters WHERE source = '' ORDER BY token_id")
    return [str(r["token_id"]) for r in rows]


def latest_reason(letter: dict[str, Any]) -> str:
    """Why a letter fails now: its last replay's reason when a replay failed (the letter stayed pending with it),
    else the reason it was refused for."""
    note = str(letter.get("status_note") or "")
    if letter.get("status") == PENDING and note.startswith(REPLAY_FAILED):
        return note[len(REPLAY_FAILED) :]
    return str(letter.get("reason") or "")


def list_dead_letters(
    store: Store,
    status: str | None = None,
    door: str | None = None,
    limit: int = 100,
    offset: int = 0,
    source: str | None = None,
    token_ids: Sequence[str] = (),
    token_id: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Dead letters, newest first, with the total that match; `source` matches the source and its paths (`wms`
    finds `wms/dallas`), and the letters that claimed no source sent by one of `token_ids` (the tokens granted it);
    `token_id` the letters that token sent, whatever source they claimed.
    Each `raw` is cut to RAW_PREVIEW_CHARS characters (get_dead_letters reads them whole); `raw_bytes` is its whole
    size and `raw_truncated` says whether it was cut; `latest_reason` is why it fails now (latest_reason)."""
    by_source, source_params = _source_filter(source, token_ids, token_id)
    where = (
        "WHERE ({status:String} = '' OR status = {status:String}) AND ({door:String} = '' OR door = {door:String})"
        f" AND {by_source}"
    )
    params = {"status": status or "", "door": door or "", **source_params}
    rows = store.query(
        f"SELECT {_LISTED} FROM dead_letters FINAL {where} ORDER BY received_at DESC, id{PAGE}",
        {**params, **page(limit, offset), "preview": RAW_PREVIEW_CHARS},
    )
    for row in rows:
        row["raw_truncated"] = len(row["raw"].encode()) < int(row["raw_bytes"])
        row["latest_reason"] = latest_reason(row)
    total = store.query("SELECT count() AS n FROM dead_letters FINAL " + where, params)[0]["n"]
    return rows, int(total)


def pending_selection(
    store: Store,
    door: str | None,
    source: str | None,
    token_ids: Sequence[str],
    after: Cursor | None,
    limit: int,
    token_id: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """The first `limit` pending letters of a door, source and/or sending token (as list_dead_letters matches them)
    after `after`, oldest first (`id`, `received_at`, `raw_bytes`), and how many pending letters match after `after`
    in all."""
    by_source, source_params = _source_filter(source, token_ids, token_id)
    where = (
        f"WHERE status = '{PENDING}' AND ({{door:String}} = '' OR door = {{door:String}}) AND {by_source}"
        " AND ({after:UInt8} = 0"
        " OR (dead_letters.received_at, dead_letters.id) > ({after_at:DateTime64(6, 'UTC')}, {after_id:UUID}))"
    )
    params = {
        "door": door or "",
        **source_params,
        "after": 1 if after else 0,
        "after_at": after.received_at if after else "1970-01-01 00:00:00",
        "after_id": after.id if after else str(uuid.UUID(int=0)),
    }
    rows = store.query(
        "SELECT toString(id) AS id, toString(received_at) AS received_at, length(raw) AS raw_bytes"
        f" FROM dead_letters FINAL {where} ORDER BY dead_letters.received_at, dead_letters.id LIMIT {{limit:UInt32}}",
        {**params, "limit": limit},
    )
    matched = store.query("SELECT count() AS n FROM dead_letters FINAL " + where, params)[0]["n"]
    return rows, int(matched)


def raw_sizes(store: Store, ids: Sequence[str]) -> dict[str, int]:
    """The size of each known letter's raw record, by id."""
    if not ids:
        return {}
    rows = store.query(
        "SELECT toString(id) AS id, length(raw) AS raw_bytes FROM dead_letters FINAL"
        " WHERE dead_letters.id IN {ids:Array(UUID)}",
        {"ids": list(ids)},
    )
    return {str(r["id"]): int(r["raw_bytes"]) for r in rows}


def get_dead_letters(store: Store, ids: list[str]) -> list[dict[str, Any]]:
    """Dead letters by id (current version), each with its `latest_reason`."""
    if not ids:
        return []
    rows = store.query(
        f"SELECT {_SELECT} FROM dead_letters FINAL WHERE dead_letters.id IN {{ids:Array(UUID)}} ORDER BY received_at",
        {"ids": ids},
    )
    for row in rows:
        row["latest_reason"] = latest_reason(row)
    return rows


def status_row(letter: dict[str, Any], status: str, note: str, at: datetime) -> dict[str, Any]:
    """A new version of a dead letter with another status (ReplacingMergeTree keeps the latest); `letter` must carry
    its whole raw record (a listing's preview would cut it short for good)."""
    if letter.get("raw_truncated"):
        raise ValueError(f"dead letter {letter['id']}: its raw record was read cut short; read it whole first")
    row = {name: letter[name] for name in COLUMNS}
    row.update(status=status, status_at=utc_text(at), status_note=note[:4000], version=int(letter["version"]) + 1)
    return row
