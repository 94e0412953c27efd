"""The dashboard's one way to the tower: its HTTP API, signed in with the session's token.

Reads are cached with Streamlit's `st.cache_data` for a short TTL (TOWER_DASHBOARD_CACHE_TTL_SECONDS),
keyed by the API URL, a hash of the token (never the token itself), the path and the parameters:
reruns and other visitors with the same role reuse an answer for a few seconds instead of asking the
tower again. A change (acknowledge, assign, resolve, note) clears the cache, so the page that made it
shows the new state at once.

Errors come back as `ApiError` with a readable message; routes that may not exist in every tower
(Slack deliveries, reconciliation runs and findings) answer None when the tower does not have them
(404), so a page shows an empty state instead of an error. The dashboard never opens the store.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

import httpx
import streamlit as st

from dashboard.settings import DashboardSettings

TOKEN_KEY = "token"  # st.session_state key of the signed-in token
_TTL = DashboardSettings().cache_ttl_seconds
_clients: dict[tuple[str, float], httpx.Client] = {}
_clients_lock = threading.Lock()

Params = tuple[tuple[str, str], ...]


class ApiError(Exception):
    """The tower refused a call, or could not be reached (`status` 0)."""

    def __init__(self, status: int, detail: str, path: str = "") -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.path = path

    @property
    def message(self) -> str:
        """What went wrong, for a person."""
        if self.status == 0:
            return f"The tower cannot be reached: {self.detail}"
        if self.status == 401:
            return "The tower does not accept this token. Sign in again with a valid token."
        if self.status == 403:
            return f"Your role may not do this ({self.detail})."
        return f"The tower answered {self.status} to {self.path}: {self.detail}"


def settings() -> DashboardSettings:
    """The dashboard's settings, read from TOWER_DASHBOARD_* now."""
    return DashboardSettings()


def _client(base_url: str, timeout: float) -> httpx.Client:
    """One pooled HTTP client per API URL and timeout, shared by every session (httpx clients are thread-safe)."""
    with _clients_lock:
        found = _clients.get((base_url, timeout))
        if found is None:
            found = _clients[(base_url, timeout)] = httpx.Client(base_url=base_url, timeout=timeout)
        return found


def _detail(response: httpx.Response) -> str:
    """The readable part of an error answer: `detail`, or the validation problems, or the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in problem.get('loc', []))}: {problem.get('msg', '')}"
            for problem in detail
            if isinstance(problem, dict)
        )
    return str(detail) if detail is not None else response.text[:300]


def _call(
    base_url: str,
    token: str,
    method: str,
    path: str,
    params: Params = (),
    body: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
) -> httpx.Response:
    """One API call; ApiError unless it answers 2xx."""
    try:
        response = _client(base_url, timeout).request(
            method, path, params=list(params), json=body, headers={"Authorization": f"Bearer {token}"}
        )
    except httpx.HTTPError as exc:
        raise ApiError(0, f"{base_url}: {exc}", path) from exc
    if response.status_code >= 400:
        raise ApiError(response.status_code, _detail(response), path)
    return response


@st.cache_data(ttl=_TTL, show_spinner=False, max_entries=2000)
def _cached_get(base_url: str, identity: str, path: str, params: Params, timeout: float, _token: str) -> Any:
    """A GET answer, cached per (URL, token hash, path, parameters); `_token` is left out of the cache key."""
    return _call(base_url, _token, "GET", path, params, timeout=timeout).json()


def clear_cache() -> None:
    """Forget every cached answer (after a change, so pages show it)."""
    _cached_get.clear()


def _params(values: Mapping[str, Any]) -> Params:
    """Query parameters without the empty ones, as text, in a stable order (part of the cache key)."""
    out: list[tuple[str, str]] = []
    for name, value in sorted(values.items()):
        if value is None or value == "":
            continue
        if isinstance(value, datetime):
            out.append((name, value.isoformat()))
        elif isinstance(value, bool):
            out.append((name, "true" if value else "false"))
        else:
            out.append((name, str(value)))
    return tuple(out)


def items_of(body: Any, *names: str) -> list[dict[str, Any]]:
    """The list in an answer: the answer itself, or its `items` (or one of `names`) field."""
    if isinstance(body, list):
        return [row for row in body if isinstance(row, dict)]
    if isinstance(body, dict):
        for name in ("items", *names):
            if isinstance(body.get(name), list):
                return [row for row in body[name] if isinstance(row, dict)]
    return []


class TowerApi:
    """The tower's API as the dashboard uses it, with one token."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.identity = hashlib.sha256(token.encode()).hexdigest()[:16]

    # plumbing

    def get(self, path: str, **params: Any) -> Any:
        """A cached GET of `path` with the non-empty `params`."""
        return _cached_get(self.base_url, self.identity, path, _params(params), self.timeout, self.token)

    def optional(self, path: str, **params: Any) -> Any | None:
        """A cached GET of a route this tower may not have: None when it answers 404."""
        try:
            return self.get(path, **params)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """A POST (a change): never cached, and clears the cache once done."""
        try:
            return _call(self.base_url, self.token, "POST", path, body=body, timeout=self.timeout).json()
        finally:
            clear_cache()

    # reads

    def whoami(self) -> dict[str, Any]:
        """The token's role, id and rights, and the tower's clock."""
        return dict(self.get("/api/whoami"))

    def facets(self) -> dict[str, Any]:
        """Owners, rules, statuses, kinds and severities."""
        return dict(self.get("/api/facets"))

    def overview(self, since: datetime | None = None, tz: str = "UTC") -> dict[str, Any]:
        """Active exceptions by owner and severity, compliance, at-risk cases, changes since `since`."""
        return dict(self.get("/api/overview", since=since, tz=tz))

    def sources_health(self, minutes: float = 15) -> dict[str, Any]:
        """Traffic, errors, latency and last seen per source."""
        return dict(self.get("/api/sources/health", minutes=minutes))

    def exceptions(self, filters: Mapping[str, Any], limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """One page of exceptions matching `filters` (the API's query parameters) and the total."""
        return dict(self.get("/api/exceptions", **filters, limit=limit, offset=offset))

    def exceptions_csv(self, filters: Mapping[str, Any], rows: int = 10_000) -> bytes:
        """The exceptions matching `filters` (the list's parameters, `sort` included) as CSV, at most `rows` (never
        cached)."""
        params = _params({**filters, "max": rows})
        return _call(self.base_url, self.token, "GET", "/api/exceptions/export", params, timeout=self.timeout).content

    def exception(self, exception_id: str) -> dict[str, Any]:
        """One exception with its timeline (events, spans, audit trail)."""
        return dict(self.get(f"/api/exceptions/{quote(exception_id, safe='')}"))

    def timeline(self, key: str) -> dict[str, Any]:
        """A business key's events, spans and exceptions."""
        return dict(self.get(f"/api/timeline/{quote(key, safe='')}"))

    def sla_summary(self, since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
        """Compliance per rule for cases started in [since, until)."""
        return dict(self.get("/api/sla/summary", **{"from": since, "to": until}))

    def sla_compliance_by(
        self, by: str, rule: str | None, since: datetime, until: datetime, limit: int = 50
    ) -> dict[str, Any]:
        """Compliance per rule (or one rule) and warehouse (or customer) for cases started in [since, until), the
        worst `limit` first."""
        params = {"by": by, "rule": rule, "sort": "worst", "limit": limit, "from": since, "to": until}
        return dict(self.get("/api/sla/compliance", **params))

    def sla_trend(self, rule: str | None, days: int) -> dict[str, Any]:
        """Compliance per rule and day over the last `days`."""
        return dict(self.get("/api/sla/trend", rule=rule, days=days))

    def sla_breaches(self, rule: str | None, since: datetime, until: datetime) -> dict[str, Any]:
        """How late breaches were, and the worst customers and warehouses."""
        return dict(self.get("/api/sla/breaches", rule=rule, **{"from": since, "to": until}))

    def deliveries(self, exception_id: str) -> list[dict[str, Any]] | None:
        """The Slack delivery log of an exception; None when the tower has no alerting."""
        body = self.optional("/api/alerts/deliveries", exception_id=exception_id)
        return None if body is None else items_of(body, "deliveries")

    def reconcile_runs(self) -> list[dict[str, Any]] | None:
        """The latest reconciliation runs; None when the tower has no reconcilers."""
        body = self.optional("/api/reconcile/runs")
        return None if body is None else items_of(body, "runs")

    def reconcile_findings(self, rule: str | None = None, limit: int = 1000) -> list[dict[str, Any]] | None:
        """Open reconciliation findings (of one rule), newest first; None when the tower has no reconcilers (or
        does not know the rule)."""
        body = self.optional("/api/reconcile/findings", rule=rule, limit=limit)
        return None if body is None else items_of(body, "findings")

    def dead_letters(
        self,
        status: str | None = None,
        door: str | None = None,
        source: str | None = None,
        limit: int = 200,
        offset: int = 0,
        token_id: str | None = None,
    ) -> dict[str, Any]:
        """A page of dead letters, newest first, and the total that match (admin tokens only); `token_id`: only
        those the ingest token with this id sent."""
        return dict(
            self.get(
                "/api/deadletters",
                status=status,
                door=door,
                source=source,
                token_id=token_id,
                limit=limit,
                offset=offset,
            )
        )

    def report(self, since: date, until: date, fmt: str) -> bytes:
        """The SLA breach report of [since, until) as CSV or XLSX bytes (never cached)."""
        params = _params({"from": since.isoformat(), "to": until.isoformat(), "format": fmt})
        response = _call(
            self.base_url, self.token, "GET", "/api/reports/sla-breaches", params, timeout=max(self.timeout, 300)
        )
        return response.content

    # changes

    def acknowledge(self, exception_id: str) -> dict[str, Any]:
        """open -> acknowledged."""
        return dict(self.post(f"/api/exceptions/{exception_id}/acknowledge"))

    def assign(self, exception_id: str, assignee: str) -> dict[str, Any]:
        """Assign (or clear with '') an active exception."""
        return dict(self.post(f"/api/exceptions/{exception_id}/assign", {"assignee": assignee}))

    def resolve(self, exception_id: str, resolution: str, note: str) -> dict[str, Any]:
        """Resolve an active exception."""
        return dict(self.post(f"/api/exceptions/{exception_id}/resolve", {"resolution": resolution, "note": note}))

    def add_note(self, exception_id: str, text: str) -> dict[str, Any]:
        """Add a note to the audit trail."""
        return dict(self.post(f"/api/exceptions/{exception_id}/notes", {"text": text}))

    def replay_dead_letters(self, ids: list[str]) -> dict[str, Any]:
        """Run the pending dead letters named through their door again: `replayed`, `still_failing`."""
        return dict(self.post("/api/deadletters/replay", {"ids": ids}))

    def resolve_matching(self, filters: Mapping[str, Any], resolution: str, note: str) -> dict[str, Any]:
        """Resolve every active exception the filters match (`rule`, `owner`, `kind`, `customer`, `warehouse`,
        `status`, `min_age_hours`): `matched`, `resolved`."""
        body = {k: v for k, v in filters.items() if v not in ("", None)}
        return dict(self.post("/api/exceptions/resolve", {**body, "resolution": resolution, "note": note}))

    def resend_failed(self, channel: str) -> dict[str, Any]:
        """Put a channel's failed Slack messages of the last 24 hours back in the outbox: `requeued`, `left_failed`."""
        return dict(self.post("/api/alerts/resend", {"channel": channel}))

    def discard_dead_letters(self, ids: list[str], note: str) -> dict[str, Any]:
        """Give up on the pending dead letters named, saying why: `discarded`, `not_pending`."""
        return dict(self.post("/api/deadletters/discard", {"ids": ids, "note": note}))


def session_api() -> TowerApi | None:
    """The API signed in with this session's token, or None before sign-in."""
    token = st.session_state.get(TOKEN_KEY)
    if not token:
        return None
    config = settings()
    return TowerApi(config.api_url, str(token), config.timeout_seconds)
