"""The Slack sender: delivers the outbox, one pass at a time, without losing or doubling a message.

One pass (`send_due`, run by the `alerts-send` job) reads the open messages (FINAL), groups them by
channel in enqueue order and sends the head of each channel when it is due; it never sleeps:

- **Order.** Strict FIFO per channel. An `update`/`reply` waits (and its channel with it) until its
  parent is sent, then uses the parent's channel id and ts (`chat.update`; `chat.postMessage` with
  `thread_ts`). A child whose parent failed is posted as a new message that takes the parent's place (bot
  mode): the full current alert (a reply's line on top), so an exception keeps one top-level message; one whose
  parent was never enqueued is recorded as failed. A pending update that a later update of the same message replaces
  is `superseded` without a call (only the newest content matters).
- **Pacing.** At most one call per channel per `channel_interval_seconds`, by the injected clock
  (remembered across restarts from the delivery log).
- **Retries.** 429: the message and its channel wait `Retry-After` (not counted as a failure). 5xx,
  connection errors, timeouts: exponential backoff up to `max_attempts`, then `failed`. Other API
  errors (`channel_not_found`, `not_in_channel`, ...) fail at once, except a refusal of the message's content
  (`invalid_blocks`, `msg_too_long`): it is sent again as plain text; and an update or reply whose message was
  deleted in Slack, which is posted anew and takes that message's place. Every attempt is in the log. A
  refused token or scope keeps the message waiting (backoff, not counted against `max_attempts`) until Slack
  accepts a call again (or `auth.test`, asked at most once a minute), when it is due at once; meanwhile
  `alerts-send` fails, so that the `tower-jobs` rule raises it.
- **Exactly once where Slack allows it.** Before each call the message is recorded `attempting`;
  after it, `sent` (with the ts) or its next state. A post whose call may have been carried out
  without us learning the ts (a timeout, a lost connection, a tower killed mid-call) is *in doubt*.
  Slack has no idempotency key for chat.postMessage, so every post carries the outbox key in its
  message metadata, and before an in-doubt post is re-sent the sender looks for that key in the
  channel's history (conversations.history / conversations.replies): found, it is recorded as sent
  and not re-sent. When that check cannot be made (webhook mode, a channel id not known yet, no
  history scope) `TOWER_SLACK_IN_DOUBT` decides: `resend` (default, at-least-once: never lost, rarely
  doubled) or `skip` (at-most-once: recorded as failed, never doubled). Updates are idempotent and
  are simply re-sent. A clean stop never leaves a message in doubt: the running pass finishes.

The WebClient is built with no retry handlers: the SDK's own handlers would retry inside one call,
by sleeping, and re-send a post Slack may already have carried out.
"""

from __future__ import annotations

import http.client
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.error import URLError

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web import SlackResponse
from slack_sdk.webhook import WebhookClient

from alerting.messages import PLAIN_MAX, named_line, plain_text, with_line
from alerting.outbox import OPEN, DeliveryStatus, OutboundMessage, Outbox, OutboxEntry, Posted, versions
from alerting.settings import SlackSettings
from kernel.clock import Clock
from kernel.jobs import JobContext, JobFunction, JobSettings

log = logging.getLogger(__name__)

METADATA_EVENT = "tower_alert"  # message metadata event_type; the payload carries the outbox key
HISTORY_PAGES = 5  # pages of 200 messages searched for an in-doubt post
HISTORY_MARGIN = timedelta(minutes=5)  # clock skew allowed between the tower and Slack
TRANSIENT_API_ERRORS = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})
MAYBE_DONE_ERRORS = frozenset({"internal_error", "fatal_error", "request_timeout"})  # "some of it may have succeeded"
# Slack refusing a message's content (its blocks, its length), not the channel or the token: the message is sent
# again as plain text (`plain_version`) rather than lost, since an alert its owner never sees helps nobody.
CONTENT_ERRORS = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_too_long", "invalid_attachments"})
# The message an update or a reply refers to is no longer in Slack (a person deleted it): the child is posted as a
# new message, which takes the deleted one's place for the updates and replies after it.
GONE_ERRORS = frozenset({"message_not_found", "cant_update_message", "thread_not_found"})
# Or the channel it was posted to is unknown by that id now (deleted and made again under its name; a Slack stand-in
# of an older run): the child is posted anew by the routed name, which reaches a channel of that name if there is one
# and fails like any post to a missing channel if not.
PARENT_GONE_ERRORS = GONE_ERRORS | {"channel_not_found"}
# A token or scope problem is the tower's configuration, not the message's, and a person fixes it: the message
# waits (retried at the backoff, never counted against max_attempts) and goes out once Slack accepts the token.
TOKEN_ERRORS = frozenset({"not_authed", "invalid_auth", "account_inactive", "token_revoked", "token_expired"})
CONFIGURATION_ERRORS = TOKEN_ERRORS | {"missing_scope", "no_permission"}
REFUSAL_RECHECK = timedelta(minutes=1)  # how often auth.test asks again while Slack refuses the token
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
_NEVER = datetime.min.replace(tzinfo=UTC)

Kind = Literal["post", "update", "reply"]


class SlackRefused(RuntimeError):
    """Slack refuses the tower's token or its scopes: no alert reaches it until the configuration is fixed."""


class DeliveryError(Exception):
    """Slack could not be reached or refused a call that cannot wait for the outbox (file uploads)."""


@dataclass(frozen=True)
class Outcome:
    """What one call to Slack came to."""

    ok: bool
    channel_id: str = ""
    ts: str = ""
    http_status: int = 0
    error: str = ""
    retry_after: float | None = None  # 429 (or `ratelimited`): wait this long
    transient: bool = False  # worth retrying with backoff (5xx, connection errors, timeouts)
    ambiguous: bool = False  # Slack may have carried the call out although we got no answer saying so


@dataclass
class SendReport:
    """What one pass did: messages sent (and in-doubt posts confirmed as delivered), retries scheduled,
    messages failed, messages still waiting, calls made, and when the next one is due."""

    sent: int = 0
    confirmed: int = 0
    superseded: int = 0
    retried: int = 0
    failed: int = 0
    waiting: int = 0
    calls: int = 0
    next_due: datetime | None = None

    def due_at(self, when: datetime) -> None:
        """Note a message that becomes due at `when`."""
        if self.next_due is None or when < self.next_due:
            self.next_due = when

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        data = asdict(self)
        data["next_due"] = self.next_due.isoformat() if self.next_due else None
        return data


def make_client(settings: SlackSettings) -> WebClient:
    """The WebClient the sender uses: `api_url`, `timeout_seconds`, the bot token and no retry handlers."""
    token = settings.bot_token.get_secret_value() if settings.bot_token else None
    base_url = settings.api_url if settings.api_url.endswith("/") else settings.api_url + "/"
    # urllib takes a float timeout although the SDK annotates an int
    return WebClient(token=token, base_url=base_url, timeout=settings.timeout_seconds, retry_handlers=[])  # type: ignore[arg-type]


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    for key, value in dict(headers).items():
        if key.lower() == name.lower():
            return str(value[0] if isinstance(value, list) else value)
    return None


MAX_RETRY_AFTER = 3600.0  # seconds: a longer Retry-After (a proxy's mistake) would hold a channel for good


def _retry_after(headers: Any) -> float:
    """The wait a 429's Retry-After asks for, in seconds: 1 when missing or not a number ("inf", "nan", a date),
    none when negative, at most MAX_RETRY_AFTER."""
    try:
        seconds = float(_header(headers, "Retry-After") or 1)
    except ValueError:
        return 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER) if math.isfinite(seconds) else 1.0


def api_outcome(response: SlackResponse) -> Outcome:
    """Classify a Web API answer that was not ok."""
    status = int(response.status_code)
    data = response.data if isinstance(response.data, dict) else {}
    error = str(data.get("error") or f"HTTP {status}")
    if status == 429 or error == "ratelimited":
        return Outcome(False, http_status=status, error=error, retry_after=_retry_after(response.headers))
    if status >= 500:  # a proxy's 502 may come after Slack posted the message: check before posting it again
        return Outcome(False, http_status=status, error=error, transient=True, ambiguous=True)
    if status == 200 and error in TRANSIENT_API_ERRORS:
        # Slack says of internal_error and fatal_error that some of the operation may have succeeded
        return Outcome(False, http_status=status, error=error, transient=True, ambiguous=error in MAYBE_DONE_ERRORS)
    if error in CONFIGURATION_ERRORS:
        return Outcome(False, http_status=status, error=error, transient=True)
    return Outcome(False, http_status=status, error=error)


def error_outcome(exc: BaseException) -> Outcome:
    """Classify an exception raised by a call (no HTTP answer)."""
    if isinstance(exc, SlackRequestError):
        return Outcome(False, error=f"request refused by the client: {exc}")
    reason = exc.reason if isinstance(exc, URLError) else exc
    if isinstance(reason, ConnectionRefusedError):
        return Outcome(False, error=f"connection refused: {reason}", transient=True)
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return Outcome(False, error="timed out", transient=True, ambiguous=True)
    if isinstance(reason, (OSError, http.client.HTTPException)):
        return Outcome(
            False, error=f"connection error: {type(reason).__name__}: {reason}", transient=True, ambiguous=True
        )
    return Outcome(False, error=f"{type(exc).__name__}: {exc}", transient=True, ambiguous=True)


class SlackSender:
    """Delivers the outbox to Slack through the Web API (bot token) or incoming webhooks."""

    def __init__(
        self,
        outbox: Outbox,
        settings: SlackSettings,
        clock: Clock,
        client: WebClient | None = None,
        *,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        """`sleep` waits in upload() (tests pass one that moves their clock); by default a wait that `stop()` ends."""
        self.outbox = outbox
        self.settings = settings
        self.clock = clock
        self.mode: Literal["bot", "webhook", "off"] = "bot" if client is not None else settings.mode
        self.client = client if client is not None else (make_client(settings) if self.mode == "bot" else None)
        self._stopping = threading.Event()
        self._sleep = sleep or self._stopping.wait  # only upload() waits; send_due never does
        self._interval = timedelta(seconds=settings.channel_interval_seconds)
        self._pass_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._next_allowed: dict[str, datetime] = {}
        self._channel_ids: dict[str, str] | None = None
        self._pacing_loaded = False
        self._webhooks: dict[str, WebhookClient] = {}
        self.refused: str | None = None  # Slack's last answer refusing the tower's token or scopes, until a success
        self._refusal_checked: datetime = _NEVER

    # -- one pass -------------------------------------------------------------------------------

    def send_due(self, limit: int = 200) -> SendReport:
        """Send what is due now, at most `limit` calls; never waits (what is not due stays for a later pass)."""
        with self._pass_lock:
            report = SendReport()
            entries = self.outbox.open_entries()
            if self.mode == "off":
                report.waiting = len(entries)
                return report
            self._load_state()
            self._recheck_refusal()
            lanes: dict[str, list[OutboxEntry]] = {}
            for entry in entries:
                lanes.setdefault(entry.message.channel, []).append(entry)
            known = self.outbox.get_many({e.message.parent for e in entries if e.message.parent})
            known.update({e.key: e for e in entries})
            for channel, lane in lanes.items():
                if self._stopping.is_set():  # a stopping tower: the rest wait in the outbox for the next start
                    report.waiting += len(lane)
                    continue
                newer = superseded(lane)
                for index, head in enumerate(lane):
                    if head.key in newer:
                        known[head.key] = self._supersede(head, newer[head.key], report)
                        continue
                    now = self.clock.now()
                    due = max(self._next_at(head, now), self._allowed(channel))
                    if due > now or report.calls >= limit:
                        report.due_at(due)
                        report.waiting += len(lane) - index
                        break
                    done = self._deliver(head, known, report)
                    if done is None:  # waiting for its parent: the channel waits with it
                        report.waiting += len(lane) - index
                        break
                    known[done.key] = done
                    if done.status in OPEN:  # retry scheduled: FIFO keeps the rest of the channel behind it
                        report.due_at(done.next_at)
                        report.waiting += len(lane) - index - 1
                        break
            return report

    def _next_at(self, entry: OutboxEntry, now: datetime) -> datetime:
        """When `entry` is due: at once when it waits for a token Slack now accepts (a call or auth.test said so),
        else its own time."""
        if self.refused is None and entry.error in CONFIGURATION_ERRORS:
            return min(entry.next_at, now)
        return entry.next_at

    def _recheck_refusal(self) -> None:
        """While Slack refuses the token, ask it again (auth.test) at most once per REFUSAL_RECHECK: a token fixed
        while no message is due (every one backing off, or failed) clears the refusal without waiting for one."""
        if self.refused is None or self.client is None:
            return
        now = self.clock.now()
        if now - self._refusal_checked < REFUSAL_RECHECK:
            return
        self._refusal_checked = now
        try:
            response = self.client.auth_test()
        except SlackApiError as exc:
            error = api_outcome(exc.response).error
            if error in CONFIGURATION_ERRORS:
                self.refused = error
            return
        except Exception:  # Slack unreachable: nothing learnt about the token
            log.debug("auth.test failed", exc_info=True)
            return
        if response.get("ok"):
            log.info("Slack accepts the tower's token again (auth.test)")
            self.refused = None

    def _deliver(self, entry: OutboxEntry, known: dict[str, OutboxEntry], report: SendReport) -> OutboxEntry | None:
        """Send one message (or settle it without a call); None when it must wait for its parent."""
        message = entry.message
        kind: Kind = message.action
        target: Posted | None = None
        notes: list[str] = []
        content = message
        if message.action != "post":
            parent = known.get(message.parent or "")
            if parent is None:
                return self._fail(entry, report, f"no message with key {message.parent!r} in the outbox (its parent)")
            if parent.status in OPEN:
                return None
            if self.mode == "webhook":
                kind = "post"
                content = self._standalone(entry, parent, in_place=False)
                notes.append(f"webhook mode: the {message.action} is posted as a new message")
            elif parent.ts:  # sent, or failed and its place taken by a later message (`_moved`)
                target = Posted(parent.channel_id, parent.ts)
            else:
                kind = "post"
                in_place = parent.status == "failed" or bool(parent.error)
                content = self._standalone(entry, parent, in_place)
                if parent.status == "failed":
                    why = "failed"
                elif parent.error:
                    why = f"is gone from Slack ({parent.error})"
                else:
                    why = "has no ts (posted by webhook)"
                where = " in its place, with the alert's current content" if in_place else ""
                notes.append(f"parent {parent.key} {why}: the {message.action} is posted as a new message{where}")
        if (entry.in_doubt or entry.status == "attempting") and kind != "update":
            settled, note = self._settle_in_doubt(entry, kind, target, report)
            if settled is not None:
                return settled
            notes.append(note)
        attempting = self.outbox.record(entry, status="attempting", attempts=entry.attempts + 1, in_doubt=False)
        started = time.monotonic()
        outcome = self._call(kind, content, target)
        duration_ms = (time.monotonic() - started) * 1000
        report.calls += 1
        parent = known.get(message.parent or "")
        if target is not None and parent is not None and outcome.error in PARENT_GONE_ERRORS:
            return self._parent_gone(attempting, parent, kind, outcome, known, report, duration_ms)
        note = "; ".join(n for n in notes if n)
        done = self._settle(attempting, kind, outcome, report, note, duration_ms, content)
        if done.status == "sent" and kind == "post" and parent is not None and self._moved(parent, done):
            # a failed post keeps its error (its own delivery did fail); a gone one is simply elsewhere now
            error = parent.error if parent.status == "failed" else ""
            known[parent.key] = self.outbox.record(parent, channel_id=done.channel_id, ts=done.ts, error=error)
        return done

    def _standalone(self, entry: OutboxEntry, parent: OutboxEntry, in_place: bool) -> OutboundMessage:
        """What a child of `parent` posts as a new message. An update is the whole alert already. A reply taking
        its parent's place (the parent failed or is gone) carries the alert's current content under its line, so
        the exception keeps one full message with buttons; any other reply posted on its own names its alert."""
        message = entry.message
        if message.action == "update" or entry.error in CONTENT_ERRORS:  # already sent again as plain text
            return message
        if in_place:
            current = self.outbox.latest_update(parent.key) or parent.message
            text, blocks = with_line(message.text, current.text, current.blocks)
            return replace(message, text=text, blocks=blocks)
        return replace(message, text=named_line(message.text, parent.message.text))

    def _parent_gone(
        self,
        entry: OutboxEntry,
        parent: OutboxEntry,
        kind: Kind,
        outcome: Outcome,
        known: dict[str, OutboxEntry],
        report: SendReport,
        duration_ms: float,
    ) -> OutboxEntry:
        """The message an update or reply refers to was deleted in Slack: the parent is marked gone (its ts
        cleared, the error kept) and the child goes out again at once, as a new message (`_deliver`), which the
        parent's later updates and replies then refer to (`_moved`)."""
        known[parent.key] = self.outbox.record(parent, ts="", error=str(outcome.error))
        again = self.outbox.record(entry, status="pending", next_at=self.clock.now(), error=outcome.error)
        note = f"the message it refers to is gone from Slack ({outcome.error}): sent again as a new message"
        self._log(again, "retry", kind, outcome, note, duration_ms)
        log.warning("Slack message %s to %s: %s", entry.key, entry.message.channel, note)
        report.retried += 1
        return again

    def _moved(self, parent: OutboxEntry, child: OutboxEntry) -> bool:
        """Whether `child`, just posted as a new message, takes the place of its parent: one that failed, or was
        deleted in Slack."""
        if self.mode != "bot" or parent.ts or not child.ts:
            return False
        return parent.status == "failed" or (parent.status == "sent" and bool(parent.error))

    def _settle(
        self,
        entry: OutboxEntry,
        kind: Kind,
        outcome: Outcome,
        report: SendReport,
        note: str,
        duration_ms: float,
        content: OutboundMessage | None = None,
    ) -> OutboxEntry:
        """Record what a call came to: sent, a retry (429 or backoff) or failed, and log the attempt. `content`:
        what the call sent, when not the entry's own message (`_standalone`)."""
        now = self.clock.now()
        channel = entry.message.channel
        self._pace(channel, now + self._interval)
        if outcome.error in CONFIGURATION_ERRORS:
            self.refused, self._refusal_checked = outcome.error, now
        if outcome.ok:
            self.refused = None
            sent = self.outbox.record(
                entry, status="sent", channel_id=outcome.channel_id, ts=outcome.ts, error="", next_at=now
            )
            if outcome.channel_id and kind == "post":
                with self._state_lock:
                    self._channel_ids = {**(self._channel_ids or {}), channel: outcome.channel_id}
            self._log(sent, "ok", kind, outcome, note, duration_ms)
            report.sent += 1
            return sent
        if outcome.retry_after is not None:
            wait = now + timedelta(seconds=outcome.retry_after)
            self._pace(channel, wait)
            later = self.outbox.record(entry, status="pending", next_at=wait, error=outcome.error)
            self._log(
                later, "retry", kind, outcome, f"rate limited: retry after {outcome.retry_after:g} s", duration_ms
            )
            report.retried += 1
            return later
        if outcome.error in CONFIGURATION_ERRORS:
            # not the message's fault: it waits for the fix, however long, without using up its attempts
            pause = self.backoff(entry.attempts)
            later = self.outbox.record(entry, status="pending", next_at=now + pause, error=outcome.error)
            note = f"waiting for Slack to accept the tower's token: retry in {pause.total_seconds():g} s"
            self._log(later, "retry", kind, outcome, note, duration_ms)
            report.retried += 1
            return later
        if outcome.transient and entry.errors + 1 < self.settings.max_attempts:
            backoff = self.backoff(entry.errors + 1)
            later = self.outbox.record(
                entry,
                status="pending",
                errors=entry.errors + 1,
                next_at=now + backoff,
                error=outcome.error,
                in_doubt=outcome.ambiguous and kind != "update",
            )
            self._log(later, "retry", kind, outcome, f"retry in {backoff.total_seconds():g} s", duration_ms)
            report.retried += 1
            return later
        plain = plain_version(content or entry.message) if outcome.error in CONTENT_ERRORS else None
        if plain is not None:
            again = self.outbox.record(entry, message=plain, status="pending", next_at=now, error=outcome.error)
            note = f"Slack refused the message's content ({outcome.error}): sent again as plain text"
            self._log(again, "retry", kind, outcome, note, duration_ms)
            log.warning("Slack refused message %s to %s (%s): sent as plain text", entry.key, channel, outcome.error)
            report.retried += 1
            return again
        errors = entry.errors + (1 if outcome.transient else 0)
        why = f"gave up after {errors} failed attempts" if outcome.transient else "Slack refused it"
        if outcome.ambiguous and kind != "update":
            why += " (the last attempt may have been delivered)"
        failed = self.outbox.record(entry, status="failed", errors=errors, error=outcome.error)
        self._log(failed, "failed", kind, outcome, why, duration_ms)
        log.warning("Slack message %s to %s failed: %s (%s)", entry.key, channel, outcome.error, why)
        report.failed += 1
        return failed

    def _log(
        self, entry: OutboxEntry, status: DeliveryStatus, kind: Kind, outcome: Outcome, note: str, duration_ms: float
    ) -> None:
        self.outbox.log(
            entry,
            status,
            action=kind,
            mode=self.mode,
            http_status=outcome.http_status,
            error=outcome.error,
            note=note,
            channel_id=outcome.channel_id,
            ts=outcome.ts,
            duration_ms=duration_ms,
        )

    def _supersede(self, entry: OutboxEntry, newer: str, report: SendReport) -> OutboxEntry:
        """Drop an update that a later update of the same message replaces (no call to Slack)."""
        done = self.outbox.record(entry, status="superseded", error="")
        note = f"superseded by {newer}: not sent, the later update carries the newer content"
        self.outbox.log(done, "superseded", action=entry.message.action, mode=self.mode, note=note)
        report.superseded += 1
        return done

    def _fail(self, entry: OutboxEntry, report: SendReport, error: str) -> OutboxEntry:
        failed = self.outbox.record(entry, status="failed", error=error)
        self.outbox.log(failed, "failed", action=entry.message.action, mode=self.mode, error=error)
        log.warning("Slack message %s failed: %s", entry.key, error)
        report.failed += 1
        return failed

    def backoff(self, failures: int) -> timedelta:
        """The wait after `failures` failed attempts: the initial wait doubled each time, capped."""
        seconds = self.settings.backoff_initial_seconds * 2 ** max(failures - 1, 0)
        return timedelta(seconds=min(seconds, self.settings.backoff_max_seconds))

    # -- posts in doubt ---------------------------------------------------------------------------

    def _settle_in_doubt(
        self, entry: OutboxEntry, kind: Kind, target: Posted | None, report: SendReport
    ) -> tuple[OutboxEntry | None, str]:
        """Decide about a post an earlier call may have delivered: (entry, note) when settled without a new
        post (confirmed sent, skipped, or the check itself to be retried), (None, note) when it is to be sent."""
        reason = self._cannot_confirm(entry, kind, target)
        if reason is None:
            channel_id = target.channel_id if target is not None else self._channel_id(entry.message.channel)
            found = self._find_in_history(entry, channel_id, target.ts if target is not None else None)
            report.calls += 1
            if isinstance(found, str):
                note = "confirmed in the channel history: an earlier attempt was delivered; not re-sent"
                sent = self.outbox.record(
                    entry,
                    status="sent",
                    channel_id=channel_id,
                    ts=found,
                    error="",
                    in_doubt=False,
                    next_at=self.clock.now(),
                )
                self._log(sent, "ok", kind, Outcome(True, channel_id=channel_id, ts=found, http_status=200), note, 0.0)
                report.confirmed += 1
                return sent, note
            if found is None:
                return None, "not found in the channel history: re-sent"
            reason = f"the history check failed: {found.error}"
            retry = found.retry_after is not None or found.error in TOKEN_ERRORS
            retry = retry or (found.transient and entry.errors + 1 < self.settings.max_attempts)
            if retry and found.error not in CONFIGURATION_ERRORS - TOKEN_ERRORS:  # no history scope: no use asking
                return self._retry_check(entry, kind, found, report), ""
        if self.settings.in_doubt == "skip":
            error = f"in doubt ({reason}): an earlier attempt may have been delivered; not re-sent (in_doubt=skip)"
            return self._fail(entry, report, error), error
        return None, f"re-sent after an unconfirmed attempt ({reason}); it may show twice"

    def _retry_check(self, entry: OutboxEntry, kind: Kind, found: Outcome, report: SendReport) -> OutboxEntry:
        """The history could not be read for now: the post stays in doubt and is looked for again later."""
        now = self.clock.now()
        if found.retry_after is not None:
            errors, wait = entry.errors, timedelta(seconds=found.retry_after)
        elif found.error in TOKEN_ERRORS:  # waits for the token to be fixed, like a post (`_settle`)
            self.refused, self._refusal_checked = found.error, now
            errors, wait = entry.errors, timedelta(seconds=self.settings.backoff_max_seconds)
        else:
            errors = entry.errors + 1
            wait = self.backoff(errors)
        later = self.outbox.record(
            entry, status="pending", errors=errors, next_at=now + wait, in_doubt=True, error=found.error
        )
        note = f"in doubt; the channel history could not be read: checking again in {wait.total_seconds():g} s"
        self._log(later, "retry", kind, found, note, 0.0)
        report.retried += 1
        return later

    def _cannot_confirm(self, entry: OutboxEntry, kind: Kind, target: Posted | None) -> str | None:
        """Why the history check cannot run for this post, None when it can."""
        if self.mode != "bot":
            return "webhook mode has no history"
        if not self.settings.confirm_in_doubt:
            return "confirm_in_doubt is off"
        if target is None and not self._resolve(entry.message.channel):
            return f"the id of {entry.message.channel} is not known"
        return None

    def _resolve(self, channel: str) -> str:
        """The channel's id, looked up by name with conversations.list when no post taught it yet ('' when
        not found or not allowed: that needs the channels:read scope)."""
        found = self._channel_id(channel)
        if found or self.client is None:
            return found
        name = channel.lstrip("#")
        cursor: str | None = None
        for _ in range(HISTORY_PAGES):
            try:
                response = self.client.conversations_list(
                    types="public_channel,private_channel", exclude_archived=True, limit=1000, cursor=cursor
                )
            except Exception as exc:  # every failure to reach Slack is an outcome
                log.info("cannot look up the id of %s: %s", channel, exc)
                return ""
            for listed in response.get("channels") or []:
                if listed.get("name") == name:
                    with self._state_lock:
                        self._channel_ids = {**(self._channel_ids or {}), channel: str(listed["id"])}
                    return str(listed["id"])
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        return ""

    def _find_in_history(self, entry: OutboxEntry, channel_id: str, thread_ts: str | None) -> str | Outcome | None:
        """The ts of the message carrying this entry's key in the channel (or thread), None when absent, an
        Outcome when the history could not be read."""
        assert self.client is not None
        oldest = f"{(entry.enqueued_at - HISTORY_MARGIN).timestamp():.6f}"
        cursor: str | None = None
        for _ in range(HISTORY_PAGES):
            args: dict[str, Any] = {"channel": channel_id, "oldest": oldest, "limit": 200, "include_all_metadata": True}
            if cursor:
                args["cursor"] = cursor
            try:
                if thread_ts:
                    response = self.client.conversations_replies(ts=thread_ts, **args)
                else:
                    response = self.client.conversations_history(**args)
            except SlackApiError as exc:
                return api_outcome(exc.response)
            except Exception as exc:  # every failure to reach Slack is an outcome
                return error_outcome(exc)
            for found in response.get("messages") or []:
                metadata = found.get("metadata") or {}
                payload = metadata.get("event_payload") or {}
                if metadata.get("event_type") == METADATA_EVENT and payload.get("key") == entry.key:
                    return str(found["ts"])
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor or not response.get("has_more"):
                break
        return None

    # -- calls ------------------------------------------------------------------------------------

    def _call(self, kind: Kind, message: OutboundMessage, target: Posted | None) -> Outcome:
        if self.mode == "webhook":
            return self._webhook_call(message)
        assert self.client is not None
        metadata = {
            "event_type": METADATA_EVENT,
            "event_payload": {"key": message.key, "exception_id": message.exception_id},
        }
        try:
            if kind == "update" and target is not None:
                # an update without blocks (one sent as plain text) clears the old ones: Slack keeps them otherwise
                response = self.client.chat_update(
                    channel=target.channel_id, ts=target.ts, text=message.text, blocks=message.blocks or []
                )
            elif kind == "reply" and target is not None:
                response = self.client.chat_postMessage(
                    channel=target.channel_id,
                    thread_ts=target.ts,
                    text=message.text,
                    blocks=message.blocks,
                    metadata=metadata,
                )
            else:
                response = self.client.chat_postMessage(
                    channel=message.channel, text=message.text, blocks=message.blocks, metadata=metadata
                )
        except SlackApiError as exc:
            return api_outcome(exc.response)
        except Exception as exc:  # every failure to reach Slack is an outcome
            return error_outcome(exc)
        channel_id = str(response.get("channel") or (target.channel_id if target else ""))
        return Outcome(True, channel_id=channel_id, ts=str(response.get("ts") or ""), http_status=response.status_code)

    def _webhook_call(self, message: OutboundMessage) -> Outcome:
        url = self.settings.webhook_for(message.channel)
        if url is None:
            return Outcome(False, error=f"no incoming webhook URL for {message.channel} (TOWER_SLACK_WEBHOOK_URLS)")
        client = self._webhooks.get(url)
        if client is None:
            # float timeout: see make_client
            client = WebhookClient(url, timeout=self.settings.timeout_seconds, retry_handlers=[])  # type: ignore[arg-type]
            self._webhooks[url] = client
        body: dict[str, Any] = {"text": message.text}
        if message.blocks:
            body["blocks"] = message.blocks
        try:
            response = client.send_dict(body)
        except Exception as exc:  # every failure to reach Slack is an outcome
            return error_outcome(exc)
        status = int(response.status_code)
        if status == 200:
            return Outcome(True, http_status=status)
        error = (response.body or f"HTTP {status}").strip()[:500]
        if status == 429:
            return Outcome(False, http_status=status, error=error, retry_after=_retry_after(response.headers))
        if status >= 500:  # as for the Web API: a 5xx may come after the message went out
            return Outcome(False, http_status=status, error=error, transient=True, ambiguous=True)
        return Outcome(False, http_status=status, error=error)

    def stop(self) -> None:
        """End any wait of upload() at once (it raises DeliveryError) and a send_due pass at its next channel: a
        stopping tower does not wait minutes for a report's backoff or a pass of calls timing out."""
        self._stopping.set()

    # -- file uploads -----------------------------------------------------------------------------

    def upload(self, channel: str, filename: str, content: bytes, title: str, comment: str = "") -> Posted:
        """Upload a file to a channel with files_upload_v2 (bot mode), waiting for the channel's pace and
        retrying 429/5xx/connection errors like the outbox does (a refused token fails at once); every attempt
        is in the delivery log.

        Blocks while it waits (it is meant for jobs such as the monthly report). Slack shares the file
        asynchronously, so the returned ts may be empty. Raises DeliveryError when it cannot be delivered.
        """
        if self.mode != "bot" or self.client is None:
            raise DeliveryError("file uploads need a bot token (TOWER_SLACK_BOT_TOKEN); webhooks cannot upload")
        self._load_state()
        key = f"upload:{filename}:{versions.next()}"
        channel_id = self._channel_id(channel) or channel
        attempt = errors = 0
        posted = Posted(channel_id, "")
        while True:
            wait = (self._allowed(channel) - self.clock.now()).total_seconds()
            if wait > 0:
                self._sleep(wait)
            if self._stopping.is_set():
                raise DeliveryError(f"uploading {filename} to {channel} abandoned: the tower is stopping")
            attempt += 1
            started = time.monotonic()
            try:
                response = self.client.files_upload_v2(
                    channel=channel_id, filename=filename, content=content, title=title, initial_comment=comment or None
                )
                outcome = Outcome(True, channel_id=channel_id, http_status=response.status_code)
                posted = _shared_at(response, channel_id)
            except SlackApiError as exc:
                outcome = api_outcome(exc.response)
            except Exception as exc:  # every failure to reach Slack is an outcome
                outcome = error_outcome(exc)
            now = self.clock.now()
            self._pace(channel, now + self._interval)
            if outcome.ok:
                status: Literal["ok", "retry", "failed"] = "ok"
                delay = 0.0
            elif outcome.retry_after is not None:
                status, delay = "retry", outcome.retry_after
            elif outcome.error in CONFIGURATION_ERRORS:
                # the token or its scopes: no retry in this run can succeed (the outbox's messages wait instead;
                # an upload's job runs again later)
                status, delay = "failed", 0.0
            elif outcome.transient and errors + 1 < self.settings.max_attempts:
                errors += 1
                status, delay = "retry", self.backoff(errors).total_seconds()
            else:
                status, delay = "failed", 0.0
            self.outbox.log_attempt(
                key=key,
                exception_id="",
                channel=channel,
                action="upload",
                mode=self.mode,
                status=status,
                attempt=attempt,
                http_status=outcome.http_status,
                error=outcome.error,
                note=f"{filename}: retry in {delay:g} s" if status == "retry" else filename,
                channel_id=posted.channel_id if outcome.ok else "",
                ts=posted.ts if outcome.ok else "",
                duration_ms=(time.monotonic() - started) * 1000,
            )
            if outcome.ok:
                return posted
            if status == "failed":
                why = outcome.error
                if why in CONFIGURATION_ERRORS:
                    why = (
                        f"Slack refuses the tower's token ({why}); check TOWER_SLACK_BOT_TOKEN and its scopes"
                        " (files:write)"
                    )
                raise DeliveryError(f"uploading {filename} to {channel} failed: {why}")
            self._pace(channel, now + timedelta(seconds=delay))

    # -- state ------------------------------------------------------------------------------------

    def _load_state(self) -> None:
        """Channel ids learned from earlier posts, and the channels' pace from the log (after a restart)."""
        if self._channel_ids is None:
            ids = self.outbox.channel_ids()
            with self._state_lock:
                self._channel_ids = {**ids, **(self._channel_ids or {})}
        if not self._pacing_loaded:
            window = max(self._interval, timedelta(seconds=1))
            for channel, last in self.outbox.last_attempts(window).items():
                self._pace(channel, last + self._interval)
            self._pacing_loaded = True

    def _pace_key(self, channel: str) -> str:
        """What the pace applies to: the channel, or in webhook mode the webhook (several channels may share one)."""
        if self.mode == "webhook":
            return "webhook " + (self.settings.webhook_for(channel) or channel)
        return channel

    def _allowed(self, channel: str) -> datetime:
        """When the next call to `channel` may be made."""
        with self._state_lock:
            return self._next_allowed.get(self._pace_key(channel), _NEVER)

    def _pace(self, channel: str, not_before: datetime) -> None:
        """No call to `channel` before `not_before`."""
        key = self._pace_key(channel)
        with self._state_lock:
            self._next_allowed[key] = max(self._next_allowed.get(key, _NEVER), not_before)

    def _channel_id(self, channel: str) -> str:
        """The Slack id of a channel: the channel itself when it is an id, else the id learned from a post."""
        if _CHANNEL_ID.fullmatch(channel):
            return channel
        with self._state_lock:
            return (self._channel_ids or {}).get(channel, "")


def plain_version(message: OutboundMessage) -> OutboundMessage | None:
    """The message as plain text (its blocks flattened, cut to PLAIN_MAX), for content Slack refused; None when it
    is plain text of that length already (nothing left to simplify: the refusal stands)."""
    if not message.blocks and len(message.text) <= PLAIN_MAX:
        return None
    text = plain_text(message.blocks, message.text) if message.blocks else message.text[: PLAIN_MAX - 1] + "…"
    return replace(message, text=text, blocks=None)


def superseded(lane: list[OutboxEntry]) -> dict[str, str]:
    """Pending updates of a channel that a later update of the same parent replaces: key -> the later key."""
    latest: dict[str, str] = {}
    replaced: dict[str, str] = {}
    for entry in reversed(lane):
        message = entry.message
        if message.action != "update" or not message.parent:
            continue
        if message.parent in latest and entry.status == "pending":
            replaced[entry.key] = latest[message.parent]
        else:
            latest.setdefault(message.parent, entry.key)
    return replaced


def _shared_at(response: SlackResponse, channel_id: str) -> Posted:
    """Where files_upload_v2 shared the file, if Slack already says (sharing is asynchronous)."""
    files = response.get("files") or []
    shares = (files[0].get("shares") or {}) if files else {}
    for visibility in ("public", "private"):
        shared: dict[str, list[dict[str, Any]]] = shares.get(visibility) or {}
        for shared_channel in ([channel_id] if channel_id in shared else []) + list(shared):
            if shared.get(shared_channel):
                return Posted(shared_channel, str(shared[shared_channel][0].get("ts", "")))
    return Posted(channel_id, "")


class AlertsSendSettings(JobSettings):
    """The `alerts-send` job (TOWER_JOB_ALERTS_SEND_*): one pass of the Slack sender every interval."""

    model_config = SettingsConfigDict(env_prefix="TOWER_JOB_ALERTS_SEND_")

    enabled: bool = Field(True, description="Send the alert outbox to Slack on a schedule (needs Slack settings).")
    interval_seconds: float = Field(2.0, gt=0, description="Seconds between passes over the outbox.")
    batch: int = Field(200, ge=1, description="Most calls to Slack in one pass.")


def send_job(sender: SlackSender) -> JobFunction:
    """The `alerts-send` job function over `sender`."""

    def alerts_send(context: JobContext) -> dict[str, Any]:
        """Send the alert outbox's due messages to Slack: FIFO per channel, paced, 429 and backoff by the clock."""
        limit = context.settings.batch if isinstance(context.settings, AlertsSendSettings) else 200
        report = sender.send_due(limit)
        if report.waiting and report.next_due is not None:
            # the next message comes due before the next pass (a channel's pacing, a short backoff): run then,
            # so that a channel gets its messages at the pace Slack allows, not one per interval
            soon = (report.next_due - context.now()).total_seconds()
            if soon < context.settings.interval_seconds:
                context.run_again_in(soon)
        if report.sent or report.confirmed or report.failed or report.retried:
            context.log.info(
                "sent %d, confirmed %d, superseded %d, retrying %d, failed %d, waiting %d",
                report.sent,
                report.confirmed,
                report.superseded,
                report.retried,
                report.failed,
                report.waiting,
            )
        if sender.refused is not None:
            # every message waits for the token: fail the job, so that the `tower-jobs` rule raises it
            waiting = report.waiting + report.retried
            raise SlackRefused(
                f"Slack refuses the tower's token ({sender.refused}): {waiting} messages waiting; fix"
                " TOWER_SLACK_BOT_TOKEN (or the Slack app's scopes) and they are sent, nothing needs resending"
            )
        return report.as_dict()

    return alerts_send
