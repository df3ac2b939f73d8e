"""Discovery on the layouts people actually have: GitOps objects first, folder conventions second,
and the promotion order the repo states (Kargo, ApplicationSet lists, Flux dependsOn)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from opsbot.errors import CommandError
from opsbot.manifests.config import ValuesChart, parse_config, render_config
from opsbot.manifests.gitrepo import GitRepo
from opsbot.manifests.index import Index
from tests.engine import plan
from tests.repos import commit_files, make_repo


def index_of(fixture: str, tmp_path: Path) -> Index:
    return Index(GitRepo(str(make_repo(fixture, tmp_path / fixture))), "main")


def envs(index: Index) -> dict[str, tuple[tuple[str, ...], str | None]]:
    return {n: (e.paths, e.promote_from) for n, e in index.config.envs.items()}


def test_envs_dirs_with_components_yml_and_name_prefix(tmp_path: Path) -> None:
    index = index_of("envs-components", tmp_path)
    assert envs(index) == {
        "dev": (("envs/dev",), None),
        "staging": (("envs/staging",), "dev"),
        "production": (("envs/production",), "staging"),
    }
    for env in index.config.envs.values():
        assert index.apps_in(env) == ["shop"]
    # the component's patch and the env's namePrefix are in what the env renders
    dev = index.find("shop", "dev")
    assert dev.rendered["metadata"]["name"] == "dev-shop"
    assert dev.rendered["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "LOG_LEVEL", "value": "debug"}
    ]


def test_argo_applications_tie_values_files_to_a_chart_elsewhere(tmp_path: Path) -> None:
    index = index_of("argo-helm-values", tmp_path)
    assert envs(index) == {
        "dev": (("values/guestbook/values-dev.yaml",), None),
        "staging": (("values-staging.yaml",), "dev"),  # repo root, via `$values/`
        "prod": (("values/guestbook/values-prod.yaml",), "staging"),
    }
    assert index.config.envs["staging"].charts == (
        ValuesChart("values-staging.yaml", "charts/guestbook", "guestbook"),
    )
    # the app-of-apps folder (argocd/apps) is not taken for an env root
    assert all("argocd" not in p for e in index.config.envs.values() for p in e.paths)
    t = index.find("guestbook", "dev")
    # the chart's defaults (charts/guestbook/values.yaml) under the env's own values
    assert (t.rendered["replicaCount"], t.rendered["image"]["tag"]) == (1, "1.5.0-rc.2")


def test_values_file_ties_survive_init(tmp_path: Path) -> None:
    """What init writes reads back as the same config (charts: pins the values -> chart tie)."""
    index = index_of("argo-helm-values", tmp_path)
    again = parse_config(render_config(index.config))
    assert {n: (e.paths, e.charts) for n, e in again.envs.items()} == {
        n: (e.paths, e.charts) for n, e in index.config.envs.items()
    }


def test_root_env_folders_holding_helmrelease_patches(tmp_path: Path) -> None:
    index = index_of("flux-env-roots", tmp_path)
    assert envs(index) == {"staging": (("staging",), None), "production": (("production",), "staging")}
    t = index.find("podinfo", "production")
    assert t.is_helmrelease and t.rendered["spec"]["chart"]["spec"]["version"] == "6.4.1"


def test_testing_qa_uat_in_the_usual_order_and_promote_does_not_skip_testing(tmp_path: Path) -> None:
    index = index_of("testing-chain", tmp_path)
    assert index.config.chains() == [["testing", "qa", "uat", "production"]]
    change = plan(index.repo, "promote api to qa")
    assert change.title == "Promote api from testing to qa"
    assert plan(index.repo, "promote api to production").title == "Promote api from uat to production"


def test_order_from_applicationset_list_and_kargo_stages(tmp_path: Path) -> None:
    """The names alone would give integration → perf → uat; the repo says uat comes first."""
    index = index_of("kargo-appset", tmp_path)
    assert index.config.chains() == [["integration", "uat", "perf", "production"]]
    assert index.config.envs["integration"].promote_from is None  # Kargo: direct from the Warehouse


@pytest.mark.parametrize("drop", ["kargo", "argocd"])
def test_either_kargo_or_the_applicationset_alone_gives_the_order(tmp_path: Path, drop: str) -> None:
    path = make_repo("kargo-appset", tmp_path / "r", history=False)
    shutil.rmtree(path / drop)
    commit_files(path, f"Drop {drop}", {})
    index = Index(GitRepo(str(path)), "main")
    assert index.config.chains() == [["integration", "uat", "perf", "production"]]


def test_order_from_flux_depends_on(tmp_path: Path) -> None:
    path = make_repo("kargo-appset", tmp_path / "r", history=False)
    shutil.rmtree(path / "kargo")
    shutil.rmtree(path / "argocd")
    flux = "".join(
        f"""---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: checkout-{env}
  namespace: flux-system
spec:
  interval: 10m
  path: ./envs/{env}
  prune: true
  sourceRef:
    kind: GitRepository
    name: flux-system
"""
        + (f"  dependsOn:\n    - name: checkout-{dep}\n" if dep else "")
        for env, dep in [("integration", None), ("uat", "integration"), ("perf", "uat"), ("production", "perf")]
    )
    commit_files(path, "Flux Kustomizations per env", {"flux/checkout.yaml": flux})
    index = Index(GitRepo(str(path)), "main")
    assert index.config.chains() == [["integration", "uat", "perf", "production"]]
    assert "flux Kustomization" in index.config.envs["perf"].found_by


def test_a_cycle_in_the_repo_order_falls_back_to_names_and_says_so(tmp_path: Path) -> None:
    path = make_repo("kargo-appset", tmp_path / "r", history=False)
    stages = (path / "kargo" / "stages.yaml").read_text()
    stages = stages.replace("        direct: true\n", "        stages:\n          - production\n", 1)
    commit_files(path, "Loop the stages", {"kargo/stages.yaml": stages})
    shutil.rmtree(path / "argocd")
    commit_files(path, "Drop the ApplicationSet", {})
    config = Index(GitRepo(str(path)), "main").config
    assert list(config.envs) == ["integration", "perf", "uat", "production"]
    assert any("cycle" in n for n in config.notes)


def test_helm_app_is_listed_and_found_by_its_chart_name(tmp_path: Path) -> None:
    """The folder is `helm-chart`, the chart is `web`: one name both ways."""
    path = make_repo("helm-values", tmp_path / "r", history=False)
    shutil.move(str(path / "charts" / "podinfo"), str(path / "charts" / "helm-chart"))
    commit_files(path, "Rename the chart folder", {})
    index = Index(GitRepo(str(path)), "main")
    env = index.env("production")
    assert "podinfo" in index.apps_in(env) and "helm-chart" not in index.apps_in(env)
    assert index.find("podinfo", "production").root == "charts/helm-chart/values-production.yaml"
    with pytest.raises(CommandError) as err:
        index.find("helm-chart", "production")
    assert err.value.message.startswith('Unknown app "helm-chart" in production.')
    assert err.value.message.endswith("Apps in production: podinfo, redis.")


def test_depends_on_inside_each_cluster_says_nothing_about_env_order(tmp_path: Path) -> None:
    """flux2-multi-tenancy style: each cluster's tenants depend on its own kyverno-policies."""
    path = make_repo("flux-helmrelease", tmp_path / "r", history=False)
    ks = """apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: {name}
  namespace: flux-system
spec:
  interval: 1h
  path: ./{path}
  prune: true
  sourceRef:
    kind: GitRepository
    name: flux-system
"""
    files: dict[str, str | None] = {"policies/kustomization.yaml": "resources: []\n"}
    for env in ("staging", "production"):
        files[f"clusters/{env}/policies.yaml"] = ks.format(name="policies", path="policies")
        apps = (path / "clusters" / env / "apps.yaml").read_text()
        files[f"clusters/{env}/apps.yaml"] = apps + "  dependsOn:\n    - name: policies\n"
    commit_files(path, "Apps wait for policies", files)
    config = Index(GitRepo(str(path)), "main").config
    assert config.chains() == [["staging", "production"]] and config.notes == ()


def test_helmrelease_values_from_a_generated_configmap_are_read_and_not_shadowed(tmp_path: Path) -> None:
    """Flux merges valuesFrom first and spec.values over it: opsbot reads both, and will not write a
    spec.values key that would silently override the env's values file."""
    from opsbot.manifests.index import current_replicas, current_version

    index = index_of("flux-valuesfrom", tmp_path)
    t = index.find("podinfo", "production")
    assert current_replicas(t, "replicaCount") == 3
    assert current_version(t, "image.tag").tag == "6.4.0"
    assert t.helm_values()["ingress"]["className"] == "nginx"  # spec.values still counts
    with pytest.raises(CommandError) as err:
        plan(index.repo, "scale podinfo 5 in production")
    assert "from apps/production/values-production.yaml" in err.value.message
    assert "takes replicaCount from ConfigMap podinfo-values-" in err.value.message
    with pytest.raises(CommandError, match=r"takes image\.tag from ConfigMap"):
        plan(index.repo, "promote podinfo to production")


def test_argo_chart_from_a_helm_repository_with_values_from_this_repo(tmp_path: Path) -> None:
    """Multi-source: the chart comes from a Helm repository, the values file from this repo."""
    path = make_repo("argo-helm-values", tmp_path / "r", history=False)
    app = (path / "argocd" / "apps" / "guestbook-prod.yaml").read_text()
    app = app.replace(
        "      path: charts/guestbook\n",
        "      repoURL: https://charts.example.com\n      chart: guestbook\n      targetRevision: 0.3.0\n",
    ).replace("    - repoURL: https://github.com/acme/deploy.git\n      targetRevision: HEAD\n      repoURL", "    - repoURL", 1)
    commit_files(path, "prod takes the chart from the Helm repository", {"argocd/apps/guestbook-prod.yaml": app})
    index = Index(GitRepo(str(path)), "main")
    prod = index.config.envs["prod"]
    assert prod.charts == (ValuesChart("values/guestbook/values-prod.yaml", "", "guestbook"),)
    t = index.find("guestbook", "prod")
    assert t.rendered == {"replicaCount": 3, "image": {"tag": "1.4.1"}}  # no chart defaults to merge
    change = plan(index.repo, "scale guestbook 4 in prod")
    assert change.files == ["values/guestbook/values-prod.yaml"]


def test_applicationset_git_directory_generator(tmp_path: Path) -> None:
    path = make_repo("kargo-appset", tmp_path / "r", history=False)
    appset = (path / "argocd" / "checkout.yaml").read_text()
    start = appset.index("    - list:")
    end = appset.index("  template:")
    appset = (
        appset[:start]
        + "    - git:\n        repoURL: https://github.com/acme/checkout-deploy.git\n        revision: HEAD\n"
        + "        directories:\n          - path: envs/*\n"
        + appset[end:].replace("{{stage}}", "{{path.basename}}")
    )
    shutil.rmtree(path / "kargo")
    commit_files(path, "Git directory generator", {"argocd/checkout.yaml": appset})
    config = Index(GitRepo(str(path)), "main").config
    assert all("argo cd Application" in e.found_by for e in config.envs.values())
    # no order in the repo any more: the usual order of names
    assert config.chains() == [["integration", "perf", "uat", "production"]]


def test_malformed_gitops_objects_are_passed_over_not_crashed_on(tmp_path: Path) -> None:
    """Hand-written objects with the wrong shapes: discovery keeps what the folders say."""
    path = make_repo("testing-chain", tmp_path / "r", history=False)
    weird = """apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: api-qa}
spec:
  sources: 7
  source: {path: [overlays/qa], helm: {valueFiles: values-qa.yaml}}
---
apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata: {name: api}
spec:
  generators: {list: {elements: [{env: qa}]}}
  template: {spec: {source: {path: "overlays/{{env}}"}}}
---
apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata: {name: api2}
spec:
  generators: [{list: {elements: qa}}, {git: {directories: overlays/*}}, 3]
  template: []
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: uat}
spec:
  requestedFreight: [nope, {sources: [qa]}, {sources: {stages: testing}}]
  subscriptions: {upstreamStages: [1, {name: 2}]}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: production}
spec:
  requestedFreight: [{sources: {stages: [elsewhere]}}]
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: qa}
spec: {path: 5, dependsOn: nope}
"""
    commit_files(path, "Odd objects", {"argocd/odd.yaml": weird})
    config = Index(GitRepo(str(path)), "main").config
    # `elsewhere` is no env: production still promotes from the env before it
    assert config.chains() == [["testing", "qa", "uat", "production"]]


def test_applications_that_name_no_env_are_listed_in_one_note(tmp_path: Path) -> None:
    path = make_repo("argo-helm-values", tmp_path / "r", history=False)
    app = """apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: cert-manager, namespace: argocd}
spec:
  source: {repoURL: https://github.com/acme/deploy.git, path: infra/cert-manager}
  destination: {server: https://kubernetes.default.svc, namespace: cert-manager}
"""
    commit_files(
        path,
        "cert-manager",
        {
            "argocd/apps/cert-manager.yaml": app,
            "infra/cert-manager/kustomization.yaml": "resources: []\n",
        },
    )
    config = Index(GitRepo(str(path)), "main").config
    assert list(config.envs) == ["dev", "staging", "prod"]
    assert config.notes == (
        "Argo CD Applications that name no environment opsbot knows: cert-manager (infra/cert-manager); "
        "add their paths to an environment in .opsbot.yaml if opsbot should change them.",
    )


def test_applicationset_matrix_of_git_directories_and_an_env_list(tmp_path: Path) -> None:
    """apps/* × [integration, uat, perf, production]: the list's order holds for every app."""
    path = make_repo("kargo-appset", tmp_path / "r", history=False)
    shutil.rmtree(path / "kargo")
    appset = """apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata: {name: everything, namespace: argocd}
spec:
  goTemplate: true
  generators:
    - matrix:
        generators:
          - git:
              repoURL: https://github.com/acme/checkout-deploy.git
              revision: HEAD
              directories:
                - path: envs/*
          - list:
              elements:
                - {stage: integration}
                - {stage: uat}
                - {stage: perf}
                - {stage: production}
  template:
    metadata: {name: "checkout-{{.stage}}"}
    spec:
      source: {repoURL: https://github.com/acme/checkout-deploy.git, path: "envs/{{.stage}}"}
      destination: {server: https://kubernetes.default.svc, namespace: "checkout-{{.stage}}"}
"""
    commit_files(path, "Matrix ApplicationSet", {"argocd/checkout.yaml": appset})
    config = Index(GitRepo(str(path)), "main").config
    assert config.chains() == [["integration", "uat", "perf", "production"]]


def test_flux_kustomizations_of_other_repositories_are_not_env_roots(tmp_path: Path) -> None:
    """A tenant's Kustomization reads its own GitRepository: `./staging` there is not `staging/` here."""
    path = make_repo("flux-env-roots", tmp_path / "r", history=False)
    tenant = """apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: dev-team, namespace: apps}
spec:
  interval: 5m
  path: ./production
  sourceRef: {kind: GitRepository, name: dev-team}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: dev-everything, namespace: apps}
spec:
  interval: 5m
  path: ./
  sourceRef: {kind: GitRepository, name: flux-system}
"""
    commit_files(path, "Tenant sync", {"tenants/dev-team.yaml": tenant})
    config = Index(GitRepo(str(path)), "main").config
    assert {n: (e.paths, e.found_by) for n, e in config.envs.items()} == {
        "staging": (("staging",), "<env>/ folders"),
        "production": (("production",), "<env>/ folders"),
    }


def _prod_app(path: Path, helm_block: str) -> None:
    app = (path / "argocd" / "apps" / "guestbook-prod.yaml").read_text()
    old = "      helm:\n        valueFiles:\n          - $values/values/guestbook/values-prod.yaml\n"
    assert old in app
    commit_files(
        path,
        "prod Application changes",
        {"argocd/apps/guestbook-prod.yaml": app.replace(old, helm_block)},
    )


def test_argo_value_files_layer_and_the_last_one_is_edited(tmp_path: Path) -> None:
    """valueFiles [common, prod]: prod wins, so prod is the env's file; common is merged under it."""
    path = make_repo("argo-helm-values", tmp_path / "r", history=False)
    (path / "values" / "common.yaml").write_text("service:\n  port: 8080\nreplicaCount: 9\n")
    _prod_app(
        path,
        "      helm:\n        valueFiles:\n          - $values/values/common.yaml\n"
        "          - $values/values/guestbook/values-prod.yaml\n",
    )
    index = Index(GitRepo(str(path)), "main")
    assert index.config.envs["prod"].paths == ("values/guestbook/values-prod.yaml",)
    assert index.config.envs["prod"].charts[0].layers == ("values/common.yaml",)
    t = index.find("guestbook", "prod")
    assert (t.rendered["service"]["port"], t.rendered["replicaCount"]) == (8080, 3)
    change = plan(index.repo, "scale guestbook 4 in prod")
    assert change.files == ["values/guestbook/values-prod.yaml"]
    assert [(f.old, f.new) for f in change.fields] == [("3", "4")]


def test_a_value_the_argo_application_sets_itself_is_not_edited_in_a_file(tmp_path: Path) -> None:
    """helm.parameters win over every values file: an edit there would change nothing."""
    path = make_repo("argo-helm-values", tmp_path / "r", history=False)
    _prod_app(
        path,
        "      helm:\n        valueFiles:\n          - $values/values/guestbook/values-prod.yaml\n"
        "        parameters:\n          - name: image.tag\n            value: 1.4.1\n"
        "        valuesObject:\n          replicaCount: 3\n",
    )
    index = Index(GitRepo(str(path)), "main")
    assert index.config.envs["prod"].charts[0].overrides == ("image.tag", "replicaCount")
    with pytest.raises(CommandError, match=r"sets image\.tag itself .* wins over values/guestbook/values-prod\.yaml"):
        plan(index.repo, "deploy guestbook 1.4.9 to prod")
    with pytest.raises(CommandError, match="sets replicaCount itself"):
        plan(index.repo, "scale guestbook 5 in prod")
    again = parse_config(render_config(index.config))  # init keeps what it found
    assert again.envs["prod"].charts == index.config.envs["prod"].charts


def test_helmrelease_values_files_of_a_chart_in_this_repo_are_read_and_not_shadowed(tmp_path: Path) -> None:
    """chart from GitRepository flux-system with valuesFiles: those files are under spec.values."""
    from opsbot.manifests.index import current_replicas

    path = make_repo("flux-env-roots", tmp_path / "r", history=False)
    release = (path / "base" / "podinfo" / "release.yaml").read_text()
    old = "      chart: podinfo\n"
    assert old in release
    release = release.replace(
        old, "      chart: ./charts/podinfo\n      valuesFiles:\n        - ./charts/podinfo/values-prod.yaml\n"
    ).replace("        kind: HelmRepository\n        name: podinfo\n", "        kind: GitRepository\n        name: flux-system\n")
    patch = (path / "production" / "podinfo-patch.yaml").read_text().replace("    replicaCount: 3\n", "    image:\n      tag: 6.4.1\n")
    release = release.replace("    replicaCount: 1\n", "")
    commit_files(
        path,
        "podinfo chart from this repo",
        {
            "base/podinfo/release.yaml": release,
            "production/podinfo-patch.yaml": patch,
            "charts/podinfo/Chart.yaml": "apiVersion: v2\nname: podinfo\nversion: 6.4.1\n",
            "charts/podinfo/templates/deployment.yaml": (
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n"
                "spec:\n  replicas: {{ .Values.replicaCount }}\n"
            ),
            "charts/podinfo/values-prod.yaml": "replicaCount: 4\n",
        },
    )
    index = Index(GitRepo(str(path)), "main")
    assert list(index.config.envs) == ["staging", "production"]  # values-prod.yaml is the release's, not an env
    t = index.find("podinfo", "production")
    assert current_replicas(t, "replicaCount") == 4
    with pytest.raises(CommandError, match=r"takes replicaCount from charts/podinfo/values-prod\.yaml"):
        plan(index.repo, "scale podinfo 5 in production")


def test_init_asks_one_approval_for_every_production_name() -> None:
    from opsbot.manifests.config import EnvConfig, RepoConfig

    names = ["dev", "uat", "prd", "live", "prod-eu", "production"]
    cfg = RepoConfig(envs={n: EnvConfig(n, (f"envs/{n}",)) for n in names})
    parsed = parse_config(render_config(cfg))
    assert {n: e.approvals for n, e in parsed.envs.items()} == {
        "dev": 0, "uat": 0, "prd": 1, "live": 1, "prod-eu": 1, "production": 1
    }
