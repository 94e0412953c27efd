"""The ingest service: what every door calls once it has decoded a request.

It validates business events, checks each against the token's sources, turns refusals into
dead letters, and hands everything to the pipeline in one durable submit. Doors register a
replayer so `tower deadletters replay` can run a refused record through its door again.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from collector.auth import Grant, TokenRegistry
from collector.deadletters import (
    DISCARDED,
    PENDING,
    REPLAYED,
    RecentRefusals,
    Refusal,
    dead_letter_row,
    get_dead_letters,
    list_dead_letters,
    status_row,
)
from collector.pipeline import IngestPipeline, Rows
from kernel.clock import Clock
from kernel.metrics import TowerMetrics
from kernel.model.events import BusinessEvent, validate_event


@dataclass(frozen=True)
class TimeWindow:
    """How far from the tower's clock a business event's time may be; None (or 0 in the settings) for no limit.

    A time outside it is refused with the setting that moves it: an event stamped 1970 (an unset time) or 2099
    would otherwise open exceptions due decades ago, or never due."""

    max_age: timedelta | None = None
    max_ahead: timedelta | None = None

    @classmethod
    def from_settings(cls, max_age_days: int, max_ahead_minutes: int) -> TimeWindow:
        return cls(
            timedelta(days=max_age_days) if max_age_days else None,
            timedelta(minutes=max_ahead_minutes) if max_ahead_minutes else None,
        )

    def problem(self, time: datetime, now: datetime) -> str | None:
        """Why `time` is refused at `now`, or None."""
        shown = time.astimezone(UTC).isoformat().replace("+00:00", "Z")
        if self.max_age is not None and time < now - self.max_age:
            days = (now - time).days
            return (
                f"time: {shown} is {days:,} days before the tower's clock; events older than "
                f"{self.max_age.days} days are refused (TOWER_COLLECTOR_EVENT_MAX_AGE_DAYS)"
            )
        if self.max_ahead is not None and time > now + self.max_ahead:
            return (
                f"time: {shown} is {_span(time - now)} ahead of the tower's clock; events more than "
                f"{int(self.max_ahead.total_seconds() // 60)} minutes ahead are refused "
                "(TOWER_COLLECTOR_EVENT_MAX_AHEAD_MINUTES; a sender's clock or time zone?)"
            )
        return None


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:,.1f} hours" if hours < 48 else f"{delta.days:,} days"


@dataclass(frozen=True)
class Rejection:
    """One record of a request that was not stored, and why."""

    index: int
    id: str | None
    reasons: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "errors": self.reasons}


@dataclass
class Outcome:
    """What a request's records became."""

    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True)
class Replay:
    """What a replayer made of a dead letter: rows to store, or the reasons it still fails."""

    tables: Rows
    problems: list[str]


Replayer = Callable[[str, str, Grant], Replay]


@dataclass
class DiscardReport:
    """Result of discarding dead letters: how many, and those named that were not pending (with their status, or
    `unknown`)."""

    discarded: int = 0
    not_pending: list[dict[str, str]] = field(default_factory=list)


@dataclass
class ReplayReport:
    """Result of replaying dead letters."""

    replayed: int = 0
    still_failing: list[dict[str, Any]] = field(default_factory=list)


REPLAY_CHUNK = 20  # dead letters read whole at a time by a replay


class IngestService:
    """Validation, authorization and durable hand-off shared by every door."""

    def __init__(
        self,
        pipeline: IngestPipeline,
        tokens: TokenRegistry,
        clock: Clock,
        metrics: TowerMetrics | None = None,
        window: TimeWindow | None = None,
        repeats: RecentRefusals | None = None,
    ) -> None:
        """`metrics` counts what each hand-off carried (rows per table, records refused per door); `window` bounds
        an event's time around the clock (none by default); `repeats` keeps a refusal sent again within its window
        from being stored twice (every refusal is stored by default)."""
        self.pipeline = pipeline
        self.window = window or TimeWindow()
        self.repeats = repeats or RecentRefusals(timedelta(0))
        self.metrics = metrics
        self.tokens = tokens
        self.clock = clock
        self._replayers: dict[str, Replayer] = {}
        # a replay and a discard of one letter at once would each write its next version (the letter could end
        # discarded with its event stored): one at a time in this process (two API replicas can still race)
        self._letters_lock = threading.Lock()

    def register_replayer(self, door: str, replayer: Replayer) -> None:
        """Let dead letters from `door` be replayed through `replayer`."""
        self._replayers[door] = replayer

    def check_event(self, raw: Mapping[str, Any], grant: Grant) -> tuple[BusinessEvent | None, list[str]]:
        """Validate one structured event, check its source against the token and its time against the window."""
        event, problems = validate_event(raw)
        if event is None:
            return None, problems
        if not grant.allows(event.source):
            return None, [
                f"source: {event.source!r} is not allowed for this token (it may send {', '.join(grant.sources)})"
            ]
        late_or_early = self.window.problem(event.time, self.clock.now())
        return (None, [late_or_early]) if late_or_early else (event, [])

    def accept_events(
        self,
        records: Iterable[tuple[Mapping[str, Any] | None, str, list[str]]],
        grant: Grant,
        door: str,
        extra: Rows | None = None,
    ) -> Outcome:
        """Store valid events and dead-letter the rest, durably, in one submit.

        `records` are (parsed event or None, raw text, problems found while parsing).
        `extra` are rows of other tables that travel in the same submit (e.g. otel_logs).
        """
        now = self.clock.now()
        outcome = Outcome()
        rows: list[dict[str, Any]] = []
        letters: list[dict[str, Any]] = []
        for index, (parsed, raw, parse_problems) in enumerate(records):
            event: BusinessEvent | None = None
            problems = list(parse_problems)
            if parsed is not None and not problems:
                event, problems = self.check_event(parsed, grant)
            if event is not None:
                rows.append(event.to_row(door, now))
                outcome.accepted += 1
                continue
            claimed = parsed.get("source") if isinstance(parsed, Mapping) else None
            ident = parsed.get("id") if isinstance(parsed, Mapping) else None
            outcome.rejected.append(Rejection(index, ident if isinstance(ident, str) else None, problems))
            letters.append(
                dead_letter_row(
                    Refusal(door=door, reason="; ".join(problems), raw=raw, source=str(claimed or "")),
                    grant.token_id,
                    now,
                )
            )
        tables: Rows = dict(extra or {})
        if rows:
            tables.setdefault("business_events", []).extend(rows)
        letters, keys = self._new_letters(letters, now)
        if letters:
            tables.setdefault("dead_letters", []).extend(letters)
        self.pipeline.submit(tables)
        self.repeats.remember(keys, now)
        if self.metrics is not None:
            self.metrics.ingested(tables)
            self.metrics.refused(door, len(outcome.rejected))
        return outcome

    def _new_letters(self, letters: list[dict[str, Any]], now: datetime) -> tuple[list[dict[str, Any]], list[bytes]]:
        """The dead letters not stored lately (RecentRefusals), copies within the request once, with their keys to
        remember once they are stored; every letter when the repeat window is 0."""
        if not self.repeats.enabled:
            return letters, []
        kept: list[dict[str, Any]] = []
        keys: dict[bytes, None] = {}  # in order, and a set for the copies of one request
        for letter in letters:
            key = self.repeats.key(letter["token_id"], letter["door"], letter["raw"])
            if key not in keys and not self.repeats.stored_lately(key, now):
                kept.append(letter)
                keys[key] = None
        return kept, list(keys)

    def refuse(self, refusals: list[Refusal], grant: Grant | None, extra: Rows | None = None) -> None:
        """Dead-letter refused records (and store `extra` rows) durably."""
        now = self.clock.now()
        tables: Rows = dict(extra or {})
        letters, keys = self._new_letters(
            [dead_letter_row(r, grant.token_id if grant else "", now) for r in refusals], now
        )
        if letters:
            tables.setdefault("dead_letters", []).extend(letters)
        self.pipeline.submit(tables)
        self.repeats.remember(keys, now)
        if self.metrics is not None:
            self.metrics.ingested(tables)
            for door, refused in Counter(r.door for r in refusals).items():
                self.metrics.refused(door, refused)

    def list_dead_letters(
        self, status: str | None, door: str | None, limit: int, offset: int, source: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of dead letters, each raw record cut to a preview (collector.deadletters.RAW_PREVIEW_CHARS)."""
        return list_dead_letters(self.pipeline.store, status, door, limit, offset, source)

    def dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        """One dead letter with its whole raw record, or None."""
        found = get_dead_letters(self.pipeline.store, [letter_id])
        return found[0] if found else None

    def discard(self, ids: list[str], note: str, actor: str) -> DiscardReport:
        """Give up on the pending dead letters named: each keeps its record, marked `discarded` with who and why.
        Replayed, already discarded and unknown ids are listed, not changed."""
        with self._letters_lock:
            return self._discard(ids, note, actor)

    def _discard(self, ids: list[str], note: str, actor: str) -> DiscardReport:
        letters = {d["id"]: d for d in get_dead_letters(self.pipeline.store, ids)}
        report = DiscardReport()
        now = self.clock.now()
        rows = []
        for ident in dict.fromkeys(ids):
            letter = letters.get(ident)
            if letter is None or letter["status"] != PENDING:
                report.not_pending.append({"id": ident, "status": letter["status"] if letter else "unknown"})
                continue
            rows.append(status_row(letter, DISCARDED, f"discarded by {actor}: {note}", now))
        if rows:
            self.pipeline.submit({"dead_letters": rows})
            report.discarded = len(rows)
        return report

    def replay(
        self, ids: list[str] | None = None, door: str | None = None, limit: int = 10_000, source: str | None = None
    ) -> ReplayReport:
        """Run pending dead letters (those named, else all of a door and/or source) through their door again;
        an empty list names none.

        The letters are read whole REPLAY_CHUNK at a time: a raw record refused whole can be 32 MiB."""
        with self._letters_lock:
            return self._replay(ids, door, limit, source)

    def _replay(self, ids: list[str] | None, door: str | None, limit: int, source: str | None) -> ReplayReport:
        store = self.pipeline.store
        if ids is None:
            listed, _ = list_dead_letters(store, "pending", door, limit, 0, source)
            ids = [str(d["id"]) for d in listed]
        report = ReplayReport()
        now = self.clock.now()
        for start in range(0, len(ids), REPLAY_CHUNK):
            for letter in get_dead_letters(store, ids[start : start + REPLAY_CHUNK]):
                if letter["status"] == PENDING:  # not replayed, not discarded
                    self._replay_one(letter, report, now)
        return report

    def _replay_one(self, letter: dict[str, Any], report: ReplayReport, now: datetime) -> None:
        """Run one whole dead letter through its door; store what it gives, or keep it pending with the new reason."""
        grant = self.tokens.by_id(letter["token_id"])
        replayer = self._replayers.get(letter["door"])
        if grant is None:
            problems = [f"the token that sent it ({letter['token_id']}) is no longer configured"]
            tables: Rows = {}
        elif replayer is None:
            problems = [f"no replayer for door {letter['door']!r}"]
            tables = {}
        else:
            result = replayer(letter["raw"], letter["content_type"], grant)
            problems, tables = result.problems, result.tables
        if problems:
            report.still_failing.append({"id": letter["id"], "errors": problems})
            tables = {"dead_letters": [status_row(letter, "pending", "replay failed: " + "; ".join(problems), now)]}
        else:
            report.replayed += 1
            tables.setdefault("dead_letters", []).append(status_row(letter, REPLAYED, "replayed", now))
        self.pipeline.submit(tables)
