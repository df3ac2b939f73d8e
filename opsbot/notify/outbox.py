"""The outbox worker: every chat post that must not be lost goes through the store first.

Why an outbox: a request's transitions happen in the dispatcher thread, in webhook handlers and in
the deploy correlator, often while Slack is rate limiting or down. Writing the post into the store
(`Store.outbox_add`, unique per dedup key) in the same breath as the transition, and posting it
later from here, means a crash or a Slack outage delays a message but never loses it, and a
redelivered webhook or a double click queues nothing twice.

This module speaks to a `ChatPoster` (opsbot.core.ports); it never imports Slack. Slack's
`SlackPoster` (opsbot.chat.slack) is the production poster; tests may pass any other.

Item kinds and payloads (text and blocks are rendered when queued, where the facts are known; which
message they land in is resolved when posted, because the thread may not exist yet when queued):

``thread_reply``
    ``{"request": "R7", "text": ..., "blocks": [...]}`` — a reply in the request's thread (its
    ``channel``/``thread_ts`` are read from the store at post time), or
    ``{"channel": "C1", "thread_ts": "123.456", "text": ..., "blocks": [...]}`` for any thread.
``root_update``
    ``{"request": "R7", "status": optional status phrase, "reason": optional}`` — `chat.update` of
    the request's root, rendered at post time from the request's *current* state and the root's last
    blocks (kept in the store's kv under ``root_key(id)``), so updates queued out of order converge.
``channel_post``
    ``{"channel": "C1", "text": ..., "blocks": [...], "thread_ts": optional}`` — e.g. the deploy
    channel line. The deploy notifier queues these with `queue_channel_post`.
``ephemeral``
    ``{"channel": "C1", "user": "U1", "text": ..., "blocks": [...]}`` — tell one person (a permanent
    failure the requester must know about).

More kinds: `OutboxWorker.register(kind, handler)`.

Delivery: at least once, ordered per thread/channel. An item is marked done only after the chat
platform accepted it, and its result (the message ts) is stored with it. The one unavoidable window
is a crash *after* Slack accepted a post and *before* `outbox_done` committed: that post is sent
again after the restart (Slack has no idempotency key for chat.postMessage). Root updates are
idempotent, so only thread replies and channel posts can repeat, and only in that window.

Retries: `TemporaryError` (429, 5xx, timeouts) → `outbox_retry` with exponential backoff (at least
the peer's Retry-After), bounded by `max_delay`; after `max_attempts` the item is given up with an
error log line. `PermanentError` (invalid_auth, channel_not_found, ...) is logged and given up at
once: retrying cannot help, and a human must fix the configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar

from opsbot.chat import blocks, texts
from opsbot.chat.blocks import Rendered
from opsbot.core.model import Request, utcnow
from opsbot.core.ports import ChatPoster, OutboxItem, Store
from opsbot.errors import PermanentError, TemporaryError

log = logging.getLogger(__name__)

T = TypeVar("T")

THREAD_REPLY = "thread_reply"
ROOT_UPDATE = "root_update"
CHANNEL_POST = "channel_post"
EPHEMERAL = "ephemeral"

#: A request asked in chat whose root is not posted yet (still posting, or Slack was limiting us):
#: replies wait for it this long before they are given up as threadless.
ROOT_GRACE = timedelta(minutes=30)
#: how long a worker holds an item it is posting; a worker that dies frees its items after this
CLAIM_SECONDS = 120.0

Handler = Callable[[OutboxItem], Awaitable[dict[str, Any]]]


def root_key(request_id: str) -> str:
    """kv key of a request's root message: `{"channel", "ts", "blocks"}` as JSON."""
    return f"slack:root:{request_id}"


def load_root(store: Store, request_id: str) -> dict[str, Any] | None:
    raw = store.kv_get(root_key(request_id))
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def save_root(
    store: Store, request_id: str, channel: str, ts: str, root_blocks: list[dict[str, Any]]
) -> None:
    store.kv_set(root_key(request_id), json.dumps({"channel": channel, "ts": ts, "blocks": root_blocks}))


# --------------------------------------------------------------------------------------------- queueing


def queue(store: Store, key: str, kind: str, payload: dict[str, Any]) -> bool:
    """Queue one item under its dedup key (False when that key was queued before): the one place
    that writes the outbox, so every post that must not be lost has the same at-least-once path."""
    return store.outbox_add(key, kind, payload)


def queue_channel_post(
    store: Store, key: str, channel: str, rendered: Rendered, *, thread_ts: str | None = None
) -> bool:
    """Queue a message for a channel (the deploy channel line); False when `key` was queued before."""
    payload: dict[str, Any] = {"channel": channel, "text": rendered["text"], "blocks": rendered["blocks"]}
    if thread_ts:
        payload["thread_ts"] = thread_ts
    return queue(store, key, CHANNEL_POST, payload)


def queue_ephemeral(store: Store, key: str, channel: str, user: str, rendered: Rendered) -> bool:
    payload = {"channel": channel, "user": user, "text": rendered["text"], "blocks": rendered["blocks"]}
    return queue(store, key, EPHEMERAL, payload)


# --------------------------------------------------------------------------------------------- the worker


class _NotYet(TemporaryError):
    """The item depends on something not there yet (the request's root): try again later."""


class OutboxWorker:
    """Drains due outbox items through a ChatPoster: in order per thread, in parallel across threads.

    Store calls run on a private single thread, so a slow disk or database never stalls the event
    loop that acknowledges Slack, and SQLite sees one writer from here.
    """

    def __init__(
        self,
        store: Store,
        poster: ChatPoster,
        *,
        max_attempts: int = 8,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        batch: int = 50,
        poll_interval: float = 2.0,
        parallel: int = 8,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.poster = poster
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.batch = batch
        self.poll_interval = poll_interval
        self.clock = clock
        #: who holds an item while posting it: replicas over one database never post one item twice
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.claim_seconds = CLAIM_SECONDS
        self._handlers: dict[str, Handler] = {
            THREAD_REPLY: self._thread_reply,
            ROOT_UPDATE: self._root_update,
            CHANNEL_POST: self._channel_post,
            EPHEMERAL: self._ephemeral,
        }
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opsbot-outbox")
        self._parallel = asyncio.Semaphore(parallel)
        self._blocked_until: dict[str, datetime] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._drain_lock: asyncio.Lock | None = None
        #: The latest (key, kind, outcome) finished and (key, delay seconds, error) rescheduled: what an
        #: operator (or a test) asks when a message seems late. Bounded, so a long run never grows.
        self.finished: deque[tuple[str, str, str]] = deque(maxlen=1000)
        self.retries: deque[tuple[str, float, str]] = deque(maxlen=1000)
        #: Told of every post rescheduled after the chat platform failed (not of items waiting for
        #: their thread root): the transport counts them as API retries without this module
        #: knowing which platform, or which metrics, it serves.
        self.on_retry: Callable[[TemporaryError], None] | None = None

    # ------------------------------------------------------------------ extension and control

    def register(self, kind: str, handler: Handler) -> None:
        """Handle a new item kind; the handler returns the result to store (e.g. `{"ts": ...}`)."""
        self._handlers[kind] = handler

    def wake(self) -> None:
        """Post soon instead of at the next poll; safe to call from any thread (transition hooks)."""
        loop, event = self._loop, self._wake
        if loop is None or event is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    def _bind(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._drain_lock = asyncio.Lock()

    async def _io_call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def run(self) -> None:
        """Drain until `stop()`; wakes on `wake()` or every `poll_interval` seconds."""
        self._bind()
        assert self._wake is not None
        while not self._stopping:
            self._wake.clear()
            try:
                await self.drain_once()
            except Exception:  # a broken store call must not kill the worker for good
                log.exception("outbox pass failed; retrying after %.1fs", self.poll_interval)
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._next_wait())

    def _next_wait(self) -> float:
        wait = self.poll_interval
        now = self.clock()
        for until in self._blocked_until.values():
            wait = min(wait, max((until - now).total_seconds(), 0.05))
        return wait

    def stop(self) -> None:
        self._stopping = True
        self.wake()

    async def flush(self, timeout: float) -> int:
        """Post what is due now, for at most `timeout` seconds (at shutdown); return how many were posted."""
        self._bind()
        posted = 0
        try:
            async with asyncio.timeout(timeout):
                while True:
                    n = await self.drain_once()
                    posted += n
                    if n == 0:
                        break
        except TimeoutError:
            log.warning("outbox flush stopped after %.1fs; the rest is posted after the restart", timeout)
        except Exception:  # at shutdown a dead store must not turn a clean exit into a crash
            log.exception("outbox flush failed; what is queued is posted after the restart")
        return posted

    async def drain_until_idle(self, max_passes: int = 100) -> int:
        """Drain passes until one finds nothing due (items scheduled for later stay queued)."""
        total = 0
        for _ in range(max_passes):
            n = await self.drain_once()
            total += n
            if n == 0:
                break
        return total

    def close(self) -> None:
        self._io.shutdown(wait=True)

    # ------------------------------------------------------------------ one pass

    @staticmethod
    def _group(item: OutboxItem) -> str:
        payload = item.payload
        if payload.get("request"):
            return f"request:{payload['request']}"
        if payload.get("thread_ts"):
            return f"thread:{payload.get('channel')}:{payload['thread_ts']}"
        return f"channel:{payload.get('channel', '')}"

    async def drain_once(self) -> int:
        """Process every due item once; return how many were finished (posted, skipped or given up)."""
        self._bind()
        assert self._drain_lock is not None
        async with self._drain_lock:
            now = self.clock()
            due = await self._io_call(self.store.outbox_claim, now, self.owner, self.claim_seconds, self.batch)
            groups: dict[str, list[OutboxItem]] = {}
            for item in sorted(due, key=lambda i: i.id):  # queue order, not retry order, within a thread
                group = self._group(item)
                until = self._blocked_until.get(group)
                if until is not None and until > now:
                    continue
                self._blocked_until.pop(group, None)
                groups.setdefault(group, []).append(item)
            counts = await asyncio.gather(*(self._drain_group(g, items) for g, items in groups.items()))
            return sum(counts)

    async def _drain_group(self, group: str, items: list[OutboxItem]) -> int:
        done = 0
        async with self._parallel:
            for item in items:
                if not await self._process(item):
                    # keep later items of this thread behind the one that must be retried
                    break
                done += 1
        return done

    async def _process(self, item: OutboxItem) -> bool:
        """True when the item is finished; False when it was rescheduled (its group waits for it)."""
        handler = self._handlers.get(item.kind)
        if handler is None:
            return await self._give_up(item, f"no handler for outbox kind {item.kind!r}", "unknown-kind")
        try:
            result = await handler(item)
        except PermanentError as exc:
            log.error("outbox: %s (%s) refused for good: %s; not retried", item.key, item.kind, exc)
            return await self._give_up(item, str(exc), "permanent")
        except TemporaryError as exc:
            return await self._retry(item, exc)
        except Exception as exc:  # one bad item must not stop the others
            log.exception("outbox: %s (%s) failed unexpectedly", item.key, item.kind)
            return await self._retry(item, TemporaryError(type(exc).__name__))
        await self._io_call(self.store.outbox_done, item.id, result)
        self.finished.append((item.key, item.kind, str(result.get("outcome", "posted"))))
        return True

    def backoff(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds before attempt `attempts + 1`: doubling with jitter, at least Retry-After, capped."""
        delay = min(self.max_delay, self.base_delay * (2 ** min(attempts, 20)))
        delay = delay * (0.75 + random.random() * 0.5)  # jitter, not cryptography
        if retry_after is not None:
            delay = max(delay, float(retry_after))
        return min(delay, max(self.max_delay, float(retry_after or 0)))

    async def _retry(self, item: OutboxItem, exc: TemporaryError) -> bool:
        if item.attempts + 1 >= self.max_attempts:
            log.error("outbox: giving up on %s (%s) after %d attempts: %s", item.key, item.kind,
                      item.attempts + 1, exc)
            return await self._give_up(item, str(exc), "gave-up")
        delay = self.backoff(item.attempts, exc.retry_after)
        next_at = self.clock() + timedelta(seconds=delay)
        level = logging.DEBUG if isinstance(exc, _NotYet) else logging.WARNING
        log.log(level, "outbox: %s (%s) attempt %d failed (%s); retry in %.1fs", item.key, item.kind,
                item.attempts + 1, exc, delay)
        await self._io_call(self.store.outbox_retry, item.id, next_at, str(exc))
        self.retries.append((item.key, delay, str(exc)))
        if self.on_retry is not None and not isinstance(exc, _NotYet):
            try:
                self.on_retry(exc)
            except Exception:  # counting must never stop a post
                log.exception("outbox retry hook failed")
        self._blocked_until[self._group(item)] = next_at
        return False

    async def _give_up(self, item: OutboxItem, error: str, outcome: str) -> bool:
        await self._io_call(self.store.outbox_done, item.id, {"outcome": outcome, "error": error[:500]})
        self.finished.append((item.key, item.kind, outcome))
        return True

    # ------------------------------------------------------------------ kinds

    async def _request_thread(self, request_id: str) -> tuple[Request | None, str, str]:
        request = await self._io_call(self.store.get_request, request_id)
        if request is None:
            return None, "", ""
        root = await self._io_call(load_root, self.store, request_id)
        if root and root.get("channel") and root.get("ts"):
            return request, str(root["channel"]), str(root["ts"])
        if request.channel and request.thread_ts:
            return request, request.channel, request.thread_ts
        if request.channel and self.clock() - request.created_at < ROOT_GRACE:
            raise _NotYet(f"the thread of {request_id} is not posted yet")
        return request, "", ""

    async def _thread_reply(self, item: OutboxItem) -> dict[str, Any]:
        p = item.payload
        if p.get("request"):
            _request, channel, thread_ts = await self._request_thread(str(p["request"]))
            if not thread_ts:
                return {"outcome": "skipped", "why": "the request has no chat thread"}
        else:
            channel, thread_ts = str(p.get("channel", "")), str(p.get("thread_ts", ""))
        ts = await self.poster.post(channel, str(p.get("text", "")), p.get("blocks"), thread_ts=thread_ts)
        return {"channel": channel, "ts": ts}

    async def _root_update(self, item: OutboxItem) -> dict[str, Any]:
        request_id = str(item.payload.get("request", ""))
        request, channel, ts = await self._request_thread(request_id)
        if request is None or not ts:
            return {"outcome": "skipped", "why": "the request has no chat thread"}
        root = await self._io_call(load_root, self.store, request_id) or {}
        approvals = await self._io_call(self.store.approvals, request_id)
        status = str(item.payload.get("status") or "") or texts.status_line(
            str(request.state),
            approvals=len(approvals),
            needed=request.approvals_needed,
            merge_sha=request.merge_sha,
            env=request.env,
            reason=str(item.payload.get("reason", "")),
        )
        rendered = blocks.root_update(list(root.get("blocks") or []), request, status_line=status)
        await self.poster.update(channel, ts, rendered["text"], rendered["blocks"])
        await self._io_call(save_root, self.store, request_id, channel, ts, rendered["blocks"])
        return {"channel": channel, "ts": ts}

    async def _channel_post(self, item: OutboxItem) -> dict[str, Any]:
        p = item.payload
        channel = str(p.get("channel", ""))
        if not channel:
            return {"outcome": "skipped", "why": "no channel configured"}
        ts = await self.poster.post(channel, str(p.get("text", "")), p.get("blocks"),
                                    thread_ts=p.get("thread_ts") or None)
        return {"channel": channel, "ts": ts}

    async def _ephemeral(self, item: OutboxItem) -> dict[str, Any]:
        p = item.payload
        await self.poster.ephemeral(str(p.get("channel", "")), str(p.get("user", "")), str(p.get("text", "")),
                                    p.get("blocks"))
        return {"outcome": "posted"}
