"""A lease in the store: exactly one process (the scheduler) holds it at a time.

ClickHouse has no transactions and no compare-and-set, so the lease is built on the one atomic
check it has: **insert deduplication**. The table `tower_leases` (ReplacingMergeTree, one row
per version of a (name, term)) holds numbered terms. To acquire:

1. Read the latest term T of the lease (FINAL: the newest version of each term).
2. If T is held (a holder and `expires_at` in the future by this process's clock), wait.
3. Otherwise insert a claim for term T + 1 with `insert_deduplication_token = '<name>:<T + 1>'`.
   ClickHouse keeps the first block with a token and silently drops every later one (for a
   MergeTree under its parts lock, `non_replicated_deduplication_window`; for a
   ReplicatedMergeTree in Keeper, in the same transaction that commits the part). Two
   contenders that both saw T send the same token, so exactly one claim of T + 1 is stored.
4. Read back: the claim holds only if the latest term is T + 1 **and** its claim id is ours.
   The loser reads the winner's claim (or, on a replica that has not fetched it yet, nothing)
   and never its own, because its row was never stored. Nothing later can replace the winner:
   renewals of a term are written only by its holder, with higher versions.

The holder renews every `renew_interval_seconds` (a new version of its term with a later
`expires_at`) and trusts the lease only until `renewed_at + ttl - max_clock_skew` on its own
clock, measured from before the renewal was sent; a standby claims the next term only after
`expires_at` on its clock. If the two clocks differ by less than `max_clock_skew`, the holder
has stopped trusting the lease before any standby may take it. A holder whose local validity
ran out never renews the old term: it claims a new one like anyone else. Before each job the
scheduler asks `holds()`, which also re-reads the store and stops at once when a newer term
exists. A stopping holder writes a release (its term with `expires_at = now`) so a standby
takes over on its next tick instead of after the TTL.

Deduplication remembers the last blocks (MergeTree: `non_replicated_deduplication_window`,
set on the table; ReplicatedMergeTree: `replicated_deduplication_window[_seconds]`), which
covers a race measured in milliseconds. If lease rows are ever deleted by a mutation while the
deduplication log still knows a term's token, a claim of that term would vanish ("ghost"): the
contender then writes an unheld placeholder for the term (version 0, which any real claim of
the term outranks, expiring after the TTL) so the next term can be claimed. TRUNCATE clears
the log with the rows, so it is safe.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kernel.clock import Clock
from kernel.store.base import Store, stored_time

log = logging.getLogger(__name__)

_T = "DateTime64(6, 'UTC')"

# The latest term of a lease with the newest version of it (a claim outranks a ghost placeholder).
CURRENT = """
SELECT term, holder, claim, acquired_at, renewed_at, expires_at, version
FROM tower_leases FINAL
WHERE name = {name:String}
ORDER BY term DESC
LIMIT 1
"""

TERM_ROWS = "SELECT count() AS n FROM tower_leases WHERE name = {name:String} AND term = {term:UInt64}"

# One row, inserted with a deduplication token: the first claim of a term is kept, the rest dropped.
_VALUES = (
    f"{{name:String}}, {{term:UInt64}}, {{holder:String}}, {{claim:String}}, {{acquired_at:{_T}}},"
    f" {{renewed_at:{_T}}}, {{expires_at:{_T}}}, {{version:UInt64}}"
)
_TOKEN = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


def write_sql(token: str) -> str:
    """The insert of one lease row under `token`. The token is a literal because a SETTINGS clause takes
    literals (not every server version binds parameters there); it is only ever a validated lease name with a
    term number, or random hex, and is checked again here."""
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"not a lease deduplication token: {token!r}")
    return (
        "INSERT INTO tower_leases (name, term, holder, claim, acquired_at, renewed_at, expires_at, version)"
        f" SETTINGS async_insert = 0, insert_deduplicate = 1, insert_deduplication_token = '{token}'"
        f" SELECT {_VALUES}"
    )


_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class LeaseSettings(BaseSettings):
    """The scheduler lease (TOWER_LEASE_*): one scheduler runs the jobs, the others wait as standbys."""

    model_config = SettingsConfigDict(env_prefix="TOWER_LEASE_")

    mode: Literal["auto", "always", "never"] = Field(
        "auto",
        description="`auto`: use the lease on the server backend (an embedded data directory has one process "
        "anyway); `always`; `never` (only when something else guarantees a single scheduler).",
    )
    ttl_seconds: float = Field(
        30.0, gt=0, description="How long a claim or renewal holds; a standby takes over this long after the last one."
    )
    renew_interval_seconds: float = Field(
        10.0, gt=0, description="How often the holder renews and a standby checks whether the lease is free."
    )
    max_clock_skew_seconds: float = Field(
        2.0, ge=0, description="The most two tower hosts' clocks may differ; the holder stops trusting this early."
    )

    @model_validator(mode="after")
    def _renew_in_time(self) -> LeaseSettings:
        if self.renew_interval_seconds * 2 + self.max_clock_skew_seconds > self.ttl_seconds:
            raise ValueError(
                "TOWER_LEASE_TTL_SECONDS must be at least twice TOWER_LEASE_RENEW_INTERVAL_SECONDS plus"
                " TOWER_LEASE_MAX_CLOCK_SKEW_SECONDS, so one late renewal does not lose the lease"
            )
        return self


@dataclass(frozen=True)
class LeaseState:
    """The latest term of a lease as stored."""

    term: int
    holder: str  # '' for an unheld placeholder
    claim: str
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime
    version: int

    def held_at(self, now: datetime) -> bool:
        """Whether someone holds this term at `now` (by the reader's clock)."""
        return bool(self.holder) and self.expires_at > now


class LeaseGate(Protocol):
    """What the scheduler needs of a lease: keep it up, ask before each job, let go on stop."""

    def tick(self) -> bool:
        """Renew when holding, otherwise try to acquire; True when this process holds the lease."""
        ...

    def holds(self) -> bool:
        """True only while this process holds the lease (checked before every job run)."""
        ...

    def release(self) -> None:
        """Give the lease up now, so a standby takes over without waiting for the TTL."""
        ...

    def status(self) -> dict[str, Any]:
        """The lease as this process sees it, for health endpoints and logs."""
        ...


def default_holder() -> str:
    """`host:pid:random`: names this process in the lease table and in logs."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Lease:
    """One process's handle on the lease `name` in `store`; see the module docstring for the protocol."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: LeaseSettings | None = None,
        name: str = "scheduler",
        holder: str | None = None,
    ) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"a lease name is 1-64 letters, digits, '_', '.' or '-', not {name!r}")
        self.store = store
        self.clock = clock
        self.settings = settings or LeaseSettings()
        self.name = name
        self.holder = holder or default_holder()
        self._lock = threading.Lock()
        self._term = 0
        self._claim = ""
        self._valid_until: datetime | None = None
        self._version = 0
        self._acquired_at: datetime | None = None

    # -- reading ----------------------------------------------------------------------------------

    def current(self) -> LeaseState | None:
        """The latest term of the lease as the store has it (None: never claimed)."""
        rows = self.store.query(CURRENT, {"name": self.name})
        if not rows:
            return None
        row = rows[0]
        return LeaseState(
            term=int(row["term"]),
            holder=str(row["holder"]),
            claim=str(row["claim"]),
            acquired_at=stored_time(row["acquired_at"]),
            renewed_at=stored_time(row["renewed_at"]),
            expires_at=stored_time(row["expires_at"]),
            version=int(row["version"]),
        )

    @property
    def term(self) -> int:
        """The term this process holds or last held (0: never)."""
        return self._term

    def _locally_valid(self, now: datetime) -> bool:
        return self._valid_until is not None and now < self._valid_until

    def _mine(self, state: LeaseState | None) -> bool:
        return state is not None and bool(self._claim) and state.term == self._term and state.claim == self._claim

    # -- the protocol -----------------------------------------------------------------------------

    def holds(self) -> bool:
        """True while this process's lease is valid on its own clock and no newer term is in the store."""
        with self._lock:
            if not self._locally_valid(self.clock.now()):
                return False
            if self._mine(self.current()):
                return True
            self._lose("a newer term is in the store")
            return False

    def tick(self) -> bool:
        """Renew while the lease is valid; otherwise try to acquire it. Returns whether this process holds it."""
        with self._lock:
            now = self.clock.now()
            state = self.current()
            if self._locally_valid(now):
                if self._mine(state):
                    self._write(self._term, self._claim, now, now + self._ttl, self._acquired_at)
                    self._valid_until = now + self._ttl - self._skew
                    return True
                self._lose("a newer term is in the store")
            elif self._valid_until is not None:
                self._lose("not renewed within the TTL")
            return self._acquire(state, now)

    def acquire(self) -> bool:
        """Try to acquire the lease now (True when this process holds it, also when it already did)."""
        return self.tick()

    def release(self) -> None:
        """End this process's term now (a standby may claim the next one at once); no-op when not holding."""
        with self._lock:
            now = self.clock.now()
            if self._locally_valid(now) and self._mine(self.current()):
                self._write(self._term, self._claim, now, now, self._acquired_at)
                log.info("lease %s released (term %d, holder %s)", self.name, self._term, self.holder)
            self._valid_until = None

    def status(self) -> dict[str, Any]:
        """This process's view: held or not, the term, and the store's current holder and expiry."""
        state = self.current()
        held = self.holds()
        return {
            "name": self.name,
            "holder": self.holder,
            "held": held,
            "term": state.term if state else 0,
            "current_holder": state.holder if state else "",
            "expires_at": state.expires_at.isoformat() if state else None,
        }

    # -- the steps (separate so tests can interleave two contenders) ------------------------------

    def observe(self) -> LeaseState | None:
        """Step 1 of an acquisition: read the latest term."""
        return self.current()

    def claim(self, observed: LeaseState | None) -> bool:
        """Steps 2-4: claim the term after `observed` if it is free, and read back whether the claim won."""
        with self._lock:
            return self._acquire(observed, self.clock.now())

    def _acquire(self, state: LeaseState | None, now: datetime) -> bool:
        if state is not None and state.held_at(now):
            return False
        term = (state.term if state else 0) + 1
        claim = secrets.token_hex(8)
        self._write(term, claim, now, now + self._ttl, now, token=f"{self.name}:{term}")
        after = self.current()
        if after is not None and after.term == term and after.claim == claim:
            self._term, self._claim, self._acquired_at = term, claim, now
            self._valid_until = now + self._ttl - self._skew
            log.info("lease %s acquired: term %d, holder %s", self.name, term, self.holder)
            return True
        if after is None or after.term < term:
            self._fill_ghost(term, now)
        return False

    def _fill_ghost(self, term: int, now: datetime) -> None:
        """Our claim of `term` was dropped and no claim of it is visible: either another replica's claim
        has not arrived here yet, or rows were deleted while the deduplication log still knows the term.
        An unheld placeholder (version 0: any real claim of the term outranks it) lets the next term be
        claimed after the TTL in the second case, and changes nothing in the first."""
        if int(self.store.query(TERM_ROWS, {"name": self.name, "term": term})[0]["n"]) > 0:
            return
        log.warning("lease %s: the claim of term %d vanished; writing a placeholder", self.name, term)
        self._write(term, "", now, now + self._ttl, now, holder="", version=0)

    def _write(
        self,
        term: int,
        claim: str,
        renewed_at: datetime,
        expires_at: datetime,
        acquired_at: datetime | None,
        holder: str | None = None,
        version: int | None = None,
        token: str | None = None,
    ) -> None:
        """Insert one version of a term. Only a claim passes `token` (`<name>:<term>`): the first claim of a
        term is stored and every later one dropped. Renewals, releases and placeholders get a unique token,
        so they are never taken for a duplicate."""
        if version is None:
            self._version = max(self._version + 1, int(renewed_at.timestamp() * 1_000_000))
            version = self._version
        self.store.command(
            write_sql(token or secrets.token_hex(8)),
            {
                "name": self.name,
                "term": term,
                "holder": self.holder if holder is None else holder,
                "claim": claim,
                "acquired_at": acquired_at or renewed_at,
                "renewed_at": renewed_at,
                "expires_at": expires_at,
                "version": version,
            },
        )

    def _lose(self, why: str) -> None:
        log.warning("lease %s lost (term %d, holder %s): %s", self.name, self._term, self.holder, why)
        self._valid_until = None

    @property
    def _ttl(self) -> timedelta:
        return timedelta(seconds=self.settings.ttl_seconds)

    @property
    def _skew(self) -> timedelta:
        return timedelta(seconds=self.settings.max_clock_skew_seconds)
