"""Slack's front door on slack-bolt (async, aiohttp): `/ops`, request threads, buttons, RBAC groups.

The only module that imports slack_bolt/slack_sdk, so the rest of opsbot stays testable and
replaceable. It stays thin on purpose: acknowledge within Slack's 3 s, hand the words to
`Opsbot.handle` (the one dispatch path every transport uses, so RBAC and four-eyes are checked the
same way for a typed command and a click), and render the Result with `opsbot.chat.blocks`.

Why the pieces are shaped this way:

* **Ack first, work later.** Bolt runs with `process_before_response=True` and every listener only
  acks and spawns a task, so the HTTP response (or the Socket Mode ack) never waits for git,
  kustomize or the Web API; the tasks are tracked so shutdown can finish them.
* **One thread root per request.** Proposing commands post the root with `chat.postMessage`, under a
  per-request lock that first checks whether a root exists: a second identical `/ops` (or a Slack
  retry, or a race with the first) gets an ephemeral link to the existing thread instead. Slack
  redeliveries carry the same `trigger_id` and are acknowledged and dropped.
* **Transitions go through the outbox.** `bot.on_transition` queues a thread reply and a root update
  (`opsbot.intake.notifier`), which `OutboxWorker` posts through `SlackPoster`; nothing is posted
  from the dispatcher thread, so a Slack outage delays messages and loses none.
* **One limiter for the Web API.** `RateLimiter` paces every call per method tier and
  chat.postMessage per channel, and a 429's `Retry-After` blocks that method for everyone.
  `SlackPoster` maps Slack's answers to `TemporaryError` (ratelimited, 5xx, timeouts: retry) and
  `PermanentError` (invalid_auth, channel_not_found, not_in_channel, ...: log and tell someone).
* **User groups are resolved before the command runs.** RBAC asks `group_members(id)` from the
  dispatcher's worker thread; that callable only reads a cache which `UserGroups.refresh` fills
  asynchronously (usergroups.users.list, through the limiter) before each command. A failed refresh
  keeps the last known members; a group never resolved has no members (deny by default).
* **Ephemeral answers use the response_url** of the command or click (it works in channels the bot
  is not in, and it is what Slack gives for exactly this); chat.postEphemeral is the fallback.

What the limiter does not see: Bolt's one auth.test per process, Socket Mode's
apps.connections.open (Tier 1, only on (re)connect) and response_url posts (not Web API calls).

Known windows (documented, not hidden): a crash after Slack accepted a thread root and before the
request row recorded its ts means the same command typed again posts a second root for the same
PR; the outbox has the equivalent window for replies (see opsbot.intake.notifier). Retried
deliveries are recognised by trigger_id in memory, per process: after a restart, or on another
replica, a redelivery is caught by the core instead (same PR, "already open" answer).

Secrets: the bot token lives in the Web API client only, the signing secret in Bolt's verifier,
the app token in the Socket Mode client; none is ever logged or put in a message.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from opsbot.chat import blocks, texts
from opsbot.chat.blocks import Rendered
from opsbot.core.model import Actor, Request, Thread
from opsbot.core.ports import Store
from opsbot.core.results import Failure, Proposed, RequestUpdate, Result
from opsbot.errors import PermanentError, TemporaryError
from opsbot.intake.notifier import OutboxWorker, load_root, queue_request_event, save_root
from opsbot.metrics import DEFAULT as DEFAULT_METRICS
from opsbot.metrics import Metrics
from opsbot.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

COMMAND = "/ops"
EVENTS_PATH = "/slack/events"
BUTTON_VERBS = {
    blocks.ACTION_APPROVE: "approve",
    blocks.ACTION_MERGE: "merge",
    blocks.ACTION_CANCEL: "cancel",
}

#: Errors Slack answers with when trying again later can work.
_TEMPORARY_ERRORS = frozenset({
    "ratelimited", "rate_limited", "fatal_error", "internal_error", "service_unavailable", "request_timeout",
    "team_added_to_org",
})
#: Errors that only a person can fix; logged with what to do.
_ADVICE = {
    "invalid_auth": "check SLACK_BOT_TOKEN: it must be the app's Bot User OAuth Token",
    "not_authed": "SLACK_BOT_TOKEN is empty",
    "token_revoked": "the app was uninstalled or its token revoked; reinstall, then update SLACK_BOT_TOKEN",
    "account_inactive": "the app was uninstalled; reinstall it, then update SLACK_BOT_TOKEN",
    "missing_scope": "reinstall the app from deploy/slack/app-manifest.yaml to grant the scopes it needs",
    "channel_not_found": "the channel id is wrong or the bot cannot see that channel",
    "not_in_channel": "invite the bot into the channel (/invite @opsbot)",
    "is_archived": "the channel is archived",
}


# --------------------------------------------------------------------------------------------- rate limits

#: Slack's tiers, per method per workspace: (calls per minute, burst we allow ourselves).
TIERS: dict[int, tuple[float, float]] = {1: (1, 1), 2: (20, 4), 3: (50, 10), 4: (100, 20)}
METHOD_TIERS: dict[str, int] = {
    "apps.connections.open": 1,
    "usergroups.users.list": 2,
    "chat.update": 3,
    "chat.delete": 3,
    "chat.postEphemeral": 4,
    "chat.getPermalink": 4,
    "users.info": 4,
    "auth.test": 4,
}
#: chat.postMessage is "special": about one message per second per channel, short bursts allowed.
POST_MESSAGE = "chat.postMessage"


@dataclass
class _Bucket:
    rate: float  # tokens per second
    capacity: float
    tokens: float
    stamp: float

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self) -> float:
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


class RateLimiter:
    """Token buckets per Web API method tier, per channel for chat.postMessage, and 429 penalties.

    Shared by every call opsbot makes (commands, clicks, the outbox worker, group lookups), because
    Slack counts per app and workspace: separate limiters would each think they are within limits.
    `clock` and `sleep` are injectable so the pacing can be tested without waiting.
    """

    def __init__(
        self,
        *,
        per_channel_rate: float = 1.0,
        per_channel_burst: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.per_channel_rate = per_channel_rate
        self.per_channel_burst = per_channel_burst
        self.clock = clock
        self.sleep = sleep
        self._buckets: dict[str, _Bucket] = {}
        self._blocked_until: dict[str, float] = {}

    def _bucket(self, key: str, rate: float, capacity: float, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(rate, capacity, capacity, now)
        bucket.refill(now)
        return bucket

    def _buckets_for(self, method: str, channel: str | None, now: float) -> list[_Bucket]:
        if method == POST_MESSAGE:
            key = f"{method}:{channel or '-'}"
            return [self._bucket(key, self.per_channel_rate, self.per_channel_burst, now)]
        per_minute, burst = TIERS[METHOD_TIERS.get(method, 3)]
        return [self._bucket(method, per_minute / 60.0, burst, now)]

    def delay(self, method: str, channel: str | None = None) -> float:
        """Seconds until a call may go out now; 0 means a token was taken for it."""
        now = self.clock()
        blocked = self._blocked_until.get(method, 0.0) - now
        if blocked > 0:
            return blocked
        buckets = self._buckets_for(method, channel, now)
        wait = max(b.wait() for b in buckets)
        if wait <= 0:
            for b in buckets:
                b.tokens -= 1
        return wait

    async def acquire(self, method: str, channel: str | None = None) -> None:
        while True:
            wait = self.delay(method, channel)
            if wait <= 0:
                return
            await self.sleep(wait)

    def penalize(self, method: str, seconds: float) -> None:
        """Slack answered 429 with Retry-After: hold every call of `method` until then."""
        until = self.clock() + max(seconds, 0.0)
        self._blocked_until[method] = max(self._blocked_until.get(method, 0.0), until)


# --------------------------------------------------------------------------------------------- the poster


def _retry_after(exc: SlackApiError) -> float:
    headers = getattr(exc.response, "headers", None) or {}
    raw: Any = None
    for key in ("Retry-After", "retry-after"):
        if key in headers:
            raw = headers[key]
            break
    if isinstance(raw, list):
        raw = raw[0] if raw else None
    try:
        return max(float(raw), 0.0) if raw is not None else 1.0
    except (TypeError, ValueError):
        return 1.0


class SlackPoster:
    """The Web API as opsbot uses it: limited, and failing as TemporaryError or PermanentError.

    Implements `opsbot.core.ports.ChatPoster` for the outbox worker. Calls made by the worker do not
    retry here (`retries=0`): the worker reschedules the item, so a limited channel does not hold
    up the others. Interactive paths (a command's root) pass a few retries and wait in place.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        limiter: RateLimiter,
        *,
        backoff: float = 0.5,
        metrics: Metrics | None = None,
    ) -> None:
        self.client = client
        self.limiter = limiter
        self.backoff = backoff
        self.calls = 0
        #: every failed call is an `api_errors{api="slack"}`; retries made here are `api_retries`
        #: (the outbox worker counts the ones it schedules itself, see SlackTransport)
        self.metrics = DEFAULT_METRICS if metrics is None else metrics

    async def call(
        self,
        method: str,
        send: Callable[[], Awaitable[Any]],
        *,
        channel: str | None = None,
        retries: int = 0,
    ) -> dict[str, Any]:
        attempt = 0
        while True:
            await self.limiter.acquire(method, channel)
            self.calls += 1
            try:
                response = await send()
                data = response.data if hasattr(response, "data") else response
                return dict(data) if isinstance(data, Mapping) else {}
            except SlackApiError as exc:
                status = int(getattr(exc.response, "status_code", 0) or 0)
                error = ""
                try:
                    error = str(exc.response.get("error") or "")
                except (AttributeError, TypeError):
                    error = ""
                if status == 429 or error in ("ratelimited", "rate_limited"):
                    self.metrics.record_api_error("slack", "rate_limited")
                    wait = _retry_after(exc)
                    self.limiter.penalize(method, wait)
                    failure: TemporaryError = TemporaryError(f"{method}: ratelimited (Retry-After {wait:g}s)",
                                                             retry_after=wait)
                elif status >= 500 or error in _TEMPORARY_ERRORS:
                    self.metrics.record_api_error("slack", "server_error" if status >= 500 else error)
                    failure = TemporaryError(f"{method}: {error or f'HTTP {status}'}")
                else:
                    self.metrics.record_api_error("slack", error or f"http_{status}")
                    advice = _ADVICE.get(error, "")
                    where = f" for channel {channel}" if channel else ""
                    log.error("Slack refused %s%s: %s%s", method, where, error or f"HTTP {status}",
                              f" ({advice})" if advice else "")
                    raise PermanentError(error or f"HTTP {status}") from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.metrics.record_api_error("slack", "timeout" if isinstance(exc, TimeoutError) else "connection")
                failure = TemporaryError(f"{method}: {type(exc).__name__}")
            attempt += 1
            if attempt > retries:
                log.warning("Slack call %s failed: %s", method, failure)
                raise failure
            self.metrics.record_api_retry("slack")
            if failure.retry_after is None:  # 429s already wait in the limiter
                await asyncio.sleep(self.backoff * (2 ** (attempt - 1)))

    # ChatPoster ----------------------------------------------------------------------------------
    async def post(self, channel: str, text: str, blocks: list[dict[str, Any]] | None = None,
                   thread_ts: str | None = None, *, retries: int = 0) -> str:
        kwargs: dict[str, Any] = {"channel": channel, "text": text}
        if blocks:
            kwargs["blocks"] = blocks
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        data = await self.call(POST_MESSAGE, lambda: self.client.chat_postMessage(**kwargs), channel=channel,
                               retries=retries)
        return str(data.get("ts", ""))

    async def update(self, channel: str, ts: str, text: str,
                     blocks: list[dict[str, Any]] | None = None) -> None:
        kwargs: dict[str, Any] = {"channel": channel, "ts": ts, "text": text}
        if blocks is not None:
            kwargs["blocks"] = blocks
        await self.call("chat.update", lambda: self.client.chat_update(**kwargs), channel=channel)

    async def ephemeral(self, channel: str, user: str, text: str, blocks: list[dict[str, Any]] | None = None,
                        thread_ts: str | None = None) -> None:
        kwargs: dict[str, Any] = {"channel": channel, "user": user, "text": text}
        if blocks:
            kwargs["blocks"] = blocks
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        await self.call("chat.postEphemeral", lambda: self.client.chat_postEphemeral(**kwargs),
                        channel=channel)

    async def usergroup_members(self, group_id: str) -> list[str]:
        data = await self.call("usergroups.users.list",
                               lambda: self.client.usergroups_users_list(usergroup=group_id))
        users = data.get("users") or []
        return [str(u) for u in users]

    async def auth_test(self) -> dict[str, Any]:
        return await self.call("auth.test", lambda: self.client.auth_test())


# --------------------------------------------------------------------------------------------- user groups


class UserGroups:
    """RBAC's `group_members` for Slack user groups: a cache filled asynchronously, read synchronously."""

    def __init__(
        self, poster: SlackPoster, ttl_seconds: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.poster = poster
        self.ttl = ttl_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def members(self, group_id: str) -> frozenset[str]:
        """The last known members (possibly stale if Slack was unreachable); none when never resolved."""
        entry = self._cache.get(group_id)
        return entry[1] if entry else frozenset()

    async def refresh(self, group_ids: Iterable[str]) -> None:
        for group_id in group_ids:
            entry = self._cache.get(group_id)
            if entry is not None and entry[0] > self.clock():
                continue
            lock = self._locks.setdefault(group_id, asyncio.Lock())
            async with lock:
                entry = self._cache.get(group_id)
                if entry is not None and entry[0] > self.clock():
                    continue
                try:
                    users = await self.poster.usergroup_members(group_id)
                except PermanentError as exc:
                    log.error("user group %s cannot be resolved (%s); it grants no role", group_id, exc)
                    self._cache[group_id] = (self.clock() + self.ttl, frozenset())
                except TemporaryError as exc:
                    log.warning("user group %s not refreshed (%s); using the last known members",
                                group_id, exc)
                else:
                    self._cache[group_id] = (self.clock() + self.ttl, frozenset(users))


def rbac_groups(settings: Settings) -> tuple[str, ...]:
    """The user group ids RBAC mentions (`group:S123` members), in a stable order."""
    found: list[str] = []
    for members in settings.rbac.members.values():
        for m in members:
            if m.startswith("group:") and m[6:] not in found:
                found.append(m[6:])
    return tuple(found)


# --------------------------------------------------------------------------------------------- transport

#: The transition events fired by the `bot.handle` call running in this context (see `_handle`).
_EVENTS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("opsbot_events", default=None)


def permalink(team_domain: str, channel: str, ts: str) -> str:
    """The web link of a message (what chat.getPermalink returns, without spending a call on it)."""
    host = f"{team_domain}.slack.com" if team_domain else "slack.com"
    return f"https://{host}/archives/{channel}/p{ts.replace('.', '')}"


#: What Bolt raises on a body of a shape Slack never sends (JSON that is not JSON, a list, a number).
_SHAPE_ERRORS = (AttributeError, KeyError, TypeError, ValueError, IndexError)

#: Fields that are objects wherever Slack sends them (events, interactions); Bolt's middleware calls
#: `.get` on them before any listener runs, and answers 500 with a traceback when they are not.
_OBJECT_FIELDS = ("event", "team", "user", "channel", "container", "enterprise", "view", "message", "state")
#: ... of which Slack sends these as `null` (a workspace outside an Enterprise Grid org, org-wide apps)
_NULLABLE = frozenset({"enterprise", "team"})


def _slack_shaped(body: object) -> bool:
    """The body is an object whose object fields are objects and whose `actions` are objects."""
    if not isinstance(body, dict):  # `payload=[1]`, `payload=null`, a JSON list
        return False
    for key in _OBJECT_FIELDS:
        if key in body and not isinstance(body[key], dict) and not (body[key] is None and key in _NULLABLE):
            return False
    actions = body.get("actions")
    return actions is None or (isinstance(actions, list) and all(isinstance(a, dict) for a in actions))


#: Slack's replay window for `X-Slack-Request-Timestamp` (its docs say five minutes).
SIGNATURE_WINDOW_SECONDS = 300


def verify_slack_signature(
    secret: str, body: bytes, timestamp: str | None, signature: str | None, *, now: float
) -> bool:
    """Slack's v0 request signature over the raw body bytes, within the replay window.

    Why our own check before Bolt's: slack_sdk's verifier calls `int()` on the timestamp and compares
    `str`s, so `abc`, `1.7e9`, 5,000 digits or a non-ASCII byte in either header raise (an HTTP 500
    with a traceback) instead of being refused; and Bolt parses the body before it verifies. Here
    the timestamp must be plain ASCII digits of sane length, the comparison is over bytes, and
    nothing is parsed until this says yes. Bolt still verifies again behind it.
    """
    if not secret or not timestamp or not signature:
        return False
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs(now - int(timestamp)) > SIGNATURE_WINDOW_SECONDS:
        return False
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    expected = b"v0=" + hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest().encode("ascii")
    # surrogatepass: aiohttp hands non-UTF-8 header bytes over as lone surrogates
    return hmac.compare_digest(expected, signature.strip().encode("utf-8", "surrogatepass"))


def _quiet_token_warning(record: logging.LogRecord) -> bool:
    """Bolt warns that SLACK_BOT_TOKEN from the environment is unused next to our client: it is expected."""
    return not str(record.msg).startswith("As you gave `client` as well")


class SlackTransport:
    """Bolt app + Web API client + outbox worker + group cache for one `Opsbot`."""

    def __init__(
        self,
        bot: Any,
        settings: Settings,
        store: Store,
        *,
        client: AsyncWebClient | None = None,
        limiter: RateLimiter | None = None,
        worker: OutboxWorker | None = None,
        command_workers: int = 4,
        dedup_window: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bot = bot
        #: wall clock for the signature's replay window (injectable so tests need not wait)
        self.clock = clock
        self.settings = settings
        self.store = store
        self.client = client or AsyncWebClient(
            token=settings.slack_bot_token.get() or None, base_url=settings.slack_api_url, timeout=10
        )
        self.limiter = limiter or RateLimiter()
        self.metrics: Metrics = getattr(bot, "metrics", None) or DEFAULT_METRICS
        self.poster = SlackPoster(self.client, self.limiter, metrics=self.metrics)
        self.worker = worker or OutboxWorker(store, self.poster)
        if self.worker.on_retry is None:
            # the worker only ever posts to Slack here, so what it reschedules is a Slack retry
            self.worker.on_retry = lambda exc: self.metrics.record_api_retry("slack")
        self.groups = UserGroups(self.poster, settings.rbac.group_cache_seconds)
        self._groups = rbac_groups(settings)
        if self._groups and getattr(bot.dispatcher, "group_members", None) is None:
            # Opsbot is built before its transports; RBAC reads the cache this transport keeps fresh.
            bot.dispatcher.group_members = self.groups.members
        self.accepting = True
        self._work = ThreadPoolExecutor(max_workers=command_workers, thread_name_prefix="opsbot-cmd")
        self._io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="opsbot-slack-io")
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._dedup_window = dedup_window
        self._session: aiohttp.ClientSession | None = None
        self._socket: Any = None
        self._socket_stop: asyncio.Event | None = None
        self.app = self._make_app()
        bot.on_transition(self._on_transition)

    # ------------------------------------------------------------------ wiring

    def _make_app(self) -> AsyncApp:
        secret = self.settings.slack_signing_secret.get()
        bolt_log = logging.getLogger("opsbot.chat.slack.bolt")
        bolt_log.addFilter(_quiet_token_warning)
        app = AsyncApp(
            client=self.client,
            signing_secret=secret,
            # Without a secret, HTTP is never mounted (see routes()); Socket Mode skips verification.
            request_verification_enabled=bool(secret),
            process_before_response=True,  # listeners only ack and spawn: the response never waits for work
            logger=bolt_log,
        )
        app.command(COMMAND)(self._on_command)
        for action_id in BUTTON_VERBS:
            app.action(action_id)(self._on_button)
        app.action(blocks.ACTION_REVIEW)(self._on_review)
        return app

    def routes(self) -> list[web.RouteDef]:
        """`POST /slack/events` for HTTP mode; none without a signing secret: nothing unverified is served."""
        if not self.settings.slack_signing_secret:
            log.info("SLACK_SIGNING_SECRET is not set: %s is not served (Socket Mode only)", EVENTS_PATH)
            return []
        return [web.post(EVENTS_PATH, self.handle_http)]

    async def handle_http(self, request: web.Request) -> web.StreamResponse:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return web.Response(status=413, text="request body too large")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text="request body too large")
        if len(raw) > limit:
            return web.Response(status=413, text="request body too large")
        if not verify_slack_signature(
            self.settings.slack_signing_secret.get(),
            raw,
            request.headers.get("X-Slack-Request-Timestamp"),
            request.headers.get("X-Slack-Signature"),
            now=self.clock(),
        ):
            log.info("Slack request refused: bad, stale or missing signature")
            return web.Response(status=401, text="invalid request signature")
        try:  # Bolt parses the body in the constructor
            bolt_request = AsyncBoltRequest(
                body=raw.decode("utf-8", errors="replace"),
                query=request.query_string,
                headers=request.headers,  # type: ignore[arg-type]
            )
            if not _slack_shaped(bolt_request.body):
                return web.Response(status=400, text="request body has an unexpected shape")
            bolt_response = await self.app.async_dispatch(bolt_request)
        except _SHAPE_ERRORS as exc:
            # Bolt parses the body and reads its fields before any listener runs, assuming Slack's
            # documented shapes (`payload=[1]` or `"event": 5` raise there). Signed, so from Slack,
            # but not a shape Slack sends: refuse it as bad input instead of answering 500.
            log.warning("Slack request of an unexpected shape refused (%s: %s)", type(exc).__name__,
                        str(exc)[:200])
            return web.Response(status=400, text="request body has an unexpected shape")
        return await to_aiohttp_response(bolt_response)

    def channel_for_env(self, env: str) -> str:
        """Where deploy outcomes of `env` are announced: its override, else OPSBOT_DEPLOY_CHANNEL."""
        return self.settings.channel_for_env(env)

    @property
    def deploy_channel(self) -> str:
        return self.settings.deploy_channel

    async def check_auth(self) -> dict[str, Any]:
        """auth.test at start, so a wrong token is a clear log line instead of silent failures later."""
        return await self.poster.auth_test()

    # ------------------------------------------------------------------ Socket Mode

    async def run_socket_mode(self) -> None:
        """Connect over Socket Mode and stay connected (slack_sdk reconnects) until `stop_socket_mode`."""
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        token = self.settings.slack_app_token.get()
        if not token:
            raise PermanentError("SLACK_APP_TOKEN is not set; Socket Mode needs the app-level token")
        self._socket_stop = asyncio.Event()
        self._socket = AsyncSocketModeHandler(self.app, token, web_client=self.client)
        try:
            await self._socket.connect_async()
            log.info("connected to Slack over Socket Mode")
            await self._socket_stop.wait()
        finally:
            await self._socket.close_async()
            self._socket = None

    def stop_socket_mode(self) -> None:
        if self._socket_stop is not None:
            self._socket_stop.set()

    # ------------------------------------------------------------------ lifecycle

    def stop_accepting(self) -> None:
        """From now on commands and clicks are answered with 'restarting' and not run."""
        self.accepting = False

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def idle(self) -> None:
        """Wait until every command and click acknowledged so far has finished its work."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def drain(self, timeout: float) -> bool:
        """`idle()` for at most `timeout` seconds; True when everything finished."""
        try:
            await asyncio.wait_for(self.idle(), timeout)
            return True
        except TimeoutError:
            log.warning("%d Slack command(s) still running at shutdown", len(self._tasks))
            return False

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._work.shutdown(wait=False, cancel_futures=True)
        self._io.shutdown(wait=False, cancel_futures=True)

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:  # a background failure must be logged, never lost silently
                log.exception("Slack background work failed")

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _first_delivery(self, key: str) -> bool:
        """False for a delivery seen before (Slack's retries reuse the trigger_id)."""
        if not key:
            return True
        if key in self._seen:
            return False
        self._seen[key] = None
        while len(self._seen) > self._dedup_window:
            self._seen.popitem(last=False)
        return True

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def _io_call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, lambda: fn(*args, **kwargs))

    # ------------------------------------------------------------------ running commands

    async def _handle(self, text: str, actor: Actor, thread: Thread) -> tuple[Result, list[str]]:
        """`bot.handle` on a worker thread, and which transitions it fired (to keep clicks quiet)."""
        if self._groups:
            await self.groups.refresh(self._groups)
        events: list[str] = []
        token = _EVENTS.set(events)
        try:
            ctx = contextvars.copy_context()
            loop = asyncio.get_running_loop()
            result: Result = await loop.run_in_executor(
                self._work, lambda: ctx.run(self.bot.handle, text, actor, thread)
            )
        finally:
            _EVENTS.reset(token)
        return result, events

    def _on_transition(self, request: Request, event: str, facts: dict[str, Any]) -> None:
        events = _EVENTS.get()
        if events is not None:
            events.append(event)
        try:
            queue_request_event(self.store, request, event, facts)
        except Exception:  # the transition happened; a failed queue must not undo the answer
            log.exception("could not queue the %s notification of %s", event, request.id)
            return
        self.worker.wake()

    # ------------------------------------------------------------------ ephemeral answers

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._session

    async def respond(self, response_url: str, rendered: Rendered, *, channel: str, user: str) -> None:
        """Tell one person (ephemeral): through the response_url, else chat.postEphemeral."""
        body = {"response_type": "ephemeral", "replace_original": False,
                "text": rendered["text"], "blocks": rendered["blocks"]}
        if response_url:
            try:
                session = await self._http()
                async with session.post(response_url, json=body) as resp:
                    if resp.status == 200:
                        return
                    log.warning("response_url answered HTTP %s; trying chat.postEphemeral", resp.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("response_url failed (%s); trying chat.postEphemeral", type(exc).__name__)
        try:
            await self.poster.ephemeral(channel, user, rendered["text"], rendered["blocks"])
        except (TemporaryError, PermanentError) as exc:
            log.warning("could not answer %s in %s: %s", user, channel, exc)

    @staticmethod
    def _failure(result: Failure) -> Rendered:
        if result.reference:
            return blocks.internal_error_message(result.reference)
        return blocks.error_message(result.message)

    # ------------------------------------------------------------------ /ops

    async def _on_command(self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]) -> None:
        if not self.accepting:
            await ack(text=texts.RESTARTING, response_type="ephemeral")
            return
        if not self._first_delivery(f"cmd:{body.get('trigger_id', '')}"):
            await ack()
            log.info("dropped a redelivered slash command (trigger %s)", str(body.get("trigger_id"))[:20])
            return
        await ack(text=texts.working(str(body.get("text", ""))), response_type="ephemeral")
        self._spawn(self._command(body))

    async def _command(self, body: dict[str, Any]) -> None:
        text = str(body.get("text", ""))
        channel = str(body.get("channel_id", ""))
        user = str(body.get("user_id", ""))
        response_url = str(body.get("response_url", ""))
        actor = Actor(user, str(body.get("user_name", "")), "chat")
        result, _events = await self._handle(text, actor, Thread(channel))
        domain = str(body.get("team_domain", ""))
        if isinstance(result, Failure):
            await self.respond(response_url, self._failure(result), channel=channel, user=user)
        elif isinstance(result, Proposed) and result.request is not None and result.pr is not None:
            await self._post_root(result, channel=channel, user=user, response_url=response_url,
                                  domain=domain)
        elif isinstance(result, RequestUpdate) and result.request is not None:
            rendered = blocks.result_message(result)
            current = await self._io_call(self.store.get_request, result.request.id) or result.request
            if current.thread_ts and current.channel:
                rendered = blocks.with_note(rendered, texts.see_thread(
                    permalink(domain, current.channel, current.thread_ts)))
            await self.respond(response_url, rendered, channel=channel, user=user)
        else:
            await self.respond(response_url, blocks.result_message(result), channel=channel, user=user)

    async def _post_root(
        self, result: Proposed, *, channel: str, user: str, response_url: str, domain: str
    ) -> None:
        assert result.request is not None and result.pr is not None
        request_id = result.request.id
        pr = texts.pr_link(result.pr.number, result.pr.url)
        async with self._lock(f"root:{request_id}"):
            current = await self._io_call(self.store.get_request, request_id) or result.request
            root = await self._io_call(load_root, self.store, request_id)
            if root or current.thread_ts:
                where_channel = str(root["channel"]) if root else current.channel
                where_ts = str(root["ts"]) if root else current.thread_ts
                link = permalink(domain, where_channel, where_ts)
                await self.respond(response_url, blocks.notice(texts.already_open(pr, link)), channel=channel,
                                   user=user)
                return
            rendered = blocks.request_root(current, result.change, result.diff)
            try:
                ts = await self.poster.post(channel, rendered["text"], rendered["blocks"], retries=3)
            except PermanentError as exc:
                await self._io_call(self.store.update_request, request_id, channel="")
                error = str(exc)
                hint = texts.not_in_channel(pr) if error == "not_in_channel" else texts.cannot_post(error, pr)
                await self.respond(response_url, blocks.notice(hint), channel=channel, user=user)
                return
            except TemporaryError:
                await self._io_call(self.store.update_request, request_id, channel="")
                await self.respond(response_url, blocks.notice(texts.post_later(pr)), channel=channel,
                                   user=user)
                return
            await self._io_call(self.store.update_request, request_id, channel=channel, thread_ts=ts)
            await self._io_call(save_root, self.store, request_id, channel, ts, rendered["blocks"])
        self.worker.wake()  # replies queued while the root was being posted can go now

    # ------------------------------------------------------------------ buttons

    async def _on_review(self, ack: Callable[..., Awaitable[None]]) -> None:
        """The Review PR button is a link; Slack still sends the click and wants an ack."""
        await ack()

    async def _on_button(self, ack: Callable[..., Awaitable[None]], body: dict[str, Any]) -> None:
        await ack()
        if not self._first_delivery(f"click:{body.get('trigger_id', '')}"):
            log.info("dropped a redelivered click (trigger %s)", str(body.get("trigger_id"))[:20])
            return
        self._spawn(self._click(body))

    async def _click(self, body: dict[str, Any]) -> None:
        actions = body.get("actions") or [{}]
        action = actions[0] if isinstance(actions[0], dict) else {}
        user_info = body.get("user") or {}
        user = str(user_info.get("id", ""))
        name = str(user_info.get("username") or user_info.get("name") or "")
        container = body.get("container") or {}
        channel = str((body.get("channel") or {}).get("id") or container.get("channel_id") or "")
        message_ts = str(container.get("message_ts") or "")
        response_url = str(body.get("response_url", ""))
        verb = BUTTON_VERBS.get(str(action.get("action_id", "")))
        request_id = str(action.get("value", "")).strip()
        if not self.accepting:
            await self.respond(response_url, blocks.error_message(texts.RESTARTING), channel=channel,
                               user=user)
            return
        if verb is None or not request_id or len(request_id) > 64 or " " in request_id:
            await self.respond(response_url, blocks.error_message(texts.UNKNOWN_BUTTON), channel=channel,
                               user=user)
            return
        if verb == "approve" and self.settings.approvals_mode == "github":
            req = await self._io_call(self.store.get_request, request_id)
            pr = texts.pr_link(req.pr_number, req.pr_url) if req else ""
            await self.respond(response_url, blocks.notice(texts.approve_on_github(pr)), channel=channel,
                               user=user)
            return
        # a double click waits for the first one, then finds the work done
        async with self._lock(f"click:{request_id}"):
            result, events = await self._handle(f"{verb} {request_id}", Actor(user, name, "chat"),
                                                Thread(channel, message_ts or None))
        if isinstance(result, Failure):
            await self.respond(response_url, self._failure(result), channel=channel, user=user)
        elif not events:
            # nothing moved (e.g. "you already approved"): only the clicker needs to know
            await self.respond(response_url, blocks.result_message(result), channel=channel, user=user)
