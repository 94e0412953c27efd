"""The dispatcher: reads the exception change feed and turns it into Slack messages in the outbox.

The job `alerts-dispatch` runs `Dispatcher.run` every 15 s (TOWER_JOB_ALERTS_DISPATCH_*). A run:

1. reads the change feed, `exception_audit` rows with `seq` past the stored cursor (minus a short
   overlap, for changes that became visible late) that are not handled yet (each exception's
   alert state remembers the last seq it handled), at most `feed_batch` of them (a full batch is
   handled through step 6 and the run goes on with the next, so a burst larger than a batch is not
   left for later runs);
2. decides for each newly opened exception whether it is alerted now (alerting/policy.py:
   routing, silences, maintenance windows, root-cause suppression) and looks again at those
   held back before (a silence ended, a window closed, a technical exception resolved);
3. groups what is to be alerted (alerting/grouping.py): one message each, or digests;
4. for later changes of a posted exception (acknowledged, assigned, note, resolved by a person,
   by a late event or by recovery, reopened): an `update` of its message (chat.update, the
   message re-rendered) and a `reply` line in its thread;
5. updates technical alerts whose count of held-back business exceptions changed, and
   re-notifies and escalates unacknowledged alerts (alerting/escalation.py);
6. enqueues every message in one go, then saves the alert states, digests and the cursor.

Every message has a key derived from what it is about (`exc:{id}:post`, `exc:{id}:audit:{seq}`,
`exc:{id}:update:{revision}`, `exc:{id}:repeat:{n}`, `exc:{id}:escalate`, `digest:{id}:post`,
...; `@{channel}` appended for a second channel) and the outbox keeps a key once, so a run repeated
after a crash between enqueueing and saving its state sends nothing twice.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from alerting.escalation import due_step
from alerting.grouping import Candidate, DigestPlan, Grouper, Plan, group_key
from alerting.messages import (
    AlertView,
    DigestView,
    Links,
    change_line,
    digest_blocks,
    digest_text,
    duration_text,
    escalation_line,
    escape,
    exception_blocks,
    mention,
    notification_text,
    repeat_line,
)
from alerting.outbox import OutboundMessage, Outbox
from alerting.policy import Conditions, Policy, Verdict
from alerting.policy_settings import AlertingSettings
from alerting.silences import SilenceStore
from alerting.state import HELD_BACK, AlertState, Digest, PolicyStore
from alerting.suppression import RootCauses
from kernel.clock import Clock
from kernel.exceptions import COLUMNS, ExceptionRecord
from kernel.jobs import JobContext, JobFunction
from kernel.routing import Routing
from kernel.store import Store

log = logging.getLogger(__name__)

NAME = "alerts-dispatch"
"""The job's name, and the name of its cursor in the store."""
INTERVAL_SECONDS = 15.0
"""The job's default interval (TOWER_JOB_ALERTS_DISPATCH_INTERVAL_SECONDS)."""

_FEED = """
SELECT a.exception_id AS exception_id, a.seq AS seq, a.actor AS actor, a.action AS action, a.detail AS detail
FROM exception_audit AS a
LEFT JOIN (
    SELECT exception_id, last_seq FROM alert_state FINAL
    WHERE exception_id IN (SELECT exception_id FROM exception_audit WHERE seq > {low:UInt64})
) AS s ON s.exception_id = a.exception_id
WHERE a.seq > {low:UInt64} AND a.seq > s.last_seq
ORDER BY a.seq
LIMIT {batch:UInt32}
"""


# verdicts under which a posted alert is neither repeated nor escalated
_PAUSING = frozenset({"silenced", "window", "held"})


@dataclass(frozen=True)
class Change:
    """One row of the change feed."""

    exception_id: str
    seq: int
    actor: str
    action: str
    detail: dict[str, Any]


@dataclass
class DispatchReport:
    """What one run did."""

    changes: int = 0
    posted: int = 0
    digests: int = 0
    digested: int = 0
    updates: int = 0
    replies: int = 0
    held_back: dict[str, int] = field(default_factory=dict)
    released: int = 0
    repeats: int = 0
    escalations: int = 0
    enqueued: int = 0
    cursor: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (the job's result)."""
        return dict(self.__dict__)

    def add(self, later: DispatchReport) -> None:
        """Add the report of a later batch of the same run (counts add up; the cursor is the later one's)."""
        for name, value in later.__dict__.items():
            if name == "held_back":
                for decision, count in value.items():
                    self.held_back[decision] = self.held_back.get(decision, 0) + count
            elif name == "cursor":
                self.cursor = value
            else:
                setattr(self, name, getattr(self, name) + value)

    @property
    def quiet(self) -> bool:
        """True when the run changed nothing."""
        return not (self.changes or self.enqueued or self.released or self.held_back)


def post_key(exception_id: str, channel: str, channels: Sequence[str]) -> str:
    """The outbox key of an exception's message in `channel` (the first channel has the plain key)."""
    base = f"exc:{exception_id}:post"
    return base if not channels or channel == channels[0] else f"{base}@{channel}"


def digest_post_key(digest: Digest, channel: str) -> str:
    """The outbox key of a digest's message in `channel`."""
    base = f"digest:{digest.id}:post"
    return base if channel == digest.channels[0] else f"{base}@{channel}"


def _suffix(channel: str, channels: Sequence[str]) -> str:
    return "" if not channels or channel == channels[0] else f"@{channel}"


class Dispatcher:
    """Turns exception changes into outbox messages under the alerting policy; one run at a time."""

    def __init__(
        self,
        store: Store,
        outbox: Outbox,
        routing: Routing,
        settings: AlertingSettings,
        clock: Clock,
        titles: Mapping[str, str],
        dashboard_url: str,
        silences: SilenceStore | None = None,
        runbooks: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.routing = routing
        self.settings = settings
        self.clock = clock
        self.titles = dict(titles)
        self.runbooks = dict(runbooks or {})  # rule id -> its runbook link
        self.links = Links(dashboard_url)
        self.states = PolicyStore(store)
        self.silences = silences or SilenceStore(store, clock, rules=self.titles)
        self.root_causes = RootCauses(routing.alerts.root_causes, settings.service_sources)
        self.policy = Policy(routing, self.root_causes)
        self.grouper = Grouper(self.states, settings)
        self._lock = threading.Lock()

    def run(self) -> DispatchReport:
        """One dispatch run at the clock's now (see the module's docstring): batches of at most `feed_batch`
        changes, each enqueued and saved before the next is read, until a batch is not full (the feed is read)
        or the cursor stops moving; the report adds them up."""
        with self._lock:
            report = _Run(self).execute()
            batch = report
            while batch.changes >= self.settings.feed_batch:
                cursor = batch.cursor
                batch = _Run(self).execute()
                report.add(batch)
                if batch.cursor <= cursor:  # a full batch that moved nothing on: leave the rest to the next run
                    break
            return report

    def title(self, rule: str) -> str:
        """The rule's title (its id when the rule is unknown)."""
        return self.titles.get(rule, rule)

    def records(self, ids: Iterable[str], where: str = "") -> dict[str, ExceptionRecord]:
        """The current exceptions with these ids (and the extra condition `where`)."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM exceptions FINAL WHERE id IN {{ids:Array(String)}} {where}", {"ids": wanted}
        )
        return {r["id"]: ExceptionRecord.from_row(r) for r in rows}

    def technical(self) -> list[tuple[ExceptionRecord, str]]:
        """Open (or acknowledged) technical exceptions with the source each is for, oldest first."""
        rows = self.store.query(
            f"SELECT {COLUMNS} FROM exceptions FINAL WHERE kind = 'technical' AND status != 'resolved'"
            " ORDER BY opened_at, id"
        )
        found: list[tuple[ExceptionRecord, str]] = []
        for row in rows:
            record = ExceptionRecord.from_row(row)
            source = self.root_causes.source_of(record)
            if source is not None:
                found.append((record, source))
        return found


class _Run:
    """The working state of one dispatch run."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher
        self.now = dispatcher.clock.now()
        self.report = DispatchReport()
        self.messages: list[OutboundMessage] = []
        self.before: dict[str, AlertState | None] = {}  # state before this run, of every state changed
        self.new: dict[str, AlertState] = {}
        self.records: dict[str, ExceptionRecord] = {}
        self.candidates: list[Candidate] = []
        self.pending: dict[str, tuple[int, list[Change]]] = {}  # candidate id -> (last seq, changes to thread)
        self.needs_update: set[str] = set()
        self.digests: list[Digest] = []
        self.held: Counter[str] = Counter()

    def execute(self) -> DispatchReport:
        d = self.d
        cursor = d.states.cursor(NAME)
        low = max(0, cursor - int(d.settings.feed_overlap_seconds * 1e9))
        feed = [
            Change(r["exception_id"], int(r["seq"]), r["actor"], r["action"], orjson.loads(r["detail"] or "{}"))
            for r in d.store.query(_FEED, {"low": low, "batch": d.settings.feed_batch})
        ]
        self.report.changes = len(feed)
        by_id: dict[str, list[Change]] = {}
        for change in feed:
            by_id.setdefault(change.exception_id, []).append(change)
        self.records.update(d.records(by_id))
        before = d.states.states(by_id)
        self.conditions = Conditions(self.now, d.silences.active(), d.technical())
        self.held.update(d.states.held_counts())

        for exception_id, changes in by_id.items():
            self._feed(exception_id, before.get(exception_id), changes)
        self._recheck()
        self._count_held()
        self._escalate()
        self._alert(d.grouper.plan(self.candidates, self.now))
        self._render_updates()
        self._escalate_digests()

        self.report.enqueued = d.outbox.enqueue(self.messages)
        d.states.save_digests(self.digests)
        d.states.save_states(self.new.values())
        if feed:
            self.report.cursor = max(cursor, max(c.seq for c in feed))
            if self.report.cursor > cursor:
                d.states.save_cursor(NAME, self.report.cursor, self.now)
        else:
            self.report.cursor = cursor
        return self.report

    # state bookkeeping

    def _set(self, state: AlertState, previous: AlertState | None) -> None:
        if state.exception_id not in self.before:
            self.before[state.exception_id] = previous
        self.new[state.exception_id] = state

    def _current(self, state: AlertState) -> AlertState:
        return self.new.get(state.exception_id, state)

    # 1. the change feed

    def _feed(self, exception_id: str, state: AlertState | None, changes: list[Change]) -> None:
        record = self.records.get(exception_id)
        if record is None:  # an audit row without its exception: nothing to say
            return
        last_seq = max(c.seq for c in changes)
        resolved = record.status == "resolved"
        reopened = any(c.action == "reopened" for c in changes)
        if state is not None and state.decision == "posted":
            for change in changes:
                self._thread_line(record, state, change)
            if any(c.action != "note" for c in changes):  # a note shows in the thread only
                self.needs_update.add(exception_id)
            current = state.with_(last_seq=last_seq, active=not resolved)
            if reopened and not resolved:  # a new episode: its escalation counts from the reopen, not the first post
                current = current.with_(alerted_at=self.now, notified_at=self.now, escalated=False, repeats=0)
            self._set(current, state)
            return
        if state is None or (reopened and not state.active):
            if resolved:
                quiet = AlertState(
                    exception_id, "quiet", "resolved before it was alerted", decided_at=self.now, last_seq=last_seq
                )
                self._set(quiet.with_(active=False), state)
                return
            self._decide(record, state, last_seq, changes)
            return
        # in a digest, or held back: no thread of its own; resolution ends it
        self._set(state.with_(last_seq=last_seq, active=state.active and not resolved), state)

    def _decide(
        self, record: ExceptionRecord, previous: AlertState | None, last_seq: int, changes: list[Change]
    ) -> None:
        verdict = self.d.policy.decide(record, self.conditions)
        if verdict.alert:
            self.candidates.append(Candidate(record, verdict, previous))
            self.pending[record.id] = (last_seq, changes)
            return
        self.report.held_back[verdict.decision] = self.report.held_back.get(verdict.decision, 0) + 1
        if verdict.decision == "unrouted":
            log.warning("exception %s (%s, %s) is not alerted: %s", record.id, record.rule, record.key, verdict.reason)
        self._set(self._held_state(record.id, verdict, last_seq, previous), previous)

    def _held_state(
        self, exception_id: str, verdict: Verdict, last_seq: int, previous: AlertState | None
    ) -> AlertState:
        base = previous or AlertState(exception_id, verdict.decision)
        return base.with_(
            decision=verdict.decision,
            reason=verdict.reason,
            channels=verdict.channels,
            decided_at=self.now,
            last_seq=max(last_seq, base.last_seq),
            active=True,
        )

    def _thread_line(self, record: ExceptionRecord, state: AlertState, change: Change) -> None:
        line = change_line(change.action, change.actor, change.detail, record)
        if line is None:
            return
        for channel in state.channels:
            parent = post_key(record.id, channel, state.channels)
            self.messages.append(
                OutboundMessage(
                    key=f"exc:{record.id}:audit:{change.seq}{_suffix(channel, state.channels)}",
                    channel=channel,
                    text=line,
                    action="reply",
                    parent=parent,
                    exception_id=record.id,
                )
            )
        self.report.replies += 1

    # 2. what was held back

    def _recheck(self) -> None:
        stored = self.d.states.active_states(HELD_BACK)
        states = [self._current(s) for s in stored]
        states = [s for s in states if s.active and s.decision in HELD_BACK and s.exception_id not in self.pending]
        missing = [s.exception_id for s in states if s.exception_id not in self.records]
        self.records.update(self.d.records(missing))
        for state in states:
            record = self.records.get(state.exception_id)
            if record is None or record.status == "resolved":
                self._set(state.with_(active=False), state)
                continue
            verdict = self.d.policy.decide(record, self.conditions)
            if verdict.alert:
                self.candidates.append(Candidate(record, verdict, state))
                self.pending[record.id] = (state.last_seq, [])
                self.report.released += 1
            elif (verdict.decision, verdict.reason, verdict.channels) != (state.decision, state.reason, state.channels):
                self._set(self._held_state(record.id, verdict, state.last_seq, state), state)

    # 3. held-back counts of technical alerts

    def _count_held(self) -> None:
        # the stored counts, moved by this run's changes: states changed, and candidates (alerted now)
        candidates = {c.record.id: c for c in self.candidates}
        for exception_id in set(self.new) | set(candidates):
            candidate = candidates.get(exception_id)
            previous = self.before.get(exception_id, candidate.previous if candidate else None)
            if previous is not None and previous.active and previous.decision == "held":
                self.held[previous.reason] -= 1
            current = None if candidate is not None else self.new[exception_id]
            if current is not None and current.active and current.decision == "held":
                self.held[current.reason] += 1
        technical = [record for record, _ in self.conditions.technical]
        states = self.d.states.states(r.id for r in technical)
        for record in technical:
            stored = states.get(record.id)
            if stored is None:
                continue
            state = self._current(stored)
            count = max(0, self.held.get(record.id, 0))
            if state.decision == "posted" and state.active and state.held != count:
                self.records.setdefault(record.id, record)
                self.needs_update.add(record.id)
                self._set(state.with_(held=count), stored)

    # 4. re-notification and escalation

    def _escalate(self) -> None:
        settings = self.d.settings
        severities = list(settings.escalation)
        if not severities:
            return
        posted = [self._current(s) for s in self.d.states.active_states(["posted"])]
        posted = [s for s in posted if s.active and s.alerted_at is not None]
        records = self._open_records([s.exception_id for s in posted], severities)
        for state in posted:
            record = records.get(state.exception_id)
            if record is None or self._paused(record):
                continue
            step = due_step(settings, record.severity, state.alerted_at, state.notified_at, state.escalated, self.now)
            if step is None:
                continue
            self.records[record.id] = record
            if step == "escalate":
                policy = settings.escalation[record.severity]
                assert policy.escalate is not None
                oncall = self._oncall(record, state.channels)
                line = escalation_line(oncall, policy.escalate)
                key = f"exc:{record.id}:escalate"
                self.needs_update.add(record.id)
                self._set(state.with_(escalated=True, notified_at=self.now), state)
                self.report.escalations += 1
            else:
                assert state.alerted_at is not None
                line = repeat_line(record.severity, self.now - state.alerted_at)
                key = f"exc:{record.id}:repeat:{state.repeats + 1}"
                self._set(state.with_(repeats=state.repeats + 1, notified_at=self.now), state)
                self.report.repeats += 1
            for channel in state.channels:
                self.messages.append(
                    OutboundMessage(
                        key=key + _suffix(channel, state.channels),
                        channel=channel,
                        text=line,
                        action="reply",
                        parent=post_key(record.id, channel, state.channels),
                        exception_id=record.id,
                    )
                )

    def _paused(self, record: ExceptionRecord) -> bool:
        """Whether a posted alert's repeats and escalation wait: a silence or a maintenance window made since
        holds it (or its root cause is open); once over, whatever fell due meanwhile is sent at the next pass."""
        return self.d.policy.decide(record, self.conditions).decision in _PAUSING

    def _open_records(self, ids: Sequence[str], severities: Sequence[str]) -> dict[str, ExceptionRecord]:
        if not ids:
            return {}
        rows = self.d.store.query(
            f"SELECT {COLUMNS} FROM exceptions FINAL WHERE id IN {{ids:Array(String)}}"
            " AND status = 'open' AND severity IN {severities:Array(String)}",
            {"ids": sorted(set(ids)), "severities": list(severities)},
        )
        return {r["id"]: ExceptionRecord.from_row(r) for r in rows}

    def _oncall(self, record: ExceptionRecord, channels: Sequence[str]) -> str | None:
        for destination in self.d.policy.destinations(record):
            if destination.oncall and (destination.channel in channels or not channels):
                return destination.oncall
        return self.d.routing.oncall_for(record.owner)

    # 5. alerts: one message each, or digests

    def _alert(self, plan: Plan) -> None:
        for candidate in plan.individual:
            self._post(candidate)
        for digest_plan in plan.digests:
            self._digest(digest_plan)

    def _post(self, candidate: Candidate) -> None:
        record, verdict, previous = candidate.record, candidate.verdict, candidate.previous
        last_seq, changes = self.pending.get(record.id, (0, []))
        channels = verdict.channels
        base = previous or AlertState(record.id, "posted")
        state = base.with_(
            decision="posted",
            reason="",
            channels=channels,
            group_key=group_key(record, channels),
            digest_id="",
            decided_at=self.now,
            alerted_at=self.now,
            notified_at=self.now,
            held=max(0, self.held.get(record.id, 0)) if record.kind == "technical" else 0,
            last_seq=max(last_seq, base.last_seq),
            active=True,
        )
        view = self._view(record, state)
        text, blocks = notification_text(record, view.title), exception_blocks(record, view)
        for channel in channels:
            self.messages.append(
                OutboundMessage(
                    key=post_key(record.id, channel, channels),
                    channel=channel,
                    text=text,
                    blocks=blocks,
                    exception_id=record.id,
                )
            )
        self.report.posted += 1
        if previous is not None and previous.decision in HELD_BACK:
            self._released_line(record, state, previous)
        for change in changes:
            if change.action != "opened":
                self._thread_line(record, state, change)
        self._set(state, previous)

    def _released_line(self, record: ExceptionRecord, state: AlertState, previous: AlertState) -> None:
        since = previous.decided_at.strftime("%H:%M UTC") if previous.decided_at else "earlier"
        # the reason and the holder's key come from the store and from senders (a span name): escaped, never mrkdwn
        reason = escape(previous.reason)
        if previous.decision == "silenced":
            why = f"silenced (silence {reason}) since {since}; the silence is over"
        elif previous.decision == "window":
            why = f"held back by maintenance window {reason} since {since}; the window is over"
        elif previous.decision == "held":
            holder = self.records.get(previous.reason)
            what = escape(f"{self.d.title(holder.rule)} ({holder.key})") if holder else f"exception {reason}"
            why = f"held back since {since} while {what} was open; that is resolved and this is still open"
        else:
            why = f"not alerted since {since}: {reason}"
        for channel in state.channels:
            self.messages.append(
                OutboundMessage(
                    key=f"exc:{record.id}:released:{previous.decided_at.isoformat() if previous.decided_at else ''}"
                    + _suffix(channel, state.channels),
                    channel=channel,
                    text=f":hourglass: This alert was {why}.",
                    action="reply",
                    parent=post_key(record.id, channel, state.channels),
                    exception_id=record.id,
                )
            )

    def _digest(self, plan: DigestPlan) -> None:
        digest = plan.digest
        view = DigestView(
            owner=digest.owner,
            rule=digest.rule,
            title=self.d.title(digest.rule),
            severity=digest.severity,
            count=digest.count,
            keys=digest.keys,
            started_at=digest.started_at,
            window=self.d.settings.group_window,
            threshold=self.d.settings.group_threshold,
        )
        text, blocks = digest_text(view), digest_blocks(view, self.d.links)
        for channel in digest.channels:
            parent = digest_post_key(digest, channel)
            if plan.new:
                message = OutboundMessage(parent, channel, text, blocks)
            else:
                key = f"digest:{digest.id}:update:{digest.revision}" + _suffix(channel, digest.channels)
                message = OutboundMessage(key, channel, text, blocks, action="update", parent=parent)
            self.messages.append(message)
        if plan.new:
            self.report.digests += 1
        else:
            self.report.updates += 1
        for member in plan.members:
            record, previous = member.record, member.previous
            last_seq, _ = self.pending.get(record.id, (0, []))
            base = previous or AlertState(record.id, "digest")
            state = base.with_(
                decision="digest",
                reason="",
                channels=digest.channels,
                group_key=digest.group_key,
                digest_id=digest.id,
                decided_at=self.now,
                alerted_at=self.now,
                notified_at=self.now,
                last_seq=max(last_seq, base.last_seq),
                active=True,
            )
            self._set(state, previous)
        self.report.digested += len(plan.members)
        self.digests.append(digest)

    # 6. message updates

    def _render_updates(self) -> None:
        for exception_id in sorted(self.needs_update):
            state = self.new.get(exception_id)
            record = self.records.get(exception_id)
            if state is None or record is None or state.decision != "posted":
                continue
            state = state.with_(revision=state.revision + 1)
            self.new[exception_id] = state
            view = self._view(record, state)
            text, blocks = notification_text(record, view.title), exception_blocks(record, view)
            for channel in state.channels:
                self.messages.append(
                    OutboundMessage(
                        key=f"exc:{record.id}:update:{state.revision}" + _suffix(channel, state.channels),
                        channel=channel,
                        text=text,
                        blocks=blocks,
                        action="update",
                        parent=post_key(record.id, channel, state.channels),
                        exception_id=record.id,
                    )
                )
            self.report.updates += 1

    def _view(self, record: ExceptionRecord, state: AlertState) -> AlertView:
        escalated = mention(self._oncall(record, state.channels)) if state.escalated else None
        held = state.held if record.kind == "technical" and record.status != "resolved" else 0
        return AlertView(
            title=self.d.title(record.rule),
            links=self.d.links,
            now=self.now,
            held=held,
            escalated_to=escalated,
            runbook=self.d.runbooks.get(record.rule),
        )

    # 7. digests: re-notification and escalation

    def _escalate_digests(self) -> None:
        settings = self.d.settings
        fresh = {digest.id for digest in self.digests}
        digests: list[Digest] = []
        for digest in self.d.states.active_digests():
            if digest.id in fresh:
                continue
            if digest.severity in settings.escalation:
                digests.append(digest)
            else:  # nothing to re-notify: stop watching it
                self.digests.append(digest.with_(active=False))
        if not digests:
            return
        members = self.d.states.digest_members(d.id for d in digests)
        opened = {
            r["id"]: ExceptionRecord.from_row(r)
            for r in self.d.store.query(
                f"SELECT {COLUMNS} FROM exceptions FINAL WHERE id IN {{ids:Array(String)}} AND status = 'open'",
                {"ids": sorted({i for ids in members.values() for i in ids})},
            )
        }
        for digest in digests:
            ids = members.get(digest.id, [])
            unacknowledged = sum(1 for i in ids if i in opened)
            if not unacknowledged:
                self.digests.append(digest.with_(active=False))
                continue
            if all(self._paused(opened[i]) for i in ids if i in opened):
                continue
            step = due_step(
                settings, digest.severity, digest.started_at, digest.notified_at, digest.escalated, self.now
            )
            if step is None:
                continue
            waiting = f"{unacknowledged} of {digest.count} still not acknowledged"
            if step == "escalate":
                policy = settings.escalation[digest.severity]
                assert policy.escalate is not None
                oncall = self._digest_oncall(digest, ids)
                after = duration_text(self.now - digest.started_at)
                line = f":rotating_light: {mention(oncall)} {waiting} after {after}: escalated."
                key = f"digest:{digest.id}:escalate"
                digest = digest.with_(escalated=True, notified_at=self.now)
                self.report.escalations += 1
            else:
                line = f":bell: {waiting} after {duration_text(self.now - digest.started_at)}."
                key = f"digest:{digest.id}:repeat:{digest.repeats + 1}"
                digest = digest.with_(repeats=digest.repeats + 1, notified_at=self.now)
                self.report.repeats += 1
            for channel in digest.channels:
                self.messages.append(
                    OutboundMessage(
                        key + _suffix(channel, digest.channels),
                        channel,
                        line,
                        action="reply",
                        parent=digest_post_key(digest, channel),
                    )
                )
            self.digests.append(digest)

    def _digest_oncall(self, digest: Digest, ids: Sequence[str]) -> str | None:
        """The on-call group a single alert of the digest's first member would page (its route's, to the
        digest's channels), the owner's when the member is gone."""
        first = self.d.records(sorted(ids)[:1])
        if not first:
            return self.d.routing.oncall_for(digest.owner)
        return self._oncall(next(iter(first.values())), digest.channels)


def dispatch_job(dispatcher: Dispatcher) -> JobFunction:
    """The `alerts-dispatch` job function over `dispatcher`."""

    def alerts_dispatch(context: JobContext) -> dict[str, Any]:
        """Turn exception changes into Slack messages in the outbox: alerts, digests, updates, thread lines,
        re-notifications and escalations; release alerts held back by silences, windows and root causes."""
        report = dispatcher.run()
        if not report.quiet:
            context.log.info(
                "alerts: %d changes, %d posted, %d digests (%d exceptions), %d updates, %d replies, held back %s, "
                "released %d, %d repeats, %d escalations, %d enqueued",
                report.changes,
                report.posted,
                report.digests,
                report.digested,
                report.updates,
                report.replies,
                report.held_back or "none",
                report.released,
                report.repeats,
                report.escalations,
                report.enqueued,
            )
        return report.as_dict()

    return alerts_dispatch
