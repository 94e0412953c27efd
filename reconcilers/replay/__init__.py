"""Replay: ask a source's webhook to resend records the tower lost, then resolve or escalate.

- settings.py: `TOWER_REPLAY_*` (webhooks per source with their secret and policy, retries, waits);
- signing.py: the HMAC-SHA256 signature scheme and the receiver's check (`verify_signature`);
- webhook.py: the transport seam (httpx);
- requests.py: the `replay_requests` records, keyed by idempotency key;
- service.py: asking, sending with backoff, watching for the replayed events, the policy;
- jobs.py: `replay-send`, `replay-watch`, `replay-auto`.
"""

from reconcilers.replay.requests import ReplayRequest, ReplayRequests, idempotency_key, round_key
from reconcilers.replay.service import NotReplayable, ReplayService, RequestOutcome, RunSummary, exception_source
from reconcilers.replay.settings import ReplaySettings, ReplayWebhook
from reconcilers.replay.signing import signature, verify_signature

__all__ = [
    "NotReplayable",
    "ReplayRequest",
    "ReplayRequests",
    "ReplayService",
    "ReplaySettings",
    "ReplayWebhook",
    "RequestOutcome",
    "RunSummary",
    "exception_source",
    "idempotency_key",
    "round_key",
    "signature",
    "verify_signature",
]
