"""Slack's front door on slack-bolt (async, aiohttp): `/ops`, request threads, buttons, HTTP and
Socket Mode. See the package docstring for why it is shaped this way.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from opsbot.chat import blocks, texts
from opsbot.chat.blocks import Rendered
from opsbot.chat.slack.answers import Responder
from opsbot.chat.slack.checks import SHAPE_ERRORS, slack_shaped, verify_slack_signature
from opsbot.chat.slack.groups import UserGroups, rbac_groups
from opsbot.chat.slack.poster import SlackPoster
from opsbot.chat.slack.ratelimit import RateLimiter
from opsbot.core.model import Actor, Request, Thread
from opsbot.core.ports import Store
from opsbot.core.results import Failure, Proposed, RequestUpdate, Result
from opsbot.errors import PermanentError, TemporaryError
from opsbot.metrics import DEFAULT as DEFAULT_METRICS
from opsbot.metrics import Metrics
from opsbot.notify.messages import queue_request_event
from opsbot.notify.outbox import OutboxWorker, load_root, save_root
from opsbot.settings import Settings

log = logging.getLogger(__name__)

__all__ = [
    "BUTTON_VERBS",
    "COMMAND",
    "EVENTS_PATH",
    "SlackTransport",
    "permalink",
]

T = TypeVar("T")

COMMAND = "/ops"
EVENTS_PATH = "/slack/events"
BUTTON_VERBS = {
    blocks.ACTION_APPROVE: "approve",
    blocks.ACTION_MERGE: "merge",
    blocks.ACTION_CANCEL: "cancel",
}



def permalink(team_domain: str, channel: str, ts: str) -> str:
    """The web link of a message (what chat.getPermalink returns, without spending a call on it)."""
    host = f"{team_domain}.slack.com" if team_domain else "slack.com"
    return f"https://{host}/archives/{channel}/p{ts.replace('.', '')}"


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
        poster: SlackPoster | None = None,
        groups: UserGroups | None = None,
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
        self.metrics: Metrics = getattr(bot, "metrics", None) or DEFAULT_METRICS
        self.poster = poster or SlackPoster.from_settings(settings, metrics=self.metrics)
        self.client: AsyncWebClient = self.poster.client
        self.limiter: RateLimiter = self.poster.limiter
        self.worker = worker or OutboxWorker(store, self.poster)
        if self.worker.on_retry is None:
            # the worker only ever posts to Slack here, so what it reschedules is a Slack retry
            self.worker.on_retry = lambda exc: self.metrics.record_api_retry("slack")
        #: the cache the bot's RBAC reads (handed to the bot when it was built); refreshed before each
        #: command. None when RBAC names no user group.
        self.groups = groups
        self._groups = rbac_groups(settings) if groups is not None else ()
        if groups is None and rbac_groups(settings):
            log.warning(
                "RBAC names Slack user groups, but the bot was built without their resolver:"
                " members of those groups get no role"
            )
        self.accepting = True
        self._work = ThreadPoolExecutor(max_workers=command_workers, thread_name_prefix="opsbot-cmd")
        self._io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="opsbot-slack-io")
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._dedup_window = dedup_window
        self.answers = Responder(self.poster)
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
            if not slack_shaped(bolt_request.body):
                return web.Response(status=400, text="request body has an unexpected shape")
            bolt_response = await self.app.async_dispatch(bolt_request)
        except SHAPE_ERRORS as exc:
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
        await self.answers.close()
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

    async def _handle(self, text: str, actor: Actor, thread: Thread) -> Result:
        """`bot.handle` on a worker thread (with this context, for log fields)."""
        if self.groups is not None and self._groups:
            await self.groups.refresh(self._groups)
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        result: Result = await loop.run_in_executor(
            self._work, lambda: ctx.run(self.bot.handle, text, actor, thread)
        )
        return result

    def _on_transition(self, request: Request, event: str, facts: dict[str, Any]) -> None:
        try:
            queue_request_event(self.store, request, event, facts)
        except Exception:  # the transition happened; a failed queue must not undo the answer
            log.exception("could not queue the %s notification of %s", event, request.id)
            return
        self.worker.wake()

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
        result = await self._handle(text, actor, Thread(channel))
        domain = str(body.get("team_domain", ""))
        if isinstance(result, Failure):
            await self.answers.respond(response_url, self._failure(result), channel=channel, user=user)
        elif isinstance(result, Proposed) and result.request is not None and result.pr is not None:
            await self._post_root(result, channel=channel, user=user, response_url=response_url,
                                  domain=domain)
        elif isinstance(result, RequestUpdate) and result.request is not None:
            rendered = blocks.result_message(result)
            current = await self._io_call(self.store.get_request, result.request.id) or result.request
            if current.thread_ts and current.channel:
                rendered = blocks.with_note(rendered, texts.see_thread(
                    permalink(domain, current.channel, current.thread_ts)))
            await self.answers.respond(response_url, rendered, channel=channel, user=user)
        else:
            await self.answers.respond(response_url, blocks.result_message(result), channel=channel, user=user)

    async def _post_root(
        self, result: Proposed, *, channel: str, user: str, response_url: str, domain: str
    ) -> None:
        assert result.request is not None and result.pr is not None
        request_id = result.request.id
        pr = texts.pr_link(result.pr.number, result.pr.url)
        async with self._lock(f"root:{request_id}"):
            current = await self._io_call(self.store.get_request, request_id) or result.request
            root = await self._io_call(load_root, self.store, request_id)
            claimed = not root and not current.thread_ts and await self._io_call(
                self.bot.requests.claim_thread, request_id, self.worker.owner
            )
            if not claimed:
                # another command (maybe on another replica) posts or posted this request's root
                if not root and not current.thread_ts:
                    current = await self._wait_for_thread(request_id) or current
                    root = await self._io_call(load_root, self.store, request_id)
                where_channel = str(root["channel"]) if root else current.channel
                where_ts = str(root["ts"]) if root else current.thread_ts
                link = permalink(domain, where_channel, where_ts) if where_ts else ""
                await self.answers.respond(response_url, blocks.notice(texts.already_open(pr, link)),
                                           channel=channel, user=user)
                return
            rendered = blocks.request_root(current, result.change, result.diff)
            try:
                ts = await self.poster.post(channel, rendered["text"], rendered["blocks"], retries=3)
            except PermanentError as exc:
                await self._io_call(self.bot.requests.release_thread, request_id, self.worker.owner)
                error = str(exc)
                hint = texts.not_in_channel(pr) if error == "not_in_channel" else texts.cannot_post(error, pr)
                await self.answers.respond(response_url, blocks.notice(hint), channel=channel, user=user)
                return
            except TemporaryError:
                await self._io_call(self.bot.requests.release_thread, request_id, self.worker.owner)
                await self.answers.respond(response_url, blocks.notice(texts.post_later(pr)), channel=channel,
                                           user=user)
                return
            await self._io_call(self.bot.requests.attach_thread, request_id, channel, ts)
            await self._io_call(save_root, self.store, request_id, channel, ts, rendered["blocks"])
        self.worker.wake()  # replies queued while the root was being posted can go now

    async def _wait_for_thread(self, request_id: str) -> Request | None:
        """The root another replica is posting: wait until its ts is recorded (bounded), for the link."""
        delay = 0.05
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while True:
            current = await self._io_call(self.store.get_request, request_id)
            if current is None or current.thread_ts or not current.channel or loop.time() >= deadline:
                return current
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

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
            await self.answers.respond(response_url, blocks.error_message(texts.RESTARTING), channel=channel,
                               user=user)
            return
        if verb is None or not request_id or len(request_id) > 64 or " " in request_id:
            await self.answers.respond(response_url, blocks.error_message(texts.UNKNOWN_BUTTON), channel=channel,
                               user=user)
            return
        if verb == "approve" and self.settings.approvals_mode == "github":
            req = await self._io_call(self.store.get_request, request_id)
            pr = texts.pr_link(req.pr_number, req.pr_url) if req else ""
            await self.answers.respond(response_url, blocks.notice(texts.approve_on_github(pr)), channel=channel,
                               user=user)
            return
        # a double click waits for the first one, then finds the work done
        async with self._lock(f"click:{request_id}"):
            result = await self._handle(f"{verb} {request_id}", Actor(user, name, "chat"),
                                        Thread(channel, message_ts or None))
        if isinstance(result, Failure):
            await self.answers.respond(response_url, self._failure(result), channel=channel, user=user)
        elif not (isinstance(result, RequestUpdate) and result.events):
            # nothing moved (e.g. "you already approved"): only the clicker needs to know
            await self.answers.respond(response_url, blocks.result_message(result), channel=channel, user=user)

