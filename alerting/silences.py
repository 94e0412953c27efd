"""Silences: matchers with a start and an end, created by people (API or CLI) to mute known trouble.

An exception whose alert would be sent while a silence matches it is not posted; alerting
records the silence's id as the reason (alert_state). When the silence ends or is expired while
the exception is still open, the exception is alerted then. Matchers are those of the routing
file's `match` (kernel.routing.ExceptionMatch: rule, kind, severity, owner, key, source and the
data fields, service, span_name); all must hold, a value list means any of them, and a silence
must have at least one matcher (an empty one would mute everything).

Values are compared exactly, so a silence that could never match is refused when made: a rule the tower does not
know (when the store was given the rules), and a value of the key or a data field (warehouse, ...) that no
exception has but some exception has in another case (`dal` for `DAL`). A value no exception has yet in any case
is accepted: trouble may be silenced before it starts.
"""

from __future__ import annotations

import difflib
import threading
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson

from alerting.outbox import versions
from kernel.clock import Clock
from kernel.durations import parse_duration as kernel_duration
from kernel.routing import ExceptionMatch
from kernel.store import Store
from kernel.store.base import stored_time_or_none, utc_text

SilenceStatus = Literal["pending", "active", "expired"]
_COLUMNS = "id, matchers, starts_at, ends_at, created_by, comment, created_at, expired_at, expired_by"


class SilenceNotFound(Exception):
    """No silence has that id."""


class InvalidSilence(ValueError):
    """The silence asked for cannot be created (no matchers, ends before it starts, ...)."""


def parse_duration(text: str) -> timedelta:
    """A silence's length (`90s`, `30m`, `2h`, `1d`, `1w`, kernel.durations' grammar); ValueError unless positive."""
    duration = kernel_duration(text)
    if duration <= timedelta(0):
        raise ValueError(f"{text!r} is not a positive duration like 30m, 2h, 1d or 1w")
    return duration


@dataclass(frozen=True)
class Silence:
    """One silence: what it matches, when, who made it and why."""

    id: str
    matchers: ExceptionMatch
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    created_at: datetime
    expired_at: datetime | None = None
    expired_by: str = ""

    def status(self, now: datetime) -> SilenceStatus:
        """`pending` before it starts, `active` while it holds, `expired` after its end or once expired."""
        if self.expired_at is not None or now >= self.ends_at:
            return "expired"
        return "pending" if now < self.starts_at else "active"

    def matches(self, values: Mapping[str, Any]) -> bool:
        """Whether its matchers hold for an exception's values."""
        return self.matchers.holds(values)

    def as_dict(self, now: datetime) -> dict[str, Any]:
        """The silence as the API shows it (times as aware datetimes)."""
        return {
            "id": self.id,
            "matchers": self.matchers.model_dump(exclude_none=True),
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "created_by": self.created_by,
            "comment": self.comment,
            "created_at": self.created_at,
            "expired_at": self.expired_at,
            "expired_by": self.expired_by,
            "status": self.status(now),
        }


# matchers on free values (not the routing's own names): checked against the values exceptions have
_DATA_FIELDS = (
    "key",
    "warehouse",
    "customer_id",
    "location",
    "sku",
    "order_id",
    "shipment_id",
    "invoice_id",
    "service",
    "span_name",
)
_LISTED = 30  # known names listed in full up to this many


def _known(value: str, known: Collection[str]) -> str:
    """What to say about an unknown name: the close ones, and every known one when they are few."""
    close = difflib.get_close_matches(value, sorted(known), n=3)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    listed = f"known: {', '.join(sorted(known))}" if len(known) <= _LISTED else f"{len(known)} are known"
    return hint + listed


def _silence(row: dict[str, Any]) -> Silence:
    starts, ends, created = (
        stored_time_or_none(row["starts_at"]),
        stored_time_or_none(row["ends_at"]),
        stored_time_or_none(row["created_at"]),
    )
    assert starts is not None and ends is not None and created is not None
    return Silence(
        id=row["id"],
        matchers=ExceptionMatch.model_validate(orjson.loads(row["matchers"])),
        starts_at=starts,
        ends_at=ends,
        created_by=row["created_by"],
        comment=row["comment"],
        created_at=created,
        expired_at=stored_time_or_none(row["expired_at"]),
        expired_by=row["expired_by"],
    )


class SilenceStore:
    """Creates, lists and expires silences in the store (`alert_silences`)."""

    def __init__(self, store: Store, clock: Clock, rules: Collection[str] = ()) -> None:
        """`rules`: the rule ids a silence may name (none given: not checked)."""
        self.store = store
        self.clock = clock
        self.rules = frozenset(rules)
        self._lock = threading.Lock()

    def create(
        self,
        matchers: ExceptionMatch,
        *,
        created_by: str,
        comment: str,
        ends_at: datetime | None = None,
        duration: timedelta | None = None,
        starts_at: datetime | None = None,
    ) -> Silence:
        """A new silence from `starts_at` (default now) to `ends_at` or for `duration`; InvalidSilence when
        it has no matchers, no end, or ends before it starts or in the past."""
        now = self.clock.now()
        if matchers.is_empty():
            raise InvalidSilence("a silence needs at least one matcher (an empty one would silence everything)")
        if (ends_at is None) == (duration is None):
            raise InvalidSilence("give either an end time or a duration")
        start = starts_at or now
        end = ends_at if ends_at is not None else start + (duration or timedelta(0))
        if end <= start:
            raise InvalidSilence("the silence ends before it starts")
        if end <= now:
            raise InvalidSilence("the silence would already be over")
        if not comment.strip():
            raise InvalidSilence("say why: a silence needs a comment")
        self._check_values(matchers)
        silence = Silence(
            id=str(uuid.uuid4()),
            matchers=matchers,
            starts_at=start,
            ends_at=end,
            created_by=created_by,
            comment=comment.strip(),
            created_at=now,
        )
        self._write(silence)
        return silence

    def _check_values(self, matchers: ExceptionMatch) -> None:
        """InvalidSilence for a value the silence could never match (see the module's docstring)."""
        unknown = [rule for rule in matchers.rule or [] if self.rules and rule not in self.rules]
        if unknown:
            raise InvalidSilence(f"unknown rule {unknown[0]!r}: {_known(unknown[0], self.rules)}")
        for name in _DATA_FIELDS:
            values: list[str] = getattr(matchers, name) or []
            if not values:
                continue
            column = "key" if name == "key" else "JSONExtractString(context, {field:String})"
            seen = {
                str(r["v"])
                for r in self.store.query(
                    f"SELECT DISTINCT {column} AS v FROM exceptions WHERE lower(v) IN {{lowered:Array(String)}}",
                    {"field": name, "lowered": sorted({v.lower() for v in values})},
                )
            }
            for value in values:
                other = sorted(v for v in seen if v.lower() == value.lower())
                if value not in seen and other:
                    raise InvalidSilence(
                        f"{name} {value!r} matches no exception (values are compared exactly): did you mean"
                        f" {other[0]!r}?"
                    )

    def get(self, silence_id: str) -> Silence:
        """One silence; SilenceNotFound when there is none with that id."""
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM alert_silences FINAL WHERE id = {{id:String}}", {"id": silence_id}
        )
        if not rows:
            raise SilenceNotFound(silence_id)
        return _silence(rows[0])

    def search(self, status: SilenceStatus | None = None, limit: int = 500) -> list[Silence]:
        """Silences, latest ending first; only those in `status` when given."""
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM alert_silences FINAL ORDER BY ends_at DESC, id LIMIT {{limit:UInt32}}",
            {"limit": limit if status is None else 100_000},
        )
        now = self.clock.now()
        found = [_silence(r) for r in rows]
        if status is not None:
            found = [s for s in found if s.status(now) == status][:limit]
        return found

    def active(self) -> list[Silence]:
        """The silences in force now."""
        now = self.clock.now()
        rows = self.store.query(
            f"SELECT {_COLUMNS} FROM alert_silences FINAL WHERE expired_at IS NULL"
            " AND starts_at <= {now:DateTime64(6, 'UTC')} AND ends_at > {now:DateTime64(6, 'UTC')}"
            " ORDER BY created_at, id",
            {"now": now},
        )
        return [_silence(r) for r in rows]

    def expire(self, silence_id: str, actor: str) -> Silence:
        """End a silence now (an expired one stays as it was); SilenceNotFound for an unknown id."""
        with self._lock:
            silence = self.get(silence_id)
            if silence.status(self.clock.now()) == "expired":
                return silence
            expired = Silence(**{**silence.__dict__, "expired_at": self.clock.now(), "expired_by": actor})
            self._write(expired)
            return expired

    def _write(self, silence: Silence) -> None:
        self.store.insert(
            "alert_silences",
            [
                {
                    "id": silence.id,
                    "matchers": orjson.dumps(silence.matchers.model_dump(exclude_none=True)).decode(),
                    "starts_at": utc_text(silence.starts_at),
                    "ends_at": utc_text(silence.ends_at),
                    "created_by": silence.created_by,
                    "comment": silence.comment,
                    "created_at": utc_text(silence.created_at),
                    "expired_at": utc_text(silence.expired_at) if silence.expired_at else None,
                    "expired_by": silence.expired_by,
                    "version": versions.next(),
                }
            ],
        )
