"""Every /api route against every role: allowed roles get through, the others get 403, no token 401.

The table below must classify every /api route of the app's OpenAPI document: a new route fails
`test_every_api_route_is_classified` until its allowed roles are written here.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import tests.support
from alerting.silences import SilenceStore
from collector.deadletters import Refusal, dead_letter_row
from kernel.api_auth import ROLES
from kernel.backups import Backups
from kernel.clock import FixedClock, SystemClock
from kernel.exceptions import ExceptionStore, NewException
from kernel.routing import ExceptionMatch
from kernel.settings import Settings
from kernel.store import Store
from tests.factories import make_settings, rule_mapping
from tests.support import RunningTower, start_in_process

READ = frozenset({"viewer", "operator", "finance", "admin"})
OPERATE = frozenset({"operator", "admin"})
ADMIN = frozenset({"admin"})
FINANCE = frozenset({"finance", "admin"})

# (method, path as in the OpenAPI document) -> the roles allowed.
ALLOWED: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/api/exceptions"): READ,
    ("GET", "/api/exceptions/export"): READ,
    ("GET", "/api/exceptions/{exception_id}"): READ,
    ("POST", "/api/exceptions/{exception_id}/acknowledge"): OPERATE,
    ("POST", "/api/exceptions/{exception_id}/assign"): OPERATE,
    ("POST", "/api/exceptions/{exception_id}/resolve"): OPERATE,
    ("POST", "/api/exceptions/{exception_id}/notes"): OPERATE,
    ("POST", "/api/exceptions/resolve"): OPERATE,
    ("POST", "/api/exceptions/{exception_id}/replay"): OPERATE,
    ("GET", "/api/replays"): READ,
    ("GET", "/api/timeline/{key}"): READ,
    ("GET", "/api/sla/summary"): READ,
    ("GET", "/api/sla/compliance"): READ,
    ("GET", "/api/sla/runs"): READ,
    ("POST", "/api/sla/evaluate"): OPERATE,
    ("POST", "/api/sla/backtest"): OPERATE,
    ("GET", "/api/deadletters"): ADMIN,
    ("POST", "/api/deadletters/replay"): ADMIN,
    ("POST", "/api/deadletters/discard"): ADMIN,
    ("GET", "/api/deadletters/{letter_id}"): ADMIN,
    ("GET", "/api/alerts/deliveries"): READ,
    ("POST", "/api/alerts/resend"): OPERATE,
    ("GET", "/api/whoami"): READ,
    ("GET", "/api/facets"): READ,
    ("GET", "/api/overview"): READ,
    ("GET", "/api/sources/health"): READ,
    ("GET", "/api/sla/trend"): READ,
    ("GET", "/api/sla/breaches"): READ,
    ("GET", "/api/reports/sla-breaches"): FINANCE,
    ("POST", "/api/reconcile/run"): OPERATE,
    ("GET", "/api/reconcile/runs"): READ,
    ("GET", "/api/reconcile/findings"): READ,
    ("POST", "/api/silences"): OPERATE,
    ("GET", "/api/silences"): READ,
    ("DELETE", "/api/silences/{silence_id}"): OPERATE,
    ("POST", "/api/backups"): ADMIN,
    ("GET", "/api/backups"): ADMIN,
    ("GET", "/api/backups/{name}"): ADMIN,
}

# Routes answering a file: path -> the media types their 200 answer documents.
FILE_ROUTES: dict[str, tuple[str, ...]] = {
    "/api/exceptions/export": ("text/csv",),
    "/api/reports/sla-breaches": ("text/csv", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
}

# Routes that admit the role but answer another status for the test's (business) exception:
# a replay is only for technical exceptions, so an admitted caller gets 409.
ADMITTED_STATUS: dict[tuple[str, str], int] = {
    ("POST", "/api/exceptions/{exception_id}/replay"): 409,
    ("POST", "/api/backups"): 202,  # started, running in the engine's background
}

RULE = rule_mapping("release-test")

# A valid body for the routes that take one.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/exceptions/{exception_id}/assign"): {"assignee": "ann"},
    ("POST", "/api/exceptions/{exception_id}/resolve"): {"resolution": "fixed"},
    ("POST", "/api/exceptions/{exception_id}/notes"): {"text": "looking"},
    ("POST", "/api/sla/backtest"): {"rule": RULE, "from": "2026-11-01T00:00:00Z", "to": "2026-11-08T00:00:00Z"},
    ("POST", "/api/deadletters/replay"): {"ids": []},
    ("POST", "/api/deadletters/discard"): {"ids": ["00000000-0000-0000-0000-000000000001"], "note": "roles test"},
    ("POST", "/api/silences"): {"matchers": {"key": "SO-1"}, "duration": "1h", "comment": "roles test"},
    ("POST", "/api/alerts/resend"): {"channel": "#ops-warehouse"},
    ("POST", "/api/exceptions/resolve"): {"rule": "no-such-rule", "note": "roles test"},
}


# The required query parameters of the routes that have some.
QUERIES: dict[tuple[str, str], dict[str, str]] = {("GET", "/api/sla/compliance"): {"by": "warehouse"}}


def settings_with_every_role(*args: Any, **kwargs: Any) -> Settings:
    """Test settings with one API token per role."""
    settings = make_settings(*args, **kwargs)
    settings.api.tokens = {f"{role}-{secrets.token_hex(12)}": role for role in ROLES}
    return settings


@pytest.fixture
def roles_tower(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningTower]:
    """The in-process tower of the `tower` fixture, with a token for each of the four roles."""
    monkeypatch.setattr(tests.support, "make_settings", settings_with_every_role)
    with start_in_process(tmp_path, store) as running:
        yield running


def openapi(running: RunningTower) -> dict[str, Any]:
    """The app's OpenAPI document, as served."""
    document: dict[str, Any] = httpx.get(f"{running.http_url}/openapi.json", timeout=30).json()
    return document


def api_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    """(method, path) of every /api operation in an OpenAPI document."""
    return {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        if path.startswith("/api/")
        for method in operations
    }


def test_every_api_route_is_classified(roles_tower: RunningTower) -> None:
    operations = api_operations(openapi(roles_tower))
    assert operations - ALLOWED.keys() == set(), "classify these routes in ALLOWED"
    assert ALLOWED.keys() - operations == set(), "these routes are gone; remove them from ALLOWED"


def call(
    http: httpx.Client,
    method: str,
    path: str,
    exception_id: str,
    silence_id: str = "none",
    backup: str = "none",
    letter_id: str = "00000000-0000-0000-0000-000000000001",
) -> httpx.Response:
    url = path.format(exception_id=exception_id, key="SO-1", silence_id=silence_id, name=backup, letter_id=letter_id)
    body, params = BODIES.get((method, path)), QUERIES.get((method, path))
    return (
        http.request(method, url, json=body, params=params)
        if body is not None
        else http.request(method, url, params=params)
    )


def test_each_role_against_each_route(roles_tower: RunningTower, store: Store) -> None:
    (record,) = ExceptionStore(store, FixedClock(datetime(2026, 11, 2, 16, tzinfo=UTC))).open_many(
        [NewException("order-release", "SO-1", "business", "customer_service", "high")]
    )
    silence = SilenceStore(store, SystemClock()).create(
        ExceptionMatch(key=["SO-1"]), created_by="test", comment="roles", duration=timedelta(hours=1)
    )
    backup = Backups(store, SystemClock()).start()
    letter = dead_letter_row(Refusal("events", "roles test", "{}", source="erp"), "tok", datetime.now(UTC))
    store.insert("dead_letters", [letter])
    wrong: list[str] = []
    for (method, path), allowed in sorted(ALLOWED.items()):
        for role in ROLES:
            with roles_tower.api(role) as http:
                response = call(http, method, path, record.id, silence.id, backup.name, letter["id"])
            if role in allowed:
                # the operator acts on the exception first; the admin then finds it acknowledged or resolved
                ok = response.status_code in (200, ADMITTED_STATUS.get((method, path), 200)) or (
                    response.status_code == 409 and role == "admin"
                )
            else:
                ok = response.status_code == 403 and response.json() == {"detail": f"role {role!r} may not do this"}
            if not ok:
                wrong.append(f"{role} {method} {path}: {response.status_code} {response.text[:200]}")
    assert wrong == []


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer not-a-token", "Basic dmlld2VyOnNlY3JldA=="],
    ids=["no header", "empty", "unknown", "basic"],
)
def test_without_a_known_token_every_route_is_401(roles_tower: RunningTower, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    wrong: list[str] = []
    with httpx.Client(base_url=roles_tower.http_url, headers=headers, timeout=30) as http:
        for method, path in sorted(ALLOWED):
            response = call(http, method, path, "some-id")
            if response.status_code != 401 or response.headers.get("www-authenticate") != "Bearer":
                wrong.append(f"{method} {path}: {response.status_code}")
    assert wrong == []


def test_every_route_taking_query_parameters_refuses_an_unknown_one(roles_tower: RunningTower) -> None:
    """A misspelt parameter was ignored, so the route answered (or did) more than was asked: the finance report for
    `?form=2026-10-01` was last month's, `POST /api/reconcile/run?rul=inventory-sync` ran every rule."""
    document = openapi(roles_tower)
    taking = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        if path.startswith("/api/")
        for method, operation in operations.items()
        if any(p["in"] == "query" for p in operation.get("parameters", []))
    }
    assert ("GET", "/api/reports/sla-breaches") in taking and ("POST", "/api/reconcile/run") in taking
    wrong: list[str] = []
    with roles_tower.api("admin") as http:
        for method, path in sorted(taking):
            url = path.format(exception_id="some-id", key="SO-1", silence_id="none", name="none", letter_id="x")
            response = http.request(method, url, params={**QUERIES.get((method, path), {}), "form": "2026-10-01"})
            problems = response.json().get("detail") if response.status_code == 422 else None
            if not (isinstance(problems, list) and problems[0]["loc"] == ["query", "form"]):
                wrong.append(f"{method} {path}: {response.status_code} {response.text[:120]}")
    assert wrong == []


def test_openapi_documents_every_api_route(roles_tower: RunningTower) -> None:
    document = openapi(roles_tower)
    problems: list[str] = []
    for path, operations in document["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, operation in operations.items():
            name = f"{method.upper()} {path}"
            responses = operation.get("responses", {})
            if not operation.get("summary"):
                problems.append(f"{name}: no summary")
            if "Roles:" not in operation.get("description", ""):
                problems.append(f"{name}: the description does not name the roles")
            answer = responses.get("200") or responses.get("202", {})  # 202: started (a backup)
            success = answer.get("content", {}).get("application/json", {}).get("schema")
            if path in FILE_ROUTES:  # downloads document their file types instead of JSON
                content = responses.get("200", {}).get("content", {})
                success = all(content.get(media, {}).get("schema") for media in FILE_ROUTES[path])
            if not success or success == {}:
                problems.append(f"{name}: no documented 200 answer")
            for code in ("401", "403"):
                if "$ref" not in str(responses.get(code, {}).get("content", {})):
                    problems.append(f"{name}: {code} not documented with its body")
            if "{exception_id}" in path and "404" not in responses:
                problems.append(f"{name}: 404 not documented")
            one = "{exception_id}" in path  # an action on one exception; resolving many has no conflict to answer
            if one and path.endswith(("/acknowledge", "/assign", "/resolve")) and "409" not in responses:
                problems.append(f"{name}: 409 not documented")
            if (operation.get("parameters") or operation.get("requestBody")) and "422" not in responses:
                problems.append(f"{name}: 422 not documented")
    assert problems == []
