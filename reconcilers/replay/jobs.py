"""The replay jobs, registered by the composition root: `replay-send`, `replay-watch` and `replay-auto`.

Each is a small function over a ReplayService; retries and waits are deadlines on the injected
clock stored with each request, so a job run only acts on what is due (running a job twice in a
row does nothing the second time).
"""

from __future__ import annotations

from typing import Any

from kernel.jobs import JobContext, JobRegistry
from reconcilers.replay.service import ReplayService


def register_replay_jobs(jobs: JobRegistry, replay: ReplayService) -> None:
    """Register the three replay jobs over `replay` (TOWER_JOB_REPLAY_SEND_*, _WATCH_*, _AUTO_*)."""

    def replay_send(context: JobContext) -> dict[str, Any]:
        """Call the webhook of every replay request whose (next) attempt is due; retry 5xx, 408, 429 and
        connection errors with exponential backoff, mark refused or exhausted requests failed; after a webhook
        gave no answer, leave its other requests for the next run."""
        summary = replay.send_due()
        if summary.sent or summary.retrying or summary.failed or summary.deferred:
            context.log.info(
                "replay requests: %d sent, %d to retry, %d failed, %d left for the next run (no answer from"
                " their webhook)",
                len(summary.sent),
                len(summary.retrying),
                len(summary.failed),
                len(summary.deferred),
            )
        return summary.as_dict()

    def replay_watch(context: JobContext) -> dict[str, Any]:
        """Resolve the exceptions of sent replays whose events arrived (resolution `replayed`); escalate
        those whose wait ran out."""
        summary = replay.watch()
        if summary.satisfied or summary.escalated:
            context.log.info("replays: %d satisfied, %d escalated", len(summary.satisfied), len(summary.escalated))
        return summary.as_dict()

    def replay_auto(context: JobContext) -> dict[str, Any]:
        """The replay policy: request a replay for every active exception of the auto rules whose source's
        webhook has `auto` on and that has no replay request yet."""
        summary = replay.auto_request()
        if summary.requested:
            context.log.info("replay policy requested %d replays", len(summary.requested))
        return summary.as_dict()

    jobs.add("replay-send", replay_send, interval_seconds=15.0)
    jobs.add("replay-watch", replay_watch, interval_seconds=60.0)
    jobs.add("replay-auto", replay_auto, interval_seconds=60.0)
