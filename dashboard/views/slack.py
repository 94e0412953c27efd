"""Slack (local stand-in): the alerts the tower sent to the local Slack stand-in of `tower serve --demo`, by
channel, newest first, with their threads and edits; the Acknowledge / Resolve buttons click as the demo's
Slack user, and the stand-in sends the click to the tower signed, as Slack does.

Shown only when TOWER_DASHBOARD_SLACK_STANDIN_URL is set; with a real workspace the alerts are read in Slack.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import streamlit as st

from dashboard import client, standin, ui
from dashboard.client import settings

LIMIT = 100  # messages shown per channel, newest first

_, identity = ui.signed_in()
url = settings().slack_standin_url or ""

st.title("Slack (local stand-in)")
ui.show_flash()
if not url:
    st.info("No local Slack stand-in is configured (TOWER_DASHBOARD_SLACK_STANDIN_URL): read the alerts in Slack.")
    st.stop()
st.caption(
    f"What the tower posted to the Slack stand-in at {url}: each owner's channel, newest first, with threads. "
    "Updates (acknowledged, resolved) and thread lines arrive a few seconds after a change. The buttons click as "
    "the demo's Slack user, and the tower checks the click's signature as it does Slack's."
)
try:
    found = standin.channels(url)
except standin.StandInError as exc:
    st.error(str(exc))
    st.stop()
if not found:
    st.info("No message yet: alerts follow a few seconds after exceptions open.")
    st.stop()


def when(ts: str) -> str:
    """A Slack ts as a time."""
    try:
        return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return ts


def show(channel: dict[str, Any], message: dict[str, Any]) -> None:
    """One message: its blocks (or text), when, edits, its buttons and its thread."""
    for kind, text in standin.lines(message):
        if kind == "header":
            st.markdown(f"**{text}**")
        elif kind == "context":
            st.caption(text)
        else:
            st.markdown(text)
    if message.get("files"):
        st.markdown("📎 " + ", ".join(str(f.get("name")) for f in message["files"]))
    edits = len(message.get("edits") or [])
    st.caption(f"{when(str(message['ts']))}" + (f" · edited {edits}×" if edits else ""))
    actions = standin.buttons(message)
    if actions and identity.get("may_act"):
        columns = st.columns(len(actions) + 3)
        for column, (action_id, label) in zip(columns, actions, strict=False):
            if column.button(label, key=f"slack-{channel['id']}-{message['ts']}-{action_id}"):
                try:
                    answer = standin.click(url, str(channel["id"]), str(message["ts"]), action_id)
                except standin.StandInError as exc:
                    st.warning(f"{label}: {exc}")
                else:
                    client.clear_cache()
                    if answer.get("ok"):
                        ui.flash(f"{label}: the tower accepted the click; the message updates in a few seconds.")
                    else:
                        ui.flash(f"{label}: the tower answered {answer.get('status')}: {answer.get('answer')}")
                    st.rerun()
    thread = message.get("thread") or []
    if thread:
        with st.expander(f"{len(thread)} in thread"):
            for reply in thread:
                st.markdown(standin.markdown(str(reply.get("text") or "")))
                st.caption(when(str(reply["ts"])))


# The browser keeps the chosen *label*: a label must not change while chosen (a message count in it, as messages
# arrive every few seconds, made the choice a text no channel has).
by_name = {str(c["name"]): c for c in found}
chosen = st.radio("Channel", list(by_name), format_func=lambda name: f"#{name}", horizontal=True, key="slack_channel")
channel = by_name.get(str(chosen)) or found[0]
messages = list(reversed(channel.get("messages") or []))
st.caption(f"{len(messages):,} message{'' if len(messages) == 1 else 's'} in #{channel['name']}")
for message in messages[:LIMIT]:
    with st.container(border=True):
        show(channel, message)
if len(messages) > LIMIT:
    st.caption(f"The newest {LIMIT} of {len(messages)} messages.")
