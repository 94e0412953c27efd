"""Dead letters (`deadletters?source=wms`; `deadletters?token_id=3f2a...`: one ingest token's): the records the
doors refused, with why; replay the chosen ones after a fix, or discard those no fix will make valid, saying why.
Admin tokens only, as in the API: they hold the raw records (the page is hidden from the other roles' menu, and
tells them so when a link opens it)."""

from __future__ import annotations

import math
import re
from typing import Any

import streamlit as st

from dashboard import ui
from dashboard.client import ApiError, settings

STATUSES = ["pending", "replayed", "discarded", "any"]
DOORS = ["any", "events", "otlp_traces", "otlp_logs"]
COLUMNS = {
    "received_at": "received (UTC)",
    "source": "source",
    "door": "door",
    "status": "status",
    "reason": "reason",
    "status_note": "note",
    "id": "id",
}

api, identity = ui.signed_in()
page_size = settings().page_size  # TOWER_DASHBOARD_PAGE_SIZE, as in the queue
st.title("Dead letters")
st.caption(
    "Records the doors refused, each with its reason and raw form. Replay them once the cause is fixed (they run "
    "through their door again, with the current grant of the token that sent them), or discard those no fix will "
    "make valid, saying why."
)
if not ui.may_read_dead_letters(identity):  # a link opened by another role: the page is hidden from its menu
    asked = st.query_params.get("source", "")
    if not re.fullmatch(r"[a-z]+(/[A-Za-z0-9._~-]+)*", asked):  # a link's text is never written as markdown
        asked = ""
    st.info(
        f"Only an admin token may read dead letters: they hold the records as sent. You are signed in as "
        f"{identity.get('role')}; ask an admin to look"
        + (f" at the dead letters of {asked} (`tower deadletters list --source {asked}`)." if asked else " at them.")
    )
    st.stop()
ui.show_flash()

url_source = st.query_params.get("source", "")
if url_source != st.session_state.get("dl_url_source"):
    st.session_state["dl_url_source"] = url_source
    st.session_state["dl_source"] = url_source
url_token = st.query_params.get("token_id", "")
if url_token != st.session_state.get("dl_url_token"):
    st.session_state["dl_url_token"] = url_token
    st.session_state["dl_token"] = url_token
left, middle, right, last = st.columns(4)
status = left.selectbox("Status", STATUSES, key="dl_status")
door = middle.selectbox("Door", DOORS, key="dl_door")
source = right.text_input("Source", key="dl_source", placeholder="e.g. wms (wms/dallas too)").strip()
sender = last.text_input(
    "Sent by token",
    key="dl_token",
    placeholder="an ingest token's id",
    help="The letters one ingest token sent, whatever source they claimed (their `token_id`, not the token): what"
    " an ingest-refusals exception names when its token's records claimed another system's source.",
).strip()

filters = {
    "status": None if status == "any" else status,
    "door": None if door == "any" else door,
    "source": source or None,
    "token_id": sender or None,
}
if filters != st.session_state.get("dl_filters"):  # new filters start again on the first page
    st.session_state["dl_filters"] = filters
    st.session_state["dl_page"] = 1
page_number = int(st.session_state.get("dl_page", 1))
page = ui.fetch(api.dead_letters, **filters, limit=page_size, offset=(page_number - 1) * page_size)
if page is None:
    st.stop()
items: list[dict[str, Any]] = page["items"]
total = int(page["total"])
if not items:
    if total:  # past the last page (letters went away since): back to the first
        st.session_state["dl_page"] = 1
        st.rerun()
    st.info("No dead letters" + (" match." if any(filters.values()) else "."))
    st.stop()
pages = max(1, math.ceil(total / page_size))
if pages > 1:
    first = (page_number - 1) * page_size + 1
    st.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, step=1, key="dl_page")
    st.caption(f"Dead letters {first:,}–{first + len(items) - 1:,} of {total:,}, newest first.")
else:
    st.caption(f"{total:,} dead letter{'' if total == 1 else 's'}.")
st.dataframe(ui.known_columns(items, COLUMNS), hide_index=True, width="stretch")

by_id = {str(item["id"]): item for item in items}


def label(ident: str) -> str:
    # the id first: the browser keeps the chosen *labels*, and two records of one batch refused for one reason
    # differ in nothing else; no status in it, which a replay or another admin changes under a chosen letter
    item = by_id.get(ident)
    if item is None:
        return ident
    reason = " ".join(str(item.get("reason", "")).split())
    reason = reason if len(reason) <= 70 else reason[:69] + "…"
    return f"{ident} · {item.get('source') or '?'} · {reason}"


picked: list[str] = st.multiselect("Dead letters", list(by_id), format_func=label, key="dl_chosen")
chosen = [ident for ident in picked if ident in by_id]  # one that left the page (replayed, filtered out) is dropped
for ident in chosen[:5]:
    with st.expander(f"Raw record {ident}", expanded=len(chosen) == 1):
        item = by_id[ident]
        st.caption(f"content type {ui.md(item.get('content_type'))} · token {item.get('token_id')}")
        st.code(str(item.get("raw", "")), language="json", wrap_lines=True)
        if item.get("raw_truncated"):
            st.caption(
                f"The first {len(str(item.get('raw', ''))):,} characters of {int(item.get('raw_bytes', 0)):,} bytes. "
                f"The whole record: `tower deadletters show {ident}` or `GET /api/deadletters/{ident}`."
            )
        st.markdown("**Reason**")
        st.text(str(item.get("reason", "")))
        latest = item.get("latest_reason")
        if latest and latest != item.get("reason"):  # a replay failed since, for another reason
            st.markdown("**Latest replay failed**")
            st.text(str(latest))
if len(chosen) > 5:
    st.caption(f"The raw form of the first 5 of {len(chosen)} chosen.")
pending = [ident for ident in chosen if by_id[ident].get("status") == "pending"]
if chosen and not pending:
    st.caption("None of the chosen dead letters is pending: there is nothing to replay or discard.")
if not pending:
    st.stop()

replay_column, discard_column = st.columns(2)
with replay_column:
    if st.button(f"Replay {len(pending)} pending", type="primary", key="dl_replay"):
        try:
            result = api.replay_dead_letters(pending)
        except ApiError as exc:
            st.warning(f"Replay: {ui.md(exc.message)}")
        else:
            failing = result.get("still_failing", [])
            message = f"Replayed {result.get('replayed', 0)}."
            if failing:
                example = "; ".join(str(e) for e in failing[0].get("errors", []))
                message += f" {len(failing)} still failing (they stay pending with the new reason), e.g.: {example}"
            ui.flash(message)
            st.session_state.pop("dl_chosen", None)
            st.rerun()
with discard_column:
    note = st.text_input("Why discard them", key="dl_note", placeholder="e.g. test records from the WMS sandbox")
    if st.button(f"Discard {len(pending)} pending", key="dl_discard"):
        if not note.strip():
            st.warning("Say why the records are given up on: the note is kept with each of them.")
        else:
            try:
                result = api.discard_dead_letters(pending, note.strip())
            except ApiError as exc:
                st.warning(f"Discard: {ui.md(exc.message)}")
            else:
                ui.flash(f"Discarded {result.get('discarded', 0)}.")
                st.session_state.pop("dl_chosen", None)
                st.rerun()
