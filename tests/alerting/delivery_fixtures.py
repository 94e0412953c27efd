"""Fixtures for the tests that deliver through the Slack stand-in (registered in tests/conftest.py): a fixed
clock at `T0` and a running stand-in on that clock that takes the token `slack_settings` sends. A module
that needs another clock or stand-in defines its own fixture of the same name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from alerting.standin import SlackStandIn
from kernel.clock import FixedClock
from tests.alerting.delivery_support import BOT_TOKEN, T0


@pytest.fixture
def clock() -> FixedClock:
    """A fixed clock at T0."""
    return FixedClock(T0)


@pytest.fixture
def standin(clock: FixedClock) -> Iterator[SlackStandIn]:
    """The Slack stand-in on `clock`, accepting the bot token of `slack_settings`."""
    with SlackStandIn(clock=clock, token=BOT_TOKEN) as running:
        yield running
