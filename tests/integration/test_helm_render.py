"""Issue 11 items 5-7 and the Helm render proof / CRD validation: each class on a fixture of its layout."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from commands import REGISTRY
from opsbot.chat import texts
from opsbot.core.model import Change
from opsbot.errors import CommandError, ValidationFailed
from opsbot.manifests import helm
from opsbot.manifests.crds import BUNDLED_DIR, Catalog, check_custom
from opsbot.manifests.gitrepo import GitRepo
from opsbot.manifests.planner import Planner, PlanOptions
from tests.doubles.chart_repo import ChartRepo, OciRegistry, package, serve, serve_oci
from tests.engine import plan
from tests.repos import fixture_path, make_repo

WEBAPP_FILES = {
    "values.yaml": "replicaCount: 1\nimage:\n  repository: ghcr.io/acme/webapp\n  tag: \"\"\n",
    "templates/deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels:
    app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels:
      app: {{ .Release.Name }}
  template:
    metadata:
      labels:
        app: {{ .Release.Name }}
    spec:
      containers:
        - name: webapp
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
""",
}


def _check(change: Change, prefix: str):  # type: ignore[no-untyped-def]
    hits = [c for c in change.checks if c.name.startswith(prefix)]
    assert len(hits) == 1, [c.name for c in change.checks]
    return hits[0]


# ------------------------------------------------------------------------------ Helm values files


def test_helm_values_change_is_proven_by_rendering_the_chart(tmp_path: Path) -> None:
    repo = GitRepo(str(make_repo("helm-values", tmp_path / "r", history=False)))
    change = plan(repo, "scale podinfo 5 in production")
    proof = _check(change, "helm render")
    assert proof.ok and not proof.skipped
    assert proof.detail == "charts/podinfo: only the replicas of Deployment podinfo changed"
    assert _check(change, "schema (k8s").detail == "1 object(s) rendered by Helm"


def test_replica_key_is_found_by_rendering_the_chart(tmp_path: Path) -> None:
    """Item 6: loki reads singleBinary.replicas; the old code wrote replicaCount, which nothing reads."""
    repo = GitRepo(str(make_repo("helm-replica-keys", tmp_path / "r")))
    change = plan(repo, "scale loki 2 in staging")
    (edit,) = change.edits
    assert "singleBinary:\n  persistence:\n    size: 20Gi\n  replicas: 2\n" in edit.after
    assert "replicaCount" not in edit.after
    assert _check(change, "helm render").detail == "charts/loki: only the replicas of StatefulSet loki changed"


def test_ambiguous_replica_keys_are_refused_with_the_line_that_pins_one(tmp_path: Path) -> None:
    repo = GitRepo(str(make_repo("helm-replica-keys", tmp_path / "r")))
    with pytest.raises(CommandError) as err:
        plan(repo, "scale loki 4 in production")
    msg = str(err.value)
    assert "3 values keys (read.replicas, write.replicas, backend.replicas)" in msg
    assert "`apps: {loki: {helm: {replicas: read.replicas}}}`" in msg


def test_a_pinned_replica_key_is_used(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(fixture_path("helm-replica-keys"), src)
    (src / ".opsbot.yaml").write_text(
        "environments:\n  staging: {path: charts/loki/values-staging.yaml}\n"
        "  production: {path: charts/loki/values-production.yaml}\n"
        "apps:\n  loki: {helm: {replicas: read.replicas}}\n"
    )
    repo = GitRepo(str(make_repo(src, tmp_path / "r")))
    change = plan(repo, "scale loki 4 in production")
    (edit,) = change.edits
    assert "read:\n  replicas: 4\n" in edit.after
    assert _check(change, "helm render").detail == "charts/loki: only the replicas of Deployment loki-read changed"


def test_without_a_chart_to_render_an_unguessable_replica_key_is_refused(tmp_path: Path) -> None:
    """kube-prometheus-stack follows 66.x (no one chart to fetch) and its values name no replica key."""
    repo = GitRepo(str(make_repo("flux-chartref", tmp_path / "r")))
    with pytest.raises(CommandError) as err:
        plan(repo, "scale kube-prometheus-stack 2 in staging")
    msg = str(err.value)
    assert 'the chart could not be rendered (chart version "66.x" is a range' in msg
    assert "`apps: {kube-prometheus-stack: {helm: {replicas: KEY}}}`" in msg


def test_a_values_key_the_chart_never_reads_fails_the_gate(tmp_path: Path) -> None:
    """loki's tag key is loki.image.tag: writing the default image.tag would change nothing."""
    repo = GitRepo(str(make_repo("helm-replica-keys", tmp_path / "r")))
    with pytest.raises(ValidationFailed, match="no rendered object's image tag changed, so nothing in the chart reads"):
        plan(repo, "deploy loki 3.0.1 to production")


# ------------------------------------------------------------------------------ chartRef (item 5) + CRDs


def test_chartref_version_is_edited_in_the_ocirepository(tmp_path: Path) -> None:
    repo = GitRepo(str(make_repo("flux-chartref", tmp_path / "r")))
    change = plan(repo, "deploy kube-prometheus-stack 70.0.0 to production")
    assert [e.path for e in change.edits] == ["apps/production/chart-version.yaml"]
    assert 'semver: "70.0.0"' in change.edits[0].after
    assert all("chart:" not in e.after for e in change.edits)
    crd = _check(change, "schema (OCIRepository")
    assert crd.ok and crd.name == "schema (OCIRepository, bundled CRD from fluxcd/source-controller)"
    assert (change.fields[0].old, change.fields[0].new) == ("66.2.1", "70.0.0")


def test_chartref_to_a_helmchart_edits_its_spec_version(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(fixture_path("flux-chartref"), src)
    base = src / "apps/base/monitoring"
    (base / "release.yaml").write_text(
        (base / "release.yaml").read_text().replace(
            "    kind: OCIRepository\n    name: kube-prometheus-stack", "    kind: HelmChart\n    name: kps", 1
        )
    )
    (base / "repository.yaml").write_text(
        (base / "repository.yaml").read_text()
        + "---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmChart\nmetadata:\n  name: kps\n"
        "  namespace: monitoring\nspec:\n  interval: 24h\n  chart: kube-prometheus-stack\n  version: 66.2.1\n"
        "  sourceRef:\n    kind: HelmRepository\n    name: prometheus-community\n"
    )
    repo = GitRepo(str(make_repo(src, tmp_path / "r")))
    change = plan(repo, "deploy kube-prometheus-stack 70.0.0 to staging")
    patch = next(e for e in change.edits if e.path == "apps/staging/kps-helmchart.yaml")
    assert "kind: HelmChart" in patch.after and "version: 70.0.0" in patch.after
    assert (change.fields[0].old, change.fields[0].new) == ("66.2.1", "70.0.0")
    assert _check(change, "schema (HelmChart").ok


def test_chartref_source_serving_other_releases_is_refused(tmp_path: Path) -> None:
    repo = GitRepo(str(make_repo("flux-chartref", tmp_path / "r")))
    with pytest.raises(CommandError, match="OCIRepository shared-charts serves blackbox-exporter as well as node-exporter"):
        plan(repo, "deploy node-exporter 1.5.0 to staging")


def test_crd_validation_catches_the_old_chartref_edit() -> None:
    """What the old code produced: spec.chart.spec.version appended beside chartRef."""
    docs = list(yaml.safe_load_all((fixture_path("flux-chartref") / "apps/base/monitoring/release.yaml").read_text()))
    hr = docs[0]
    assert check_custom([hr], Catalog(None))[0].ok
    hr["spec"]["chart"] = {"spec": {"version": "70.0.0"}}
    (check,) = check_custom([hr], Catalog(None))
    assert not check.ok
    assert "spec: either chart or chartRef must be set" in check.detail  # the CEL rule
    assert "spec.chart.spec: chart is required" in check.detail  # the openAPIV3Schema


def test_crd_validation_names_unknown_fields_and_wrong_types() -> None:
    hr = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "web"},
        "spec": {
            "interval": "5m",
            "chart": {"spec": {"chart": "web", "sourceRef": {"kind": "HelmRepository", "name": "r"}, "verison": "1"}},
            "install": {"remediation": {"retries": "three"}},
        },
    }
    (check,) = check_custom([hr], Catalog(None))
    assert not check.ok
    assert "spec.chart.spec.verison: unknown field" in check.detail
    assert "spec.install.remediation.retries: must be integer, not a string" in check.detail


def test_a_crd_in_the_repo_wins_over_the_bundled_one(tmp_path: Path) -> None:
    """The repo's gotk-components.yaml is what the cluster runs: here its HelmRelease CRD also requires
    spec.timeout (as a stricter version might), and the gate follows it rather than opsbot's copy."""
    src = tmp_path / "src"
    shutil.copytree(fixture_path("flux-semver-range"), src)
    crd = (Path(BUNDLED_DIR) / "flux-helm.toolkit.fluxcd.io_helmreleases.yaml").read_text()
    stricter = crd.replace("            required:\n            - interval\n", "            required:\n            - interval\n            - timeout\n", 1)
    assert stricter != crd
    (src / "clusters/production/flux-system").mkdir(parents=True)
    (src / "clusters/production/flux-system/gotk-components.yaml").write_text("---\n" + stricter)
    repo = GitRepo(str(make_repo(src, tmp_path / "r")))
    found = Catalog(repo.snapshot("main")).find("helm.toolkit.fluxcd.io", "HelmRelease")
    assert found is not None and found.source == "CRD from repo clusters/production/flux-system/gotk-components.yaml"
    with pytest.raises(ValidationFailed) as err:
        plan(repo, "scale webapp 3 in production")
    assert "schema (HelmRelease, CRD from repo clusters/production/flux-system/gotk-components.yaml): " in str(err.value)
    assert "spec: timeout is required" in str(err.value)
    bundled = Catalog(None).find("helm.toolkit.fluxcd.io", "HelmRelease")
    assert bundled is not None and bundled.source == "bundled CRD from fluxcd/helm-controller"


# ------------------------------------------------------------------------------ promote ranges (item 7)


def test_promote_refuses_to_copy_a_version_range_into_a_pinned_env(tmp_path: Path) -> None:
    repo = GitRepo(str(make_repo("flux-semver-range", tmp_path / "r")))
    with pytest.raises(CommandError) as err:
        plan(repo, "promote webapp to production")
    msg = str(err.value)
    assert 'staging follows the chart version range ">=1.0.0-alpha"' in msg
    assert "production pins 1.2.0" in msg and "`deploy webapp <version> to production`" in msg


def test_promote_of_a_chartref_release_following_a_range_is_refused(tmp_path: Path) -> None:
    """staging's OCIRepository follows semver 66.x; production pins 66.2.1 in its own patch."""
    repo = GitRepo(str(make_repo("flux-chartref", tmp_path / "r")))
    with pytest.raises(CommandError, match=re.escape('staging follows the chart version range "66.x", not one version, and production pins 66.2.1')):
        plan(repo, "promote kube-prometheus-stack to production")


# ------------------------------------------------------------------------------ charts from a repository


def _semver_repo(tmp_path: Path, url: str) -> GitRepo:
    src = tmp_path / "src"
    shutil.copytree(fixture_path("flux-semver-range"), src)
    repo_file = src / "apps/base/webapp/repository.yaml"
    repo_file.write_text(repo_file.read_text().replace("CHART_REPO_URL", url))
    return GitRepo(str(make_repo(src, tmp_path / "r")))


def _plan(repo: GitRepo, command: str, **options: object) -> Change:
    _, intent = REGISTRY.parse(command)
    return Planner(repo, "main", PlanOptions(**options)).plan(intent)  # type: ignore[arg-type]


def test_a_chart_that_cannot_be_had_is_reported_as_skipped_never_as_passed(tmp_path: Path) -> None:
    repo = _semver_repo(tmp_path, "http://bot:s3cret@127.0.0.1:9/charts")  # credentials never shown
    change = _plan(repo, "scale webapp 3 in production", fetch_charts=False)
    proof = _check(change, "helm render")
    assert proof.ok and proof.skipped and proof.mark == "⚠️"
    assert proof.detail == "skipped: webapp 1.2.0 is not in the local chart cache and fetching charts is off"
    assert texts.check_item(proof.name, proof.ok, proof.detail, skipped=True).startswith("⚠️ helm render: skipped:")
    change = _plan(repo, "scale webapp 3 in production", fetch_charts=True, chart_cache=tmp_path / "cache")
    proof = _check(change, "helm render")
    assert proof.skipped and proof.mark == "⚠️"
    assert proof.detail.startswith('skipped: looks like "http://127.0.0.1:9/charts" is not a valid chart repository')
    assert "connection refused" in proof.detail
    assert all("s3cret" not in c.detail and "s3cret" not in c.name for c in change.checks)


def test_a_helmrelease_chart_kept_in_the_repo_is_rendered_from_the_repo(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(fixture_path("flux-semver-range"), src)
    release = src / "apps/base/webapp/release.yaml"
    release.write_text(
        release.read_text()
        .replace("chart: webapp", "chart: ./charts/webapp")
        .replace("kind: HelmRepository\n        name: acme", "kind: GitRepository\n        name: flux-system\n        namespace: flux-system")
    )
    (src / "charts/webapp/templates").mkdir(parents=True)
    (src / "charts/webapp/Chart.yaml").write_text("apiVersion: v2\nname: webapp\nversion: 1.2.0\nappVersion: 1.2.0\n")
    for rel, text in WEBAPP_FILES.items():
        (src / "charts/webapp" / rel).write_text(text)
    repo = GitRepo(str(make_repo(src, tmp_path / "r")))
    change = _plan(repo, "scale webapp 3 in production", fetch_charts=False)
    proof = _check(change, "helm render")
    assert proof.ok and not proof.skipped
    assert proof.detail == "charts/webapp: only the replicas of Deployment webapp changed"


def test_charts_from_a_helm_repository_are_pulled_into_the_cache_and_rendered(tmp_path: Path) -> None:
    charts = ChartRepo()
    charts.add("webapp", "1.2.0", WEBAPP_FILES)
    charts.add("webapp", "1.3.0", WEBAPP_FILES)
    cache = tmp_path / "cache"
    with serve(charts):
        repo = _semver_repo(tmp_path, charts.url)
        change = _plan(repo, "scale webapp 3 in production", fetch_charts=True, chart_cache=cache)
        proof = _check(change, "helm render")
        assert proof.ok and not proof.skipped
        assert proof.detail == f"webapp 1.2.0 from {charts.url}: only the replicas of Deployment webapp changed"
        assert "webapp-1.2.0.tgz" in charts.requests
        assert [p.name.startswith("webapp-1.2.0-") for p in cache.iterdir()] == [True]

        upgrade = _plan(repo, "deploy webapp 1.3.0 to production", fetch_charts=True, chart_cache=cache)
        proof = _check(upgrade, "helm render")
        assert proof.ok and proof.detail == f"webapp 1.3.0 from {charts.url}: renders 1 object(s) with these values"
        assert _check(upgrade, "schema (HelmRelease").ok

        # the repository answers that it has no such version: a wrong change, not a skipped proof
        with pytest.raises(ValidationFailed) as err:
            _plan(repo, "deploy webapp 9.9.9 to production", fetch_charts=True, chart_cache=cache)
        assert f'helm render: webapp 9.9.9 from {charts.url}: chart "webapp" version "9.9.9" not found in' in str(err.value)

    # the server is gone and fetching is off: the cached chart still proves the change
    change = _plan(repo, "scale webapp 4 in production", fetch_charts=False, chart_cache=cache)
    assert _check(change, "helm render").detail.endswith("only the replicas of Deployment webapp changed")


def test_chartref_charts_are_pulled_from_an_oci_registry(tmp_path: Path) -> None:
    registry = OciRegistry()
    for version in ("66.2.1", "70.0.0"):
        registry.add("charts", "kube-prometheus-stack", version, WEBAPP_FILES)
    with serve_oci(registry):
        src = tmp_path / "src"
        shutil.copytree(fixture_path("flux-chartref"), src)
        repo_file = src / "apps/base/monitoring/repository.yaml"
        repo_file.write_text(repo_file.read_text().replace("ghcr.io/prometheus-community", registry.host))
        repo = GitRepo(str(make_repo(src, tmp_path / "r")))
        url = f"oci://{registry.host}/charts"
        change = _plan(repo, "deploy kube-prometheus-stack 70.0.0 to production", fetch_charts=True, chart_cache=tmp_path / "c")
        proof = _check(change, "helm render")
        assert proof.ok and proof.detail == f"kube-prometheus-stack 70.0.0 from {url}: renders 1 object(s) with these values"
        assert "GET /v2/charts/kube-prometheus-stack/manifests/70.0.0" in registry.requests
        with pytest.raises(ValidationFailed, match=re.escape("kube-prometheus-stack:71.0.0: not found")):
            _plan(repo, "deploy kube-prometheus-stack 71.0.0 to production", fetch_charts=True, chart_cache=tmp_path / "c")


# ------------------------------------------------------------------------------ the engine's confinement


def _archive(template: str) -> bytes:
    return package("probe", "0.1.0", {"templates/probe.yaml": template, "values.yaml": "{}\n"})


def test_render_cannot_read_outside_the_chart_or_reach_a_cluster() -> None:
    out = helm.render(
        _archive(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\ndata:\n"
            '  up: {{ .Files.Get "../../../../etc/hostname" | quote }}\n'
            '  abs: {{ .Files.Get "/etc/passwd" | quote }}\n'
            '  secret: {{ lookup "v1" "Secret" "kube-system" "" | toJson | quote }}\n'
        ),
        {},
        release="probe",
        namespace="default",
    )
    (cm,) = out.objects
    assert cm["data"] == {"up": "", "abs": "", "secret": "{}"}


def test_render_time_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helm, "RENDER_TIMEOUT", 3.0)
    spin = "{{ range until 100000 }}{{ range until 100000 }}{{ end }}{{ end }}"
    with pytest.raises(helm.HelmError, match="longer than 3 s"):
        helm.render(_archive(spin), {}, release="probe", namespace="default")


def test_render_memory_is_bounded() -> None:
    hog = "{{ $s := \"\" }}{{ range until 40 }}{{ $s = printf \"%s%s%s\" $s $s \"xxxxxxxx\" }}{{ end }}{{ len $s }}"
    with pytest.raises(helm.HelmError):
        helm.render(_archive(hog), {}, release="probe", namespace="default")


def test_workloads_without_a_chart_get_no_helm_check(tmp_path: Path) -> None:
    repo = GitRepo(str(make_repo("fleet", tmp_path / "r", history=False)))
    change = plan(repo, "scale frontend 5 in production")
    assert [c.name for c in change.checks] == ["YAML", "kustomize build", "schema (k8s 1.37)"]
    assert not any(c.skipped for c in change.checks)


def test_without_helms_engine_the_proof_is_skipped_not_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A platform without the helm-python-sdk wheel: the worker says so, and the check is ⚠️ skipped."""
    import sys

    from opsbot.manifests import helm_worker

    monkeypatch.setitem(sys.modules, "helm_python.chart", None)  # makes the import fail as if absent
    answer = helm_worker.handle({"op": "render"})
    assert answer["unavailable"] and answer["error"].startswith("Helm's engine (helm-python-sdk) is not installed")
    fake = tmp_path / "worker.py"
    fake.write_text(f"import json, sys\nsys.stdout.write(json.dumps({answer!r}))\n")
    monkeypatch.setattr(helm, "WORKER", fake)
    repo = GitRepo(str(make_repo("helm-values", tmp_path / "r", history=False)))
    change = plan(repo, "deploy podinfo 6.5.2 to dev")
    proof = _check(change, "helm render")
    assert proof.ok and proof.skipped and proof.detail.startswith("skipped: Helm's engine (helm-python-sdk) is not installed")


def test_an_umbrella_chart_without_vendored_subcharts_is_never_judged_on_a_partial_render(tmp_path: Path) -> None:
    """Chart.lock/charts/ are often not committed: what the missing subchart reads cannot be proven."""
    src = tmp_path / "src"
    chart = src / "charts/shop"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: shop\nversion: 0.1.0\ndependencies:\n"
        "  - name: redis\n    version: 18.0.0\n    repository: https://charts.example.invalid\n"
    )
    (chart / "values.yaml").write_text("replicaCount: 1\nredis:\n  image:\n    tag: 7.2.4\n")
    (chart / "templates/deployment.yaml").write_text(WEBAPP_FILES["templates/deployment.yaml"].replace(
        '"{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"', "ghcr.io/acme/shop:1.0.0"
    ).replace('{{ .Values.image.tag | default .Chart.AppVersion | quote }}', '"1.0.0"'))
    (chart / "values-staging.yaml").write_text("replicaCount: 1\n")
    (src / ".opsbot.yaml").write_text(
        "environments:\n  staging: {path: charts/shop/values-staging.yaml}\n"
        "apps:\n  shop: {helm: {tag: redis.image.tag}}\n"
    )
    repo = GitRepo(str(make_repo(src, tmp_path / "r")))
    change = plan(repo, "scale shop 3 in staging")
    assert _check(change, "helm render").detail == (
        "charts/shop: only the replicas of Deployment shop changed (without subcharts redis: not in charts/)"
    )
    change = plan(repo, "deploy shop 7.2.5 to staging")  # read by the absent redis subchart
    proof = _check(change, "helm render")
    assert proof.skipped and proof.detail == (
        "skipped: charts/shop depends on redis, which its charts/ folder does not hold, so the render is incomplete"
    )


@pytest.mark.parametrize("fixture", ["flux-chartref", "helm-replica-keys", "flux-semver-range"])
def test_every_changing_verb_gives_a_change_or_a_clean_refusal(tmp_path: Path, fixture: str) -> None:
    """No crash on the new layouts: each verb x app x env plans, or refuses with a CommandError."""
    from opsbot.manifests.index import Index

    repo = GitRepo(str(make_repo(fixture, tmp_path / "r")))
    index = Index(repo, "main")
    outcomes = {"change": 0, "refused": 0}
    for env in index.config.envs:
        for app in index.apps_in(index.env(env)):
            for command in (
                f"scale {app} 2 in {env}",
                f"scale {app} 2-4 in {env}",
                f"deploy {app} 9.1.0 to {env}",
                f"promote {app} to {env}",
                f"rollback {app} in {env}",
            ):
                try:
                    change = plan(repo, command)
                except CommandError as exc:
                    assert str(exc).strip(), command
                    outcomes["refused"] += 1
                else:
                    assert change.ok and change.edits, command
                    outcomes["change"] += 1
    assert outcomes["change"] >= 1 and outcomes["refused"] >= 1


def test_a_lone_replica_key_the_templates_ignore_fails_the_gate(tmp_path: Path) -> None:
    """values.yaml has replicaCount, but the templates read deployment.count: the render shows it."""
    src = tmp_path / "src"
    chart = src / "charts/api"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: api\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("replicaCount: 1  # left over from helm create\ndeployment:\n  count: 2\n")
    (chart / "templates/deployment.yaml").write_text(
        WEBAPP_FILES["templates/deployment.yaml"]
        .replace("{{ .Values.replicaCount }}", "{{ .Values.deployment.count }}")
        .replace('"{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"', "ghcr.io/acme/api:1.0.0")
        .replace("{{ .Values.image.tag | default .Chart.AppVersion | quote }}", '"1.0.0"')
    )
    (chart / "values-staging.yaml").write_text("deployment:\n  count: 2\n")
    (src / ".opsbot.yaml").write_text("environments:\n  staging: {path: charts/api/values-staging.yaml}\n")
    repo = GitRepo(str(make_repo(src, tmp_path / "r")))
    with pytest.raises(ValidationFailed, match="no rendered object's replicas changed, so nothing in the chart reads that key"):
        plan(repo, "scale api 3 in staging")
