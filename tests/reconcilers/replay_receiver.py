"""A replay webhook receiver for tests: a real HTTP server on 127.0.0.1 that records every call and
answers from a script (status, body), then 200 with `{"accepted": true}`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass(frozen=True)
class Call:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class Receiver:
    """Records calls; `answer(...)` queues the next answers."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.delay_seconds = 0.0  # how long each answer takes (a hanging webhook: longer than the timeout)
        self._script: list[tuple[int, bytes, dict[str, str]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                status, answer, extra = receiver._record(
                    Call(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                time.sleep(receiver.delay_seconds)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller gave up waiting (its timeout was shorter than `delay_seconds`)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/tower/replay"

    def answer(self, *answers: tuple[int, dict[str, Any] | str], headers: dict[str, str] | None = None) -> None:
        """Queue answers for the next calls, in order (each with `headers`, e.g. Retry-After)."""
        with self._lock:
            for status, body in answers:
                encoded = body.encode() if isinstance(body, str) else orjson.dumps(body)
                self._script.append((status, encoded, dict(headers or {})))

    def _record(self, call: Call) -> tuple[int, bytes, dict[str, str]]:
        with self._lock:
            self.calls.append(call)
            return self._script.pop(0) if self._script else (200, b'{"accepted": true}', {})

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def running_receiver() -> Iterator[Receiver]:
    """A started receiver (for fixtures)."""
    with Receiver() as receiver:
        yield receiver
