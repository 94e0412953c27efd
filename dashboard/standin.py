"""The local Slack stand-in (alerting/standin.py) as the Slack page reads it: the channels with their messages,
and a click on a message's button (the stand-in sends it to the tower, signed, as Slack would).

Only `tower serve --demo` runs a stand-in (TOWER_DASHBOARD_SLACK_STANDIN_URL); it is a stand-in for Slack,
not part of the tower, so the tower's data still comes through `dashboard.client` only.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

_LINK = re.compile(r"<([^<>|]+)\|([^<>]+)>")
_BARE = re.compile(r"<((?:https?|mailto):[^<>|]+)>")
_BOLD = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")
_STRIKE = re.compile(r"(?<![\w~])~([^~\n]+)~(?![\w~])")
_EMOJI = re.compile(r":([a-z0-9_+-]+):")
# Slack's names of the emoji the tower's messages use (Streamlit knows some under other names, or not at all).
EMOJI = {
    "arrows_counterclockwise": "\U0001f504",
    "bell": "\U0001f514",
    "bust_in_silhouette": "\U0001f464",
    "eyes": "\U0001f440",
    "hourglass": "\u231b",
    "large_orange_circle": "\U0001f7e0",
    "memo": "\U0001f4dd",
    "pause_button": "\u23f8\ufe0f",
    "red_circle": "\U0001f534",
    "repeat": "\U0001f501",
    "rotating_light": "\U0001f6a8",
    "white_check_mark": "\u2705",
    "white_circle": "\u26aa",
}


class StandInError(Exception):
    """The stand-in did not answer, or refused."""


def channels(url: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every channel with its messages (oldest first, each with its `thread`), as the stand-in holds them."""
    try:
        answer = httpx.get(f"{url.rstrip('/')}/_standin/messages", timeout=timeout)
        answer.raise_for_status()
    except httpx.HTTPError as exc:
        raise StandInError(f"the Slack stand-in at {url} does not answer: {exc}") from exc
    body = answer.json()
    return [c for c in body.get("channels", []) if isinstance(c, dict)]


def click(url: str, channel: str, ts: str, action_id: str, timeout: float = 15.0) -> dict[str, Any]:
    """Click a button of a message; the stand-in's answer (`status`: what the tower answered)."""
    try:
        answer = httpx.post(
            f"{url.rstrip('/')}/_standin/click",
            json={"channel": channel, "ts": ts, "action_id": action_id},
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        raise StandInError(f"the Slack stand-in at {url} does not answer: {exc}") from exc
    body: dict[str, Any] = answer.json() if answer.content else {}
    if answer.status_code != 200:
        raise StandInError(str(body.get("error") or answer.text))
    return body


def markdown(text: str) -> str:
    """Slack mrkdwn as Markdown: links, mentions, *bold*, ~strike~ and the escaped characters."""
    text = _LINK.sub(lambda m: f"[{m.group(2)}]({m.group(1)})", text)
    text = _BARE.sub(lambda m: m.group(1), text)
    text = text.replace("<!here>", "@here").replace("<!channel>", "@channel")
    text = _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)
    text = re.sub(r"<!subteam\^([^>|]+)(?:\|[^>]*)?>", r"@\1", text)
    text = _BOLD.sub(r"**\1**", text)
    text = _STRIKE.sub(r"~~\1~~", text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return text.replace("\n", "  \n")  # a line break, as in Slack


def buttons(message: dict[str, Any]) -> list[tuple[str, str]]:
    """The (action_id, label) of every button in the message's actions blocks."""
    found: list[tuple[str, str]] = []
    for block in message.get("blocks") or []:
        if isinstance(block, dict) and block.get("type") == "actions":
            for element in block.get("elements") or []:
                if isinstance(element, dict) and element.get("type") == "button" and element.get("action_id"):
                    label = (element.get("text") or {}).get("text") or element["action_id"]
                    found.append((str(element["action_id"]), str(label)))
    return found


def lines(message: dict[str, Any]) -> list[tuple[str, str]]:
    """What a message shows, as (kind, markdown) lines: `header`, `text` and `context`; its fallback text when it
    has no blocks."""
    out: list[tuple[str, str]] = []
    for block in message.get("blocks") or []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "header":
            out.append(("header", str((block.get("text") or {}).get("text") or "")))
        elif kind == "section":
            text = (block.get("text") or {}).get("text")
            if text:
                out.append(("text", markdown(str(text))))
            fields = [
                markdown(" ".join(str(f.get("text") or "").split("\n")))
                for f in block.get("fields") or []
                if isinstance(f, dict)
            ]
            if fields:
                out.append(("text", " · ".join(fields)))
        elif kind == "context":
            parts = [markdown(str(e.get("text") or "")) for e in block.get("elements") or [] if isinstance(e, dict)]
            if parts:
                out.append(("context", " · ".join(p for p in parts if p)))
    if not out and message.get("text"):
        out.append(("text", markdown(str(message["text"]))))
    return out
