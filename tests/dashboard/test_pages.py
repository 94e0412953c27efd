"""Every dashboard page, run with Streamlit's AppTest against a tower holding the demo story: the widgets
render what the API answers, filters change the rows, actions change the exception in the API, and a
token's role decides what the page offers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import pandas as pd
import pytest
import streamlit as st
from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx
from streamlit.testing.v1 import AppTest

from alerting.outbox import OutboundMessage, Outbox
from kernel.api_auth import token_id
from kernel.clock import FixedClock
from kernel.exceptions import ExceptionStore, NewException
from tests.dashboard.conftest import DemoTower, no_errors, open_page
from tests.factories import make_event

Dashboard = Callable[..., AppTest]


def api_get(demo: DemoTower, path: str, role: str = "admin", **params: Any) -> Any:
    with demo.api(role) as http:
        response = http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def frame(at: AppTest, index: int = 0) -> pd.DataFrame:
    value: pd.DataFrame = at.dataframe[index].value
    return value


def labels(elements: Any) -> list[str]:
    return [e.label for e in elements]


def selectbox(at: AppTest, label: str) -> Any:
    return next(s for s in at.selectbox if s.label == label)


def text_input(at: AppTest, label: str) -> Any:
    return next(t for t in at.text_input if t.label == label)


def button(at: AppTest, label: str) -> Any:
    return next(b for b in at.button if b.label == label)


def open_refusals(demo: DemoTower, key: str, refused: int, reason: str) -> Any:
    """An open `ingest-refusals` exception under `key` (a source, or `token <id>`)."""
    assert demo.running.tower is not None
    [record] = ExceptionStore(demo.running.tower.store, FixedClock(demo.now)).open_many(
        [
            NewException(
                rule="ingest-refusals",
                key=key,
                kind="technical",
                owner="integration",
                severity="high",
                context={"refused": refused, "window": "15m", "reasons": [reason]},
            )
        ]
    )
    return record


def exception_table(at: AppTest) -> pd.DataFrame:
    """The queue's table (the one with an `opened` column)."""
    return next(d.value for d in at.dataframe if "opened" in d.value.columns)


# Access ---------------------------------------------------------------------------------------------------


def test_without_a_token_nothing_is_shown(dashboard: Dashboard) -> None:
    at = dashboard(role=None)
    at.run()
    no_errors(at)
    assert [t.value for t in at.title] == ["Control tower"]
    assert "no token, no data" in at.info[0].value
    assert not at.dataframe and not at.metric
    # a link into the queue shows nothing either, but keeps its query for after the sign-in
    open_page(at, "views/queue.py", exception="anything")
    assert not at.dataframe and not at.selectbox
    assert at.query_params == {"exception": "anything"}


def test_sign_in_refuses_an_unknown_token_and_accepts_a_known_one(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    at = dashboard(role=None)
    at.run()
    at.sidebar.text_input[0].input("not-a-token")
    at.sidebar.form_submit_button[0].click().run()
    assert "does not accept this token" in at.sidebar.error[0].value
    assert not at.metric
    at.sidebar.text_input[0].input(demo_tower.token("viewer"))
    at.sidebar.form_submit_button[0].click().run()
    no_errors(at)
    assert "Signed in as **viewer**" in at.sidebar.markdown[0].value
    assert [t.value for t in at.title] == ["Overview"]
    next(b for b in at.sidebar.button if b.label == "Sign out").click().run()
    assert not at.metric and "token" not in at.session_state
    assert at.sidebar.text_input[0].label == "API token"


def test_the_environment_token_signs_in(dashboard: Dashboard, demo_tower: DemoTower, monkeypatch: Any) -> None:
    monkeypatch.setenv("TOWER_DASHBOARD_TOKEN", demo_tower.token("operator"))
    at = dashboard(role=None)
    at.run()
    no_errors(at)
    assert "Signed in as **operator**" in at.sidebar.markdown[0].value


def test_nothing_is_drawn_before_the_menu(dashboard: Dashboard, demo_tower: DemoTower, monkeypatch: Any) -> None:
    """The browser learns which page it shows from the menu (`st.navigation`). A sign-in sent from a form drawn before
    the menu, in the first run of a page opened by a link, reran the default page instead of the linked one."""
    drawn_before_menu: list[int] = []
    menu = st.navigation

    def navigation(*args: Any, **kwargs: Any) -> Any:
        ctx = get_script_run_ctx()
        assert ctx is not None
        drawn_before_menu.append(sum(cursor.index for cursor in ctx.cursors.values()))
        return menu(*args, **kwargs)

    monkeypatch.setattr(st, "navigation", navigation)
    signed_out = dashboard(role=None)
    signed_out.run()
    assert signed_out.sidebar.text_input[0].label == "API token"
    monkeypatch.setenv("TOWER_DASHBOARD_TOKEN", "not-a-token")
    refused = dashboard(role=None)
    refused.run()
    assert "TOWER_DASHBOARD_TOKEN" in refused.sidebar.error[0].value
    monkeypatch.delenv("TOWER_DASHBOARD_TOKEN")
    signed_in = dashboard(role="viewer")
    signed_in.run()
    no_errors(signed_in)
    assert "Signed in as **viewer**" in signed_in.sidebar.markdown[0].value
    assert drawn_before_menu == [0, 0, 0]


# Overview -------------------------------------------------------------------------------------------------


def test_overview_shows_what_the_api_answers(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    at = dashboard("viewer")
    at.run()
    no_errors(at)
    overview = api_get(demo_tower, "/api/overview")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Active exceptions"] == str(overview["active"]) and overview["active"] > 0
    assert metrics["Open"] == str(overview["open"])
    assert [h.value for h in at.header][:2] == ["Active exceptions by owner", "SLA compliance"]
    # the owner x severity table and the per-owner links into the queue
    pivot = at.dataframe[0].value
    expected: dict[str, int] = {}
    for row in overview["by_owner"]:
        expected[row["owner"]] = expected.get(row["owner"], 0) + row["open"] + row["acknowledged"]
    assert pivot.sum(axis=1).to_dict() == expected
    links = {parse_qs(link.proto.query_string)["owner"][0]: link.value for link in at.page_link}
    assert set(links) == set(expected)
    # compliance per rule as the API computed it, charts drawn
    compliance = frame(at, 1)
    api_rules = {r["rule"]: r for r in overview["compliance"]}
    assert set(compliance["rule"]) == set(api_rules)
    for _, row in compliance.iterrows():
        value = api_rules[row["rule"]]["last_7_days"]["compliance"]
        assert row["7 days"] == ("—" if value is None else f"{value * 100:.1f} %")
    assert len(at.get("vega_lite_chart")) == 2
    # integration health: one row per source the API lists
    health = api_get(demo_tower, "/api/sources/health")
    table = next(d.value for d in at.dataframe if "spans / min" in d.value.columns)
    assert list(table["source"]) == [s["source"] for s in health["sources"]]
    assert list(table["refused"]) == [s["refused"] for s in health["sources"]]
    assert "technical exception open" in set(table["state"])  # the demo's silent source and error burst


def test_overview_shows_changes_since_the_last_visit(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    def since(at: AppTest) -> str:
        return next(h.value for h in at.header if h.value.startswith("What changed since"))

    now = demo_tower.now
    first = dashboard("viewer")
    first.run()
    # a first visit shows the last 24 hours: the demo's exceptions opened then
    assert since(first) == f"What changed since {(now - timedelta(hours=24)):%Y-%m-%d %H:%M} UTC"
    assert "opened" in next(m.value for m in first.markdown if m.value.startswith("**"))
    # a later visit with the same token (a new session) shows what changed since the first one
    second = dashboard("viewer")
    second.run()
    no_errors(second)
    assert since(second) == f"What changed since {now:%Y-%m-%d %H:%M} UTC"
    selectbox(second, "Changes since").select("the last 7 days").run()
    assert since(second) == f"What changed since {(now - timedelta(days=7)):%Y-%m-%d %H:%M} UTC"


def test_overview_says_when_it_lists_only_the_latest_changes(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    assert demo_tower.running.tower is not None
    exceptions = ExceptionStore(demo_tower.running.tower.store, FixedClock(demo_tower.now))
    opened = exceptions.open_many(  # 120 changes now (60 opened, 60 resolved): more than the API lists
        [NewException("changes-test", f"CH-{i:02d}", "business", "warehouse", "low") for i in range(60)]
    )
    exceptions.resolve_many(opened, "recovered", {}, actor="engine")
    at = dashboard("viewer")
    at.run()
    no_errors(at)
    changes = api_get(demo_tower, "/api/overview", since=demo_tower.now.isoformat())["changes"]
    counted, listed = sum(changes["counts"].values()), len(changes["latest"])
    assert counted >= 120 > listed > 0
    shown = next(d.value for d in at.dataframe if "status now" in d.value.columns)
    assert len(shown) == listed
    assert f"The latest {listed:,} of " in [c.value for c in at.caption if c.value.startswith("The latest")][0]


# Queue ----------------------------------------------------------------------------------------------------


def test_queue_lists_the_active_exceptions_and_filters_change_the_rows(
    dashboard: Dashboard, demo_tower: DemoTower
) -> None:
    at = open_page(dashboard("viewer"), "views/queue.py")
    no_errors(at)
    active = api_get(demo_tower, "/api/exceptions", limit=50, status="active")
    rows = exception_table(at)
    assert list(rows["key"]) == [e["key"] for e in active["items"]]
    assert f"**{active['total']}** exceptions match" in at.markdown[0].value

    selectbox(at, "Owner").select("integration").run()
    no_errors(at)
    technical = api_get(demo_tower, "/api/exceptions", limit=50, status="active", owner="integration")
    assert 0 < technical["total"] < active["total"]
    assert list(exception_table(at)["key"]) == [e["key"] for e in technical["items"]]
    assert at.query_params["owner"] == "integration"  # the URL follows the filters
    [download] = at.get("download_button")  # the CSV of what the filters match, fetched on the click
    assert download.proto.label == f"Download {technical['total']} as CSV"

    selectbox(at, "Owner").select("").run()
    selectbox(at, "Kind").select("business").run()
    business = api_get(demo_tower, "/api/exceptions", limit=50, status="active", kind="business")
    assert list(exception_table(at)["key"]) == [e["key"] for e in business["items"]]

    rule = business["items"][0]["rule"]
    selectbox(at, "Rule").select(rule).run()
    assert set(exception_table(at)["rule"]) == {rule}

    warehouse = next(e["context"]["warehouse"] for e in business["items"] if e["context"].get("warehouse"))
    selectbox(at, "Rule").select("").run()
    text_input(at, "Warehouse").input(warehouse).run()
    by_warehouse = api_get(
        demo_tower, "/api/exceptions", limit=50, status="active", kind="business", warehouse=warehouse
    )
    assert list(exception_table(at)["warehouse"]) == [warehouse] * by_warehouse["total"]
    text_input(at, "Warehouse").input(warehouse.lower()).run()  # codes match exactly: say so when nothing does
    assert any("match exactly" in c.value for c in at.caption)

    text_input(at, "Warehouse").input("").run()
    customer = next(e["context"]["customer_id"] for e in business["items"] if e["context"].get("customer_id"))
    text_input(at, "Customer").input(customer).run()
    assert set(exception_table(at)["customer"]) == {customer}

    text_input(at, "Customer").input("").run()
    selectbox(at, "Age").select("168").run()  # older than 7 days: the demo's are younger
    assert exception_table(at).empty
    assert "**0** exceptions match" in at.markdown[0].value

    selectbox(at, "Age").select("").run()
    selectbox(at, "Sort").select("oldest").run()
    oldest = api_get(demo_tower, "/api/exceptions", limit=50, status="active", kind="business", sort="oldest")
    assert list(exception_table(at)["key"]) == [e["key"] for e in oldest["items"]]


def test_queue_pages_on_the_server(dashboard: Dashboard, demo_tower: DemoTower, monkeypatch: Any) -> None:
    assert demo_tower.running.tower is not None
    ExceptionStore(demo_tower.running.tower.store, FixedClock(demo_tower.now)).open_many(
        [NewException("paging-test", f"PG-{i:02d}", "business", "warehouse", "low") for i in range(25)]
    )
    monkeypatch.setenv("TOWER_DASHBOARD_PAGE_SIZE", "10")
    at = open_page(dashboard("viewer"), "views/queue.py", rule="paging-test")
    no_errors(at)
    assert selectbox(at, "Rule").value == "paging-test"  # from the URL, though no rule file names it
    assert len(exception_table(at)) == 10 and "of 3" in at.number_input[0].label
    at.number_input[0].set_value(3).run()
    page3 = api_get(demo_tower, "/api/exceptions", status="active", rule="paging-test", limit=10, offset=20)
    assert list(exception_table(at)["key"]) == [e["key"] for e in page3["items"]] and len(page3["items"]) == 5
    assert at.query_params["page"] == "3"
    # a new filter starts again on page 1
    selectbox(at, "Sort").select("oldest").run()
    assert at.number_input[0].value == 1 and len(exception_table(at)) == 10


def test_a_link_asks_for_every_status_with_all(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    every = api_get(demo_tower, "/api/exceptions", limit=50, status="all")
    assert every["total"] > api_get(demo_tower, "/api/exceptions", limit=50, status="active")["total"]
    for asked in ("all", ""):  # as the API takes them
        at = open_page(dashboard("viewer"), "views/queue.py", status=asked)
        no_errors(at)
        assert not at.warning
        assert selectbox(at, "Status").value == "" and f"**{every['total']}** exceptions match" in at.markdown[0].value
        assert at.query_params["status"] == "all"  # kept in (written to) the URL: the link can be shared
    # choosing "any status" writes `all` too; the default (active) leaves the URL
    selectbox(at, "Status").select("active").run()
    assert "status" not in at.query_params
    selectbox(at, "Status").select("").run()
    assert at.query_params["status"] == "all"
    assert list(exception_table(at)["key"]) == [e["key"] for e in every["items"]]


def test_a_link_asks_for_another_age_than_the_menus(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    now = demo_tower.now
    assert demo_tower.running.tower is not None
    ExceptionStore(demo_tower.running.tower.store, FixedClock(now - timedelta(hours=3))).open_many(
        [NewException("age-test", "AG-3H", "business", "warehouse", "low")]
    )
    ExceptionStore(demo_tower.running.tower.store, FixedClock(now - timedelta(minutes=90))).open_many(
        [NewException("age-test", "AG-90MIN", "business", "warehouse", "low")]
    )
    at = open_page(dashboard("viewer"), "views/queue.py", rule="age-test", min_age_hours="2")
    no_errors(at)
    assert not at.warning
    age = selectbox(at, "Age")
    assert age.value == "2" and "older than 2 h" in age.options  # offered beside the menu's ages
    assert list(exception_table(at)["key"]) == ["AG-3H"]
    assert at.query_params["min_age_hours"] == "2"
    age.select("1").run()
    assert sorted(exception_table(at)["key"]) == ["AG-3H", "AG-90MIN"]
    # what the API would refuse is named, not dropped silently
    for asked in ("abc", "-2"):
        wrong = open_page(dashboard("viewer"), "views/queue.py", rule="age-test", min_age_hours=asked)
        no_errors(wrong)
        [warning] = [w.value for w in wrong.warning]
        assert f"`min_age_hours={asked}` is not a number of hours" in warning
        assert selectbox(wrong, "Age").value == "" and "min_age_hours" not in wrong.query_params
    # a link's value cannot end its code span early and be markdown (a link in the warning)
    forged = open_page(dashboard("viewer"), "views/queue.py", kind="x`[pay](https://evil.example)`")
    assert "`kind=x'[pay](https://evil.example)'` is not one of" in forged.warning[0].value
    bogus = open_page(dashboard("viewer"), "views/queue.py", status="bogus")
    assert "`status=bogus` is not one of `active`, `open`, `acknowledged`, `resolved`, `all`" in bogus.warning[0].value


def test_two_exceptions_of_one_key_opened_in_one_minute_are_told_apart(
    dashboard: Dashboard, demo_tower: DemoTower
) -> None:
    assert demo_tower.running.tower is not None
    exceptions = ExceptionStore(demo_tower.running.tower.store, FixedClock(demo_tower.now))
    flapped = []
    for _ in range(2):  # opened and resolved twice within the same minute
        [record] = exceptions.open_many([NewException("flap-test", "FL-1", "technical", "integration", "low")])
        exceptions.resolve_many([record], "recovered", {}, actor="engine")
        flapped.append(record.id)
    at = open_page(dashboard("viewer"), "views/queue.py", rule="flap-test", status="resolved")
    no_errors(at)
    options = [o for o in selectbox(at, "Exception").options if o.startswith("flap-test · FL-1")]
    assert len(options) == 2 and len(set(options)) == 2
    assert {o.rsplit(" · ", 1)[1] for o in options} == {ident[:8] for ident in flapped}
    selectbox(at, "Exception").select(flapped[1]).run()
    assert selectbox(at, "Exception").value == flapped[1]


def test_a_key_a_sender_chose_shows_as_written_not_as_markdown(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    """An exception's key comes from the events (a sender's order_id), its assignee from a person: in the page's
    markdown a key `SO-[pay here](https://evil.example)` was a link, `![x](https://tracker.example/p.png)` an image
    the operator's browser loaded, `:red[...]` a colour, `$...$` LaTeX, and a bare URL a link."""
    assert demo_tower.running.tower is not None
    exceptions = ExceptionStore(demo_tower.running.tower.store, FixedClock(demo_tower.now))
    key = "SO-[pay here](https://evil.example) ![x](https://tracker.example/p.png) :red[$x$] www.evil.example"
    [record] = exceptions.open_many([NewException("flap-test", key, "technical", "integration", "low")])
    exceptions.assign(record.id, "ann **boss** <b>", actor="test")
    at = open_page(dashboard("viewer"), "views/queue.py", exception=record.id)
    no_errors(at)
    escaped = (
        r"SO-\[pay here\]\(https\://evil\.example\) \!\[x\]\(https\://tracker\.example/p\.png\) "
        r"\:red\[\$x\$\] www\.evil\.example"
    )
    assert [s.value for s in at.subheader][0] == f"flap-test · {escaped}"
    assert r"**Assignee** ann \*\*boss\*\* \<b\>" in next(m.value for m in at.markdown if "**Assignee**" in m.value)
    assert f"Everything about {escaped}" in [link.label for link in at.page_link]


def test_a_link_opens_one_exception_with_its_timeline_audit_and_evidence(
    dashboard: Dashboard, demo_tower: DemoTower
) -> None:
    target = api_get(demo_tower, "/api/exceptions", rule="order-release")["items"][0]
    at = open_page(dashboard("viewer"), "views/queue.py", exception=target["id"])
    no_errors(at)
    assert selectbox(at, "Exception").value == target["id"]
    assert [s.value for s in at.subheader][0] == f"order-release · {target['key']}"
    detail = api_get(demo_tower, f"/api/exceptions/{target['id']}")
    timeline = next(d.value for d in at.dataframe if "ids" in d.value.columns)
    assert list(timeline["name"]) == [e["name"] for e in detail["timeline"]]
    assert {"event", "audit"} <= set(timeline["what"])
    audit = next(d.value for d in at.dataframe if "change" in d.value.columns and "by" in d.value.columns)
    assert list(audit["change"]) == ["opened"]
    evidence = next(d.value for d in at.dataframe if list(d.value.columns) == ["field", "value"])
    assert set(evidence["field"]) == set(target["context"])
    # Slack delivery: the log when the tower has alerting, an empty state otherwise (never an error)
    assert [t.label for t in at.tabs] == ["Timeline", "Audit trail", "Slack delivery", "Evidence", "Actions"]
    assert any(link.value.startswith("Everything about") for link in at.page_link)


def test_the_panel_shows_the_slack_delivery_log(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    target = api_get(demo_tower, "/api/exceptions", rule="ship-cutoff")["items"][0]
    assert demo_tower.running.tower is not None
    attempt = {
        "at": demo_tower.now,
        "key": f"exception:{target['id']}",
        "exception_id": target["id"],
        "channel": "#ops-warehouse",
        "channel_id": "C0WAREHOUSE",
        "action": "post",
        "mode": "bot",
        "ts": "",
        "duration_ms": 12.5,
    }
    demo_tower.running.tower.store.insert(
        "alert_deliveries",
        [
            attempt
            | {"seq": 1, "status": "retry", "attempt": 1, "http_status": 429, "error": "ratelimited", "note": ""},
            attempt
            | {"seq": 2, "status": "ok", "attempt": 2, "http_status": 200, "error": "", "note": "", "ts": "1.2"},
        ],
    )
    at = open_page(dashboard("viewer"), "views/queue.py", exception=target["id"])
    no_errors(at)
    log = next(d.value for d in at.dataframe if "HTTP" in d.value.columns)
    assert list(log["status"]) == ["ok", "retry"] and list(log["HTTP"]) == [200, 429]
    assert set(log["channel"]) == {"#ops-warehouse"}


def test_an_acknowledge_from_the_page_changes_the_exception(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    target = api_get(demo_tower, "/api/exceptions", rule="asn-sent", status="open")["items"][0]
    at = open_page(dashboard("operator"), "views/queue.py", exception=target["id"])
    no_errors(at)
    button(at, "Acknowledge").click().run()
    no_errors(at)
    assert [s.value for s in at.success] == ["Acknowledged."]
    after = api_get(demo_tower, f"/api/exceptions/{target['id']}")
    assert after["status"] == "acknowledged"
    operator = api_get(demo_tower, "/api/whoami", role="operator")["token_id"]
    assert [(e["name"], e["actor"]) for e in after["timeline"] if e["kind"] == "audit"][-1] == (
        "acknowledged",
        operator,
    )
    assert any(m.value.startswith("**Status** :orange-badge[acknowledged]") for m in at.markdown)
    assert "Acknowledge" not in labels(at.button)  # an acknowledged exception cannot be acknowledged again

    text_input(at, "Assign to").input("ann").run()
    button(at, "Assign").click().run()
    assert api_get(demo_tower, f"/api/exceptions/{target['id']}")["assignee"] == "ann"

    next(t for t in at.text_area if t.label == "Note").input("carrier called, ASN tomorrow").run()
    button(at, "Add note").click().run()
    notes = [e for e in api_get(demo_tower, f"/api/exceptions/{target['id']}")["timeline"] if e["name"] == "note"]
    assert notes[-1]["detail"] == {"text": "carrier called, ASN tomorrow"}

    selectbox(at, "Resolution").select("false_positive").run()
    text_input(at, "Resolution note").input("the ASN was sent by fax").run()
    button(at, "Resolve").click().run()
    no_errors(at)
    resolved = api_get(demo_tower, f"/api/exceptions/{target['id']}")
    assert (resolved["status"], resolved["resolution"]) == ("resolved", "false_positive")
    assert resolved["resolution_detail"]["note"] == "the ASN was sent by fax"
    assert not {"Acknowledge", "Assign", "Resolve"} & set(labels(at.button))


def test_a_viewer_sees_no_action(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    target = api_get(demo_tower, "/api/exceptions", status="open")["items"][0]
    for role in ("viewer", "finance"):
        at = open_page(dashboard(role), "views/queue.py", exception=target["id"])
        no_errors(at)
        assert not {"Acknowledge", "Assign", "Resolve", "Add note"} & set(labels(at.button)), role
        assert not at.text_area
        assert any(f"Your role ({role}) may read exceptions but not act" in c.value for c in at.caption)
    # and the API refuses the viewer anyway
    with demo_tower.api("viewer") as http:
        assert http.post(f"/api/exceptions/{target['id']}/acknowledge").status_code == 403
    assert api_get(demo_tower, f"/api/exceptions/{target['id']}")["status"] == "open"


# Timeline -------------------------------------------------------------------------------------------------


def test_timeline_page_shows_a_keys_events_spans_and_exceptions(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    target = api_get(demo_tower, "/api/exceptions", rule="order-release")["items"][0]
    at = open_page(dashboard("viewer"), "views/timeline.py", key=target["key"])
    no_errors(at)
    assert text_input(at, "Business key").value == target["key"]
    timeline = api_get(demo_tower, f"/api/timeline/{target['key']}")
    table = frame(at)
    assert list(table["name"]) == [e["name"] for e in timeline["timeline"]]
    assert {"event", "span"} <= set(table["what"])  # the demo links spans to orders
    assert any(parse_qs(link.proto.query_string) == {"exception": [target["id"]]} for link in at.page_link)
    assert len(at.get("vega_lite_chart")) == 1

    text_input(at, "Business key").input("NO-SUCH-KEY").run()
    no_errors(at)
    assert at.query_params["key"] == "NO-SUCH-KEY"
    assert "No event, span or change is known for this key." in [i.value for i in at.info]


# SLA ------------------------------------------------------------------------------------------------------


def test_sla_page_shows_trend_and_breaches_per_rule(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    at = open_page(dashboard("viewer"), "views/sla.py")
    no_errors(at)
    now = demo_tower.now
    params = {"from": (now.replace(microsecond=0) - pd.Timedelta(days=30)).isoformat(), "to": now.isoformat()}
    every = api_get(demo_tower, "/api/sla/breaches", **params)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Breaches"] == str(every["total"]) and every["total"] > 0
    customers = next(d.value for d in at.dataframe if "still open" in d.value.columns)
    assert list(customers["breaches"]) == [c["breaches"] for c in every["customers"]]
    assert len(at.get("vega_lite_chart")) == 3  # compliance by day, cases by day, how late

    selectbox(at, "Rule").select("order-release").run()
    no_errors(at)
    one = api_get(demo_tower, "/api/sla/breaches", rule="order-release", **params)
    assert {m.label: m.value for m in at.metric}["Breaches"] == str(one["total"])
    assert one["total"] < every["total"]

    selectbox(at, "Compare").select("warehouse").run()  # per rule and warehouse, worst first
    no_errors(at)
    grouped = next(d.value for d in at.dataframe if "met on time" in d.value.columns)
    by_api = api_get(demo_tower, "/api/sla/compliance", by="warehouse", rule="order-release", sort="worst", **params)
    assert list(grouped["warehouse"]) == [r["group"] or "(none)" for r in by_api["groups"]]
    assert set(grouped["rule"]) == {"order-release"} and len(grouped) > 1
    shares = [float(v.rstrip(" %")) for v in grouped["met on time"] if v != "—"]
    assert shares == sorted(shares)


# Reconciliation -------------------------------------------------------------------------------------------


def test_reconciliation_page_shows_findings_side_by_side(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    assert demo_tower.running.tower is not None
    ExceptionStore(demo_tower.running.tower.store, FixedClock(demo_tower.now)).open_many(
        [
            NewException(
                "invoice-match",
                "IN-TEST-1",
                "business",
                "finance",
                "medium",
                context={"check": "amount", "invoice": {"amount": 130.0}, "order": {"amount": 120.5}},
            )
        ]
    )
    at = open_page(dashboard("viewer"), "views/reconciliation.py")
    no_errors(at)
    selectbox(at, "Rule").select("invoice-match").run()
    no_errors(at)
    findings = api_get(demo_tower, "/api/reconcile/findings", rule="invoice-match")
    shown = next(d.value for d in at.dataframe if "key" in d.value.columns)
    assert list(shown["key"]) == [f["key"] for f in findings["items"]]
    row = shown[shown["key"] == "IN-TEST-1"].iloc[0]
    assert (row["invoice · amount"], row["order · amount"]) == (130.0, 120.5)  # the two systems side by side
    assert row["check"] == "amount"
    runs = api_get(demo_tower, "/api/reconcile/runs")["items"]
    if runs:
        assert len(next(d.value for d in at.dataframe if "compared" in d.value.columns)) == len(runs)
    else:
        assert "No reconciliation has run yet." in [i.value for i in at.info]
    # the exception panel shows the same values as its evidence
    target = next(f for f in findings["items"] if f["key"] == "IN-TEST-1")
    panel = open_page(dashboard("viewer"), "views/queue.py", exception=target["id"])
    no_errors(panel)
    evidence = next(d.value for d in panel.dataframe if "invoice · amount" in d.value.columns)
    assert list(evidence["key"]) == ["IN-TEST-1"]


# Reports --------------------------------------------------------------------------------------------------


def test_reports_offer_downloads_to_finance_only(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    for role, may in (("finance", True), ("admin", True), ("viewer", False), ("operator", False)):
        at = open_page(dashboard(role), "views/reports.py")
        no_errors(at)
        assert labels(at.download_button) == (["Download CSV", "Download XLSX"] if may else []), role
        if not may:
            assert any("may not download finance reports" in i.value for i in at.info)
    at = open_page(dashboard("finance"), "views/reports.py")
    selectbox(at, "Period").select("custom").run()
    at.date_input[0].set_value((demo_tower.now.date().replace(day=1), demo_tower.now.date())).run()
    no_errors(at)
    every = api_get(
        demo_tower,
        "/api/sla/breaches",
        **{"from": f"{demo_tower.now.date().replace(day=1)}T00:00:00Z", "to": f"{demo_tower.now.date()}T00:00:00Z"},
    )
    shown = {m.label: m.value for m in at.metric}["Breaches in the period"]
    assert int(shown) >= every["total"] > 0  # the period runs to the end of its last day
    assert labels(at.download_button) == ["Download CSV", "Download XLSX"]


# Dead letters ---------------------------------------------------------------------------------------------


def test_dead_letters_are_for_admins_who_discard_with_a_note_or_replay(
    dashboard: Dashboard, demo_tower: DemoTower
) -> None:
    refused = [f"dl-page-{n}" for n in (1, 2)]
    batch = [
        {"specversion": "1.0", "id": ident, "source": "erp", "type": "order.released", "time": "2026-11-04T12:00:00Z",
         "data": {"order_id": "SO-DL"}}
        for ident in refused
    ]  # fmt: skip
    with demo_tower.running.client("wms") as wms:  # the wms token may not send erp
        answer = wms.post("/v1/events", json=batch, headers={"Content-Type": "application/cloudevents-batch+json"})
    assert answer.status_code == 400

    viewer = open_page(dashboard("viewer"), "views/deadletters.py")  # not in a viewer's menu: a link says why
    no_errors(viewer)
    assert not viewer.dataframe and any("Only an admin token may read dead letters" in i.value for i in viewer.info)

    at = open_page(dashboard("admin"), "views/deadletters.py", source="erp")
    no_errors(at)
    assert text_input(at, "Source").value == "erp"
    shown = frame(at)
    assert set(shown["source"]) == {"erp"} and set(shown["status"]) == {"pending"}
    pending = api_get(demo_tower, "/api/deadletters", source="erp", status="pending")["total"]
    assert pending >= 2 and any(c.value == f"{pending} dead letters." for c in at.caption)
    letters = {d["raw"]: d["id"] for d in api_get(demo_tower, "/api/deadletters", source="erp")["items"]}
    ids = {ident: next(i for raw, i in letters.items() if ident in raw) for ident in refused}
    assert set(ids.values()) <= set(shown["id"])
    chooser = next(m for m in at.multiselect if m.label == "Dead letters")

    # the two records were refused together for the same reason: only their ids tell them apart
    assert len(set(chooser.options)) == len(chooser.options)
    chooser.set_value([ids["dl-page-1"]]).run()
    [raw] = [c.value for c in at.code]
    assert '"id":"dl-page-1"' in raw  # the raw record of the one chosen
    button(at, "Discard 1 pending").click().run()
    assert any("Say why the records are given up on" in w.value for w in at.warning)
    assert api_get(demo_tower, "/api/deadletters", status="discarded", source="erp")["total"] == 0
    text_input(at, "Why discard them").input("sent twice by the test harness").run()
    button(at, "Discard 1 pending").click().run()
    no_errors(at)
    assert [s.value for s in at.success] == ["Discarded 1."]
    [gone] = api_get(demo_tower, "/api/deadletters", status="discarded", source="erp")["items"]
    assert gone["id"] == ids["dl-page-1"] and gone["status_note"].endswith(": sent twice by the test harness")

    next(m for m in at.multiselect if m.label == "Dead letters").set_value([ids["dl-page-2"]]).run()
    button(at, "Replay 1 pending").click().run()
    no_errors(at)
    [message] = [s.value for s in at.success]
    assert message.startswith("Replayed 0. 1 still failing") and "is not allowed for this token" in message
    # a discarded letter offers neither action
    selectbox(at, "Status").select("discarded").run()
    next(m for m in at.multiselect if m.label == "Dead letters").set_value([ids["dl-page-1"]]).run()
    assert not {"Replay 1 pending", "Discard 1 pending"} & set(labels(at.button))


def test_a_refusals_exception_links_to_its_sources_dead_letters(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    assert demo_tower.running.tower is not None
    record = open_refusals(demo_tower, "edi", 3, "data.shipment_id: required for asn.sent")
    at = open_page(dashboard("admin"), "views/queue.py", exception=record.id)
    no_errors(at)
    [link] = [link for link in at.page_link if link.value.startswith("See the refused records")]
    assert parse_qs(link.proto.query_string) == {"source": ["edi"]}


@pytest.mark.parametrize(("role", "system"), [("admin", "edi"), ("operator", "wms")])
def test_a_tokens_refusals_exception_points_at_the_letters_that_token_sent(
    dashboard: Dashboard, demo_tower: DemoTower, role: str, system: str
) -> None:
    """Keyed `token <id>` (a token granted several sources whose records claimed none of them): no source finds
    its letters, the token's id does; the link and the command name it (they listed every letter before)."""
    assert demo_tower.running.tower is not None
    sender = token_id(demo_tower.running.token(system))  # one exception per key while open: a token per case
    record = open_refusals(demo_tower, f"token {sender}", 2, f"{role}: source 'crm' is not allowed")
    at = open_page(dashboard(role), "views/queue.py", exception=record.id)
    no_errors(at)
    links = [link for link in at.page_link if link.value.startswith("See the refused records")]
    if role == "admin":
        [link] = links
        assert parse_qs(link.proto.query_string) == {"token_id": [sender]}
    else:
        assert not links
        [said] = [c.value for c in at.caption if "dead letters" in c.value]
        assert f"sent by ingest token {sender}" in said and f"`tower deadletters list --token-id {sender}`" in said


def test_the_dead_letters_page_lists_one_tokens_letters(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    """`deadletters?token_id=...`: the letters that token sent whatever source they claimed, not another token's
    claiming the same source."""
    ours = [make_event("order.accepted", n, source="crm") for n in range(700, 703)]  # neither may send crm
    theirs = [make_event("order.accepted", n, source="crm") for n in range(703, 705)]
    batch_type = {"Content-Type": "application/cloudevents-batch+json"}
    for system, batch in (("edi", ours), ("tms", theirs)):
        with demo_tower.running.client(system) as client:
            answer = client.post("/v1/events", json=batch, headers=batch_type)
        assert answer.status_code == 400 and len(answer.json()["rejected"]) == len(batch)
    sender = token_id(demo_tower.running.token("edi"))
    at = open_page(dashboard("admin"), "views/deadletters.py", token_id=sender)
    no_errors(at)
    assert text_input(at, "Sent by token").value == sender
    sent = api_get(demo_tower, "/api/deadletters", token_id=sender, status="pending", limit=1000)["items"]
    assert sent and all(d["token_id"] == sender for d in sent)
    ids = {e["id"]: d["id"] for e in ours + theirs for d in sent if f'"id":"{e["id"]}"' in d["raw"]}
    assert set(ids) == {e["id"] for e in ours}  # not the tms token's, which claimed the same source
    shown = set(frame(at)["id"])  # newest first: ours are on the first page
    assert set(ids.values()) <= shown <= {d["id"] for d in sent}
    # the same source without the token: the other token's letters too
    text_input(at, "Sent by token").input("").run()
    no_errors(at)
    letters = api_get(demo_tower, "/api/deadletters", source="crm", status="pending", limit=1000)["items"]
    other = {d["id"] for e in theirs for d in letters if f'"id":"{e["id"]}"' in d["raw"]}
    assert len(other) == len(theirs) and other <= set(frame(at)["id"])  # the newest, on the first page


@pytest.mark.parametrize("role", ["operator", "viewer", "finance", "admin"])
def test_a_refusals_exception_tells_every_role_where_its_dead_letters_are(
    dashboard: Dashboard, demo_tower: DemoTower, role: str
) -> None:
    """The dead letters page is in the admins' menu only: the other roles' panel says where the records are instead
    of linking to it (a link to a page the menu does not hold stopped the panel before its Actions tab)."""
    assert demo_tower.running.tower is not None
    record = open_refusals(demo_tower, f"edi/{role}-test", 2, "data.shipment_id: required for asn.sent")
    at = open_page(dashboard(role), "views/queue.py", exception=record.id)
    no_errors(at)
    assert [t.label for t in at.tabs] == ["Timeline", "Audit trail", "Slack delivery", "Evidence", "Actions"]
    links = [link for link in at.page_link if link.value.startswith("See the refused records")]
    if role == "admin":
        [link] = links
        assert parse_qs(link.proto.query_string) == {"source": [f"edi/{role}-test"]}
    else:
        assert not links
        [said] = [c.value for c in at.caption if "dead letters" in c.value]
        assert "only an admin may read" in said and f"`tower deadletters list --source edi/{role}-test`" in said
    if role in ("operator", "admin"):  # the integration on-call acts on it
        button(at, "Acknowledge").click().run()
        no_errors(at)
        assert api_get(demo_tower, f"/api/exceptions/{record.id}")["status"] == "acknowledged"
    else:
        assert f"Your role ({role}) may read exceptions but not act on them." in [c.value for c in at.caption]


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_a_dead_letters_link_opened_before_the_sign_in_opens_after_it(
    dashboard: Dashboard, demo_tower: DemoTower, role: str
) -> None:
    """A `deadletters?source=wms` link in a new tab: the page and its query wait for the sign-in (no "Page not
    found", no fall back to the overview), then the page opens for an admin and says why not for another role."""
    at = open_page(dashboard(role=None), "views/deadletters.py", source="wms")
    no_errors(at)
    assert "no token, no data" in at.info[0].value and not at.dataframe
    assert "Source" not in labels(at.text_input)
    assert at.query_params == {"source": "wms"}
    at.sidebar.text_input[0].input(demo_tower.token(role))
    at.sidebar.form_submit_button[0].click().run()
    no_errors(at)
    assert f"Signed in as **{role}**" in at.sidebar.markdown[0].value
    assert [t.value for t in at.title] == ["Dead letters"]
    if role == "admin":
        assert text_input(at, "Source").value == "wms"
    else:
        [info] = [i.value for i in at.info]
        assert info.startswith("Only an admin token may read dead letters") and "signed in as viewer" in info
        assert "`tower deadletters list --source wms`" in info


def test_a_big_refused_body_is_previewed_with_the_way_to_its_whole(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    body = "{" + "y" * 6_000  # not JSON: dead-lettered whole, with no source claimed
    with demo_tower.running.client("tms") as tms:
        answer = tms.post("/v1/events", content=body.encode(), headers={"Content-Type": "application/cloudevents+json"})
    assert answer.status_code == 400
    [letter] = [i for i in api_get(demo_tower, "/api/deadletters", limit=1000)["items"] if i["raw"].startswith("{yyy")]
    at = open_page(dashboard("admin"), "views/deadletters.py")
    no_errors(at)
    next(m for m in at.multiselect if m.label == "Dead letters").set_value([letter["id"]]).run()
    [raw] = [c.value for c in at.code]
    assert raw == body[:4000]
    assert any(
        c.value.startswith("The first 4,000 characters of 6,001 bytes.")
        and f"tower deadletters show {letter['id']}" in c.value
        for c in at.caption
    )


def test_dead_letters_page_through_on_the_server(dashboard: Dashboard, demo_tower: DemoTower, monkeypatch: Any) -> None:
    refused = [make_event("order.accepted", n, source="crm") for n in range(12)]  # the edi token may not send crm
    with demo_tower.running.client("edi") as edi:
        answer = edi.post("/v1/events", json=refused, headers={"Content-Type": "application/cloudevents-batch+json"})
    assert answer.status_code == 400 and len(answer.json()["rejected"]) == 12
    monkeypatch.setenv("TOWER_DASHBOARD_PAGE_SIZE", "10")
    at = open_page(dashboard("admin"), "views/deadletters.py", source="crm")
    no_errors(at)
    total = api_get(demo_tower, "/api/deadletters", source="crm")["total"]
    assert total >= 12 and len(frame(at)) == 10
    assert any(c.value == f"Dead letters 1–10 of {total:,}, newest first." for c in at.caption)
    at.number_input[0].set_value(2).run()
    second = api_get(demo_tower, "/api/deadletters", source="crm", limit=10, offset=10)["items"]
    assert list(frame(at)["id"]) == [d["id"] for d in second]
    # a new filter starts again on the first page
    selectbox(at, "Status").select("any").run()
    assert at.number_input[0].value == 1


def test_a_slack_delivery_exception_sends_its_channels_failed_messages_again(
    dashboard: Dashboard, demo_tower: DemoTower
) -> None:
    assert demo_tower.running.tower is not None
    store, clock = demo_tower.running.tower.store, FixedClock(demo_tower.now)
    outbox = Outbox(store, clock)
    outbox.enqueue([OutboundMessage(key="page-test:post", channel="C0GONE0PAGE", text="late release SO-1")])
    [entry] = outbox.get_many(["page-test:post"]).values()
    outbox.record(entry, status="failed", error="channel_not_found")
    [record] = ExceptionStore(store, clock).open_many(
        [
            NewException(
                rule="slack-delivery",
                key="C0GONE0PAGE",
                kind="technical",
                owner="integration",
                severity="high",
                context={"channel": "C0GONE0PAGE", "failed": 1, "reasons": ["channel_not_found"]},
            )
        ]
    )
    at = open_page(dashboard("admin"), "views/queue.py", exception=record.id)
    no_errors(at)
    button(at, "Send C0GONE0PAGE's failed messages again").click().run()
    no_errors(at)
    assert [s.value for s in at.success] == [
        "1 failed messages to C0GONE0PAGE queued again; alerts-send delivers them."
    ]
    assert outbox.get_many(["page-test:post"])["page-test:post"].status == "pending"
    viewer = open_page(dashboard("viewer"), "views/queue.py", exception=record.id)
    assert "Send C0GONE0PAGE's failed messages again" not in labels(viewer.button)


def test_an_operator_resolves_every_exception_the_filters_match(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    assert demo_tower.running.tower is not None
    ExceptionStore(demo_tower.running.tower.store, FixedClock(demo_tower.now)).open_many(
        [NewException("bulk-test", f"BK-{i:02d}", "business", "warehouse", "low") for i in range(3)]
    )
    viewer = open_page(dashboard("viewer"), "views/queue.py", rule="bulk-test")
    assert not any(e.label.startswith("Resolve all") for e in viewer.expander)  # viewers may not act
    unfiltered = open_page(dashboard("operator"), "views/queue.py")
    assert not any(e.label.startswith("Resolve all") for e in unfiltered.expander)  # never everything at once
    at = open_page(dashboard("operator"), "views/queue.py", rule="bulk-test")
    no_errors(at)
    [expander] = [e for e in at.expander if e.label.startswith("Resolve all")]
    assert expander.label == "Resolve all 3 matching"
    button(at, "Resolve 3").click().run()
    assert any("Say why first" in w.value for w in at.warning)
    text_input(at, "Why (written into each one's audit trail)").input("test data loaded by mistake").run()
    selectbox(at, "Resolution for all").select("false_positive").run()
    button(at, "Resolve 3").click().run()
    no_errors(at)
    assert [s.value for s in at.success] == ["Resolved 3 of 3 (false_positive)."]
    gone = api_get(demo_tower, "/api/exceptions", status="resolved", rule="bulk-test")["items"]
    assert sorted(e["key"] for e in gone) == ["BK-00", "BK-01", "BK-02"]
    assert {e["resolution"] for e in gone} == {"false_positive"}


def test_the_overview_warns_of_exceptions_no_rule_evaluates(dashboard: Dashboard, demo_tower: DemoTower) -> None:
    assert demo_tower.running.tower is not None
    ExceptionStore(demo_tower.running.tower.store, FixedClock(demo_tower.now)).open_many(
        [NewException("switched-off-test", f"SW-{i}", "business", "warehouse", "low") for i in range(2)]
    )
    at = open_page(dashboard("viewer"), "views/overview.py")
    no_errors(at)
    [warning] = [w.value for w in at.warning if "nothing evaluates" in w.value]
    assert "switched-off-test (2)" in warning and "Resolve all" in warning
    [link] = [link for link in at.page_link if link.value == "switched-off-test in the queue"]
    assert parse_qs(link.proto.query_string) == {"rule": ["switched-off-test"]}


def test_the_overview_warns_of_a_rule_without_cases_while_its_start_events_arrive(
    dashboard: Dashboard, demo_tower: DemoTower
) -> None:
    tower = demo_tower.running.tower
    assert tower is not None
    assert api_get(demo_tower, "/api/overview")["idle"] == []  # every demo rule has cases
    tower.store.command("DELETE FROM sla_cases WHERE rule = 'asn-sent'")  # as if its filters matched nothing
    try:
        at = open_page(dashboard("viewer"), "views/overview.py")
        no_errors(at)
        [warning] = [w.value for w in at.warning if "No case in 7 days" in w.value]
        assert warning.startswith("No case in 7 days although events of their start types arrive: asn-sent")
        assert "`tower rules test RULE_FILE`" in warning
    finally:
        assert tower.sla.evaluate(full=True).errors == {}  # the cases back, for the other tests
    assert api_get(demo_tower, "/api/overview")["idle"] == []
