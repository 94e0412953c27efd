"""SLA: per rule, the compliance trend by day, how late the breaches were, the customers and warehouses with the
most breaches, and (when asked for) compliance per warehouse or customer, worst first."""

from __future__ import annotations

from datetime import timedelta

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import ui

PERIODS = (7, 14, 30, 90)
GROUPS_SHOWN = 50
STATUS_COLORS = {"met": "#2e7d32", "late": "#ef6c00", "breached": "#b71c1c", "pending": "#90a4ae"}

api, identity = ui.signed_in()
now = ui.parse_time(identity["now"])
assert now is not None
facets = ui.fetch(api.facets) or {"rules": []}
sla_rules = [r["id"] for r in facets["rules"] if r["type"] == "sla"]

st.title("SLA")
left, right = st.columns(2)
rule = left.selectbox("Rule", ["", *sla_rules], key="sla_rule", format_func=lambda v: v or "every SLA rule")
days = right.selectbox("Period", PERIODS, index=2, key="sla_days", format_func=lambda d: f"last {d} days")

# Compliance trend ------------------------------------------------------------------------------------------

st.header("Compliance by day")
trend = ui.fetch(api.sla_trend, rule or None, days)
if trend is not None:
    frame = pd.DataFrame(
        trend["days"], columns=["rule", "day", "cases", "met", "late", "breached", "pending", "compliance"]
    )
    if frame.empty:
        st.info("No SLA case started in the period.")
    else:
        frame["date"] = frame["day"]
        frame["day"] = pd.to_datetime(frame["day"]).dt.tz_localize("UTC")  # UTC days, whatever the browser's zone
        line = (
            alt.Chart(frame.dropna(subset=["compliance"]))
            .mark_line(point=True)
            .encode(
                # ticks on whole days only (UTC: the scale's): over a few days the default 6-hour ticks repeat labels
                x=alt.X(
                    "day:T",
                    title=None,
                    scale=alt.Scale(type="utc"),
                    axis=alt.Axis(format="%d %b", tickCount={"interval": "day", "step": 1}, labelOverlap=True),
                ),
                y=alt.Y("compliance:Q", title="met on time", axis=alt.Axis(format="%"), scale=alt.Scale(zero=False)),
                color=alt.Color("rule:N"),
                tooltip=[
                    "rule:N",
                    "date:N",
                    alt.Tooltip("compliance:Q", format=".1%"),
                    "cases:Q",
                ],
            )
            .properties(height=260)
        )
        st.altair_chart(line, width="stretch")
        statuses = frame.melt(
            id_vars=["rule", "date"], value_vars=list(STATUS_COLORS), var_name="status", value_name="count"
        )
        bars = (
            alt.Chart(statuses)
            .mark_bar()
            .encode(
                x=alt.X("date:O", title=None),
                y=alt.Y("sum(count):Q", title="cases started"),
                color=alt.Color(
                    "status:N", scale=alt.Scale(domain=list(STATUS_COLORS), range=list(STATUS_COLORS.values()))
                ),
                tooltip=["status:N", alt.Tooltip("sum(count):Q", title="cases")],
            )
            .properties(height=220)
        )
        st.altair_chart(bars, width="stretch")

# Breaches ------------------------------------------------------------------------------------------------

st.header("Breaches")
breaches = ui.fetch(api.sla_breaches, rule or None, now - timedelta(days=days), now)
if breaches is not None:
    cols = st.columns(3)
    cols[0].metric("Breaches", f"{breaches['total']:,}", help="Cases whose deadline fell in the period and was missed.")
    cols[1].metric("Late (ended after the deadline)", f"{breaches['late']:,}")
    cols[2].metric("Still open", f"{breaches['breached']:,}")
    if not breaches["total"]:
        st.info("No breach in the period.")
    else:
        buckets = pd.DataFrame(breaches["buckets"])
        chart = (
            alt.Chart(buckets)
            .mark_bar(color="#ef6c00")
            .encode(
                x=alt.X("label:N", title="how late", sort=list(buckets["label"])),
                y=alt.Y("breaches:Q", title="breaches"),
                tooltip=["label:N", "breaches:Q"],
            )
            .properties(height=240)
        )
        st.altair_chart(chart, width="stretch")
        columns = {
            "name": "name",
            "breaches": "breaches",
            "still_open": "still open",
            "avg_hours_late": "avg hours late",
            "max_hours_late": "max hours late",
        }
        left, right = st.columns(2)
        left.subheader("Worst customers")
        left.dataframe(
            ui.table([{**g, "name": g["name"] or "(none)"} for g in breaches["customers"]], columns),
            hide_index=True,
            width="stretch",
        )
        right.subheader("Worst warehouses")
        right.dataframe(
            ui.table([{**g, "name": g["name"] or "(none)"} for g in breaches["warehouses"]], columns),
            hide_index=True,
            width="stretch",
        )

# Compliance by warehouse or customer (read when asked for: one more pass over the cases) ------------------------

st.header("Compliance by warehouse or customer")
by = st.selectbox(
    "Compare", ["", "warehouse", "customer"], key="sla_by", format_func=lambda v: f"by {v}" if v else "choose one"
)
if by:
    grouped = ui.fetch(api.sla_compliance_by, by, rule or None, now - timedelta(days=days), now, GROUPS_SHOWN)
    if grouped is not None:
        rows = grouped["groups"]  # the worst first: the lowest share of decided cases met, then the most breaches
        if not rows:
            st.info("No SLA case started in the period.")
        else:
            st.dataframe(
                ui.table(
                    [{**r, "group": r["group"] or "(none)", "met on time": ui.percent(r["compliance"])} for r in rows],
                    {
                        "rule": "rule",
                        "group": by,
                        "cases": "cases started",
                        "met on time": "met on time",
                        "met": "met",
                        "late": "late",
                        "breached": "breached",
                        "pending": "pending",
                    },
                ),
                hide_index=True,
                width="stretch",
            )
            if len(rows) == GROUPS_SHOWN:
                st.caption(f"The {GROUPS_SHOWN} worst (rule, {by}) pairs.")
