"""Escalation timing: re-notify an unacknowledged alert, and escalate it to the owner's on-call group.

Per severity (AlertingSettings.escalation; by default high and critical): once an exception is
alerted and while it stays `open` (not acknowledged, not resolved), it is re-notified in its
thread every `repeat_minutes` since the last notification, and after `escalate_minutes` since it
was alerted its thread mentions the owner's on-call group (`<!subteam^ID>`, or `<!here>` when the
owner has none) once. Acknowledging or resolving stops both. A digest is treated the same way
while any of its exceptions is open, with the highest severity among them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from alerting.policy_settings import AlertingSettings

Step = Literal["escalate", "repeat"]


def due_step(
    settings: AlertingSettings,
    severity: str,
    alerted_at: datetime | None,
    notified_at: datetime | None,
    escalated: bool,
    now: datetime,
) -> Step | None:
    """What is due now for an unacknowledged alert: `escalate` (once), else `repeat`, else None."""
    policy = settings.escalation.get(severity)
    if policy is None or alerted_at is None:
        return None
    timeout = policy.escalate
    if timeout is not None and not escalated and now - alerted_at >= timeout:
        return "escalate"
    repeat = policy.repeat
    if repeat is not None and now - (notified_at or alerted_at) >= repeat:
        return "repeat"
    return None
