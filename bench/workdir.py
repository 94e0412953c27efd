"""Each bench's own temporary directory (chDB opens one data directory per process)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def temp_workdir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A new temporary directory for the bench, removed afterwards unless `keep` (then its path is printed)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield workdir
    finally:
        if keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
