"""`/ops create cluster edge-2` → PR → merge → live in two steps (DESIGN §9), each one reply.

Step one is the management cluster's Flux applying the merge (`.opsbot.yaml` `clusters.agent`, a
signed Flux webhook here); step two is the new Cluster API `Cluster` reporting Ready, read in watch
mode from the Kubernetes API double. The real server (aiohttp + Bolt + outbox worker, local forge,
SQLite) talks to the Slack double. Waits are hang guards, never speed assertions.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from opsbot.app import Opsbot
from opsbot.chat import texts
from opsbot.core.model import RequestState
from opsbot.intake.agent_events import event_from_object
from opsbot.intake.agent_routes import FLUX_PATH
from opsbot.intake.deploys import AgentIntake, DeployProcessor, IntakeItem, event_record, inbox_key
from opsbot.intake.watching import CLUSTERS, DeployWatch
from opsbot.metrics import Metrics
from opsbot.server import Server
from opsbot.settings import load_settings
from tests.doubles.kube import CLUSTER, KubeDouble
from tests.doubles.slack import BOT_TOKEN, SIGNING_SECRET, SlackApiDouble
from tests.plugins.slack import SlackChat
from tests.repos import make_repo

ROOT = Path(__file__).resolve().parents[2]
PAYLOADS = ROOT / "tests" / "fixtures" / "payloads"
FLUX_SECRET = "e2e-cluster-flux-secret"
DEPLOY_CHANNEL = "C0DEPLOY"
GUARD = 20.0  # seconds before a wait gives up: a hang guard, not a speed requirement

CONFIG = """\
clusters:
  path: clusters/{name}
  templates: templates/clusters
  agent: {kind: flux, name: clusters, namespace: flux-system, cluster: mgmt}
"""


def platform_repo(dest: Path) -> Path:
    """The cluster-templates sample with the management cluster's Flux object pinned."""
    repo = make_repo("cluster-templates", dest)
    (repo / ".opsbot.yaml").write_text(CONFIG)
    for args in (["add", ".opsbot.yaml"], ["commit", "-q", "-m", "Pin the clusters agent"]):
        subprocess.run(
            ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args],
            check=True,
            capture_output=True,
        )
    return repo


def flux_applied(sha: str, at: datetime, *, name: str = "clusters", cluster: str = "mgmt") -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((PAYLOADS / "flux" / "kustomization-succeeded.json").read_text())
    payload["involvedObject"]["name"] = name
    payload["metadata"] = {"revision": f"main@sha1:{sha}", "cluster": cluster}
    payload["timestamp"] = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return payload


def capi_cluster(
    name: str,
    ready: str,
    at: datetime,
    *,
    uid: str = "7f1c2a4e-0000-4000-8000-000000000001",
    phase: str = "Provisioned",
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {"controlPlaneRef": {"kind": "KubeadmControlPlane", "name": f"{name}-control-plane"}},
        "status": {
            "phase": phase,
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": "" if ready == "True" else "WaitingForControlPlane",
                    "lastTransitionTime": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            ],
        },
    }


@dataclass
class Platform:
    chat: SlackChat
    server: Server
    bot: Opsbot
    intake: AgentIntake
    processor: DeployProcessor

    async def flux(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = json.dumps(payload).encode()
        signature = "sha256=" + hmac.new(FLUX_SECRET.encode(), body, hashlib.sha256).hexdigest()
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{self.server.port}{FLUX_PATH}",
                data=body,
                headers={"Content-Type": "application/json", "X-Signature": signature},
            ) as resp,
        ):
            return resp.status, await resp.json()

    async def settle(self) -> None:
        await self.intake.idle()
        await self.chat.settle()

    async def create_and_merge(self, name: str) -> Any:
        await self.chat.ops(f"create cluster {name}", user="U0ALICE")
        root = self.chat.roots()[-1]
        await self.chat.click(root, "merge", user="U0BOB")
        (request,) = [r for r in self.bot.store.list_requests() if r.thread_ts == root.ts]
        assert request.state is RequestState.MERGED and request.verb == "create-cluster"
        return root, request

    def channel_lines(self) -> list[str]:
        return [m.all_text() for m in self.chat.double.messages(DEPLOY_CHANNEL)]


@pytest.fixture
async def platform(
    slack_double: SlackApiDouble, tmp_path: Path
) -> AsyncIterator[Callable[[], Awaitable[Platform]]]:
    running: list[Platform] = []

    async def start() -> Platform:
        settings = load_settings(
            environ={},
            repo=str(platform_repo(tmp_path / f"platform{len(running)}")),
            slack_bot_token=BOT_TOKEN,
            slack_signing_secret=SIGNING_SECRET,
            slack_api_url=slack_double.api_url,
            deploy_channel=DEPLOY_CHANNEL,
            flux_webhook_secret=FLUX_SECRET,
        )
        bot = Opsbot(settings, metrics=Metrics())
        box: list[Server] = []
        processor = DeployProcessor(bot, settings, wake=lambda: box[0].slack.worker.wake() if box else None)
        intake = AgentIntake(processor, sweep_interval=0)
        server = Server(settings, bot=bot, host="127.0.0.1", port=0, deploys=intake)
        box.append(server)
        await server.start()
        made = Platform(SlackChat(slack_double, server), server, bot, intake, processor)
        running.append(made)
        return made

    yield start
    for p in running:
        await p.intake.stop()
        await p.server.stop()
        p.intake.close()
        p.bot.close()


async def test_create_cluster_is_live_in_two_steps_each_told_once(
    platform: Callable[[], Awaitable[Platform]], kube_double: KubeDouble, make_kube_client: Callable[..., Any]
) -> None:
    p = await platform()
    root, request = await p.create_and_merge("edge-2")
    short = request.merge_sha[:7]
    assert p.chat.thread(root) == [f"🔀 Merged by <@U0BOB> as {short}"]

    # step one: the management cluster's Flux applied the merge
    applied_at = (request.merged_at + timedelta(seconds=65)).replace(microsecond=0)
    assert await p.flux(flux_applied(request.merge_sha, applied_at)) == (202, {"result": "accepted"})
    await p.settle()
    assert p.chat.thread(root)[-1] == (
        f"🏗️ Cluster edge-2: Flux kustomization clusters applied {short} on mgmt,"
        f" {texts.duration(applied_at - request.merged_at)} after merge"
        " — waiting for the cluster to report Ready"
    )
    assert p.chat.status(root) == "applied, waiting for the cluster to report Ready"
    assert p.bot.store.get_request(request.id).state is RequestState.DEPLOYED
    assert p.channel_lines() == []  # the cluster is not usable yet: nothing for the deploy channel

    # step two: watch mode on the management cluster sees the Cluster become Ready
    ready_at = (request.merged_at + timedelta(minutes=7, seconds=30)).replace(microsecond=0)
    watch = DeployWatch(
        p.intake,
        [("mgmt", make_kube_client())],
        resources=[CLUSTERS],
        watcher_options={"timeout_seconds": 30, "stop_poll_seconds": 0.05},
    )
    kube_double.apply(CLUSTER, capi_cluster("edge-2", "False", applied_at, phase="Provisioning"))
    watch.start()
    try:
        await asyncio.to_thread(kube_double.wait_for_watches, CLUSTER, 1)
        kube_double.apply(CLUSTER, capi_cluster("edge-2", "True", ready_at))
        await p.chat.double.wait_for(
            lambda: len(p.chat.thread(root)) == 3, timeout=GUARD, what="the Ready reply"
        )
        await p.settle()
        since = texts.duration(ready_at - request.merged_at)
        assert p.chat.thread(root)[-1] == f"🟢 Cluster edge-2 is Ready, {since} after merge"
        assert p.chat.status(root) == "cluster edge-2 is Ready"
        (line,) = p.channel_lines()
        assert re.fullmatch(
            rf"🟢 cluster edge-2 Ready · <[^|]+\|PR #1> by <@U0ALICE> · {since} after merge", line
        )

        # repeated: a status-only update, the same Ready again, a relist after history is lost
        delivered = watch.delivered
        again = capi_cluster("edge-2", "True", ready_at)
        again["status"]["infrastructureReady"] = True
        kube_double.apply(CLUSTER, again)
        kube_double.compact()
        kube_double.end_watches()
        await asyncio.to_thread(kube_double.wait_for_watches, CLUSTER, 2)
        kube_double.apply(CLUSTER, capi_cluster("edge-2", "False", ready_at + timedelta(minutes=1)))
        kube_double.apply(CLUSTER, capi_cluster("edge-2", "True", ready_at + timedelta(minutes=2)))
        # a barrier: the watch delivers in order, so once this one is stored the flap was handled
        sentinel = capi_cluster("sentinel", "True", ready_at, uid="7f1c2a4e-0000-4000-8000-00000000000f")
        marker = event_from_object(CLUSTERS, sentinel, now=ready_at, cluster="mgmt")
        assert marker is not None
        kube_double.apply(CLUSTER, sentinel)
        await p.chat.double.wait_for(
            lambda: p.intake.seen("watch", inbox_key(marker)),
            timeout=GUARD,
            what="the watch to pass the flap",
        )
        await p.settle()
    finally:
        await asyncio.to_thread(watch.stop)
    assert watch.error is None
    assert watch.delivered >= delivered
    await p.settle()
    assert len(p.chat.thread(root)) == 3 and len(p.channel_lines()) == 1
    assert p.bot.metrics.registry.get_sample_value("opsbot_merge_to_deployed_seconds_count") == 1  # step one

    # a new process replays what the inbox holds and posts nothing twice
    event = event_from_object(
        CLUSTERS, capi_cluster("edge-2", "True", ready_at), now=ready_at, cluster="mgmt"
    )
    assert event is not None
    record = event_record(event, ready_at)
    assert p.processor.handle(IntakeItem("watch", inbox_key(event), record), replay=True) == []
    await p.settle()
    assert len(p.chat.thread(root)) == 3


async def test_a_ready_seen_before_the_merge_is_known_is_told_at_the_merge(
    platform: Callable[[], Awaitable[Platform]],
) -> None:
    """The watcher can see Ready before opsbot hears of the merge (a slow GitHub webhook)."""
    p = await platform()
    await p.chat.ops("create cluster edge-3", user="U0ALICE")
    root = p.chat.roots()[-1]
    soon = datetime.now(UTC) + timedelta(minutes=5)
    event = event_from_object(CLUSTERS, capi_cluster("edge-3", "True", soon), now=soon, cluster="mgmt")
    assert event is not None
    assert p.processor.handle(IntakeItem("watch", inbox_key(event), event_record(event, soon))) == []
    await p.chat.click(root, "merge", user="U0BOB")
    await p.settle()
    (request,) = [r for r in p.bot.store.list_requests() if r.thread_ts == root.ts]
    assert request.state is RequestState.DEPLOYED  # Ready proves the manifests were applied
    assert p.bot.store.transitions(request.id)[-1].actor == "capi:cluster/edge-3"
    assert p.bot.metrics.registry.get_sample_value("opsbot_merge_to_deployed_seconds_count") == 1
    (ready,) = [t for t in p.chat.thread(root) if t.startswith("🟢")]
    assert re.fullmatch(
        r"🟢 Cluster edge-3 is Ready, 4m 5\ds after merge|🟢 Cluster edge-3 is Ready, 5m after merge", ready
    )


async def test_ready_from_an_older_cluster_or_another_management_cluster_says_nothing(
    platform: Callable[[], Awaitable[Platform]],
) -> None:
    p = await platform()
    root, request = await p.create_and_merge("edge-4")
    stale = request.merged_at - timedelta(days=3)  # the last edge-4, deleted since
    other = request.merged_at + timedelta(minutes=5)
    for at, cluster in ((stale, "mgmt"), (other, "mgmt-us")):
        event = event_from_object(CLUSTERS, capi_cluster("edge-4", "True", at), now=at, cluster=cluster)
        assert event is not None
        assert p.processor.handle(IntakeItem("watch", inbox_key(event), event_record(event, at))) == []
    await p.settle()
    assert p.chat.thread(root) == [f"🔀 Merged by <@U0BOB> as {request.merge_sha[:7]}"]
    assert p.bot.store.get_request(request.id).state is RequestState.MERGED


async def test_step_one_failing_is_told_naming_the_management_cluster(
    platform: Callable[[], Awaitable[Platform]],
) -> None:
    p = await platform()
    root, request = await p.create_and_merge("edge-5")
    payload: dict[str, Any] = json.loads(
        (PAYLOADS / "flux" / "kustomization-health-check-failed-unprefixed.json").read_text()
    )
    payload["involvedObject"]["name"] = "clusters"
    payload["metadata"] = {"revision": f"main@sha1:{request.merge_sha}", "cluster": "mgmt"}
    assert (await p.flux(payload))[0] == 202
    await p.settle()
    assert p.chat.thread(root)[-1] == f"❌ Failed in mgmt — HealthCheckFailed: {payload['message']}"
    assert p.bot.store.get_request(request.id).state is RequestState.FAILED
    (line,) = p.channel_lines()
    assert line.startswith("❌ mgmt · edge-5 cluster ") and "clusters/edge-5/" in line
