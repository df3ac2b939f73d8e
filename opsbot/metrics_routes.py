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

    async def handle_metrics(request: web.Request) -> web.Response:
        if token and not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
            return web.Response(status=401, text="metrics need Authorization: Bearer <OPSBOT_METRICS_TOKEN>")
        registry = source if source is not None else _metrics.DEFAULT
        body, content_type = registry.render(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    return [web.get("/metrics", handle_metrics)]
