"""Exceptions: owned, visible, closable; one per (rule, key) while open, every change audited.

`ExceptionStore` is the only writer of the `exceptions` and `exception_audit` tables. The SLA
engine, the technical rules, the reconcilers, the API and Slack all change exceptions through
it, so every path applies the same transitions and leaves the same audit trail.

Changes from two processes. One process makes its changes one at a time (a lock), but ClickHouse has no transaction
across processes: an `api` replica and the scheduler may both read version V of an exception and each write their
change as a newer version, and the newest would silently replace the other. So every version written records the
version it was made on (`base_version`), and a writer reads back, right after its write, the versions of its
exceptions: when another version made on the same V is newer than its own, its change was overtaken. It then reads
the exception again and makes its change anew on the newer state (a person's acknowledgement of an exception the
engine resolved meanwhile is refused as any change of a resolved exception is), up to `ATTEMPTS` times. The audit
entry of a change is written once the change holds, so the trail never shows a change the exception lost.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

import orjson

from kernel.clock import Clock
from kernel.queries import PAGE, page
from kernel.store import Store
from kernel.store.base import stored_time, utc_text

Status = Literal["open", "acknowledged", "resolved"]
ACTIVE: tuple[Status, ...] = ("open", "acknowledged")

COLUMNS = (
    "id, rule, key, kind, owner, severity, status, opened_at, due_at, resolved_at, resolution, "
    "resolution_detail, assignee, context, updated_at, version"
)
_COLUMN_NAMES = tuple(COLUMNS.split(", "))

log = logging.getLogger(__name__)


class ExceptionNotFound(Exception):
    """No exception has that id."""


class InvalidTransition(Exception):
    """The change does not apply to the exception in its current status."""


class ConcurrentChange(InvalidTransition):
    """Other processes' changes to the exception overtook this one `ATTEMPTS` times in a row."""


# Writes of one change, each on a fresh read, before it gives up (ConcurrentChange, or a warning for the engine's).
ATTEMPTS = 5


@dataclass(frozen=True)
class NewException:
    """What a rule found: an exception to open unless one is already open for (rule, key)."""

    rule: str
    key: str
    kind: str
    owner: str
    severity: str
    due_at: datetime | None = None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExceptionRecord:
    """The current state of one exception."""

    id: str
    rule: str
    key: str
    kind: str
    owner: str
    severity: str
    status: str
    opened_at: str
    due_at: str | None
    resolved_at: str | None
    resolution: str
    resolution_detail: str
    assignee: str
    context: dict[str, Any]
    updated_at: str
    version: int
    base_version: int = 0  # the version this one was made on (0: opened); written, not read back

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ExceptionRecord:
        data = dict(row)
        data["context"] = orjson.loads(data["context"] or "{}")
        data["version"] = int(data["version"])
        return cls(**data)

    def to_row(self) -> dict[str, Any]:
        row = dict(vars(self))  # the fields, in COLUMNS order
        row["context"] = orjson.dumps(self.context).decode()
        return row

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _COLUMN_NAMES if k != "version"}


@dataclass(frozen=True)
class ExceptionFilter:
    """Filters of the exception list; empty fields do not filter. `status` "active" is open or acknowledged."""

    status: str | None = None
    owner: str | None = None
    rule: str | None = None
    kind: str | None = None
    key: str | None = None
    customer: str | None = None
    warehouse: str | None = None
    opened_before: datetime | None = None
    opened_after: datetime | None = None


# Orders of the exception list (`search(order=...)`), each ending on the id so pages never overlap.
ORDERS: dict[str, str] = {
    "newest": "opened_at DESC, id",
    "oldest": "opened_at, id",
    "due": "due_at, opened_at, id",  # soonest deadline first; none last
    "severity": "indexOf(['low', 'medium', 'high', 'critical'], toString(severity)) DESC, opened_at DESC, id",
}


class ExceptionStore:
    """Reads and changes exceptions in the store; changes are serialised within the process."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._last_version = 0

    def _version(self) -> int:
        # Monotonic within the process even when the clock stands still (fixed clocks in tests).
        self._last_version = max(self._last_version + 1, time.time_ns())
        return self._last_version

    # reads

    def get(self, exception_id: str) -> ExceptionRecord:
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM exceptions FINAL WHERE id = {{id:String}}", {"id": exception_id}
        )
        if not rows:
            raise ExceptionNotFound(exception_id)
        return ExceptionRecord.from_row(rows[0])

    def active_by_key(self, rule: str, keys: Collection[str] | None = None) -> dict[str, ExceptionRecord]:
        """Open or acknowledged exceptions of a rule, by key; only those of `keys` when given."""
        where = "rule = {rule:String} AND status != 'resolved'"
        params: dict[str, Any] = {"rule": rule}
        if keys is not None:
            where += " AND key IN {keys:Array(String)}"
            params["keys"] = list(keys)
        rows = self.store.query(f"SELECT {COLUMNS} FROM exceptions FINAL WHERE {where}", params)
        return {r["key"]: ExceptionRecord.from_row(r) for r in rows}

    def latest_by_key(self, rule: str, keys: Collection[str]) -> dict[str, ExceptionRecord]:
        """The newest exception (by opening) of each of `keys` for a rule, whatever its status."""
        if not keys:
            return {}
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM exceptions FINAL WHERE rule = {{rule:String}} AND key IN {{keys:Array(String)}}"
            " ORDER BY key, opened_at DESC, version DESC LIMIT 1 BY key",
            {"rule": rule, "keys": list(keys)},
        )
        return {row["key"]: ExceptionRecord.from_row(row) for row in rows}

    def active_of(self, wanted: Mapping[str, Collection[str]]) -> dict[tuple[str, str], ExceptionRecord]:
        """Open or acknowledged exceptions of the (rule, key) pairs `wanted` (keys by rule), in one read."""
        pairs = {(rule, key) for rule, keys in wanted.items() for key in keys}
        if not pairs:
            return {}
        # the keys as one JSON text: an engine run may ask for thousands, and a long array literal costs
        # far more to encode here and to parse in ClickHouse
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM exceptions FINAL WHERE status != 'resolved' AND rule IN {{rules:Array(String)}}"
            " AND key IN (SELECT arrayJoin(JSONExtract({keys:String}, 'Array(String)')))",
            {"rules": sorted(wanted), "keys": orjson.dumps(sorted({key for _, key in pairs})).decode()},
        )
        return {(r["rule"], r["key"]): ExceptionRecord.from_row(r) for r in rows if (r["rule"], r["key"]) in pairs}

    def search(
        self, filters: ExceptionFilter, limit: int = 100, offset: int = 0, order: str = "newest"
    ) -> tuple[list[ExceptionRecord], int]:
        """A page of exceptions in `order` (one of ORDERS; newest first by default), and how many match."""
        where, params = _where(filters)
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM exceptions FINAL {where} ORDER BY {ORDERS[order]}{PAGE}",
            {**params, **page(limit, offset)},
        )
        total = self.store.query(f"SELECT count() AS n FROM exceptions FINAL {where}", params)[0]["n"]
        return [ExceptionRecord.from_row(r) for r in rows], int(total)

    def _current(self, ids: Sequence[str]) -> list[ExceptionRecord]:
        """The stored state of the exceptions `ids` that exist, in the order of `ids`."""
        if not ids:
            return []
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM exceptions FINAL"
            " WHERE id IN (SELECT arrayJoin(JSONExtract({ids:String}, 'Array(String)')))",
            {"ids": orjson.dumps(sorted(set(ids))).decode()},
        )
        found = {row["id"]: ExceptionRecord.from_row(row) for row in rows}
        return [found[i] for i in dict.fromkeys(ids) if i in found]

    def audit(self, exception_id: str) -> list[dict[str, Any]]:
        """The audit trail of one exception, oldest first."""
        rows = self.store.query(
            "SELECT at, actor, action, detail FROM exception_audit WHERE exception_id = {id:String} ORDER BY at, seq",
            {"id": exception_id},
        )
        for row in rows:
            row["detail"] = orjson.loads(row["detail"] or "{}")
        return rows

    # changes

    def open_many(self, found: Sequence[NewException], actor: str = "engine") -> list[ExceptionRecord]:
        """Open an exception for each finding without an active one for its (rule, key)."""
        return self.open_and_resolve(found, {}, actor)[0]

    def open_and_resolve(
        self,
        found: Sequence[NewException],
        ended: Mapping[tuple[str, str], tuple[str, dict[str, Any]]],
        actor: str = "engine",
    ) -> tuple[list[ExceptionRecord], list[ExceptionRecord]]:
        """Open an exception for each finding without an active one for its (rule, key), then resolve the
        active exception of each `ended` (rule, key) with its (resolution, details), one opened by this
        call included. One read of the active exceptions and one write, whatever the number of rules."""
        if not found and not ended:
            return [], []
        with self._lock:
            now = utc_text(self.clock.now())
            # the active exceptions of these (rule, key) pairs only, every rule in one read
            wanted: dict[str, set[str]] = {}
            for rule, key in [*((item.rule, item.key) for item in found), *ended]:
                wanted.setdefault(rule, set()).add(key)
            active = self.active_of(wanted)
            opened: list[ExceptionRecord] = []
            ids = _new_ids(len(found))
            for item, new_id in zip(found, ids, strict=True):
                if (item.rule, item.key) in active:
                    continue
                record = ExceptionRecord(
                    id=new_id,
                    rule=item.rule,
                    key=item.key,
                    kind=item.kind,
                    owner=item.owner,
                    severity=item.severity,
                    status="open",
                    opened_at=now,
                    due_at=utc_text(item.due_at) if item.due_at else None,
                    resolved_at=None,
                    resolution="",
                    resolution_detail="",
                    assignee="",
                    context=item.context,
                    updated_at=now,
                    version=self._version(),
                )
                active[(item.rule, item.key)] = record
                opened.append(record)
            audit = [(e.id, actor, "opened", {"owner": e.owner, "due_at": e.due_at}) for e in opened]
            items = [(active[pair], *change) for pair, change in ended.items() if pair in active]
            resolved = self._resolved(items, now, actor, audit)
            overtaken = self._commit([*opened, *resolved], audit, now)
            resolved = self._settled(resolved, overtaken, items, actor)
        return opened, resolved

    def resolve_many(
        self, records: Iterable[ExceptionRecord], resolution: str, details: dict[str, dict[str, Any]], actor: str
    ) -> list[ExceptionRecord]:
        """Resolve active exceptions (e.g. `late` when the end event arrives); details by exception id.

        `records` may be an earlier read (an engine reads, works, then resolves what recovered): each is resolved as
        stored now, so a person's assignment meanwhile is kept, and one a person resolved meanwhile is left as they
        resolved it."""
        with self._lock:
            current = self._current([r.id for r in records])
            return self._resolve(((r, resolution, details.get(r.id, {})) for r in current), actor)

    def resolve_matching(
        self, filters: ExceptionFilter, actor: str, resolution: str, note: str, limit: int, dry_run: bool = False
    ) -> tuple[list[ExceptionRecord], int]:
        """Resolve by a person every active exception `filters` match, oldest first, at most `limit` (an incident's
        worth: the breaches an ERP outage caused, the exceptions of a rule switched off). Returns those resolved
        (or, with `dry_run`, those that would be) and how many matched in all."""
        wanted = replace(filters, status=filters.status if filters.status in ("open", "acknowledged") else "active")
        with self._lock:  # read and write under the lock: a person's resolution meanwhile is not overwritten
            found, total = self.search(wanted, limit=limit, order="oldest")
            if dry_run:
                return found, total
            detail = {"note": note, "by": actor}
            return self._resolve(((r, resolution, detail) for r in found), actor), total

    def _resolve(
        self, items: Iterable[tuple[ExceptionRecord, str, dict[str, Any]]], actor: str
    ) -> list[ExceptionRecord]:
        """Write the resolutions of `items` ((record, resolution, details)) and their audit entries; under the
        lock."""
        items = list(items)
        audit: list[tuple[str, str, str, dict[str, Any]]] = []
        now = utc_text(self.clock.now())
        changed = self._resolved(items, now, actor, audit)
        return self._settled(changed, self._commit(changed, audit, now), items, actor)

    def _settled(
        self,
        changed: list[ExceptionRecord],
        ids: set[str],
        items: list[tuple[ExceptionRecord, str, dict[str, Any]]],
        actor: str,
    ) -> list[ExceptionRecord]:
        """The resolutions `changed` that held, plus those of the exceptions `ids` whose resolution another process's
        change overtook, made anew on a fresh read with their resolution and details in `items`; those resolved
        meanwhile are left as they are."""
        done = [r for r in changed if r.id not in ids]
        if not ids:
            return done
        plans = {record.id: (resolution, detail) for record, resolution, detail in items}
        for _ in range(ATTEMPTS - 1):
            audit: list[tuple[str, str, str, dict[str, Any]]] = []
            now = utc_text(self.clock.now())
            changed = self._resolved([(r, *plans[r.id]) for r in self._current(sorted(ids))], now, actor, audit)
            ids = self._commit(changed, audit, now)
            done += [r for r in changed if r.id not in ids]
            if not ids:
                return done
        log.warning("resolutions of %d exceptions overtaken by other processes %d times: %s", len(ids), ATTEMPTS, ids)
        return done

    def _resolved(
        self,
        items: Iterable[tuple[ExceptionRecord, str, dict[str, Any]]],
        now: str,
        actor: str,
        audit: list[tuple[str, str, str, dict[str, Any]]],
    ) -> list[ExceptionRecord]:
        """The resolved versions of the active exceptions among `items` ((record, resolution, details));
        their audit entries are appended to `audit`."""
        changed: list[ExceptionRecord] = []
        for record, resolution, detail in items:
            if record.status == "resolved":
                continue
            changed.append(
                _replace(
                    record,
                    status="resolved",
                    resolved_at=now,
                    resolution=resolution,
                    resolution_detail=orjson.dumps(detail).decode(),
                    updated_at=now,
                    version=self._version(),
                )
            )
            audit.append((record.id, actor, "resolved", {"resolution": resolution, **detail}))
        return changed

    def acknowledge(self, exception_id: str, actor: str) -> ExceptionRecord:
        """open -> acknowledged."""
        return self._change(exception_id, actor, "acknowledged", {}, lambda r, _now: _ack(r))

    def assign(self, exception_id: str, assignee: str, actor: str) -> ExceptionRecord:
        """Set (or clear, with '') the assignee of an active exception."""
        return self._change(
            exception_id, actor, "assigned", {"assignee": assignee}, lambda r, _now: _active(r, assignee=assignee)
        )

    def resolve(self, exception_id: str, actor: str, resolution: str = "fixed", note: str = "") -> ExceptionRecord:
        """Resolve by a person."""
        detail = {"resolution": resolution, "note": note}

        def apply(record: ExceptionRecord, now: str) -> dict[str, Any]:
            _require_active(record)
            return {
                "status": "resolved",
                "resolved_at": now,
                "resolution": resolution,
                "resolution_detail": orjson.dumps({"note": note, "by": actor}).decode(),
            }

        return self._change(exception_id, actor, "resolved", detail, apply)

    def reopen(self, exception_id: str, actor: str, reason: str) -> ExceptionRecord:
        """resolved -> open (e.g. a reconciler finds it still wrong)."""

        def apply(record: ExceptionRecord, _now: str) -> dict[str, Any]:
            if record.status != "resolved":
                raise InvalidTransition(f"exception {record.id} is {record.status}, not resolved")
            return {"status": "open", "resolved_at": None, "resolution": "", "resolution_detail": ""}

        return self._change(exception_id, actor, "reopened", {"reason": reason}, apply)

    def add_note(self, exception_id: str, text: str, actor: str) -> ExceptionRecord:
        """Add a note to the audit trail (any status)."""
        return self._change(exception_id, actor, "note", {"text": text}, lambda r, _now: {})

    def _change(
        self,
        exception_id: str,
        actor: str,
        action: str,
        detail: dict[str, Any],
        apply: Callable[[ExceptionRecord, str], dict[str, Any]],
    ) -> ExceptionRecord:
        """Apply one change (`apply` answers the changed fields, given the record and the moment) and its audit entry:
        the change's times (updated_at, resolved_at) and the entry's are the same moment."""
        with self._lock:
            for _ in range(ATTEMPTS):
                record = self.get(exception_id)
                now = utc_text(self.clock.now())
                changes = apply(record, now)
                if changes:
                    record = _replace(record, **changes, updated_at=now, version=self._version())
                if not self._commit([record] if changes else [], [(record.id, actor, action, detail)], now):
                    return record
        raise ConcurrentChange(
            f"exception {exception_id} was changed by other processes {ATTEMPTS} times while this change was made;"
            " try again"
        )

    def _commit(
        self, records: list[ExceptionRecord], audit: list[tuple[str, str, str, dict[str, Any]]], at: str
    ) -> set[str]:
        """Store the records' new versions, then the audit entries (at `at`, the moment of their change) of those
        that hold: the ids whose version another process's newer one, made on the same version, overtook (their
        entries are not written)."""
        if records:
            self.store.insert("exceptions", [r.to_row() for r in records])
        overtaken = self._overtaken([r for r in records if r.base_version])
        self._write_audit([entry for entry in audit if entry[0] not in overtaken], at)
        return overtaken

    def _overtaken(self, records: list[ExceptionRecord]) -> set[str]:
        """The ids of `records` (versions just written) for which another version made on the same one is newer."""
        if not records:
            return set()
        rows = self.store.query(
            "SELECT id, version, base_version FROM exceptions WHERE id IN"
            " (SELECT arrayJoin(JSONExtract({ids:String}, 'Array(String)')))",
            {"ids": orjson.dumps(sorted({r.id for r in records})).decode()},
        )
        written = {r.id: r for r in records}
        return {
            row["id"]
            for row in rows
            if int(row["base_version"]) == written[row["id"]].base_version
            and int(row["version"]) > written[row["id"]].version
        }

    def _write_audit(self, audit: list[tuple[str, str, str, dict[str, Any]]], at: str) -> None:
        """Store the audit entries (exception id, actor, action, details), each at `at`."""
        if audit:
            self.store.insert(
                "exception_audit",
                [
                    {
                        "exception_id": i,
                        "at": at,
                        "seq": self._version(),
                        "actor": a,
                        "action": act,
                        "detail": orjson.dumps(d, default=str).decode(),
                    }
                    for i, a, act, d in audit
                ],
            )


def _new_ids(count: int) -> list[str]:
    """`count` random (version 4) UUIDs as text: one read of the system's randomness for all of them
    (an engine run may open thousands of exceptions at once)."""
    raw = os.urandom(16 * count)
    ids = []
    for i in range(count):
        h = raw[16 * i : 16 * i + 16].hex()
        variant = "89ab"[int(h[16], 16) & 3]
        ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}")
    return ids


def _replace(record: ExceptionRecord, **changes: Any) -> ExceptionRecord:
    """`record` with `changes`; a new `version` is made on the record's."""
    data = {k: getattr(record, k) for k in _COLUMN_NAMES}
    data.update(changes)
    return ExceptionRecord(**data, base_version=record.version if "version" in changes else record.base_version)


def _require_active(record: ExceptionRecord) -> None:
    if record.status == "resolved":
        raise InvalidTransition(f"exception {record.id} is already resolved")


def _ack(record: ExceptionRecord) -> dict[str, Any]:
    if record.status != "open":
        raise InvalidTransition(f"exception {record.id} is {record.status}; only open exceptions can be acknowledged")
    return {"status": "acknowledged"}


def _active(record: ExceptionRecord, **changes: Any) -> dict[str, Any]:
    _require_active(record)
    return changes


def _where(filters: ExceptionFilter) -> tuple[str, dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if filters.status == "active":  # open or acknowledged
        clauses.append("status != 'resolved'")
    for name in ("status", "owner", "rule", "kind", "key"):
        value = getattr(filters, name)
        if value and not (name == "status" and value == "active"):
            clauses.append(f"{name} = {{{name}:String}}")
            params[name] = value
    if filters.customer:
        clauses.append("JSONExtractString(context, 'customer_id') = {customer:String}")
        params["customer"] = filters.customer
    if filters.warehouse:
        clauses.append("JSONExtractString(context, 'warehouse') = {warehouse:String}")
        params["warehouse"] = filters.warehouse
    if filters.opened_before:
        clauses.append("opened_at < {opened_before:DateTime64(6, 'UTC')}")
        params["opened_before"] = filters.opened_before
    if filters.opened_after:
        clauses.append("opened_at >= {opened_after:DateTime64(6, 'UTC')}")
        params["opened_after"] = filters.opened_after
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def hours_between(start: str, end: datetime) -> float:
    """Hours from a stored UTC timestamp text to `end`."""
    begun = stored_time(start)
    return round((end - begun).total_seconds() / 3600, 3)
