"""Exception queue: filter, sort and page through exceptions on the server, select one to see its timeline,
audit trail, Slack delivery and evidence, and act on it (roles that may).

The URL carries the state (`queue?owner=warehouse&status=open&exception=<id>`), so a Slack message or a
colleague's link opens the same view; the page writes its filters back to the URL.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import partial
from typing import Any

import streamlit as st

from dashboard import ui
from dashboard.client import ApiError, settings

ANY = ""
ALL = "all"  # any status, as the URL says it (the API takes `all` or empty)
STATUSES = {
    "active": "active (open or acknowledged)",
    "open": "open",
    "acknowledged": "acknowledged",
    "resolved": "resolved",
    ANY: "any status",
}
KINDS = {ANY: "any kind", "business": "business", "technical": "technical"}
AGES: dict[str, str] = {
    ANY: "any age",
    "1": "older than 1 h",
    "4": "older than 4 h",
    "24": "older than 24 h",
    "72": "older than 3 days",
    "168": "older than 7 days",
}
MAX_AGE_HOURS = 100 * 365 * 24  # the most the API takes for min_age_hours
SORTS = {"newest": "newest first", "oldest": "oldest first", "due": "due soonest", "severity": "most severe first"}
TEXT_FILTERS = ("customer", "warehouse")
EXPORT_ROWS = 100_000  # the most the API exports at once
PARAMS_KEY = "queue_params"  # the URL parameters last applied to (or written from) the widgets
LABELS_KEY = "queue_labels"  # every exception label this session showed -> its id

api, identity = ui.signed_in()
page_size = settings().page_size
facets = ui.fetch(api.facets) or {"owners": [], "rules": []}
owners: list[str] = facets["owners"]
rules: list[str] = [r["id"] for r in facets["rules"]]


def age_hours(value: str) -> float | None:
    """A `min_age_hours` the API takes (more than 0, at most a century), as a number; None for any other text."""
    try:
        hours = float(value)
    except ValueError:
        return None
    return hours if 0 < hours <= MAX_AGE_HOURS else None


def age_label(value: str) -> str:
    """How the Age box shows a `min_age_hours`: the menu's words, or `older than 2 h` for another number."""
    if value in AGES:
        return AGES[value]
    hours = age_hours(value)
    return f"older than {hours:g} h" if hours is not None else value


def apply_url(params: dict[str, str]) -> list[str]:
    """Put the URL's filters into the widgets; what the link asked that the queue cannot show (unknown values fall
    back to the defaults, and say so)."""
    state = st.session_state
    problems: list[str] = []

    def known(name: str, allowed: dict[str, str], default: str) -> str:
        value = params.get(name, default)
        if value in allowed:
            return value
        problems.append(f"{ui.code(f'{name}={value}')} is not one of {', '.join(ui.code(v) for v in allowed if v)}")
        return default

    state["q_owner"] = params.get("owner", ANY)
    state["q_rule"] = params.get("rule", ANY)
    status = params.get("status", "active")
    state["q_status"] = ANY if status == ALL else known("status", {**STATUSES, ALL: ""}, "active")
    state["q_kind"] = known("kind", KINDS, ANY)
    age = params.get("min_age_hours", ANY)
    if age in AGES or age_hours(age) is not None:  # another number of hours than the menu's is offered too
        state["q_age"] = age
    else:
        state["q_age"] = ANY
        problems.append(
            f"{ui.code(f'min_age_hours={age}')} is not a number of hours (more than 0, at most {MAX_AGE_HOURS:,})"
        )
    state["q_sort"] = known("sort", SORTS, "newest")
    for name in TEXT_FILTERS:
        state[f"q_{name}"] = params.get(name, "")
    page = params.get("page", "1")
    state["q_page"] = int(page) if page.isdigit() and int(page) >= 1 else 1
    state["q_exception"] = params.get("exception", ANY)
    return problems


def choices(known: list[str], current: str) -> list[str]:
    """'any' first, then the known values, and the current one even when unknown (it came from a link)."""
    return [ANY, *known, *([current] if current and current not in known else [])]


url = st.query_params.to_dict()
link_problems = apply_url(url) if url != st.session_state.get(PARAMS_KEY) else []

st.title("Exception queue")
ui.show_flash()
if link_problems:
    st.warning(f"The link's {'; '.join(link_problems)}: the queue shows the default instead.")

row1 = st.columns(4)
owner = row1[0].selectbox(
    "Owner", choices(owners, st.session_state["q_owner"]), key="q_owner", format_func=lambda v: v or "any owner"
)
status = row1[1].selectbox("Status", list(STATUSES), key="q_status", format_func=STATUSES.__getitem__)
rule = row1[2].selectbox(
    "Rule", choices(rules, st.session_state["q_rule"]), key="q_rule", format_func=lambda v: v or "any rule"
)
kind = row1[3].selectbox("Kind", list(KINDS), key="q_kind", format_func=KINDS.__getitem__)
row2 = st.columns(4)
customer = row2[0].text_input("Customer", key="q_customer", placeholder="customer id, e.g. C-1042").strip()
warehouse = row2[1].text_input("Warehouse", key="q_warehouse", placeholder="e.g. DAL").strip()
age = row2[2].selectbox(
    "Age",
    [*AGES, *([] if st.session_state["q_age"] in AGES else [st.session_state["q_age"]])],
    key="q_age",
    format_func=age_label,
)
sort = row2[3].selectbox("Sort", list(SORTS), key="q_sort", format_func=SORTS.__getitem__)

filters: dict[str, Any] = {
    "owner": owner,
    "status": status,
    "rule": rule,
    "kind": kind,
    "customer": customer,
    "warehouse": warehouse,
    "min_age_hours": age,
    "sort": sort,
}
# New filters start again on the first page.
if filters != st.session_state.get("q_filters"):
    if "q_filters" in st.session_state:
        st.session_state["q_page"] = 1
    st.session_state["q_filters"] = filters

page_number = int(st.session_state["q_page"])
found = ui.fetch(api.exceptions, filters, limit=page_size, offset=(page_number - 1) * page_size)
if found is None:
    st.stop()
total: int = found["total"]
pages = max(1, math.ceil(total / page_size))
if page_number > pages:
    st.session_state["q_page"] = page_number = pages
    found = ui.fetch(api.exceptions, filters, limit=page_size, offset=(page_number - 1) * page_size) or found
items: list[dict[str, Any]] = found["items"]

left, right, export = st.columns([1, 2, 1])
left.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, step=1, key="q_page")
first = (page_number - 1) * page_size + 1
right.markdown(f"**{total:,}** exceptions match" + (f"; showing {first:,}–{first + len(items) - 1:,}" if items else ""))
if not total and (customer or warehouse):
    st.caption("Customer and warehouse match exactly, as the systems write them (`DAL`, not `dal`).")
if total:
    rows = min(total, EXPORT_ROWS)
    export.download_button(
        f"Download {rows:,} as CSV",
        data=partial(api.exceptions_csv, dict(filters), rows),  # fetched on the click, not on every rerun
        file_name="exceptions.csv",
        mime="text/csv",
        key="q_export",
        help="Every exception the filters match (up to 100,000), in the chosen order, times in UTC.",
    )

now = identity.get("now")
st.dataframe(
    ui.table(
        [
            {
                **e,
                "opened": ui.when(e["opened_at"]),
                "age": ui.ago(e["opened_at"], now),
                "due": ui.when(e.get("due_at")),
                "customer": (e.get("context") or {}).get("customer_id", ""),
                "warehouse": (e.get("context") or {}).get("warehouse", ""),
            }
            for e in items
        ],
        {
            "opened": "opened",
            "age": "age",
            "rule": "rule",
            "key": "key",
            "status": "status",
            "severity": "severity",
            "owner": "owner",
            "assignee": "assignee",
            "customer": "customer",
            "warehouse": "warehouse",
            "due": "due",
        },
    ),
    hide_index=True,
    width="stretch",
)

# Resolving every match at once (an incident's breaches, a rule switched off): only the active ones, and only with
# a filter that narrows the queue (the API refuses to resolve everything).
narrowed = {name: filters[name] for name in ("owner", "rule", "kind", "customer", "warehouse") if filters[name]}
if identity.get("may_act") and narrowed and status in ("active", "open", "acknowledged") and total:
    with st.expander(f"Resolve all {total:,} matching"):
        bulk_resolution = st.selectbox("Resolution for all", ui.RESOLUTIONS, key="q_bulk_resolution")
        bulk_note = st.text_input("Why (written into each one's audit trail)", key="q_bulk_note").strip()
        if st.button(f"Resolve {total:,}", key="q_bulk_resolve"):
            if not bulk_note:
                st.warning("Say why first: the note goes into every exception's audit trail.")
            else:
                chosen = {**narrowed, "status": status}
                if age:
                    chosen["min_age_hours"] = float(age)
                try:
                    answer = api.resolve_matching(chosen, bulk_resolution, bulk_note)
                except ApiError as exc:
                    st.warning(f"Resolve all: {ui.md(exc.message)}")
                else:
                    ui.flash(f"Resolved {answer['resolved']:,} of {answer['matched']:,} ({bulk_resolution}).")
                    st.rerun()

# The browser keeps the chosen *label*, not the id: a label must not change while the exception is chosen (no
# status in it: an acknowledge would lose the exception, and the next action would go nowhere), and two
# exceptions of one (rule, key) opened in the same minute (one resolved, then opened again) carry the start of
# their id. A label the page showed before and no longer shows is mapped back to its exception all the same.
labels = {e["id"]: f"{e['rule']} · {e['key']} · opened {ui.when(e['opened_at'])}" for e in items}
repeated = Counter(labels.values())
labels = {ident: f"{text} · {ident[:8]}" if repeated[text] > 1 else text for ident, text in labels.items()}
shown: dict[str, str] = st.session_state.get(LABELS_KEY, {})
if st.session_state["q_exception"] in shown:
    st.session_state["q_exception"] = shown[st.session_state["q_exception"]]
st.session_state[LABELS_KEY] = {**shown, **{text: ident for ident, text in labels.items()}}
wanted = st.session_state["q_exception"]
options = [ANY, *labels, *([wanted] if wanted and wanted not in labels else [])]
PROMPT = "select an exception to see its timeline" + (" and act on it" if identity.get("may_act") else "")
selected = st.selectbox(
    "Exception",
    options,
    key="q_exception",
    format_func=lambda v: labels.get(v, v) if v else PROMPT,
)

# The URL follows the widgets (defaults left out), so the view can be shared.
written = {
    name: str(value)
    for name, value in {
        **filters,
        "status": status if status != "active" else "",
        "sort": sort if sort != "newest" else "",
        "page": page_number if page_number > 1 else "",
        "exception": selected,
    }.items()
    if value
}
if status == ANY:
    written["status"] = ALL  # an explicit "any status" differs from the default (active)
if written != url:
    st.query_params.from_dict(written)
st.session_state[PARAMS_KEY] = written

if selected:
    st.divider()
    ui.exception_panel(api, identity, selected)
