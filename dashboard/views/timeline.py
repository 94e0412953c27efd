"""Timeline of a business key (`timeline?key=SO-1042`): its events from every system, its spans and its
exceptions on one time axis."""

from __future__ import annotations

import streamlit as st

from dashboard import ui

api, identity = ui.signed_in()

url_key = st.query_params.get("key", "")
if url_key != st.session_state.get("timeline_url_key"):
    st.session_state["timeline_url_key"] = url_key
    st.session_state["timeline_key"] = url_key

st.title("Timeline")
key = st.text_input(
    "Business key", key="timeline_key", placeholder="an order, shipment or invoice id, e.g. SO-1042"
).strip()
if key != url_key:
    if key:
        st.query_params["key"] = key
    else:
        del st.query_params["key"]
    st.session_state["timeline_url_key"] = key
if not key:
    st.info("Enter an order, shipment or invoice id (or an event subject) to see everything that happened to it.")
    st.stop()

found = ui.fetch(api.timeline, key)
if found is None:
    st.stop()
raised = found["exceptions"]
st.subheader(key)
if raised:
    st.markdown(f"**{len(raised)}** exception{'s' if len(raised) != 1 else ''} on this key")
    for e in raised:
        st.page_link(
            "views/queue.py",
            label=f"{e['rule']} · {e['status']} · {e['owner']} · opened {ui.when(e['opened_at'])}",
            query_params={"exception": e["id"]},
        )
else:
    st.caption("No exception was raised on this key.")
ui.timeline_section(found["timeline"], bool(found.get("truncated")))
