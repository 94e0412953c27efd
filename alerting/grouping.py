"""Grouping: a burst of exceptions of one owner and rule becomes one digest message instead of hundreds.

Exceptions to alert are grouped by (owner, rule, channels). Within the group window (counted on
the injected clock): while the exceptions of a group alerted in the last window, plus the new
ones, are at most `group_threshold`, each gets its own message; past it, the new ones go into a
digest (counts, the first keys, a link to the filtered list in the dashboard). A digest started
within the last window takes every later member of its group until the window since its start
has passed; then the count starts again. A digest's exceptions get no message of their own (so
their changes have no thread to go to); people act on them in the dashboard.

Digest ids derive from the group and the first member, so a dispatcher run repeated after a
crash names the same digest (and its outbox keys) again instead of posting a second one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from alerting.policy import Verdict
from alerting.policy_settings import AlertingSettings
from alerting.state import AlertState, Digest, PolicyStore
from kernel.exceptions import ExceptionRecord

SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(frozen=True)
class Candidate:
    """An exception to alert now, where, and the held-back state it comes out of (if any)."""

    record: ExceptionRecord
    verdict: Verdict
    previous: AlertState | None = None

    @property
    def group_key(self) -> str:
        """(owner, rule, channels) as one text."""
        return group_key(self.record, self.verdict.channels)


def group_key(record: ExceptionRecord, channels: Sequence[str]) -> str:
    """The grouping key of an exception alerted to `channels`."""
    return f"{record.owner}|{record.rule}|{','.join(channels)}"


def digest_id(key: str, first_exception_id: str) -> str:
    """A digest's id: stable for the same group and first member."""
    return hashlib.sha256(f"{key}\n{first_exception_id}".encode()).hexdigest()[:24]


@dataclass
class DigestPlan:
    """A digest to post (new) or update (joined), and the candidates it takes in this run."""

    digest: Digest
    members: list[Candidate]
    new: bool


@dataclass
class Plan:
    """How this run's candidates are alerted: one message each, or in digests."""

    individual: list[Candidate] = field(default_factory=list)
    digests: list[DigestPlan] = field(default_factory=list)


class Grouper:
    """Splits the candidates of one dispatcher run into individual messages and digests."""

    def __init__(self, states: PolicyStore, settings: AlertingSettings) -> None:
        self.states = states
        self.settings = settings

    def plan(self, candidates: Sequence[Candidate], now: datetime) -> Plan:
        """The plan for `candidates` at `now` (reads recent alerts and open digests of their groups)."""
        by_key: dict[str, list[Candidate]] = {}
        for candidate in candidates:
            by_key.setdefault(candidate.group_key, []).append(candidate)
        since = now - self.settings.group_window
        recent = self.states.alerted_since(by_key, since)
        open_digests = self.states.open_digests(by_key, since)
        plan = Plan()
        for key, members in by_key.items():
            digest = open_digests.get(key)
            if digest is not None:
                plan.digests.append(DigestPlan(self._join(digest, members), members, new=False))
            elif recent.get(key, 0) + len(members) > self.settings.group_threshold:
                plan.digests.append(DigestPlan(self._start(key, members, now), members, new=True))
            else:
                plan.individual.extend(members)
        return plan

    def _start(self, key: str, members: list[Candidate], now: datetime) -> Digest:
        first = members[0].record
        return Digest(
            id=digest_id(key, first.id),
            group_key=key,
            owner=first.owner,
            rule=first.rule,
            severity=_highest(m.record.severity for m in members),
            channels=members[0].verdict.channels,
            started_at=now,
            count=len(members),
            keys=tuple(m.record.key for m in members[: self.settings.digest_keys]),
            notified_at=now,
        )

    def _join(self, digest: Digest, members: list[Candidate]) -> Digest:
        room = max(0, self.settings.digest_keys - len(digest.keys))
        return digest.with_(
            count=digest.count + len(members),
            keys=digest.keys + tuple(m.record.key for m in members[:room]),
            severity=_highest([digest.severity, *(m.record.severity for m in members)]),
            revision=digest.revision + 1,
            active=True,
        )


def _highest(severities: Iterable[str]) -> str:
    return max(severities, key=lambda s: SEVERITIES.index(s) if s in SEVERITIES else -1, default="medium")
