"""Reports: the SLA breach report of a period as CSV or XLSX, downloaded from the tower's reports API.

Finance and admin tokens may download; the files are built by the tower when the button is clicked.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import streamlit as st

from dashboard import ui

CSV = "text/csv"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _day(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"


def report_name(first: date, until: date) -> str:
    """The name the tower gives the report of [first, until) (tower.reports.service: `sla-breaches_2026-11` for a
    calendar month, else both ends, `until` excluded); the dashboard only talks HTTP, so it is written here too."""
    months = (until.year * 12 + until.month) - (first.year * 12 + first.month)
    if first.day == 1 and until.day == 1 and months == 1:
        return f"sla-breaches_{first.year:04d}-{first.month:02d}"
    return f"sla-breaches_{_day(first)}_{_day(until)}"


api, identity = ui.signed_in()
now = ui.parse_time(identity["now"])
assert now is not None
today = now.date()
last_month_end = today.replace(day=1)
last_month_start = (last_month_end - timedelta(days=1)).replace(day=1)
PRESETS = {
    "last month": (last_month_start, last_month_end - timedelta(days=1)),
    "this month": (last_month_end, today),
    "last 7 days": (today - timedelta(days=7), today - timedelta(days=1)),
    "custom": None,
}

st.title("Reports")
st.markdown(
    "The **SLA breach report**: one row per breach (rule, key, customer, warehouse, opened, due, closed, hours "
    "late, owner, resolution) and a summary per rule, customer and month with the estimated chargeback exposure."
)
preset = st.selectbox("Period", list(PRESETS), key="report_preset")
chosen = PRESETS[preset]
if chosen is None:
    picked = st.date_input(
        "From and to (both included)", value=(last_month_start, last_month_end - timedelta(days=1)), key="report_dates"
    )
    if not isinstance(picked, tuple) or len(picked) != 2:
        st.info("Pick the first and the last day of the period.")
        st.stop()
    first, last = picked
else:
    first, last = chosen
if not isinstance(first, date) or not isinstance(last, date) or first > last:
    st.warning("The first day must not be after the last.")
    st.stop()
until = last + timedelta(days=1)
st.caption(f"Breaches whose deadline falls from {first.isoformat()} up to and including {last.isoformat()}.")

# naive: the tower reads the days in the report time zone, as the report's own `from` and `to`
preview = ui.fetch(api.sla_breaches, None, datetime.combine(first, time()), datetime.combine(until, time()))
if preview is not None:
    st.metric(
        "Breaches in the period",
        f"{preview['total']:,}",
        help="The breach rows the report has now: deadlines in the period (days in the report time zone), "
        f"{preview['breached']:,} of them still open.",
    )

if not identity.get("may_report"):
    st.info(f"Your role ({identity.get('role')}) may not download finance reports; finance and admin tokens may.")
    st.stop()

name = report_name(first, until)
left, right = st.columns(2)
left.download_button(
    "Download CSV",
    data=lambda: api.report(first, until, "csv"),
    file_name=f"{name}.csv",
    mime=CSV,
    key="report_csv",
    icon=":material/download:",
    on_click="ignore",
)
right.download_button(
    "Download XLSX",
    data=lambda: api.report(first, until, "xlsx"),
    file_name=f"{name}.xlsx",
    mime=XLSX,
    key="report_xlsx",
    icon=":material/download:",
    on_click="ignore",
)
st.caption("The tower builds the file when you click; a long period can take a few seconds.")
