"""`POST /webhooks/flux` and `POST /webhooks/argocd`: agent events, taken in safely and fast.

Why it is built this way:

- **Authenticate before anything else.** The body is read up to `max_body` bytes (413 beyond,
  without reading the rest), then checked over those exact bytes: Flux `generic-hmac`
  `X-Signature: <algo>=<hex>` against FLUX_WEBHOOK_SECRET, Argo CD `Authorization: Bearer` against
  ARGOCD_WEBHOOK_TOKEN. No secret configured means every event is refused (401): an endpoint that
  accepts anything when unconfigured is an open door. Only an authenticated body is parsed.
- **Clear refusals.** A body that is not JSON, or not the documented shape, gets 400 with the
  parser's message naming the field at fault; a well-formed event about something that is not a
  deploy (a GitRepository, say) gets 202 "ignored", so an Alert that also watches sources is not
  retried forever.
- **Stored before answered, never dropped.** Room in the processor's bounded queue is reserved
  first; when there is none the answer is 503 with Retry-After and nothing is stored (Flux's and
  Argo CD's HTTP clients retry 5xx). Then the event goes into the inbox under its dedup key, and
  only then is 202 sent. A key stored before (a redelivery, or Flux repeating an unchanged status
  every interval) is answered 202 "duplicate" and changes nothing.

Every answer is counted in `opsbot_webhook_events{source, outcome}` (the bot's registry):
accepted, duplicate, ignored, unauthorized, too_large, bad_request, overloaded (queue full),
unavailable (the store failed), error (a bug; aiohttp answered 500).

Answers are small JSON objects (`{"result": "accepted" | "duplicate" | "ignored"}` or
`{"error": ...}`); they never echo a secret or a header.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from opsbot.core.model import utcnow
from opsbot.intake.agents import (
    PayloadError,
    UnsupportedEvent,
    parse_argocd_event,
    parse_flux_event,
    verify_bearer,
    verify_flux_signature,
)
from opsbot.intake.deploys import AgentIntake, IntakeItem, event_record, inbox_key
from opsbot.intake.http import read_capped
from opsbot.metrics import DEFAULT as DEFAULT_METRICS
from opsbot.metrics import Metrics
from opsbot.settings import Settings

log = logging.getLogger(__name__)

FLUX_PATH = "/webhooks/flux"
ARGOCD_PATH = "/webhooks/argocd"


def _reply(status: int, headers: dict[str, str] | None = None, **body: Any) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


class AgentWebhooks:
    """The two agent endpoints of one bot; `routes()` is what the aiohttp app mounts."""

    def __init__(
        self,
        settings: Settings,
        intake: AgentIntake,
        *,
        max_body: int | None = None,
        clock: Callable[[], datetime] = utcnow,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.intake = intake
        self.max_body = settings.max_body_bytes if max_body is None else max_body
        self.clock = clock
        #: `opsbot_webhook_events{source, outcome}`: every answer below is counted once
        self.metrics = DEFAULT_METRICS if metrics is None else metrics
        self._warned: set[str] = set()

    def routes(self) -> list[web.RouteDef]:
        return [web.post(FLUX_PATH, self.flux), web.post(ARGOCD_PATH, self.argocd)]

    async def flux(self, request: web.Request) -> web.StreamResponse:
        return await self._counted("flux", self._flux(request))

    async def argocd(self, request: web.Request) -> web.StreamResponse:
        return await self._counted("argocd", self._argocd(request))

    async def _counted(self, source: str, handling: Awaitable[tuple[str, web.Response]]) -> web.Response:
        try:
            outcome, response = await handling
        except Exception:
            self.metrics.record_webhook_event(source, "error")
            raise
        self.metrics.record_webhook_event(source, outcome)
        return response

    async def _flux(self, request: web.Request) -> tuple[str, web.Response]:
        secret = self.settings.flux_webhook_secret.get()
        if not secret:
            return self._unconfigured("flux", "FLUX_WEBHOOK_SECRET")
        body = await self._read_capped(request)
        if body is None:
            return "too_large", _reply(413, error=f"body larger than {self.max_body} bytes")
        if not verify_flux_signature(secret, body, request.headers.get("X-Signature")):
            log.info("Flux event refused: bad or missing X-Signature")
            return "unauthorized", _reply(401, error="bad or missing X-Signature")
        return await self._accept("flux", body, parse_flux_event)

    async def _argocd(self, request: web.Request) -> tuple[str, web.Response]:
        token = self.settings.argocd_webhook_token.get()
        if not token:
            return self._unconfigured("argocd", "ARGOCD_WEBHOOK_TOKEN")
        body = await self._read_capped(request)
        if body is None:
            return "too_large", _reply(413, error=f"body larger than {self.max_body} bytes")
        if not verify_bearer(token, request.headers.get("Authorization")):
            log.info("Argo CD event refused: bad or missing Authorization bearer token")
            return "unauthorized", _reply(401, error="bad or missing Authorization: Bearer token")
        return await self._accept("argocd", body, parse_argocd_event)

    # ------------------------------------------------------------------------------ internals

    def _unconfigured(self, source: str, variable: str) -> tuple[str, web.Response]:
        if source not in self._warned:
            self._warned.add(source)
            log.warning("%s event refused: %s is not set, so no %s event can be authenticated",
                        source, variable, source)
        return "unauthorized", _reply(401, error=f"{variable} is not configured")

    async def _read_capped(self, request: web.Request) -> bytes | None:
        return await read_capped(request, self.max_body)

    async def _accept(
        self, source: str, body: bytes, parse: Callable[..., Any]
    ) -> tuple[str, web.Response]:
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:
            return "bad_request", _reply(400, error=f"body is not JSON: {_json_error(exc)}")
        received = self.clock()
        try:
            event = parse(payload, received_at=received)
        except UnsupportedEvent as exc:
            return "ignored", _reply(202, result="ignored", reason=exc.message)
        except PayloadError as exc:
            return "bad_request", _reply(400, error=exc.message)
        except RecursionError:
            return "bad_request", _reply(400, error="body is nested too deeply")
        key = inbox_key(event)
        if self.intake.seen(source, key):
            return "duplicate", _reply(202, result="duplicate")
        if not self.intake.try_reserve():
            retry = str(self.intake.retry_after)
            return "overloaded", _reply(503, headers={"Retry-After": retry}, error="busy; retry later")
        try:
            record = event_record(event, received)
            added = await self.intake.store_event(source, key, record)
        except Exception as exc:
            self.intake.release()
            log.error("could not store a %s event: %s", source, type(exc).__name__)
            retry = str(self.intake.retry_after)
            return "unavailable", _reply(
                503, headers={"Retry-After": retry}, error="store unavailable; retry later"
            )
        if not added:
            self.intake.release()
            return "duplicate", _reply(202, result="duplicate")
        self.intake.put_reserved(IntakeItem(source, key, record))
        return "accepted", _reply(202, result="accepted")


def _json_error(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return type(exc).__name__


def agent_webhook_routes(bot: Any, settings: Settings, intake: AgentIntake) -> list[web.RouteDef]:
    """The routes to mount on the bot's aiohttp app (see `AgentWebhooks` for the why).

    `bot` gives the metrics registry its events are counted in (`bot.metrics`, when it has one).
    """
    return AgentWebhooks(settings, intake, metrics=getattr(bot, "metrics", None)).routes()
