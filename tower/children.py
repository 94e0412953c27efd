"""The child processes of `tower serve`: the dashboard (Streamlit) and, with `--demo`, the simulated distributor.

Each child writes its output to a log file in the data directory (the terminal keeps the tower's banner
and log), is watched by a thread that logs an unexpected exit with the end of its log (and, for a child
made with `restart=True`, the dashboard, starts it again after a backoff that doubles up to a minute and
starts over once a run lasted a minute), and is stopped with SIGTERM, then SIGKILL after a grace period.
An exit that looks like a stop (a clean one, or by SIGTERM, SIGINT or SIGHUP) is first given two seconds for the
tower's own stop to begin: a signal sent to the process group (Ctrl-C, a service manager) reaches the children too.
`Children` stops them in reverse order of start, once; after `stop_all` nothing starts any more, so a
child started by a thread that raced the shutdown cannot outlive the tower. A `python -m` child runs
under `tower.child_guard`, so it also ends when the tower is killed without a chance to stop it
(SIGKILL, a crash).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from tower.child_guard import guarded

log = logging.getLogger(__name__)


class Child:
    """One child process: its command, environment and log file."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        restart: bool = False,
        first_delay: float = 1.0,
        max_delay: float = 60.0,
        stop_window: float = 2.0,
    ) -> None:
        self.name = name
        self.command = guarded(command)  # `python -m ...` children end themselves if the tower is killed
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.restart = restart
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.stop_window = stop_window
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and a stop never cross: stop() sees the process that runs

    @property
    def pid(self) -> int | None:
        """The process id once started."""
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        """Started and not exited."""
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the process (output appended to its log file) and a thread that reports an unexpected exit."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._spawn()
        threading.Thread(target=self._watch, name=f"child-{self.name}", daemon=True).start()

    def _spawn(self) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def _watch(self) -> None:
        delay = self.first_delay
        while True:
            proc, began = self.proc, time.monotonic()
            assert proc is not None
            code = proc.wait()
            # A stop sent to the whole process group (Ctrl-C in a terminal, a service manager stopping the
            # group) reaches the children as soon as the tower: an exit by such a signal, or a clean one, waits a
            # moment for the tower's own stop before it counts as unexpected.
            if _stop_like(code) and self._stopping.wait(self.stop_window):
                return
            if self._stopping.is_set():
                return
            log.warning("%s exited with %s; the end of %s:\n%s", self.name, code, self.log_path, self.tail())
            if not self.restart:
                return
            if time.monotonic() - began >= self.max_delay:  # it ran a while: a new failure, not a crash loop
                delay = self.first_delay
            log.warning("%s starts again in %gs", self.name, delay)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, self.max_delay)
            with self._lock:
                if self._stopping.is_set():
                    return
                self._spawn()
                self.restarts += 1
            log.info("%s started again (pid %s, restart %d)", self.name, self.pid, self.restarts)

    def tail(self, lines: int = 15) -> str:
        """The last lines of the log file."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_seconds: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace_seconds`; the exit code (None when never started)."""
        with self._lock:
            self._stopping.set()
            proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %gs; killing it", self.name, grace_seconds)
                proc.kill()
                proc.wait(timeout=grace_seconds)
        return proc.returncode


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _stop_like(code: int) -> bool:
    """Whether an exit code is a clean exit or an end by a stop signal (-N from Popen, 128+N from a shell)."""
    return code == 0 or any(code in (-sig, 128 + sig) for sig in _STOP_SIGNALS)


class Children:
    """The children of one process, stopped in reverse order of start; nothing starts after `stop_all`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._children: list[Child] = []
        self._closed = False

    def start(self, child: Child) -> bool:
        """Start `child` unless stopping began (False then)."""
        with self._lock:
            if self._closed:
                return False
            child.start()
            self._children.append(child)
        log.info("%s started (pid %s, log %s)", child.name, child.pid, child.log_path)
        return True

    def unless_closed(self, action: Callable[[], None]) -> bool:
        """Run `action` unless stopping began (False then); `stop_all` waits for it to finish."""
        with self._lock:
            if self._closed:
                return False
            action()
            return True

    def __iter__(self) -> Iterator[Child]:
        with self._lock:
            return iter(list(self._children))

    def stop_all(self, grace_seconds: float = 10.0) -> None:
        """Stop every child, the last started first; idempotent."""
        with self._lock:
            self._closed = True
            children, self._children = self._children, []
        for child in reversed(children):
            code = child.stop(grace_seconds)
            log.info("%s stopped (exit %s)", child.name, code)


def loopback(host: str) -> str:
    """An address a local client reaches a server bound to `host` at: 127.0.0.1 for the wildcard addresses."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def is_loopback(host: str) -> bool:
    """Whether `host` is only reachable from this machine."""
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def env_with(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with `extra` on top."""
    return {**os.environ, **extra}
