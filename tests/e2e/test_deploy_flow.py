"""`/ops promote` → PR → merge → the agent's event → exactly one reply and one deploy-channel line.

The real server (aiohttp + Bolt + outbox worker, local forge, SQLite) runs on 127.0.0.1 with the
agent routes mounted the way server.py is to mount them (`extra_routes`), Slack is the protocol
double, Flux events are the captured payloads signed with the real HMAC, and watch mode reads the
Kubernetes API double. Waits are hang guards (`wait_for` with a timeout), never speed assertions.

docs/gitops.md is followed here too: `test_the_doc_shows_only_what_is_tested` fails when the page
shows a command this file does not run.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import json
import os
import re
import shlex
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from opsbot.app import Opsbot
from opsbot.chat import texts
from opsbot.core.model import RequestState
from opsbot.intake.agent_routes import FLUX_PATH, agent_webhook_routes
from opsbot.intake.deploys import AgentIntake, DeployProcessor
from opsbot.intake.watching import KUSTOMIZATIONS, DeployWatch
from opsbot.kube.client import parse_watch
from opsbot.kube.lease import LeaseElector
from opsbot.server import Server
from opsbot.settings import Settings, load_settings
from tests.doubles.kube import KUSTOMIZATION, KubeDouble
from tests.doubles.slack import BOT_TOKEN, SIGNING_SECRET, SlackApiDouble
from tests.plugins.slack import SlackChat, fleet_with_config

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "gitops.md"
PAYLOADS = ROOT / "tests" / "fixtures" / "payloads"
KUBECTL = ROOT / ".venv" / "bin" / "kubectl"
FLUX_SECRET = "e2e-flux-hmac-secret"
ARGO_TOKEN = "e2e-argo-token"
DEPLOY_CHANNEL = "C0DEPLOY"
PROD_AGENT = {"kind": "flux", "name": "apps", "namespace": "flux-system", "cluster": "prod-eu"}
GUARD = 20.0  # seconds before a wait gives up: a hang guard, not a speed requirement


def flux_payload(name: str, sha: str, at: datetime, **changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((PAYLOADS / "flux" / f"{name}.json").read_text())
    payload["metadata"] = {"revision": f"main@sha1:{sha}", "cluster": "prod-eu"}
    payload["timestamp"] = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    payload.update(changes)
    return payload


@dataclass
class Deploys:
    chat: SlackChat
    server: Server
    bot: Opsbot
    processor: DeployProcessor
    intake: AgentIntake
    settings: Settings

    @property
    def double(self) -> SlackApiDouble:
        return self.chat.double

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{self.server.port}{path}", data=body, headers=headers
        ) as resp:
            return resp.status, await resp.json()

    async def flux(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = json.dumps(payload).encode()
        signature = "sha256=" + hmac.new(FLUX_SECRET.encode(), body, hashlib.sha256).hexdigest()
        return await self.post(FLUX_PATH, body, {"Content-Type": "application/json", "X-Signature": signature})

    async def settle(self) -> None:
        await self.intake.idle()
        await self.chat.settle()

    async def promote_and_merge(self, command: str) -> Any:
        before = len(self.chat.roots())
        await self.chat.ops(command, user="U0ALICE")
        root = self.chat.roots()[before]
        await self.chat.click(root, "approve", user="U0BOB")
        await self.chat.click(root, "merge", user="U0BOB")
        return root

    def deploy_lines(self) -> list[str]:
        return [m.all_text() for m in self.double.messages(DEPLOY_CHANNEL)]

    def request_of(self, root: Any) -> Any:
        (request,) = [r for r in self.bot.store.list_requests() if r.thread_ts == root.ts]
        return request


Factory = Callable[..., Awaitable[Deploys]]


@pytest.fixture
async def deploys(slack_double: SlackApiDouble, tmp_path: Path) -> AsyncIterator[Factory]:
    running: list[Deploys] = []

    async def start(*, repo: Path | None = None, **overrides: Any) -> Deploys:
        repo = repo or fleet_with_config(tmp_path / "fleet", production={"agent": PROD_AGENT})
        values: dict[str, Any] = {
            "repo": str(repo),
            "slack_bot_token": BOT_TOKEN,
            "slack_signing_secret": SIGNING_SECRET,
            "slack_api_url": slack_double.api_url,
            "deploy_channel": DEPLOY_CHANNEL,
            "flux_webhook_secret": FLUX_SECRET,
            "argocd_webhook_token": ARGO_TOKEN,
        }
        values.update(overrides)
        settings = load_settings(environ={}, **values)
        bot = Opsbot(settings)
        server_box: list[Server] = []

        def wake() -> None:
            if server_box and server_box[0].slack is not None:
                server_box[0].slack.worker.wake()

        processor = DeployProcessor(bot, settings, wake=wake)
        intake = AgentIntake(processor, sweep_interval=0)
        if "deploys" in inspect.signature(Server).parameters:  # server.py wires the intake itself
            server = Server(settings, bot=bot, host="127.0.0.1", port=0, deploys=intake)
        else:  # until then: mounted exactly as the wiring does, through the extra routes
            server = Server(settings, bot=bot, host="127.0.0.1", port=0,
                            extra_routes=agent_webhook_routes(bot, settings, intake))
        server_box.append(server)
        await server.start()
        await intake.start()  # a no-op when the server started it
        made = Deploys(SlackChat(slack_double, server), server, bot, processor, intake, settings)
        running.append(made)
        return made

    yield start
    for d in running:
        await stop(d)


async def stop(d: Deploys) -> None:
    if getattr(d, "_stopped", False):
        return
    d._stopped = True  # type: ignore[attr-defined]
    await d.intake.stop()
    await d.server.stop()
    d.intake.close()
    d.bot.close()


# --------------------------------------------------------------------------------------------- the story


async def test_promote_merge_flux_success_tells_thread_and_channel_once(deploys: Factory) -> None:
    d = await deploys()
    root = await d.promote_and_merge("promote frontend to production")
    request = d.request_of(root)
    assert request.state is RequestState.MERGED
    live_at = (request.merged_at + timedelta(seconds=102)).replace(microsecond=0)
    since = texts.duration(live_at - request.merged_at)
    short = request.merge_sha[:7]

    assert await d.flux(flux_payload("kustomization-progressing", request.merge_sha, live_at)) == (
        202, {"result": "accepted"})
    success = flux_payload("kustomization-succeeded", request.merge_sha, live_at)
    assert await d.flux(success) == (202, {"result": "accepted"})
    await d.settle()

    assert d.chat.thread(root) == [
        "✅ Approved by <@U0BOB>",
        f"🔀 Merged by <@U0BOB> as {short}",
        f"🚀 Live in production — Flux kustomization apps applied {short}, {since} after merge",
    ]
    assert d.chat.status(root) == "live in production"
    (line,) = d.deploy_lines()
    assert line.startswith("🚀 production · frontend image frontend ghcr.io/acme/frontend:1.4.2 → "
                           "ghcr.io/acme/frontend:1.5.0 · ")
    assert re.search(r"\|PR #1> by <@U0ALICE>, approved by <@U0BOB> · live ", line)
    assert line.endswith(f"live {since} after merge")

    # Flux repeats the status with a new duration, and redelivers: nothing new anywhere
    calls = len(d.double.calls)
    for body in (success, {**success, "message": "Reconciliation finished in 0.9s, next run in 10m0s"}):
        assert await d.flux(body) == (202, {"result": "duplicate"})
    await d.settle()
    assert len(d.double.calls) == calls
    assert d.bot.store.get_request(request.id).state is RequestState.DEPLOYED


async def test_three_merges_one_reconcile_three_deployed(deploys: Factory) -> None:
    d = await deploys()
    roots = [await d.promote_and_merge(c) for c in ("scale frontend 5 in production", "scale cache 3 in production",
                                                    "promote frontend to production")]
    last = d.request_of(roots[-1])
    await d.flux(flux_payload("kustomization-succeeded", last.merge_sha, datetime.now(UTC)))
    await d.settle()
    for root in roots:
        lives = [t for t in d.chat.thread(root) if t.startswith("🚀")]
        assert len(lives) == 1 and f"applied {last.merge_sha[:7]}" in lives[0]
        assert d.chat.status(root) == "live in production"
    lines = d.deploy_lines()
    assert len(lines) == 3 and all(line.startswith("🚀 production · ") for line in lines)
    assert sorted(line.split(" · ")[1].split(" ")[0] for line in lines) == ["cache", "frontend", "frontend"]


async def test_failure_is_told_with_the_agents_message(deploys: Factory) -> None:
    d = await deploys()
    root = await d.promote_and_merge("scale frontend 5 in production")
    request = d.request_of(root)
    failure = flux_payload("kustomization-health-check-failed-unprefixed", request.merge_sha, datetime.now(UTC))
    await d.flux(failure)
    await d.flux({**failure, "message": failure["message"] + " (retry 2)"})  # the same failure, repeated
    await d.settle()
    message = failure["message"]
    assert d.chat.thread(root)[-1] == f"❌ Failed in production — HealthCheckFailed: {message}"
    assert len([t for t in d.chat.thread(root) if t.startswith("❌")]) == 1
    assert d.chat.status(root) == f"failed in production: HealthCheckFailed: {message}"
    (line,) = d.deploy_lines()
    assert line.startswith("❌ production · frontend replicas 3 → 5 · ")
    assert line.endswith(f"failed: HealthCheckFailed: {message}")


async def test_an_event_for_an_older_revision_says_nothing(deploys: Factory) -> None:
    d = await deploys()
    root = await d.promote_and_merge("scale frontend 5 in production")
    request = d.request_of(root)
    await d.flux(flux_payload("kustomization-succeeded", request.base_sha, datetime.now(UTC)))
    await d.settle()
    assert len(d.chat.thread(root)) == 2 and d.deploy_lines() == []
    assert d.bot.store.get_request(request.id).state is RequestState.MERGED


async def test_killed_between_202_and_post_restarted_posts_exactly_once(deploys: Factory, tmp_path: Path) -> None:
    first = await deploys()
    root = await first.promote_and_merge("scale frontend 5 in production")
    request = first.request_of(root)
    # the process dies after answering 202 and before it gets to the event: nothing is handled
    first.processor.handle_batch = lambda items, **kw: 0  # type: ignore[method-assign]
    assert await first.flux(flux_payload("kustomization-succeeded", request.merge_sha, datetime.now(UTC))) == (
        202, {"result": "accepted"})
    assert len(first.bot.store.inbox_pending()) == 1
    await stop(first)  # the queue in memory is gone; the inbox row is not
    assert len(first.chat.thread(root)) == 2

    second = await deploys(repo=Path(first.settings.repo))  # new bot, server and processor, same files
    await second.settle()
    await second.double.wait_for(lambda: len(second.chat.thread(root)) == 3, what="the deploy reply")
    assert second.chat.thread(root)[-1].startswith("🚀 Live in production")
    assert len(second.deploy_lines()) == 1
    assert second.bot.store.inbox_pending() == []
    await stop(second)

    third = await deploys(repo=Path(first.settings.repo))  # and once more: nothing is posted twice
    await third.settle()
    assert len(third.chat.thread(root)) == 3 and len(third.deploy_lines()) == 1


async def test_overload_is_503_with_retry_after(deploys: Factory) -> None:
    d = await deploys()
    root = await d.promote_and_merge("scale frontend 5 in production")
    request = d.request_of(root)
    gate, entered = threading.Event(), threading.Event()  # the processor is stuck (a slow disk)
    handle = d.processor.handle_batch

    def stuck(items: Any, **kw: Any) -> int:
        entered.set()
        gate.wait(GUARD)
        return handle(items, **kw)

    d.processor.handle_batch = stuck  # type: ignore[method-assign]
    d.intake.maxsize = 1
    now = datetime.now(UTC)
    assert (await d.flux(flux_payload("kustomization-progressing", request.merge_sha, now)))[0] == 202
    assert await asyncio.to_thread(entered.wait, GUARD)  # the first event is in the processor's hands
    assert (await d.flux(flux_payload("kustomization-progressing", request.merge_sha, now,
                                      reason="ProgressingWithRetry")))[0] == 202  # one in hand, one queued
    success = flux_payload("kustomization-succeeded", request.merge_sha, now)
    body = json.dumps(success).encode()
    signature = "sha256=" + hmac.new(FLUX_SECRET.encode(), body, hashlib.sha256).hexdigest()
    async with aiohttp.ClientSession() as http, http.post(
        f"http://127.0.0.1:{d.server.port}{FLUX_PATH}", data=body,
        headers={"X-Signature": signature, "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    assert len(d.bot.store.inbox_pending()) == 2  # the refused event was not stored
    gate.set()
    await d.settle()
    assert await d.flux(success) == (202, {"result": "accepted"})
    await d.settle()
    assert d.chat.thread(root)[-1].startswith("🚀 Live in production")


# --------------------------------------------------------------------------------------------- watch mode


def _kustomization(sha: str, *, ready: str = "True", reason: str = "ReconciliationSucceeded") -> dict[str, Any]:
    revision = f"main@sha1:{sha}"
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "apps", "namespace": "flux-system", "generation": 2},
        "spec": {"path": "./overlays/production", "interval": "10m"},
        "status": {
            "observedGeneration": 2,
            "lastAppliedRevision": revision,
            "lastAttemptedRevision": revision,
            "conditions": [{"type": "Ready", "status": ready, "reason": reason,
                            "message": f"Applied revision: {revision}",
                            "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}],
        },
    }


async def test_watch_mode_drives_the_same_processor_with_one_leader(
    deploys: Factory, kube_double: KubeDouble, make_kube_client: Callable[..., Any]
) -> None:
    d = await deploys()
    root = await d.promote_and_merge("scale frontend 5 in production")
    request = d.request_of(root)
    kube_double.apply(KUSTOMIZATION, _kustomization(request.base_sha))  # what ran before the merge

    options = {"timeout_seconds": 30, "stop_poll_seconds": 0.05}
    replicas = [
        DeployWatch(
            d.intake, [("prod-eu", make_kube_client())],
            elector=LeaseElector(make_kube_client(), namespace="opsbot", name="opsbot-watch", identity=who),
            resources=[KUSTOMIZATIONS], retry_period=0.1, watcher_options=options,
        )
        for who in ("replica-a", "replica-b")
    ]
    replicas[0].start()
    try:
        await asyncio.to_thread(kube_double.wait_for_watches, KUSTOMIZATION, 1)  # the loop must keep serving
        replicas[1].start()
        await d.settle()
        assert len(d.chat.thread(root)) == 2  # the old revision deploys nothing

        kube_double.apply(KUSTOMIZATION, _kustomization(request.merge_sha))  # Flux applied the merge
        await d.double.wait_for(lambda: len(d.chat.thread(root)) == 3, timeout=GUARD, what="the watched deploy")
        await d.settle()
        assert d.chat.thread(root)[-1].startswith(
            f"🚀 Live in production — Flux kustomization apps applied {request.merge_sha[:7]}")
        assert len(d.deploy_lines()) == 1

        kube_double.compact()  # history lost: the watcher relists and sees the same state again
        kube_double.end_watches()
        await asyncio.to_thread(kube_double.wait_for_watches, KUSTOMIZATION, 2)
        await d.settle()
        assert len(d.chat.thread(root)) == 3 and len(d.deploy_lines()) == 1
        assert replicas[0].delivered >= 1 and replicas[1].delivered == 0  # one leader watches
        lease = kube_double.get(kube_double_lease_kind(), "opsbot", "opsbot-watch")
        assert lease is not None and lease["spec"]["holderIdentity"] == "replica-a"
    finally:
        for replica in replicas:
            await asyncio.to_thread(replica.stop)
    assert all(r.error is None for r in replicas)
    assert not [t.name for t in threading.enumerate() if t.name in ("opsbot-watch", "leader-work")]


def kube_double_lease_kind() -> Any:
    from tests.doubles.kube import LEASE

    return LEASE


# --------------------------------------------------------------------------------------------- the page


def fenced(lang: str) -> list[str]:
    blocks: list[str] = []
    current: list[str] | None = None
    kind = ""
    indent = 0
    for line in DOC.read_text().splitlines():
        if line.strip().startswith("```"):  # fences may be indented inside list items
            if current is None:
                kind, current = line.strip()[3:].strip(), []
                indent = len(line) - len(line.lstrip())
            else:
                if kind == lang:
                    blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line[indent:])
    assert current is None, "unclosed code block in docs/gitops.md"
    return blocks


def doc_commands() -> list[str]:
    """Every command line of the page's `sh` blocks (continuation lines joined)."""
    commands: list[str] = []
    for block in fenced("sh"):
        joined = block.replace("\\\n", " ")
        commands += [line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]
    return commands


#: What the page shows, and what runs it below.
TESTED = {
    "TOKEN=\"$(openssl rand -hex 32)\"": "test_doc_secret_commands",
    "kubectl -n flux-system create secret generic opsbot-webhook-hmac --from-literal=token=\"$TOKEN\"":
        "test_doc_secret_commands",
    "kubectl kustomize deploy/gitops/flux": "test_doc_flux_kustomize",
    "BODY=\"$(cat tests/fixtures/payloads/flux/kustomization-succeeded.json)\"": "test_doc_curl_reaches_the_route",
    "SIG=\"$(printf '%s' \"$BODY\" | openssl dgst -sha256 -hmac \"$FLUX_WEBHOOK_SECRET\" -r | cut -d' ' -f1)\"":
        "test_doc_curl_reaches_the_route",
    "curl -s -X POST http://localhost:3000/webhooks/flux -H \"Content-Type: application/json\" "
    "-H \"X-Signature: sha256=$SIG\" --data-binary \"$BODY\"": "test_doc_curl_reaches_the_route",
    "curl -s -X POST http://localhost:3000/webhooks/argocd -H \"Content-Type: application/json\" "
    "-H \"Authorization: Bearer $ARGOCD_WEBHOOK_TOKEN\" --data-binary @tests/fixtures/payloads/argocd/app-deployed.json":
        "test_doc_curl_reaches_the_route",
}


def test_the_doc_shows_only_what_is_tested() -> None:
    shown = doc_commands()
    assert shown, "docs/gitops.md shows no commands"
    untested = [c for c in shown if c not in TESTED]
    assert untested == [], f"commands on the page with no test: {untested}"
    missing = [c for c in TESTED if c not in shown]
    assert missing == [], f"tested commands no longer on the page: {missing}"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "OPSBOT_", "GITHUB_", "FLUX_", "ARGOCD_", "KUBECONFIG"))}
    env["PATH"] = f"{KUBECTL.parent}:{env.get('PATH', '')}"
    env.update(extra)
    return env


def _run(lines: list[str], env: dict[str, str]) -> str:
    script = "set -euo pipefail\n" + "\n".join(lines)
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_doc_secret_commands() -> None:
    """The secret lines, made offline by `--dry-run=client -o yaml`: the Secret has the key Flux reads."""
    lines = [c for c in doc_commands() if TESTED[c] == "test_doc_secret_commands"]
    out = _run([*lines[:-1], lines[-1] + " --dry-run=client -o yaml"], _clean_env())
    secret = yaml.safe_load(out)
    assert secret["kind"] == "Secret" and secret["metadata"] == {"name": "opsbot-webhook-hmac",
                                                                 "namespace": "flux-system"}
    assert len(secret["data"]["token"]) > 40  # base64 of 64 hex characters


def test_doc_flux_kustomize() -> None:
    """The render the page shows: the Provider posting to our route and the Alert, and no Secret."""
    (line,) = [c for c in doc_commands() if TESTED[c] == "test_doc_flux_kustomize"]
    args = shlex.split(line)
    out = subprocess.run([str(KUBECTL), *args[1:]], capture_output=True, text=True, cwd=ROOT, check=True,
                         timeout=120).stdout
    docs = {d["kind"]: d for d in yaml.safe_load_all(out)}
    assert sorted(docs) == ["Alert", "Provider"]
    assert docs["Provider"]["spec"]["type"] == "generic-hmac"
    assert docs["Provider"]["spec"]["address"].endswith(FLUX_PATH)


async def test_doc_curl_reaches_the_route(deploys: Factory) -> None:
    """The page's test requests, run with bash/openssl/curl against the running server."""
    d = await deploys()
    lines = [c.replace("localhost:3000", f"127.0.0.1:{d.server.port}")
             for c in doc_commands() if TESTED[c] == "test_doc_curl_reaches_the_route"]
    env = _clean_env(FLUX_WEBHOOK_SECRET=FLUX_SECRET, ARGOCD_WEBHOOK_TOKEN=ARGO_TOKEN)
    flux_lines = [c for c in lines if "argocd" not in c]
    argo_lines = [c for c in lines if "argocd" in c]

    async def run(lines: list[str], env: dict[str, str]) -> Any:
        return json.loads(await asyncio.to_thread(_run, lines, env))  # the server needs the loop meanwhile

    assert await run(flux_lines, env) == {"result": "accepted"}
    assert await run(flux_lines, env) == {"result": "duplicate"}
    assert await run(argo_lines, env) == {"result": "accepted"}
    bad = _clean_env(FLUX_WEBHOOK_SECRET="wrong", ARGOCD_WEBHOOK_TOKEN="wrong")
    assert await run(flux_lines, bad) == {"error": "bad or missing X-Signature"}
    assert await run(argo_lines, bad) == {"error": "bad or missing Authorization: Bearer token"}
    await d.settle()
    assert len(d.bot.store.inbox_pending()) == 0


def test_doc_watch_settings_parse() -> None:
    """Every OPSBOT_WATCH value the page shows is valid and means what the page says."""
    shown = re.findall(r"OPSBOT_WATCH=([^\s`]+)", DOC.read_text())
    assert shown
    for value in shown:
        targets = parse_watch(value)
        assert targets and all(t.cluster and t.context for t in targets)
    assert [(t.cluster, t.context) for t in parse_watch("prod-eu=in-cluster,staging")] == [
        ("prod-eu", "in-cluster"), ("staging", "staging")]

