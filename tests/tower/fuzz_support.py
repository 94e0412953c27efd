"""Requests for the HTTP fuzz test (tests/tower/test_fuzz_api.py), generated from the served OpenAPI document.

Every operation of the document becomes an `Operation`; Hypothesis strategies build `FuzzRequest`s from
its parameters' and request body's JSON schemas: valid values, exotic but valid ones (huge, unicode,
control characters, SQL-looking text), and values that are certainly invalid (wrong type, out of range,
not in the enum, too long, missing, undecodable JSON, wrong content type), each sent with one of the
roles' tokens, an unknown token or none. `problems` says what is wrong with an answer: a 5xx, a status
that does not fit the request (401 without a token, 403 for a role the route does not admit, 4xx for
certainly invalid input), or an error body without a readable message.

Which roles a route admits is read from its description (`Roles: operator, admin.`), which
tests/tower/test_roles.py requires of every /api route.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import hmac
import json
import math
import re
import string
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Literal
from urllib.parse import quote, urlencode

import httpx
import orjson
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from hypothesis import strategies as st

from alerting.messages import ACTION_ACKNOWLEDGE, ACTION_RESOLVE
from kernel.api_auth import ROLES

NO_ACCESS = ("none", "unknown", "malformed")  # no bearer token, an unknown one, another scheme
SUCCESS = frozenset(range(200, 300))
Door = Literal["api", "ingest", "slack", "public"]
Validity = Literal["valid", "exotic", "invalid"]

# Strings that are valid wherever any text is: what tends to break escaping, parsing and storage.
SPECIAL_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\t\r\n",
    "' OR '1'='1",
    "'; DROP TABLE exceptions; --",
    "{id:String}",
    "{{x}}",
    "%s%n%x",
    "%00",
    "\\",
    "\\'",
    '"',
    "../../etc/passwd",
    "null",
    "true",
    "NaN",
    "-1",
    "1e309",
    "9" * 40,
    "\u202e\u0644\u0627",
    "a\u0301\u0302\u0303",
    "\U0001f600" * 20,
    "\ufeff",
    "\uffff",
    "SO-1",
    "wms/dallas",
    "integration|span",
)
TIMEZONES = (
    UTC,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=-8)),
    timezone(timedelta(hours=14)),
)
BAD_DATETIMES = ("yesterday", "2026-13-45T00:00:00Z", "2026-02-30", "T12:00", "2026-11-02T25:61:00Z", "now()")


@dataclass(frozen=True)
class Parameter:
    """One parameter of an operation (path, query or header)."""

    name: str
    location: str
    required: bool
    schema: dict[str, Any]


@dataclass(frozen=True)
class Operation:
    """One method on one path of the OpenAPI document."""

    method: str
    path: str
    parameters: tuple[Parameter, ...]
    bodies: Mapping[str, dict[str, Any]]  # media type -> schema
    body_required: bool
    roles: frozenset[str] | None  # the roles its description names; None when it names none
    door: Door

    @property
    def name(self) -> str:
        """`GET /api/exceptions`."""
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class FuzzRequest:
    """One generated request and what kind of answer it deserves."""

    method: str
    path: str  # filled and percent-encoded
    params: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    content: bytes | None = None
    access: str = "none"  # a role, one of NO_ACCESS, "ingest" (an ingest token) or "signed" (Slack)
    validity: Validity = "valid"
    why: str = "valid"
    routable: bool = True  # False when a path value cannot match the route (a '/', empty, '.', '..')
    undecodable: bool = False  # a JSON content type with a body that is not JSON: FastAPI answers before auth

    def describe(self) -> str:
        """The request, short enough for an assertion message."""
        content = repr(self.content[:300]) + ("..." if len(self.content) > 300 else "") if self.content else "-"
        params = urlencode(self.params)
        headers = {k: (v if len(v) < 120 else v[:120] + "...") for k, v in self.headers if k != "Authorization"}
        return (
            f"{self.method} {self.path[:300]}{'?' + params[:300] if params else ''} [access {self.access}, "
            f"{self.validity}: {self.why}] headers={headers} body={content}"
        )


@dataclass
class Context:
    """What requests draw from: real ids and keys from the store, tokens, the Slack signing secret."""

    document: dict[str, Any]
    api_tokens: dict[str, str]  # role -> token
    ingest_tokens: dict[str, str]  # source system -> token
    samples: dict[str, list[str]] = field(default_factory=dict)  # parameter name -> real values
    slack_secret: str | None = None
    slack_users: list[str] = field(default_factory=list)
    bodies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # op name -> bodies known to be valid


# the document ------------------------------------------------------------------------------------


def operations(document: dict[str, Any]) -> list[Operation]:
    """Every operation of an OpenAPI document, in document order."""
    found: list[Operation] = []
    for path, item in document["paths"].items():
        shared = item.get("parameters", [])
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            parameters = tuple(
                Parameter(p["name"], p["in"], bool(p.get("required")), p.get("schema", {}))
                for p in (*shared, *op.get("parameters", []))
            )
            body = op.get("requestBody") or {}
            bodies = {media: spec.get("schema", {}) for media, spec in body.get("content", {}).items()}
            found.append(
                Operation(
                    method.upper(),
                    path,
                    parameters,
                    bodies,
                    bool(body.get("required")),
                    roles_of(op.get("description", "")),
                    door_of(path),
                )
            )
    return found


def roles_of(description: str) -> frozenset[str] | None:
    """The roles named by `Roles: a, b and c.` in a description."""
    match = re.search(r"Roles:\s*([a-z ,]+)", description)
    if not match:
        return None
    roles = frozenset(r for r in re.split(r"[ ,]+|\band\b", match.group(1)) if r in ROLES)
    return roles or None


def door_of(path: str) -> Door:
    """Which kind of caller a path is for."""
    if path.startswith("/api/") or path == "/metrics":  # /metrics takes an API token like the API
        return "api"
    if path.startswith("/v1/"):
        return "ingest"
    if path.startswith("/slack/"):
        return "slack"
    return "public"


def resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """`schema` with `$ref`s to components followed."""
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"unsupported $ref {ref}")
        target: Any = document
        for part in ref[2:].split("/"):
            target = target[part]
        schema = target
    return schema


# values --------------------------------------------------------------------------------------------


def json_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Any JSON value, small."""
    leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=max_leaves,
    )


def exotic_text(huge: int) -> st.SearchStrategy[str]:
    """Valid-anywhere text that stresses parsing and storage; `huge` bounds the longest."""
    return st.one_of(
        st.sampled_from(SPECIAL_STRINGS),
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=60),
        st.text(st.characters(categories=("Cc", "Cf", "Zs", "Mn", "So")), min_size=1, max_size=30),
        st.integers(min(1_000, huge), huge).map(lambda n: ("xxxxxxxxx\u00e9" * (n // 10 + 1))[:n]),
    )


def _bounds(schema: dict[str, Any]) -> tuple[float | None, float | None]:
    low = schema.get("minimum")
    high = schema.get("maximum")
    if "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"] + (1 if schema.get("type") == "integer" else 1e-9)
    if "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] - (1 if schema.get("type") == "integer" else 1e-9)
    return low, high


def _datetimes(exotic: bool) -> st.SearchStrategy[str]:
    if not exotic:
        moments = st.datetimes(datetime(2020, 1, 1), datetime(2030, 12, 31), timezones=st.sampled_from(TIMEZONES))
        return moments.map(lambda d: d.isoformat())
    return st.one_of(
        st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=st.sampled_from(TIMEZONES)).map(
            lambda d: d.isoformat()
        ),
        st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31)).map(lambda d: d.isoformat()),  # naive
        st.dates(date(1, 1, 1), date(9999, 12, 31)).map(lambda d: d.isoformat()),
        st.integers(-(10**11), 10**11).map(str),  # seconds since the epoch
        st.sampled_from(("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "1970-01-01T00:00:00Z")),
    )


def valid(
    schema: dict[str, Any], document: dict[str, Any], exotic: bool = False, depth: int = 0
) -> st.SearchStrategy[Any]:
    """Values `schema` admits; `exotic` ones include huge, unicode and boundary values."""
    schema = resolve(schema, document)
    if schema.get("examples") and not exotic:  # documented examples pass checks a schema cannot say (`2h`)
        plain = {k: v for k, v in schema.items() if k != "examples"}
        return st.sampled_from(schema["examples"]) | valid(plain, document, exotic, depth)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([valid(s, document, exotic, depth) for s in schema[key]])
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(resolve(part, document))
        return valid(merged, document, exotic, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([valid({**schema, "type": k}, document, exotic, depth) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low, high = _bounds(schema)
        values = st.integers(None if low is None else int(low), None if high is None else int(high))
        if exotic:
            edges = [v for v in (low, high, 0, 2**63, -(2**63), 10**30) if v is not None]
            fits = [int(v) for v in edges if (low is None or v >= low) and (high is None or v <= high)]
            values = values | st.sampled_from(fits) if fits else values
        return values
    if kind == "number":
        low, high = _bounds(schema)
        numbers = st.floats(low, high, allow_nan=False, allow_infinity=False)
        if exotic:
            edges = [v for v in (low, high, 0.0, 1e-300, 1e15, 1e300, float("inf")) if v is not None]
            floats = [float(v) for v in edges if (low is None or v >= low) and (high is None or v <= high)]
            numbers = numbers | st.sampled_from(floats) if floats else numbers
        return numbers
    if kind == "string":
        return _strings(schema, exotic)
    if kind == "array":
        items = valid(schema.get("items", {}), document, exotic, depth + 1) if depth < 3 else st.just("x")
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=min(schema.get("maxItems", 4), 4))
    if kind == "object" or "properties" in schema:
        return _objects(schema, document, exotic, depth)
    return json_values()


def _strings(schema: dict[str, Any], exotic: bool) -> st.SearchStrategy[str]:
    low = int(schema.get("minLength", 0))
    high = schema.get("maxLength")
    fmt = schema.get("format")
    if fmt == "date-time":
        return _datetimes(exotic)
    if fmt == "date":
        return st.dates(date(2020, 1, 1), date(2030, 12, 31)).map(lambda d: d.isoformat())
    if "pattern" in schema:
        pattern = schema["pattern"]
        return st.from_regex(pattern, fullmatch=True).filter(
            lambda s: low <= len(s) and (high is None or len(s) <= high)
        )
    if exotic:
        return exotic_text(70_000 if high is None else max(int(high), 1)).filter(
            lambda s: low <= len(s.strip()) and (high is None or len(s) <= high)
        )
    return st.text(min_size=low, max_size=min(int(high) if high is not None else 30, 30)).filter(
        lambda s: len(s.strip()) >= low
    )


def _objects(schema: dict[str, Any], document: dict[str, Any], exotic: bool, depth: int) -> st.SearchStrategy[Any]:
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    if depth >= 3:
        return st.just({})
    fixed = {k: valid(v, document, exotic, depth + 1) for k, v in properties.items() if k in required}
    optional = {k: valid(v, document, exotic, depth + 1) for k, v in properties.items() if k not in required}
    objects = st.fixed_dictionaries(fixed, optional=optional)
    extra = schema.get("additionalProperties")
    if extra and not properties:
        values = valid(extra, document, exotic, depth + 1) if isinstance(extra, dict) and extra else json_values()
        return st.dictionaries(st.text(max_size=12), values, max_size=4)
    return objects


def invalid(schema: dict[str, Any], document: dict[str, Any], in_query: bool) -> st.SearchStrategy[Any] | None:
    """Values `schema` certainly refuses (None when it admits anything: plain text in a query)."""
    schema = resolve(schema, document)
    if "anyOf" in schema or "oneOf" in schema:
        members = [resolve(s, document) for s in schema.get("anyOf", schema.get("oneOf", []))]
        non_null = [o for o in members if o.get("type") != "null"]
        # A value wrong for the only non-null option is wrong for the union (these never draw null).
        return invalid(non_null[0], document, in_query) if len(non_null) == 1 else None
    if "enum" in schema:
        allowed = {str(v) for v in schema["enum"]}
        return st.text(string.ascii_letters + "-_ ", min_size=1, max_size=20).filter(lambda s: s not in allowed)
    kind = schema.get("type")
    if kind in ("integer", "number"):
        low, high = _bounds(schema)
        if in_query:
            words = st.sampled_from(("abc", "1,000", "0x1F", "--1", "[]", "{}", "1.5"))
            words |= st.text(string.ascii_letters, min_size=1, max_size=12)
            wrong = words.filter(lambda s: not _is_number(s) if kind == "number" else s != "1.0")
        else:
            wrong = st.sampled_from(("abc", [1], {"n": 1}, *((1.5,) if kind == "integer" else ())))
        options: list[st.SearchStrategy[Any]] = [wrong]
        if low is not None:
            options.append(st.integers(int(low) - 10**12, math.ceil(low) - 1))
        if high is not None:
            options.append(st.integers(math.floor(high) + 1, int(high) + 10**12))
        return st.one_of(options)
    if kind == "boolean":
        return st.sampled_from(("maybe", "2", "yess", "-")) if in_query else st.sampled_from(("maybe", 2, [True]))
    if kind == "string":
        if schema.get("format") == "date-time":
            return st.sampled_from(BAD_DATETIMES)
        options = []
        if "pattern" in schema:
            pattern = re.compile(schema["pattern"])
            options.append(st.text(min_size=1, max_size=50).filter(lambda s: not pattern.search(s.strip())))
        if "maxLength" in schema:
            n = int(schema["maxLength"])
            options.append(st.integers(n + 1, n + 2_000).map(lambda k: "y" * k))
        if schema.get("minLength", 0) > 0 and not in_query:
            options.append(st.just(""))
        if not in_query:
            options.append(st.sampled_from((1, 2.5, True, [], {"a": 1})))
        return st.one_of(options) if options else None
    if kind == "array":
        return None if in_query else st.sampled_from(("abc", 1, {"a": []}))
    if kind == "object" or "properties" in schema:
        return None if in_query else st.sampled_from(("abc", 1, [], [{"a": 1}], True))
    return None


def query_values(value: Any) -> list[str]:
    """A parameter value as query-string values (None: omitted)."""
    if value is None:
        return []
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, list):
        return [v for item in value for v in query_values(item)]
    if isinstance(value, dict):
        return [dumps(value).decode()]
    if isinstance(value, float):
        return [repr(value)]
    return [str(value)]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def routable(value: str) -> bool:
    """Whether a path segment made of `value` can match a `{param}` route segment."""
    return value not in ("", ".", "..") and "/" not in value


# requests --------------------------------------------------------------------------------------------


def _auth_header(access: str, context: Context) -> tuple[tuple[str, str], ...]:
    if access == "none":
        return ()
    if access == "unknown":
        return (("Authorization", "Bearer not-a-known-token"),)
    if access == "malformed":
        return (("Authorization", "Basic dmlld2VyOnNlY3JldA=="),)
    if access in context.api_tokens:
        return (("Authorization", f"Bearer {context.api_tokens[access]}"),)
    return ()


def _path(op: Operation, values: dict[str, str]) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: quote(values[m.group(1)], safe=""), op.path)


@st.composite
def api_requests(draw: st.DrawFn, op: Operation, context: Context) -> FuzzRequest:
    """A request to an /api (or other bearer-token) route."""
    document = context.document
    admitted = sorted(op.roles) if op.roles else list(ROLES)
    access = draw(st.sampled_from((*NO_ACCESS, *ROLES, *admitted, *admitted)))
    json_body = op.bodies.get("application/json")
    kinds: list[str] = ["valid", "valid", "exotic"]
    params = [p for p in op.parameters if p.location in ("path", "query")]
    if any(invalid(p.schema, document, True) is not None for p in params if p.location == "query"):
        kinds.append("invalid-param")
    if any(p.required and p.location == "query" for p in params):
        kinds.append("missing-param")
    if json_body is not None:
        kinds += ["bad-json", "wrong-content-type", "body-type", "body-field", "random-body"]
        if context.bodies.get(op.name):
            kinds += ["known-body", "known-body"]
        if op.body_required:
            kinds.append("missing-body")
    kind = draw(st.sampled_from(kinds))
    exotic_kinds = ("exotic", "random-body", "known-body")
    validity: Validity = "valid" if kind == "valid" else "exotic" if kind in exotic_kinds else "invalid"
    why = kind
    exotic_param = draw(st.sampled_from([p.name for p in params])) if kind == "exotic" and params else None
    invalid_param = None
    if kind == "invalid-param":
        candidates = [p.name for p in params if p.location == "query" and invalid(p.schema, document, True) is not None]
        invalid_param = draw(st.sampled_from(candidates))
    missing_param = None
    if kind == "missing-param":
        missing_param = draw(st.sampled_from([p.name for p in params if p.required and p.location == "query"]))

    path_values: dict[str, str] = {}
    query: list[tuple[str, str]] = []
    is_routable = True
    for p in params:
        if p.name == missing_param:
            why = f"missing required {p.name}"
            continue
        if p.name == invalid_param:
            strategy = invalid(p.schema, document, True)
            assert strategy is not None
            value: Any = draw(strategy)
            why = f"invalid {p.name}={str(value)[:60]!r}"
        elif p.location == "path":
            real = context.samples.get(p.name, [])
            choices = st.sampled_from(real) if real else st.nothing()
            text = exotic_text(4_000) if p.name == exotic_param else st.text(min_size=1, max_size=30)
            value = draw(choices | text if real else text)
            is_routable = is_routable and routable(str(value))
        else:
            include = p.required or p.name in (exotic_param, invalid_param) or draw(st.booleans())
            if not include:
                continue
            real = context.samples.get(p.name, [])
            if real and p.name != exotic_param and draw(st.booleans()):
                value = draw(st.sampled_from(real))
            else:
                value = draw(valid(p.schema, document, exotic=p.name == exotic_param))
                if p.name == exotic_param and isinstance(value, str) and len(value) > 4_000:
                    value = value[:4_000]  # keep the URL within what the HTTP server reads
        if p.location == "path":
            path_values[p.name] = str(value)
        else:
            query += [(p.name, v) for v in query_values(value)]
    if draw(st.integers(0, 9)) == 0:
        query.append((draw(st.text(string.ascii_lowercase, min_size=1, max_size=8)), "ignored"))

    headers: list[tuple[str, str]] = list(_auth_header(access, context))
    content: bytes | None = None
    undecodable = False
    if json_body is not None:
        body_schema = resolve(json_body, document)
        if kind == "missing-body":
            why = "no body"
        elif kind == "bad-json":
            content = draw(st.sampled_from((b'{"a": ', b"{'a': 1}", b"[1,]", b"\xff\xfe\x00{", b"nul", b'{"a":1}}')))
            headers.append(("Content-Type", "application/json"))
            undecodable = True
        elif kind == "wrong-content-type":
            content = dumps(draw(valid(body_schema, document)))
            ctype = draw(st.sampled_from(("text/plain", "application/xml", "application/x-www-form-urlencoded")))
            headers.append(("Content-Type", ctype))
            why = f"JSON body as {ctype}"
        elif kind == "body-type":
            wrong = invalid(body_schema, document, False)
            wrong = wrong if wrong is not None else st.sampled_from(("abc", 1, [1, 2], True))
            content = dumps(draw(wrong))
            headers.append(("Content-Type", "application/json"))
            why = f"body {content[:60]!r}"
        elif kind == "body-field":
            content, why = _invalid_field_body(draw, body_schema, document)
            headers.append(("Content-Type", "application/json"))
            if content is None:  # nothing in the body can be made certainly invalid
                validity = "exotic"
                content = dumps(draw(valid(body_schema, document, exotic=True)))
        elif kind == "known-body":
            content, why = _known_body(draw, context.bodies[op.name], body_schema, document)
            headers.append(("Content-Type", "application/json"))
        elif kind == "random-body":
            content = draw(st.binary(max_size=300))
            ctype = draw(st.sampled_from(("application/json", "application/octet-stream", "text/plain", "")))
            if ctype:
                headers.append(("Content-Type", ctype))
            undecodable = ctype in ("application/json", "") and bool(content) and not _is_json(content)
            why = f"random bytes as {ctype or 'no content type'}"
        elif kind == "valid" or draw(st.booleans()) or op.body_required:
            content = dumps(draw(valid(body_schema, document, exotic=kind == "exotic")))
            headers.append(("Content-Type", "application/json"))
    return FuzzRequest(
        op.method,
        _path(op, path_values),
        tuple(query),
        tuple(headers),
        content,
        access,
        validity,
        why,
        is_routable,
        undecodable,
    )


def dumps(value: Any) -> bytes:
    """JSON of any generated value (integers past 64 bits included; infinities become 1e308)."""

    def finite(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return math.copysign(1e308, v)
        if isinstance(v, list):
            return [finite(i) for i in v]
        if isinstance(v, dict):
            return {k: finite(i) for k, i in v.items()}
        return v

    return json.dumps(finite(value), ensure_ascii=False, allow_nan=False).encode()


def _is_json(content: bytes) -> bool:
    try:
        json.loads(content)  # as Starlette's Request.json() reads it
    except ValueError:
        return False
    return True


def _known_body(
    draw: st.DrawFn, known: list[dict[str, Any]], schema: dict[str, Any], document: dict[str, Any]
) -> tuple[bytes, str]:
    """A body known to be valid, as is or with one field (at any depth) given another value: valid, exotic or
    any JSON."""
    body = draw(st.sampled_from(known))
    body = copy.deepcopy(body)  # a copy to change
    paths: list[list[str]] = []

    def walk(value: Any, path: list[str]) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                paths.append([*path, k])
                walk(v, [*path, k])

    walk(body, [])
    if not paths or draw(st.integers(0, 2)) == 0:
        return dumps(body), "a known valid body"
    path = draw(st.sampled_from(paths))
    target = body
    for part in path[:-1]:
        target = target[part]
    properties = resolve(schema, document).get("properties", {})
    field_schema = properties.get(path[0], {}) if len(path) == 1 else {}
    target[path[-1]] = draw(valid(field_schema, document, exotic=True) if field_schema else _scalar() | json_values(4))
    return dumps(body), f"a known body with {'.'.join(path)} = {str(target[path[-1]])[:60]!r}"


def _invalid_field_body(draw: st.DrawFn, schema: dict[str, Any], document: dict[str, Any]) -> tuple[bytes | None, str]:
    """A valid body with one property made certainly invalid, or one required property left out."""
    schema = resolve(schema, document)
    options = [resolve(s, document) for s in schema.get("anyOf", [schema])]
    objects = [o for o in options if o.get("type") == "object" or "properties" in o]
    if not objects:
        return None, ""
    target = objects[0]
    properties: dict[str, Any] = target.get("properties", {})
    breakable = [k for k, v in properties.items() if invalid(v, document, False) is not None]
    required = list(target.get("required", []))
    if not breakable and not required:
        return None, ""
    body = draw(valid(target, document))
    if breakable and (not required or draw(st.booleans())):
        name = draw(st.sampled_from(breakable))
        strategy = invalid(properties[name], document, False)
        assert strategy is not None
        body[name] = draw(strategy)
        return dumps(body), f"invalid body field {name}={str(body[name])[:60]!r}"
    name = draw(st.sampled_from(required))
    body.pop(name, None)
    return dumps(body), f"body without required {name}"


# the ingest doors ----------------------------------------------------------------------------------------

INGEST_TYPES = (
    "application/json",
    "application/x-protobuf",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "application/x-ndjson",
    "application/json; charset=utf-8",
    "application/cloudevents+json; charset=UTF-8",
    "text/plain",
    "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded",
    "",
    "application/",
    ";;;",
)
EVENT_TYPES = (
    "order.created",
    "order.accepted",
    "order.released",
    "shipment.confirmed",
    "asn.sent",
    "shipment.delivered",
    "invoice.posted",
    "inventory.snapshot",
    "x.unknown",
)
REQUIRED_KEYS = {
    "order.created": ("order_id", "customer_id"),
    "order.accepted": ("order_id", "customer_id"),
    "order.released": ("order_id",),
    "shipment.confirmed": ("order_id", "shipment_id"),
    "asn.sent": ("shipment_id",),
    "shipment.delivered": ("shipment_id",),
    "invoice.posted": ("invoice_id", "order_id"),
    "inventory.snapshot": ("sku", "location", "quantity"),
}
EXTREME_TIMES = (
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999+00:00",
    "1970-01-01T00:00:00-14:00",
    "2026-11-02T12:00:00.123456789+05:45",
    "1899-12-31T23:59:59Z",
    "2300-01-01T00:00:00Z",
)
DATA_KEYS = (
    "order_id",
    "shipment_id",
    "invoice_id",
    "customer_id",
    "sku",
    "location",
    "quantity",
    "amount",
    "currency",
    "warehouse",
    "traceparent",
)
SOURCES = ("erp", "wms", "wms/dallas", "tms", "crm", "ecommerce", "edi", "middleware", "nowhere", "")


def _header_text(text: str) -> str:
    """`text` as a header value: printable ASCII (CloudEvents percent-encodes the rest)."""
    return quote(text, safe=string.printable.replace("%", "").strip() + " ")[:2_000].strip()


def _scalar() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        exotic_text(3_000),
        _datetimes(True),
    )


@st.composite
def valid_cloudevents(draw: st.DrawFn, source: str) -> dict[str, Any]:
    """A CloudEvent of `source` (or one of its paths) the events door accepts, with exotic ids, keys, amounts
    and times (kernel/model/events.py says what is valid)."""
    event_type = draw(st.sampled_from(EVENT_TYPES[:-1]))
    key_text = exotic_text(256).filter(lambda t: 0 < len(t) <= 256 and t.strip() != "")
    number = st.one_of(
        st.integers(-(10**13), 10**13),
        st.floats(-1e13, 1e13, allow_nan=False),
        st.sampled_from(("12.50", "1E+13", "-0", "0.000000000000000001", 1e-300)),
    )
    required = REQUIRED_KEYS.get(event_type, ())
    optional: dict[str, st.SearchStrategy[Any]] = {
        **{k: key_text | st.integers(0, 2**63) for k in ("order_id", "customer_id", "sku", "warehouse")},
        "quantity": number,
        "amount": number,
        "currency": st.from_regex(r"[A-Z]{3}", fullmatch=True),
        "note": json_values(4),
    }
    data: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {k: number if k == "quantity" else key_text for k in required},
            optional={k: v for k, v in optional.items() if k not in required},
        )
    )
    return {
        "specversion": "1.0",
        "id": draw(key_text),
        "source": source + draw(st.sampled_from(("", "", "/dallas", "/a.b_c~-1"))),
        "type": event_type,
        "time": draw(_datetimes(exotic=False) | st.sampled_from(EXTREME_TIMES)),
        "subject": draw(st.none() | exotic_text(500)),
        "datacontenttype": "application/json",
        "data": data,
    }


@st.composite
def cloudevents(draw: st.DrawFn, source: str | None = None) -> dict[str, Any]:
    """A CloudEvent, plausible or not: every attribute may be missing, of a wrong type or extreme. With `source`,
    a valid event of that source (its own token may send it) with exotic ids, times and data."""
    if source is not None:
        return draw(valid_cloudevents(source))
    event: dict[str, Any] = {
        "specversion": draw(st.sampled_from(("1.0", "1.0", "0.3", "2", 1.0))),
        "id": draw(st.text(min_size=1, max_size=20) | _scalar()),
        "source": draw(st.sampled_from(SOURCES) | _scalar()),
        "type": draw(st.sampled_from(EVENT_TYPES) | _scalar()),
        "time": draw(_datetimes(draw(st.booleans())) | _scalar()),
        "subject": draw(st.text(max_size=20) | _scalar()),
        "datacontenttype": draw(st.sampled_from(("application/json", "text/plain", "")) | _scalar()),
    }
    data = draw(st.dictionaries(st.sampled_from(DATA_KEYS), _scalar() | json_values(4), max_size=8) | json_values(4))
    event["data"] = data
    drop = draw(st.lists(st.sampled_from(sorted(event)), max_size=3, unique=True))
    return {k: v for k, v in event.items() if k not in drop}


@st.composite
def otlp_json(draw: st.DrawFn, logs: bool) -> dict[str, Any]:
    """An OTLP JSON export, plausible or not (hex ids of any length, enums as names or numbers, huge ints)."""
    hex_ids = st.text("0123456789abcdefABCDEFxz", max_size=40)
    value = st.one_of(
        st.fixed_dictionaries({"stringValue": exotic_text(2_000)}),
        st.fixed_dictionaries({"intValue": st.integers(-(2**70), 2**70).map(str) | st.integers(-(2**63), 2**63)}),
        st.fixed_dictionaries({"doubleValue": st.floats(allow_nan=False) | st.text(max_size=5)}),
        st.fixed_dictionaries({"boolValue": st.booleans()}),
        st.fixed_dictionaries({"arrayValue": st.just({"values": [{"stringValue": "a"}]})}),
        st.fixed_dictionaries({"kvlistValue": st.just({"values": [{"key": "k", "value": {"intValue": "1"}}]})}),
        st.fixed_dictionaries({"bytesValue": st.text(max_size=10)}),
        json_values(3),
    )
    keys = st.sampled_from(
        (
            "order.id",
            "shipment.id",
            "invoice.id",
            "customer.id",
            "service.name",
            "event.name",
            "cloudevents.event_id",
            "cloudevents.event_source",
            "cloudevents.event_type",
        )
    ) | st.text(max_size=15)
    attributes = st.lists(st.fixed_dictionaries({"key": keys, "value": value}), max_size=5)
    nanos = st.integers(-(2**64), 2**65).map(str) | st.integers(0, 2**64) | st.text(max_size=8)
    resource = st.fixed_dictionaries({"attributes": attributes})
    if logs:
        record = st.fixed_dictionaries(
            {},
            optional={
                "timeUnixNano": nanos,
                "observedTimeUnixNano": nanos,
                "severityNumber": st.integers(-5, 30) | st.sampled_from(("SEVERITY_NUMBER_INFO", "BOGUS")),
                "body": value,
                "attributes": attributes,
                "eventName": st.sampled_from(EVENT_TYPES) | st.text(max_size=10),
                "traceId": hex_ids,
                "spanId": hex_ids,
            },
        )
        scope = st.fixed_dictionaries({"logRecords": st.lists(record, max_size=3)})
        return draw(
            st.fixed_dictionaries(
                {
                    "resourceLogs": st.lists(
                        st.fixed_dictionaries({"resource": resource, "scopeLogs": st.lists(scope, max_size=2)}),
                        max_size=2,
                    )
                }
            )
        )
    span = st.fixed_dictionaries(
        {"traceId": hex_ids, "spanId": hex_ids, "name": st.text(max_size=20)},
        optional={
            "parentSpanId": hex_ids,
            "kind": st.integers(-1, 9) | st.sampled_from(("SPAN_KIND_SERVER", "NOPE")),
            "startTimeUnixNano": nanos,
            "endTimeUnixNano": nanos,
            "attributes": attributes,
            "status": st.fixed_dictionaries(
                {}, optional={"code": st.integers(-1, 5) | st.text(max_size=10), "message": st.text(max_size=10)}
            ),
            "events": st.lists(st.fixed_dictionaries({"name": st.text(max_size=8), "timeUnixNano": nanos}), max_size=2),
            "links": st.lists(st.fixed_dictionaries({"traceId": hex_ids, "spanId": hex_ids}), max_size=2),
        },
    )
    scope = st.fixed_dictionaries({"spans": st.lists(span, max_size=3)})
    return draw(
        st.fixed_dictionaries(
            {
                "resourceSpans": st.lists(
                    st.fixed_dictionaries({"resource": resource, "scopeSpans": st.lists(scope, max_size=2)}), max_size=2
                )
            }
        )
    )


@st.composite
def ingest_requests(draw: st.DrawFn, op: Operation, context: Context) -> FuzzRequest:
    """A request to an ingest door (/v1/traces, /v1/logs, /v1/events) with a random body and content type."""
    access = draw(st.sampled_from(("ingest", "ingest", "ingest", "ingest", "none", "unknown", "admin")))
    headers: list[tuple[str, str]] = []
    if access == "ingest":
        system = draw(st.sampled_from(sorted(context.ingest_tokens)))
        headers.append(("Authorization", f"Bearer {context.ingest_tokens[system]}"))
    else:
        headers += _auth_header(access, context)
    system = next((s for s, t in context.ingest_tokens.items() if f"Bearer {t}" in dict(headers).values()), "erp")
    is_events = op.path.endswith("/events")
    own = cloudevents(system)
    document = st.one_of(
        own,
        st.lists(own, max_size=4),
        cloudevents(),
        st.lists(cloudevents(), max_size=4),
        otlp_json(logs=op.path.endswith("/logs")),
        json_values(),
    )
    shapes = ["plausible", "plausible", "plausible", "json", "json", "ndjson", "bytes", "protobuf-ish", "empty", "huge"]
    shape = draw(st.sampled_from(shapes))
    ctype: str | None = None
    if shape == "plausible":  # what a client of the door sends, with exotic values inside
        if is_events:
            ctype = draw(st.sampled_from(sorted(op.bodies)))
            if "batch" in ctype:
                content = dumps(draw(st.lists(own, min_size=1, max_size=4)))
            elif "ndjson" in ctype:
                content = b"\n".join(dumps(e) for e in draw(st.lists(own, min_size=1, max_size=4)))
            elif "cloudevents" in ctype:
                content = dumps(draw(own))
            else:  # binary mode: the attributes as ce-* headers, the data as the body
                event = draw(own)
                content = dumps(event["data"])
                for name in ("id", "source", "type", "time", "specversion", "subject"):
                    headers.append((f"ce-{name}", _header_text(str(event[name]))))
        else:
            ctype = "application/json"
            content = dumps(draw(otlp_json(logs=op.path.endswith("/logs"))))
    elif shape == "json":
        content = dumps(draw(document))
    elif shape == "ndjson":
        lines = draw(st.lists(cloudevents().map(dumps) | st.binary(max_size=40), max_size=5))
        content = b"\n".join(lines)
    elif shape == "bytes":
        content = draw(st.binary(max_size=2_000))
    elif shape == "protobuf-ish":  # a field tag then lengths that lie
        content = b"\x0a" + draw(st.binary(min_size=1, max_size=200))
    elif shape == "huge":
        content = dumps([{"id": str(i), "data": "z" * 1_000} for i in range(draw(st.integers(100, 1_500)))])
    else:
        content = b""
    if ctype is None:
        documented = st.sampled_from(sorted(op.bodies)) if op.bodies else st.nothing()
        ctype = draw(documented | st.sampled_from(INGEST_TYPES) | st.text(string.printable.strip(), max_size=30))
    if ctype:
        headers.append(("Content-Type", ctype))
    encoding = draw(st.sampled_from(("", "", "", "gzip", "gzip", "deflate", "br", "gzip-lies", "GZIP")))
    if encoding in ("gzip", "GZIP"):
        content = gzip.compress(content)
    elif encoding == "deflate":
        content = zlib.compress(content)
    elif encoding == "gzip-lies":
        encoding = "gzip"
        content = content[:20]
    if encoding:
        headers.append(("Content-Encoding", encoding))
    if is_events and shape != "plausible" and draw(st.integers(0, 3)) == 0:  # binary mode: ce-* headers, any bytes
        for name in ("ce-id", "ce-source", "ce-type", "ce-time", "ce-specversion", "ce-subject", "ce-traceparent"):
            if draw(st.booleans()):
                # header values are printable ASCII (the HTTP server refuses others before the app sees them)
                text = draw(
                    st.sampled_from(SOURCES) | st.text(string.printable.strip(), max_size=20) | _datetimes(True)
                )
                headers.append((name, text))
    why = f"{shape} body, {ctype or 'no content type'}{', ' + encoding if encoding else ''}"
    return FuzzRequest("POST", op.path, (), tuple(headers), content, access, "exotic", why)


# Slack interactivity ---------------------------------------------------------------------------------


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 signature of a request."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@st.composite
def slack_requests(draw: st.DrawFn, op: Operation, context: Context) -> FuzzRequest:
    """A form POST as Slack sends it: signed correctly or not, with a payload plausible or not."""
    ids = context.samples.get("exception_id", []) or ["none"]
    action = st.fixed_dictionaries(
        {"action_id": st.sampled_from((ACTION_ACKNOWLEDGE, ACTION_RESOLVE, "ack", "")) | st.text(max_size=10)},
        optional={"value": st.sampled_from(ids) | st.sampled_from(ids) | st.text(max_size=20) | _scalar()},
    )
    plausible = st.fixed_dictionaries(
        {
            "type": st.just("block_actions"),
            "user": st.fixed_dictionaries({"id": st.sampled_from(context.slack_users or ["U0"])}),
            "actions": st.lists(action, min_size=1, max_size=2),
        }
    )
    payload = st.one_of(
        plausible,
        plausible,
        st.fixed_dictionaries(
            {},
            optional={
                "type": st.sampled_from(("block_actions", "view_submission", "")) | _scalar(),
                "user": st.fixed_dictionaries(
                    {}, optional={"id": st.sampled_from([*context.slack_users, "U0"]) | _scalar()}
                )
                | _scalar(),
                "actions": st.lists(action | json_values(2), max_size=3) | _scalar(),
            },
        ),
        json_values(),
    )
    shape = draw(st.sampled_from(("form", "form", "form", "raw", "bad-json")))
    if shape == "form":
        content = urlencode({"payload": dumps(draw(payload)).decode()}).encode()
    elif shape == "bad-json":
        content = urlencode({"payload": draw(st.text(max_size=40))}).encode()
    else:
        content = draw(st.binary(max_size=400))
    signing = draw(st.sampled_from(("signed", "signed", "unsigned", "bad-signature", "stale", "bad-timestamp")))
    now = int(time.time())
    timestamp = str(now - 600) if signing == "stale" else "soon" if signing == "bad-timestamp" else str(now)
    headers: list[tuple[str, str]] = [("Content-Type", "application/x-www-form-urlencoded")]
    if signing != "unsigned":
        secret = context.slack_secret or "no-secret"
        signature = slack_signature(secret if signing != "bad-signature" else secret + "x", timestamp, content)
        headers += [("X-Slack-Request-Timestamp", timestamp), ("X-Slack-Signature", signature)]
    access = "signed" if signing == "signed" and context.slack_secret else "none"
    return FuzzRequest("POST", op.path, (), tuple(headers), content, access, "exotic", f"{signing} {shape}")


@st.composite
def public_requests(draw: st.DrawFn, op: Operation, context: Context) -> FuzzRequest:
    """A request to a route without authentication (health): any query, any token."""
    access = draw(st.sampled_from((*NO_ACCESS, *ROLES)))
    query = draw(st.lists(st.tuples(st.text(max_size=8), exotic_text(2_000)), max_size=3))
    return FuzzRequest(op.method, op.path, tuple(query), _auth_header(access, context), None, access, "exotic", "any")


def requests_for(op: Operation, context: Context) -> st.SearchStrategy[FuzzRequest]:
    """The strategy for an operation's door."""
    builders: dict[Door, Callable[[Operation, Context], st.SearchStrategy[FuzzRequest]]] = {
        "api": api_requests,
        "ingest": ingest_requests,
        "slack": slack_requests,
        "public": public_requests,
    }
    return builders[op.door](op, context)


# answers --------------------------------------------------------------------------------------------


def send(http: httpx.Client, request: FuzzRequest) -> httpx.Response:
    """Send a generated request as generated (no redirects followed)."""
    return http.request(
        request.method,
        request.path,
        params=list(request.params) or None,
        headers=list(request.headers),
        content=request.content,
    )


def expected_statuses(op: Operation, request: FuzzRequest) -> frozenset[int]:
    """The statuses that fit `request` to `op`."""
    if not request.routable:  # unless the parameter takes a path ({key:path}), another route or none answers
        return frozenset({307, 404, 405}) | expected_statuses(op, replace(request, routable=True))
    if op.door == "ingest":
        if request.access != "ingest":
            return frozenset({401})
        return SUCCESS | {400, 413, 415}
    if op.door == "slack":
        if request.access != "signed":
            return frozenset({401, 413})
        return SUCCESS | {400, 401, 403, 413}
    if op.door == "public":
        return frozenset({200})
    admitted = op.roles if op.roles is not None else frozenset(ROLES)
    before_auth = frozenset({400, 422}) if request.undecodable else frozenset()
    if request.access in NO_ACCESS:
        return frozenset({401}) | before_auth
    if request.access not in admitted:
        return frozenset({403}) | before_auth
    if request.validity == "valid":
        return SUCCESS | {404, 409, 422}
    if request.validity == "exotic":
        return SUCCESS | {400, 404, 409, 413, 415, 422}
    return frozenset({400, 404, 413, 415, 422})


def error_message(response: httpx.Response) -> str | None:
    """The readable message of an error answer: FastAPI's `detail` (text, or validation errors with `msg`),
    the doors' `error`, or a google.rpc.Status `message` (JSON or protobuf); None when there is none."""
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/x-protobuf":
        try:
            return status_pb2.Status.FromString(response.content).message or None
        except DecodeError:
            return None
    if media != "application/json" and not media.endswith("+json"):
        return None
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    detail = body.get("detail", body.get("error", body.get("message")))
    if isinstance(detail, str) and detail.strip():
        return detail
    if (
        isinstance(detail, list)
        and detail
        and all(isinstance(d, dict) and isinstance(d.get("msg"), str) for d in detail)
    ):
        return "; ".join(d["msg"] for d in detail)
    return None


def problems(op: Operation, request: FuzzRequest, response: httpx.Response) -> list[str]:
    """What is wrong with `response` as the answer to `request` (empty when nothing)."""
    found: list[str] = []
    code = response.status_code
    if code >= 500:
        found.append(f"server error {code}")
    elif code not in expected_statuses(op, request):
        found.append(f"status {code}, expected one of {sorted(expected_statuses(op, request))}")
    if code >= 400 and error_message(response) is None:
        found.append(f"error body without a readable message ({response.headers.get('content-type')})")
    media = response.headers.get("content-type", "").split(";")[0].strip()
    if 200 <= code < 300 and media == "application/json" and response.content and not _is_json(response.content):
        found.append("2xx body is not JSON although its content type says so")
    if found:
        text = response.text[:400]
        return [f"{op.name}: {', '.join(found)}\n  request: {request.describe()}\n  answer: {code} {text}"]
    return []


def with_access(request: FuzzRequest, access: str, context: Context) -> FuzzRequest:
    """`request` sent as another caller."""
    headers = tuple(h for h in request.headers if h[0] != "Authorization") + _auth_header(access, context)
    return replace(request, access=access, headers=headers)
