"""The Slack Web API as opsbot uses it: paced by the shared limiter, failing as TemporaryError
(ratelimited, 5xx, timeouts: retry) or PermanentError (invalid_auth, channel_not_found,
not_in_channel, ...: log what a person must do).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from opsbot.chat.slack.ratelimit import POST_MESSAGE, RateLimiter
from opsbot.errors import PermanentError, TemporaryError
from opsbot.metrics import DEFAULT as DEFAULT_METRICS
from opsbot.metrics import Metrics
from opsbot.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["SlackPoster"]

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

    @classmethod
    def from_settings(cls, settings: Settings, *, metrics: Metrics | None = None) -> SlackPoster:
        """The poster of `opsbot serve`: a Web API client with the bot token, and a fresh limiter."""
        client = AsyncWebClient(
            token=settings.slack_bot_token.get() or None, base_url=settings.slack_api_url, timeout=10
        )
        return cls(client, RateLimiter(), metrics=metrics)
