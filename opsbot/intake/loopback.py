"""Deliver one agent event to the bot's own webhook route on 127.0.0.1, as Flux would.

For `opsbot testdrive`, which has no cluster: after the merge it plays Flux's part so the person
sees the whole loop (reconciled → thread reply → deploy-channel line). The event goes through the
real path, nothing short-cut: `POST /webhooks/flux` with a `generic-hmac` `X-Signature` over the
exact bytes, the intake's signature check, inbox, dedup, correlation (merge SHA ⊑ revision), and
the outbox. Only the sender is ours.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web

from opsbot.core.model import utcnow
from opsbot.intake.agent_routes import FLUX_PATH, agent_webhook_routes
from opsbot.intake.deploys import AgentIntake, DeployProcessor
from opsbot.settings import Settings


def flux_success_event(*, name: str, namespace: str, revision: str, at: datetime | None = None,
                       cluster: str = "") -> dict[str, Any]:
    """What kustomize-controller posts when a Kustomization applied `revision` (`main@sha1:<sha>`)."""
    metadata: dict[str, str] = {"revision": revision}
    if cluster:
        metadata["cluster"] = cluster
    return {
        "involvedObject": {"kind": "Kustomization", "namespace": namespace, "name": name,
                           "apiVersion": "kustomize.toolkit.fluxcd.io/v1"},
        "severity": "info",
        "timestamp": (at or utcnow()).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "message": "Reconciliation finished in 1.2s, next run in 10m0s",
        "reason": "ReconciliationSucceeded",
        "metadata": metadata,
        "reportingController": "kustomize-controller",
    }


async def deliver_flux_event(bot: Any, settings: Settings, event: dict[str, Any]) -> int:
    """POST `event`, signed with FLUX_WEBHOOK_SECRET, to a loopback server carrying the real routes;
    return the HTTP status once the intake has processed it (its outbox items are then queued)."""
    secret = settings.flux_webhook_secret.get()
    body = json.dumps(event).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    intake = AgentIntake(DeployProcessor(bot, settings), sweep_interval=0)
    app = web.Application(client_max_size=settings.max_body_bytes)
    app.add_routes(agent_webhook_routes(bot, settings, intake))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await intake.start()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = int(runner.addresses[0][1])
        headers = {"Content-Type": "application/json", "X-Signature": signature,
                   "Gotk-Component": "kustomize-controller"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session, \
                session.post(f"http://127.0.0.1:{port}{FLUX_PATH}", data=body, headers=headers) as resp:
            status = resp.status
        await intake.idle()
        return status
    finally:
        await intake.stop()
        intake.close()
        await runner.cleanup()
