"""A small HTTP client of the running tower, for the CLI commands (the server owns the store)."""

from __future__ import annotations

import os
from typing import Any

import click
import httpx

from kernel.settings import CollectorSettings, Settings
from tower.bootstrap import admin_token, token_for
from tower.children import loopback

DEFAULT_URL = "http://127.0.0.1:4318"
DEFAULT_TIMEOUT = 60.0  # seconds a command waits for the tower's answer, unless it says otherwise or TOWER_TIMEOUT


def tower_url(url: str | None) -> str:
    """The tower's base URL: --url, TOWER_URL, or the local tower's (`local_url`)."""
    return (url or os.environ.get("TOWER_URL") or local_url()).rstrip("/")


def local_url() -> str:
    """The URL of the tower `tower serve` would start here: TOWER_COLLECTOR_HOST (a wildcard address is reached at
    127.0.0.1) and TOWER_COLLECTOR_HTTP_PORT, as the admin token is found through TOWER_STORE_DATA_DIR; DEFAULT_URL
    for port 0 (a port chosen at start, which no other process can know)."""
    collector = CollectorSettings()
    if not collector.http_port:
        return DEFAULT_URL
    host = loopback(collector.host)
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"http://{host}:{collector.http_port}"


def resolve_admin_token(token: str | None) -> str:
    """--token, TOWER_TOKEN, or the admin token generated into the local data directory."""
    found = token or os.environ.get("TOWER_TOKEN") or admin_token(Settings())
    if not found:
        raise click.UsageError("no API token: pass --token or set TOWER_TOKEN")
    return found


def resolve_ingest_token(token: str | None, source: str) -> str:
    """--token, TOWER_INGEST_TOKEN, or a local generated token that may send for `source`."""
    found = token or os.environ.get("TOWER_INGEST_TOKEN") or token_for(Settings(), source)
    if not found:
        raise click.UsageError(f"no ingest token for {source!r}: pass --token or set TOWER_INGEST_TOKEN")
    return found


def answer_timeout(timeout: float | None = None) -> float:
    """How many seconds to wait for the tower's answer: TOWER_TIMEOUT when set, else `timeout` (a command's own
    wait), else DEFAULT_TIMEOUT."""
    configured = os.environ.get("TOWER_TIMEOUT", "").strip()
    if configured:
        try:
            seconds = float(configured)
        except ValueError:
            seconds = 0.0
        if not seconds > 0:
            raise click.UsageError(f"TOWER_TIMEOUT: {configured!r} is not a number of seconds above 0")
        return seconds
    return timeout if timeout is not None else DEFAULT_TIMEOUT


def client(url: str | None, token: str, timeout: float | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=tower_url(url), headers={"Authorization": f"Bearer {token}"}, timeout=answer_timeout(timeout)
    )


class ApiFailed(click.ClickException):
    """The tower could not be reached or refused the request (exit code 2); `status` is its answer's HTTP status
    (None when it could not be reached), `detail` its reasons."""

    exit_code = 2

    def __init__(self, message: str, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


def reasons(answer: Any) -> str:
    """FastAPI's `detail` (a text, or a list of located validation errors) as readable text."""
    detail = answer.get("detail") if isinstance(answer, dict) else None
    if isinstance(detail, list):
        lines = []
        for error in detail:
            if not isinstance(error, dict):
                continue
            loc = [str(step) for step in error.get("loc", []) if step not in ("body", "query", "path")]
            lines.append(f"{'.'.join(loc)}: {error.get('msg', '')}" if loc else str(error.get("msg", "")))
        return "\n  " + "\n  ".join(lines)
    return str(detail or "")


def api_json(
    url: str | None,
    token: str | None,
    method: str,
    path: str,
    *,
    timeout: float | None = None,
    expect: tuple[int, ...] = (200,),
    **kwargs: Any,
) -> Any:
    """One API call with `token` (else the admin token), waiting `timeout` seconds for the answer (answer_timeout);
    its JSON answer, or ApiFailed on connection errors, on no answer in time and on any status not in `expect`,
    with the tower's reasons."""
    seconds = answer_timeout(timeout)
    with client(url, resolve_admin_token(token), timeout=seconds) as http:
        try:
            response = http.request(method, path, **kwargs)
        except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
            # connected and sent (part of) the request: the tower is there, busy; it may well finish the work
            raise ApiFailed(
                f"the tower at {tower_url(url)} did not answer within {seconds:g} s (it was reached, and may still "
                "be working on the request; TOWER_TIMEOUT sets how many seconds to wait)"
            ) from exc
        except httpx.HTTPError as exc:
            raise ApiFailed(f"cannot reach the tower at {tower_url(url)}: {exc}") from exc
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if response.status_code not in expect or body is None:
        detail = reasons(body) or response.text[:300]
        raise ApiFailed(f"the tower answered {response.status_code}: {detail}", response.status_code, detail)
    return body


def api_call(
    url: str | None, token: str | None, method: str, path: str, *, timeout: float | None = None, **kwargs: Any
) -> dict[str, Any]:
    """One API call with `token` (else the admin token); its JSON object, or ApiFailed on connection errors and
    on any answer other than 200 with a JSON object, with the tower's reasons."""
    body = api_json(url, token, method, path, timeout=timeout, **kwargs)
    if not isinstance(body, dict):
        raise ApiFailed(f"the tower answered 200 with {type(body).__name__}, not a JSON object")
    return body
