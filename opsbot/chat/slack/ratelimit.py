"""Slack Web API rate limits: one limiter shared by every call opsbot makes.

Why shared: Slack counts per app and workspace, so separate limiters would each think they are
within limits. Token buckets per method tier, per channel for chat.postMessage, and a 429's
`Retry-After` blocks that method for everyone. No Slack library is needed to pace calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["METHOD_TIERS", "POST_MESSAGE", "TIERS", "RateLimiter"]

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
