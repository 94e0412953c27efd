"""How replay requests are signed, and how a receiver verifies them.

Every request carries two headers:

- `X-Tower-Timestamp`: when the tower signed it, in Unix seconds;
- `X-Tower-Signature`: `v1=` and the lowercase hex HMAC-SHA256, keyed with the webhook's secret, of
  the bytes `<timestamp>.<body>` (the timestamp as sent, a dot, the raw request body).

The receiver recomputes the HMAC over the raw body (before parsing the JSON), compares in constant time,
and refuses timestamps more than five minutes from its own clock, so a captured request cannot be
replayed later. `verify_signature` below is the whole check; docs/reconcilers.md shows it standalone.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Tower-Timestamp"
SIGNATURE_HEADER = "X-Tower-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ATTEMPT_HEADER = "X-Tower-Replay-Attempt"
SCHEME = "v1"
TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Tower-Signature` value of `body` signed at `timestamp`: `v1=<hex HMAC-SHA256>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def signed_headers(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The timestamp and signature headers of one request."""
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify_signature(
    secret: str,
    timestamp: str,
    signature_header: str,
    body: bytes,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> bool:
    """True when `signature_header` signs `timestamp.body` with `secret` and the timestamp is within
    `tolerance` seconds of `now` (default: the wall clock). For receivers; the tower only signs."""
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    scheme, _, given = signature_header.partition("=")
    return scheme == SCHEME and hmac.compare_digest(expected, given)
