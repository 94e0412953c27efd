"""Replay: ask a source to resend what the tower lost, then close the exception or escalate it.

For an active technical exception that names a source (a silent source, stale inventory, an error
burst, records refused into dead letters) a person or the policy asks for a replay. The service
works out what to ask for (the keys and the time range [from, to)), records the request under its
idempotency key, calls the source's webhook with a signed JSON body, retries 5xx, 408, 429 and
connection errors with exponential backoff on the injected clock, then watches for the replayed
events: events from that source, received after the request, with those keys (or, without keys,
with business times in the range and ids the tower did not hold when asked). When they arrive the
exceptions resolve as `replayed` with the evidence; when the wait runs out the request is `escalated`
and a note says so on each exception.

Sending is at least once: a call whose answer was lost is sent again with the same idempotency key,
which the receiver uses to do the work once. Asking again for the same source, keys and range
never makes a second request: it returns the first (and attaches the new exception to it; one
attached to a satisfied request is resolved by it). Only `again` asks anew, and only after the
last request for that thing failed or escalated: the next round, under a key derived from the first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from kernel.clock import Clock
from kernel.exceptions import ACTIVE, ExceptionFilter, ExceptionNotFound, ExceptionRecord, ExceptionStore
from kernel.model.events import SOURCE_SYSTEMS, parse_time, source_system
from kernel.store import Store
from kernel.store.base import stored_time, utc_text
from reconcilers.replay.requests import (
    AGAIN_STATUSES,
    CHAIN_FIELDS,
    ReplayRequest,
    ReplayRequests,
    idempotency_key,
    iso,
    round_key,
)
from reconcilers.replay.settings import ReplaySettings, ReplayWebhook
from reconcilers.replay.signing import ATTEMPT_HEADER, IDEMPOTENCY_HEADER, signed_headers
from reconcilers.replay.webhook import HttpxTransport, WebhookAnswer, WebhookTransport, WebhookUnreachable

log = logging.getLogger(__name__)

RESOLUTION = "replayed"
ACTOR = "replay"
MAX_KEYS = 1000
MAX_DEAD_LETTERS = 200
KEPT_RESPONSES = 20
RETRYABLE = frozenset({408, 425, 429})
# Where a rule's exception context says the gap began and ended (first present wins).
# source-silence: last_seen; inventory-stale: last_snapshot; integration-errors: since/until.
RANGE_START_FIELDS = ("from", "since", "last_seen", "last_snapshot", "started_at")
RANGE_END_FIELDS = ("to", "until")
_EVENT_KEY_COLUMNS = "[id, subject, order_id, shipment_id, invoice_id, sku]"

_MATCHED = f"""
SELECT uniqExact(source, id) AS events,
       min(received_at) AS first_received_at,
       max(received_at) AS last_received_at,
       groupUniqArrayArray(arrayFilter(k -> has({_EVENT_KEY_COLUMNS}, k), {{keys:Array(String)}})) AS matched
FROM business_events
WHERE (source = {{source:String}} OR startsWith(source, {{prefix:String}}))
  AND received_at >= {{after:DateTime64(6, 'UTC')}}
  AND ((notEmpty({{keys:Array(String)}}) AND hasAny({{keys:Array(String)}}, {_EVENT_KEY_COLUMNS}))
       OR (empty({{keys:Array(String)}}) AND time >= {{since:DateTime64(6, 'UTC')}}
           AND time < {{until:DateTime64(6, 'UTC')}}))
"""

# The distinct events of the source with a time in the range, whenever received: counted when a request without keys
# is made and again while it is watched, so an event the tower already had (a redelivered last snapshot) is no replay
# even after the store folds its two copies into the later one.
_IN_RANGE = """
SELECT uniqExact(source, id) AS events
FROM business_events
WHERE (source = {source:String} OR startsWith(source, {prefix:String}))
  AND time >= {since:DateTime64(6, 'UTC')} AND time < {until:DateTime64(6, 'UTC')}
"""

# The event id is read inside ClickHouse: a raw record refused whole can be 32 MiB, and 200 of them must not travel.
# '' when the raw text is no JSON object with a string `id` (a whole refused body, an OTLP request).
_DEAD_LETTERS = """
SELECT toString(id) AS id, received_at, door, reason,
       if(JSONType(raw, 'id') = 'String', JSONExtractString(raw, 'id'), '') AS event_id
FROM dead_letters FINAL
WHERE status = 'pending' AND (source = {source:String} OR startsWith(source, {prefix:String}))
  AND received_at >= {since:DateTime64(6, 'UTC')} AND received_at < {until:DateTime64(6, 'UTC')}
ORDER BY received_at, id
LIMIT {limit:UInt32}
"""


class NotReplayable(Exception):
    """The exception cannot be replayed as asked (why is in the message)."""


@dataclass(frozen=True)
class RequestOutcome:
    """What asking for a replay did: the request as it stands, whether this call created it, and what to say."""

    request: ReplayRequest
    created: bool
    message: str = ""


@dataclass
class RunSummary:
    """What one run of a replay job did, by request id."""

    sent: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    satisfied: list[str] = field(default_factory=list)
    escalated: list[str] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)  # due, left for the next run (its webhook gave no answer)

    def as_dict(self) -> dict[str, list[str]]:
        """The summary as JSON-ready lists."""
        return {name: list(getattr(self, name)) for name in self.__dataclass_fields__}


def exception_source(record: ExceptionRecord) -> str | None:
    """The source an exception is about: its context's `source`, else its key when that is a source path."""
    for candidate in (record.context.get("source"), record.key):
        if isinstance(candidate, str) and candidate and source_system(candidate) in SOURCE_SYSTEMS:
            return candidate
    return None


class ReplayService:
    """Requests replays, sends them (with retries), and closes or escalates them when the wait ends."""

    def __init__(
        self,
        store: Store,
        exceptions: ExceptionStore,
        clock: Clock,
        settings: ReplaySettings,
        transport: WebhookTransport | None = None,
    ) -> None:
        self.store = store
        self.exceptions = exceptions
        self.clock = clock
        self.settings = settings
        self.transport: WebhookTransport = transport or HttpxTransport()
        self.requests = ReplayRequests(store)
        # One lock for asking, sending and watching: the API, the policy and the jobs never send
        # the same request at the same time, and a check-then-insert is never interleaved.
        self._lock = threading.RLock()
        self._stopping = threading.Event()

    # asking ------------------------------------------------------------------------------------------

    def request(
        self,
        exception_id: str,
        keys: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        use_dead_letters: bool = True,
        note: str = "",
        actor: str = "operator",
        send: bool = True,
        again: bool = False,
    ) -> RequestOutcome:
        """Ask the exception's source to resend what was lost; the existing request when the same thing was asked.

        `keys` (business keys or event ids) and [`since`, `until`) default from the exception and,
        without keys, from the source's pending dead letters in the range. With `send`, the first call
        to the webhook is made now; otherwise the `replay-send` job makes it. With `again`, a request for
        the same thing that failed or escalated is superseded by a new round (NotReplayable while it is
        requested or sent, or once satisfied).
        Raises ExceptionNotFound, or NotReplayable with the reason.
        """
        record = self.exceptions.get(exception_id)
        if record.kind != "technical":
            raise NotReplayable(
                f"exception {record.id} is a {record.kind} exception; only technical exceptions (lost records "
                "at a source) are replayed"
            )
        if record.status not in ACTIVE:
            raise NotReplayable(f"exception {record.id} is {record.status}; only active exceptions are replayed")
        if record.context.get("pulled") is True:
            raise NotReplayable(
                f"exception {record.id} ({record.rule} {record.key!r}) is about a side read from a database (`pull`): "
                "its events are ignored, so resent events cannot fix it; look at the database or its query"
            )
        source = exception_source(record)
        if source is None:
            raise NotReplayable(f"exception {record.id} ({record.rule} {record.key!r}) names no source to replay from")
        found = self.settings.webhook_for(source)
        if found is None:
            raise NotReplayable(
                f"no replay webhook is configured for source {source!r} (set it in TOWER_REPLAY_WEBHOOKS)"
            )
        webhook_source, webhook = found
        now = self.clock.now().astimezone(UTC)
        start, end = self._range(record, since, until)
        wanted = _clean_keys(keys or [])
        letters: list[dict[str, Any]] = []
        if not wanted and use_dead_letters:
            letters = self._dead_letters(source, start, end)
            wanted = _clean_keys(k for letter in letters if 0 < len(k := str(letter["event_id"])) <= 256)
        first_id = idempotency_key(source, wanted, start, end)
        with self._lock:
            existing = self.requests.latest(first_id)
            if existing is not None and not again:
                return self._join(existing, record, actor, now)
            if existing is not None and existing.status not in AGAIN_STATUSES:
                raise NotReplayable(
                    f"replay {existing.id} asks {source} for the same keys and range and is {existing.status}: "
                    + (
                        "it is asked again only once it failed or escalated"
                        if existing.status != "satisfied"
                        else "its events arrived; other keys or another range make a new request"
                    )
                )
            number = int(existing.detail.get("round", 1)) + 1 if existing is not None else 1
            replay_id = round_key(first_id, number)
            chain: dict[str, Any] = {"round": number, "supersedes": existing.id} if existing is not None else {}
            reason = _reason(record, note)
            body = {
                "idempotency_key": replay_id,
                "source": source,
                "exception_id": record.id,
                "rule": record.rule,
                "exception_key": record.key,
                "keys": wanted,
                "from": iso(start),
                "to": iso(end),
                "reason": reason,
                "requested_at": iso(now),
                "dead_letters": [
                    {"id": letter["id"], "received_at": _iso_stored(letter["received_at"]), "reason": letter["reason"]}
                    for letter in letters
                ],
                **({"supersedes": existing.id} if existing is not None else {}),
            }
            answering = [record.id]
            if existing is not None:
                answering = [*existing.exception_ids, *([] if record.id in existing.exception_ids else [record.id])]
            created = self.requests.save(
                ReplayRequest(
                    id=replay_id,
                    exception_ids=answering,
                    rule=record.rule,
                    source=source,
                    webhook_source=webhook_source,
                    keys=wanted,
                    range_from=utc_text(start),
                    range_to=utc_text(end),
                    reason=reason,
                    status="requested",
                    requested_by=actor,
                    requested_at=utc_text(now),
                    next_attempt_at=utc_text(now),
                    body=orjson.dumps(body).decode(),
                    detail=chain
                    | ({} if wanted else {"stored_before": self._in_range(source, utc_text(start), utc_text(end))}),
                ),
                now,
            )
            what = f"{len(wanted)} keys" if wanted else "every event"
            message = f"replay {replay_id} requested from {source}: {what} in [{iso(start)}, {iso(end)})"
            if existing is not None:
                self.requests.save(replace(existing, detail=existing.detail | {"superseded_by": replay_id}), now)
                message += f", again (round {number}, superseding {existing.id}, which {existing.status})"
            self.exceptions.add_note(record.id, message, actor)
            if send:
                created = self._attempt(created, webhook, RunSummary())
        return RequestOutcome(created, created=True, message=message)

    def _join(self, existing: ReplayRequest, record: ExceptionRecord, actor: str, now: datetime) -> RequestOutcome:
        """The existing request for the same thing, with `record` attached (and resolved when it is satisfied)."""
        message = f"replay {existing.id} already asks {existing.source} for the same keys and range ({existing.status})"
        if record.id not in existing.exception_ids:
            existing = self.requests.save(replace(existing, exception_ids=[*existing.exception_ids, record.id]), now)
            self.exceptions.add_note(record.id, f"{message}; attached to it", actor)
            if existing.status == "satisfied":  # its events already arrived: no watch will come back to it
                evidence = {k: v for k, v in existing.detail.items() if k not in CHAIN_FIELDS}
                self.exceptions.resolve_many([record], RESOLUTION, {record.id: evidence}, actor=ACTOR)
        if existing.status in AGAIN_STATUSES:
            message += "; nothing was sent: to ask again, pass `again: true` (API) or --again (tower replay)"
        elif existing.status == "satisfied":
            message += "; its events arrived: other keys or another range make a new request"
        else:
            message += "; nothing was sent: it is in progress"
        return RequestOutcome(existing, created=False, message=message)

    def _range(
        self, record: ExceptionRecord, since: datetime | None, until: datetime | None
    ) -> tuple[datetime, datetime]:
        opened = stored_time(record.opened_at)
        end = _utc(until) if until else _context_time(record, RANGE_END_FIELDS) or opened
        lookback = timedelta(hours=self.settings.default_lookback_hours)
        start = _utc(since) if since else _context_time(record, RANGE_START_FIELDS) or end - lookback
        if start >= end:
            if since:  # a start the caller gave is never moved
                raise NotReplayable(f"the range is empty: from {iso(start)} is not before to {iso(end)}")
            start = end - lookback
        return start, end

    def _in_range(self, source: str, since: str, until: str) -> int:
        """How many distinct events of `source` the store holds with a time in [since, until)."""
        params = {"source": source, "prefix": f"{source}/", "since": since, "until": until}
        return int(self.store.query(_IN_RANGE, params)[0]["events"])

    def _dead_letters(self, source: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
        return self.store.query(
            _DEAD_LETTERS,
            {
                "source": source,
                "prefix": f"{source}/",
                "since": utc_text(since),
                "until": utc_text(until),
                "limit": MAX_DEAD_LETTERS,
            },
        )

    # sending -----------------------------------------------------------------------------------------

    def send_due(self) -> RunSummary:
        """Send every request whose (next) attempt is due: the `replay-send` job.

        A webhook that gave no answer (unreachable, timed out) gets no more requests in the same run: the
        others stay due for the next run, so a hanging source costs one timeout a run, not one per request.
        `stop()` ends a run between two requests."""
        summary = RunSummary()
        silent: set[str] = set()  # webhook URLs that gave no answer in this run
        with self._lock:
            for record in self.requests.due(self.clock.now()):
                if self._stopping.is_set():
                    break
                found = self.settings.webhook_for(record.source)
                if found is None:
                    self._fail(record, f"no replay webhook is configured for source {record.source!r} any more")
                    summary.failed.append(record.id)
                    continue
                url = str(found[1].url)
                if url in silent:
                    summary.deferred.append(record.id)
                    continue
                try:
                    saved = self._attempt(record, found[1], summary)
                except Exception:  # one bad request must not hold back the others; it stays due
                    log.exception("replay %s: the attempt failed unexpectedly", record.id)
                    continue
                if saved.responses and saved.responses[-1].get("status") is None:
                    silent.add(url)
        return summary

    def stop(self) -> None:
        """End a running `send_due` between two requests (a stopping tower does not wait out every timeout)."""
        self._stopping.set()

    def _attempt(self, record: ReplayRequest, webhook: ReplayWebhook, summary: RunSummary) -> ReplayRequest:
        now = self.clock.now().astimezone(UTC)
        attempt = record.attempts + 1
        body = record.body.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "control-tower-replay/1",
            IDEMPOTENCY_HEADER: record.id,
            ATTEMPT_HEADER: str(attempt),
            **signed_headers(webhook.secret.get_secret_value(), int(now.timestamp()), body),
        }
        answer: WebhookAnswer | None = None
        error = ""
        try:
            answer = self.transport.post(str(webhook.url), body, headers, webhook.timeout_seconds)
        except WebhookUnreachable as exc:
            error = str(exc)
        response = {"at": iso(now), "attempt": attempt, "status": answer.status if answer else None}
        response["body" if answer else "error"] = answer.body[:500] if answer else error[:500]
        record = replace(record, attempts=attempt, responses=[*record.responses, response][-KEPT_RESPONSES:])
        if answer is not None and 200 <= answer.status < 300:
            wait = timedelta(minutes=self.settings.wait_for(webhook))
            saved = self.requests.save(
                replace(
                    record,
                    status="sent",
                    next_attempt_at=None,
                    sent_at=utc_text(now),
                    wait_until=utc_text(now + wait),
                    expected_events=_expected_events(answer.body),
                ),
                now,
            )
            summary.sent.append(saved.id)
            return saved
        what = f"HTTP {answer.status}: {answer.body[:200]}" if answer else f"no answer: {error[:200]}"
        retryable = answer is None or answer.status >= 500 or answer.status in RETRYABLE
        if not retryable:
            summary.failed.append(record.id)
            return self._fail(record, f"the webhook refused replay {record.id} ({what})")
        if attempt >= self.settings.max_attempts:
            summary.failed.append(record.id)
            return self._fail(record, f"replay {record.id} got no success in {attempt} attempts (last: {what})")
        delay = min(self.settings.backoff_seconds * 2 ** (attempt - 1), self.settings.backoff_max_seconds)
        if answer is not None and answer.retry_after is not None:
            delay = max(delay, min(answer.retry_after, self.settings.backoff_max_seconds))
        saved = self.requests.save(replace(record, next_attempt_at=utc_text(now + timedelta(seconds=delay))), now)
        summary.retrying.append(saved.id)
        return saved

    def _fail(self, record: ReplayRequest, why: str) -> ReplayRequest:
        now = self.clock.now()
        saved = self.requests.save(
            replace(
                record,
                status="failed",
                next_attempt_at=None,
                closed_at=utc_text(now),
                detail=_chain(record) | {"failure": why},
            ),
            now,
        )
        self._note_all(saved, f"replay failed: {why}")
        return saved

    # watching ----------------------------------------------------------------------------------------

    def watch(self) -> RunSummary:
        """Close sent requests: resolve their exceptions when the replayed events are in, escalate when the
        wait ran out: the `replay-watch` job."""
        summary = RunSummary()
        with self._lock:
            now = self.clock.now().astimezone(UTC)
            for record in self.requests.waiting():
                evidence = self.evidence(record)
                if evidence["complete"]:
                    self._satisfy(record, evidence, now)
                    summary.satisfied.append(record.id)
                elif record.wait_until is not None and now >= stored_time(record.wait_until):
                    self._escalate(record, evidence, now)
                    summary.escalated.append(record.id)
        return summary

    def evidence(self, record: ReplayRequest) -> dict[str, Any]:
        """The events that answer a request so far: how many, which keys, when they came, and whether that
        is all that was asked for (every key; or, without keys, at least one event in the range; and at
        least the count the webhook announced, when it announced one)."""
        row = self.store.query(
            _MATCHED,
            {
                "source": record.source,
                "prefix": f"{record.source}/",
                "after": record.requested_at,
                "keys": record.keys,
                "since": record.range_from,
                "until": record.range_to,
            },
        )[0]
        events = int(row["events"])
        stored_before = record.detail.get("stored_before")
        if isinstance(stored_before, int) and not record.keys:  # only events the tower did not have when asked
            new = self._in_range(record.source, record.range_from, record.range_to) - stored_before
            events = min(events, max(0, new))
        matched = sorted(str(k) for k in row["matched"])
        missing = sorted(set(record.keys) - set(matched))
        # a webhook that announces 0 events says nothing was lost; without an announcement, one event will do
        enough = events >= (record.expected_events if record.expected_events is not None else 1)
        return {
            "replay_id": record.id,
            "source": record.source,
            "events": events,
            "expected_events": record.expected_events,
            "keys_matched": matched,
            "keys_missing": missing,
            "first_received_at": _iso_stored(row["first_received_at"]) if events else None,
            "last_received_at": _iso_stored(row["last_received_at"]) if events else None,
            "range": {"from": _iso_stored(record.range_from), "to": _iso_stored(record.range_to)},
            **({"stored_before": stored_before} if isinstance(stored_before, int) else {}),
            "complete": enough and not missing,
        }

    def _satisfy(self, record: ReplayRequest, evidence: dict[str, Any], now: datetime) -> None:
        detail = {k: v for k, v in evidence.items() if k != "complete"}
        self.requests.save(
            replace(record, status="satisfied", closed_at=utc_text(now), detail=_chain(record) | detail), now
        )
        active = [e for e in self._exceptions(record) if e.status in ACTIVE]
        self.exceptions.resolve_many(active, RESOLUTION, {e.id: detail for e in active}, actor=ACTOR)

    def _escalate(self, record: ReplayRequest, evidence: dict[str, Any], now: datetime) -> None:
        waited = stored_time(record.wait_until or record.requested_at) - stored_time(
            record.sent_at or record.requested_at
        )
        got = f"{evidence['events']} events"
        if record.expected_events:
            got += f" of {record.expected_events} announced"
        if evidence["keys_missing"]:
            got += f"; keys still missing: {', '.join(evidence['keys_missing'][:20])}"
        why = (
            f"replay {record.id} escalated: {record.source} accepted it at {_iso_stored(record.sent_at or '')} "
            f"but the replayed events did not all arrive within {round(waited.total_seconds() / 60)} minutes ({got})"
        )
        detail = _chain(record) | {k: v for k, v in evidence.items() if k != "complete"} | {"escalation": why}
        saved = self.requests.save(replace(record, status="escalated", closed_at=utc_text(now), detail=detail), now)
        self._note_all(saved, why)

    # policy ------------------------------------------------------------------------------------------

    def auto_request(self) -> RunSummary:
        """Ask for a replay of every active exception of the `auto_rules` whose source's webhook has `auto` on
        and that has no replay request yet: the `replay-auto` job."""
        summary = RunSummary()
        if not any(w.auto for w in self.settings.webhooks.values()):
            return summary
        candidates: list[ExceptionRecord] = []
        for rule in self.settings.auto_rules:
            for status in ACTIVE:
                records, _ = self.exceptions.search(ExceptionFilter(status=status, rule=rule, kind="technical"), 1000)
                candidates.extend(records)
        served = [
            r
            for r in candidates
            if r.context.get("pulled") is not True  # a side read from a database: resent events cannot fix it
            and (s := exception_source(r))
            and (w := self.settings.webhook_for(s))
            and w[1].auto
        ]
        asked = self.requests.exceptions_with_requests([r.id for r in served])
        for record in served:
            if record.id in asked:
                continue
            try:
                outcome = self.request(record.id, actor="policy")
            except NotReplayable:
                continue  # resolved meanwhile
            if outcome.created:
                summary.requested.append(outcome.request.id)
        return summary

    # helpers -----------------------------------------------------------------------------------------

    def _exceptions(self, record: ReplayRequest) -> list[ExceptionRecord]:
        found: list[ExceptionRecord] = []
        for exception_id in record.exception_ids:
            try:
                found.append(self.exceptions.get(exception_id))
            except ExceptionNotFound:
                continue
        return found

    def _note_all(self, record: ReplayRequest, text: str) -> None:
        for exception in self._exceptions(record):
            self.exceptions.add_note(exception.id, text, ACTOR)


def _chain(record: ReplayRequest) -> dict[str, Any]:
    """The fields of `record.detail` that link it to the other rounds of the same thing."""
    return {k: record.detail[k] for k in CHAIN_FIELDS if k in record.detail}


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _context_time(record: ExceptionRecord, names: Iterable[str]) -> datetime | None:
    for name in names:
        value = record.context.get(name)
        parsed = parse_time(value) if isinstance(value, str) else None
        if parsed is not None:
            return parsed.astimezone(UTC)
        if isinstance(value, str) and value:
            try:
                return stored_time(value)
            except ValueError:
                continue
    return None


def _clean_keys(keys: Iterable[str]) -> list[str]:
    cleaned = sorted({k.strip() for k in keys if k and k.strip()})
    if len(cleaned) > MAX_KEYS:
        raise NotReplayable(f"at most {MAX_KEYS} keys per replay; ask for a time range instead")
    return cleaned


def _expected_events(body: str) -> int | None:
    """`expected_events` from the webhook's JSON answer, when it announces how many events it will resend."""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    value = parsed.get("expected_events") if isinstance(parsed, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _reason(record: ExceptionRecord, note: str) -> str:
    """What the source's team reads: the rule and key, what the rule saw, and the person's note."""
    context = record.context
    if isinstance(context.get("summary"), str) and context["summary"]:
        text = f"{record.rule} {record.key} ({context['summary']})"
    else:
        facts = [f"{k} {context[k]}" for k in ("silent_for", "last_seen", "errors", "ratio") if context.get(k)]
        text = f"{record.rule} {record.key}" + (f" ({', '.join(str(f) for f in facts)})" if facts else "")
    return f"{text}: {note}" if note else text


def _iso_stored(text: str) -> str:
    return iso(stored_time(text)) if text else ""
