"""Read models behind the dashboard: the overview, integration health per source, SLA trends and breaches.

Each function is a few set-based, typed-parameter queries over the store; the API routes in
`tower.routes.overview` only parse parameters and answer these models. Reads of mutable state
(`exceptions`, `sla_cases`) use FINAL; a query that needs several figures of one table reads it
once (conditional aggregates), because a FINAL read of millions of cases costs more than the
arithmetic on it. The overview's read of `sla_cases` is kept until the cases change, and the SLA
evaluation makes it again after writing cases (`tower.case_days`).

Windows are half-open, `since <= t < until`. Health rates use business time (span Timestamp,
event `time`), like the `source-silence` rule: a backfill arriving now with old times does not
make a source look busy. Event rates count the records of the window, redeliveries included
(traffic); spans are counted once each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from kernel.model.events import source_covers
from kernel.store import Store
from kernel.store.base import stored_time_or_none
from reconcilers.config import rule_config
from sla_rules.breaches import LATENESS
from sla_rules.loader import RuleSet
from sla_rules.model import ReconciliationRule
from sla_rules.technical import REFUSAL_KEY, refusal_key_params
from tower.case_days import ALWAYS_REFRESHED, MAX_TOP, case_days, window_start
from tower.case_days import DAYS as CASE_DAYS

# How far back `last_seen` of a source looks (a source silent for longer shows no last seen).
HEALTH_LOOK_BACK = timedelta(days=7)
# Breach lateness buckets, in hours: [0, 1), [1, 2), ... [48, inf).
LATE_BUCKETS: tuple[float, ...] = (0, 1, 2, 4, 8, 24, 48)
ERROR_STATUSES = ["Error", "STATUS_CODE_ERROR"]
_T6 = "DateTime64(6, 'UTC')"
_T9 = "DateTime64(9, 'UTC')"


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


# The rules exceptions are opened under (the facets' rules, rule titles) ---------------------------


class RuleInfo(BaseModel):
    """A rule id the tower opens exceptions under: a rule of the rule files, or a reconciler's finding rule."""

    id: str
    title: str
    type: str = Field(description="sla, reconciliation or technical")
    kind: str
    owner: str = Field(description="The rule's default owner (the routing file may refine it per case).")
    severity: str
    enabled: bool
    runbook: str | None = None
    opened_by: str = Field(
        description="The rule file's rule that opens its exceptions: itself, or for a finding rule of a "
        "reconciliation rule (inventory-oversell, inventory-stale) that rule (inventory-sync)."
    )


def rule_infos(ruleset: RuleSet) -> list[RuleInfo]:
    """Every rule id an exception can be opened under, sorted by id, with its title: each rule of the rule files,
    and the other finding rules of each reconciliation rule (inventory-sync opens inventory-oversell and
    inventory-stale too), with their own title, kind and owner and the enabled flag, severity and runbook of the
    rule that opens them. A rule file's rule wins over a finding rule of the same id."""
    found: dict[str, RuleInfo] = {}
    for rule in ruleset.rules:
        found[rule.id] = RuleInfo(
            id=rule.id,
            title=rule.title,
            type=rule.type,
            kind=rule.kind,
            owner=rule.owner,
            severity=rule.severity,
            enabled=rule.enabled,
            runbook=rule.runbook,
            opened_by=rule.id,
        )
    for rule in ruleset.rules:
        if not isinstance(rule, ReconciliationRule):
            continue
        try:  # checked when the rules were loaded; a rule that does not check has no finding rules to add
            config = rule_config(rule.id, rule.title, rule.kind, rule.owner, rule.severity, rule.compare, rule.params)
        except ValueError:
            continue
        for finding in config.finding_rules():
            found.setdefault(
                finding.id,
                RuleInfo(
                    id=finding.id,
                    title=finding.title or finding.id,
                    type=rule.type,
                    kind=finding.kind,
                    owner=finding.owner,
                    severity=finding.severity,
                    enabled=rule.enabled,
                    runbook=rule.runbook,
                    opened_by=rule.id,
                ),
            )
    return [found[rule_id] for rule_id in sorted(found)]


def rule_info(ruleset: RuleSet, rule_id: str) -> RuleInfo | None:
    """The rule an exception of `rule_id` was opened under (`rule_infos`); None when the tower runs no such rule."""
    return next((info for info in rule_infos(ruleset) if info.id == rule_id), None)


# The overview -------------------------------------------------------------------------------------


class OwnerSeverity(BaseModel):
    """Active exceptions of one owner and severity."""

    owner: str
    severity: str
    open: int
    acknowledged: int


class WindowCompliance(BaseModel):
    """The cases of a rule started in a window, and the share of decided ones met."""

    cases: int
    met: int
    late: int
    breached: int
    compliance: float | None = Field(description="met / (met + late + breached); null when no case is decided.")


class RuleCompliance(BaseModel):
    """Compliance of one SLA rule for the cases started today, in the last 7 and the last 30 days (calendar days
    in the requested time zone, today included)."""

    rule: str
    today: WindowCompliance
    last_7_days: WindowCompliance
    last_30_days: WindowCompliance
    at_risk: int = Field(description="Pending cases of the rule inside its warning window now.")


class AtRiskCase(BaseModel):
    """A pending case inside its rule's warning window: still on time, not for long."""

    rule: str
    key: str
    started_at: datetime
    due_at: datetime
    customer_id: str
    warehouse: str


class Change(BaseModel):
    """One change to an exception (an audit entry) with what it changed."""

    at: datetime
    exception_id: str
    action: str = Field(description="opened, acknowledged, assigned, resolved, reopened, note")
    actor: str
    detail: str = Field(description="What changed, as JSON text.")
    rule: str
    key: str
    owner: str
    status: str = Field(description="The exception's status now.")


class Changes(BaseModel):
    """What changed since a moment: counts per action and the latest changes."""

    since: datetime
    counts: dict[str, int]
    latest: list[Change]


class RuleActive(BaseModel):
    """How many active exceptions one rule has."""

    rule: str
    active: int


_UNEVALUATED = """
SELECT toString(rule) AS rule, count() AS active
FROM exceptions FINAL
WHERE status != 'resolved' AND rule NOT IN {evaluated:Array(String)}
GROUP BY rule
ORDER BY rule
"""


class IdleRule(BaseModel):
    """An SLA rule with no case started in the last 7 days although events of its start types arrived in them: its
    sources or `where` filters may match no event."""

    rule: str
    start_types: list[str]
    last_start_event: datetime = Field(description="The newest event of its start types (business time).")


# The newest event of each type: read from the `freshness` projection (a few rows a part), not every event.
_LAST_OF_TYPES = """
SELECT toString(type) AS type, max(time) AS last FROM business_events WHERE type IN {types:Array(String)} GROUP BY type
"""

IDLE_AFTER = timedelta(days=7)


class Overview(BaseModel):
    """The dashboard's first screen."""

    now: datetime = Field(description="The tower's clock when the overview was read.")
    today: date = Field(description="Today in the requested time zone: the windows are calendar days there.")
    today_starts: datetime = Field(description="Start of today in the requested time zone (UTC).")
    active: int = Field(description="Open and acknowledged exceptions.")
    open: int
    acknowledged: int
    by_owner: list[OwnerSeverity]
    compliance: list[RuleCompliance]
    at_risk: int = Field(description="Pending cases inside their warning window, every rule.")
    at_risk_cases: list[AtRiskCase] = Field(description="The at-risk cases due soonest.")
    changes: Changes
    unevaluated: list[RuleActive] = Field(
        default_factory=list,
        description="Active exceptions of rules nothing evaluates any more (switched off, renamed or removed), per "
        "rule: they resolve only by hand.",
    )
    idle: list[IdleRule] = Field(
        default_factory=list,
        description="SLA rules with no case started in the last 7 days although events of their start types arrived"
        " in them.",
    )


_BY_OWNER = """
SELECT owner, severity, countIf(status = 'open') AS open, countIf(status = 'acknowledged') AS acknowledged
FROM exceptions FINAL
WHERE status != 'resolved'
GROUP BY owner, severity
ORDER BY owner, severity
"""

_CHANGE_COUNTS = f"""
SELECT toString(action) AS action, count() AS n
FROM exception_audit
WHERE at >= {{since:{_T6}}}
GROUP BY action
ORDER BY action
"""

_LATEST_CHANGES = f"""
SELECT exception_id, at, actor, toString(action) AS action, detail
FROM exception_audit
WHERE at >= {{since:{_T6}}}
ORDER BY at DESC, seq DESC
LIMIT {{limit:UInt32}}
"""

_EXCEPTION_HEADS = """
SELECT id, rule, key, owner, status FROM exceptions FINAL WHERE id IN {ids:Array(String)}
"""


def _window(rows: Iterable[dict[str, Any]], first: str) -> WindowCompliance:
    """The counts of `rows` (one rule's) on days from `first` (YYYY-MM-DD) on."""
    counts: dict[str, int] = {}
    for row in rows:
        if row["day"] >= first:
            counts[row["status"]] = counts.get(row["status"], 0) + int(row["n"])
    met, late, breached = counts.get("met", 0), counts.get("late", 0), counts.get("breached", 0)
    return WindowCompliance(
        cases=sum(counts.values()), met=met, late=late, breached=breached, compliance=_ratio(met, met + late + breached)
    )


def soonest_at_risk(rows: Iterable[dict[str, Any]], top: int) -> list[AtRiskCase]:
    """The `top` at-risk cases due first in a reading of the cases (`rows`), due soonest first."""
    soonest = sorted(
        (due, row["rule"], key, started, customer, warehouse)
        for row in rows
        for due, key, started, customer, warehouse in row["soonest"]
    )
    return [
        AtRiskCase(
            rule=rule,
            key=key,
            started_at=stored_time_or_none(started) or datetime.min.replace(tzinfo=UTC),
            due_at=stored_time_or_none(due) or datetime.min.replace(tzinfo=UTC),
            customer_id=customer,
            warehouse=warehouse,
        )
        for due, rule, key, started, customer, warehouse in soonest[:top]
    ]


def changes_since(store: Store, since: datetime, limit: int = 50) -> Changes:
    """Changes to exceptions at or after `since`: counts per action and the latest `limit`."""
    counts = {r["action"]: int(r["n"]) for r in store.query(_CHANGE_COUNTS, {"since": since})}
    rows = store.query(_LATEST_CHANGES, {"since": since, "limit": limit}) if counts else []
    ids = sorted({r["exception_id"] for r in rows})
    heads = {r["id"]: r for r in store.query(_EXCEPTION_HEADS, {"ids": ids})} if ids else {}
    unknown = {"rule": "", "key": "", "owner": "", "status": ""}
    latest = [
        Change(
            at=stored_time_or_none(r["at"]) or since,
            exception_id=r["exception_id"],
            action=r["action"],
            actor=r["actor"],
            detail=r["detail"],
            **{k: heads.get(r["exception_id"], unknown)[k] for k in ("rule", "key", "owner", "status")},
        )
        for r in rows
    ]
    return Changes(since=since, counts=counts, latest=latest)


def overview(
    store: Store,
    now: datetime,
    tz: str,
    since: datetime,
    rules: Iterable[str] = (),
    top: int = 20,
    evaluated: Iterable[str] | None = None,
    starts: Mapping[str, Sequence[str]] | None = None,
) -> Overview:
    """The overview at `now`: active exceptions by owner and severity; compliance per rule of the cases started
    today, in the last 7 and in the last 30 days (calendar days in `tz`, today included); the `top` at-risk
    cases due soonest; the changes since `since`; with `evaluated` (the rule ids something evaluates), the active
    exceptions of every other rule; with `starts` (SLA rule id -> its start event types), the rules idle for
    IDLE_AFTER although events of their start types arrived.

    Rules named in `rules` without a case are listed with zeros.
    """
    by_owner = [
        OwnerSeverity(
            owner=r["owner"], severity=r["severity"], open=int(r["open"]), acknowledged=int(r["acknowledged"])
        )
        for r in store.query(_BY_OWNER)
    ]
    zone = ZoneInfo(tz)
    today = now.astimezone(zone).date()
    rows = case_days.read(store, tz, today - timedelta(days=29))
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_rule.setdefault(row["rule"], []).append(row)
    for rule in rules:
        by_rule.setdefault(rule, [])
    compliance = [
        RuleCompliance(
            rule=rule,
            today=_window(rows_of_rule, today.isoformat()),
            last_7_days=_window(rows_of_rule, (today - timedelta(days=6)).isoformat()),
            last_30_days=_window(rows_of_rule, (today - timedelta(days=29)).isoformat()),
            at_risk=sum(int(r["n"]) for r in rows_of_rule if r["status"] == "at_risk"),
        )
        for rule, rows_of_rule in sorted(by_rule.items())
    ]
    opened = sum(o.open for o in by_owner)
    acknowledged = sum(o.acknowledged for o in by_owner)
    return Overview(
        now=now,
        today=today,
        today_starts=datetime.combine(today, time(), zone).astimezone(UTC),
        active=opened + acknowledged,
        open=opened,
        acknowledged=acknowledged,
        by_owner=by_owner,
        compliance=compliance,
        at_risk=sum(c.at_risk for c in compliance),
        at_risk_cases=soonest_at_risk(rows, min(top, MAX_TOP)),
        changes=changes_since(store, since),
        idle=idle_rules(store, now, starts or {}, {c.rule: c.last_7_days.cases for c in compliance}),
        unevaluated=[]
        if evaluated is None
        else [
            RuleActive(rule=r["rule"], active=int(r["active"]))
            for r in store.query(_UNEVALUATED, {"evaluated": sorted(evaluated)})
        ],
    )


def idle_rules(
    store: Store, now: datetime, starts: Mapping[str, Sequence[str]], cases_7_days: Mapping[str, int]
) -> list[IdleRule]:
    """The rules of `starts` without a case in the last 7 days (`cases_7_days`) while events of their start types
    arrived within IDLE_AFTER of `now`."""
    quiet = {rule: types for rule, types in starts.items() if not cases_7_days.get(rule)}
    if not quiet:
        return []
    types = sorted({t for ts in quiet.values() for t in ts})
    last = {r["type"]: stored_time_or_none(r["last"]) for r in store.query(_LAST_OF_TYPES, {"types": types})}
    idle = []
    for rule, rule_types in sorted(quiet.items()):
        seen = [at for t in rule_types if (at := last.get(t)) is not None]
        if seen and max(seen) >= now - IDLE_AFTER:
            idle.append(IdleRule(rule=rule, start_types=list(rule_types), last_start_event=max(seen)))
    return idle


# Integration health -------------------------------------------------------------------------------


class SourceHealth(BaseModel):
    """One source's traffic in the window and when it was last seen."""

    source: str = Field(description="The source path (`wms/dallas`), or the service name of spans without one.")
    spans: int
    spans_per_minute: float
    errors: int
    error_rate: float | None = Field(description="Error spans over spans; null without spans.")
    latency_p95_ms: float | None = Field(description="95th percentile span duration; null without spans.")
    events: int
    events_per_minute: float
    last_span: datetime | None
    last_event: datetime | None
    last_seen: datetime | None = Field(description=f"Latest span or event, looking back {HEALTH_LOOK_BACK.days} days.")
    silent_minutes: float | None = Field(description="Minutes since last seen; null when not seen in the look-back.")
    open_technical: int = Field(description="Active technical exceptions (errors, silence, refusals) of this source.")
    refused: int = Field(
        0,
        description="Records refused into dead letters in the window (by arrival time), counted as the ingest-refusals"
        " rule keys them: under the source claimed when its token may send it, else its token's one source.",
    )
    arrival_lag_p50_seconds: float | None = Field(
        None,
        description="How long after their business time the source's events received in the window arrived (median;"
        " events up to the look-back old); null when none arrived. A batch interface, a queue backing up or a clock"
        " in the wrong zone shows here; negative when the events' time is after their arrival (a sender's clock or"
        " zone ahead).",
    )
    arrival_lag_p95_seconds: float | None = Field(None, description="The same, 95th percentile.")


class SourcesHealth(BaseModel):
    """Integration health per source over a window ending now."""

    since: datetime
    until: datetime
    window_minutes: float
    sources: list[SourceHealth]


_SOURCE = "if(ResourceAttributes['tower.source'] != '', ResourceAttributes['tower.source'], toString(ServiceName))"

# The window's spans per source; the map column is read only for the window's granules.
_SPAN_WINDOW = f"""
SELECT {_SOURCE} AS source,
    groupUniqArray(toString(ServiceName)) AS services,
    uniqExact(TraceId, SpanId) AS spans,
    uniqExactIf(TraceId, SpanId, StatusCode IN {{errors:Array(String)}}) AS errors,
    quantile(0.95)(Duration) / 1e6 AS p95_ms,
    max(Timestamp) AS last
FROM otel_traces
WHERE Timestamp >= {{since:{_T9}}} AND Timestamp < {{until:{_T9}}}
GROUP BY source
"""

# Last span per service over the look-back (cheap columns only) ...
_SPAN_LAST = f"""
SELECT toString(ServiceName) AS service, max(Timestamp) AS last
FROM otel_traces
WHERE Timestamp >= {{look_back:{_T9}}} AND Timestamp < {{until:{_T9}}}
GROUP BY service
"""

# ... and the source of that span, for the services silent in the window (a few granules each).
_SPAN_SOURCE = f"""
SELECT toString(ServiceName) AS service, any({_SOURCE}) AS source
FROM otel_traces
WHERE {{pairs}}
GROUP BY service
"""

# Events per source in the window (records received, redeliveries included: traffic) and the latest one; the arrival
# lag of those received in the window, events dated up to a day ahead included (the doors take them by default): a
# sender whose clock or zone runs ahead shows as a negative lag, not as nothing.
_EVENT_HEALTH = f"""
SELECT toString(source) AS source,
    countIf(time >= {{since:{_T6}}} AND time < {{until:{_T6}}}) AS events,
    maxIf(time, time < {{until:{_T6}}}) AS last,
    countIf(received_at >= {{since:{_T6}}}) AS arrived,
    quantilesIf(0.5, 0.95)(
        (toUnixTimestamp64Milli(received_at) - toUnixTimestamp64Milli(time)) / 1000,
        received_at >= {{since:{_T6}}}
    ) AS lag
FROM business_events
WHERE time >= {{look_back:{_T6}}} AND time < {{until:{_T6}}} + INTERVAL 1 DAY
GROUP BY source
"""

# by arrival: a refusal is news whatever time the record carried; one row per dead letter id (a replay adds versions).
# Counted under the source the ingest-refusals rule keys it by (REFUSAL_KEY): the claim when its token may send it,
# else the token's one granted source; a token's other claims name no source (no other system is blamed). The key
# is the one the door stored from the grant the token had when it refused the record (only letters stored before
# migration 19 are keyed by `token_sources`, the current grants): a grant fixed since moves no refusal to the
# source it now allows.
_REFUSED = f"""
SELECT {REFUSAL_KEY} AS claimed, uniqExact(id) AS refused
FROM dead_letters
WHERE received_at >= {{since:{_T6}}} AND received_at <= {{until:{_T6}}}
GROUP BY claimed
HAVING claimed != '' AND NOT startsWith(claimed, 'token ')
"""

_TECHNICAL_OPEN = """
SELECT JSONExtractString(context, 'source') AS source, count() AS n
FROM exceptions FINAL
WHERE kind = 'technical' AND status != 'resolved'
GROUP BY source
"""


def _span_sources(store: Store, last: dict[str, str]) -> dict[str, str]:
    """The source of each service's last span (`last`: service -> its Timestamp text)."""
    if not last:
        return {}
    clauses, params = [], {}
    for i, (service, at) in enumerate(sorted(last.items())):
        clauses.append(f"(ServiceName = {{s{i}:String}} AND Timestamp = {{t{i}:{_T9}}})")
        params[f"s{i}"], params[f"t{i}"] = service, at
    rows = store.query(_SPAN_SOURCE.replace("{pairs}", " OR ".join(clauses)), params)
    return {r["service"]: r["source"] for r in rows}


def _lags(row: dict[str, Any]) -> dict[str, float | None]:
    """The arrival lag quantiles of a source's event row, rounded; None when no event arrived in the window."""
    if not row or not int(row.get("arrived", 0)):
        return {"arrival_lag_p50_seconds": None, "arrival_lag_p95_seconds": None}
    p50, p95 = (round(float(q), 1) for q in row["lag"])
    return {"arrival_lag_p50_seconds": p50, "arrival_lag_p95_seconds": p95}


def sources_health(
    store: Store, now: datetime, window: timedelta, token_sources: Mapping[str, str | Sequence[str]] | None = None
) -> SourcesHealth:
    """Per source: spans and events per minute, error rate and p95 latency of its spans in [now - window, now),
    when it was last seen (looking back HEALTH_LOOK_BACK), its active technical exceptions, the records claiming
    it that the doors refused in the window, and how late after their business time its events arrived.

    A span's source is the ingest token's (`tower.source`), else its service; a service's last span counts
    for the source of that span. A refused record counts as the ingest-refusals rule keys it: for the source it
    claimed when its token could send that when it was refused, else for its token's one source then (the key the
    door stored; for a letter stored before migration 19, from `token_sources`: ingest token id -> the source or
    sources it is granted).
    """
    since = now - window
    params = {"since": since, "until": now, "look_back": now - HEALTH_LOOK_BACK, "errors": ERROR_STATUSES}
    spans = {r["source"]: r for r in store.query(_SPAN_WINDOW, params)}
    active = {service for row in spans.values() for service in row["services"]}
    silent = {r["service"]: r["last"] for r in store.query(_SPAN_LAST, params) if r["service"] not in active}
    last_span: dict[str, datetime] = {}
    for service, source in _span_sources(store, silent).items():
        at = stored_time_or_none(silent[service][:26])
        if at is not None and (source not in last_span or at > last_span[source]):
            last_span[source] = at
    for source, row in spans.items():
        at = stored_time_or_none(row["last"][:26])
        if at is not None and (source not in last_span or at > last_span[source]):
            last_span[source] = at
    events = {r["source"]: r for r in store.query(_EVENT_HEALTH, params)}
    technical = {r["source"]: int(r["n"]) for r in store.query(_TECHNICAL_OPEN) if r["source"]}
    refusals = {**params, **refusal_key_params(token_sources or {})}
    refused = {r["claimed"]: int(r["refused"]) for r in store.query(_REFUSED, refusals)}
    minutes = window.total_seconds() / 60
    out: list[SourceHealth] = []
    # a source whose every record is refused has sent nothing stored, and is listed for its refusals
    for source in sorted(set(last_span) | set(events) | set(technical) | set(refused)):
        span_row, event_row = spans.get(source, {}), events.get(source, {})
        n_spans, n_errors = int(span_row.get("spans", 0)), int(span_row.get("errors", 0))
        n_events = int(event_row.get("events", 0))
        # the epoch: only events dated ahead of now (counted for their lag, not as seen)
        last = str(event_row.get("last") or "")
        last_event = stored_time_or_none(last) if last and not last.startswith("1970-01-01") else None
        seen = [t for t in (last_span.get(source), last_event) if t is not None]
        last_seen = max(seen) if seen else None
        out.append(
            SourceHealth(
                source=source,
                spans=n_spans,
                spans_per_minute=round(n_spans / minutes, 3),
                errors=n_errors,
                error_rate=_ratio(n_errors, n_spans),
                latency_p95_ms=round(float(span_row["p95_ms"]), 3) if n_spans else None,
                events=n_events,
                events_per_minute=round(n_events / minutes, 3),
                last_span=last_span.get(source),
                last_event=last_event,
                last_seen=last_seen,
                silent_minutes=round((now - last_seen).total_seconds() / 60, 1) if last_seen else None,
                open_technical=sum(n for s, n in technical.items() if source_covers(s, source)),
                refused=refused.get(source, 0),
                **_lags(event_row),
            )
        )
    return SourcesHealth(since=since, until=now, window_minutes=minutes, sources=out)


# SLA trend and breaches -----------------------------------------------------------------------------


class TrendDay(BaseModel):
    """The cases of one rule started on one day (UTC), by status."""

    rule: str
    day: str = Field(description="YYYY-MM-DD (UTC).")
    cases: int
    met: int
    late: int
    breached: int
    pending: int
    compliance: float | None


class SlaTrend(BaseModel):
    """Compliance per rule and day."""

    since: datetime = Field(serialization_alias="from")
    until: datetime = Field(serialization_alias="to")
    days: list[TrendDay]


_TREND = f"""
SELECT rule, toString(toDate(started_at)) AS day, count() AS cases,
    countIf(status = 'met') AS met, countIf(status = 'late') AS late, countIf(status = 'breached') AS breached,
    countIf(status IN ('pending', 'at_risk')) AS pending
FROM sla_cases FINAL
WHERE started_at >= {{since:{_T6}}} AND started_at < {{until:{_T6}}}
    AND ({{rule:String}} = '' OR rule = {{rule:String}})
GROUP BY rule, day
ORDER BY rule, day
"""


def sla_trend_days(store: Store, now: datetime, days: int, rule: str | None = None) -> SlaTrend:
    """Per rule (or one rule), the cases started on each UTC day of the last `days` (today included, whole
    days) by status. Up to the overview's 30 days this is the kept UTC reading of the cases
    (`tower.case_days`, which every evaluation that writes cases refreshes): no FINAL read of millions of
    cases per request. Longer periods read the cases."""
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    since, until = (datetime.combine(d, time(), UTC) for d in (first, today + timedelta(days=1)))
    if days > CASE_DAYS:
        return sla_trend(store, since, until, rule)
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for row in case_days.read(store, ALWAYS_REFRESHED, window_start(now, ALWAYS_REFRESHED)):
        if not first.isoformat() <= row["day"] <= today.isoformat() or rule not in (None, row["rule"]):
            continue
        day = counts.setdefault((row["rule"], row["day"]), dict.fromkeys(("met", "late", "breached", "pending"), 0))
        status = "pending" if row["status"] == "at_risk" else row["status"]
        day[status] = day.get(status, 0) + int(row["n"])
    return SlaTrend(
        since=since,
        until=until,
        days=[
            TrendDay(
                rule=rule_id,
                day=day,
                cases=sum(n.values()),
                met=n["met"],
                late=n["late"],
                breached=n["breached"],
                pending=n["pending"],
                compliance=_ratio(n["met"], n["met"] + n["late"] + n["breached"]),
            )
            for (rule_id, day), n in sorted(counts.items())
        ],
    )


def sla_trend(store: Store, since: datetime, until: datetime, rule: str | None = None) -> SlaTrend:
    """Per rule (or one rule) and UTC day, the cases started in [since, until) by status."""
    days = [
        TrendDay(
            rule=r["rule"],
            day=r["day"],
            cases=int(r["cases"]),
            met=int(r["met"]),
            late=int(r["late"]),
            breached=int(r["breached"]),
            pending=int(r["pending"]),
            compliance=_ratio(int(r["met"]), int(r["met"]) + int(r["late"]) + int(r["breached"])),
        )
        for r in store.query(_TREND, {"since": since, "until": until, "rule": rule or ""})
    ]
    return SlaTrend(since=since, until=until, days=days)


class LateBucket(BaseModel):
    """Breaches that were (or are, still open) between `min_hours` and `max_hours` late."""

    label: str
    min_hours: float
    max_hours: float | None
    breaches: int


class BreachGroup(BaseModel):
    """Breaches of one customer or warehouse."""

    name: str = Field(description="The customer id or warehouse; empty when the cases had none.")
    breaches: int
    still_open: int = Field(description="Breaches still open: no end, and no resolved exception.")
    avg_hours_late: float
    max_hours_late: float


class BreachStats(BaseModel):
    """How late the breaches of a period were, and who they hit most."""

    since: datetime = Field(serialization_alias="from")
    until: datetime = Field(serialization_alias="to")
    rule: str | None
    total: int = Field(description="Breaches, as the finance report counts them: late (closed) and breached (open).")
    late: int = Field(description="Closed breaches: ended after the deadline, or their exception resolved by a person.")
    breached: int = Field(description="Open breaches: no end and no resolved exception (the report's `open`).")
    buckets: list[LateBucket]
    customers: list[BreachGroup] = Field(description="The customers with the most breaches.")
    warehouses: list[BreachGroup] = Field(description="The warehouses with the most breaches.")


# Every breach counts once in each dimension: its lateness bucket, its customer and its warehouse. The breaches, when
# they closed and their hours late are the finance report's own (sla_rules.breaches.LATENESS).
_BREACHES = f"""
SELECT dim, value, breaches, still_open, avg_hours, max_hours
FROM (
    SELECT d.1 AS dim, d.2 AS value, count() AS breaches, countIf(is_open) AS still_open,
        avg(hours) AS avg_hours, max(hours) AS max_hours,
        row_number() OVER (PARTITION BY dim ORDER BY breaches DESC, value) AS rank
    FROM (
        SELECT is_open, hours,
            [('bucket', toString(arrayCount(edge -> hours >= edge, {{edges:Array(Float64)}}))),
             ('customer', customer_id), ('warehouse', toString(warehouse))] AS dims
        FROM (SELECT is_open, customer_id, warehouse, hundredths / 100 AS hours FROM ({LATENESS}))
    )
    ARRAY JOIN dims AS d
    GROUP BY dim, value
)
WHERE dim = 'bucket' OR rank <= {{top:UInt32}}
ORDER BY dim, breaches DESC, value
"""


def _bucket_label(low: float, high: float | None) -> str:
    return f"{low:g}-{high:g} h" if high is not None else f"{low:g} h or more"


def sla_breaches(
    store: Store, since: datetime, until: datetime, now: datetime, rule: str | None = None, top: int = 10
) -> BreachStats:
    """Breaches whose deadline falls in [since, until), counted as the finance report counts them as of `now`:
    closed ones by how late they closed (their end, else the resolution of their exception), open ones by how late
    they are at `now`; the `top` customers and warehouses."""
    since, until, now = (t.astimezone(UTC) for t in (since, until, now))
    rows = store.query(
        _BREACHES,
        {"since": since, "until": until, "as_of": now, "rule": rule or "", "edges": list(LATE_BUCKETS), "top": top},
    )
    counts = {int(r["value"]): int(r["breaches"]) for r in rows if r["dim"] == "bucket"}
    edges: Sequence[float | None] = [*LATE_BUCKETS[1:], None]
    buckets = [
        LateBucket(label=_bucket_label(low, high), min_hours=low, max_hours=high, breaches=counts.get(i + 1, 0))
        for i, (low, high) in enumerate(zip(LATE_BUCKETS, edges, strict=True))
    ]

    def groups(dim: str) -> list[BreachGroup]:
        return [
            BreachGroup(
                name=r["value"],
                breaches=int(r["breaches"]),
                still_open=int(r["still_open"]),
                avg_hours_late=round(float(r["avg_hours"]), 3),
                max_hours_late=round(float(r["max_hours"]), 3),
            )
            for r in rows
            if r["dim"] == dim
        ]

    bucket_rows = [r for r in rows if r["dim"] == "bucket"]
    breached = sum(int(r["still_open"]) for r in bucket_rows)
    total = sum(int(r["breaches"]) for r in bucket_rows)
    return BreachStats(
        since=since,
        until=until,
        rule=rule,
        total=total,
        late=total - breached,
        breached=breached,
        buckets=buckets,
        customers=groups("customer"),
        warehouses=groups("warehouse"),
    )
