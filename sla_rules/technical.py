"""Technical rules, from spans, arrivals, refusals and the alert delivery log: `integration-errors` (error rates),
`source-silence`, `ingest-refusals`, `slack-delivery` and `event-id-reuse` (sla_rules/id_reuse.py).

Each rule is one set-based query in ClickHouse over a window ending at the injected clock's now;
what it finds opens an exception per key (owner `integration` by default, kind `technical`), and
an exception whose condition no longer holds resolves itself with resolution `recovered` and the
figures that show it. Running twice opens nothing twice (ExceptionStore.open_many skips keys
already active), so evaluation is idempotent; both rules read a short window, so every run is a
full one (the `full` flag of the Evaluator protocol changes nothing here, but for `event-id-reuse`, which checks at
most every `every` unless `full`).

- integration-errors: per (ServiceName, SpanName, source: the ingest token's `tower.source`, so one token's spans
  never dilute another's), spans whose Timestamp lies in [now - window, now], each counted once by (TraceId,
  SpanId); flagged with at least `min_spans` spans and more than `error_ratio` of them with StatusCode `Error`.
  Key `service|span name`, or `service|span name|source` while another source's series holds that key.
- source-silence: an expected source sends no span and no business event for `window`. Last seen
  is the latest span Timestamp (by the ingest token's `tower.source` resource attribute) or event
  `time` of that source: business time, not arrival time, because a backfill (the demo's, or a
  system catching up after an outage) arrives now with old times, and arrival time would call a
  source alive that has sent nothing new. An expected source matches its own paths (`wms` is fed by
  `wms/dallas`). Expected sources: the rule's `params.sources`, else the settings'
  `expected_sources`, else every source system seen within `seen_within`. A source whose
  exception is still active stays watched even after it drops out of that list, so a long silence
  is never taken for a recovery. Key: the expected source (a system, e.g. `tms`).
- ingest-refusals: records refused into dead letters (by arrival time: a refusal is news whatever the record's
  own time) within `window`, at least `min_records` of them, grouped by the source they claimed when their token
  may send it, else by the token's one granted source, else as `token <id>` (REFUSAL_KEY), as the door keyed each
  letter from the grant its token had when it refused the record (a grant fixed since re-keys nothing). Counted
  by dead letter id without FINAL: a replay
  writes a new version of a letter with the same id, arrival time and key, so it counts once. Key: that source.
  The next step names the command that finds the letters: `--source KEY`, or `--token-id` for the letters whose
  token was granted the key alone but that claimed another source (Refusals.replay_step).
- slack-delivery: Slack messages (posts, updates, replies, uploads) recorded `failed` in the delivery log (no more
  attempts: `channel_not_found`, `not_in_channel`, attempts used up...) since a message last reached the channel,
  at least `min_messages` of them, the last within `window`. Key: the channel as routed (`#ops-warehouse`). It
  resolves `recovered` once a message reaches the channel after its last failure, not after a quiet window: a
  channel nothing was sent to since is not known to work. Its failed messages are sent again when someone asks
  (`tower alerts resend CHANNEL`, alerting/outbox.py `requeue_failed`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kernel.clock import Clock
from kernel.exceptions import ExceptionRecord, ExceptionStore, NewException
from kernel.model.events import SOURCE_PATTERN, source_covers, source_system
from kernel.store import Store
from kernel.store.base import stored_time, stored_time_or_none
from sla_rules.id_reuse import IdReuseCheck
from sla_rules.model import (
    DeliveriesRule,
    ErrorRateRule,
    EvaluatedTechnical,
    IdReuseRule,
    RefusalsRule,
    Rule,
    SilenceRule,
)
from sla_rules.report import EvaluationReport, RuleReport
from sla_rules.texts import RECOVERED, duration_text, iso

OwnerFor = Callable[[Rule, Mapping[str, str]], str]
# The OpenTelemetry exporter writes `Error`; older exporter versions wrote the enum name.
ERROR_STATUSES = ["Error", "STATUS_CODE_ERROR"]
REASON_CHARS = 300  # of each example reason kept in a refusal exception's context
SENDERS_NAMED = 3  # tokens a refusal exception's next step names one by one (`--token-id`); _REFUSALS reads one more

# Per (service, span name, source): the source is the ingest token's (`tower.source`, which the collector sets on
# every span it takes), so one token's spans never dilute another's. `watched` names series as `_series_text` does.
_ERROR_RATES = """
SELECT service, span_name, source, spans, errors,
       spans >= {min_spans:UInt64} AND errors / spans > {error_ratio:Float64} AS failing
FROM (
    SELECT ServiceName AS service, SpanName AS span_name,
           ResourceAttributes['tower.source'] AS source,
           uniqExact(TraceId, SpanId) AS spans,
           uniqExactIf(TraceId, SpanId, StatusCode IN {error_statuses:Array(String)}) AS errors
    FROM otel_traces
    WHERE Timestamp >= {since:DateTime64(9, 'UTC')} AND Timestamp <= {until:DateTime64(9, 'UTC')}
    GROUP BY service, span_name, source
)
WHERE failing OR concat(service, '\\0', span_name, '\\0', source) IN {watched:Array(String)}
ORDER BY service, span_name, source
"""

# Events received lately but dated after now, per source (see TechnicalEngine.dated_ahead).
_DATED_AHEAD = """
SELECT toString(source) AS source, count() AS n, max(time) AS latest
FROM business_events
WHERE time > {now:DateTime64(6, 'UTC')} AND time < {now:DateTime64(6, 'UTC')} + INTERVAL 1 DAY
  AND received_at >= {since:DateTime64(6, 'UTC')}
GROUP BY source
"""

_LAST_SEEN = """
SELECT source, max(last) AS last_seen
FROM (
    SELECT ResourceAttributes['tower.source'] AS source, max(toDateTime64(Timestamp, 6, 'UTC')) AS last
    FROM otel_traces
    WHERE Timestamp >= {since:DateTime64(9, 'UTC')} AND Timestamp <= {until:DateTime64(9, 'UTC')}
    GROUP BY source
    UNION ALL
    SELECT toString(source) AS source, max(time) AS last
    FROM business_events
    WHERE time >= {since:DateTime64(6, 'UTC')} AND time <= {until:DateTime64(6, 'UTC')}
    GROUP BY source
)
WHERE source != ''
GROUP BY source
"""

# Whose refusal a dead letter is: the source the record claimed when its token may send it (a system covers its
# paths: a wms token's `wms/dallas`); otherwise (a claim the token may not send, none, or one that is no source:
# `sap`, `ERP`, `wms/`) the token's granted source when it has exactly one, else `token <id>`. So a token can never
# open an exception in another source's name, nor a sender's garbage become a source of its own. A token whose
# grant the engine was not given (`token_sources`) is `token <id>`: its claims cannot be checked.
# The door stores that key with the letter (`refusal_key`, collector/deadletters.py refusal_key), from the grant
# the token had when it refused the record: fixing the grant afterwards re-keys none of the letters it refused
# (their exception keeps them, and no other opens for them in the name the fix just allowed), and a replay, a new
# version of the letter, keeps it. Only letters stored before migration 19 (an empty `refusal_key`) are keyed here
# from the token's current grant. Parameters: refusal_key_params(); the claim is the letter's `source` column.
REFUSAL_KEY = (
    "if(refusal_key != '', refusal_key,"
    " multiIf(source != '' AND match(source, {source_re:String})"
    " AND arrayExists(g -> source = g OR startsWith(source, concat(g, '/')),"
    " (arrayElement({token_grants:Array(Array(String))}, indexOf({token_ids:Array(String)}, token_id))"
    " AS token_grant)),"
    " source, length(token_grant) = 1, token_grant[1], concat('token ', token_id)))"
)
# `senders`: the tokens whose letters under a key claimed another source than the key (the key is their token's one
# source): `--source KEY` does not find those letters, `--token-id` does (Refusals.replay_step). `claimants`: the
# tokens whose letters claimed the key, or none (`--source KEY` finds those: the token was granted it). At most 4
# of each (SENDERS_NAMED + 1).
_REFUSALS = f"""
SELECT {REFUSAL_KEY} AS key,
       uniqExact(id) AS refused,
       min(received_at) AS first_at,
       max(received_at) AS last_at,
       arraySort(groupUniqArray(door)) AS doors,
       arraySort(groupUniqArray(3)(reason)) AS reasons,
       arraySort(groupUniqArrayIf(4)(token_id, source NOT IN (key, ''))) AS senders,
       arraySort(groupUniqArrayIf(4)(token_id, source IN (key, ''))) AS claimants
FROM dead_letters
WHERE received_at >= {{since:DateTime64(6, 'UTC')}} AND received_at <= {{until:DateTime64(6, 'UTC')}}
GROUP BY key
HAVING refused >= {{min_records:UInt64}} OR key IN {{watched:Array(String)}}
ORDER BY key
"""

# How many of each key's letters still wait (any age): read only when an exception opens or resolves.
_PENDING = f"""
SELECT key, count() AS pending
FROM (
    SELECT {REFUSAL_KEY} AS key, status
    FROM dead_letters FINAL
)
WHERE status = 'pending' AND key IN {{keys:Array(String)}}
GROUP BY key
"""


# Per channel with a failure within the window: the messages failed since the channel last took one (however long
# ago the first of them failed), when the last of them is within the window.
_DELIVERIES = """
WITH failing AS (
    SELECT DISTINCT channel FROM alert_deliveries
    WHERE status = 'failed' AND at >= {since:DateTime64(6, 'UTC')} AND at <= {until:DateTime64(6, 'UTC')}
)
SELECT f.channel AS channel,
       uniqExact(f.key) AS failed,
       min(f.at) AS first_at,
       max(f.at) AS last_at,
       arraySort(groupUniqArray(3)(f.error)) AS reasons,
       arraySort(groupUniqArray(5)(f.exception_id)) AS exceptions
FROM (
    SELECT channel, key, at, error, exception_id
    FROM alert_deliveries
    WHERE status = 'failed' AND at <= {until:DateTime64(6, 'UTC')} AND channel IN failing
) AS f
LEFT JOIN (
    SELECT channel, max(at) AS last_ok
    FROM alert_deliveries
    WHERE status = 'ok' AND at <= {until:DateTime64(6, 'UTC')} AND channel IN failing
    GROUP BY channel
) AS ok ON ok.channel = f.channel
WHERE f.at > ok.last_ok
GROUP BY channel
HAVING failed >= {min_messages:UInt64} AND last_at >= {since:DateTime64(6, 'UTC')}
ORDER BY channel
"""

# For channels with an active exception: the last message that reached each, and the last that failed.
_DELIVERED = """
SELECT channel, maxIf(at, status = 'ok') AS last_ok, maxIf(at, status = 'failed') AS last_failed
FROM alert_deliveries
WHERE channel IN {channels:Array(String)} AND at >= {since:DateTime64(6, 'UTC')} AND at <= {until:DateTime64(6, 'UTC')}
GROUP BY channel
"""


def refusal_key_params(token_sources: Mapping[str, str | Sequence[str]]) -> dict[str, Any]:
    """The parameters of REFUSAL_KEY: `token_sources` is ingest token id -> the source(s) it is granted."""
    grants = {token: [given] if isinstance(given, str) else list(given) for token, given in token_sources.items()}
    return {"token_ids": list(grants), "token_grants": list(grants.values()), "source_re": SOURCE_PATTERN}


def _series_text(service: str, span_name: str, source: str) -> str:
    """One error-rate series as _ERROR_RATES's `watched` names it."""
    return f"{service}\0{span_name}\0{source}"


@dataclass(frozen=True)
class FailedDeliveries:
    """The messages to one Slack channel that failed since it last took one."""

    channel: str
    failed: int
    first_at: datetime
    last_at: datetime
    reasons: list[str]  # up to 3 distinct errors
    exceptions: list[str]  # up to 5 of the exceptions whose messages failed


@dataclass(frozen=True)
class Refusals:
    """The records of one source refused into dead letters within the window."""

    key: str  # the source they claimed when their token may send it, else their token's one source, else `token <id>`
    refused: int
    first_at: datetime
    last_at: datetime
    doors: list[str]
    reasons: list[str]  # up to 3 distinct examples
    senders: list[str] = field(default_factory=list)  # tokens whose letters claimed another source than the key
    claimants: list[str] = field(default_factory=list)  # tokens whose letters claimed the key, or none

    @property
    def source(self) -> str:
        """The source, or '' when the records named none."""
        return "" if self.key.startswith("token ") else self.key

    def replay_step(self) -> str:
        """The commands that replay these letters after the fix. `--source KEY` finds the letters that claimed the
        key (or none, sent by a token granted it); those that claimed another source (or no source system) are under
        the key because their token was granted it alone, and `--source KEY` finds none of them: `--token-id` does,
        as it does every letter keyed `token <id>`."""
        sender = self.key.removeprefix("token ")
        if not self.source and sender:
            return f"`tower deadletters replay --token-id {sender}`"
        if not self.source or len(self.senders) > SENDERS_NAMED:  # no token known, or many
            return "`tower deadletters list --status pending`, then `tower deadletters replay IDS`"
        if not self.senders:  # every letter claimed the key (or none): the usual case
            return f"`tower deadletters replay --source {self.key}`"
        steps = [f"`tower deadletters replay --token-id {token}`" for token in self.senders]
        if set(self.claimants) - set(self.senders):  # other tokens' letters claimed the key
            steps.append(f"`tower deadletters replay --source {self.key}`")
        return " and ".join(steps)


@dataclass(frozen=True)
class SeriesRate:
    """Spans and error spans of one (service, span name) sent with one source's token, in the window."""

    service: str
    span_name: str
    source: str  # the ingest token's (`tower.source`); '' for spans written by another exporter
    spans: int
    errors: int
    failing: bool

    @property
    def series(self) -> tuple[str, str, str]:
        """What one exception is about: (service, span name, source)."""
        return (self.service, self.span_name, self.source)

    @property
    def key(self) -> str:
        """The usual exception key: `service|span name` (see TechnicalEngine._error_rate)."""
        return f"{self.service}|{self.span_name}"

    @property
    def ratio(self) -> float:
        """Errors over spans (0 with no spans)."""
        return round(self.errors / self.spans, 4) if self.spans else 0.0


@dataclass(frozen=True)
class Silence:
    """When an expected source was last seen, as of now."""

    source: str
    last_seen: datetime | None
    silent_for: timedelta | None  # None: not seen within the look-back
    silent: bool


class TechnicalEngine:
    """Evaluates the technical rules (ErrorRateRule, SilenceRule, RefusalsRule, DeliveriesRule, IdReuseRule) into
    exceptions; an Evaluator."""

    def __init__(
        self,
        store: Store,
        exceptions: ExceptionStore,
        clock: Clock,
        rules: Sequence[EvaluatedTechnical],
        expected_sources: Sequence[str] = (),
        seen_within: timedelta = timedelta(hours=168),
        owner_for: OwnerFor | None = None,
        token_sources: Mapping[str, str | Sequence[str]] | None = None,
    ) -> None:
        """`token_sources`: ingest token id -> the source(s) it is granted: which claims of its refused records are
        its own (REFUSAL_KEY). A token left out (or its letters, once it is removed) is keyed `token <id>`."""
        self.store = store
        self.token_sources = dict(token_sources or {})
        self.exceptions = exceptions
        self.clock = clock
        self.rules = [r for r in rules if r.enabled]
        self.expected_sources = list(expected_sources)
        self.seen_within = seen_within
        self.owner_for: OwnerFor = owner_for or (lambda rule, data: rule.owner)
        self._lock = threading.Lock()  # the scheduler and the API may evaluate at the same time
        self.id_reuse = IdReuseCheck(store, exceptions, self.owner_for)

    def evaluate(self, full: bool = False) -> EvaluationReport:
        """Evaluate every technical rule at the clock's now: open what holds, resolve what recovered."""
        with self._lock:
            begun = time.perf_counter()
            now = self.clock.now().astimezone(UTC)
            rules: dict[str, RuleReport] = {}
            for rule in self.rules:
                began = time.perf_counter()
                if isinstance(rule, ErrorRateRule):
                    opened, resolved, changed = self._error_rate(rule, now)
                elif isinstance(rule, RefusalsRule):
                    opened, resolved, changed = self._refusals(rule, now)
                elif isinstance(rule, DeliveriesRule):
                    opened, resolved, changed = self._deliveries(rule, now)
                elif isinstance(rule, IdReuseRule):
                    opened, resolved, changed = self.id_reuse.evaluate(rule, now, force=full)
                else:
                    opened, resolved, changed = self._silence(rule, now)
                rules[rule.id] = RuleReport(
                    cases_changed=changed,
                    opened=[e.id for e in opened],
                    resolved=[e.id for e in resolved],
                    duration_ms=round((time.perf_counter() - began) * 1000, 3),
                )
            duration = round((time.perf_counter() - begun) * 1000, 3)
            return EvaluationReport(rules=rules, full=full, evaluated_at=now, duration_ms=duration)

    # integration-errors ------------------------------------------------------------------------------

    def error_rates(self, rule: ErrorRateRule, now: datetime, watched: Sequence[str] = ()) -> list[SeriesRate]:
        """Series failing the rule at `now`, plus the `watched` keys' series whatever their state."""
        params = rule.params
        rows = self.store.query(
            _ERROR_RATES,
            {
                "since": now - params.window,
                "until": now,
                "min_spans": params.min_spans,
                "error_ratio": params.error_ratio,
                "error_statuses": ERROR_STATUSES,
                "watched": list(watched),
            },
        )
        return [
            SeriesRate(
                r["service"], r["span_name"], r["source"], int(r["spans"]), int(r["errors"]), bool(int(r["failing"]))
            )
            for r in rows
        ]

    def _error_rate(
        self, rule: ErrorRateRule, now: datetime
    ) -> tuple[list[ExceptionRecord], list[ExceptionRecord], int]:
        active = self.exceptions.active_by_key(rule.id)
        # an active exception is its series' by its context, whatever its key (those opened before series had a
        # source carry the source of their spans too, so an upgrade resolves and reopens none)
        by_series = {_series_of(record): record for record in active.values()}
        watched = sorted(_series_text(*s) for s in by_series)
        series = {s.series: s for s in self.error_rates(rule, now, watched)}
        window = duration_text(rule.params.window)
        keys = _error_keys([s for s in series.values() if s.failing and s.series not in by_series], set(active))
        found = [
            NewException(
                rule=rule.id,
                key=keys[s.series],
                kind=rule.kind,
                owner=self.owner_for(rule, {"service": s.service, "span_name": s.span_name, "source": s.source}),
                severity=rule.severity,
                context={
                    "service": s.service,
                    "span_name": s.span_name,
                    "source": s.source,
                    "spans": s.spans,
                    "errors": s.errors,
                    "ratio": s.ratio,
                    "window": window,
                    "min_spans": rule.params.min_spans,
                    "error_ratio": rule.params.error_ratio,
                    "since": iso(now - rule.params.window),
                    "until": iso(now),
                },
            )
            for s in series.values()
            if s.series in keys
        ]
        recovered = [record for key, record in by_series.items() if not (key in series and series[key].failing)]
        details: dict[str, dict[str, Any]] = {}
        for record in recovered:
            s = series.get(_series_of(record))
            details[record.id] = {
                "spans": s.spans if s else 0,
                "errors": s.errors if s else 0,
                "ratio": s.ratio if s else 0.0,
                "window": window,
            }
        opened = self.exceptions.open_many(found)
        resolved = self.exceptions.resolve_many(recovered, RECOVERED, details, actor="engine")
        return opened, resolved, len(opened) + len(resolved)

    # source-silence ----------------------------------------------------------------------------------

    def silences(self, rule: SilenceRule, now: datetime, watched: Sequence[str] = ()) -> list[Silence]:
        """Every expected source (and every `watched` one) with when it was last seen, as of `now`."""
        window = rule.params.window
        look_back = max(self.seen_within, window)
        rows = self.store.query(_LAST_SEEN, {"since": now - look_back, "until": now})
        last_by_source = {str(r["source"]): stored_time(r["last_seen"]) for r in rows}
        expected = list(rule.params.sources) or self.expected_sources
        if not expected:
            recent = now - self.seen_within
            expected = sorted({source_system(s) for s, last in last_by_source.items() if last >= recent})
        out: list[Silence] = []
        for source in dict.fromkeys([*expected, *watched]):
            seen = [last for s, last in last_by_source.items() if source_covers(source, s)]
            last_seen = max(seen) if seen else None
            silent_for = now - last_seen if last_seen is not None else None
            out.append(Silence(source, last_seen, silent_for, silent_for is None or silent_for >= window))
        return out

    def dated_ahead(self, since: datetime, now: datetime) -> dict[str, tuple[int, datetime]]:
        """Per source path, the events received since `since` whose time is after `now` (a day ahead at most, as the
        doors take them), and the latest such time: a sender whose clock or zone runs ahead, which the silence rule,
        reading business time, would otherwise call silent without saying why. The time index skips every granule
        without a future time, so this reads next to nothing."""
        rows = self.store.query(_DATED_AHEAD, {"since": since, "now": now})
        return {str(r["source"]): (int(r["n"]), stored_time(r["latest"])) for r in rows}

    def _silence(self, rule: SilenceRule, now: datetime) -> tuple[list[ExceptionRecord], list[ExceptionRecord], int]:
        active = self.exceptions.active_by_key(rule.id)
        found_by_source = {s.source: s for s in self.silences(rule, now, sorted(active))}
        window = duration_text(rule.params.window)
        look_back = duration_text(max(self.seen_within, rule.params.window))
        new = [s for s in found_by_source.values() if s.silent and s.source not in active]
        if new:  # a silence a person or a replay closed stays closed until the source is heard from again
            latest = self.exceptions.latest_by_key(rule.id, [s.source for s in new])
            new = [s for s in new if not _answered(latest.get(s.source), s.last_seen)]
        ahead = self.dated_ahead(now - rule.params.window, now) if new else {}
        found = [
            NewException(
                rule=rule.id,
                key=s.source,
                kind=rule.kind,
                owner=self.owner_for(rule, {"source": s.source}),
                severity=rule.severity,
                context={
                    "source": s.source,
                    "last_seen": iso(s.last_seen) if s.last_seen else None,
                    "silent_for": f"more than {look_back}" if s.silent_for is None else duration_text(s.silent_for),
                    "silent_for_seconds": None if s.silent_for is None else round(s.silent_for.total_seconds()),
                    "window": window,
                    **_ahead_context(s.source, ahead, now, window),
                },
            )
            for s in new
        ]
        recovered = [r for key, r in active.items() if key in found_by_source and not found_by_source[key].silent]
        details: dict[str, dict[str, Any]] = {}
        for record in recovered:
            s = found_by_source[record.key]
            assert s.last_seen is not None and s.silent_for is not None  # not silent: seen within the window
            details[record.id] = {
                "last_seen": iso(s.last_seen),
                "silent_since": record.context.get("last_seen"),
                "silent_for": duration_text(s.silent_for),
                "window": window,
            }
        opened = self.exceptions.open_many(found)
        resolved = self.exceptions.resolve_many(recovered, RECOVERED, details, actor="engine")
        return opened, resolved, len(opened) + len(resolved)

    # ingest-refusals ---------------------------------------------------------------------------------

    def refusals(self, rule: RefusalsRule, now: datetime, watched: Sequence[str] = ()) -> list[Refusals]:
        """Sources with at least `min_records` refused within the window ending at `now`, plus the `watched`
        keys that had any."""
        rows = self.store.query(
            _REFUSALS,
            {
                "since": now - rule.params.window,
                "until": now,
                "min_records": rule.params.min_records,
                "watched": list(watched),
                **self._tokens(),
            },
        )
        return [
            Refusals(
                str(r["key"]),
                int(r["refused"]),
                stored_time(r["first_at"]),
                stored_time(r["last_at"]),
                list(r["doors"]),
                [reason[:REASON_CHARS] for reason in r["reasons"]],
                list(r["senders"]),
                list(r["claimants"]),
            )
            for r in rows
        ]

    def pending_letters(self, keys: Sequence[str]) -> dict[str, int]:
        """Per key (a source or `token <id>`), its dead letters still pending, of any age (keyed as REFUSAL_KEY
        keys them: by the grant they were refused under)."""
        if not keys:
            return {}
        rows = self.store.query(_PENDING, {"keys": list(keys), **self._tokens()})
        return {str(r["key"]): int(r["pending"]) for r in rows}

    def _tokens(self) -> dict[str, Any]:
        return refusal_key_params(self.token_sources)

    def _refusals(self, rule: RefusalsRule, now: datetime) -> tuple[list[ExceptionRecord], list[ExceptionRecord], int]:
        active = self.exceptions.active_by_key(rule.id)
        found = {r.key: r for r in self.refusals(rule, now, sorted(active))}
        window = duration_text(rule.params.window)
        new = [r for key, r in found.items() if r.refused >= rule.params.min_records and key not in active]
        recovered = [
            record for key, record in active.items() if key not in found or found[key].refused < rule.params.min_records
        ]
        pending = self.pending_letters([r.key for r in new] + [record.key for record in recovered])
        opened = self.exceptions.open_many(
            [
                NewException(
                    rule=rule.id,
                    key=r.key,
                    kind=rule.kind,
                    owner=self.owner_for(rule, {"source": r.source}),
                    severity=rule.severity,
                    context={
                        "source": r.source,
                        # a root cause would hold back the source's business alerts (alerting/suppression.py):
                        # one bad record must not delay them
                        "root_cause": False,
                        "refused": r.refused,
                        "window": window,
                        "doors": r.doors,
                        "reasons": r.reasons,
                        "since": iso(r.first_at),
                        "last_refused": iso(r.last_at),
                        "pending": pending.get(r.key, 0),
                        "summary": f"{_records(r.refused)} refused in {window}: {r.reasons[0] if r.reasons else ''}",
                        "next_step": "fix what the reasons name at the sender (or the token), then replay: "
                        + r.replay_step()
                        + " (or discard what no fix will make valid)",
                    },
                )
                for r in new
            ]
        )
        details = {
            record.id: {
                "refused": found[record.key].refused if record.key in found else 0,
                "window": window,
                "pending": pending.get(record.key, 0),
            }
            for record in recovered
        }
        resolved = self.exceptions.resolve_many(recovered, RECOVERED, details, actor="engine")
        return opened, resolved, len(opened) + len(resolved)

    # slack-delivery ----------------------------------------------------------------------------------

    def failed_deliveries(self, rule: DeliveriesRule, now: datetime) -> list[FailedDeliveries]:
        """Channels with at least `min_messages` messages failed since the channel last took one (however long ago),
        the last of them within the window ending at `now`."""
        params = {"since": now - rule.params.window, "until": now, "min_messages": rule.params.min_messages}
        return [
            FailedDeliveries(
                str(r["channel"]),
                int(r["failed"]),
                stored_time(r["first_at"]),
                stored_time(r["last_at"]),
                [reason[:REASON_CHARS] for reason in r["reasons"]],
                list(r["exceptions"]),
            )
            for r in self.store.query(_DELIVERIES, params)
        ]

    def _deliveries(
        self, rule: DeliveriesRule, now: datetime
    ) -> tuple[list[ExceptionRecord], list[ExceptionRecord], int]:
        active = self.exceptions.active_by_key(rule.id)
        window = duration_text(rule.params.window)
        new = [f for f in self.failed_deliveries(rule, now) if f.channel not in active]
        opened = self.exceptions.open_many(
            [
                NewException(
                    rule=rule.id,
                    key=f.channel,
                    kind=rule.kind,
                    owner=self.owner_for(rule, {}),
                    severity=rule.severity,
                    context={
                        "channel": f.channel,
                        "root_cause": False,
                        "failed": f.failed,
                        "window": window,
                        "reasons": f.reasons,
                        "exceptions": f.exceptions,
                        "since": iso(f.first_at),
                        "last_failed": iso(f.last_at),
                        "summary": f"{_messages(f.failed)} to {f.channel} failed: {f.reasons[0] if f.reasons else ''}",
                        "next_step": f"make {f.channel} exist and invite the tower's bot to it (or route its owner"
                        f" elsewhere), then send the missed alerts again: `tower alerts resend {f.channel}` or the"
                        " button on this exception's dashboard page",
                    },
                )
                for f in new
            ]
        )
        recovered: list[ExceptionRecord] = []
        details: dict[str, dict[str, Any]] = {}
        if active:
            since = min(stored_time(record.opened_at) for record in active.values()) - rule.params.window
            rows = self.store.query(_DELIVERED, {"channels": sorted(active), "since": since, "until": now})
            for row in rows:
                record = active.get(str(row["channel"]))
                last_ok, last_failed = str(row["last_ok"]), str(row["last_failed"])
                # the epoch: none of that status; the text of these timestamps sorts as they do
                if record is not None and not last_ok.startswith("1970-01-01") and last_ok > last_failed:
                    recovered.append(record)
                    details[record.id] = {
                        "delivered_at": iso(stored_time(last_ok)),
                        "note": "failed messages are sent again only when asked: tower alerts resend CHANNEL",
                    }
        resolved = self.exceptions.resolve_many(recovered, RECOVERED, details, actor="engine")
        return opened, resolved, len(opened) + len(resolved)


def _series_of(record: ExceptionRecord) -> tuple[str, str, str]:
    """The (service, span name, source) an integration-errors exception is about, from its context."""
    context = record.context
    service, _, span_name = record.key.partition("|")
    return (
        str(context.get("service", service)),
        str(context.get("span_name", span_name)),
        str(context.get("source") or ""),
    )


def _error_keys(new: Sequence[SeriesRate], taken: set[str]) -> dict[tuple[str, str, str], str]:
    """The keys of newly failing series: `service|span name`, readable and what it always was; when that key is
    held (another source's series of the same service and span name is failing, e.g. a token sending spans under
    another system's service name), `service|span name|source`. Each exception keeps its key while it lasts."""
    keys: dict[tuple[str, str, str], str] = {}
    for s in sorted(new, key=lambda s: s.series):
        key, n = s.key, 1
        while key in taken:
            n += 1
            key = f"{s.key}|{s.source}" if n == 2 else f"{s.key}|{s.source}|{n - 1}"
        taken.add(key)
        keys[s.series] = key
    return keys


def _messages(n: int) -> str:
    return f"{n} Slack message" if n == 1 else f"{n} Slack messages"


def _records(n: int) -> str:
    return f"{n} record" if n == 1 else f"{n} records"


def _ahead_context(
    source: str, ahead: Mapping[str, tuple[int, datetime]], now: datetime, window: str
) -> dict[str, Any]:
    """What a silent source's exception says when its events do arrive, dated after now: how many, how far ahead."""
    found = [(n, latest) for path, (n, latest) in ahead.items() if source_covers(source, path)]
    if not found:
        return {}
    count, latest = sum(n for n, _ in found), max(latest for _, latest in found)
    return {
        "dated_ahead": count,
        "summary": f"not silent: {count} of its events arrived in the last {window} dated up to"
        f" {duration_text(latest - now)} after the tower's clock; business time says nothing happened yet",
        "next_step": "check the sender's clock and time zone (a local time sent as UTC, or with a wrong offset);"
        " the SLA rules date its events by the same wrong time",
    }


def _answered(record: ExceptionRecord | None, last_seen: datetime | None) -> bool:
    """Whether the source's latest silence exception was resolved by a person or a replay (not `recovered`) and
    the source has sent nothing dated after that since: the same silence, whose exception someone closed. A replay
    fills the gap with events dated before the exception opened; the engine opening another one at once would
    page the on-call again, and with the replay policy on, replay and reopen in a loop."""
    if record is None or record.status != "resolved" or record.resolution == RECOVERED:
        return False
    resolved = stored_time_or_none(record.resolved_at)
    return resolved is not None and (last_seen is None or last_seen <= resolved)
