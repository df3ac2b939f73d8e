"""The pieces of `create cluster` going live: the Cluster's status as an event, `clusters.agent`, and
the binding that maps the management cluster's agent to create-cluster requests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from opsbot.core.model import DeployEvent, Outcome
from opsbot.errors import ConfigError
from opsbot.intake.agent_events import event_from_object
from opsbot.intake.deploys import CLUSTERS_ENV, build_env_map
from opsbot.intake.watching import CLUSTERS, DEFAULT_RESOURCES
from opsbot.manifests.config import AgentRef, parse_config
from opsbot.manifests.gitrepo import GitRepo
from tests.plugins.slack import fleet_with_config

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def capi(ready: str | None, *, reason: str = "", uid: str = "u-1") -> dict[str, object]:
    conditions = (
        []
        if ready is None
        else [
            {"type": "InfrastructureReady", "status": "True", "lastTransitionTime": "2026-01-15T11:00:00Z"},
            {
                "type": "Ready",
                "status": ready,
                "reason": reason,
                "lastTransitionTime": "2026-01-15T11:58:00Z",
            },
        ]
    )
    return {
        "metadata": {"name": "edge-2", "namespace": "default", "uid": uid},
        "status": {"phase": "Provisioned", "conditions": conditions},
    }


def test_a_ready_cluster_is_a_succeeded_event_keyed_by_its_uid() -> None:
    event = event_from_object(CLUSTERS, capi("True"), now=NOW, cluster="mgmt")
    assert event == DeployEvent(
        source="watch",
        kind="Cluster",
        name="edge-2",
        namespace="default",
        revision="u-1",
        outcome=Outcome.SUCCEEDED,
        reason="Ready",
        message="",
        at=datetime(2026, 1, 15, 11, 58, tzinfo=UTC),
        cluster="mgmt",
    )
    again = event_from_object(CLUSTERS, capi("True", uid="u-2"), now=NOW, cluster="mgmt")
    assert again is not None and again.dedup_key() != event.dedup_key()  # recreated: a new fact


@pytest.mark.parametrize("ready", ["False", "Unknown"])
def test_a_cluster_not_ready_yet_is_progressing(ready: str) -> None:
    event = event_from_object(CLUSTERS, capi(ready, reason="WaitingForControlPlane"), now=NOW)
    assert event is not None and event.outcome is Outcome.PROGRESSING
    assert event.reason == "WaitingForControlPlane"


def test_a_cluster_without_conditions_says_nothing() -> None:
    assert event_from_object(CLUSTERS, capi(None), now=NOW) is None


def test_clusters_are_watched_by_default() -> None:
    assert CLUSTERS in DEFAULT_RESOURCES
    assert str(CLUSTERS) == "clusters.cluster.x-k8s.io" and CLUSTERS.api_version == "cluster.x-k8s.io/v1beta1"


def test_clusters_agent_in_opsbot_yaml() -> None:
    cfg = parse_config("clusters:\n  agent: {kind: flux, name: clusters, cluster: mgmt}\n")
    assert cfg.clusters.agent == AgentRef("flux", "clusters", "flux-system", "mgmt", "Kustomization")
    assert parse_config("clusters: {path: 'x/{name}'}\n").clusters.agent is None
    with pytest.raises(ConfigError, match=r"clusters\.agent"):
        parse_config("clusters:\n  agent: {kind: jenkins}\n")
    with pytest.raises(ConfigError, match="unknown key 'agents'"):
        parse_config("clusters:\n  agents: {kind: flux, name: clusters}\n")


def _event(name: str, *, cluster: str = "mgmt", namespace: str = "flux-system") -> DeployEvent:
    return DeployEvent(
        "flux",
        "Kustomization",
        name,
        namespace,
        "a" * 40,
        Outcome.SUCCEEDED,
        "ReconciliationSucceeded",
        "",
        NOW,
        cluster,
    )


def test_the_clusters_binding_is_beside_the_env_bindings(tmp_path: Path) -> None:
    """One Kustomization may reconcile an env and the clusters path: both hear of it."""
    agent = {"kind": "flux", "name": "apps", "namespace": "flux-system", "cluster": "mgmt"}
    repo = fleet_with_config(tmp_path / "fleet", production={"agent": agent})
    config = (
        repo / ".opsbot.yaml"
    ).read_text() + "clusters:\n  agent: {kind: flux, name: apps, cluster: mgmt}\n"
    git = GitRepo(str(repo))
    try:
        env_map = build_env_map(git.snapshot("main"), parse_config(config))
    finally:
        git.close()
    assert env_map.clusters is not None and env_map.binding_for(CLUSTERS_ENV) is env_map.clusters
    assert (
        "created clusters: flux Kustomization flux-system/apps on cluster mgmt (clusters)"
        in env_map.describe()
    )
    assert env_map.resolve(_event("apps")) == "production"
    assert env_map.applies_clusters(_event("apps"))
    assert env_map.applies_clusters(_event("apps", cluster=""))  # an Alert without eventMetadata.cluster
    assert not env_map.applies_clusters(_event("apps", cluster="prod-us"))
    assert not env_map.applies_clusters(_event("infra"))
    assert not env_map.applies_clusters(_event("apps", namespace="other"))
