"""Slack user groups for RBAC (`group:S123` members): resolved asynchronously, read synchronously.

Why this shape: RBAC asks `group_members(id)` from the dispatcher's worker thread, so that
callable only reads a cache, which `UserGroups.refresh` fills (usergroups.users.list, through the
limiter) before each command. A failed refresh keeps the last known members; a group never
resolved has no members (deny by default). The cache is made before the bot and handed to it as
its `group_members` (the dispatcher's and the policies' RBAC both read it), and to the transport,
which refreshes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from opsbot.errors import PermanentError, TemporaryError
from opsbot.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["GroupDirectory", "UserGroups", "rbac_groups", "user_groups"]


class GroupDirectory(Protocol):
    """Who is in a user group, asked of Slack (`SlackPoster` implements it)."""

    async def usergroup_members(self, group_id: str) -> list[str]: ...


class UserGroups:
    """RBAC's `group_members` for Slack user groups: a cache filled asynchronously, read synchronously."""

    def __init__(
        self, poster: GroupDirectory, ttl_seconds: float, *, clock: Callable[[], float] = time.monotonic
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


def user_groups(directory: GroupDirectory, settings: Settings) -> UserGroups | None:
    """The group cache for the bot and the transport to share; None when RBAC names no user group."""
    if not rbac_groups(settings):
        return None
    return UserGroups(directory, settings.rbac.group_cache_seconds)
