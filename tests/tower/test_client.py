"""The CLI's HTTP client: a tower reached that does not answer in time is not one that cannot be reached."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import click
import pytest

from tests.support import free_port
from tower.client import DEFAULT_TIMEOUT, ApiFailed, answer_timeout, api_call


@pytest.fixture
def silent_tower() -> Iterator[str]:
    """A server that takes connections and never answers: the URL of a tower busy beyond any timeout."""
    server = socket.create_server(("127.0.0.1", 0))
    taken: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                taken.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for connection in taken:
            connection.close()
        server.close()


def test_a_tower_that_does_not_answer_in_time_is_said_so(silent_tower: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER_TIMEOUT", "0.3")
    with pytest.raises(ApiFailed) as failed:
        api_call(silent_tower, "t" * 20, "POST", "/api/deadletters/replay", json={})
    message = str(failed.value.message)
    assert message.startswith(f"the tower at {silent_tower} did not answer within 0.3 s (it was reached")
    assert "TOWER_TIMEOUT" in message and "cannot reach" not in message
    assert failed.value.exit_code == 2


def test_a_tower_not_listening_cannot_be_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOWER_TIMEOUT", raising=False)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ApiFailed, match=f"cannot reach the tower at {url}"):
        api_call(url, "t" * 20, "GET", "/api/deadletters")


def test_the_timeout_comes_from_tower_timeout_else_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOWER_TIMEOUT", raising=False)
    assert (answer_timeout(), answer_timeout(600)) == (DEFAULT_TIMEOUT, 600)
    monkeypatch.setenv("TOWER_TIMEOUT", "120")
    assert (answer_timeout(), answer_timeout(600)) == (120, 120)
    for wrong in ("soon", "0", "-5", "nan"):
        monkeypatch.setenv("TOWER_TIMEOUT", wrong)
        with pytest.raises(click.UsageError, match="TOWER_TIMEOUT"):
            answer_timeout()
