"""The cached repo config comes back as exactly the objects `load_config` made, or not at all."""

from __future__ import annotations

import json

import pytest

from opsbot.manifests.codec import CodecError, decode, encode
from opsbot.manifests.config import AgentRef, AppConfig, ClustersConfig, EnvConfig, HelmKeys, RepoConfig

CONFIG = RepoConfig(
    envs={
        "staging": EnvConfig("staging", ("apps/a/overlays/staging", "charts/x/values-staging.yaml")),
        "production": EnvConfig(
            "production",
            ("apps/a/overlays/production",),
            promote_from="staging",
            approvals=1,
            agent=AgentRef("flux", "apps", cluster="prod-1"),
            max_replicas=20,
        ),
        "feature": EnvConfig("feature", (), branch="feature"),
    },
    apps={"web": AppConfig("web", "frontend", HelmKeys("replicas", "image.version"))},
    clusters=ClustersConfig(agent=AgentRef("flux", "clusters", object_kind="Kustomization")),
    from_file=True,
    notes=("pinned",),
)


def test_round_trip_through_json_is_exact() -> None:
    back = decode(RepoConfig, json.loads(json.dumps(encode(CONFIG))))
    assert back == CONFIG
    assert isinstance(back.envs["staging"].paths, tuple)
    assert isinstance(back.envs["production"].agent, AgentRef)
    assert back.envs["feature"].agent is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d["envs"]["staging"].__setitem__("paths", ["ok", 3]),
        lambda d: d["envs"]["staging"].__setitem__("approvals", "1"),
        lambda d: d["envs"]["staging"].__setitem__("surprise", True),
        lambda d: d["apps"]["web"].__setitem__("helm", {"replicas": 1, "tag": "x"}),
        lambda d: d.__setitem__("notes", "pinned"),
    ],
    ids=["path-not-str", "int-as-str", "unknown-field", "nested-type", "tuple-as-str"],
)
def test_anything_the_types_do_not_describe_is_refused(damage) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(json.dumps(encode(CONFIG)))
    damage(data)
    with pytest.raises(CodecError):
        decode(RepoConfig, data)
