"""The one duration grammar rules, reconcilers, silences and commands share."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kernel.durations import duration_text, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        (" 2h ", 7200),
        ("1.5h", 5400),
        ("1d", 86400),
        ("1w", 604800),
        ("90", 90),
        ("010", 10),  # as YAML wrote it: decimal, not octal
        ("1_000", 1000),
        ("2.5", 2.5),
        (45, 45),
        (0.5, 0.5),
        (timedelta(minutes=3), 180),
    ],
)
def test_durations_read(value: object, seconds: float) -> None:
    assert parse_duration(value) == timedelta(seconds=seconds)


@pytest.mark.parametrize("value", ["soon", "2 hours", "2hours", "1y", "-5m", "1__0", "10_", "_10", "", True, None, [1]])
def test_what_is_not_a_duration_is_refused_by_name(value: object) -> None:
    with pytest.raises(ValueError, match=r"is not a duration like 90s, 30m, 2h, 1d or 1w"):
        parse_duration(value)


def test_a_parsed_duration_reads_back_as_written() -> None:
    assert [duration_text(parse_duration(text)) for text in ("45s", "12m", "2h", "3d")] == [
        "45s",
        "12m",
        "2h",
        "3d",
    ]
