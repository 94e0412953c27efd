"""The control tower dashboard: `tower dashboard`, or `streamlit run dashboard/app.py`.

A client of the tower's HTTP API only (TOWER_DASHBOARD_API_URL). Visitors sign in with an API token
(the sidebar, or TOWER_DASHBOARD_TOKEN for a single-user setup); before that no page runs and no
data is read. The role of the token decides what the pages offer: every role reads, operators and
admins act on exceptions, finance and admins download reports.

Pages (URL paths): overview (the default), queue, timeline, sla, reconciliation, reports, deadletters
(admins; hidden from the other roles' menu), and slack when a local Slack stand-in is configured
(TOWER_DASHBOARD_SLACK_STANDIN_URL, set by `tower serve --demo`). Links prefill them: `queue?exception=<id>`
opens one exception (Slack messages link there), `queue?owner=warehouse&rule=ship-cutoff&status=open` filters
the queue, `timeline?key=SO-1042` shows a key's timeline, `deadletters?source=wms` a source's refused records.
A link opened before the sign-in keeps its page and query, and opens once signed in.
"""

from __future__ import annotations

import streamlit as st

from dashboard import client, ui
from dashboard.client import ApiError, TowerApi

st.set_page_config(page_title="Control tower", page_icon=":material/cell_tower:", layout="wide")

PAGES = [
    st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("views/queue.py", title="Exception queue", icon=":material/list_alt:", url_path="queue"),
    st.Page("views/timeline.py", title="Timeline", icon=":material/timeline:", url_path="timeline"),
    st.Page("views/sla.py", title="SLA", icon=":material/timer:", url_path="sla"),
    st.Page(
        "views/reconciliation.py", title="Reconciliation", icon=":material/compare_arrows:", url_path="reconciliation"
    ),
    st.Page("views/reports.py", title="Reports", icon=":material/download:", url_path="reports"),
]
if client.settings().slack_standin_url:
    PAGES.append(st.Page("views/slack.py", title="Slack (local stand-in)", icon=":material/forum:", url_path="slack"))


def sign_in(token: str) -> str | None:
    """Sign the session in with `token`; the reason when the tower refuses it."""
    config = client.settings()
    api = TowerApi(config.api_url, token, config.timeout_seconds)
    try:
        identity = api.whoami()
    except ApiError as exc:
        return exc.message
    st.session_state[client.TOKEN_KEY] = token
    st.session_state[ui.IDENTITY_KEY] = identity
    return None


def sign_out() -> None:
    """Forget the session's token and identity."""
    st.session_state.pop(client.TOKEN_KEY, None)
    st.session_state.pop(ui.IDENTITY_KEY, None)


def authenticate() -> list[tuple[str, str]]:
    """Settle who is signed in before anything is drawn: the TOWER_DASHBOARD_TOKEN sign-in, and the session's token
    checked again (a revoked one signs out). The problems to show in the sidebar, as (level, text)."""
    config = client.settings()
    notices: list[tuple[str, str]] = []
    api = client.session_api()
    if api is None and config.token is not None and not st.session_state.get("env_token_tried"):
        st.session_state["env_token_tried"] = True
        problem = sign_in(config.token.get_secret_value())
        if problem:
            notices.append(("error", f"TOWER_DASHBOARD_TOKEN: {problem}"))
        api = client.session_api()
    if api is not None:
        try:
            st.session_state[ui.IDENTITY_KEY] = api.whoami()
        except ApiError as exc:
            if exc.status == 401:
                sign_out()
                notices.append(("error", exc.message))
            else:
                notices.append(("warning", exc.message))
    return notices


def sidebar(notices: list[tuple[str, str]]) -> None:
    """Sign in or out; who is signed in; refresh."""
    config = client.settings()
    with st.sidebar:
        for level, text in notices:
            (st.error if level == "error" else st.warning)(text)
        if client.session_api() is not None:
            identity = st.session_state.get(ui.IDENTITY_KEY) or {}
            st.markdown(f"Signed in as **{identity.get('role', '?')}** (token `{identity.get('token_id', '?')}`)")
            st.caption(
                ("May act on exceptions. " if identity.get("may_act") else "Read only. ")
                + ("May download finance reports." if identity.get("may_report") else "")
            )
            left, right = st.columns(2)
            if left.button("Refresh", help="Read everything from the tower again, now."):
                client.clear_cache()
                st.rerun()
            if right.button("Sign out"):
                sign_out()
                st.rerun()
        else:
            with st.form("sign-in"):
                token = st.text_input("API token", type="password", help="A token from TOWER_API_TOKENS (any role).")
                if st.form_submit_button("Sign in", type="primary"):
                    problem = sign_in(token.strip()) if token.strip() else "Enter a token."
                    if problem:
                        st.error(problem)
                    else:
                        st.rerun()
        st.caption(f"Tower: {config.api_url}")


# Who is signed in is settled first: the identity decides the menu. Nothing is drawn before the menu: the browser
# learns which page it shows from the menu, and a sign-in sent before that (from a form drawn earlier in the first
# run of a page opened by a link) would open the default page instead of the linked one.
notices = authenticate()
# Dead letters (the records as sent) are for admins: other roles, and a visitor not signed in yet, do not see the
# page in the menu. It is registered all the same (hidden), so a `deadletters?source=wms` link opened in a new tab
# keeps its page and query through the sign-in, as the queue's links do, and then opens the page for an admin;
# another role sees there that the page is for admins, not a "Page not found".
admin = client.session_api() is not None and ui.may_read_dead_letters(st.session_state.get(ui.IDENTITY_KEY))
DEAD_LETTERS = st.Page(
    ui.DEAD_LETTERS_PAGE,
    title="Dead letters",
    icon=":material/report:",
    url_path="deadletters",
    visibility="visible" if admin else "hidden",
)
page = st.navigation([*PAGES[:6], DEAD_LETTERS, *PAGES[6:]])
sidebar(notices)
if client.session_api() is None:
    st.title("Control tower")
    st.info("Sign in with an API token in the sidebar. Nothing is shown before: no token, no data.")
    st.stop()
page.run()
