"""How the command line writes API values in a terminal."""

from __future__ import annotations

from typing import Any


def utc(stamp: Any) -> str:
    """An API time ('2026-11-02T15:07:00.123Z') as 'YYYY-MM-DD HH:MM:SS'; '-' for none."""
    return str(stamp).replace("T", " ")[:19] if stamp else "-"


def short(text: str, width: int) -> str:
    """`text` on one line, cut to `width` characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
