"""The engine on copies of public GitOps repos nobody here wrote (../shared/fixtures/realworld).

Where ../shared is absent (a laptop checkout) these skip with the reason; in CI they must run, so
under CI=true a missing folder is a failure, not a skip.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from opsbot.errors import CommandError
from opsbot.manifests.gitrepo import GitRepo
from opsbot.manifests.index import Index
from tests.engine import apply_to_branch, diffs, plan, render_env
from tests.needs import missing
from tests.repos import make_repo, realworld

pytestmark = pytest.mark.realworld


def copy_of(name: str, tmp_path: Path) -> GitRepo:
    src = realworld(name)
    if src is None:
        missing(f"../shared/fixtures/realworld/{name} not present beside this checkout")
    return GitRepo(str(make_repo(src, tmp_path / name)))


def test_gitops_istio_discovers_the_flux_cluster_and_its_apps(tmp_path: Path) -> None:
    repo = copy_of("gitops-istio", tmp_path)
    index = Index(repo, "main")
    env = index.env("my-cluster")
    assert set(env.paths) == {"apps", "istio/system", "istio/gateway"}
    assert {"frontend", "backend", "flagger"} <= set(index.apps_in(env))


def test_gitops_istio_deploy_edits_only_the_apps_own_images_entry(tmp_path: Path) -> None:
    repo = copy_of("gitops-istio", tmp_path)
    change = plan(repo, "deploy backend 6.2.0 to my-cluster")
    assert change.files == ["apps/backend/kustomization.yaml"]
    edit = change.edits[0]
    assert edit.before is not None
    changed = [
        (a, b) for a, b in zip(edit.before.splitlines(), edit.after.splitlines(), strict=True) if a != b
    ]
    assert changed == [("    newTag: 6.1.0", "    newTag: 6.2.0")]
    apply_to_branch(repo, change, "opsbot/t")
    before, after = (
        render_env(Index(repo, "main"), "my-cluster"),
        render_env(Index(repo, "opsbot/t"), "my-cluster"),
    )
    moved = {
        f"{ident}:{p}"
        for root in before
        for ident in before[root]
        for p in diffs(before[root][ident], after[root].get(ident))
    }
    assert moved == {"Deployment/prod/backend:spec.template.spec.containers[0].image"}


def test_gitops_istio_two_autoscalers_on_frontend_are_reported_not_papered_over(tmp_path: Path) -> None:
    """Upstream's backend HPA targets the frontend Deployment: opsbot names both, changes nothing."""
    repo = copy_of("gitops-istio", tmp_path)
    with pytest.raises(CommandError, match=r"target of 2 HorizontalPodAutoscalers \(backend, frontend\)"):
        plan(repo, "scale frontend 2-5 in my-cluster")


def test_flux2_multi_tenancy_envs_and_shared_infrastructure(tmp_path: Path) -> None:
    repo = copy_of("flux2-multi-tenancy", tmp_path)
    index = Index(repo, "main")
    assert list(index.config.envs) == ["staging", "production"]
    prod = index.env("production")
    assert "tenants/production" in prod.paths
    # infrastructure is read by both clusters: env isolation forbids editing it for one env
    assert index.other_envs_reading(prod, "infrastructure/kyverno/sync.yaml") == ["staging"]
    for env in ("staging", "production"):
        rendered = render_env(index, env)
        assert rendered["tenants/" + env], f"{env} tenants render"
    with pytest.raises(CommandError, match='Unknown app "web" in production'):
        plan(repo, "scale web 2 in production")


def test_realworld_check_passes(tmp_path: Path) -> None:
    import sys

    repo = copy_of("gitops-istio", tmp_path)
    p = subprocess.run(
        [sys.executable, "-m", "opsbot", "check", "--repo", repo.path],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "✅ apps: kustomize build" in p.stdout, p.stdout + p.stderr
