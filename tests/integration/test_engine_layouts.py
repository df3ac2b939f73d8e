"""Every layout, every changing command: golden diffs, env/app isolation proven by rendering, and
the PR's real `git diff` touching only the intended lines."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from opsbot.manifests.gitrepo import GitRepo
from opsbot.manifests.index import Index
from opsbot.manifests.planner import unified_diff
from tests.engine import apply_to_branch, diffs, plan, render_env
from tests.repos import make_repo

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"
UPDATE = os.environ.get("OPSBOT_UPDATE_GOLDEN") == "1"

IMG = "spec.template.spec.containers[0].image"

# (fixture, command, env, expected changed paths in the env's render: "Kind/namespace/name:path")
CASES = [
    (
        "fleet",
        "scale frontend 5 in production",
        "production",
        {"Deployment/production/frontend:spec.replicas"},
    ),
    ("fleet", "scale frontend 4 in staging", "staging", {"Deployment/staging/frontend:spec.replicas"}),
    (
        "fleet",
        "scale api 2-8 in production",
        "production",
        {
            "HorizontalPodAutoscaler/production/api:spec.minReplicas",
            "HorizontalPodAutoscaler/production/api:spec.maxReplicas",
        },
    ),
    (
        "fleet",
        "scale api 3-9 in staging",
        "staging",
        {
            "HorizontalPodAutoscaler/staging/api:spec.minReplicas",
            "HorizontalPodAutoscaler/staging/api:spec.maxReplicas",
        },
    ),
    ("fleet", "scale cache 3 in production", "production", {"StatefulSet/production/cache:spec.replicas"}),
    ("fleet", "deploy api 2.4.0 to production", "production", {f"Deployment/production/api:{IMG}"}),
    ("fleet", "deploy frontend 1.10 to production", "production", {f"Deployment/production/frontend:{IMG}"}),
    ("fleet", "deploy cache 7.4 to dev", "dev", {f"StatefulSet/dev/cache:{IMG}"}),
    ("fleet", "promote frontend to production", "production", {f"Deployment/production/frontend:{IMG}"}),
    ("fleet", "promote frontend from dev to staging", "staging", {f"Deployment/staging/frontend:{IMG}"}),
    ("fleet", "rollback frontend in production", "production", {f"Deployment/production/frontend:{IMG}"}),
    (
        "per-app-overlays",
        "scale ledger 2 in staging",
        "staging",
        {"Deployment/payments-staging/ledger:spec.replicas"},
    ),
    (
        "per-app-overlays",
        "promote payments to production",
        "production",
        {f"Deployment/payments/payments:{IMG}"},
    ),
    (
        "per-app-overlays",
        "rollback ledger in production",
        "production",
        {f"Deployment/payments/ledger:{IMG}"},
    ),
    ("per-app-overlays", "deploy ledger 0.9.5 to production", "production", {f"Deployment/payments/ledger:{IMG}"}),
    ("helm-values", "scale podinfo 5 in production", "production", {"values:replicaCount"}),
    ("helm-values", "scale redis 3 in production", "production", {"values:replicaCount"}),
    ("helm-values", "deploy podinfo 6.5.2 to dev", "dev", {"values:image.tag"}),
    ("helm-values", "promote podinfo to production", "production", {"values:image.tag"}),
    ("helm-values", "rollback podinfo in production", "production", {"values:image.tag"}),
    (
        "flux-helmrelease",
        "scale podinfo 3 in staging",
        "staging",
        {"HelmRelease/podinfo/podinfo:spec.values.replicaCount"},
    ),
    (
        "flux-helmrelease",
        "deploy podinfo 6.5.1 to production",
        "production",
        {"HelmRelease/podinfo/podinfo:spec.chart.spec.version"},
    ),
    (
        "flux-helmrelease",
        "promote podinfo to production",
        "production",
        {"HelmRelease/podinfo/podinfo:spec.chart.spec.version"},
    ),
    (
        "flux-helmrelease",
        "rollback podinfo in production",
        "production",
        {"HelmRelease/podinfo/podinfo:spec.chart.spec.version"},
    ),
    ("plain", "promote web to production", "production", {f"Deployment/production/web:{IMG}"}),
    ("plain", "rollback web in production", "production", {f"Deployment/production/web:{IMG}"}),
    (
        "plain",
        "scale queue 2-5 in staging",
        "staging",
        {
            "HorizontalPodAutoscaler/staging/queue:spec.minReplicas",
            "HorizontalPodAutoscaler/staging/queue:spec.maxReplicas",
        },
    ),
    ("plain", "scale web 6 in dev", "dev", {"Deployment/dev/web:spec.replicas"}),
    ("plain", "deploy queue 0.4.3 to production", "production", {"Deployment/production/queue:" + IMG}),
    ("branch-per-env", "scale shop 3 in production", "production", {"Deployment//shop:spec.replicas"}),
    ("branch-per-env", "promote shop to production", "production", {f"Deployment//shop:{IMG}"}),
    ("branch-per-env", "deploy shop 2.1.0 to dev", "dev", {f"Deployment//shop:{IMG}"}),
    ("branch-per-env", "rollback shop in production", "production", {f"Deployment//shop:{IMG}"}),
    # envs/<env> overlays with components, patchesStrategicMerge, .yml files and a namePrefix per env
    ("envs-components", "scale shop 3 in staging", "staging", {"Deployment/shop-staging/staging-shop:spec.replicas"}),
    ("envs-components", "scale shop 2 in dev", "dev", {"Deployment/shop-dev/dev-shop:spec.replicas"}),
    ("envs-components", "deploy shop 2.0.4 to production", "production", {f"Deployment/shop/prod-shop:{IMG}"}),
    ("envs-components", "promote shop to staging", "staging", {f"Deployment/shop-staging/staging-shop:{IMG}"}),
    # values files away from the chart, tied to it by Argo CD Applications (relative and `$values`)
    ("argo-helm-values", "scale guestbook 4 in prod", "prod", {"values:replicaCount"}),
    ("argo-helm-values", "scale guestbook 2 in dev", "dev", {"values:replicaCount"}),
    ("argo-helm-values", "deploy guestbook 1.4.3 to staging", "staging", {"values:image.tag"}),
    ("argo-helm-values", "promote guestbook to prod", "prod", {"values:image.tag"}),
    # env order beyond dev/staging/prod: from the names, and from the repo (ApplicationSet, Kargo)
    ("testing-chain", "promote api to qa", "qa", {f"Deployment/api-qa/api:{IMG}"}),
    ("testing-chain", "promote api to production", "production", {f"Deployment/api-production/api:{IMG}"}),
    ("kargo-appset", "promote checkout to perf", "perf", {f"Deployment/checkout-perf/checkout:{IMG}"}),
    # <env>/ overlays at the root patching a Flux HelmRelease
    (
        "flux-env-roots",
        "scale podinfo 2 in staging",
        "staging",
        {"HelmRelease/podinfo/podinfo:spec.values.replicaCount"},
    ),
    # values-<env>.yaml tied to a Flux HelmRelease by valuesFrom (a generated ConfigMap)
    (
        "flux-valuesfrom",
        "deploy podinfo 6.5.1 to production",
        "production",
        {"HelmRelease/podinfo/podinfo:spec.chart.spec.version"},
    ),
    (
        "flux-env-roots",
        "deploy podinfo 6.5.1 to production",
        "production",
        {"HelmRelease/podinfo/podinfo:spec.chart.spec.version"},
    ),
    # issue 11 item 6: the chart reads singleBinary.replicas, found by rendering it
    ("helm-replica-keys", "scale loki 2 in staging", "staging", {"values:singleBinary.replicas"}),
    # issue 11 item 5: with chartRef the version lives in the OCIRepository (a patch in production)
    (
        "flux-chartref",
        "deploy kube-prometheus-stack 70.0.0 to production",
        "production",
        {"OCIRepository/monitoring/kube-prometheus-stack:spec.ref.semver"},
    ),
    (
        "flux-chartref",
        "deploy kube-prometheus-stack 70.0.0 to staging",
        "staging",
        {"OCIRepository/monitoring/kube-prometheus-stack:spec.ref.semver"},
    ),
    (
        "flux-semver-range",
        "scale webapp 3 in production",
        "production",
        {"HelmRelease/webapp/webapp:spec.values.replicaCount"},
    ),
]


def _slug(command: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", command.lower()).strip("-")


def _changed(index_before: Index, index_after: Index, env: str) -> set[str]:
    before, after = render_env(index_before, env), render_env(index_after, env)
    out: set[str] = set()
    for root in set(before) | set(after):
        b, a = before.get(root), after.get(root)
        if isinstance(b, dict) and b and all("/" in k for k in b):
            for ident in set(b) | set(a or {}):
                out |= {f"{ident}:{p}" for p in diffs(b.get(ident), (a or {}).get(ident))}
        else:
            out |= {f"values:{p}" for p in diffs(b, a)}
    return out


@pytest.mark.parametrize(
    ("fixture", "command", "env", "expected"), CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES]
)
def test_change_is_minimal_and_isolated(
    tmp_path: Path, fixture: str, command: str, env: str, expected: set[str]
) -> None:
    path = make_repo(fixture, tmp_path / "repo")
    repo = GitRepo(str(path))
    change = plan(repo, command)
    diff = unified_diff(list(change.edits))

    # golden before/after
    golden = GOLDEN / fixture / f"{_slug(command)}.diff"
    if UPDATE or not golden.exists():
        if not UPDATE:
            pytest.fail(f"missing golden file {golden}; run with OPSBOT_UPDATE_GOLDEN=1 and review it")
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(diff)
    assert diff == golden.read_text()

    # every check of the gate passed, and the change says what moves
    assert change.ok and {c.name for c in change.checks} >= {"YAML"}
    assert change.fields and all(f.env == env for f in change.fields)

    # commit it like the forge does; real git says only these files changed
    branch = "opsbot/test"
    apply_to_branch(repo, change, branch)
    base = change.base_branch
    names = subprocess.run(
        ["git", "-C", str(path), "diff", "--name-only", base, branch],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(names) == sorted(change.files)
    _only_intended_lines(path, base, branch)

    # render every env before and after: only the target app's targeted fields in the target env moved
    before = Index(repo, base)
    after_ref = branch
    after = Index(repo, after_ref)
    for other in before.config.envs:
        if other == env:
            continue
        if before.config.envs[other].branch:
            continue  # branch-per-env: other envs live on other branches, untouched by construction
        assert _changed(before, after, other) == set(), f"{other} changed"
    env_branch = before.config.envs[env].branch
    if env_branch:
        assert (
            _changed(_branch_index(repo, env, env_branch), _branch_index(repo, env, branch), env) == expected
        )
    else:
        assert _changed(before, after, env) == expected


def _branch_index(repo: GitRepo, env: str, branch: str) -> Index:
    """An Index whose env `env` reads from `branch` (for branch-per-env before/after)."""
    idx = Index(repo, "main")
    cfg = idx.config.envs[env]
    object.__setattr__(cfg, "branch", branch)
    return idx


def _only_intended_lines(path: Path, base: str, branch: str) -> None:
    """Each removed line comes back with the same key and comment, only its value changed."""
    out = subprocess.run(
        ["git", "-C", str(path), "diff", "-U0", base, branch], capture_output=True, text=True, check=True
    ).stdout
    removed = [ln[1:] for ln in out.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    added = [ln[1:] for ln in out.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    for r in removed:
        key = r.split(":", 1)[0]
        comment = r.split(" #", 1)[1] if " #" in r else None
        match = [a for a in added if a.split(":", 1)[0] == key]
        assert match, f"removed line {r!r} has no counterpart"
        if comment is not None:
            assert any(a.endswith(" #" + comment) for a in match), f"comment lost on {r!r}"
    assert len(added) - len(removed) <= 12, "more lines inserted than an entry or a patch needs"


@pytest.mark.parametrize(
    ("fixture", "command", "dest"),
    [
        ("cluster-templates", "create cluster edge-3", "clusters/edge-3"),
        ("cluster-templates", "create cluster edge-4 from aws-small aws_region=eu-west-1 ssh_key_name=ops",
         "clusters/edge-4"),
        ("fleet", "create cluster edge-9 worker_machine_count=3", "clusters/edge-9"),
    ],
)
def test_create_cluster_adds_only_new_files_that_build(tmp_path: Path, fixture: str, command: str, dest: str) -> None:
    path = make_repo(fixture, tmp_path / "repo", history=False)
    repo = GitRepo(str(path))
    change = plan(repo, command)
    diff = unified_diff(list(change.edits))
    golden = GOLDEN / fixture / f"{_slug(command)}.diff"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(diff)
    assert golden.exists(), f"missing golden file {golden}"
    assert diff == golden.read_text()
    assert all(e.before is None and e.path.startswith(dest + "/") for e in change.edits)
    assert "${" not in "".join(e.after for e in change.edits)
    assert [c.name for c in change.checks].count("kustomize build") >= 1 and change.ok
    # every env renders exactly as before: a new cluster folder is not part of any env
    before = Index(repo, "main")
    apply_to_branch(repo, change, "opsbot/cluster")
    after = Index(repo, "opsbot/cluster")
    for env in before.config.envs:
        assert _changed(before, after, env) == set()
