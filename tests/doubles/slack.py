"""A protocol-faithful Slack for tests: Web API, response_url sink and Socket Mode, on 127.0.0.1.

The real bot talks to this server through the real `slack_sdk`/`slack_bolt` clients (pointed at it with
`base_url`), so the double must answer like Slack does, *including where Slack says no*: a wrong token,
a channel the bot is not in, an update of someone else's message, a rate limit with `Retry-After`,
blocks over Block Kit's limits. A double that accepts anything proves nothing (DESIGN §7).

It also keeps the conversation (messages per channel and thread, edits, ephemerals, response_url
posts) so a test can read what a person would see in Slack, not just which methods were called.

Shapes follow docs.slack.dev and slack_sdk (see /work/shared/reference/protocols.md §1).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web

T = TypeVar("T")

# ----------------------------------------------------------------------------------------- identities

BOT_TOKEN = "xoxb-1111-2222-opsbottesttoken"
APP_TOKEN = "xapp-1-A0OPSBOT-3333-opsbotapptoken"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM_ID = "T0OPSTEAM"
TEAM_DOMAIN = "opsbot-test"
APP_ID = "A0OPSBOT"
BOT_USER_ID = "U0OPSBOT"
BOT_ID = "B0OPSBOT"
BOT_NAME = "opsbot"

#: Slack lets an app use one response_url "up to 5 times within 30 minutes".
_RESPONSE_URL_MAX_USES = 5

_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


# ----------------------------------------------------------------------------------------- signing


def sign(
    body: str,
    secret: str = SIGNING_SECRET,
    ts: int | None = None,
    *,
    content_type: str = "application/x-www-form-urlencoded",
) -> dict[str, str]:
    """Headers Slack would send with `body` (v0 scheme), so tests can sign exactly the bytes they post.

    `ts` lets a test produce a stale request (Slack's verifier rejects anything older than 5 minutes).
    """
    stamp = str(int(time.time()) if ts is None else ts)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": content_type,
    }


def _trigger_id() -> str:
    return f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"


def slash_command_payload(
    *,
    text: str,
    response_url: str,
    command: str = "/ops",
    user_id: str = "U0ALICE",
    user_name: str = "alice",
    channel_id: str = "C0OPS",
    channel_name: str = "ops",
    team_id: str = TEAM_ID,
    team_domain: str = TEAM_DOMAIN,
    api_app_id: str = APP_ID,
    trigger_id: str | None = None,
    token: str = "deprecated-verification-token",
) -> dict[str, str]:
    """The fields of a slash command, in Slack's order; the same dict is the Socket Mode `payload`."""
    return {
        "token": token,
        "team_id": team_id,
        "team_domain": team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or _trigger_id(),
    }


def slash_command_body(**fields: Any) -> str:
    """A slash command as Slack posts it over HTTP: one form-encoded line (see `slash_command_payload`)."""
    return urlencode(slash_command_payload(**fields))


def _find_element(blocks: Sequence[Mapping[str, Any]], action_id: str) -> tuple[str, dict[str, Any]] | None:
    for block in blocks:
        candidates: list[Any] = []
        if block.get("type") == "actions":
            candidates = list(block.get("elements", []))
        elif isinstance(block.get("accessory"), dict):
            candidates = [block["accessory"]]
        for element in candidates:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return str(block.get("block_id", "")), element
    return None


def block_actions_payload(
    *,
    message: Mapping[str, Any] | Message,
    action_id: str,
    response_url: str,
    user_id: str = "U0BOB",
    user_name: str = "bob",
    channel_id: str | None = None,
    channel_name: str = "ops",
    team_id: str = TEAM_ID,
    team_domain: str = TEAM_DOMAIN,
    api_app_id: str = APP_ID,
    trigger_id: str | None = None,
    is_ephemeral: bool = False,
) -> dict[str, Any]:
    """What Slack sends when a person clicks the button `action_id` of `message`.

    The button is looked up in the message's blocks, as Slack does: the action carries that button's
    `block_id`, `value` and `text`. Clicking a button that the message no longer shows raises
    LookupError, which is how tests prove that buttons disappear.
    """
    msg = message.as_api() if isinstance(message, Message) else dict(message)
    if channel_id is None:
        channel_id = message.channel if isinstance(message, Message) else str(msg.get("channel", ""))
    found = _find_element(msg.get("blocks", []), action_id)
    if found is None:
        raise LookupError(f"message {msg.get('ts')} shows no element with action_id {action_id!r}")
    block_id, element = found
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": block_id,
        "text": element.get("text"),
        "type": element.get("type", "button"),
        "action_ts": f"{time.time():.6f}",
    }
    for key in ("value", "style"):
        if key in element:
            action[key] = element[key]
    msg.pop("channel", None)
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": api_app_id,
        "token": "deprecated-verification-token",
        "container": {
            "type": "message",
            "message_ts": msg.get("ts"),
            "channel_id": channel_id,
            "is_ephemeral": is_ephemeral,
        },
        "trigger_id": trigger_id or _trigger_id(),
        "team": {"id": team_id, "domain": team_domain},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name},
        "message": msg,
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }


def block_actions_body(**fields: Any) -> str:
    """A block_actions request as Slack posts it over HTTP: `payload=<urlencoded JSON>`."""
    return urlencode({"payload": json.dumps(block_actions_payload(**fields), separators=(",", ":"))})


# ----------------------------------------------------------------------------------------- Block Kit


_BLOCK_TYPES = {
    "actions",
    "context",
    "divider",
    "file",
    "header",
    "image",
    "input",
    "markdown",
    "rich_text",
    "section",
    "video",
    "table",
    "context_actions",
}
_ELEMENT_TYPES = {
    "button",
    "checkboxes",
    "datepicker",
    "datetimepicker",
    "image",
    "multi_static_select",
    "multi_external_select",
    "multi_users_select",
    "multi_conversations_select",
    "multi_channels_select",
    "overflow",
    "plain_text_input",
    "radio_buttons",
    "static_select",
    "external_select",
    "users_select",
    "conversations_select",
    "channels_select",
    "timepicker",
    "workflow_button",
    "email_text_input",
    "number_input",
    "url_text_input",
    "rich_text_input",
    "file_input",
}


def _text_errors(obj: Any, ptr: str, limit: int, *, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
        return [f"must be a text object [json-pointer:{ptr}]"]
    if plain_only and obj["type"] != "plain_text":
        return [f"must be a plain_text object [json-pointer:{ptr}/type]"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"must be more than 0 characters [json-pointer:{ptr}/text]"]
    if len(text) > limit:
        return [f"must be less than {limit + 1} characters [json-pointer:{ptr}/text]"]
    return []


def _confirm_errors(confirm: Any, ptr: str) -> list[str]:
    if not isinstance(confirm, dict):
        return [f"must be an object [json-pointer:{ptr}]"]
    errors = _text_errors(confirm.get("title"), f"{ptr}/title", 100, plain_only=True)
    errors += _text_errors(confirm.get("text"), f"{ptr}/text", 300)
    errors += _text_errors(confirm.get("confirm"), f"{ptr}/confirm", 30, plain_only=True)
    errors += _text_errors(confirm.get("deny"), f"{ptr}/deny", 30, plain_only=True)
    if confirm.get("style") not in (None, "primary", "danger"):
        errors.append(f"must be one of primary, danger [json-pointer:{ptr}/style]")
    return errors


def _element_errors(element: Any, ptr: str) -> list[str]:
    if not isinstance(element, dict) or element.get("type") not in _ELEMENT_TYPES:
        return [f"unsupported element type [json-pointer:{ptr}/type]"]
    errors: list[str] = []
    action_id = element.get("action_id")
    if action_id is not None and (not isinstance(action_id, str) or len(action_id) > 255):
        errors.append(f"must be less than 256 characters [json-pointer:{ptr}/action_id]")
    if element["type"] == "button":
        errors += _text_errors(element.get("text"), f"{ptr}/text", 75, plain_only=True)
        value = element.get("value")
        if value is not None and (not isinstance(value, str) or len(value) > 2000):
            errors.append(f"must be less than 2001 characters [json-pointer:{ptr}/value]")
        url = element.get("url")
        if url is not None and (not isinstance(url, str) or len(url) > 3000):
            errors.append(f"must be less than 3001 characters [json-pointer:{ptr}/url]")
        elif isinstance(url, str) and not url.startswith(("http://", "https://")):
            errors.append(f"invalid_url [json-pointer:{ptr}/url]")  # Slack opens only web links
        if element.get("style") not in (None, "primary", "danger"):
            errors.append(f"must be one of primary, danger [json-pointer:{ptr}/style]")
        if "confirm" in element:
            errors += _confirm_errors(element["confirm"], f"{ptr}/confirm")
    return errors


def validate_blocks(blocks: Any, *, max_blocks: int = 50) -> list[str]:
    """Slack's `invalid_blocks` reasons for a message's blocks (empty when Slack would accept them).

    Covers the limits a bot hits in practice (counts, lengths, ids, button fields), not every rule of
    Block Kit: enough that output over a limit fails here as it would in Slack.
    """
    if not isinstance(blocks, list):
        return ["must be an array [json-pointer:/blocks]"]
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(f"must be less than {max_blocks + 1} items [json-pointer:/blocks]")
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        ptr = f"/blocks/{i}"
        if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
            errors.append(f"unsupported block type [json-pointer:{ptr}/type]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not block_id or len(block_id) > 255:
                errors.append(f"must be less than 256 characters [json-pointer:{ptr}/block_id]")
            elif block_id in block_ids:
                errors.append(f"duplicate block_id {block_id} [json-pointer:{ptr}/block_id]")
            else:
                block_ids.add(block_id)
        kind = block["type"]
        if kind == "section":
            if "text" not in block and "fields" not in block:
                errors.append(f"must provide text or fields [json-pointer:{ptr}]")
            if "text" in block:
                errors += _text_errors(block["text"], f"{ptr}/text", 3000)
            if "fields" in block:
                fields = block["fields"]
                if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                    errors.append(f"must have 1 to 10 items [json-pointer:{ptr}/fields]")
                else:
                    for j, f in enumerate(fields):
                        errors += _text_errors(f, f"{ptr}/fields/{j}", 2000)
            if "accessory" in block:
                errors += _element_errors(block["accessory"], f"{ptr}/accessory")
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                errors.append(f"must have 1 to 10 items [json-pointer:{ptr}/elements]")
            else:
                for j, el in enumerate(elements):
                    if isinstance(el, dict) and el.get("type") == "image":
                        continue
                    errors += _text_errors(el, f"{ptr}/elements/{j}", 3000)
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                errors.append(f"must have 1 to 25 items [json-pointer:{ptr}/elements]")
            else:
                seen: set[str] = set()
                for j, el in enumerate(elements):
                    errors += _element_errors(el, f"{ptr}/elements/{j}")
                    aid = el.get("action_id") if isinstance(el, dict) else None
                    if isinstance(aid, str):
                        if aid in seen:
                            errors.append(f"duplicate action_id {aid} [json-pointer:{ptr}/elements/{j}]")
                        seen.add(aid)
        elif kind == "header":
            errors += _text_errors(block.get("text"), f"{ptr}/text", 150, plain_only=True)
    return errors


# ----------------------------------------------------------------------------------------- records


@dataclass
class ApiCall:
    """One Web API request as received; `params` merges query, form and JSON with JSON-in-form decoded."""

    method: str
    http_method: str
    params: dict[str, Any]
    token: str | None
    content_type: str
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.response.get("ok") is True

    @property
    def error(self) -> str | None:
        value = self.response.get("error")
        return str(value) if value is not None else None


@dataclass
class Message:
    """A message as Slack keeps it; `versions` holds what it looked like before each update."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    user: str
    bot_id: str | None
    thread_ts: str | None = None
    reply_broadcast: bool = False
    metadata: dict[str, Any] | None = None
    deleted: bool = False
    versions: list[dict[str, Any]] = field(default_factory=list)
    team: str = TEAM_ID
    app_id: str = APP_ID

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    @property
    def edits(self) -> int:
        return len(self.versions)

    def block_ids(self) -> list[str]:
        return [str(b.get("block_id", "")) for b in self.blocks]

    def action_ids(self) -> list[str]:
        out: list[str] = []
        for b in self.blocks:
            if b.get("type") == "actions":
                out += [str(e.get("action_id")) for e in b.get("elements", [])]
            elif isinstance(b.get("accessory"), dict):
                out.append(str(b["accessory"].get("action_id")))
        return out

    def all_text(self) -> str:
        """Text a person would read: the blocks' text (or the fallback when there are none)."""
        if not self.blocks:
            return self.text
        parts: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
                    parts.append(node["text"])
                    return
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(self.blocks)
        return "\n".join(parts)

    def as_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "message",
            "text": self.text,
            "user": self.user,
            "ts": self.ts,
            "team": self.team,
        }
        if self.bot_id:
            out.update(
                {
                    "bot_id": self.bot_id,
                    "app_id": self.app_id,
                    "bot_profile": {
                        "id": self.bot_id,
                        "app_id": self.app_id,
                        "name": BOT_NAME,
                        "team_id": self.team,
                        "deleted": False,
                    },
                }
            )
        if self.blocks:
            out["blocks"] = json.loads(json.dumps(self.blocks))
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.metadata:
            out["metadata"] = self.metadata
        if self.versions:
            out["edited"] = {"user": self.user, "ts": self.ts}
        return out


@dataclass
class Ephemeral:
    """A message only `user` saw (chat.postEphemeral, or a response_url post that was not in_channel)."""

    channel: str
    user: str
    text: str
    blocks: list[dict[str, Any]]
    message_ts: str
    thread_ts: str | None
    via: str  # chat.postEphemeral | response_url


@dataclass
class Hook:
    """A response_url Slack handed out, and what it is bound to (a channel, a user, maybe a message)."""

    id: str
    channel: str | None
    user: str | None
    message_ts: str | None
    uses: int = 0


@dataclass
class HookPost:
    hook_id: str
    body: Any
    status: int


@dataclass
class SocketConnection:
    """One Socket Mode websocket; `received` is everything the client sent (acks included)."""

    ticket: str
    ws: web.WebSocketResponse
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False


@dataclass
class SentRequest:
    """What a signed HTTP delivery to the bot got back."""

    status: int
    text: str
    headers: dict[str, str]
    response_url: str = ""

    def json(self) -> Any:
        return json.loads(self.text)


class _ApiError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


_JSON_FIELDS = ("blocks", "attachments", "metadata")


# ----------------------------------------------------------------------------------------- the double


class SlackApiDouble:
    """Slack's Web API at /api/{method}, response_url sink at /hooks/{id}, Socket Mode at /socket.

    Start it with `await start()` (or the `slack_double` fixture); point clients at `api_url`.
    Configure refusals with `set_channel_error`, `set_user_not_in_channel`, `rate_limit`, `fail_next`;
    read the conversation with `messages`, `replies`, `message`, `ephemerals`, `hook_posts`, `calls`.
    """

    def __init__(
        self,
        *,
        bot_token: str = BOT_TOKEN,
        app_token: str = APP_TOKEN,
        user_token: str | None = None,
        team_id: str = TEAM_ID,
        team: str = TEAM_DOMAIN,
        bot_user_id: str = BOT_USER_ID,
        bot_id: str = BOT_ID,
        app_id: str = APP_ID,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.user_token = user_token
        self.team_id = team_id
        self.team = team
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id

        self.calls: list[ApiCall] = []
        self.posted: list[Message] = []
        self.ephemeral: list[Ephemeral] = []
        self.hook_posts: list[HookPost] = []
        self.hooks: dict[str, Hook] = {}
        self.socket_connections: list[SocketConnection] = []

        self._messages: dict[tuple[str, str], Message] = {}
        self._channel_names: dict[str, str] = {}
        self._channel_errors: dict[str, str] = {}
        self._not_in_channel: set[tuple[str, str]] = set()
        self._usergroups: dict[str, list[str]] = {}
        self._users: dict[str, dict[str, Any]] = {}
        self._revoked: set[str] = set()
        self._rate_limits: dict[str, list[int]] = {}
        self._failures: dict[str, list[tuple[int, int]]] = {}
        self._delays: dict[str, float] = {}
        self._tickets: set[str] = set()
        self._pending_acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._last_ts_us = 0
        self._hook_seq = itertools.count(1)
        self._envelope_seq = itertools.count(1)

        self.app = web.Application()
        self.app.router.add_route("*", "/api/{method}", self._api)
        self.app.router.add_post("/hooks/{hook_id}", self._hook)
        self.app.router.add_get("/socket", self._socket)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle and addresses

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SlackApiDouble:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        for conn in self.socket_connections:
            if not conn.ws.closed:
                await conn.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
        for fut in self._pending_acks.values():
            fut.cancel()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackApiDouble:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """For `WebClient(base_url=...)` and `SLACK_API_URL`: ends with `/`, as slack_sdk's urljoin needs."""
        return f"{self.base_url}/api/"

    def new_response_url(
        self, *, channel: str | None = None, user: str | None = None, message_ts: str | None = None
    ) -> str:
        """Mint a response_url the way Slack does per command or click; posts to it land in the sink."""
        hook_id = f"{next(self._hook_seq)}{secrets.token_hex(6)}"
        self.hooks[hook_id] = Hook(hook_id, channel, user, message_ts)
        return f"{self.base_url}/hooks/{hook_id}"

    # ------------------------------------------------------------------ configuration

    def add_channel(self, channel_id: str, name: str) -> None:
        """Let chat.postMessage resolve `#name` to `channel_id` (chat.update still needs the ID)."""
        self._channel_names[name.lstrip("#")] = channel_id

    def set_channel_error(self, channel: str, error: str | None) -> None:
        """Make every chat.* call for `channel` fail: `channel_not_found`, `not_in_channel`, `is_archived`."""
        channel = self._channel_names.get(channel.lstrip("#"), channel)
        if error is None:
            self._channel_errors.pop(channel, None)
        else:
            self._channel_errors[channel] = error

    def set_user_not_in_channel(self, channel: str, user: str, absent: bool = True) -> None:
        if absent:
            self._not_in_channel.add((channel, user))
        else:
            self._not_in_channel.discard((channel, user))

    def add_usergroup(self, usergroup_id: str, users: Sequence[str]) -> None:
        self._usergroups[usergroup_id] = list(users)

    def add_user(
        self, user_id: str, name: str, *, real_name: str = "", is_bot: bool = False, deleted: bool = False
    ) -> None:
        self._users[user_id] = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": deleted,
            "real_name": real_name or name,
            "is_bot": is_bot,
            "is_app_user": False,
            "profile": {"display_name": name, "real_name": real_name or name, "team": self.team_id},
        }

    def revoke(self, token: str) -> None:
        """The token was revoked (app uninstalled): Slack answers `token_revoked` from now on."""
        self._revoked.add(token)

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """The next `times` calls of `method` get HTTP 429, `Retry-After: retry_after`, `ratelimited`."""
        self._rate_limits[method] = [times, retry_after]

    def fail_next(self, method: str, status: int = 503, times: int = 1) -> None:
        """The next `times` calls of `method` get an HTTP `status` (Slack's own outages, not `ok: false`)."""
        self._failures.setdefault(method, []).append((times, status))

    def set_delay(self, method: str, seconds: float) -> None:
        """Answer `method` late, e.g. to show that an ack does not wait for chat.postMessage."""
        self._delays[method] = seconds

    def post_user_message(
        self, channel: str, text: str, *, user: str = "U0ALICE", thread_ts: str | None = None
    ) -> Message:
        """A person's message; the bot may reply to it in a thread but may not chat.update it."""
        msg = Message(
            channel=channel,
            ts=self._next_ts(),
            text=text,
            blocks=[],
            user=user,
            bot_id=None,
            thread_ts=self._thread_root(channel, thread_ts),
        )
        self._store(msg)
        return msg

    # ------------------------------------------------------------------ reading the conversation

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    def message(self, channel: str, ts: str) -> Message:
        return self._messages[(channel, ts)]

    def messages(self, channel: str) -> list[Message]:
        """Channel-level messages (thread roots and broadcast replies), oldest first."""
        return [
            m
            for m in self.posted
            if m.channel == channel and not m.deleted and (not m.is_reply or m.reply_broadcast)
        ]

    def replies(self, channel: str, ts: str) -> list[Message]:
        """Replies in the thread of `ts`, oldest first (without the root)."""
        return [
            m
            for m in self.posted
            if m.channel == channel and m.is_reply and m.thread_ts == ts and not m.deleted
        ]

    def ephemerals(self, *, channel: str | None = None, user: str | None = None) -> list[Ephemeral]:
        return [
            e
            for e in self.ephemeral
            if (channel is None or e.channel == channel) and (user is None or e.user == user)
        ]

    def hook_bodies(self, hook_url_or_id: str | None = None) -> list[Any]:
        hook_id = hook_url_or_id.rsplit("/", 1)[-1] if hook_url_or_id else None
        return [p.body for p in self.hook_posts if hook_id is None or p.hook_id == hook_id]

    async def wait_for(
        self, predicate: Callable[[], T], timeout: float = 5.0, *, what: str = "condition"
    ) -> T:
        """Poll `predicate` until it returns something truthy (and return that), for at most `timeout` s.

        A bounded wait for work the bot does after acking, not a timing assertion: on a slow machine
        raise `timeout`, never shorten it.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if asyncio.get_running_loop().time() >= deadline:
                raise AssertionError(f"{what} not met within {timeout}s")
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ delivering to the bot (HTTP mode)

    async def send_signed(
        self,
        url: str,
        body: str,
        *,
        secret: str = SIGNING_SECRET,
        ts: int | None = None,
        content_type: str = "application/x-www-form-urlencoded",
        headers: Mapping[str, str] | None = None,
    ) -> SentRequest:
        """POST `body` to the bot the way Slack does (signed over the exact bytes)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        all_headers = {**sign(body, secret, ts, content_type=content_type), **(headers or {})}
        async with self._session.post(url, data=body.encode(), headers=all_headers) as resp:
            return SentRequest(resp.status, await resp.text(), dict(resp.headers))

    async def send_slash_command(
        self, url: str, text: str, *, secret: str = SIGNING_SECRET, ts: int | None = None, **fields: Any
    ) -> SentRequest:
        """Type `/ops <text>` in Slack: a fresh response_url bound to the channel and user, signed POST."""
        channel = fields.get("channel_id", "C0OPS")
        user = fields.get("user_id", "U0ALICE")
        response_url = self.new_response_url(channel=channel, user=user)
        body = slash_command_body(text=text, response_url=response_url, **fields)
        sent = await self.send_signed(url, body, secret=secret, ts=ts)
        sent.response_url = response_url
        return sent

    def click(
        self, message: Message, action_id: str, *, user_id: str = "U0BOB", **fields: Any
    ) -> dict[str, Any]:
        """The block_actions payload of a click on `message` (with a response_url bound to it)."""
        response_url = self.new_response_url(channel=message.channel, user=user_id, message_ts=message.ts)
        return block_actions_payload(
            message=message, action_id=action_id, response_url=response_url, user_id=user_id, **fields
        )

    async def send_click(
        self,
        url: str,
        message: Message,
        action_id: str,
        *,
        secret: str = SIGNING_SECRET,
        ts: int | None = None,
        user_id: str = "U0BOB",
        **fields: Any,
    ) -> SentRequest:
        payload = self.click(message, action_id, user_id=user_id, **fields)
        body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))})
        sent = await self.send_signed(url, body, secret=secret, ts=ts)
        sent.response_url = str(payload["response_url"])
        return sent

    # ------------------------------------------------------------------ Socket Mode

    @property
    def open_socket_connections(self) -> list[SocketConnection]:
        return [c for c in self.socket_connections if not c.closed and not c.ws.closed]

    async def push(
        self,
        type: str,
        payload: Mapping[str, Any],
        *,
        accepts_response_payload: bool | None = None,
        envelope_id: str | None = None,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """Send an envelope to the newest open connection and return the client's ack.

        `accepts_response_payload` defaults as Slack sets it: true for slash commands, false otherwise.
        Raises TimeoutError when the client does not ack within `timeout` s (Slack's own deadline is 3 s).
        """
        conns = self.open_socket_connections
        if not conns:
            raise RuntimeError("no open Socket Mode connection")
        envelope_id = envelope_id or f"{next(self._envelope_seq):04d}-{secrets.token_hex(8)}"
        if accepts_response_payload is None:
            accepts_response_payload = type == "slash_commands"
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "payload": dict(payload),
            "type": type,
            "accepts_response_payload": accepts_response_payload,
        }
        if type == "events_api":
            envelope["retry_attempt"] = retry_attempt or 0
            envelope["retry_reason"] = retry_reason or ""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending_acks[envelope_id] = fut
        conn = conns[-1]
        try:
            conn.sent.append(envelope)
            await conn.ws.send_str(json.dumps(envelope))
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending_acks.pop(envelope_id, None)

    async def push_slash_command(self, text: str, *, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        channel = fields.get("channel_id", "C0OPS")
        user = fields.get("user_id", "U0ALICE")
        response_url = self.new_response_url(channel=channel, user=user)
        payload = slash_command_payload(text=text, response_url=response_url, **fields)
        return await self.push("slash_commands", payload, timeout=timeout)

    async def push_click(
        self, message: Message, action_id: str, *, timeout: float = 5.0, **fields: Any
    ) -> dict[str, Any]:
        return await self.push("interactive", self.click(message, action_id, **fields), timeout=timeout)

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the connected clients to reconnect, as Slack does every few hours."""
        for conn in self.open_socket_connections:
            msg = {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-double"}}
            conn.sent.append(msg)
            await conn.ws.send_str(json.dumps(msg))

    async def drop_socket_connections(self) -> None:
        """Close the websockets abruptly (network loss); a client must notice and reconnect."""
        for conn in self.open_socket_connections:
            await conn.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid or used ticket")
        self._tickets.discard(ticket)  # a ticket opens one connection, like Slack's
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = SocketConnection(ticket=ticket, ws=ws)
        self.socket_connections.append(conn)
        hello = {
            "type": "hello",
            "num_connections": len(self.open_socket_connections),
            "debug_info": {"host": "applink-double", "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": self.app_id},
        }
        conn.sent.append(hello)
        await ws.send_str(json.dumps(hello))
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    data = {"unparsed": msg.data}
                conn.received.append(data)
                fut = self._pending_acks.get(str(data.get("envelope_id", "")))
                if fut is not None and not fut.done():
                    fut.set_result(data)
        finally:
            conn.closed = True
        return ws

    # ------------------------------------------------------------------ HTTP plumbing

    async def _read_params(self, request: web.Request) -> tuple[dict[str, Any], str]:
        params: dict[str, Any] = dict(request.query)
        ctype = request.headers.get("Content-Type", "")
        raw = await request.text()
        if raw:
            if ctype.startswith("application/json"):
                try:
                    body = json.loads(raw)
                except ValueError as e:
                    raise _ApiError("invalid_json") from e
                if not isinstance(body, dict):
                    raise _ApiError("invalid_json")
                params.update(body)
            else:
                params.update(dict(parse_qsl(raw, keep_blank_values=True)))
                for key in _JSON_FIELDS:
                    if isinstance(params.get(key), str):
                        try:
                            params[key] = json.loads(params[key]) if params[key] else []
                        except ValueError as e:
                            raise _ApiError(f"invalid_{key}_format") from e
        return params, ctype

    def _token_kind(self, token: str | None) -> str | None:
        if token == self.bot_token:
            return "bot"
        if token == self.app_token:
            return "app"
        if self.user_token is not None and token == self.user_token:
            return "user"
        return None

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        auth = request.headers.get("Authorization", "")
        token: str | None = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        call = ApiCall(
            method=method,
            http_method=request.method,
            params={},
            token=token,
            content_type=request.headers.get("Content-Type", ""),
        )
        self.calls.append(call)
        try:
            call.params, _ = await self._read_params(request)
        except _ApiError as e:
            return self._answer(call, {"ok": False, "error": e.error})
        if (
            token is None
            and isinstance(call.params.get("token"), str)
            and not call.content_type.startswith("application/json")
        ):
            token = call.token = call.params["token"]  # form posts may carry the token, JSON may not
        call.params.pop("token", None)

        if delay := self._delays.get(method):
            await asyncio.sleep(delay)
        failures = self._failures.get(method)
        if failures:
            times, status = failures[0]
            failures[0] = (times - 1, status)
            if times - 1 <= 0:
                failures.pop(0)
            call.status = status
            call.response = {"ok": False, "error": "fatal_error"}
            return web.Response(
                status=status,
                text="<html><body>Slack is having trouble</body></html>",
                content_type="text/html",
            )

        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return self._answer(call, {"ok": False, "error": "unknown_method", "req_method": method})
        if token is None:
            return self._answer(call, {"ok": False, "error": "not_authed"})
        if token in self._revoked:
            return self._answer(call, {"ok": False, "error": "token_revoked"})
        kind = self._token_kind(token)
        if kind is None:
            return self._answer(call, {"ok": False, "error": "invalid_auth"})
        wants_app = method == "apps.connections.open"
        if (kind == "app") != wants_app:
            return self._answer(call, {"ok": False, "error": "not_allowed_token_type"})

        limit = self._rate_limits.get(method)
        if limit and limit[0] > 0:
            limit[0] -= 1
            call.status = 429
            call.response = {"ok": False, "error": "ratelimited"}
            return web.json_response(call.response, status=429, headers={"Retry-After": str(limit[1])})

        try:
            body = handler(call.params, kind)
        except _ApiError as e:
            body = {"ok": False, "error": e.error, **e.extra}
        return self._answer(call, body)

    def _answer(self, call: ApiCall, body: dict[str, Any]) -> web.Response:
        call.response = body
        return web.json_response(body)

    # ------------------------------------------------------------------ Web API methods

    def _m_auth_test(self, params: dict[str, Any], kind: str) -> dict[str, Any]:
        user = self.bot_user_id if kind == "bot" else "U0HUMANUSER"
        out: dict[str, Any] = {
            "ok": True,
            "url": f"https://{self.team}.slack.com/",
            "team": self.team,
            "user": BOT_NAME if kind == "bot" else "human",
            "team_id": self.team_id,
            "user_id": user,
            "is_enterprise_install": False,
        }
        if kind == "bot":
            out["bot_id"] = self.bot_id
        return out

    def _m_apps_connections_open(self, params: dict[str, Any], kind: str) -> dict[str, Any]:
        ticket = secrets.token_hex(16)
        self._tickets.add(ticket)
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket?ticket={ticket}&app_id={self.app_id}"}

    def _channel_id(self, value: Any, *, allow_names: bool) -> str:
        if not isinstance(value, str) or not value:
            raise _ApiError("channel_not_found")
        name = value.lstrip("#")
        if allow_names and name in self._channel_names:
            channel = self._channel_names[name]
        elif _CHANNEL_ID.match(value):
            channel = value
        elif allow_names and _USER_ID.match(value):
            channel = "D" + value[1:]  # posting to a user id lands in the app's DM with them
        else:
            raise _ApiError("channel_not_found")
        if channel in self._channel_errors:
            raise _ApiError(self._channel_errors[channel])
        return channel

    def _content(
        self, params: dict[str, Any], *, required: bool = True
    ) -> tuple[str | None, list[dict[str, Any]] | None]:
        text = params.get("text")
        blocks = params.get("blocks")
        if text is not None and not isinstance(text, str):
            text = str(text)
        if required and not text and not blocks and not params.get("attachments"):
            raise _ApiError("no_text")
        if text is not None and len(text) > 40000:
            raise _ApiError("msg_too_long")
        if blocks is not None:
            errors = validate_blocks(blocks)
            if errors:
                raise _ApiError(
                    "invalid_blocks",
                    errors=errors,
                    response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
                )
            blocks = json.loads(json.dumps(blocks))
            for i, block in enumerate(blocks):
                block.setdefault(
                    "block_id",
                    hashlib.sha1(f"{i}:{json.dumps(block, sort_keys=True)}".encode()).hexdigest()[:5],
                )
        return text, blocks

    def _next_ts(self) -> str:
        self._last_ts_us = max(int(time.time() * 1_000_000), self._last_ts_us + 1)
        us = self._last_ts_us
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"

    def _thread_root(self, channel: str, thread_ts: str | None) -> str | None:
        if not thread_ts:
            return None
        parent = self._messages.get((channel, thread_ts))
        if parent is not None and parent.thread_ts and parent.thread_ts != parent.ts:
            return parent.thread_ts  # replying to a reply joins the same thread, as in Slack
        return thread_ts

    def _store(self, msg: Message) -> None:
        msg.team, msg.app_id = self.team_id, self.app_id
        self._messages[(msg.channel, msg.ts)] = msg
        self.posted.append(msg)

    @staticmethod
    def _truthy(value: Any) -> bool:
        return value is True or (isinstance(value, str) and value.lower() in ("1", "true"))

    def _m_chat_postMessage(self, params: dict[str, Any], kind: str) -> dict[str, Any]:
        channel = self._channel_id(params.get("channel"), allow_names=True)
        text, blocks = self._content(params)
        thread_ts = self._thread_root(channel, params.get("thread_ts") or None)
        msg = Message(
            channel=channel,
            ts=self._next_ts(),
            text=text or "",
            blocks=blocks or [],
            user=self.bot_user_id,
            bot_id=self.bot_id,
            thread_ts=thread_ts,
            reply_broadcast=bool(thread_ts) and self._truthy(params.get("reply_broadcast")),
            metadata=params.get("metadata") if isinstance(params.get("metadata"), dict) else None,
        )
        self._store(msg)
        return {"ok": True, "channel": channel, "ts": msg.ts, "message": msg.as_api()}

    def _m_chat_update(self, params: dict[str, Any], kind: str) -> dict[str, Any]:
        channel = self._channel_id(params.get("channel"), allow_names=False)
        ts = params.get("ts")
        msg = self._messages.get((channel, ts)) if isinstance(ts, str) else None
        if msg is None or msg.deleted:
            raise _ApiError("message_not_found")
        if msg.user != self.bot_user_id:
            raise _ApiError("cant_update_message")
        text, blocks = self._content(params)
        msg.versions.append({"text": msg.text, "blocks": msg.blocks})
        if text is not None:
            msg.text = text
        if blocks is not None:
            msg.blocks = blocks
        return {"ok": True, "channel": channel, "ts": msg.ts, "text": msg.text, "message": msg.as_api()}

    def _m_chat_delete(self, params: dict[str, Any], kind: str) -> dict[str, Any]:
        channel = self._channel_id(params.get("channel"), allow_names=False)
        ts = params.get("ts")
        msg = self._messages.get((channel, ts)) if isinstance(ts, str) else None
        if msg is None or msg.deleted:
            raise _ApiError("message_not_found")
        if msg.user != self.bot_user_id:
            raise _ApiError("cant_delete_message")
        msg.deleted = True
        return {"ok": True, "channel": channel, "ts": msg.ts}

    def _m_chat_postEphemeral(self, params: dict[str, Any], kind: str) -> dict[str, Any]:
        channel = self._channel_id(params.get("channel"), allow_names=True)
        user = params.get("user")
        if not isinstance(user, str) or not user:
            raise _ApiError(
                "invalid_arguments", response_metadata={"messages": ["[ERROR] missing required field: user"]}
            )
        if (channel, user) in self._not_in_channel:
            raise _ApiError("user_not_in_channel")
        text, blocks = self._content(params)
        eph = Ephemeral(
            channel=channel,
            user=user,
            text=text or "",
            blocks=blocks or [],
            message_ts=self._next_ts(),
            thread_ts=params.get("thread_ts") or None,
            via="chat.postEphemeral",
        )
        self.ephemeral.append(eph)
        return {"ok": True, "message_ts": eph.message_ts}

    def _m_usergroups_users_list(self, params: dict[str, Any], kind: str) -> dict[str, Any]:
        group = params.get("usergroup")
        if group not in self._usergroups:
            raise _ApiError("no_such_subteam")
        return {"ok": True, "users": list(self._usergroups[str(group)])}

    def _m_users_info(self, params: dict[str, Any], kind: str) -> dict[str, Any]:
        user = params.get("user")
        if user not in self._users:
            raise _ApiError("user_not_found")
        return {"ok": True, "user": json.loads(json.dumps(self._users[str(user)]))}

    # ------------------------------------------------------------------ response_url sink

    async def _hook(self, request: web.Request) -> web.Response:
        hook_id = request.match_info["hook_id"]
        raw = await request.text()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        hook = self.hooks.get(hook_id)
        status, answer = 200, "ok"
        if hook is None:
            status, answer = 404, "no_service"
        elif hook.uses >= _RESPONSE_URL_MAX_USES:
            status, answer = 404, "used_url"
        elif not isinstance(body, dict):
            status, answer = 400, "invalid_payload"
        elif not (body.get("text") or body.get("blocks") or self._truthy(body.get("delete_original"))):
            status, answer = 400, "no_text"
        elif body.get("blocks") is not None and validate_blocks(body["blocks"]):
            status, answer = 400, "invalid_blocks"
        self.hook_posts.append(HookPost(hook_id, body, status))
        if status == 200 and hook is not None:
            hook.uses += 1
            self._apply_hook(hook, body)
        return web.Response(status=status, text=answer, content_type="text/plain")

    def _apply_hook(self, hook: Hook, body: dict[str, Any]) -> None:
        """Do what Slack does with a response_url post, so the conversation shows it."""
        original = self._messages.get((hook.channel or "", hook.message_ts or ""))
        if self._truthy(body.get("delete_original")) and original is not None:
            original.deleted = True
            return
        if self._truthy(body.get("replace_original")) and original is not None:
            original.versions.append({"text": original.text, "blocks": original.blocks})
            original.text = str(body.get("text", ""))
            original.blocks = list(body.get("blocks") or [])
            return
        if hook.channel is None:
            return
        if body.get("response_type") == "in_channel":
            msg = Message(
                channel=hook.channel,
                ts=self._next_ts(),
                text=str(body.get("text", "")),
                blocks=list(body.get("blocks") or []),
                user=self.bot_user_id,
                bot_id=self.bot_id,
                thread_ts=self._thread_root(hook.channel, body.get("thread_ts") or None),
            )
            self._store(msg)
        else:
            self.ephemeral.append(
                Ephemeral(
                    channel=hook.channel,
                    user=hook.user or "",
                    text=str(body.get("text", "")),
                    blocks=list(body.get("blocks") or []),
                    message_ts=self._next_ts(),
                    thread_ts=body.get("thread_ts"),
                    via="response_url",
                )
            )


# ----------------------------------------------------------------------------------------- threads


class ThreadedSlackDouble:
    """The double on its own event loop in a thread, for sync tests and subprocess-driven e2e tests."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="slack-double", daemon=True)
        self.double: SlackApiDouble

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine (e.g. `double.push(...)`) on the double's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0, *, what: str = "condition") -> T:
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(self._call(predicate))
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what} not met within {timeout}s")
            time.sleep(0.01)

    @staticmethod
    async def _call(predicate: Callable[[], T]) -> T:
        return predicate()  # read the double's state on its own loop, never concurrently with a write

    def __enter__(self) -> SlackApiDouble:
        self._thread.start()

        async def make() -> SlackApiDouble:
            return await SlackApiDouble(**self._options).start()

        self.double = self.run(make())
        return self.double

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.run(self.double.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@contextlib.contextmanager
def slack_double_in_thread(**options: Any) -> Iterator[tuple[SlackApiDouble, ThreadedSlackDouble]]:
    runner = ThreadedSlackDouble(**options)
    double = runner.__enter__()
    try:
        yield double, runner
    finally:
        runner.__exit__(None, None, None)


__all__ = [
    "APP_ID",
    "APP_TOKEN",
    "BOT_ID",
    "BOT_TOKEN",
    "BOT_USER_ID",
    "SIGNING_SECRET",
    "TEAM_DOMAIN",
    "TEAM_ID",
    "ApiCall",
    "Ephemeral",
    "Hook",
    "HookPost",
    "Message",
    "SentRequest",
    "SlackApiDouble",
    "SocketConnection",
    "ThreadedSlackDouble",
    "block_actions_body",
    "block_actions_payload",
    "sign",
    "slack_double_in_thread",
    "slash_command_body",
    "slash_command_payload",
    "validate_blocks",
]
