"""The last visit of each token, so the overview can show what changed since then.

A small JSON file in the dashboard's state directory (TOWER_DASHBOARD_STATE_DIR), keyed by the
token's id (a hash the API gives, never the token). Written atomically; a missing or unreadable
file just means no previous visit.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from datetime import datetime
from pathlib import Path

_lock = threading.Lock()


class LastVisits:
    """When each token last opened the overview."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "last_visits.json"

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def previous(self, token_id: str) -> datetime | None:
        """The token's last visit, if one was recorded."""
        text = self._read().get(token_id)
        try:
            return datetime.fromisoformat(text) if text else None
        except ValueError:
            return None

    def record(self, token_id: str, at: datetime) -> None:
        """Remember `at` as the token's last visit."""
        with _lock:
            data = self._read()
            data[token_id] = at.isoformat()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".visits-")
            with os.fdopen(fd, "w") as out:
                json.dump(data, out)
            os.replace(tmp, self.path)
