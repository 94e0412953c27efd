"""Run a Python module as a child of `tower serve` that does not outlive it.

    python -m tower.child_guard PARENT_PID MODULE [ARG ...]

runs MODULE as `__main__` in this same process (`python -m MODULE ARG ...`, the same pid, its own signal
handling) and watches the parent: once PARENT_PID is no longer this process's parent (the tower was killed
with SIGKILL, or crashed, and the child was handed to init), the child sends itself SIGTERM, and exits
after a grace period if that did not end it. A tower stopped normally stops its children itself
(tower/children.py); this covers the exits that run no code. Linux's PR_SET_PDEATHSIG would do it without
polling, but it fires when the *thread* that started the child ends, and the tower starts its children
from a short-lived thread.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
import time
from collections.abc import Sequence

POLL_SECONDS = 1.0
GRACE_SECONDS = 10.0


def guarded(command: Sequence[str], parent: int | None = None) -> list[str]:
    """`command` run under the guard when it is `python -m MODULE ...`; any other command as it is."""
    command = list(command)
    if len(command) >= 3 and command[1] == "-m" and command[2] != __name__:
        return [command[0], "-m", __name__, str(parent or os.getpid()), *command[2:]]
    return command


def watch(parent: int, poll_seconds: float = POLL_SECONDS, grace_seconds: float = GRACE_SECONDS) -> None:
    """Return only by ending the process: SIGTERM once `parent` is gone, then a hard exit after the grace."""
    while os.getppid() == parent:
        time.sleep(poll_seconds)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_seconds)
    os._exit(1)


def main(argv: Sequence[str]) -> int:
    """Start the watch, then run the module as `python -m` would; 2 on a bad command line, 1 when orphaned."""
    if len(argv) < 2 or not argv[0].isdigit():
        print("usage: python -m tower.child_guard PARENT_PID MODULE [ARG ...]", file=sys.stderr)
        return 2
    parent, module = int(argv[0]), argv[1]
    if os.getppid() != parent:  # the parent ended before this process got going
        return 1
    threading.Thread(target=watch, args=(parent,), name="child-guard", daemon=True).start()
    sys.argv = [module, *argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
