"""Characters that text people and senders write may hold but no screen should act on.

The API refuses them in names and notes (`Name`, `free_text`: tower/routes), and so do settings
that name people (the Slack users' operator names); the command line shows them as escapes
(tower/commands/text.py). One definition, so what is refused and what is escaped stay the same set.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

BIDI = "\u202a-\u202e\u2066-\u2069"
"""Bidirectional embeddings, overrides and isolates: they make what follows display reversed or as another text."""
LINE_SEPARATORS = "\u2028\u2029"
"""Unicode's line and paragraph separators: a new line to a renderer, none to a reader of the text."""

ACTED_ON = re.compile(f"[\x00-\x1f\x7f-\x9f{LINE_SEPARATORS}{BIDI}]")
"""What a terminal or a renderer acts on instead of showing: C0 controls (ESC moves the cursor, clears the screen),
DEL, C1, the line separators and the bidirectional formatting characters."""

# What people type into request bodies and settings ends up in the CLI's tables, the audit trail, Slack text and
# CSV exports. A name is one line: no control character (C0, DEL, C1: newline, tab, NUL, ESC, NEL, CSI, ...), no line or
# paragraph separator, no bidirectional override or isolate (they can make one name display as another). Free text
# (a note, a comment) keeps its newlines and tabs (and line separators; a CR is made a newline), but no other control
# character (NUL, ESC, DEL, C1) nor bidirectional override or isolate.
_NOT_IN_A_NAME = ACTED_ON
_NOT_IN_TEXT = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{BIDI}]")  # newlines and tabs kept


def described(char: str) -> str:
    """A character a name or a text may not hold, named by its code point and what it is."""
    code = ord(char)
    if code in (0x2028, 0x2029):
        what = "line separator" if code == 0x2028 else "paragraph separator"
    elif 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
        what = "bidirectional formatting character"
    else:
        what = "control character"
    return f"{what} U+{code:04X}"


def one_line(value: str) -> str:
    """A name shown on one line; ValueError (a 422 at the field) naming the first character it may not hold."""
    found = _NOT_IN_A_NAME.search(value)
    if found:
        raise ValueError(
            f"contains the {described(found.group())}: a name is one line of text, without control, line "
            "separator or bidirectional formatting characters"
        )
    return value


def free_text(value: str) -> str:
    """A note or comment, newlines and tabs kept, Windows (CR LF) and old Mac (CR) line ends made newlines; ValueError
    (a 422 at the field) naming the first other control character (NUL, ESC, DEL, C1) or bidirectional override or
    isolate in it."""
    # a pasted Windows text is not refused; a lone CR, which a terminal would use to overwrite the line, starts one
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    found = _NOT_IN_TEXT.search(value)
    if found:
        raise ValueError(
            f"contains the {described(found.group())}: text may hold newlines and tabs, but no other control "
            "character and no bidirectional formatting character"
        )
    return value


Name = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(one_line)]
"""A person's name or handle: at most 200 characters on one line, whitespace around it dropped."""
