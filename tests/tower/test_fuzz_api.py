"""Fuzz every HTTP route of the served OpenAPI document: no 5xx, the server stays up, every error is readable.

The routes come from the live document (`/openapi.json`), never from a list here, so a route added
tomorrow is fuzzed tomorrow. Requests are generated from each operation's parameter and body schemas
(tests/tower/fuzz_support.py): valid, exotic and certainly invalid values, undecodable JSON, wrong
content types, with every role's token, an unknown one or none. The ingest doors get random bodies,
content types and encodings; the Slack interactivity endpoint gets signed and unsigned forms.

The tower runs in this process on the shared store, loaded first with a short `tower demo` history
and evaluated, so real exception ids, keys, owners and rules are fuzzed too. Hypothesis runs with a
fixed seed per operation, no example database and a bounded number of examples: the same requests
every run. Problems are collected (not shrunk) and reported together, each with its request.
"""

from __future__ import annotations

import os
import secrets
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

import tests.support
from collector.demo.scenario import SERVICES, ScenarioConfig, build_scenario
from collector.demo.senders import DemoSender
from kernel.api_auth import ROLES
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionFilter
from kernel.settings import Settings
from kernel.store.embedded import EmbeddedStore
from tests.conftest import empty
from tests.factories import make_settings, rule_mapping
from tests.support import RunningTower, start_in_process
from tests.tower.fuzz_support import (
    Context,
    FuzzRequest,
    Operation,
    operations,
    problems,
    requests_for,
    send,
    slack_signature,
)
from tower.app import build_sla

# Examples per operation, by door; the module takes about a minute on 2 cores (TOWER_FUZZ_SCALE multiplies).
EXAMPLES = {"api": 90, "public": 10, "slack": 120, "ingest": 150}
# Routes whose every accepted request runs a whole job (an evaluation over the demo history takes about 0.25 s): their
# few parameters (a flag, rule names) need fewer examples, and 90 of them took a fifth of the module's time.
JOB_EXAMPLES = {"POST /api/sla/evaluate": 30, "POST /api/reconcile/run": 30}
SCALE = float(os.environ.get("TOWER_FUZZ_SCALE", "1"))
SLACK_SECRET = "fuzz-signing-secret"
STORY_ENDS = datetime(2026, 11, 4, 15, 30, tzinfo=UTC)  # a Wednesday, 09:30 in Dallas: the demo history ends here
# Bodies known to be valid, for routes whose body a schema alone rarely gets right; the fuzz changes their
# fields. A route missing from the document is simply not fuzzed with them.
KNOWN_BODIES: dict[str, list[dict[str, Any]]] = {
    "POST /api/sla/backtest": [
        {"rule": rule_mapping("fuzz-release")},
        {"rule": rule_mapping("fuzz-release"), "from": "2026-11-01T00:00:00Z", "to": "2026-11-08T00:00:00Z"},
    ],
    "POST /api/silences": [
        {"matchers": {"rule": ["order-release"]}, "duration": "2h", "comment": "fuzz"},
        {"matchers": {"source": ["wms"], "severity": ["high"]}, "ends_at": "2030-01-01T00:00:00Z", "comment": "x"},
    ],
}
SLACK_USER = "UFUZZ0001"


def fuzz_settings(examples: int) -> settings:
    """Deterministic and bounded: no example database, no shrinking (problems are collected, not raised)."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        database=None,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


def settings_with_every_role(*args: Any, **kwargs: Any) -> Settings:
    """Test settings with one API token per role."""
    result = make_settings(*args, **kwargs)
    result.api.tokens = {f"{role}-{secrets.token_hex(12)}": role for role in ROLES}
    return result


@pytest.fixture(scope="module")
def fuzz_tower(shared_store: EmbeddedStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTower]:
    """The `tower` fixture's in-process tower on the emptied shared store, with a token per role and Slack
    interactivity configured; one for the module (loading the demo history once)."""
    empty(shared_store)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tests.support, "make_settings", settings_with_every_role)
        patch.setenv("TOWER_SLACK_SIGNING_SECRET", SLACK_SECRET)
        patch.setenv("TOWER_ALERTING_SLACK_USERS", orjson.dumps({SLACK_USER: "fuzzer"}).decode())
        with start_in_process(tmp_path_factory.mktemp("fuzz"), shared_store) as running:
            yield running


@pytest.fixture(scope="module")
def context(fuzz_tower: RunningTower) -> Context:
    """A short demo history sent through the doors and evaluated; real values for the parameters."""
    assert fuzz_tower.tower is not None
    # A fixed story and clock: how many exceptions a short history leaves open depends on the time of day (a
    # ship cutoff passed or not), and the check below must not depend on when the suite runs.
    story = build_scenario(ScenarioConfig(seed=5, orders=60, history_hours=30, skus=2), FixedClock(STORY_ENDS))
    sender = DemoSender(fuzz_tower.http_url, {s: fuzz_tower.token(s) for s in set(SERVICES.values())})
    try:
        sender.send_all(story.deliveries)
    finally:
        sender.close()
    assert sender.stats.failed == 0, sender.stats.rejections
    parts = build_sla(fuzz_tower.settings, fuzz_tower.tower.store, FixedClock(STORY_ENDS))
    report = parts.sla.evaluate(full=True)
    assert report.opened, "the demo history opened no exception"
    records, _ = fuzz_tower.tower.exceptions.search(ExceptionFilter(), limit=1000)
    contexts = [r.context for r in records]
    samples: dict[str, list[str]] = {
        "exception_id": [r.id for r in records],
        "key": sorted({r.key for r in records} | {e.subject for d in story.deliveries[:20] for e in d.events}),
        "owner": sorted({r.owner for r in records}),
        "rule": sorted({r.rule for r in records}),
        "customer": sorted({str(c["customer_id"]) for c in contexts if c.get("customer_id")}),
        "warehouse": sorted({str(c["warehouse"]) for c in contexts if c.get("warehouse")}),
        "source": sorted(set(SERVICES.values())),
    }
    document: dict[str, Any] = httpx.get(f"{fuzz_tower.http_url}/openapi.json", timeout=30).json()
    return Context(
        document=document,
        api_tokens={role: fuzz_tower.api_token(role) for role in ROLES},
        ingest_tokens={s: fuzz_tower.token(s) for s in sorted(set(SERVICES.values()))},
        samples=samples,
        slack_secret=SLACK_SECRET,
        slack_users=[SLACK_USER],
        bodies=KNOWN_BODIES,
    )


def fuzz_operation(http: httpx.Client, op: Operation, context: Context, statuses: Counter[int]) -> list[str]:
    """Run the operation's examples, counting the statuses; the problems found (deduplicated by route and kind
    of problem)."""
    found: dict[str, str] = {}

    @fuzz_settings(JOB_EXAMPLES.get(op.name, EXAMPLES[op.door]))
    @seed(zlib.crc32(op.name.encode()))
    @given(request=requests_for(op, context))
    def run(request: FuzzRequest) -> None:
        try:
            response = send(http, request)
        except httpx.TransportError as error:
            found.setdefault(
                f"transport {type(error).__name__}", f"{op.name}: {error!r}\n  request: {request.describe()}"
            )
            return
        statuses[response.status_code] += 1
        for problem in problems(op, request, response):
            found.setdefault(problem.split("\n", 1)[0][:160], problem)

    run()
    try:
        alive = http.get("/healthz", timeout=10).status_code == 200
    except httpx.HTTPError:
        alive = False
    if not alive:
        found["down"] = f"{op.name}: the server does not answer /healthz after fuzzing"
    return list(found.values())


def test_the_document_lists_every_door(context: Context) -> None:
    """The fuzz covers what the document lists: the API, the three ingest doors, health and Slack."""
    ops = operations(context.document)
    doors = {op.door for op in ops}
    assert {"api", "ingest", "public"} <= doors
    assert {op.path for op in ops if op.door == "ingest"} >= {"/v1/traces", "/v1/logs", "/v1/events"}
    assert set(JOB_EXAMPLES) <= {op.name for op in ops}, "a route given fewer examples is not in the document"
    unnamed = [op.name for op in ops if op.door == "api" and op.roles is None]
    assert unnamed == [], "these routes name no roles in their description (`Roles: ...`)"
    assert len(context.samples["exception_id"]) >= 5, "the demo history gave too few real exception ids"


@pytest.mark.slow
@pytest.mark.parametrize("door", ["api", "public", "slack", "ingest"])
def test_fuzz_every_route(fuzz_tower: RunningTower, context: Context, door: str) -> None:
    """Every operation of the door: no 5xx, statuses that fit, readable errors, the server up afterwards."""
    ops = [op for op in operations(context.document) if op.door == door]
    if not ops:
        pytest.skip(f"the document lists no {door} route")
    found: list[str] = []
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=fuzz_tower.http_url, timeout=60) as http:
        for op in ops:
            found += fuzz_operation(http, op, context, statuses)
    assert found == [], f"{len(found)} problems:\n" + "\n".join(found)
    # The requests reach the routes' logic: a good share is answered 2xx, and refusals are not all alike.
    total = sum(statuses.values())
    succeeded = sum(n for code, n in statuses.items() if 200 <= code < 300)
    assert succeeded >= total * 0.1, statuses
    if door != "public":
        assert len([code for code in statuses if code >= 400]) >= 2, statuses


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/no-such-route"), ("GET", "/nowhere"), ("DELETE", "/api/exceptions"), ("PUT", "/v1/events")],
)
def test_unknown_routes_and_methods_answer_readable_json(fuzz_tower: RunningTower, method: str, path: str) -> None:
    response = httpx.request(method, fuzz_tower.http_url + path, timeout=30)
    assert response.status_code in (404, 405)
    assert isinstance(response.json()["detail"], str)


# Requests the fuzz found answered 500 (or with a dropped connection), kept as fixed regressions.
FOUND: list[tuple[str, str, dict[str, str], str, bytes | None, int]] = [
    ("GET", "/api/exceptions", {"min_age_hours": "1.4e308"}, "viewer", None, 422),  # timedelta overflow
    ("GET", "/api/sla/summary", {"to": "0011-05-19T08:49:47"}, "viewer", None, 200),  # year 11 sent as '11-05-19'
    ("GET", "/api/sla/summary", {"to": "0001-01-01T00:00:00Z"}, "viewer", None, 422),  # default start before year 1
    ("GET", "/api/sla/breaches", {"to": "0001-01-01T00:00:00Z"}, "viewer", None, 422),
    ("GET", "/api/sources/health", {"minutes": "1e-09"}, "viewer", None, 422),  # a zero window divided by
    ("GET", "/api/reports/sla-breaches", {"from": "9999-12-31T23:59:59Z"}, "finance", None, 422),  # year 10000
    ("POST", "/api/deadletters/replay", {}, "admin", b'{"ids": ["not-a-uuid"]}', 422),  # the store's UUID parse
    ("POST", "/api/exceptions/x/resolve", {}, "operator", b"\xd0\xb6\xff", 422),  # a non-UTF-8 body echoed
    ("POST", "/api/exceptions/x/notes", {}, "admin", b"{\xa7", 422),
    ("GET", "/api/overview", {"tz": "x" * 5_000}, "viewer", None, 422),  # ZoneInfo: OSError, file name too long
    (
        "POST",
        "/api/sla/backtest",
        {},
        "operator",
        orjson.dumps({"rule": rule_mapping("tz", deadline={"cutoff": {"time": "14:00", "timezone": "x" * 5_000}})}),
        422,
    ),
]


@pytest.mark.parametrize(("method", "path", "params", "role", "content", "status"), FOUND)
def test_requests_the_fuzz_found(
    fuzz_tower: RunningTower,
    method: str,
    path: str,
    params: dict[str, str],
    role: str,
    content: bytes | None,
    status: int,
) -> None:
    headers = {"Content-Type": "application/json"} if content and content.startswith(b'{"') else {}
    with fuzz_tower.api(role) as http:
        response = http.request(method, path, params=params, content=content, headers=headers)
    assert response.status_code == status, response.text
    if status >= 400:
        assert response.json()["detail"]


def test_a_slack_request_that_is_not_utf8_is_refused(fuzz_tower: RunningTower) -> None:
    """slack-sdk's verifier decodes the body as UTF-8: a signed body of other bytes was a 500."""
    body, timestamp = b"\xf2\x17\xaf\xe2;9%\xe1", str(int(time.time()))
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": slack_signature(SLACK_SECRET, timestamp, body),
    }
    response = httpx.post(f"{fuzz_tower.http_url}/slack/interactions", content=body, headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.json()["detail"] == "the request signature does not verify"
