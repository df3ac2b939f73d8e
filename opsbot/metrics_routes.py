"""`GET /metrics` as aiohttp routes, kept apart from `opsbot.metrics` so that module needs no aiohttp.

server.py adds them next to its own routes:
`Server(settings, extra_routes=[*metrics_routes(), ...])`.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from opsbot import metrics as _metrics


def metrics_routes(source: _metrics.Metrics | None = None, token: str = "") -> list[web.RouteDef]:
    """The /metrics route over `source` (the process's `opsbot.metrics.DEFAULT` unless given).

    With OPSBOT_METRICS_TOKEN set, scrapes must send `Authorization: Bearer <token>` (Prometheus'
    `authorization` scrape setting); without it the route answers anyone, carrying counts only —
    never a name, a message or a secret — for an in-cluster ClusterIP Service.
    """

    expected = f"Bearer {token}".encode("utf-8", "surrogatepass")

    async def handle_metrics(request: web.Request) -> web.Response:
        # bytes, not str: compare_digest refuses non-ASCII str (a 500), and aiohttp hands hostile
        # header bytes over as lone surrogates, which only surrogatepass encodes without raising
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogatepass")
        if token and not hmac.compare_digest(given, expected):
            return web.Response(status=401, text="metrics need Authorization: Bearer <OPSBOT_METRICS_TOKEN>")
        registry = source if source is not None else _metrics.DEFAULT
        body, content_type = registry.render(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    return [web.get("/metrics", handle_metrics)]
