"""Overview: active exceptions by owner and severity, SLA compliance today / 7 / 30 days, at-risk cases,
integration health per source, and what changed since the last visit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import ui
from dashboard.client import settings
from dashboard.visits import LastVisits

SINCE_KEY = "overview_since"
SINCE_CHOICES = {"your last visit": None, "the last hour": 1, "the last 24 hours": 24, "the last 7 days": 24 * 7}

api, identity = ui.signed_in()
now = ui.parse_time(identity["now"])
assert now is not None

# The last visit is read (and the new one recorded) once per session: reruns keep showing the same changes.
if SINCE_KEY not in st.session_state:
    visits = LastVisits(settings().state_dir)
    st.session_state[SINCE_KEY] = visits.previous(identity["token_id"]) or now - timedelta(hours=24)
    visits.record(identity["token_id"], now)

st.title("Overview")
choice = st.selectbox("Changes since", list(SINCE_CHOICES), key="overview_since_choice")
hours = SINCE_CHOICES[choice]
since = st.session_state[SINCE_KEY] if hours is None else now - timedelta(hours=hours)
data = ui.fetch(api.overview, since=since)
if data is None:
    st.stop()
changes = data["changes"]

cols = st.columns(5)
cols[0].metric("Active exceptions", f"{data['active']:,}")
cols[1].metric("Open", f"{data['open']:,}")
cols[2].metric("Acknowledged", f"{data['acknowledged']:,}")
cols[3].metric("At risk", f"{data['at_risk']:,}", help="Pending SLA cases inside their warning window.")
cols[4].metric("Changes", f"{sum(changes['counts'].values()):,}", help=f"Since {ui.when(changes['since'])}.")
st.caption(f"As of {ui.when(data['now'])} (the tower's clock). Times are UTC.")
unevaluated: list[dict[str, Any]] = data.get("unevaluated") or []
if unevaluated:
    listed = ", ".join(f"{r['rule']} ({r['active']:,})" for r in unevaluated)
    st.warning(
        f"{sum(r['active'] for r in unevaluated):,} active exceptions belong to rules nothing evaluates any more"
        f" (switched off, renamed or removed): {listed}. They will not resolve by themselves: enable the rule"
        " again, or resolve them from the exception queue (Resolve all, with the rule chosen)."
    )
    for r in unevaluated:
        st.page_link("views/queue.py", label=f"{r['rule']} in the queue", query_params={"rule": r["rule"]})
idle: list[dict[str, Any]] = data.get("idle") or []
if idle:
    listed = "; ".join(
        f"{r['rule']} ({', '.join(r['start_types'])}, the last at {ui.when(r['last_start_event'])})" for r in idle
    )
    st.warning(
        f"No case in 7 days although events of their start types arrive: {listed}. Their `sources` or `where`"
        " filters may match no event: `tower rules test RULE_FILE` shows what each side of a rule matches."
    )

# Exceptions by owner and severity ------------------------------------------------------------------------

st.header("Active exceptions by owner")
by_owner = pd.DataFrame(data["by_owner"], columns=["owner", "severity", "open", "acknowledged"])
if by_owner.empty:
    st.info("No open or acknowledged exception.")
else:
    by_owner["active"] = by_owner["open"] + by_owner["acknowledged"]
    chart = (
        alt.Chart(by_owner)
        .mark_bar()
        .encode(
            x=alt.X("owner:N", title=None, sort="-y"),
            y=alt.Y("sum(active):Q", title="active exceptions"),
            color=alt.Color(
                "severity:N", scale=alt.Scale(domain=list(ui.SEVERITY_ORDER), range=list(ui.SEVERITY_COLORS))
            ),
            order=alt.Order("severity_rank:Q"),
            tooltip=["owner:N", "severity:N", "open:Q", "acknowledged:Q"],
        )
        .transform_calculate(severity_rank=f"indexof({list(ui.SEVERITY_ORDER)!r}, datum.severity)")
        .properties(height=280)
    )
    left, right = st.columns([3, 2])
    left.altair_chart(chart, width="stretch")
    with right:
        pivot = by_owner.pivot_table(index="owner", columns="severity", values="active", aggfunc="sum", fill_value=0)
        pivot = pivot[[s for s in ui.SEVERITY_ORDER if s in pivot.columns]]
        st.dataframe(pivot, width="stretch")
        for owner, count in by_owner.groupby("owner")["active"].sum().sort_values(ascending=False).items():
            st.page_link(
                "views/queue.py",
                label=f"{owner}: {count:,} active",
                query_params={"owner": str(owner), "status": "active"},
            )

# SLA compliance -------------------------------------------------------------------------------------------

st.header("SLA compliance")
windows = {"today": "today", "last_7_days": "7 days", "last_30_days": "30 days"}
WINDOW_COLORS = ("#0d47a1", "#1e88e5", "#90caf9")
compliance = pd.DataFrame(
    [
        {
            "rule": rule["rule"],
            "window": label,
            "compliance": rule[name]["compliance"],
            "cases": rule[name]["cases"],
            "late": rule[name]["late"],
            "breached": rule[name]["breached"],
        }
        for rule in data["compliance"]
        for name, label in windows.items()
    ],
    columns=["rule", "window", "compliance", "cases", "late", "breached"],
)
if compliance.empty:
    st.info("No SLA rule runs in this tower.")
else:
    bars = (
        alt.Chart(compliance.dropna(subset=["compliance"]))
        .mark_bar()
        .encode(
            x=alt.X("rule:N", title=None),
            xOffset=alt.XOffset("window:N", sort=list(windows.values())),
            y=alt.Y("compliance:Q", title="met on time", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            # one hue, darkest for the nearest window: red and green mean bad and good on this page
            color=alt.Color(
                "window:N",
                sort=list(windows.values()),
                scale=alt.Scale(domain=list(windows.values()), range=list(WINDOW_COLORS)),
            ),
            tooltip=[
                "rule:N",
                "window:N",
                alt.Tooltip("compliance:Q", format=".1%"),
                "cases:Q",
                "late:Q",
                "breached:Q",
            ],
        )
        .properties(height=280)
    )
    left, right = st.columns([3, 2])
    left.altair_chart(bars, width="stretch")
    right.dataframe(
        pd.DataFrame(
            [
                {
                    "rule": rule["rule"],
                    **{label: ui.percent(rule[name]["compliance"]) for name, label in windows.items()},
                    "cases (30 days)": rule["last_30_days"]["cases"],
                    "at risk": rule["at_risk"],
                }
                for rule in data["compliance"]
            ]
        ),
        hide_index=True,
        width="stretch",
    )

# At-risk cases --------------------------------------------------------------------------------------------

st.header("At risk")
if not data["at_risk_cases"]:
    st.info("No pending case is inside its warning window.")
else:
    st.dataframe(
        ui.table(
            [
                {**case, "due": ui.when(case["due_at"]), "due in": ui.ago(case["due_at"], data["now"])}
                for case in data["at_risk_cases"]
            ],
            {
                "rule": "rule",
                "key": "key",
                "due": "due",
                "due in": "due in",
                "customer_id": "customer",
                "warehouse": "warehouse",
            },
        ),
        hide_index=True,
        width="stretch",
    )
    if data["at_risk"] > len(data["at_risk_cases"]):
        st.caption(f"The {len(data['at_risk_cases'])} due soonest of {data['at_risk']:,}.")

# Integration health ---------------------------------------------------------------------------------------

st.header("Integration health")
health = ui.fetch(api.sources_health)
if health is not None:
    rows = health["sources"]
    if not rows:
        st.info("No source has sent spans or events in the last 7 days.")
    else:
        st.dataframe(
            ui.table(
                [
                    {
                        **row,
                        "state": ui.source_state(row),
                        "error rate": ui.percent(row["error_rate"]) if row["spans"] else "—",
                        "p95 latency": "—" if row["latency_p95_ms"] is None else f"{row['latency_p95_ms']:,.0f}",
                        "last seen": ui.ago(row["last_seen"], health["until"]),
                        "arrival lag": ui.seconds_text(row.get("arrival_lag_p95_seconds")),
                    }
                    for row in rows
                ],
                {
                    "source": "source",
                    "state": "state",
                    "spans_per_minute": "spans / min",
                    "error rate": "error rate",
                    "p95 latency": "p95 latency (ms)",
                    "events_per_minute": "events / min",
                    "arrival lag": "event arrival lag (p95)",
                    "last seen": "last seen",
                    "open_technical": "technical exceptions",
                    "refused": "refused",
                },
            ),
            hide_index=True,
            width="stretch",
            # wide enough for "technical exception open": the default width cut it to "technic"
            column_config={"state": st.column_config.TextColumn("state", width="medium")},
        )
        st.caption(
            f"Rates over the last {health['window_minutes']:g} minutes of business time; refused: records claiming "
            "the source that the doors refused in the same minutes (dead letters); event arrival lag: how long after"
            " their business time the events received in those minutes arrived (a batch interface, a backed-up"
            ' queue or a clock in the wrong zone shows here; "ahead": the events are dated after they arrived).'
        )

# What changed ---------------------------------------------------------------------------------------------

st.header(f"What changed since {ui.when(changes['since'])}")
if not changes["counts"]:
    st.info("Nothing changed.")
else:
    st.markdown(" · ".join(f"**{n:,}** {action}" for action, n in sorted(changes["counts"].items())))
    st.dataframe(
        ui.table(
            [{**c, "at": ui.when(c["at"])} for c in changes["latest"]],
            {
                "at": "when",
                "action": "change",
                "rule": "rule",
                "key": "key",
                "owner": "owner",
                "actor": "by",
                "status": "status now",
            },
        ),
        hide_index=True,
        width="stretch",
    )
    counted = sum(changes["counts"].values())
    if counted > len(changes["latest"]):  # the API lists the latest few (50) of the changes it counts
        st.caption(f"The latest {len(changes['latest']):,} of {counted:,}.")
