"""The dashboard's text helpers."""

from __future__ import annotations

from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import ui
from dashboard.ui import seconds_text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (40.4, "40 s"), (-2.0, "−2 s ahead"), (-4 * 3600.0, "−4 h 0 min ahead"), (5400.0, "1 h 30 min")],
)
def test_seconds_text(seconds: float | None, text: str) -> None:
    assert seconds_text(seconds) == text


def test_a_quiet_site_is_not_called_silent() -> None:
    """source-silence alerts on systems: a site of one (wms/atlanta) quiet while the others send opens nothing, so
    the overview must not say `silent` (a word that promises an exception) for it."""
    row = {"open_technical": 0, "refused": 0, "silent_minutes": 53, "error_rate": None}
    assert ui.source_state({**row, "source": "wms"}) == "silent"
    assert ui.source_state({**row, "source": "wms/atlanta"}) == "quiet site"
    assert ui.source_state({**row, "source": "wms/atlanta", "silent_minutes": 3}) == "ok"
    assert ui.source_state({**row, "source": "wms", "open_technical": 1}) == "technical exception open"


def test_an_audit_detail_reads_as_text() -> None:
    detail = {"owner": "warehouse", "due_at": "2026-11-27 04:59:59.000000", "hours_late": 3.5, "note": "", "ids": [1]}
    assert ui.detail_text(detail) == "owner: warehouse · due: 2026-11-27 04:59 UTC · hours late: 3.5 · ids: [1]"
    assert ui.detail_text({"text": "carrier called"}) == "text: carrier called"
    assert ui.detail_text(None) == "" and ui.detail_text({}) == ""
    assert ui.field_text("started_at", "2026-11-26T01:16:14.472Z") == "2026-11-26 01:16 UTC"
    assert ui.field_text("check", ["amount", "quantity"]) == '["amount", "quantity"]'


def test_findings_side_by_side_lead_with_what_is_wrong_and_leave_no_none() -> None:
    findings = [
        {"key": "SKU-1@ATL", "rule": "inventory-oversell", "check": "oversell", "status": "open", "summary": "oversold",
         "opened_at": "2026-11-27T22:51:00Z",
         "sides": [{"name": "ecommerce", "quantity": 127, "as_of": "2026-11-27T22:00:00.000000Z"}]},
        {"key": "SKU-2@DAL", "rule": "inventory-sync", "check": "quantity", "status": "open", "summary": "5 vs 3",
         "opened_at": "2026-11-27T22:51:00Z",
         "sides": [{"name": "erp", "quantity": 5}, {"name": "wms", "quantity": 3}]},
    ]  # fmt: skip
    frame = ui.side_by_side(findings)
    assert list(frame.columns[:2]) == ["key", "summary"]
    assert frame.iloc[0]["ecommerce · as_of"] == "2026-11-27 22:00 UTC"
    assert frame.iloc[1]["ecommerce · quantity"] == "" and frame.iloc[0]["erp · quantity"] == ""
    assert frame.iloc[1]["erp · quantity"] == 5


def test_a_truncated_timeline_says_the_newest_are_listed() -> None:
    """The API keeps a key's newest events and spans when it has too many (kernel.queries.events_for_key)."""

    def page() -> None:
        from dashboard import ui

        entry = {"at": "2026-11-04T15:00:00Z", "kind": "event", "system": "wms", "name": "order.picked", "ids": {}}
        ui.timeline_section([entry], truncated=True)

    at = AppTest.from_function(page).run()
    assert not at.exception
    [warning] = [w.value for w in at.warning]
    assert "the newest are listed, the oldest left out" in warning and "the oldest are listed" not in warning


def timeline_x(*times: str, due: str | None = None) -> dict[str, Any]:
    """The x encoding of the timeline chart of events at `times`, as the browser receives it."""
    entries = [{"at": t, "system": "erp", "kind": "event", "name": "e"} for t in times]
    spec = ui.timeline_chart(entries, due).to_dict()
    encoding: dict[str, Any] = (spec["layer"][0] if "layer" in spec else spec)["encoding"]["x"]
    return encoding


def test_a_timeline_within_a_minute_is_labelled_to_the_second_over_a_minute() -> None:
    """An event and its span a few milliseconds apart: labelled to the minute, every tick read `29 Nov 00:32`, and
    the axis spread them over ticks a millisecond apart."""
    x = timeline_x("2026-11-29T00:32:10.100Z", "2026-11-29T00:32:10.050Z")
    assert x["axis"]["format"] == "%d %b %H:%M:%S"
    start, end = x["scale"]["domain"]
    assert (start["minutes"], start["seconds"], start["milliseconds"]) == (31, 40, 75)
    assert (end["minutes"], end["seconds"], end["milliseconds"]) == (32, 40, 75)
    assert start["utc"] and end["utc"]
    one = timeline_x("2026-11-29T00:32:10Z")["scale"]["domain"]
    assert [(d["minutes"], d["seconds"]) for d in one] == [(31, 40), (32, 40)]


def test_a_longer_timeline_keeps_its_own_span() -> None:
    minutes = timeline_x("2026-11-29T00:32:10Z", "2026-11-29T00:37:10Z")
    assert minutes["axis"]["format"] == "%d %b %H:%M:%S" and "domain" not in minutes["scale"]
    hours = timeline_x("2026-11-29T00:32:10Z", "2026-11-29T13:34:00Z", due="2026-11-29T08:00:00Z")
    assert hours["axis"]["format"] == "%d %b %H:%M" and "domain" not in hours["scale"]
    # the deadline counts: an event alone an hour before its deadline is not a one-minute chart
    assert "domain" not in timeline_x("2026-11-29T07:00:00Z", due="2026-11-29T08:00:00Z")["scale"]
