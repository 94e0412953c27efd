"""The ingest service: what every door calls once it has decoded a request.

It validates business events, checks each against the token's sources, turns refusals into
dead letters, and hands everything to the pipeline in one durable submit. Doors register a
replayer so `tower deadletters replay` can run a refused record through its door again.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from collector.auth import Grant, TokenRegistry
from collector.deadletters import (
    DISCARDED,
    PENDING,
    REPLAY_FAILED,
    REPLAYED,
    Cursor,
    RecentRefusals,
    Refusal,
    dead_letter_row,
    get_dead_letters,
    list_dead_letters,
    pending_selection,
    raw_sizes,
    sourceless_tokens,
    status_row,
)
from collector.pipeline import IngestPipeline, NotStored, Overloaded, Rows
from kernel.clock import Clock
from kernel.metrics import TowerMetrics
from kernel.model.events import BusinessEvent, source_covers, validate_event


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


def _amount_as_number(event: BusinessEvent) -> BusinessEvent:
    """The event with an `amount` sent as text in the decimal form the store reads: validation reads it as Python's
    Decimal does (' 12.50 ', '1_000', '+5'), the store's Decimal(18, 4) column does not (the insert failed, and with
    it the whole request)."""
    amount = event.data.get("amount")
    if not isinstance(amount, str) or (number := str(Decimal(amount))) == amount:
        return event
    return event.model_copy(update={"data": {**event.data, "amount": number}})


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
    """Result of replaying dead letters: how many were replayed, those still failing with their reasons, and those
    named that were not pending (with their status, or `unknown`); for a replay of every pending letter (of a door,
    of a source), how many matched after the cursor given, how many of them remain, and the cursor to go on from
    (None when none was taken)."""

    replayed: int = 0
    still_failing: list[dict[str, Any]] = field(default_factory=list)
    not_pending: list[dict[str, str]] = field(default_factory=list)
    matched: int = 0
    remaining: int = 0
    cursor: str | None = None


class FairLock:
    """A lock taken in the order it was asked for (a ticket each). A thread releasing it and asking again, as a
    replay does between chunks, queues behind those already waiting: a plain Lock would most often let it take it
    straight back, and a discard could wait for the whole replay."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0  # the next ticket given
        self._serving = 0  # the ticket that holds the lock

    @property
    def waiting(self) -> int:
        """Threads waiting for the lock (not the one holding it)."""
        with self._cond:
            return max(self._next - self._serving - 1, 0)

    def __enter__(self) -> None:
        with self._cond:
            ticket = self._next
            self._next += 1
            while ticket != self._serving:
                self._cond.wait()

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


REPLAY_LIMIT = 1000  # pending letters one replay call takes at most (the API's default; the CLI calls again)
REPLAY_REQUEST_BYTES = 64 * 1024 * 1024  # and raw records of at most this size (at least one letter)
REPLAY_CHUNK = 200  # dead letters read whole and stored in one submit at a time ...
REPLAY_CHUNK_BYTES = 16 * 1024 * 1024  # ... whose raw records add up to at most this (a body can be 32 MiB)


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
        # discarded with its event stored): one at a time in this process (two API replicas can still race); a
        # replay holds it a chunk at a time, and a discard asked for meanwhile goes before its next chunk
        self._letters_lock = FairLock()

    def register_replayer(self, door: str, replayer: Replayer) -> None:
        """Let dead letters from `door` be replayed through `replayer`."""
        self._replayers[door] = replayer

    def check_event(self, raw: Mapping[str, Any], grant: Grant) -> tuple[BusinessEvent | None, list[str]]:
        """Validate one structured event, check its source against the token and its time against the window."""
        event, problems = validate_event(raw)
        source = raw.get("source") if isinstance(raw, Mapping) else None
        if (
            isinstance(source, str)
            and source
            and not grant.allows(source)
            and not any(p.startswith("source:") for p in problems)
        ):  # said with the other problems: a sender fixing one should not meet the next at its next try
            refused = f"source: {source!r} is not allowed for this token (it may send {', '.join(grant.sources)})"
            problems = [refused, *problems]
        if event is None or problems:
            return None, problems
        late_or_early = self.window.problem(event.time, self.clock.now())
        return (None, [late_or_early]) if late_or_early else (_amount_as_number(event), [])

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
        A refused record identical to one refused earlier in the request, or stored lately (RecentRefusals), is
        answered and counted but gets no dead letter row: a request of many copies of one bad record costs one.
        """
        now = self.clock.now()
        outcome = Outcome()
        rows: list[dict[str, Any]] = []
        letters: list[dict[str, Any]] = []
        keys: dict[bytes, None] = {}  # the letters' keys, in order (a set for the copies of one request)
        # (source, id) -> (index, row) of this request's events: a second, different event under one id would
        # replace the first in a merge, both answered as stored
        given: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        for index, (parsed, raw, parse_problems) in enumerate(records):
            event: BusinessEvent | None = None
            problems = list(parse_problems)
            if parsed is not None and not problems:
                event, problems = self.check_event(parsed, grant)
            if event is not None:
                row = event.to_row(door, now)
                first = given.setdefault((event.source, event.id), (index, row))
                if first[1] is row or first[1] == row:  # new, or the same event twice (stored once)
                    rows.append(row)
                    outcome.accepted += 1
                    continue
                problems = [
                    f"id: {event.id!r} is also the id of record {first[0]} of this request, a different event (the"
                    " tower keeps one event per source and id: give each event its own id)"
                ]
            claimed = parsed.get("source") if isinstance(parsed, Mapping) else None
            ident = parsed.get("id") if isinstance(parsed, Mapping) else None
            outcome.rejected.append(Rejection(index, ident if isinstance(ident, str) else None, problems))
            if self.repeats.enabled:
                key = self.repeats.key(grant.token_id, door, raw)
                if key in keys or self.repeats.stored_lately(key, now):
                    continue
                keys[key] = None
            letters.append(
                dead_letter_row(
                    Refusal(door=door, reason="; ".join(problems), raw=raw, source=str(claimed or "")),
                    grant.token_id,
                    now,
                    grant.sources,  # keyed by the grant it was refused under (refusal_key)
                )
            )
        tables: Rows = dict(extra or {})
        if rows:
            tables.setdefault("business_events", []).extend(rows)
        if letters:
            tables.setdefault("dead_letters", []).extend(letters)
        self.pipeline.submit(tables)
        self.repeats.remember(list(keys), now)
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
            [
                dead_letter_row(r, grant.token_id, now, grant.sources) if grant else dead_letter_row(r, "", now)
                for r in refusals
            ],
            now,
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
        self,
        status: str | None,
        door: str | None,
        limit: int,
        offset: int,
        source: str | None = None,
        token_id: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of dead letters, each raw record cut to a preview (collector.deadletters.RAW_PREVIEW_CHARS);
        `source` also finds the letters that claimed none sent by a token granted it (source_tokens); `token_id`
        only those that token sent, whatever they claimed."""
        store = self.pipeline.store
        return list_dead_letters(store, status, door, limit, offset, source, self.source_tokens(source), token_id)

    def source_tokens(self, source: str | None) -> list[str]:
        """The ids of the tokens granted `source` or only paths of it, among those that sent letters claiming no
        source (a body that could not be read): `--source erp` finds what the erp integration sent unread."""
        if not source:
            return []
        found = []
        for ident in sourceless_tokens(self.pipeline.store):
            grant = self.tokens.by_id(ident)
            if grant is not None and any(source_covers(source, granted) for granted in grant.sources):
                found.append(ident)
        return found

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
        self,
        ids: list[str] | None = None,
        door: str | None = None,
        limit: int = REPLAY_LIMIT,
        source: str | None = None,
        after: Cursor | None = None,
        token_id: str | None = None,
    ) -> ReplayReport:
        """Run pending dead letters through their door again: those named (an empty list names none; the others
        are listed in `not_pending` with their status), else the first `limit` pending ones of a door, source and/or
        sending token (as the listing matches them) after `after`, oldest first, and at most REPLAY_REQUEST_BYTES of raw
        records (at least one letter): the report's `remaining` and `cursor` say where the next call goes on.

        The letters are read whole and replayed a chunk at a time (REPLAY_CHUNK letters, REPLAY_CHUNK_BYTES of
        raw records: one can be 32 MiB), a chunk's rows stored in one submit. A discard waits for the chunk of
        its letter, not for the whole replay."""
        store = self.pipeline.store
        report = ReplayReport()
        if ids is not None:
            named = list(dict.fromkeys(ids))
            sizes = raw_sizes(store, named)
            selected = [(ident, sizes.get(ident, 0)) for ident in named]
            taken: list[dict[str, Any]] = []
        else:
            rows, report.matched = pending_selection(
                store, door, source, self.source_tokens(source), after, limit, token_id
            )
            taken = _within(rows, REPLAY_REQUEST_BYTES)
            selected = [(str(r["id"]), int(r["raw_bytes"])) for r in taken]
        now = self.clock.now()
        done = 0
        for chunk in _chunks(selected, REPLAY_CHUNK, REPLAY_CHUNK_BYTES):
            try:
                with self._letters_lock:
                    self._replay_chunk(chunk, named=ids is not None, report=report, now=now)
            except Overloaded:
                if done == 0:
                    raise
                break  # what is done stands; the caller goes on from the cursor after a while
            done += len(chunk)
        if ids is not None:
            report.matched = report.replayed + len(report.still_failing)
        else:
            report.remaining = max(report.matched - done, 0)
            if taken and done:
                last = taken[done - 1]
                report.cursor = str(Cursor(str(last["received_at"]), str(last["id"])))
            elif after is not None:
                report.cursor = str(after)
        return report

    def _replay_chunk(self, chunk: list[str], named: bool, report: ReplayReport, now: datetime) -> None:
        """Replay the letters of `chunk` still pending (a letter `named` that is not is listed in `not_pending`)
        and store what they give in as few submits as the writer's batch allows."""
        letters = {d["id"]: d for d in get_dead_letters(self.pipeline.store, chunk)}
        outcomes: list[tuple[dict[str, Any], list[str], Rows]] = []
        for ident in chunk:
            letter = letters.get(ident)
            if letter is None or letter["status"] != PENDING:  # replayed or discarded meanwhile, or unknown
                if named:
                    report.not_pending.append({"id": ident, "status": letter["status"] if letter else "unknown"})
                continue
            problems, tables = self._run(letter)
            outcomes.append((letter, problems, tables))
        batch: list[tuple[dict[str, Any], list[str], Rows]] = []
        rows = 0
        for outcome in outcomes:
            size = _rows(outcome[2]) + 1
            if batch and rows + size > self.pipeline.settings.batch_max_rows:
                self._store_replays(batch, report, now)
                batch, rows = [], 0
            batch.append(outcome)
            rows += size
        if batch:
            self._store_replays(batch, report, now)

    def _run(self, letter: dict[str, Any]) -> tuple[list[str], Rows]:
        """Run one whole dead letter through its door: the reasons it still fails, or the rows it gives."""
        grant = self.tokens.by_id(letter["token_id"])
        replayer = self._replayers.get(letter["door"])
        if grant is None:
            return [f"the token that sent it ({letter['token_id']}) is no longer configured"], {}
        if replayer is None:
            return [f"no replayer for door {letter['door']!r}"], {}
        result = replayer(letter["raw"], letter["content_type"], grant)
        return result.problems, result.tables

    def _store_replays(
        self, outcomes: list[tuple[dict[str, Any], list[str], Rows]], report: ReplayReport, now: datetime
    ) -> None:
        """Store what the letters gave with each one's new version in one submit: a letter replayed is marked
        `replayed` with its rows, one still failing stays pending with the new reason. When the store refuses the
        batch, each letter is stored alone, and one whose rows it refuses stays pending saying so."""
        tables: Rows = {}
        for letter, problems, given in outcomes:
            for table, rows in _outcome_rows(letter, problems, given, now).items():
                tables.setdefault(table, []).extend(rows)
        try:
            self.pipeline.submit(tables)
        except NotStored as exc:
            if len(outcomes) == 1:
                letter, problems, given = outcomes[0]
                if problems:
                    raise
                refused = [str(exc)[:1000]]
                self.pipeline.submit(_outcome_rows(letter, refused, {}, now))
                report.still_failing.append({"id": letter["id"], "errors": refused})
                return
            for outcome in outcomes:
                self._store_replays([outcome], report, now)
            return
        for letter, problems, _ in outcomes:
            if problems:
                report.still_failing.append({"id": letter["id"], "errors": problems})
            else:
                report.replayed += 1


def _outcome_rows(letter: dict[str, Any], problems: list[str], given: Rows, now: datetime) -> Rows:
    """What a replay stores for a letter: the rows it gave and its `replayed` version, or its pending version with
    the new reason."""
    if problems:
        return {"dead_letters": [status_row(letter, PENDING, REPLAY_FAILED + "; ".join(problems), now)]}
    tables: Rows = {table: list(rows) for table, rows in given.items()}
    tables.setdefault("dead_letters", []).append(status_row(letter, REPLAYED, "replayed", now))
    return tables


def _rows(tables: Rows) -> int:
    return sum(len(rows) for rows in tables.values())


def _within(rows: list[dict[str, Any]], max_bytes: int) -> list[dict[str, Any]]:
    """The first of `rows` (with `raw_bytes`) whose raw records add up to at most `max_bytes`, at least one."""
    taken: list[dict[str, Any]] = []
    total = 0
    for row in rows:
        total += int(row["raw_bytes"])
        if taken and total > max_bytes:
            break
        taken.append(row)
    return taken


def _chunks(letters: list[tuple[str, int]], max_letters: int, max_bytes: int) -> Iterator[list[str]]:
    """(id, raw size) in runs of at most `max_letters` and `max_bytes` (a bigger letter alone)."""
    chunk: list[str] = []
    total = 0
    for ident, size in letters:
        if chunk and (len(chunk) >= max_letters or total + size > max_bytes):
            yield chunk
            chunk, total = [], 0
        chunk.append(ident)
        total += size
    if chunk:
        yield chunk
