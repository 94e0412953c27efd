"""A local stand-in for Slack: enough of the Web API and incoming webhooks for slack-sdk, on a real HTTP server.

`SlackStandIn` listens on 127.0.0.1 (a free port unless one is given) and answers what the tower
uses: auth.test, chat.postMessage (threads with thread_ts, message metadata), chat.update, chat.delete (as a
person deleting a message), conversations.history, conversations.replies and conversations.list,
files.getUploadURLExternal + the upload URL it returns + files.completeUploadExternal (so
`WebClient.files_upload_v2` works), and incoming webhooks at `/webhook/<channel>`. Channels are made on first
use from their names (`#ops`) and get ids derived from them (`C` and the name in base32, so the same in every run,
as a workspace's channels outlive a restart of the stand-in); ts values come from the stand-in's clock.

It records every call (`calls`, each with the time it arrived on the stand-in's clock; `GET /_standin/calls`)
and keeps each channel's history with threads and edits (`messages(channel)`, `thread(channel, ts)`, and
`GET /_standin/messages` as JSON). Faults are
queued per method (`fail("chat.postMessage", Fault.rate_limited(3), Fault.server_error())`): a 429
with Retry-After, a 5xx, an API error, or a slow answer that outlasts the client's timeout.
`rate_limit_seconds` makes it answer 429 to a second message in a channel within that time, like
Slack's one message per second per channel.

With an `interactivity_url` and a `signing_secret` it also plays Slack's part when someone clicks a
button of a message: `click(channel, ts, action_id, user)` (or `POST /_standin/click`) sends the
`block_actions` payload to the interactivity URL, signed as Slack signs it (`v0=` HMAC-SHA256 of
`v0:<timestamp>:<body>`), so the Acknowledge / Resolve buttons work without a workspace.

Tests, the alerting bench and `tower serve --demo` (without a Slack token) use it; run it alone with
`python -m alerting.standin --port 8765`.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import math
import re
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block
from slack_sdk.signature import SignatureVerifier

from kernel.clock import Clock, SystemClock

_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")


def _id_of(name: str) -> str:
    """A channel's id, derived from its name (base32, reversible): the same in every run of the stand-in."""
    return "C" + base64.b32encode(name.encode()).decode().rstrip("=")


def _name_of(channel_id: str) -> str | None:
    """The name `_id_of` derived `channel_id` from; None for an id it did not make."""
    text = channel_id[1:]
    try:
        name = base64.b32decode(text + "=" * (-len(text) % 8)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return name if name and _id_of(name) == channel_id else None


Json = dict[str, Any]


@dataclass(frozen=True)
class Fault:
    """One queued misbehaviour for the next call of a method.

    With `status` or `error` the call is not carried out: it answers that HTTP status (with
    `Retry-After` for a 429) or `200 {"ok": false, "error": error}`. Without them the call is carried
    out and only the answer is late by `delay` seconds (a timeout when longer than the client's).
    With `carried_out`, the call is carried out and then answered with that status or error instead
    (a proxy that lost Slack's answer; Slack's own `internal_error` after part of the work).
    """

    status: int | None = None
    retry_after: int | str | None = None  # a text: the header as a proxy might send it ("inf", "1e12")
    error: str | None = None
    delay: float = 0.0
    carried_out: bool = False

    @classmethod
    def rate_limited(cls, retry_after: int | str = 1) -> Fault:
        """429 Too Many Requests with Retry-After."""
        return cls(status=429, retry_after=retry_after)

    @classmethod
    def server_error(cls, status: int = 500, delay: float = 0.0) -> Fault:
        """A 5xx answer (the call is not carried out)."""
        return cls(status=status, delay=delay)

    @classmethod
    def lost_answer(cls, status: int = 502) -> Fault:
        """The call is carried out (the message posted), then answered with a 5xx, as by a proxy in between."""
        return cls(status=status, carried_out=True)

    @classmethod
    def api_error(cls, error: str) -> Fault:
        """200 with ok=false and this error (channel_not_found, invalid_blocks, ...)."""
        return cls(error=error)

    @classmethod
    def slow(cls, delay: float) -> Fault:
        """The call is carried out but answered `delay` seconds late."""
        return cls(delay=delay)


@dataclass
class Call:
    """One request the stand-in received and how it answered."""

    method: str  # API method (chat.postMessage), `webhook` or `upload`
    path: str
    body: Json
    headers: dict[str, str]
    status: int = 0
    response: Json = field(default_factory=dict)
    at: datetime | None = None  # the stand-in's clock when it arrived


@dataclass
class _Channel:
    id: str
    name: str
    messages: list[Json] = field(default_factory=list)  # top-level, oldest first
    replies: dict[str, list[Json]] = field(default_factory=dict)  # thread ts -> replies, oldest first


class _Rejected(Exception):
    def __init__(self, error: str, status: int = 200) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


class SlackStandIn:
    """A Slack Web API and incoming-webhook stand-in on a local HTTP server; a context manager."""

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        clock: Clock | None = None,
        token: str | None = None,
        rate_limit_seconds: float | None = None,
        interactivity_url: str | None = None,
        signing_secret: str | None = None,
        click_user: str = "U0STANDIN",
    ) -> None:
        self.clock = clock or SystemClock()
        self.token = token  # when set, Web API calls must carry it
        self.rate_limit_seconds = rate_limit_seconds
        self.interactivity_url = interactivity_url  # where button clicks go (the tower's /slack/interactions)
        self.signing_secret = signing_secret  # signs the clicks, as the Slack app's signing secret does
        self.click_user = click_user  # who clicks when a click names nobody
        self._lock = threading.RLock()
        self._calls: list[Call] = []
        self._faults: dict[str, deque[Fault]] = {}
        self._channels: dict[str, _Channel] = {}  # by id
        self._by_name: dict[str, str] = {}
        self._last_post: dict[str, float] = {}  # channel id -> clock time of its last accepted message
        self._uploads: dict[str, Json] = {}
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._host = host
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """http://host:port"""
        return f"http://{self._host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The Web API base URL for WebClient(base_url=...) / TOWER_SLACK_API_URL."""
        return self.url + "/api/"

    def webhook_url(self, channel: str = "#alerts") -> str:
        """An incoming-webhook URL that posts to `channel`."""
        return f"{self.url}/webhook/{quote(channel.lstrip('#'), safe='')}"

    def start(self) -> SlackStandIn:
        """Serve in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(0.05,), name="slack-standin", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> SlackStandIn:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what tests ask -----------------------------------------------------------------------------

    def fail(self, method: str, *faults: Fault) -> None:
        """Queue faults for the next calls of `method` (chat.postMessage, chat.update, webhook, upload, ...)."""
        with self._lock:
            self._faults.setdefault(method, deque()).extend(faults)

    @property
    def calls(self) -> list[Call]:
        """Every request received, in order."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        """The requests to one method."""
        return [c for c in self.calls if c.method == method]

    def channel_id(self, channel: str) -> str:
        """The id of a channel by name (`#ops` or `ops`) or id; KeyError when it does not exist."""
        with self._lock:
            return self._find(channel).id

    def messages(self, channel: str) -> list[Json]:
        """The channel's top-level messages, oldest first (copies; `replies` counts the thread)."""
        with self._lock:
            found = self._find(channel)
            return [json.loads(json.dumps(m)) for m in found.messages]

    def thread(self, channel: str, ts: str) -> list[Json]:
        """The replies in the thread of message `ts`, oldest first (without the parent)."""
        with self._lock:
            found = self._find(channel)
            return [json.loads(json.dumps(m)) for m in found.replies.get(ts, [])]

    def uploads(self) -> dict[str, bytes]:
        """File id -> the bytes uploaded for it."""
        with self._lock:
            return {fid: bytes(f.get("data", b"")) for fid, f in self._uploads.items()}

    def snapshot(self) -> Json:
        """Every channel with its messages and threads, as `GET /_standin/messages` answers."""
        with self._lock:
            return {
                "channels": [
                    {
                        "id": c.id,
                        "name": c.name,
                        "messages": [{**m, "thread": c.replies.get(m["ts"], [])} for m in c.messages],
                    }
                    for c in self._channels.values()
                ]
            }

    # -- what a person does in Slack ----------------------------------------------------------------

    def click(self, channel: str, ts: str, action_id: str, user: str | None = None) -> tuple[int, str]:
        """Click the button `action_id` of message `ts` as Slack user `user` (default `click_user`): the signed
        `block_actions` request goes to the interactivity URL; its HTTP status and body. KeyError when there is no
        such message or button; RuntimeError when no interactivity URL or signing secret is set."""
        if not self.interactivity_url or not self.signing_secret:
            raise RuntimeError("the stand-in has no interactivity URL or signing secret")
        user = user or self.click_user
        with self._lock:
            found = self._find(channel)
            message = next((m for m in found.messages if m["ts"] == ts), None)
            if message is None:
                message = next((m for r in found.replies.values() for m in r if m["ts"] == ts), None)
            if message is None:
                raise KeyError(f"no message {ts} in {channel}")
            block_id, button = _button(message, action_id)
            payload = {
                "type": "block_actions",
                "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": "T0STANDIN"},
                "api_app_id": "A0STANDIN",
                "team": {"id": "T0STANDIN", "domain": "standin"},
                "container": {"type": "message", "message_ts": ts, "channel_id": found.id, "is_ephemeral": False},
                "trigger_id": f"{next(self._seq)}.standin",
                "channel": {"id": found.id, "name": found.name},
                "message": json.loads(json.dumps(message)),
                "response_url": f"{self.url}/_standin/response",
                "actions": [
                    {
                        "type": "button",
                        "action_id": action_id,
                        "block_id": block_id,
                        "text": button.get("text", {}),
                        "value": button.get("value", ""),
                        "action_ts": self._ts(),
                    }
                ],
            }
            timestamp = str(int(self.clock.now().timestamp()))
        body = urlencode({"payload": json.dumps(payload)})
        signature = SignatureVerifier(self.signing_secret).generate_signature(timestamp=timestamp, body=body) or ""
        request = urllib.request.Request(
            self.interactivity_url,
            data=body.encode(),
            method="POST",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Slack-Request-Timestamp": timestamp,
                "X-Slack-Signature": signature,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return int(answer.status), answer.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode("utf-8", "replace")

    # -- state --------------------------------------------------------------------------------------

    def _find(self, channel: str) -> _Channel:
        if channel in self._channels:
            return self._channels[channel]
        name = channel.lstrip("#")
        if name in self._by_name:
            return self._channels[self._by_name[name]]
        raise KeyError(f"no channel {channel!r}")

    def _channel(self, ref: str) -> _Channel:
        """The channel a call names, made on first use from a name (or from an id this stand-in, or an earlier run of
        it, derived from a name: a workspace's channels outlive a restart); other ids are channel_not_found."""
        if not ref:
            raise _Rejected("channel_not_found")
        try:
            return self._find(ref)
        except KeyError:
            name = _name_of(ref) if _ID.fullmatch(ref) else ref.lstrip("#")
        if name is None:
            raise _Rejected("channel_not_found")
        channel = _Channel(_id_of(name), name)
        self._channels[channel.id] = channel
        self._by_name[name] = channel.id
        return channel

    def _ts(self) -> str:
        return f"{int(self.clock.now().timestamp())}.{next(self._seq):06d}"

    def _rate_limit(self, channel: _Channel) -> None:
        if self.rate_limit_seconds is None:
            return
        now = self.clock.now().timestamp()
        last = self._last_post.get(channel.id)
        if last is not None and now - last < self.rate_limit_seconds:
            raise _RateLimited(max(1, math.ceil(self.rate_limit_seconds - (now - last))))
        self._last_post[channel.id] = now

    def _post(self, channel: _Channel, body: Json, files: list[Json] | None = None) -> Json:
        text, blocks = body.get("text"), _json_field(body.get("blocks"))
        if not text and not blocks and not files:
            raise _Rejected("no_text")
        _check_content(text, blocks)
        thread_ts = body.get("thread_ts") or None
        if thread_ts and not any(m["ts"] == thread_ts for m in channel.messages):
            raise _Rejected("thread_not_found")
        self._rate_limit(channel)
        message: Json = {
            "type": "message",
            "ts": self._ts(),
            "text": text or "",
            "user": "U0STANDIN",
            "bot_id": "B0STANDIN",
        }
        if blocks:
            message["blocks"] = blocks
        if files:
            message["files"] = files
        metadata = _json_field(body.get("metadata"))
        if metadata:
            message["metadata"] = metadata
        if thread_ts:
            message["thread_ts"] = thread_ts
            channel.replies.setdefault(thread_ts, []).append(message)
            parent = next(m for m in channel.messages if m["ts"] == thread_ts)
            parent["thread_ts"] = thread_ts
            parent["reply_count"] = len(channel.replies[thread_ts])
        else:
            channel.messages.append(message)
        return message

    # -- Web API methods ----------------------------------------------------------------------------

    def _api(self, method: str, body: Json) -> Json:
        handler = _METHODS.get(method)
        if handler is None:
            raise _Rejected("unknown_method", 404)
        return handler(self, body)

    def _auth_test(self, body: Json) -> Json:
        return {
            "url": self.url + "/",
            "team": "Stand-in",
            "user": "tower",
            "team_id": "T0STANDIN",
            "user_id": "U0STANDIN",
            "bot_id": "B0STANDIN",
        }

    def _chat_post(self, body: Json) -> Json:
        channel = self._channel(str(body.get("channel", "")))
        message = self._post(channel, body)
        return {"channel": channel.id, "ts": message["ts"], "message": message}

    def _chat_update(self, body: Json) -> Json:
        channel = self._channel(str(body.get("channel", "")))
        ts = str(body.get("ts", ""))
        found = next((m for m in channel.messages if m["ts"] == ts), None)
        if found is None:
            found = next((m for r in channel.replies.values() for m in r if m["ts"] == ts), None)
        if found is None:
            raise _Rejected("message_not_found")
        text, blocks = body.get("text"), _json_field(body.get("blocks"))
        if not text and not blocks:
            raise _Rejected("no_text")
        _check_content(text, blocks)
        found.setdefault("edits", []).append({"text": found.get("text", ""), "blocks": found.get("blocks")})
        found["text"] = text or ""
        if blocks is not None:
            found["blocks"] = blocks
        found["edited"] = {"user": "U0STANDIN", "ts": self._ts()}
        return {"channel": channel.id, "ts": ts, "text": found["text"], "message": found}

    def _chat_delete(self, body: Json) -> Json:
        """A message deleted (as a person deletes one in Slack): gone from the channel or its thread."""
        channel = self._channel(str(body.get("channel", "")))
        ts = str(body.get("ts", ""))
        for messages in (channel.messages, *channel.replies.values()):
            found = next((m for m in messages if m["ts"] == ts), None)
            if found is not None:
                messages.remove(found)
                channel.replies.pop(ts, None)
                return {"channel": channel.id, "ts": ts}
        raise _Rejected("message_not_found")

    def _history(self, messages: list[Json], body: Json) -> Json:
        oldest = float(body.get("oldest") or 0)
        latest = float(body.get("latest") or math.inf)
        limit = int(body.get("limit") or 100)
        start = int(body.get("cursor") or 0)
        metadata = str(body.get("include_all_metadata", "")).lower() in ("1", "true")
        chosen = [m for m in messages if oldest <= float(m["ts"]) <= latest]
        page = chosen[start : start + limit]
        more = start + limit < len(chosen)
        out = [m if metadata else {k: v for k, v in m.items() if k != "metadata"} for m in page]
        return {
            "messages": out,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    def _conversations_history(self, body: Json) -> Json:
        channel = self._channel(str(body.get("channel", "")))
        return self._history(list(reversed(channel.messages)), body)  # newest first, like Slack

    def _conversations_replies(self, body: Json) -> Json:
        channel = self._channel(str(body.get("channel", "")))
        ts = str(body.get("ts", ""))
        parent = next((m for m in channel.messages if m["ts"] == ts), None)
        if parent is None:
            raise _Rejected("thread_not_found")
        return self._history([parent, *channel.replies.get(ts, [])], body)

    def _conversations_list(self, body: Json) -> Json:
        limit = int(body.get("limit") or 100)
        start = int(body.get("cursor") or 0)
        listed = [{"id": c.id, "name": c.name, "is_channel": True} for c in self._channels.values()]
        more = start + limit < len(listed)
        cursor = str(start + limit) if more else ""
        return {"channels": listed[start : start + limit], "response_metadata": {"next_cursor": cursor}}

    def _upload_url(self, body: Json) -> Json:
        if not body.get("filename") or not body.get("length"):
            raise _Rejected("invalid_arguments")
        file_id = f"F{next(self._ids):07d}"
        self._uploads[file_id] = {"name": body["filename"], "length": int(body["length"]), "data": b""}
        return {"upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    def _complete_upload(self, body: Json) -> Json:
        files = _json_field(body.get("files")) or []
        shared: list[Json] = []
        for item in files:
            upload = self._uploads.get(str(item.get("id")))
            if upload is None or "uploaded" not in upload:
                raise _Rejected("file_not_found")
            upload["title"] = item.get("title") or upload["name"]
            shared.append(
                {"id": item["id"], "name": upload["name"], "title": upload["title"], "size": len(upload["data"])}
            )
        channel_ref = body.get("channel_id") or body.get("channels")
        shares: Json = {}
        if channel_ref:
            channel = self._channel(str(channel_ref).split(",")[0])
            comment = {"text": body.get("initial_comment") or "", "thread_ts": body.get("thread_ts")}
            message = self._post(channel, comment, files=shared)
            shares = {"public": {channel.id: [{"ts": message["ts"], "channel_name": channel.name}]}}
        return {"files": [{**f, "shares": shares} for f in shared]}


class _RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after}")
        self.retry_after = retry_after


_METHODS: dict[str, Callable[[SlackStandIn, Json], Json]] = {
    "auth.test": SlackStandIn._auth_test,
    "chat.postMessage": SlackStandIn._chat_post,
    "chat.update": SlackStandIn._chat_update,
    "chat.delete": SlackStandIn._chat_delete,
    "conversations.history": SlackStandIn._conversations_history,
    "conversations.replies": SlackStandIn._conversations_replies,
    "conversations.list": SlackStandIn._conversations_list,
    "files.getUploadURLExternal": SlackStandIn._upload_url,
    "files.completeUploadExternal": SlackStandIn._complete_upload,
}


def _button(message: Json, action_id: str) -> tuple[str, Json]:
    """The block id and the button element with `action_id` in a message's actions blocks; KeyError when none."""
    for block in message.get("blocks") or []:
        if isinstance(block, dict) and block.get("type") == "actions":
            for element in block.get("elements") or []:
                if isinstance(element, dict) and element.get("action_id") == action_id:
                    return str(block.get("block_id") or ""), element
    raise KeyError(f"message {message.get('ts')} has no button {action_id!r}")


# Limits Slack enforces on a message: a message breaking one is refused with `invalid_blocks` (`msg_too_long` for
# text), so a renderer that oversteps fails here as it would there. slack-sdk's own Block Kit models check most
# (text lengths, numbers of fields and elements, block ids); these are the documented ones they leave out.
TEXT_MAX = 40_000
_BLOCKS_MAX = 50
_FIELD_MAX = 2000
_BUTTON_TEXT_MAX, _BUTTON_VALUE_MAX = 75, 2000


def block_problems(blocks: Any) -> list[str]:
    """What in a message's `blocks` Slack would refuse, as slack-sdk's Block Kit models validate each block, and
    beyond them: more than 50 blocks, a field over 2,000 characters, a button's text over 75 or its value over
    2,000. Empty when Slack would take them."""
    if not isinstance(blocks, list):
        return ["blocks is not a list"]
    problems = [f"{len(blocks)} blocks (at most {_BLOCKS_MAX})"] if len(blocks) > _BLOCKS_MAX else []
    for n, block in enumerate(blocks):
        try:
            parsed = Block.parse(block) if isinstance(block, dict) else None
            if parsed is None:
                problems.append(f"blocks[{n}]: not a block Slack knows")
                continue
            parsed.validate_json()
        except (SlackObjectFormationError, KeyError, TypeError, ValueError) as exc:
            problems.append(f"blocks[{n}]: {exc}")
            continue
        problems.extend(
            f"blocks[{n}].fields[{i}]: over {_FIELD_MAX} characters"
            for i, f in enumerate(block.get("fields") or [])
            if isinstance(f, dict) and len(str(f.get("text", ""))) > _FIELD_MAX
        )
        for i, element in enumerate(block.get("elements") or []):
            if not isinstance(element, dict) or element.get("type") != "button":
                continue
            label = element.get("text")
            if isinstance(label, dict) and len(str(label.get("text", ""))) > _BUTTON_TEXT_MAX:
                problems.append(f"blocks[{n}].elements[{i}]: button text over {_BUTTON_TEXT_MAX} characters")
            if len(str(element.get("value", ""))) > _BUTTON_VALUE_MAX:
                problems.append(f"blocks[{n}].elements[{i}]: button value over {_BUTTON_VALUE_MAX} characters")
    return problems


def _check_content(text: Any, blocks: Any) -> None:
    """Refuse what Slack refuses: text over its limit, blocks breaking Block Kit's."""
    if isinstance(text, str) and len(text) > TEXT_MAX:
        raise _Rejected("msg_too_long")
    if blocks and block_problems(blocks):
        raise _Rejected("invalid_blocks")


def _json_field(value: Any) -> Any:
    """A field that form bodies carry as JSON text and JSON bodies as a value."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _handler(standin: SlackStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "SlackStandIn/1.0"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/_standin/messages":
                self._answer(200, standin.snapshot())
            elif path == "/_standin/calls":
                calls = [
                    {
                        "method": c.method,
                        "path": c.path,
                        "body": c.body,
                        "status": c.status,
                        "at": c.at.isoformat() if c.at else None,
                    }
                    for c in standin.calls
                ]
                self._answer(200, {"calls": calls})
            else:
                self._answer(404, {"ok": False, "error": "not_found"})

        def do_POST(self) -> None:
            split = urlsplit(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
            if split.path.startswith("/api/"):
                method = split.path[len("/api/") :]
                body = self._body(raw, split.query)
                call = Call(method, split.path, body, headers)
                self._serve(call, lambda: self._web_api(method, body))
            elif split.path.startswith("/webhook/"):
                channel = unquote(split.path[len("/webhook/") :])
                body = self._body(raw, "")
                self._serve(Call("webhook", split.path, body, headers), lambda: self._webhook(channel, body))
            elif split.path == "/_standin/click":
                self._click(self._body(raw, split.query))
            elif split.path.startswith("/upload/"):
                file_id = split.path[len("/upload/") :]
                call = Call("upload", split.path, {"file_id": file_id, "bytes": len(raw)}, headers)
                self._serve(call, lambda: self._upload(file_id, raw))
            else:
                self._answer(404, {"ok": False, "error": "not_found"})

        def _body(self, raw: bytes, query: str) -> Json:
            body: Json = dict(parse_qsl(query))
            kind = self.headers.get("Content-Type", "")
            if "json" in kind and raw:
                loaded = json.loads(raw)
                if isinstance(loaded, dict):
                    body.update(loaded)
            elif raw:
                body.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
            return body

        def _serve(self, call: Call, work: Callable[[], tuple[int, Any, dict[str, str]]]) -> None:
            with standin._lock:
                call.at = standin.clock.now()
                standin._calls.append(call)
                queue = standin._faults.get(call.method)
                fault = queue.popleft() if queue else None
            if fault is not None and fault.carried_out:
                with standin._lock:
                    work()
            if fault is not None and (fault.status is not None or fault.error is not None):
                time.sleep(fault.delay)
                if fault.error is not None:
                    status, body, extra = 200, {"ok": False, "error": fault.error}, {}
                else:
                    assert fault.status is not None
                    status, body = (
                        fault.status,
                        {"ok": False, "error": "ratelimited" if fault.status == 429 else "server_error"},
                    )
                    extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            else:
                with standin._lock:
                    status, body, extra = work()
                if fault is not None:
                    time.sleep(fault.delay)
            call.status, call.response = status, body if isinstance(body, dict) else {"text": body}
            self._answer(status, body, extra)

        def _web_api(self, method: str, body: Json) -> tuple[int, Any, dict[str, str]]:
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or not auth[7:].strip():
                return 200, {"ok": False, "error": "not_authed"}, {}
            if standin.token and auth[7:].strip() != standin.token:
                return 200, {"ok": False, "error": "invalid_auth"}, {}
            try:
                return 200, {"ok": True, **standin._api(method, body)}, {}
            except _Rejected as exc:
                return exc.status, {"ok": False, "error": exc.error}, {}
            except _RateLimited as exc:
                return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(exc.retry_after)}

        def _click(self, body: Json) -> None:
            try:
                status, text = standin.click(
                    str(body.get("channel", "")),
                    str(body.get("ts", "")),
                    str(body.get("action_id", "")),
                    str(body.get("user") or "") or None,
                )
            except KeyError as exc:
                self._answer(404, {"ok": False, "error": str(exc.args[0] if exc.args else exc)})
            except RuntimeError as exc:
                self._answer(409, {"ok": False, "error": str(exc)})
            except OSError as exc:  # the interactivity URL does not answer
                self._answer(502, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            else:
                self._answer(200, {"ok": 200 <= status < 300, "status": status, "answer": text})

        def _webhook(self, channel: str, body: Json) -> tuple[int, Any, dict[str, str]]:
            try:
                standin._post(standin._channel(channel), {**body, "thread_ts": None, "metadata": None})
            except _Rejected as exc:
                if exc.error == "channel_not_found":
                    return 404, exc.error, {}
                return 400, "invalid_payload" if exc.error == "no_text" else exc.error, {}
            except _RateLimited as exc:
                return 429, "rate_limited", {"Retry-After": str(exc.retry_after)}
            return 200, "ok", {}

        def _upload(self, file_id: str, raw: bytes) -> tuple[int, Any, dict[str, str]]:
            upload = standin._uploads.get(file_id)
            if upload is None:
                return 404, "file not found", {}
            upload["data"], upload["uploaded"] = raw, True
            return 200, f"OK - {len(raw)}", {}

        def _answer(self, status: int, body: Any, extra: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode() if isinstance(body, dict) else str(body).encode()
            try:
                self.send_response(status)
                self.send_header(
                    "Content-Type",
                    "application/json; charset=utf-8" if isinstance(body, dict) else "text/plain; charset=utf-8",
                )
                self.send_header("Content-Length", str(len(data)))
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout was shorter than a slow fault)

    return Handler


def main(argv: list[str] | None = None) -> None:
    """Run the stand-in until interrupted: `python -m alerting.standin --port 8765`."""
    parser = argparse.ArgumentParser(prog="python -m alerting.standin", description="A local Slack stand-in.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (0: a free one; default 8765)")
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        help="answer 429 to a second message per channel within this many seconds",
    )
    args = parser.parse_args(argv)
    standin = SlackStandIn(args.port, args.host, rate_limit_seconds=args.rate_limit)
    standin.start()
    print(f"Slack stand-in on {standin.url}", flush=True)
    print(f"  TOWER_SLACK_API_URL={standin.api_url}  TOWER_SLACK_BOT_TOKEN=xoxb-standin", flush=True)
    print(f"  webhook: {standin.webhook_url('#alerts')}   messages: {standin.url}/_standin/messages", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()


if __name__ == "__main__":
    main()
