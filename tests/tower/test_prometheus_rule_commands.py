"""The commands the shipped Prometheus alerting rules (docs/prometheus/tower-alerts.yml) tell an operator to run
exist: an alert pointing at a command that is not there sends them looking at 3 a.m."""

from __future__ import annotations

import re
from pathlib import Path

import click
import yaml

from tower.cli import main

RULES = Path(__file__).resolve().parents[2] / "docs" / "prometheus" / "tower-alerts.yml"
# `tower` and the lower-case words after it (not placeholders like CHANNEL, nor options)
COMMAND = re.compile(r"\btower((?: [a-z][a-z-]*)+)")


def _annotations() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [text for group in groups for rule in group["rules"] for text in rule.get("annotations", {}).values()]


def test_every_command_an_alert_names_exists() -> None:
    lines = [match.group(1).split() for text in _annotations() for match in COMMAND.finditer(text)]
    # prose ("the tower cannot read ...") is not a command line: those whose first word is a command are
    named = [words for words in lines if main.get_command(click.Context(main), words[0]) is not None]
    assert ["alerts", "deliveries"] in named  # the failed Slack messages' alert says where they are
    for words in named:
        command: click.Command = main
        for depth, word in enumerate(words):
            if not isinstance(command, click.Group):
                break  # the rest are the command's arguments
            found = command.get_command(click.Context(command), word)
            assert found is not None, f"`tower {' '.join(words[: depth + 1])}` is not a command"
            command = found
        assert not isinstance(command, click.Group), f"`tower {' '.join(words)}` names a group, not a command"
