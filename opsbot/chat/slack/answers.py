"""Ephemeral answers: tell one person, through the command's or click's response_url, else
chat.postEphemeral.

Why the response_url first: it works in channels the bot is not in, and it is what Slack gives for
exactly this; it is not a Web API call, so the limiter does not pace it.
"""

from __future__ import annotations

import logging

import aiohttp

from opsbot.chat.blocks import Rendered
from opsbot.chat.slack.poster import SlackPoster
from opsbot.errors import PermanentError, TemporaryError

log = logging.getLogger(__name__)

__all__ = ["Responder"]


class Responder:
    """One HTTP session for response_url posts, with the poster as the fallback."""

    def __init__(self, poster: SlackPoster) -> None:
        self.poster = poster
        self._session: aiohttp.ClientSession | None = None

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

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
