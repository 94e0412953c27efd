"""Closing the loop: a run's comparisons become opened, resolved and reopened exceptions.

Per finding rule, each run:

1. **resolves** every active exception whose key the run saw agreeing, with resolution
   `reconciled` and the evidence (both sides' values now, the run id) in its details;
2. **opens** an exception for each differing key without an active one, unless (3) applies;
3. **reopens** an exception resolved while its difference still stands: the key has differed
   continuously since before the resolution (its current *episode* of difference, kept in
   `recon_state`, began at or before `resolved_at`). The reason names the values. A resolution by
   a process (`MACHINE_ACTORS`: a replay that saw its events arrive, an engine) is reopened every
   time; a person's once: if a person resolves it again after the reconciler reopened a person's
   resolution, the person's word stands: no reopen, and no new exception, until the key agrees
   once (the episode ends); a later difference is a new episode and opens a new exception;
4. records each differing key's episode in `recon_state` (key, since, the values seen), and the
   end of episodes whose keys now agree.

Keys the run did not see (e.g. a pair outside the lookback) are left as they are, unless the comparison says why
they cannot be checked any more (`Comparison.unseen`: inventory pairs neither side reports within the lookback):
their exceptions resolve `unreported` and their episodes end. A comparison that could not run (`checked=False`)
changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from kernel.exceptions import ExceptionStore, NewException
from kernel.store import Store
from reconcilers.config import FindingRule
from reconcilers.model import Comparison, Observation
from reconcilers.replay.service import ACTOR as REPLAY_ACTOR
from reconcilers.sql import parse_time

ACTOR = "reconciler"
RECONCILED = "reconciled"
UNREPORTED = "unreported"
# Actors that are processes, not people: their resolution of a key that still differs is no one's word to respect.
MACHINE_ACTORS = frozenset({ACTOR, REPLAY_ACTOR, "engine", "scheduler", "policy"})

OwnerFor = Callable[[FindingRule, Mapping[str, str]], str]
"""The owner of a finding: (finding rule, routing data such as warehouse, source, customer_id) -> owner."""


@dataclass
class Outcome:
    """What applying one comparison changed."""

    rule: str
    checked: bool
    compared: int = 0
    differing: int = 0
    opened: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    reopened: list[str] = field(default_factory=list)
    standing: int = 0  # differing keys whose person resolution stands
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counts (ids listed)."""
        return {
            "checked": self.checked,
            "compared": self.compared,
            "differing": self.differing,
            "opened": self.opened,
            "resolved": self.resolved,
            "reopened": self.reopened,
            "standing": self.standing,
            "note": self.note,
        }


class StateTable:
    """`recon_state`: per finding rule and key, whether it differs, since when, and the values last seen."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._last_version = 0

    def _version(self) -> int:
        self._last_version = max(self._last_version + 1, time.time_ns())
        return self._last_version

    def differing(self, rule: str) -> dict[str, datetime]:
        """The keys of `rule` that differed at its last run, with the start of their episode."""
        rows = self.store.query(
            "SELECT key, since FROM recon_state FINAL WHERE rule = {rule:String} AND differs = 1", {"rule": rule}
        )
        found: dict[str, datetime] = {}
        for row in rows:
            since = parse_time(row["since"])
            if since is not None:
                found[row["key"]] = since
        return found

    def current(self, rules: Collection[str], keys: Collection[str] | None = None) -> dict[tuple[str, str], Any]:
        """The last state of keys (all when None) of `rules`: {(rule, key): row with detail decoded}."""
        where = "rule IN {rules:Array(String)}"
        params: dict[str, Any] = {"rules": list(rules)}
        if keys is not None:
            where += " AND key IN {keys:Array(String)}"
            params["keys"] = list(keys)
        rows = self.store.query(
            f"SELECT rule, key, differs, since, seen_at, run_id, detail FROM recon_state FINAL WHERE {where}", params
        )
        for row in rows:
            row["detail"] = orjson.loads(row["detail"] or "{}")
        return {(row["rule"], row["key"]): row for row in rows}

    def write(self, rule: str, rows: list[tuple[str, bool, datetime, Observation]], now: datetime, run_id: str) -> None:
        """Record (key, differs, since, observation) for `rule`."""
        if not rows:
            return
        version = self._version()
        self.store.insert(
            "recon_state",
            [
                {
                    "rule": rule,
                    "key": key,
                    "differs": int(differs),
                    "since": since,
                    "seen_at": now,
                    "run_id": run_id,
                    "detail": orjson.dumps({"summary": o.summary, "values": o.values, "route": o.route}).decode(),
                    "version": version,
                }
                for key, differs, since, o in rows
            ],
        )


class Loop:
    """Applies comparisons to exceptions through the ExceptionStore (the only writer of exceptions)."""

    def __init__(self, store: Store, exceptions: ExceptionStore, owner_for: OwnerFor) -> None:
        self.store = store
        self.exceptions = exceptions
        self.owner_for = owner_for
        self.state = StateTable(store)

    def apply(self, comparison: Comparison, now: datetime, run_id: str) -> Outcome:
        """Resolve, open and reopen for one comparison; see the module docstring."""
        rule = comparison.rule
        outcome = Outcome(rule.id, comparison.checked, comparison.compared, len(comparison.differing))
        outcome.note = comparison.note
        if not comparison.checked:
            return outcome
        seen = {o.key: o for o in comparison.observations}
        episodes = self.state.differing(rule.id)
        active = self.exceptions.active_by_key(rule.id)

        agreeing = [record for key, record in active.items() if key in seen and not seen[key].differs]
        details = {r.id: self._evidence(seen[r.key], run_id) for r in agreeing}
        outcome.resolved = [r.id for r in self.exceptions.resolve_many(agreeing, RECONCILED, details, actor=ACTOR)]
        gone: list[str] = []
        if comparison.unseen:  # keys the run saw nothing of (a SKU no longer stocked at a location)
            unseen = [record for key, record in active.items() if key not in seen]
            why = {r.id: {"run_id": run_id, "summary": f"{r.key}: {comparison.unseen}"} for r in unseen}
            done = self.exceptions.resolve_many(unseen, UNREPORTED, why, actor=ACTOR)
            outcome.resolved += [r.id for r in done]
            gone = [key for key in episodes if key not in seen]

        differing = [o for o in comparison.observations if o.differs]
        candidates = [o for o in differing if o.key not in active]
        # all resolved: the active ones are handled before
        latest = self.exceptions.latest_by_key(rule.id, [o.key for o in candidates])
        resolvers, standing = self._resolvers([r.id for r in latest.values()])
        to_open: list[NewException] = []
        for observation in candidates:
            since = episodes.get(observation.key, now)
            record = latest.get(observation.key)
            resolved_at = parse_time(record.resolved_at) if record is not None else None
            # `reconciled` ends an episode only when the reconciler said so (a person may pick the same word)
            agreed = record is not None and record.resolution == RECONCILED and resolvers.get(record.id) == ACTOR
            if record is None or agreed or resolved_at is None or resolved_at < since:
                to_open.append(self._new(rule, observation, run_id))
            elif record.id in standing:
                outcome.standing += 1
            else:
                reason = f"still differs at run {run_id}: {observation.summary}"
                outcome.reopened.append(self.exceptions.reopen(record.id, ACTOR, reason).id)
        outcome.opened = [r.id for r in self.exceptions.open_many(to_open, actor=ACTOR)]

        rows = [(o.key, True, episodes.get(o.key, now), o) for o in differing]
        rows += [(key, False, now, seen[key]) for key in episodes if key in seen and not seen[key].differs]
        # the episode of a key no longer reported ends: should it come back differing, that is a new exception
        rows += [(key, False, now, Observation(key, False, {}, {}, f"{key}: {comparison.unseen}")) for key in gone]
        self.state.write(rule.id, rows, now, run_id)
        return outcome

    def _new(self, rule: FindingRule, observation: Observation, run_id: str) -> NewException:
        return NewException(
            rule=rule.id,
            key=observation.key,
            kind=rule.kind,
            owner=self.owner_for(rule, observation.route),
            severity=rule.severity,
            context={**observation.route, **observation.values, "summary": observation.summary, "run_id": run_id},
        )

    @staticmethod
    def _evidence(observation: Observation, run_id: str) -> dict[str, Any]:
        return {"run_id": run_id, "summary": observation.summary, "values": observation.values}

    def _resolvers(self, ids: list[str]) -> tuple[dict[str, str], set[str]]:
        """The actor of each exception's latest resolution, and the exceptions whose resolution stands: last
        resolved by a person, after the reconciler had already reopened a person's resolution of them (it argues
        once). A process's resolution never stands."""
        if not ids:
            return {}, set()
        rows = self.store.query(
            "SELECT exception_id, actor, action FROM exception_audit WHERE exception_id IN {ids:Array(String)}"
            " AND action IN ('resolved', 'reopened') ORDER BY exception_id, at, seq",
            {"ids": ids},
        )
        resolver: dict[str, str] = {}  # the actor of each exception's latest resolution so far
        argued: set[str] = set()  # the reconciler reopened a person's resolution of them
        for row in rows:
            exception_id, actor = row["exception_id"], row["actor"]
            if row["action"] == "resolved":
                resolver[exception_id] = actor
            elif actor == ACTOR and resolver.get(exception_id, ACTOR) not in MACHINE_ACTORS:
                argued.add(exception_id)
        return resolver, {i for i in argued if resolver.get(i, ACTOR) not in MACHINE_ACTORS}
