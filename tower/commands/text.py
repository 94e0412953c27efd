"""How the command line writes API values in a terminal."""

from __future__ import annotations

import re
from typing import Any

from kernel.model.text import ACTED_ON


def visible(text: str, keep: str = "") -> str:
    """`text` safe to write to a terminal: each character a terminal would act on (but those in `keep`, e.g.
    "\\n\\t") written as its escape, `\\x1b` or `\\u202e`. Values come from senders and people: a dead letter's
    raw record, a note stored before the API checked it."""

    def escaped(found: re.Match[str]) -> str:
        char = found.group()
        if char in keep:
            return char
        return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"

    return ACTED_ON.sub(escaped, text)


def utc(stamp: Any) -> str:
    """An API time ('2026-11-02T15:07:00.123Z') as 'YYYY-MM-DD HH:MM:SS'; '-' for none."""
    return str(stamp).replace("T", " ")[:19] if stamp else "-"


def short(text: str, width: int) -> str:
    """`text` on one line, cut to `width` characters, what a terminal would act on escaped (visible)."""
    text = visible(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 1] + "…"
