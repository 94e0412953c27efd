"""Slack's interactivity endpoint: the Acknowledge and Resolve buttons of alert messages.

Set the Slack app's Interactivity Request URL to `https://<tower>/slack/interactions`. The request
is verified, deduplicated and applied by `alerting.interactivity.InteractionHandler`; the answer
is immediate, and the message update is enqueued after it (a background task runs the
dispatcher), so Slack's three-second limit holds even when the dispatcher is busy.
"""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from alerting.interactivity import MAX_BODY, InteractionHandler

router = APIRouter(tags=["slack"])


@router.post(
    "/slack/interactions",
    summary="Slack interactivity (signed by Slack): acknowledge or resolve from an alert's buttons",
    description="Form body `payload=<JSON>` with `X-Slack-Request-Timestamp` and `X-Slack-Signature`. "
    "401: bad signature, stale timestamp or replayed request; 403: Slack user not mapped to an operator; "
    "503: TOWER_SLACK_SIGNING_SECRET not set. Refused requests change nothing.",
    status_code=200,
)
async def slack_interactions(request: Request, background: BackgroundTasks) -> Response:
    handler: InteractionHandler | None = getattr(request.app.state, "slack_interactions", None)
    if handler is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "Slack interactivity is not running in this tower")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "request body too large")
    result = await run_in_threadpool(handler.handle, body, dict(request.headers))
    if result.status != 200:
        raise HTTPException(result.status, result.message or result.outcome)
    dispatcher = getattr(request.app.state, "alerts", None)
    if result.changed and dispatcher is not None:
        background.add_task(dispatcher.run)  # the message update and thread line, right after the answer
    return Response(status_code=200)
