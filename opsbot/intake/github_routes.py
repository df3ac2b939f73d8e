"""`POST /webhooks/github`: what GitHub tells opsbot about its pull requests, taken in safely.

Why it is built this way:

- **Authenticate before anything else.** The body is read up to `max_body` bytes (413 beyond,
  without reading the rest), then `X-Hub-Signature-256` is checked in constant time over those
  exact bytes; only a signed body is ever parsed. No secret configured means every delivery is
  refused (401): an endpoint that accepts anything when unconfigured is an open door.
- **Durable and deduplicated.** A relevant event is written to the store's inbox under its
  `X-GitHub-Delivery` id before it is acted on, and marked done after. A redelivery (GitHub's
  "Redeliver" button, or a retry after a lost answer) finds the id taken and changes nothing. An
  item left pending by a crash is replayed before the first authenticated delivery of the next
  process (a server may also call `GitHubWebhooks.replay()` at start); replaying is safe because
  every action below is a compare-and-set transition, a unique approval or a unique outbox key.
- **Answer fast.** GitHub gives up after 10 s. Request transitions are a few store writes and run
  in a worker thread; the mirror fetch a `push` asks for runs in the background, and a burst of
  pushes coalesces into at most one fetch running plus one queued.
- **Only our repository.** An organisation-wide hook also delivers other repositories' events;
  PR numbers are per repository, so those are ignored (204) rather than matched to our requests.

What each event does:

=========================================  ==================================================
`pull_request` closed, merged              `RequestLifecycle.forge_merged` with `merge_commit_sha` (also
                                           for PRs merged by hand on GitHub); a merged PR that
                                           opsbot did not open is announced in the deploy
                                           channel (a `channel_post` outbox item)
`pull_request` closed, not merged          `RequestLifecycle.forge_closed`
`pull_request` synchronize                 `RequestLifecycle.forge_pushed`: a head opsbot did not record
                                           clears the approvals (told in the thread)
`pull_request_review` submitted, approved  `RequestLifecycle.forge_approved` for the review's
                                           `commit_id` (counts only if it is the head), only with
                                           `approvals_mode: github` (four-eyes applies)
`push`                                     mirror refresh, then open PRs follow their moved
                                           base (`RequestLifecycle.follow_bases`), in the background
`ping`                                     200
anything else                              204, not stored
=========================================  ==================================================

`channel_post` payload queued here: `{"channel": settings.deploy_channel, "text": ..., "blocks":
None}` under the key `github:merged-elsewhere:<owner/name>#<number>`; the outbox worker
(`opsbot.notify.outbox`) posts it. Without a deploy channel nothing is queued.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import urllib.parse
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

from aiohttp import web

from opsbot.core.model import utcnow
from opsbot.core.ports import Store
from opsbot.core.requests import RequestLifecycle
from opsbot.intake.github import (
    GitHubEvent,
    PrClosed,
    PrMerged,
    PrOpened,
    PrSynchronized,
    Push,
    ReviewApproved,
    parse_event,
    verify_signature,
)
from opsbot.intake.http import read_capped
from opsbot.metrics import DEFAULT as DEFAULT_METRICS
from opsbot.metrics import Metrics
from opsbot.notify.outbox import CHANNEL_POST, queue
from opsbot.settings import Settings

log = logging.getLogger(__name__)

PATH = "/webhooks/github"
SOURCE = "github"
#: How many pending inbox items are searched for the one just added (to mark it done). A backlog
#: beyond this only means the item stays pending and is replayed later, which is harmless.
PENDING_SCAN = 1000

_EVENT_TYPES: dict[str, type[Any]] = {
    "PrOpened": PrOpened,
    "PrMerged": PrMerged,
    "PrClosed": PrClosed,
    "ReviewApproved": ReviewApproved,
    "Push": Push,
}


class _Forge(Protocol):
    def refresh(self) -> None: ...


class Bot(Protocol):
    """What the webhook needs from `opsbot.app.Opsbot` (a Protocol, so tests may pass a smaller one)."""

    @property
    def store(self) -> Store: ...

    @property
    def requests(self) -> RequestLifecycle: ...

    @property
    def forge(self) -> _Forge: ...


def _reply(status: int, **body: Any) -> web.Response:
    if status == 204:
        return web.Response(status=204)
    return web.json_response(body, status=status)


def slack_escape(text: str) -> str:
    """Slack mrkdwn control characters; a PR title must not become `<!channel>` or a fake link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Coalescer:
    """Run a blocking function in a thread; calls during a run collapse into one more run.

    Why: a busy repository pushes in bursts, and every push asks for the same thing (fetch
    everything). One fetch running plus one queued always ends up as fresh as ten in a row.
    """

    def __init__(self, fn: Callable[[], None], what: str) -> None:
        self._fn = fn
        self._what = what
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self.runs = 0
        self.failures = 0

    def kick(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await asyncio.to_thread(self._fn)
            except Exception as exc:  # a failed fetch is retried on the next push, or before planning
                self.failures += 1
                log.warning("%s failed: %s", self._what, exc)
            self.runs += 1
            if not self._again:
                return

    async def idle(self) -> None:
        """Wait until no run is going or queued (tests and graceful shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)


class GitHubWebhooks:
    """The GitHub webhook endpoint of one bot; `routes()` is what the aiohttp app mounts."""

    def __init__(self, bot: Bot, settings: Settings, *, max_body: int | None = None) -> None:
        self.bot = bot
        self.settings = settings
        self.max_body = settings.max_body_bytes if max_body is None else max_body
        #: `opsbot_webhook_events{source="github"}`: the bot's own registry when it has one
        self.metrics: Metrics = getattr(bot, "metrics", None) or DEFAULT_METRICS
        self.refresher = Coalescer(self._refresh_and_follow, "mirror refresh and re-planning after a push")
        self._warned_unconfigured = False
        self._replayed = False
        self._replay_lock = asyncio.Lock()

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PATH, self.handle)]

    def _refresh_and_follow(self) -> None:
        """Fetch the mirror, then re-plan the open PRs whose base moved (in the background: GitHub
        gives a delivery 10 s, and re-planning a dozen PRs may take longer)."""
        self.bot.forge.refresh()
        follow = getattr(self.bot.requests, "follow_bases", None)
        if callable(follow):
            follow()

    # ------------------------------------------------------------------------------ HTTP

    async def _read_capped(self, request: web.Request) -> bytes | None:
        return await read_capped(request, self.max_body)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            outcome, response = await self._handle(request)
        except Exception:
            self.metrics.record_webhook_event(SOURCE, "error")  # aiohttp answers 500; GitHub redelivers
            raise
        self.metrics.record_webhook_event(SOURCE, outcome)
        return response

    async def _handle(self, request: web.Request) -> tuple[str, web.StreamResponse]:
        """The answer, and its outcome for the webhook metric (accepted, duplicate, ignored,
        unauthorized, too_large, bad_request)."""
        secret = self.settings.github_webhook_secret
        if not secret:
            if not self._warned_unconfigured:
                self._warned_unconfigured = True
                log.warning("GitHub webhook refused: GITHUB_WEBHOOK_SECRET is not set")
            return "unauthorized", _reply(401, error="webhook secret not configured")
        body = await self._read_capped(request)
        if body is None:
            return "too_large", _reply(413, error=f"body larger than {self.max_body} bytes")
        if not verify_signature(secret.get(), body, request.headers.get("X-Hub-Signature-256")):
            log.info("GitHub webhook refused: bad or missing X-Hub-Signature-256")
            return "unauthorized", _reply(401, error="bad signature")
        if not self._replayed:
            await self._replay_once()
        event = request.headers.get("X-GitHub-Event", "")
        if event == "ping":
            return "accepted", _reply(200, ok=True, pong=True)
        payload = _decode(body, request.headers.get("Content-Type", ""))
        if payload is None:
            return "bad_request", _reply(400, error="body is not a JSON object")
        parsed = parse_event(event, payload)
        if parsed is None or not self._wanted(parsed):
            return "ignored", _reply(204)
        delivery = request.headers.get("X-GitHub-Delivery", "").strip()
        if not delivery or len(delivery) > 200:
            return "bad_request", _reply(400, error="missing X-GitHub-Delivery")
        record = {"event": event, "type": type(parsed).__name__, "data": dataclasses.asdict(parsed)}
        added = await asyncio.to_thread(self.bot.store.inbox_add, SOURCE, delivery, record)
        if not added:
            return "duplicate", _reply(200, ok=True, result="duplicate")
        if isinstance(parsed, Push):
            self.refresher.kick()
            result: dict[str, Any] = {"result": "refresh-scheduled"}
        else:
            result = await asyncio.to_thread(self._apply, parsed)
            if isinstance(parsed, PrMerged):
                self.refresher.kick()  # the base moved: open PRs on it follow, in the background
        await asyncio.to_thread(self._done, delivery)
        return "accepted", _reply(200, ok=True, **result)

    def _wanted(self, event: GitHubEvent) -> bool:
        if self.settings.forge != "github":
            return False  # PR numbers would be matched against another forge's PRs
        if event.repository.lower() != self.settings.github_repository.lower():
            log.info("GitHub webhook for another repository (%r) ignored", event.repository[:200])
            return False
        if isinstance(event, ReviewApproved):
            return self.settings.approvals_mode == "github"
        return isinstance(event, PrMerged | PrClosed | PrSynchronized | Push)

    # ------------------------------------------------------------------------------ actions

    def _apply(self, event: GitHubEvent) -> dict[str, Any]:
        """Act on one stored event; safe to repeat (every step is compare-and-set or keyed)."""
        requests = self.bot.requests
        if isinstance(event, PrMerged):
            known = self.bot.store.find_request_by_pr(requests.forge.name, event.number)
            if known is None:
                queued = self._announce_foreign_merge(event)
                return {"result": "merged-elsewhere", "announced": queued}
            moved = requests.forge_merged(
                event.number, event.merge_sha, event.merged_by or "github", follow=False
            )
            return {"result": "merged" if moved else "unchanged", "request": known.id}
        if isinstance(event, PrClosed):
            moved = requests.forge_closed(event.number, event.closed_by or "github")
            return {"result": "closed" if moved else "unchanged"}
        if isinstance(event, ReviewApproved):
            moved = requests.forge_approved(event.number, event.reviewer, event.commit_sha)
            return {"result": "approval-recorded" if moved else "unchanged"}
        if isinstance(event, PrSynchronized):
            moved = requests.forge_pushed(event.number, event.after, event.pusher)
            return {"result": "approvals-cleared" if moved else "unchanged"}
        # a push needs no replay: the mirror is fetched before planning whenever it is stale
        return {"result": "ignored"}

    def _announce_foreign_merge(self, event: PrMerged) -> bool:
        channel = self.settings.deploy_channel
        if not channel:
            log.info("PR #%d merged on GitHub without opsbot; no deploy channel to tell", event.number)
            return False
        who = f" by @{slack_escape(event.author)}" if event.author else ""
        merger = f", merged by @{slack_escape(event.merged_by)}" if event.merged_by else ""
        text = (
            f"🔀 PR #{event.number} merged on GitHub outside opsbot: {slack_escape(event.title)}{who}"
            f"{merger} into {slack_escape(event.base)} as {event.merge_sha[:7]}"
        )
        if event.url.startswith(("https://", "http://")):
            text += f" <{slack_escape(event.url)}|view PR>"
        repo = event.repository or self.settings.github_repository
        key = f"github:merged-elsewhere:{repo}#{event.number}"
        payload = {"channel": channel, "text": text, "blocks": None}
        return queue(self.bot.store, key, CHANNEL_POST, payload)

    def _done(self, delivery: str) -> None:
        for item in self.bot.store.inbox_pending(limit=PENDING_SCAN):
            if item.source == SOURCE and item.key == delivery:
                self.bot.store.inbox_done(item.id)
                return

    # ------------------------------------------------------------------------------ recovery

    async def _replay_once(self) -> None:
        """Before the first authenticated delivery of this process, finish what a crash left.

        Why here: the routes are all a server mounts, so the first genuine delivery is the first
        moment this endpoint is known to be live; replaying before it keeps events in order.
        """
        async with self._replay_lock:
            if self._replayed:
                return
            try:
                replayed = await asyncio.to_thread(self.replay)
            except Exception as exc:  # the store is down: this delivery will fail too, and say so
                log.warning("replaying pending GitHub deliveries failed: %s", exc)
                return
            self._replayed = True
            if replayed:
                log.info("replayed %d GitHub deliveries left pending by an earlier run", replayed)

    def replay(self, older_than: float = 0.0) -> int:
        """Apply GitHub inbox items a crash or a failed delivery left pending; returns how many.

        Called at start and then periodically (with `older_than`, so an item a handler is still
        working on is left to it; applying twice is harmless anyway: transitions are compare-and-set
        and posts are keyed)."""
        count = 0
        cutoff = utcnow() - timedelta(seconds=older_than)
        for item in self.bot.store.inbox_pending(limit=PENDING_SCAN):
            if item.source != SOURCE or item.received_at > cutoff:
                continue
            event = _event_from_record(item.payload)
            if event is not None and self._wanted(event):
                self._apply(event)
            self.bot.store.inbox_done(item.id)
            count += 1
        return count


def _decode(body: bytes, content_type: str) -> dict[str, Any] | None:
    """GitHub sends JSON, or `payload=<json>` when the hook's content type is form-encoded."""
    try:
        if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            form = urllib.parse.parse_qs(body.decode("utf-8"), strict_parsing=False)
            values = form.get("payload") or []
            if len(values) != 1:
                return None
            data = json.loads(values[0])
        else:
            data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _event_from_record(record: dict[str, Any]) -> GitHubEvent | None:
    cls = _EVENT_TYPES.get(str(record.get("type")))
    data = record.get("data")
    if cls is None or not isinstance(data, dict):
        return None
    try:
        event: GitHubEvent = cls(**data)
    except TypeError:
        return None
    return event


def github_webhook_routes(bot: Bot, settings: Settings, *, max_body: int | None = None) -> list[web.RouteDef]:
    """The routes to mount on the bot's aiohttp app (see `GitHubWebhooks` for the why)."""
    return GitHubWebhooks(bot, settings, max_body=max_body).routes()
