"""The webhook seam: one POST of a signed replay request, and what came back."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Protocol

import httpx


@dataclass(frozen=True)
class WebhookAnswer:
    """The receiver's HTTP answer: status, the start of its body, and Retry-After in seconds when given."""

    status: int
    body: str
    retry_after: float | None = None


class WebhookUnreachable(Exception):
    """No HTTP answer: connection refused, DNS, TLS or timeout."""


class WebhookTransport(Protocol):
    """Posts one request body to a webhook."""

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> WebhookAnswer:
        """POST `body` with `headers`; WebhookUnreachable when no answer came back."""
        ...


class HttpxTransport:
    """The real transport: httpx, no redirects followed (a redirected webhook is a misconfiguration).

    The client is made on the first request: building one loads the CA bundle (about 0.1 s), which every start
    of the tower would pay, and most towers never request a replay."""

    def __init__(self) -> None:
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(follow_redirects=False)
            return self._client

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> WebhookAnswer:
        """POST `body`; the answer's body is kept up to 2,000 characters."""
        try:
            response = self._http().post(url, content=body, headers=dict(headers), timeout=timeout)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise WebhookUnreachable(f"{type(exc).__name__}: {exc}") from exc
        return WebhookAnswer(response.status_code, response.text[:2000], _retry_after(response.headers))

    def close(self) -> None:
        """Close the connection pool, if a request opened one."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _retry_after(headers: httpx.Headers) -> float | None:
    """Retry-After in seconds: a number, or an HTTP date taken relative to the answer's Date header."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        delta = parsedate_to_datetime(value) - parsedate_to_datetime(headers.get("date", ""))
    except (TypeError, ValueError):  # not a date, no Date header, or one naive and one aware
        return None
    return max(0.0, delta.total_seconds())
