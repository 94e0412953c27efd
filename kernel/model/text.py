"""Characters that text people and senders write may hold but no screen should act on.

The API refuses them in names and notes (tower/routes/models.py); the command line shows them as escapes
(tower/commands/text.py). One definition, so what is refused and what is escaped stay the same set.
"""

from __future__ import annotations

import re

BIDI = "\u202a-\u202e\u2066-\u2069"
"""Bidirectional embeddings, overrides and isolates: they make what follows display reversed or as another text."""
LINE_SEPARATORS = "\u2028\u2029"
"""Unicode's line and paragraph separators: a new line to a renderer, none to a reader of the text."""

ACTED_ON = re.compile(f"[\x00-\x1f\x7f-\x9f{LINE_SEPARATORS}{BIDI}]")
"""What a terminal or a renderer acts on instead of showing: C0 controls (ESC moves the cursor, clears the screen),
DEL, C1, the line separators and the bidirectional formatting characters."""
