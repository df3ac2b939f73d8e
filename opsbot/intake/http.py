"""HTTP helpers the webhook routes share (aiohttp stays inside the intake adapters)."""

from __future__ import annotations

from aiohttp import web


async def read_capped(request: web.Request, max_body: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed `max_body` (the rest is never read).

    Why not `request.read()`: that buffers whatever a sender streams; a webhook endpoint must refuse
    an oversize or endless chunked body without holding it in memory.
    """
    if request.content_length is not None and request.content_length > max_body:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(min(65536, max_body + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > max_body:
            return None
