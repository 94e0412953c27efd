"""The Reports page names its downloads as the tower's reports API does."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from streamlit.elements.widgets.button import ButtonMixin
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import DemoTower, no_errors, open_page

Dashboard = Callable[..., AppTest]


def test_reports_name_downloads_as_the_tower_does(
    dashboard: Dashboard, demo_tower: DemoTower, monkeypatch: pytest.MonkeyPatch
) -> None:
    named: list[str] = []
    offer = ButtonMixin.download_button

    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        named.append(kwargs["file_name"])
        return offer(self, *args, **kwargs)

    monkeypatch.setattr(ButtonMixin, "download_button", recording)
    at = open_page(dashboard("finance"), "views/reports.py")
    next(s for s in at.selectbox if s.label == "Period").select("custom").run()
    named.clear()
    at.date_input[0].set_value((date(2026, 11, 1), date(2026, 11, 30))).run()
    no_errors(at)
    # the API's name for the month, not sla-breaches_2026-11-01_2026-11-30
    assert named == ["sla-breaches_2026-11.csv", "sla-breaches_2026-11.xlsx"]
    with demo_tower.api("finance") as http:
        answer = http.get("/api/reports/sla-breaches", params={"from": "2026-11-01", "to": "2026-12-01"})
    assert answer.headers["content-disposition"] == 'attachment; filename="sla-breaches_2026-11.csv"'
    named.clear()
    at.date_input[0].set_value((date(2026, 11, 3), date(2026, 11, 30))).run()
    assert named[0] == "sla-breaches_2026-11-03_2026-12-01.csv"  # both ends, the last excluded, as the API says
    with demo_tower.api("finance") as http:
        answer = http.get("/api/reports/sla-breaches", params={"from": "2026-11-03", "to": "2026-12-01"})
    assert answer.headers["content-disposition"] == f'attachment; filename="{named[0]}"'
