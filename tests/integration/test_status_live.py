"""`status <app> [in <env>]` with the live side: Git's answer, then what the cluster runs, and drift.

The bot is built from settings only (OPSBOT_WATCH names the cluster, KUBECONFIG points its context
at the Kubernetes API double), so the wiring app.py does is what is tested; the double answers
over real HTTP with the real client. Nothing here is timed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsbot.app import Opsbot
from opsbot.core.model import Actor
from opsbot.core.results import Info
from opsbot.kube.live import KubeLiveReader
from opsbot.settings import load_settings
from tests.doubles.kube import DEPLOYMENT, STATEFULSET, KubeDouble, RunningKube
from tests.plugins.kube import KUBE_TOKEN, kube_client
from tests.plugins.slack import fleet_with_config
from tests.repos import make_repo

AGENT = {"kind": "flux", "name": "apps", "namespace": "flux-system", "cluster": "prod-eu"}
ME = Actor("U0READER")


def deployment(
    namespace: str,
    image: str,
    *,
    replicas: int = 3,
    ready: int | None = None,
    name: str = "frontend",
    container: str = "",
) -> dict[str, Any]:
    ready = replicas if ready is None else ready
    return {
        "metadata": {"name": name, "namespace": namespace, "generation": 4},
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": container or name, "image": image}]}},
        },
        "status": {
            "observedGeneration": 4,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas,
            "availableReplicas": ready,
        },
    }


def write_kubeconfig(path: Path, server: str, token: str = KUBE_TOKEN) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "prod-eu", "cluster": {"server": server}}],
                "users": [{"name": "opsbot", "user": {"token": token}}],
                "contexts": [{"name": "prod-eu", "context": {"cluster": "prod-eu", "user": "opsbot"}}],
                "current-context": "prod-eu",
            }
        )
    )
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The fleet with production and staging reconciled on cluster prod-eu, dev on no cluster."""
    return fleet_with_config(tmp_path / "fleet", production={"agent": AGENT}, staging={"agent": dict(AGENT)})


@pytest.fixture
def make_bot(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Opsbot]]:
    bots: list[Opsbot] = []

    def make(server: str, token: str = KUBE_TOKEN, **kw: Any) -> Opsbot:
        monkeypatch.setenv(
            "KUBECONFIG", str(write_kubeconfig(tmp_path / f"kubeconfig{len(bots)}", server, token))
        )
        bot = Opsbot(load_settings(environ={}, repo=str(repo), watch="prod-eu"), **kw)
        bots.append(bot)
        return bot

    yield make
    for bot in bots:
        bot.close()


def status(bot: Opsbot, command: str) -> Info:
    result = bot.handle(command, ME)
    assert isinstance(result, Info), result.text()
    return result


def test_in_sync(make_bot: Callable[..., Opsbot], kube_double: KubeDouble, kube_server: RunningKube) -> None:
    kube_double.apply(DEPLOYMENT, deployment("production", "ghcr.io/acme/frontend:1.4.2"))
    bot = make_bot(kube_server.url)
    assert isinstance(bot.live, KubeLiveReader)  # wired from OPSBOT_WATCH by app.py
    result = status(bot, "status frontend in production")
    assert result.lines == (
        "production: ghcr.io/acme/frontend:1.4.2 · 3 replicas",
        "  live on prod-eu: 3/3 ready · ghcr.io/acme/frontend:1.4.2",
        "  ✅ in sync with Git",
    )
    live = result.data["envs"]["production"]["live"]
    assert live == {
        "cluster": "prod-eu",
        "namespace": "production",
        "found": True,
        "replicas": 3,
        "ready": 3,
        "images": ["ghcr.io/acme/frontend:1.4.2"],
        "rolled_out": True,
        "drift": [],
    }
    reads = [r for r in kube_double.requests if r.path.endswith("/deployments/frontend")]
    assert [r.path for r in reads] == ["/apis/apps/v1/namespaces/production/deployments/frontend"]


def test_drift_is_said_plainly(
    make_bot: Callable[..., Opsbot], kube_double: KubeDouble, kube_server: RunningKube
) -> None:
    """Git's staging overlay says 1.5.0 and 2 replicas; the cluster still runs 1.4.2 on 3, one ready."""
    kube_double.apply(DEPLOYMENT, deployment("staging", "ghcr.io/acme/frontend:1.4.2", replicas=3, ready=1))
    result = status(make_bot(kube_server.url), "status frontend in staging")
    assert result.lines == (
        "staging: ghcr.io/acme/frontend:1.5.0 · 2 replicas",
        "  live on prod-eu: 1/3 ready · ghcr.io/acme/frontend:1.4.2",
        "  ⚠️ drift: Git says ghcr.io/acme/frontend:1.5.0, cluster runs 1.4.2",
        "  ⚠️ drift: Git says 2 replicas, cluster has 3",
    )
    assert result.data["envs"]["staging"]["live"]["drift"][0] == (
        "Git says ghcr.io/acme/frontend:1.5.0, cluster runs 1.4.2"
    )


def test_another_repository_is_shown_whole_and_a_rollout_is_named(
    make_bot: Callable[..., Opsbot], kube_double: KubeDouble, kube_server: RunningKube
) -> None:
    running = deployment("production", "docker.io/someone/frontend:latest", ready=2)
    running["status"]["updatedReplicas"] = 2
    kube_double.apply(DEPLOYMENT, running)
    result = status(make_bot(kube_server.url), "status frontend in production")
    assert result.lines[1:] == (
        "  live on prod-eu: 2/3 ready · docker.io/someone/frontend:latest · rolling out",
        "  ⚠️ drift: Git says ghcr.io/acme/frontend:1.4.2, cluster runs docker.io/someone/frontend:latest",
    )


def test_missing_on_the_cluster_is_drift(make_bot: Callable[..., Opsbot], kube_server: RunningKube) -> None:
    result = status(make_bot(kube_server.url), "status frontend in production")
    assert result.lines[1:] == (
        "  live on prod-eu: no Deployment production/frontend",
        "  ⚠️ drift: Git has Deployment frontend, the cluster does not",
    )


def test_a_statefulset_is_read_as_one(
    make_bot: Callable[..., Opsbot], kube_double: KubeDouble, kube_server: RunningKube
) -> None:
    sts = deployment("production", "redis:7.2.4", replicas=1, name="cache", container="redis")
    kube_double.apply(STATEFULSET, sts)
    result = status(make_bot(kube_server.url), "status cache in production")
    assert result.lines[1:] == ("  live on prod-eu: 1/1 ready · redis:7.2.4", "  ✅ in sync with Git")
    assert kube_double.calls("GET", STATEFULSET) == []  # a read by name, not a list
    assert any(
        r.path == "/apis/apps/v1/namespaces/production/statefulsets/cache" for r in kube_double.requests
    )


def test_unreachable_cluster_is_said_and_not_asked_again_at_once(
    make_bot: Callable[..., Opsbot], unused_tcp_port: int
) -> None:
    bot = make_bot(f"http://127.0.0.1:{unused_tcp_port}")  # nothing listens there: connection refused
    first = status(bot, "status frontend")
    lines = first.text().splitlines()
    assert "production: ghcr.io/acme/frontend:1.4.2 · 3 replicas" in lines  # Git's answer stands
    unreachable = [line for line in lines if "live on prod-eu" in line]
    assert len(unreachable) == 2  # staging and production are on prod-eu; dev has no cluster
    assert all(
        line.startswith("  live on prod-eu: cluster unreachable (reading deployment ") for line in unreachable
    )
    assert first.data["envs"]["dev"].get("live") is None
    assert "error" in first.data["envs"]["production"]["live"]


def test_a_refused_token_is_unreachable_with_the_reason(
    make_bot: Callable[..., Opsbot], kube_double: KubeDouble, kube_server: RunningKube
) -> None:
    kube_double.apply(DEPLOYMENT, deployment("production", "ghcr.io/acme/frontend:1.4.2"))
    result = status(make_bot(kube_server.url, token="wrong"), "status frontend in production")
    assert result.lines[1] == (
        "  live on prod-eu: cluster unreachable (the Kubernetes API refused opsbot's credentials"
        " (401 Unauthorized) reading deployments.apps in namespace production)"
    )
    assert "wrong" not in result.text()


def test_the_failure_is_remembered_so_status_never_waits_twice(
    repo: Path, kube_double: KubeDouble, kube_server: RunningKube
) -> None:
    """Several envs on one failing cluster cost one attempt; after the TTL it is asked again."""
    now = [0.0]
    made: list[int] = []

    def factory() -> Any:
        made.append(1)
        return kube_client(kube_server.url)

    kube_double.apply(DEPLOYMENT, deployment("production", "ghcr.io/acme/frontend:1.4.2"))
    kube_double.fail_next(DEPLOYMENT, 1, status=503)  # the API server is having a bad moment
    reader = KubeLiveReader({"prod-eu": factory}, clock=lambda: now[0])
    bot = Opsbot(load_settings(environ={}, repo=str(repo)), live=reader)
    try:
        first = status(bot, "status frontend")  # staging and production are both on prod-eu
        assert [line for line in first.lines if "live on" in line] == [
            "  live on prod-eu: cluster unreachable (reading deployment staging/frontend failed: HTTP 503)",
            "  live on prod-eu: cluster unreachable (reading deployment staging/frontend failed: HTTP 503)",
        ]
        assert len(kube_double.requests) == 1
        now[0] += reader.failure_ttl + 1
        again = status(bot, "status frontend in production")
        assert again.lines[1:] == (
            "  live on prod-eu: 3/3 ready · ghcr.io/acme/frontend:1.4.2",
            "  ✅ in sync with Git",
        )
        assert len(kube_double.requests) == 2
        assert made == [1]  # one client per cluster
    finally:
        bot.close()


def test_no_cluster_configured_means_git_only(repo: Path) -> None:
    bot = Opsbot(load_settings(environ={}, repo=str(repo)))
    try:
        assert bot.live is None
        assert status(bot, "status frontend in production").lines == (
            "production: ghcr.io/acme/frontend:1.4.2 · 3 replicas",
        )
    finally:
        bot.close()


def test_a_cluster_not_in_opsbot_watch_is_not_read(
    repo: Path, kube_double: KubeDouble, kube_server: RunningKube
) -> None:
    reader = KubeLiveReader({"staging-eu": lambda: kube_client(kube_server.url)})
    bot = Opsbot(load_settings(environ={}, repo=str(repo)), live=reader)
    try:
        assert len(status(bot, "status frontend in production").lines) == 1
        assert kube_double.requests == []
    finally:
        bot.close()


class _Reader:
    """A LiveReader that must not be asked: what `status` says without reading."""

    def covers(self, cluster: str) -> bool:
        return True

    def read(self, cluster: str, namespace: str, kind: str, name: str) -> None:
        raise AssertionError(f"read {kind} {namespace}/{name}")


def test_a_helmrelease_has_no_live_side_and_says_so(tmp_path: Path) -> None:
    repo = make_repo("flux-helmrelease", tmp_path / "r")
    agent = "{kind: flux, name: apps, cluster: prod-eu}"
    (repo / ".opsbot.yaml").write_text(
        f"environments:\n  production: {{path: apps/production, agent: {agent}}}\n"
    )
    for args in (["add", ".opsbot.yaml"], ["commit", "-q", "-m", "pin"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    bot = Opsbot(load_settings(environ={}, repo=str(repo)), live=_Reader())
    try:
        result = status(bot, "status podinfo in production")
        assert result.lines[1] == (
            "  live on prod-eu: not read (opsbot reads Deployments and StatefulSets, this is a HelmRelease)"
        )
    finally:
        bot.close()
