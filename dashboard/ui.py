"""Rendering the pages share: sign-in state, readable API errors, times, tables, the timeline chart and the
exception panel (its timeline, audit trail, Slack delivery, evidence and the actions the role may take).

Everything here reads and changes data through `dashboard.client` only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.client import ApiError, TowerApi, session_api

T = TypeVar("T")
IDENTITY_KEY = "identity"
FLASH_KEY = "flash"
RESOLUTIONS = ("fixed", "false_positive", "duplicate", "wont_fix")
SEVERITY_ORDER = ("critical", "high", "medium", "low")
SEVERITY_COLORS = ("#b71c1c", "#ef6c00", "#f9a825", "#90a4ae")
SEVERITY_BADGES = {"critical": "red", "high": "orange", "medium": "blue", "low": "gray"}
STATUS_BADGES = {"open": "red", "acknowledged": "orange", "resolved": "green"}
DEAD_LETTERS_PAGE = "views/deadletters.py"
DEAD_LETTERS_ROLES = frozenset({"admin"})  # as in the API: dead letters hold the records as sent


def signed_in() -> tuple[TowerApi, dict[str, Any]]:
    """The session's API and identity; stops the page when nobody is signed in (app.py signs in first)."""
    api = session_api()
    identity = st.session_state.get(IDENTITY_KEY)
    if api is None or not isinstance(identity, dict):
        st.info("Sign in with an API token in the sidebar to see the control tower.")
        st.stop()
    return api, identity


def may_read_dead_letters(identity: Mapping[str, Any] | None) -> bool:
    """Whether the signed-in role sees the dead letters page in its menu (and so may be linked to it)."""
    return isinstance(identity, Mapping) and identity.get("role") in DEAD_LETTERS_ROLES


def fetch(call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """`call(*args, **kwargs)`, or None after showing the API's error as a readable message."""
    try:
        return call(*args, **kwargs)
    except ApiError as exc:
        st.error(exc.message)
        return None


def flash(message: str) -> None:
    """Show `message` once, on the next run of the page (after a change and its rerun)."""
    st.session_state[FLASH_KEY] = message


def show_flash() -> None:
    """Show (and forget) the message a change left."""
    message = st.session_state.pop(FLASH_KEY, None)
    if message:
        st.success(message)


def parse_time(value: Any) -> datetime | None:
    """An API time (RFC 3339) as an aware datetime; None for empty values."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# Markdown's inline marks, `<` (HTML), `$` (LaTeX), and `.`/`:` which make a bare URL or www. name a link; what only
# acts at the start of a line (`#`, `-`, `+`) is left: every value here follows other text
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()!|~<>:.$])")


def md(value: Any) -> str:
    """`value` as literal text inside Streamlit markdown (titles, captions, warnings): a key a sender chose, an
    assignee or a link's parameter shows as written, never as a link, an image, a colour directive or LaTeX."""
    return _MARKDOWN.sub(r"\\\1", str(value))


def code(value: Any) -> str:
    """`value` as an inline code span in Streamlit markdown, shown as written: nothing inside a span is markdown, and
    a backtick of its own, which would end the span early, is shown as `'`."""
    return "`" + str(value).replace("`", "'") + "`"


def when(value: Any) -> str:
    """A time as `2026-11-04 15:30 UTC`; an em dash for none."""
    at = parse_time(value)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if at else "—"


SILENT_AFTER_MINUTES = 30  # source-silence's default window
ERROR_RATE_ALERT = 0.05  # integration-errors' default rate


def source_state(row: Mapping[str, Any]) -> str:
    """One word or two for a source's health row (GET /api/sources/health), the worst first."""
    if row["open_technical"]:
        return "technical exception open"
    if row.get("refused"):
        return "records refused"
    if row["silent_minutes"] is None or row["silent_minutes"] >= SILENT_AFTER_MINUTES:
        # source-silence watches systems (`wms`, fed by any of its sites): a quiet site alone opens nothing
        return "quiet site" if "/" in row["source"] else "silent"
    if (row["error_rate"] or 0) > ERROR_RATE_ALERT:
        return "errors"
    return "ok"


def field_text(name: str, value: Any) -> str:
    """One value of a context or detail as text: a time (a key ending in `_at`) as `when` writes it, nested values
    as compact JSON."""
    if name.endswith("_at") and isinstance(value, str) and value:
        try:
            return when(value)
        except ValueError:
            return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    return "" if value is None else str(value)


def detail_text(detail: Any) -> str:
    """An audit change's detail as a person reads it: `owner: warehouse · due: 2026-11-27 04:59 UTC`; times (keys
    ending in `_at`) as `when` writes them, nested values as compact JSON."""
    if not isinstance(detail, Mapping):
        return "" if detail in (None, "") else str(detail)
    parts = []
    for name, value in detail.items():
        if value in (None, "", [], {}):
            continue
        parts.append(f"{name.removesuffix('_at').replace('_', ' ')}: {field_text(name, value)}")
    return " · ".join(parts)


def duration_text(hours: float) -> str:
    """Hours as `2 d 3 h`, `3 h 20 min` or `12 min`."""
    minutes = round(abs(hours) * 60)
    days, rest = divmod(minutes, 24 * 60)
    h, m = divmod(rest, 60)
    if days:
        return f"{days} d {h} h"
    return f"{h} h {m} min" if h else f"{m} min"


def seconds_text(value: float | None) -> str:
    """Seconds as `40 s`, else as `duration_text`; negative ones with a minus (`−4 h ahead`); an em dash for none."""
    if value is None:
        return "—"
    if value < 0:
        return f"−{seconds_text(-value)} ahead"
    return f"{value:.0f} s" if value < 60 else duration_text(value / 3600)


def ago(value: Any, now: Any) -> str:
    """How long before `now` a time was: `3 h 20 min ago` (or `in 12 min` for a future time)."""
    at, reference = parse_time(value), parse_time(now)
    if at is None or reference is None:
        return "—"
    hours = (reference - at).total_seconds() / 3600
    return f"{duration_text(hours)} ago" if hours >= 0 else f"in {duration_text(hours)}"


def percent(value: Any) -> str:
    """A share as `97.5 %`; an em dash for none."""
    return "—" if value is None else f"{float(value) * 100:.1f} %"


def table(rows: Iterable[Mapping[str, Any]], columns: Mapping[str, str]) -> pd.DataFrame:
    """The rows' `columns` (API field -> heading) as a DataFrame, in that order."""
    data = [{heading: row.get(name) for name, heading in columns.items()} for row in rows]
    return pd.DataFrame(data, columns=list(columns.values()))


def flat(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows with nested objects spread into dotted columns (`erp.quantity`, `wms.quantity`): side by side."""
    listed = [dict(row) for row in rows]
    return pd.json_normalize(listed) if listed else pd.DataFrame()


def known_columns(rows: list[dict[str, Any]], columns: Mapping[str, str]) -> pd.DataFrame:
    """`table` of the `columns` the rows have (times shown as text); every field spread out when they have none."""
    present = {name: heading for name, heading in columns.items() if rows and name in rows[0]}
    if not present:
        return flat(rows)
    times = {name for name in present if name.endswith("_at") or name == "at"}
    return table([{**row, **{name: when(row.get(name)) for name in times}} for row in rows], present)


def side_by_side(findings: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Reconciliation findings, one row each: what is wrong (the summary) first, then every system's values in its
    own columns (`erp · quantity`), times as `when` writes them, and blank where a side has no value (a finding of
    another check names other systems)."""
    rows: list[dict[str, Any]] = []
    for finding in findings:
        check = finding.get("check", "")
        row: dict[str, Any] = {
            "key": finding.get("key", ""),
            "summary": finding.get("summary", ""),
            "rule": finding.get("rule", ""),
            "check": ", ".join(check) if isinstance(check, list) else check,
            "status": finding.get("status", ""),
            "opened": when(finding.get("opened_at")),
        }
        for side in finding.get("sides") or []:
            name = str(side.get("name", "?"))
            for field, value in side.items():
                if field == "name":
                    continue
                if field in ("as_of", "at") or field.endswith("_at"):
                    value = field_text("_at", value) if value else ""
                row[f"{name} · {field}"] = value if isinstance(value, (int, float, str)) else field_text(field, value)
        rows.append(row)
    return pd.DataFrame(rows).astype(object).where(pd.notna, "") if rows else pd.DataFrame()


# The exception panel ---------------------------------------------------------------------------------


# A timeline whose times lie closer together than this labels its ticks to the second: to the minute, the ticks
# of a key whose event and span came within one minute all read the same.
_SECONDS_BELOW = timedelta(minutes=10)
_LEAST_SPAN = timedelta(minutes=1)


def time_axis(times: list[datetime]) -> alt.X:
    """The x axis (UTC) of a timeline of `times`: labelled to the minute, or to the second when they lie within
    ten minutes; at least a minute wide, centred on them, so that times a few milliseconds apart (or one alone)
    are not spread over ticks a millisecond apart."""
    scale = alt.Scale(type="utc")
    label = "%d %b %H:%M"
    if times:
        first, last = min(times), max(times)
        if last - first < _SECONDS_BELOW:
            label = "%d %b %H:%M:%S"
        if last - first < _LEAST_SPAN:
            middle = first + (last - first) / 2
            ends = [(middle + half).astimezone(UTC) for half in (-_LEAST_SPAN / 2, _LEAST_SPAN / 2)]
            domain = [
                alt.DateTime(
                    year=e.year,
                    month=e.month,
                    date=e.day,
                    hours=e.hour,
                    minutes=e.minute,
                    seconds=e.second,
                    milliseconds=e.microsecond // 1000,
                    utc=True,
                )
                for e in ends
            ]
            scale = alt.Scale(type="utc", domain=domain)
    return alt.X("at:T", title="time (UTC)", scale=scale, axis=alt.Axis(format=label))


def timeline_chart(entries: list[dict[str, Any]], due: Any = None) -> alt.LayerChart | alt.Chart:
    """Events, spans and changes on one time axis (UTC), one row per system; a red rule at the deadline `due`."""
    data = pd.DataFrame(
        [
            {
                "at": parse_time(e["at"]),
                "when": when(e["at"]),
                "system": e.get("system", ""),
                "kind": e.get("kind", ""),
                "name": e.get("name", ""),
                "status": e.get("status") or "",
                "actor": e.get("actor") or "",
            }
            for e in entries
        ]
    )
    kinds = alt.Scale(domain=["event", "span", "audit"])
    deadline = parse_time(due)
    x = time_axis([*data["at"].dropna(), *([deadline] if deadline else [])])
    points: alt.Chart = (
        alt.Chart(data)
        .mark_point(size=140, filled=True)
        .encode(
            x=x,
            y=alt.Y("system:N", title=None),
            color=alt.Color("kind:N", title="what", scale=kinds),
            shape=alt.Shape("kind:N", scale=kinds),
            tooltip=["when:N", "system:N", "kind:N", "name:N", "status:N", "actor:N"],
        )
        .properties(height=max(160, 42 * data["system"].nunique()))
    )
    if deadline is None:
        return points
    rule: alt.Chart = (
        alt.Chart(pd.DataFrame([{"at": deadline, "when": when(deadline)}]))
        .mark_rule(color="#b71c1c", strokeDash=[6, 4])
        .encode(x=x, tooltip=[alt.Tooltip("when:N", title="due")])
    )
    return alt.LayerChart(layer=[points, rule])


def timeline_section(entries: list[dict[str, Any]], truncated: bool, due: Any = None) -> None:
    """The chart and the table of a timeline (with the deadline `due`, when there is one)."""
    if not entries:
        st.info("No event, span or change is known for this key.")
        return
    st.altair_chart(timeline_chart(entries, due), width="stretch")
    if truncated:
        st.warning(
            "This key has more events or spans than the timeline shows: the newest are listed, the oldest left out."
        )
    st.dataframe(
        table(
            [
                {
                    **e,
                    "at": when(e["at"]),
                    "status": e.get("status") or "",
                    "actor": e.get("actor") or "",
                    "ids": ", ".join(f"{k}={v}" for k, v in e.get("ids", {}).items()),
                }
                for e in entries
            ],
            {
                "at": "when",
                "kind": "what",
                "system": "system",
                "name": "name",
                "status": "status",
                "actor": "by",
                "ids": "ids",
            },
        ),
        hide_index=True,
    )


def exception_summary(detail: Mapping[str, Any], now: Any) -> None:
    """Status, owner, severity, assignee and times of an exception."""
    status, severity = detail["status"], detail["severity"]
    st.markdown(
        f"**Status** :{STATUS_BADGES.get(status, 'gray')}-badge[{status}] · "
        f"**Severity** :{SEVERITY_BADGES.get(severity, 'gray')}-badge[{severity}] · "
        f"**Owner** {md(detail['owner'])} · **Assignee** {md(detail.get('assignee') or 'nobody')}"
    )
    due = parse_time(detail.get("due_at"))
    late = ""
    reference = parse_time(detail.get("resolved_at")) or parse_time(now)
    if due and reference and reference > due:
        late = f" · {duration_text((reference - due).total_seconds() / 3600)} past due"
    st.caption(
        f"{detail['kind']} exception · opened {when(detail['opened_at'])} ({ago(detail['opened_at'], now)}) · "
        f"due {when(detail.get('due_at'))}{late}"
        + (
            f" · resolved {when(detail['resolved_at'])} ({md(detail['resolution'])})"
            if detail.get("resolved_at")
            else ""
        )
    )


def evidence_section(api: TowerApi, identity: Mapping[str, Any], detail: Mapping[str, Any]) -> None:
    """What the rule found (the exception's context), where the refused records of an `ingest-refusals` exception
    are (a link to the dead letters page for the roles whose menu has it), and the reconciler's findings for its
    key."""
    context = detail.get("context") or {}
    st.markdown("**What the rule found**")
    if context:
        st.dataframe(
            pd.DataFrame([{"field": k, "value": field_text(k, v)} for k, v in context.items()]),
            hide_index=True,
        )
    else:
        st.caption("The rule recorded no context.")
    if detail.get("resolution_detail"):
        st.markdown("**Resolution**")
        st.json(detail["resolution_detail"])
    if detail["rule"] == "ingest-refusals":
        # the key is the source the letters are counted under, or `token <id>` for a token granted several
        # sources whose letters claimed none of them: those are found by the token that sent them
        key = str(detail["key"])
        sender = key.removeprefix("token ") if key.startswith("token ") else ""
        query = {"token_id": sender} if sender else {"source": key}
        command = "tower deadletters list " + (f"--token-id {sender}" if sender else f"--source {key}")
        if may_read_dead_letters(identity):
            st.page_link(
                DEAD_LETTERS_PAGE,
                label="See the refused records (dead letters), replay or discard them",
                query_params=query,
            )
        else:
            whose = f" sent by ingest token {sender}" if sender else f" of {key}"
            st.caption(
                f"The refused records{whose} are kept as dead letters, which only an admin may read, replay or"
                f" discard: on the dashboard's Dead letters page, or with `{command}`."
            )
    if not _may_be_reconciliation(api, detail["rule"]):
        return
    try:
        findings = api.reconcile_findings(detail["rule"])
    except ApiError as exc:
        st.warning(exc.message)
        return
    if findings is not None:
        mine = [f for f in findings if f.get("id") == detail["id"] or f.get("key") == detail["key"]]
        st.markdown("**The reconciler's values, side by side**")
        if mine:
            st.dataframe(side_by_side(mine), hide_index=True, width="stretch")
        else:
            st.caption("The reconciler lists no open finding for this key.")


def _may_be_reconciliation(api: TowerApi, rule: str) -> bool:
    """A reconciliation rule, or a rule the configuration does not list (a reconciler's finding rule)."""
    try:
        facets = api.facets()
    except ApiError:
        return False
    kinds = {str(r["id"]): str(r["type"]) for r in facets.get("rules", [])}
    return kinds.get(rule, "reconciliation") == "reconciliation"


def deliveries_section(api: TowerApi, exception_id: str) -> None:
    """The Slack messages sent (or queued) for the exception."""
    try:
        deliveries = api.deliveries(exception_id)
    except ApiError as exc:
        st.warning(exc.message)
        return
    if deliveries is None:
        st.info("This tower does not deliver Slack alerts (no delivery log).")
    elif not deliveries:
        st.info("No Slack message was sent for this exception.")
    else:
        st.dataframe(
            known_columns(
                deliveries,
                {
                    "at": "when",
                    "channel": "channel",
                    "action": "message",
                    "mode": "via",
                    "status": "status",
                    "attempt": "attempt",
                    "http_status": "HTTP",
                    "error": "error",
                    "note": "note",
                },
            ),
            hide_index=True,
            width="stretch",
        )


def actions_section(api: TowerApi, identity: Mapping[str, Any], detail: Mapping[str, Any]) -> None:
    """Acknowledge, assign, resolve and note buttons, for roles that may act; a note for those that may not."""
    if not identity.get("may_act"):
        st.caption(f"Your role ({identity.get('role')}) may read exceptions but not act on them.")
        return
    exception_id = detail["id"]
    status = detail["status"]

    def act(label: str, change: Callable[[], Any], done: str) -> None:
        try:
            change()
        except ApiError as exc:
            st.warning(f"{label}: {md(exc.message)}")
            return
        flash(done)
        st.rerun()

    left, right = st.columns(2)
    with left:
        if status == "open" and st.button("Acknowledge", key=f"ack-{exception_id}", type="primary"):
            act("Acknowledge", lambda: api.acknowledge(exception_id), "Acknowledged.")
        if status != "resolved":
            assignee = st.text_input("Assign to", value=detail.get("assignee") or "", key=f"assignee-{exception_id}")
            if st.button("Assign", key=f"assign-{exception_id}"):
                act(
                    "Assign", lambda: api.assign(exception_id, assignee.strip()), f"Assigned to {assignee or 'nobody'}."
                )
    with right:
        if status != "resolved":
            resolution = st.selectbox("Resolution", RESOLUTIONS, key=f"resolution-{exception_id}")
            why = st.text_input("Resolution note", key=f"why-{exception_id}")
            if st.button("Resolve", key=f"resolve-{exception_id}"):
                act("Resolve", lambda: api.resolve(exception_id, resolution, why), f"Resolved ({resolution}).")
        note = st.text_area("Note", key=f"note-{exception_id}", height=80)
        if st.button("Add note", key=f"add-note-{exception_id}"):
            if note.strip():
                act("Add note", lambda: api.add_note(exception_id, note), "Note added.")
            else:
                st.warning("Write the note first.")
    if detail["rule"] == "slack-delivery":
        channel = str(detail["key"])
        st.caption(f"Once {channel} is fixed (it exists, the bot is in it), send the alerts it missed again.")
        if st.button(f"Send {channel}'s failed messages again", key=f"resend-{exception_id}"):
            try:
                answer = api.resend_failed(channel)
            except ApiError as exc:
                st.warning(f"Send again: {md(exc.message)}")
            else:
                flash(f"{answer['requeued']} failed messages to {channel} queued again; alerts-send delivers them.")
                st.rerun()


def exception_panel(api: TowerApi, identity: Mapping[str, Any], exception_id: str) -> None:
    """One exception: summary, timeline across systems, audit trail, Slack delivery, evidence, actions."""
    detail = fetch(api.exception, exception_id)
    if detail is None:
        return
    st.subheader(f"{md(detail['rule'])} · {md(detail['key'])}")
    if detail.get("rule_title") or detail.get("runbook"):
        title = detail.get("rule_title") or detail["rule"]
        st.markdown(title + (f" · [Runbook]({detail['runbook']})" if detail.get("runbook") else ""))
    exception_summary(detail, identity.get("now"))
    entries: list[dict[str, Any]] = detail.get("timeline", [])
    timeline, audit, slack, evidence, actions = st.tabs(
        ["Timeline", "Audit trail", "Slack delivery", "Evidence", "Actions"]
    )
    with timeline:
        timeline_section(entries, bool(detail.get("truncated")), detail.get("due_at"))
        st.page_link(
            "views/timeline.py", label=f"Everything about {md(detail['key'])}", query_params={"key": detail["key"]}
        )
    with audit:
        trail = [e for e in entries if e.get("kind") == "audit"]
        st.dataframe(
            table(
                [{**e, "at": when(e["at"]), "detail": detail_text(e.get("detail"))} for e in trail],
                {"at": "when", "name": "change", "actor": "by", "detail": "detail"},
            ),
            hide_index=True,
        )
    with slack:
        deliveries_section(api, exception_id)
    with evidence:
        evidence_section(api, identity, detail)
    with actions:
        actions_section(api, identity, detail)
