"""The dashboard's text helpers."""

from __future__ import annotations

import pytest

from dashboard.ui import seconds_text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (40.4, "40 s"), (-2.0, "−2 s ahead"), (-4 * 3600.0, "−4 h 0 min ahead"), (5400.0, "1 h 30 min")],
)
def test_seconds_text(seconds: float | None, text: str) -> None:
    assert seconds_text(seconds) == text
