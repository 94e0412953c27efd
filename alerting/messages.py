"""Slack messages in Block Kit: one message per exception, digests, and the lines of an alert's thread.

An exception's message says what broke (the rule's title), the business key, customer and
warehouse where known, how late (business) or how long silent / how many errors (technical), what
a reconciler found (its summary: the values that disagree), the owner and the status, links to the
exception and its timeline in the dashboard, and the Acknowledge and Resolve buttons (action ids
ACTION_ACKNOWLEDGE and ACTION_RESOLVE, the exception id as value; the interactivity endpoint
understands them). Later changes re-render the message (chat.update) and add a line in its thread
(`change_line`). Text is escaped for mrkdwn and cut to Slack's limits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kernel import durations
from kernel.exceptions import ExceptionRecord
from kernel.store.base import stored_time_or_none

ACTION_ACKNOWLEDGE = "exception_acknowledge"
ACTION_RESOLVE = "exception_resolve"
ACTIONS = (ACTION_ACKNOWLEDGE, ACTION_RESOLVE)

_SEVERITY_ICON = {"critical": ":rotating_light:", "high": ":red_circle:", "medium": ":large_orange_circle:"}
_HEADER_MAX = 150
_TEXT_MAX = 3000
_FIELD_MAX = 2000
FINDING_MAX = 500  # a reconciliation finding's summary in a message's field
FINDING_TEXT_MAX = 200  # ... and in its notification text

Block = dict[str, Any]


def escape(text: str) -> str:
    """Text safe inside mrkdwn: &, < and > escaped (Slack's control characters)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duration_text(value: timedelta) -> str:
    """A short duration for people reading an alert: `45s`, `12m`, `2h05m`, `3d4h` (no seconds past a minute)."""
    return durations.duration_text(value, seconds=False)


def _clock(value: datetime, zone: object = None) -> str:
    """UTC, and the local time of `zone` (an IANA name: a cutoff rule's warehouse zone) when there is one."""
    text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(zone, str) and zone:
        try:
            local = value.astimezone(ZoneInfo(zone))
        except (ZoneInfoNotFoundError, ValueError):
            return text
        text += f", {local:%a %H:%M} {local.tzname()}"
    return text


def _missed(record: ExceptionRecord, now: datetime | None = None) -> bool:
    """An active SLA exception whose deadline passed with no end event (by `now` when given; an SLA exception opens
    at its breach); a reconciler's finding (with its run id) is none."""
    due = stored_time_or_none(record.due_at)
    if record.status == "resolved" or due is None or record.context.get("run_id"):
        return False
    return now is None or now >= due


def mention(oncall: str | None) -> str:
    """The mention of an on-call user group (`<!subteam^ID>`), `<!here>` when none is configured."""
    return f"<!subteam^{oncall}>" if oncall else "<!here>"


@dataclass(frozen=True)
class Links:
    """Dashboard links of an exception."""

    dashboard_url: str

    def exception(self, record: ExceptionRecord) -> str:
        """The exception in the dashboard's queue."""
        return f"{self.dashboard_url.rstrip('/')}/queue?exception={quote(record.id, safe='')}"

    def timeline(self, record: ExceptionRecord) -> str:
        """The business key's timeline in the dashboard."""
        return f"{self.dashboard_url.rstrip('/')}/timeline?key={quote(record.key, safe='')}"

    def queue(self, owner: str, rule: str) -> str:
        """The open exceptions of one owner and rule."""
        query = urlencode({"owner": owner, "rule": rule, "status": "open"})
        return f"{self.dashboard_url.rstrip('/')}/queue?{query}"


@dataclass(frozen=True)
class AlertView:
    """What an exception's message shows besides the exception itself."""

    title: str  # the rule's title
    links: Links
    now: datetime
    held: int = 0  # business exceptions this technical exception holds back
    escalated_to: str | None = None  # the mention, once escalated
    note: str = ""  # e.g. why it comes late (held back by a root cause, silenced)
    runbook: str | None = None  # the rule's runbook link


def _lateness(record: ExceptionRecord, now: datetime) -> tuple[str, str] | None:
    """(label, value) saying how late or how long silent, or the error figures; None when nothing applies."""
    context = record.context
    if record.rule == "integration-errors" or ("errors" in context and "spans" in context):
        ratio = float(context.get("ratio") or 0)
        window = context.get("window") or ""
        # the figures the rule found when it opened (the context is not refreshed): said so, not shown as current
        errors = f"{context.get('errors')} of {context.get('spans')} spans ({ratio:.0%}) in {window}".strip()
        return "Errors when opened", errors
    if record.rule == "slack-delivery" or ("failed" in context and "channel" in context):
        n = context.get("failed")
        return "Failed", f"{n} message{'' if n == 1 else 's'} to {context.get('channel')}"
    if record.rule == "ingest-refusals" or ("refused" in context and "reasons" in context):
        n = context.get("refused")
        return "Refused when opened", f"{n} record{'' if n == 1 else 's'} in {context.get('window') or ''}".strip()
    if record.rule == "event-id-reuse" or ("reused_ids" in context and "examples" in context):
        n, examples = context.get("reused_ids"), [str(e) for e in context.get("examples") or []]
        shown = f": {', '.join(examples[:3])}" + (", ..." if len(examples) > 3 else "") if examples else ""
        return "Reused ids", f"{n} in {context.get('window') or ''}{shown}"
    if "last_seen" in context or "silent_for" in context:
        last_seen = context.get("last_seen")
        if last_seen:
            seen = datetime.fromisoformat(str(last_seen).replace("Z", "+00:00"))
            end = stored_time_or_none(record.resolved_at) or now
            return "Silent for", f"{duration_text(end - seen)} (last seen {_clock(seen)})"
        return "Silent for", str(context.get("silent_for") or "unknown")
    due = stored_time_or_none(record.due_at)
    if due is None:
        return None
    zone = context.get("zone")
    if record.status == "resolved":
        return "Due", _clock(due, zone)
    if now >= due:
        return "Late by", f"{duration_text(now - due)} (due {_clock(due, zone)})"
    return "Due in", f"{duration_text(due - now)} ({_clock(due, zone)})"


def finding(record: ExceptionRecord, limit: int = FINDING_MAX) -> str | None:
    """What a reconciler found, for the exceptions of reconciliation rules (invoice-match, inventory-sync,
    inventory-oversell, inventory-stale; their context has the reconcile run's `run_id` and a `summary`): the summary
    on one line, without the key it starts with (the message shows the key), cut to `limit` characters; None for
    other exceptions (their own figures say what is wrong) or a finding without a summary. Not escaped."""
    context = record.context
    summary = context.get("summary")
    if not context.get("run_id") or not isinstance(summary, str):
        return None
    text = " ".join(summary.split())  # one line: a value from a source may hold a newline
    text = text.removeprefix(f"{record.key}: ")
    return _cut(text, limit) if text else None


def _status(record: ExceptionRecord) -> str:
    if record.status == "resolved":
        return f"Resolved ({record.resolution})" if record.resolution else "Resolved"
    status = "Acknowledged" if record.status == "acknowledged" else "Open"
    return f"{status}, assigned to {record.assignee}" if record.assignee else status


def _field(label: str, value: str) -> Block:
    return {"type": "mrkdwn", "text": _cut(f"*{escape(label)}*\n{escape(value)}", _FIELD_MAX)}


PLAIN_MAX = 3900  # a plain-text message: under the 4,000 characters Slack advises for `text`


def plain_text(blocks: Sequence[Block], fallback: str) -> str:
    """A message's blocks as mrkdwn text, for when Slack refuses the blocks: each header, section (its text, then
    its fields), context and the text of other blocks on its own line; buttons and images are left out. Cut to
    PLAIN_MAX characters; `fallback` (the message's own text) when the blocks hold no text."""
    lines: list[str] = []

    def text_of(value: Any) -> str:
        return str(value.get("text", "")) if isinstance(value, dict) else ""

    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "header":
            lines.append(f"*{text_of(block.get('text'))}*")
        elif kind == "context":
            lines.append(" · ".join(t for t in map(text_of, block.get("elements") or []) if t))
        else:
            lines.append(text_of(block.get("text")))
            lines.extend(text_of(f).replace("\n", ": ", 1) for f in block.get("fields") or [])
    text = "\n".join(line for line in lines if line.strip())
    return _cut(text or fallback, PLAIN_MAX)


def notification_text(record: ExceptionRecord, title: str) -> str:
    """The plain text of an exception's message (notifications, clients without blocks); while active, with what a
    reconciler found (`finding`, shorter)."""
    resolved = record.status == "resolved"
    prefix = "Resolved: " if resolved else f"[{record.severity}] " + ("Missed: " if _missed(record) else "")
    found = None if resolved else finding(record, FINDING_TEXT_MAX)
    return escape(f"{prefix}{title}: {record.key} ({record.owner})" + (f" — {found}" if found else ""))


def exception_blocks(record: ExceptionRecord, view: AlertView) -> list[Block]:
    """The Block Kit blocks of an exception's message, for its current state."""
    resolved = record.status == "resolved"
    icon = ":white_check_mark:" if resolved else _SEVERITY_ICON.get(record.severity, ":white_circle:")
    fields = [_field("Key", record.key)]
    context = record.context
    if context.get("customer_id"):
        fields.append(_field("Customer", str(context["customer_id"])))
    if context.get("warehouse"):
        fields.append(_field("Warehouse", str(context["warehouse"])))
    if context.get("service"):
        fields.append(_field("Service", f"{context['service']} / {context.get('span_name', '')}"))
    elif record.kind == "technical" and context.get("source"):
        fields.append(_field("Source", str(context["source"])))
    late = _lateness(record, view.now)
    if late is not None:
        fields.append(_field(*late))
    reasons = context.get("reasons")
    if isinstance(reasons, list) and reasons:  # why records were refused (ingest-refusals): what the on-call fixes
        fields.append(
            _field("Reason" if len(reasons) == 1 else f"Reasons (first of {len(reasons)})", _cut(str(reasons[0]), 300))
        )
    found = finding(record)
    if found:  # what a reconciler found: the values that disagree, so the owner need not open the dashboard
        fields.append(_field("Finding", found))
    fields.append(_field("Owner", record.owner))
    fields.append(_field("Severity", record.severity))
    fields.append(_field("Status", _status(record)))
    blocks: list[Block] = [
        {
            "type": "header",
            # the rule's title says what should happen ("Order shipped by the cutoff"): say that it did not
            "text": {
                "type": "plain_text",
                "text": _cut(("Missed: " if _missed(record, view.now) else "") + view.title, _HEADER_MAX),
                "emoji": True,
            },
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _cut(f"{icon} *{escape(record.rule)}* · {escape(record.kind)} exception", _TEXT_MAX),
            },
            "fields": fields[:10],
        },
    ]
    if view.held:
        noun = "exception" if view.held == 1 else "exceptions"
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f":pause_button: Holding back *{view.held}* business {noun} this failure explains; "
                    "those still open when it resolves are alerted then.",
                },
            }
        )
    if view.note:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(view.note, _TEXT_MAX)}})
    next_step = context.get("next_step")
    if next_step and not resolved:  # what the on-call does about it, as the rule that found it says
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"Next: {escape(str(next_step))}", _TEXT_MAX)}}
        )
    links = view.links
    blocks.append(
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"<{links.exception(record)}|Open in the dashboard> · <{links.timeline(record)}|Timeline>"
                + (f" · <{view.runbook}|Runbook>" if view.runbook else ""),
            },
        }
    )
    opened = stored_time_or_none(record.opened_at)
    facts = [f"Opened {_clock(opened)}" if opened else "", f"exception {record.id}"]
    if view.escalated_to:
        facts.append(f"escalated to {view.escalated_to}")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(f for f in facts if f)}]})
    if not resolved:
        buttons: list[Block] = []
        if record.status == "open":
            buttons.append(
                {
                    "type": "button",
                    "action_id": ACTION_ACKNOWLEDGE,
                    "text": {"type": "plain_text", "text": "Acknowledge"},
                    "style": "primary",
                    "value": record.id,
                }
            )
        buttons.append(
            {
                "type": "button",
                "action_id": ACTION_RESOLVE,
                "text": {"type": "plain_text", "text": "Resolve"},
                "style": "danger",
                "value": record.id,
                "confirm": {
                    "title": {"type": "plain_text", "text": "Resolve this exception?"},
                    "text": {"type": "mrkdwn", "text": f"*{escape(record.key)}* will be resolved as fixed."},
                    "confirm": {"type": "plain_text", "text": "Resolve"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                },
            }
        )
        blocks.append({"type": "actions", "block_id": f"exception:{record.id}"[:255], "elements": buttons})
    return blocks


@dataclass(frozen=True)
class DigestView:
    """What a digest says: a burst of one owner and rule."""

    owner: str
    rule: str
    title: str
    severity: str
    count: int
    keys: Sequence[str]
    started_at: datetime
    window: timedelta
    threshold: int


def digest_text(view: DigestView) -> str:
    """The plain text of a digest."""
    return escape(f"[{view.severity}] {view.count} × {view.title} ({view.owner})")


def digest_blocks(view: DigestView, links: Links) -> list[Block]:
    """The Block Kit blocks of a digest: counts, the first keys, a link to the filtered list."""
    shown = ", ".join(escape(k) for k in view.keys)
    more = view.count - len(view.keys)
    if more > 0:
        shown += f" and {more} more"
    icon = _SEVERITY_ICON.get(view.severity, ":white_circle:")
    return [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(f"{view.count} × {view.title}", _HEADER_MAX), "emoji": True},
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _cut(
                    f"{icon} *{view.count}* exception{'' if view.count == 1 else 's'} of *{escape(view.rule)}* for"
                    f" *{escape(view.owner)}* since {_clock(view.started_at)} ({escape(view.severity)}).\n"
                    f"{'Key' if view.count == 1 else 'First keys'}: {shown}",
                    _TEXT_MAX,
                ),
            },
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"<{links.queue(view.owner, view.rule)}|Open the list in the dashboard>",
            },
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"Grouped: more than {view.threshold} within {duration_text(view.window)}. "
                    "Acknowledge and resolve them in the dashboard.",
                }
            ],
        },
    ]


def change_line(action: str, actor: str, detail: Mapping[str, Any], record: ExceptionRecord) -> str | None:
    """The thread line for one change of the audit trail; None for changes not worth a line."""
    who = escape(actor)
    if action == "acknowledged":
        return f":eyes: Acknowledged by {who}."
    if action == "assigned":
        assignee = str(detail.get("assignee") or "")
        return f":bust_in_silhouette: Assigned to {escape(assignee)} by {who}." if assignee else f"Unassigned by {who}."
    if action == "note":
        return f":memo: {who}: {escape(str(detail.get('text', '')))}"
    if action == "reopened":
        return f":arrows_counterclockwise: Reopened by {who}: {escape(str(detail.get('reason', '')))}"
    if action == "resolved":
        return resolution_line(actor, detail)
    return None


def resolution_line(actor: str, detail: Mapping[str, Any]) -> str:
    """How an exception was resolved: by a person (resolution, note), by a late event, or by recovery."""
    resolution = str(detail.get("resolution") or "fixed")
    if resolution == "late":
        hours = detail.get("hours_late")
        late = f" {duration_text(timedelta(hours=float(hours)))} after the deadline" if hours is not None else ""
        return f":white_check_mark: Resolved: the awaited event arrived{late}."
    if resolution == "met":
        return ":white_check_mark: Resolved: the awaited event arrived in time."
    if resolution == "recovered":
        pending = int(detail.get("pending") or 0)
        if pending:  # the refusals stopped, but what was refused is not in the store until replayed
            records = "record still waits" if pending == 1 else "records still wait"
            return (
                f":white_check_mark: Resolved: recovered. {pending:,} refused {records} in dead letters:"
                " replay them once fixed (`tower deadletters replay`)."
            )
        return ":white_check_mark: Resolved: recovered."
    if resolution == "deadline-moved":
        return ":white_check_mark: Resolved: the deadline moved later."
    note = str(detail.get("note") or "")
    line = f":white_check_mark: Resolved by {escape(actor)} ({escape(resolution)})"
    return line + (f": {escape(note)}" if note else ".")


def with_line(line: str, text: str, blocks: list[Block] | None) -> tuple[str, list[Block] | None]:
    """A thread line posted in its alert's place (the alert's post failed or was deleted): the line, then the
    alert's current text and blocks, so the new message is the whole alert. Returns (text, blocks)."""
    joined = _cut(f"{line}\n{text}", PLAIN_MAX)
    if not blocks:
        return joined, None
    return joined, [{"type": "section", "text": {"type": "mrkdwn", "text": _cut(line, _TEXT_MAX)}}, *blocks]


def named_line(line: str, alert_text: str) -> str:
    """A thread line posted on its own (webhook mode has no threads): the line, naming the alert it is about."""
    return _cut(f"{line} (re: {alert_text})", PLAIN_MAX)


def repeat_line(severity: str, unacknowledged_for: timedelta) -> str:
    """A re-notification in the thread."""
    return f":bell: Still not acknowledged after {duration_text(unacknowledged_for)} ({escape(severity)})."


def escalation_line(oncall: str | None, timeout: timedelta) -> str:
    """The escalation line, mentioning the on-call group."""
    return f":rotating_light: {mention(oncall)} not acknowledged within {duration_text(timeout)}: escalated."
