"""Metrics recorded where things happen, scraped from the running server after a real run.

The real process (`opsbot.server.Server` on 127.0.0.1 port 0: Bolt, the outbox worker, the GitHub,
Flux and Argo CD routes, /metrics), a local forge on a real Git repo, SQLite, the Slack double (with
one 429 on chat.postMessage) and a signed Flux webhook. Then `GET /metrics` over HTTP, and every
count is exactly what happened. The bot has a `Metrics` of its own, so no other test's counts mix in.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from opsbot import metrics as metrics_module
from opsbot.app import Opsbot
from opsbot.core.model import RequestState
from opsbot.intake.agent_routes import ARGOCD_PATH, FLUX_PATH
from opsbot.intake.agents import parse_flux_event
from opsbot.intake.deploys import IntakeItem, event_record, inbox_key
from opsbot.intake.github_routes import PATH as GITHUB_PATH
from opsbot.metrics import Metrics
from opsbot.server import Server
from opsbot.settings import load_settings
from tests.doubles.slack import BOT_TOKEN, SIGNING_SECRET, SlackApiDouble
from tests.plugins.slack import SlackChat, fleet_with_config

ROOT = Path(__file__).resolve().parents[2]
PAYLOADS = ROOT / "tests" / "fixtures" / "payloads"
FLUX_SECRET = "metrics-e2e-flux-secret"
ARGO_TOKEN = "metrics-e2e-argo-token"
PROD_AGENT = {"kind": "flux", "name": "apps", "namespace": "flux-system", "cluster": "prod-eu"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


@pytest.fixture
async def running(slack_double: SlackApiDouble, tmp_path: Path) -> AsyncIterator[tuple[Server, SlackChat]]:
    settings = load_settings(
        environ={},
        repo=str(fleet_with_config(tmp_path / "fleet", production={"agent": PROD_AGENT})),
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack_double.api_url,
        flux_webhook_secret=FLUX_SECRET,
        argocd_webhook_token=ARGO_TOKEN,
    )
    bot = Opsbot(settings, metrics=Metrics())
    server = Server(settings, bot=bot, host="127.0.0.1", port=0)  # the server wires the agent intake itself
    await server.start()
    try:
        yield server, SlackChat(slack_double, server)
    finally:
        await server.stop()
        bot.close()


async def post(server: Server, path: str, body: bytes, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{server.port}{path}", data=body, headers=headers) as resp,
    ):
        return resp.status


async def flux(server: Server, payload: dict[str, Any], secret: str = FLUX_SECRET) -> int:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return await post(server, FLUX_PATH, body, {"Content-Type": "application/json", "X-Signature": signature})


async def test_a_real_run_then_scrape(running: tuple[Server, SlackChat]) -> None:
    server, chat = running
    bot = server.bot
    default_before = metrics_module.DEFAULT.render()[0]

    # Slack limits the first chat.postMessage (the thread root): it is retried, once, in place
    chat.double.rate_limit("chat.postMessage", times=1, retry_after=0)
    await chat.ops("scale frontend 5 in production", user="U0ALICE")
    root = chat.only_root()
    await chat.ops("scale frontend 5 in production", user="U0ALICE")  # the same ask: the open PR again
    await chat.ops("scale nosuchapp 2 in production", user="U0ALICE")  # refused: failure
    await chat.ops("status frontend", user="U0CAROL")
    await chat.click(root, "approve", user="U0BOB")
    await chat.click(root, "merge", user="U0BOB")
    (request,) = bot.store.list_requests()
    assert request.state is RequestState.MERGED and request.merged_at is not None

    # Flux says it is live: accepted, then the same event again (duplicate), then a forged one
    live_at = request.merged_at + timedelta(seconds=42)
    payload: dict[str, Any] = json.loads((PAYLOADS / "flux" / "kustomization-succeeded.json").read_text())
    payload["metadata"] = {"revision": f"main@sha1:{request.merge_sha}", "cluster": "prod-eu"}
    payload["timestamp"] = live_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert await flux(server, payload) == 202
    assert await flux(server, payload) == 202
    assert await flux(server, payload, secret="not-the-secret") == 401
    assert (
        await post(
            server,
            FLUX_PATH,
            b"{" * 10,
            {
                "X-Signature": "sha256="
                + hmac.new(FLUX_SECRET.encode(), b"{" * 10, hashlib.sha256).hexdigest()
            },
        )
        == 400
    )
    ignored = dict(payload, involvedObject={**payload["involvedObject"], "kind": "GitRepository"})
    assert await flux(server, ignored) == 202
    assert await post(server, ARGOCD_PATH, b"{}", {"Authorization": "Bearer wrong"}) == 401
    assert await post(server, GITHUB_PATH, b"{}", {"X-GitHub-Event": "ping"}) == 401  # no secret set
    await server.deploys.idle()
    await chat.settle()
    assert bot.store.get_request(request.id).state is RequestState.DEPLOYED
    # a replay of the same event (as after a crash) finds the request deployed: no second observation
    event = parse_flux_event(payload, received_at=live_at)
    item = IntakeItem("flux", inbox_key(event), event_record(event, live_at))
    await asyncio.to_thread(server.deploys.processor.handle, item, replay=True)

    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{server.port}/metrics") as resp:
        assert resp.status == 200
        got = parse(await resp.text())

    def value(name: str, **labels: str) -> float:
        return got.get((name, frozenset(labels.items())), 0.0)

    assert value("opsbot_commands_total", command="scale", outcome="ok") == 2
    assert value("opsbot_commands_total", command="scale", outcome="failure") == 1
    assert value("opsbot_commands_total", command="status", outcome="ok") == 1
    assert value("opsbot_commands_total", command="approve", outcome="ok") == 1
    assert value("opsbot_commands_total", command="merge", outcome="ok") == 1
    assert sum(v for (name, _), v in got.items() if name == "opsbot_commands_total") == 6
    assert value("opsbot_prs_opened_total") == 1
    assert value("opsbot_prs_merged_total") == 1

    assert value("opsbot_webhook_events_total", source="flux", outcome="accepted") == 1
    assert value("opsbot_webhook_events_total", source="flux", outcome="duplicate") == 1
    assert value("opsbot_webhook_events_total", source="flux", outcome="unauthorized") == 1
    assert value("opsbot_webhook_events_total", source="flux", outcome="bad_request") == 1
    assert value("opsbot_webhook_events_total", source="flux", outcome="ignored") == 1
    assert value("opsbot_webhook_events_total", source="argocd", outcome="unauthorized") == 1
    assert value("opsbot_webhook_events_total", source="github", outcome="unauthorized") == 1
    assert sum(v for (name, _), v in got.items() if name == "opsbot_webhook_events_total") == 7

    assert value("opsbot_merge_to_deployed_seconds_count") == 1
    assert abs(value("opsbot_merge_to_deployed_seconds_sum") - 42) < 1
    assert value("opsbot_merge_to_deployed_seconds_bucket", le="60.0") == 1
    assert value("opsbot_merge_to_deployed_seconds_bucket", le="30.0") == 0

    assert value("opsbot_api_errors_total", api="slack", kind="rate_limited") == 1
    assert value("opsbot_api_retries_total", api="slack") == 1
    first_posts = chat.double.calls_to("chat.postMessage")[:2]
    assert first_posts[0].status == 429 and first_posts[1].ok  # the root got through on the retry
    assert value("opsbot_api_errors_total", api="github", kind="rate_limited") == 0

    # the process-wide default registry saw none of it: the bot's own instance was used everywhere
    assert metrics_module.DEFAULT.render()[0] == default_before
