"""Slack interactivity: the Acknowledge and Resolve buttons of alert messages.

Slack POSTs a form body `payload=<JSON>` signed with the app's signing secret. A request is
applied only when all of these hold, else it is refused and changes nothing:

- Slack interactivity is configured (TOWER_SLACK_SIGNING_SECRET), else 503;
- its `X-Slack-Request-Timestamp` is within five minutes of the tower's clock, else 401 (stale);
- its `X-Slack-Signature` verifies (slack-sdk's SignatureVerifier, on the tower's clock), else 401;
- the same signature was not seen within the last ten minutes, else 401 (replayed). Signatures are
  kept in the store (`slack_interactions`), so the guard survives a restart; with one tower
  process the check and the record are atomic (a lock); a timestamp older than five minutes is
  refused as stale anyway, so ten minutes of memory is enough;
- the Slack user is mapped to an operator (TOWER_ALERTING_SLACK_USERS), else 403.

What is kept: a request whose signature verifies (applied, ignored, an unknown user, a bad payload)
is recorded in `slack_interactions` with its outcome, the audit of Slack activity and the replay
guard's memory. A request refused before that (not configured, too large, no or stale timestamp,
bad signature) or as a replay is not stored: anyone can send those, and a row each would let them
fill the table. They are counted by outcome (`InteractionHandler.refusals`; per status in
`tower_http_requests_total`) and logged at most once a minute (RefusalLog): the first with its
reason, the others summed up in the next warning.

The action is applied through `ExceptionStore.acknowledge` / `resolve` (the path the API uses),
with the operator as the actor; then `on_change` is told, so the message update and its thread
line are enqueued at once instead of on the dispatcher's next run. An exception that is already
acknowledged or resolved answers 200 (nothing to do; the message shows its state).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import orjson
from slack_sdk.signature import Clock as SlackClock
from slack_sdk.signature import SignatureVerifier

from alerting.messages import ACTION_ACKNOWLEDGE, ACTION_RESOLVE
from alerting.policy_settings import AlertingSettings
from kernel.clock import Clock
from kernel.exceptions import ExceptionNotFound, ExceptionStore, InvalidTransition
from kernel.store import Store
from kernel.store.base import utc_text

log = logging.getLogger(__name__)

WINDOW = timedelta(minutes=5)
"""How far a request's timestamp may be from the tower's clock (Slack's recommendation)."""
REPLAY_MEMORY = timedelta(minutes=10)
"""How long signatures are remembered against replays (longer than WINDOW: older ones are stale)."""
MAX_BODY = 256 * 1024
REFUSAL_LOG_EVERY = timedelta(minutes=1)
"""At most one warning this often for requests refused without being recorded."""
UNRECORDED = frozenset({"not-configured", "too-large", "bad-timestamp", "stale", "bad-signature", "replayed"})
"""Outcomes of requests not recorded in `slack_interactions`: refused before the signature verified, or replays."""


@dataclass(frozen=True)
class InteractionResult:
    """The answer to one interactivity request and what happened."""

    status: int
    outcome: str  # acknowledged, resolved, already, ignored, unknown-exception, or why it was refused
    message: str = ""
    exception_id: str = ""
    operator: str = ""

    @property
    def changed(self) -> bool:
        """True when the request changed an exception."""
        return self.outcome in ("acknowledged", "resolved")


class _EpochClock(SlackClock):
    """The tower's clock as slack-sdk's verifier wants it: seconds since the epoch."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def now(self) -> float:
        return self.clock.now().timestamp()


class RefusalLog:
    """Counts refused requests by outcome and logs them at most once every `every` (on the injected clock): the
    first refusal of an interval with its reason, the others held and summed up in the next warning, which the
    next refusal or the next request of any kind after the interval writes."""

    def __init__(self, clock: Clock, every: timedelta = REFUSAL_LOG_EVERY) -> None:
        self.clock = clock
        self.every = every
        self.total: Counter[str] = Counter()  # every refusal since the start, by outcome
        self._held: Counter[str] = Counter()  # refusals not in a warning yet
        self._logged_at: datetime | None = None  # when the last warning was written
        self._lock = threading.Lock()

    def refused(self, result: InteractionResult) -> None:
        """Count one refusal; log it unless a warning was written within the interval."""
        now = self.clock.now()
        with self._lock:
            self.total[result.outcome] += 1
            if self._logged_at is not None and now - self._logged_at < self.every:
                self._held[result.outcome] += 1
                return
            held = self._take(now)
        log.warning("Slack interaction refused (%s): %s%s", result.outcome, result.message, held)

    def flush(self) -> None:
        """Write the summary of the held refusals once the interval is over."""
        now = self.clock.now()
        with self._lock:
            if not self._held or (self._logged_at is not None and now - self._logged_at < self.every):
                return
            held = self._take(now)
        log.warning("Slack interactions refused%s", held)

    def _take(self, now: datetime) -> str:
        """The held refusals as a sentence (empty when none), and a new interval from `now`."""
        held, since = self._held, self._logged_at
        self._held, self._logged_at = Counter(), now
        if not held or since is None:
            return ""
        outcomes = ", ".join(f"{outcome} {count}" for outcome, count in held.most_common())
        shown = since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        return f"; {held.total()} more since {shown} UTC, not logged one by one ({outcomes})"


class InteractionHandler:
    """Verifies, deduplicates and applies Slack interactivity requests."""

    def __init__(
        self,
        store: Store,
        exceptions: ExceptionStore,
        clock: Clock,
        settings: AlertingSettings,
        signing_secret: str | None,
        on_change: Callable[[str], None] | None = None,
        log_every: timedelta = REFUSAL_LOG_EVERY,
    ) -> None:
        """`log_every`: at most one warning this often for the refusals that are not recorded (RefusalLog)."""
        self.store = store
        self.exceptions = exceptions
        self.clock = clock
        self.settings = settings
        self.verifier = SignatureVerifier(signing_secret, _EpochClock(clock)) if signing_secret else None
        self.on_change = on_change
        self.refusal_log = RefusalLog(clock, log_every)
        self._lock = threading.Lock()

    @property
    def refusals(self) -> Counter[str]:
        """Requests refused without being recorded, by outcome, since the start."""
        return self.refusal_log.total

    def handle(self, body: bytes, headers: Mapping[str, str]) -> InteractionResult:
        """Verify and apply one request (body as received, headers in any case)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        timestamp = lowered.get("x-slack-request-timestamp", "")
        signature = lowered.get("x-slack-signature", "")
        with self._lock:
            result, payload = self._check(body, timestamp, signature)
            if result is None:
                result = self._apply(payload)
            if result.outcome not in UNRECORDED:
                self._record(timestamp, signature, payload, result)
        if result.outcome in UNRECORDED:
            self.refusal_log.refused(result)
            return result
        self.refusal_log.flush()
        if result.status != 200:
            log.warning("Slack interaction refused (%s): %s", result.outcome, result.message)
        else:
            log.info("Slack interaction: %s %s by %s", result.outcome, result.exception_id, result.operator or "-")
        if result.changed and self.on_change is not None:
            self.on_change(result.exception_id)
        return result

    def _check(self, body: bytes, timestamp: str, signature: str) -> tuple[InteractionResult | None, dict[str, Any]]:
        if self.verifier is None:
            return InteractionResult(503, "not-configured", "Slack interactivity is not configured"), {}
        if len(body) > MAX_BODY:
            return InteractionResult(413, "too-large", "request body too large"), {}
        try:
            sent_at = int(timestamp)
        except ValueError:
            return InteractionResult(401, "bad-timestamp", "missing or malformed X-Slack-Request-Timestamp"), {}
        now = self.clock.now().timestamp()
        if abs(now - sent_at) > WINDOW.total_seconds():
            return InteractionResult(401, "stale", f"request timestamp {sent_at} is more than 5 minutes away"), {}
        if not signature or not self._verifies(body, timestamp, signature):
            return InteractionResult(401, "bad-signature", "the request signature does not verify"), {}
        if self._seen(signature):
            return InteractionResult(401, "replayed", "this request was already received"), {}
        try:
            form = parse_qs(body.decode("utf-8"), strict_parsing=False)
            payload = orjson.loads(form["payload"][0])
            if not isinstance(payload, dict):
                raise ValueError("payload is not an object")
        except (KeyError, IndexError, ValueError, UnicodeDecodeError) as exc:
            return InteractionResult(400, "bad-payload", f"no JSON payload in the form body: {exc}"), {}
        return None, payload

    def _verifies(self, body: bytes, timestamp: str, signature: str) -> bool:
        # slack-sdk decodes the body as UTF-8 to sign it; Slack sends UTF-8, so other bytes never verify.
        assert self.verifier is not None
        try:
            return self.verifier.is_valid(body, timestamp, signature)
        except UnicodeDecodeError:
            return False

    def _seen(self, signature: str) -> bool:
        rows = self.store.query(
            "SELECT count() AS n FROM slack_interactions"
            " WHERE signature = {signature:String} AND received_at >= {since:DateTime64(6, 'UTC')}",
            {"signature": signature, "since": self.clock.now() - REPLAY_MEMORY},
        )
        return int(rows[0]["n"]) > 0

    def _apply(self, payload: dict[str, Any]) -> InteractionResult:
        user = payload.get("user") if isinstance(payload.get("user"), dict) else {}
        user_id = str((user or {}).get("id") or "")
        operator = self.settings.slack_users.get(user_id)
        if operator is None:
            return InteractionResult(
                403, "unknown-user", f"Slack user {user_id or '(none)'} is not mapped to an operator"
            )
        if payload.get("type") != "block_actions":
            return InteractionResult(200, "ignored", f"not a button action ({payload.get('type')})", operator=operator)
        actions = payload.get("actions") if isinstance(payload.get("actions"), list) else []
        action = next(
            (
                a
                for a in actions or ()
                if isinstance(a, dict) and a.get("action_id") in (ACTION_ACKNOWLEDGE, ACTION_RESOLVE)
            ),
            None,
        )
        if action is None:
            return InteractionResult(200, "ignored", "no acknowledge or resolve action", operator=operator)
        exception_id = str(action.get("value") or "")
        try:
            if action["action_id"] == ACTION_ACKNOWLEDGE:
                self.exceptions.acknowledge(exception_id, actor=operator)
                outcome = "acknowledged"
            else:
                self.exceptions.resolve(exception_id, actor=operator, resolution="fixed", note="resolved from Slack")
                outcome = "resolved"
        except ExceptionNotFound:
            return InteractionResult(200, "unknown-exception", f"no exception {exception_id}", exception_id, operator)
        except InvalidTransition as exc:
            return InteractionResult(200, "already", str(exc), exception_id, operator)
        return InteractionResult(200, outcome, "", exception_id, operator)

    def _record(self, timestamp: str, signature: str, payload: dict[str, Any], result: InteractionResult) -> None:
        user = payload.get("user") if isinstance(payload.get("user"), dict) else {}
        actions = payload.get("actions") if isinstance(payload.get("actions"), list) else []
        first = actions[0] if actions and isinstance(actions[0], dict) else {}
        try:
            sent_at = int(timestamp)
        except ValueError:
            sent_at = 0
        self.store.insert(
            "slack_interactions",
            [
                {
                    "received_at": utc_text(self.clock.now()),
                    "request_ts": sent_at,
                    "signature": signature[:200],
                    "user_id": str((user or {}).get("id") or "")[:100],
                    "operator": result.operator,
                    "action": str(first.get("action_id") or "")[:100],
                    "exception_id": result.exception_id,
                    "outcome": result.outcome,
                    "detail": result.message[:1000],
                }
            ],
        )
