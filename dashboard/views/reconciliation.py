"""Reconciliation: the latest reconciliation runs, and the open findings with each system's values side by side.

Runs and findings come from the reconcilers' routes; a tower without them shows an empty state for the runs
and, for the findings, the active exceptions of each reconciliation rule with what the rule recorded.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import ui
from dashboard.client import ApiError

LIMIT = 200
RUN_COLUMNS = {
    "started_at": "started",
    "rule": "rule",
    "compare": "compares",
    "trigger": "trigger",
    "status": "status",
    "rows_compared": "compared",
    "findings": "findings",
    "opened": "opened",
    "resolved": "resolved",
    "reopened": "reopened",
    "duration_ms": "ms",
    "error": "error",
}

api, identity = ui.signed_in()
facets = ui.fetch(api.facets) or {"rules": []}
rules = [r["id"] for r in facets["rules"] if r["type"] == "reconciliation"]

st.title("Reconciliation")

st.header("Latest runs")
try:
    runs = api.reconcile_runs()
except ApiError as exc:
    st.warning(exc.message)
    runs = []
if runs is None:
    st.info("This tower runs no reconcilers (no run history).")
elif not runs:
    st.info("No reconciliation has run yet.")
else:
    st.dataframe(ui.known_columns(runs, RUN_COLUMNS), hide_index=True, width="stretch")

st.header("Open findings")
if not rules:
    st.info("No reconciliation rule is configured.")
    st.stop()
rule = st.selectbox("Rule", rules, key="recon_rule")
try:
    findings = api.reconcile_findings(rule, limit=LIMIT)
except ApiError as exc:
    st.warning(exc.message)
    findings = []
if findings is not None:
    if findings:
        st.dataframe(ui.side_by_side(findings), hide_index=True, width="stretch")
        if len(findings) == LIMIT:
            st.caption(f"The {LIMIT} newest; the queue pages through all of them.")
    else:
        st.info(f"No open finding for {rule}.")
else:
    # No reconcilers' routes: what each active exception of the rule recorded, spread out side by side.
    page = ui.fetch(api.exceptions, {"rule": rule, "status": "active", "sort": "newest"}, limit=LIMIT)
    if page is not None and page["items"]:
        rows: list[dict[str, Any]] = [
            {
                "key": e["key"],
                "status": e["status"],
                "owner": e["owner"],
                "opened": ui.when(e["opened_at"]),
                **(e.get("context") or {}),
            }
            for e in page["items"]
        ]
        st.dataframe(ui.flat(rows), hide_index=True, width="stretch")
    elif page is not None:
        st.info(f"No active exception of {rule}.")
st.page_link("views/queue.py", label=f"Open {rule} in the queue", query_params={"rule": rule})
