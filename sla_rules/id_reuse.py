"""event-id-reuse: event ids a source gave to different events.

The store keeps one business event per (source, id) (a redelivery is the same event), so when a sender gives one id
to two different events, a merge keeps one of them and the other is gone without a trace: the SLA rules then see an
order never released, a shipment never confirmed. `event_ids` (migration 17) keeps, for every id used within 35
days, the range of the content hashes it carried; an id whose range is not one hash was reused.

Per source, the ids reused that were received within `window` (at least `min_ids` of them) open one exception, with
how many and examples; it resolves itself (`recovered`) once a whole window passes without one. Key: the source.
A check reads every stored id that one received within the window shares (random ids: most of the table), so it runs
at most every `every` (10 minutes) in a process, and at once on a full evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from kernel.exceptions import ExceptionRecord, ExceptionStore, NewException
from kernel.store import Store
from kernel.store.base import stored_time
from sla_rules.model import IdReuseRule, Rule
from sla_rules.texts import RECOVERED, duration_text, iso

EXAMPLES = 5  # reused ids named in an exception's context

# Every row of an id received within the window, its older rows too: before a merge folds them, an id's first
# content and its second are in different rows, and only the second was received lately.
_REUSED = """
SELECT source, count() AS ids, groupArray({examples:UInt32})(id) AS examples, min(at) AS first_at, max(at) AS newest
FROM (
    SELECT source, id, max(last_at) AS at
    FROM event_ids
    WHERE (source, id) IN (SELECT source, id FROM event_ids WHERE last_at >= {since:DateTime64(6, 'UTC')})
    GROUP BY source, id
    HAVING min(lo) != max(hi) AND at >= {since:DateTime64(6, 'UTC')} AND at <= {until:DateTime64(6, 'UTC')}
    ORDER BY source, at DESC, id
)
GROUP BY source
ORDER BY source
"""


# The event each example id stands for now (the last received; a merge keeps it): what the sender's team looks up.
_KEPT = """
SELECT id, toString(type) AS type, time, order_id, shipment_id, invoice_id, subject
FROM business_events FINAL
WHERE source = {source:String} AND id IN {ids:Array(String)}
ORDER BY id
"""


@dataclass(frozen=True)
class Reused:
    """The ids of one source that carried different events, received within the window."""

    source: str
    ids: int
    examples: list[str]  # the latest first
    first_at: datetime
    last_at: datetime


class IdReuseCheck:
    """Opens and resolves `event-id-reuse` exceptions (TechnicalEngine runs it)."""

    def __init__(
        self, store: Store, exceptions: ExceptionStore, owner_for: Callable[[Rule, Mapping[str, str]], str]
    ) -> None:
        self.store = store
        self.exceptions = exceptions
        self.owner_for = owner_for
        self._checked: dict[str, datetime] = {}  # rule id -> the clock's now at its last check, in this process

    def reused(self, rule: IdReuseRule, now: datetime) -> list[Reused]:
        """Per source, its ids reused for different events that were received within the window ending at `now`."""
        params = {"since": now - rule.params.window, "until": now, "examples": EXAMPLES}
        return [
            Reused(
                str(r["source"]),
                int(r["ids"]),
                list(r["examples"]),
                stored_time(r["first_at"]),
                stored_time(r["newest"]),
            )
            for r in self.store.query(_REUSED, params)
        ]

    def kept(self, source: str, ids: list[str]) -> list[str]:
        """For each of `ids`, the event of `source` the tower keeps under it: `id: type at time (key)`."""
        lines = []
        for row in self.store.query(_KEPT, {"source": source, "ids": ids}):
            key = next((row[k] for k in ("order_id", "shipment_id", "invoice_id", "subject") if row[k]), "")
            when = iso(stored_time(row["time"]))
            lines.append(f"{row['id']}: {row['type']} at {when}" + (f" ({key})" if key else ""))
        return lines

    def due(self, rule: IdReuseRule, now: datetime, force: bool = False) -> bool:
        """Whether a check of `rule` is due at `now`: `every` passed since this process's last one (or it never
        checked, or `force`)."""
        last = self._checked.get(rule.id)
        return force or last is None or now - last >= rule.params.every or now < last

    def evaluate(
        self, rule: IdReuseRule, now: datetime, force: bool = False
    ) -> tuple[list[ExceptionRecord], list[ExceptionRecord], int]:
        """When due: open an exception per source over the threshold without one; resolve those of sources with none
        within the window. Answers (opened, resolved, changes); nothing when not due."""
        if not self.due(rule, now, force):
            return [], [], 0
        self._checked[rule.id] = now
        active = self.exceptions.active_by_key(rule.id)
        found = {r.source: r for r in self.reused(rule, now) if r.ids >= rule.params.min_ids}
        window = duration_text(rule.params.window)
        opened = self.exceptions.open_many(
            [self._finding(rule, r, window) for source, r in found.items() if source not in active]
        )
        quiet = [record for key, record in active.items() if key not in found]
        details = {record.id: {"reused_ids": 0, "window": window} for record in quiet}
        resolved = self.exceptions.resolve_many(quiet, RECOVERED, details, actor="engine")
        return opened, resolved, len(opened) + len(resolved)

    def _finding(self, rule: IdReuseRule, r: Reused, window: str) -> NewException:
        ids = f"{r.ids} event id" + ("" if r.ids == 1 else "s")
        return NewException(
            rule=rule.id,
            key=r.source,
            kind=rule.kind,
            owner=self.owner_for(rule, {"source": r.source}),
            severity=rule.severity,
            context={
                "source": r.source,
                # the business exceptions its lost events cause are what the business owners must hear of too
                "root_cause": False,
                "reused_ids": r.ids,
                "window": window,
                "examples": r.examples,
                "kept": self.kept(r.source, r.examples),
                "since": iso(r.first_at),
                "last_reused": iso(r.last_at),
                "summary": f"{ids} of {r.source} carried different events within {window}; the tower keeps one event"
                f" per source and id, so the others are lost: {', '.join(r.examples)}",
                "next_step": "make the sender give every event its own id (a resend of the same event keeps its id),"
                f" then have it resend the events it sent since {iso(r.first_at)} with new ids",
            },
        )
