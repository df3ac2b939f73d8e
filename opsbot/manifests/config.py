"""`.opsbot.yaml`, or what discovery finds when there is none.

Discovery looks only at paths and a few small files, so it is cheap on a 20,000-file fleet; where it
cannot decide it says what it found and how to pin it, rather than guessing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml

from opsbot.errors import ConfigError
from opsbot.manifests import paths, safeyaml
from opsbot.manifests.gitrepo import Snapshot, join, norm
from opsbot.manifests.paths import is_name
from opsbot.manifests.yamledit import load_all

CONFIG_FILE = ".opsbot.yaml"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

#: Usual promotion order; discovered envs are sorted by it and `promote_from` defaults to the previous one.
ENV_ORDER = (
    "dev",
    "development",
    "test",
    "qa",
    "int",
    "integration",
    "stage",
    "staging",
    "uat",
    "preprod",
    "pre-production",
    "prod",
    "production",
)
ENV_WORDS = frozenset(ENV_ORDER) | {"sandbox", "live"}


@dataclass(frozen=True)
class AgentRef:
    """Which Flux or Argo CD object reconciles an env (for deploy correlation)."""

    kind: str  # flux | argocd
    name: str
    namespace: str = "flux-system"
    cluster: str = ""
    object_kind: str = "Kustomization"  # Kustomization | HelmRelease | Application


@dataclass(frozen=True)
class EnvConfig:
    name: str
    paths: tuple[str, ...]
    branch: str | None = None
    promote_from: str | None = None
    approvals: int = 0
    agent: AgentRef | None = None
    protected: bool = False
    max_replicas: int | None = None
    found_by: str = "config"


@dataclass(frozen=True)
class HelmKeys:
    """Where a chart's values keep replicas and the image tag (dotted paths)."""

    replicas: str = "replicaCount"
    tag: str = "image.tag"


@dataclass(frozen=True)
class AppConfig:
    name: str
    workload: str
    helm: HelmKeys | None = None


@dataclass(frozen=True)
class ClustersConfig:
    path: str = "clusters/{name}"
    templates: str = "templates/clusters"
    #: The management cluster's agent object that applies `path` (step one of a created cluster
    #: going live); without it, only the new Cluster reporting Ready is told.
    agent: AgentRef | None = None


@dataclass(frozen=True)
class RepoConfig:
    envs: Mapping[str, EnvConfig]
    apps: Mapping[str, AppConfig] = field(default_factory=dict)
    clusters: ClustersConfig = field(default_factory=ClustersConfig)
    helm: HelmKeys = field(default_factory=HelmKeys)
    from_file: bool = False
    #: `kustomize: {allow_remote: true}`: let builds fetch remote bases (off: a build is local only).
    kustomize_allow_remote: bool = False
    notes: tuple[str, ...] = ()

    def env_names(self) -> list[str]:
        return list(self.envs)

    def source_env(self, target: str) -> str | None:
        env = self.envs[target]
        if env.promote_from:
            return env.promote_from
        names = self.env_names()
        i = names.index(target)
        return names[i - 1] if i > 0 else None

    def workload_name(self, app: str) -> str:
        cfg = self.apps.get(app)
        return cfg.workload if cfg else app

    def helm_keys(self, app: str) -> HelmKeys:
        cfg = self.apps.get(app)
        return cfg.helm if cfg and cfg.helm else self.helm


# ------------------------------------------------------------------------------------------ the file


_ENV_KEYS = {"path", "paths", "branch", "promote_from", "approvals", "agent", "protected", "max_replicas"}
_TOP_KEYS = {"environments", "apps", "clusters", "helm", "kustomize"}


def _text(raw: Any, where: str) -> str:
    """A config value that must be a word or a number, checked before anything calls `str()` on it."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise ConfigError(f"{where}: expected text, got {paths._kind(raw)}")
    return str(raw)


def parse_config(text: str, snapshot: Snapshot | None = None) -> RepoConfig:
    try:
        raw = safeyaml.load_config(text, CONFIG_FILE) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{CONFIG_FILE}: not valid YAML{where} ({problem})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{CONFIG_FILE}: expected a mapping at the top")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(
            f"{CONFIG_FILE}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_TOP_KEYS))})"
        )
    helm = _helm_keys(raw.get("helm"), "helm")
    envs_raw = raw.get("environments")
    if envs_raw is not None and (not isinstance(envs_raw, dict) or not envs_raw):
        raise ConfigError(f"{CONFIG_FILE}: `environments` must map env names to settings")
    envs: dict[str, EnvConfig] = {}
    if envs_raw is None:
        # Only apps/clusters pinned: environments are still discovered (or there are none).
        try:
            envs = dict(discover(snapshot).envs) if snapshot is not None else {}
        except ConfigError:
            envs = {}
        envs_raw = {}
    for name, spec in envs_raw.items():
        where = f"{CONFIG_FILE}: environments.{_text(name, f'{CONFIG_FILE}: environments')}"
        if not is_name(str(name)):
            raise ConfigError(
                f"{CONFIG_FILE}: environments: {str(name)!r} is not an environment name "
                '(letters, digits, "_", "." and "-")'
            )
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a mapping with path or branch")
        bad = set(spec) - _ENV_KEYS
        if bad:
            raise ConfigError(
                f"{where}: unknown key {sorted(bad)[0]!r} (known: {', '.join(sorted(_ENV_KEYS))})"
            )
        paths_raw = spec.get("paths", spec.get("path"))
        if paths_raw is None and not spec.get("branch"):
            raise ConfigError(f"{where}: needs `path` (a directory or values file) or `branch`")
        if paths_raw is not None and not isinstance(paths_raw, (str, list)):
            raise ConfigError(f"{where}.path: expected a path or a list of paths")
        env_paths = tuple(
            paths.repo_path(p, f"{where}.path")
            for p in ([paths_raw] if isinstance(paths_raw, str) else (paths_raw or [""]))
        )
        approvals = spec.get("approvals", 0)
        if isinstance(approvals, bool) or not isinstance(approvals, int) or approvals < 0:
            raise ConfigError(f"{where}.approvals: expected a whole number >= 0")
        max_rep = spec.get("max_replicas")
        if max_rep is not None and (isinstance(max_rep, bool) or not isinstance(max_rep, int) or max_rep < 1):
            raise ConfigError(f"{where}.max_replicas: expected a whole number >= 1")
        envs[str(name)] = EnvConfig(
            name=str(name),
            paths=env_paths,
            branch=_text(spec["branch"], f"{where}.branch") if spec.get("branch") else None,
            promote_from=_text(spec["promote_from"], f"{where}.promote_from") if spec.get("promote_from") else None,
            approvals=approvals,
            agent=_agent(spec.get("agent"), where),
            protected=_flag(spec.get("protected", False), f"{where}.protected"),
            max_replicas=max_rep,
        )
    for env in envs.values():
        if env.promote_from and env.promote_from not in envs:
            raise ConfigError(
                f"{CONFIG_FILE}: environments.{env.name}.promote_from names {env.promote_from!r}, "
                f"which is not an environment ({', '.join(envs)})"
            )
    apps: dict[str, AppConfig] = {}
    apps_raw = raw.get("apps") or {}
    if not isinstance(apps_raw, dict):
        raise ConfigError(f"{CONFIG_FILE}: apps: expected a mapping of app names")
    for name, spec in apps_raw.items():
        _text(name, f"{CONFIG_FILE}: apps")
        if isinstance(spec, str):
            spec = {"workload": spec}
        if not isinstance(spec, dict):
            raise ConfigError(f"{CONFIG_FILE}: apps.{name}: expected {{workload: NAME}}")
        apps[str(name)] = AppConfig(
            name=str(name),
            workload=_text(spec.get("workload", name), f"{CONFIG_FILE}: apps.{name}.workload"),
            helm=_helm_keys(spec.get("helm"), f"apps.{name}.helm") if spec.get("helm") else None,
        )
    clusters_raw = raw.get("clusters") or {}
    if not isinstance(clusters_raw, dict):
        raise ConfigError(f"{CONFIG_FILE}: clusters: expected a mapping with path and templates")
    unknown_clusters = set(clusters_raw) - {"path", "templates", "agent"}
    if unknown_clusters:
        raise ConfigError(
            f"{CONFIG_FILE}: clusters: unknown key {sorted(unknown_clusters)[0]!r} (known: agent, path, templates)"
        )
    clusters = ClustersConfig(
        path=paths.repo_path(clusters_raw.get("path", ClustersConfig.path), f"{CONFIG_FILE}: clusters.path"),
        templates=paths.repo_path(
            clusters_raw.get("templates", ClustersConfig.templates), f"{CONFIG_FILE}: clusters.templates"
        ),
        agent=_agent(clusters_raw.get("agent"), f"{CONFIG_FILE}: clusters"),
    )
    if "{name}" not in clusters.path:
        raise ConfigError(f"{CONFIG_FILE}: clusters.path must contain {{name}}, e.g. clusters/{{name}}")
    # The name is checked here with a stand-in, so a path that leaves the repo for any name is refused
    # now, not at the first `create cluster`.
    paths.fill_name(clusters.path, "x", f"{CONFIG_FILE}: clusters.path")
    return RepoConfig(
        envs=envs,
        apps=apps,
        clusters=clusters,
        helm=helm,
        from_file=True,
        kustomize_allow_remote=_allow_remote(raw.get("kustomize")),
    )


def _flag(raw: Any, where: str) -> bool:
    """`protected: "no"` must not read as true: only YAML booleans are flags."""
    if not isinstance(raw, bool):
        raise ConfigError(f"{where}: expected true or false")
    return raw


def _allow_remote(raw: Any) -> bool:
    if raw is None:
        return False
    if not isinstance(raw, dict) or set(raw) - {"allow_remote"}:
        raise ConfigError(f"{CONFIG_FILE}: kustomize: expected {{allow_remote: true|false}}")
    value = raw.get("allow_remote", False)
    if not isinstance(value, bool):
        raise ConfigError(f"{CONFIG_FILE}: kustomize.allow_remote: expected true or false")
    return value


def _helm_keys(raw: Any, where: str) -> HelmKeys:
    if raw is None:
        return HelmKeys()
    if not isinstance(raw, dict):
        raise ConfigError(f"{CONFIG_FILE}: {where}: expected {{replicas: KEY, tag: KEY}}")
    return HelmKeys(
        replicas=_text(raw.get("replicas", "replicaCount"), f"{CONFIG_FILE}: {where}.replicas"),
        tag=_text(raw.get("tag", "image.tag"), f"{CONFIG_FILE}: {where}.tag"),
    )


def _agent(raw: Any, where: str) -> AgentRef | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("kind") not in ("flux", "argocd"):
        raise ConfigError(f"{where}.agent: expected {{kind: flux|argocd, name: ..., namespace: ...}}")
    kind = str(raw["kind"])
    return AgentRef(
        kind=kind,
        name=_text(raw.get("name", ""), f"{where}.agent.name"),
        namespace=_text(raw.get("namespace", "flux-system" if kind == "flux" else "argocd"), f"{where}.agent.namespace"),
        cluster=_text(raw.get("cluster", ""), f"{where}.agent.cluster"),
        object_kind=_text(
            raw.get("object", "Kustomization" if kind == "flux" else "Application"), f"{where}.agent.object"
        ),
    )


# ------------------------------------------------------------------------------------------ discovery


def env_sort_key(name: str) -> tuple[int, str]:
    return (ENV_ORDER.index(name) if name in ENV_ORDER else len(ENV_ORDER), name)


def is_kustomize_dir(snap: Snapshot, directory: str) -> bool:
    return any(snap.exists(join(directory, f)) for f in KUSTOMIZATION_FILES)


def kustomization_file(snap: Snapshot, directory: str) -> str | None:
    for f in KUSTOMIZATION_FILES:
        p = join(directory, f)
        if snap.exists(p):
            return p
    return None


_OVERLAY = re.compile(r"(?:^|/)overlays/([^/]+)/kustomization\.ya?ml$")
_APPS_ENV = re.compile(r"^apps/([^/]+)/kustomization\.ya?ml$")
_VALUES = re.compile(r"(?:^|/)values[-.]([A-Za-z0-9_-]+)\.ya?ml$")
_FLUX_CLUSTER = re.compile(r"^clusters/([^/]+)/[^/]+\.ya?ml$")
_WORKLOAD_HINT = re.compile(r"^kind:\s*(Deployment|StatefulSet|DaemonSet|Rollout|HelmRelease)\s*$", re.M)


def discover(snap: Snapshot) -> RepoConfig:
    """Find envs from common layouts; raise ConfigError naming candidates when it cannot decide."""
    found: dict[str, dict[str, list[str]]] = {}  # env -> rule -> paths

    def add(env: str, rule: str, path: str) -> None:
        if not is_name(env):
            return  # a folder named with control characters or spaces is not an env anyone types
        found.setdefault(env, {}).setdefault(rule, [])
        if path not in found[env][rule]:
            found[env][rule].append(path)

    for path in snap.blobs:
        if m := _OVERLAY.search(path):
            add(m.group(1), "kustomize overlays", str(PurePosixPath(path).parent))
        elif m := _APPS_ENV.match(path):
            if m.group(1) != "base" and snap.is_dir("apps/base"):
                add(m.group(1), "apps/<env>", str(PurePosixPath(path).parent))
        elif m := _VALUES.search(path):
            chart_dir = str(PurePosixPath(path).parent)
            if snap.exists(join(chart_dir, "Chart.yaml")) and m.group(1) not in ("schema",):
                add(m.group(1), "helm values", path)
    for path in sorted(snap.blobs):
        m = _FLUX_CLUSTER.match(path)
        if not m or "/flux-system/" in path:
            continue
        for target in _flux_kustomization_paths(snap.read(path), path):
            if target.startswith("clusters/") or not snap.is_dir(target):
                continue
            add(m.group(1), "flux clusters", target)
    _discover_plain(snap, add)

    if not found:
        raise ConfigError(
            "No environments found. Looked for overlays/<env>/kustomization.yaml, apps/<env>/, "
            "values-<env>.yaml beside Chart.yaml, Flux clusters/<env>/ and <env>/ folders of plain manifests. "
            f"Run `opsbot init` to write a {CONFIG_FILE}, or write one by hand (docs/configuration.md)."
        )
    envs: dict[str, EnvConfig] = {}
    notes: list[str] = []
    for name in sorted(found, key=env_sort_key):
        rules = found[name]
        paths: list[str] = []
        if "flux clusters" in rules and len(rules) > 1:
            others = {p for r, ps in rules.items() if r != "flux clusters" for p in ps}
            if not others <= set(rules["flux clusters"]) and not set(rules["flux clusters"]) <= others:
                cand = "; ".join(f"{r}: {', '.join(ps)}" for r, ps in rules.items())
                raise ConfigError(
                    f"Environment {name!r} is ambiguous: {cand}. Pin it in {CONFIG_FILE}, e.g.\n"
                    f"environments:\n  {name}:\n    path: {rules['flux clusters'][0]}"
                )
        for ps in rules.values():
            for p in ps:
                if p not in paths:
                    paths.append(p)
        envs[name] = EnvConfig(name=name, paths=tuple(paths), found_by=", ".join(rules))
    names = list(envs)
    ordered = {n: envs[n] for n in names}
    for i, n in enumerate(names):
        if i > 0:
            ordered[n] = EnvConfig(**{**ordered[n].__dict__, "promote_from": names[i - 1]})
    return RepoConfig(envs=ordered, notes=tuple(notes))


def _flux_kustomization_paths(text: str, where: str = "a Flux file") -> list[str]:
    out: list[str] = []
    safeyaml.check_size(text, where)
    try:
        docs = load_all(text, where)
    except yaml.YAMLError:
        return out
    for d in docs:
        if (
            isinstance(d, dict)
            and d.get("kind") == "Kustomization"
            and str(d.get("apiVersion", "")).startswith("kustomize.toolkit.fluxcd.io")
        ):
            p = (d.get("spec") or {}).get("path")
            if isinstance(p, str):
                out.append(norm(p))
    return out


def _discover_plain(snap: Snapshot, add: Any) -> None:
    """`<parent>/<env>/` folders holding workload manifests and no kustomization, two or more envs."""
    by_parent: dict[str, set[str]] = {}
    for path in snap.blobs:
        if not path.endswith((".yaml", ".yml")):
            continue
        parts = path.split("/")
        if len(parts) < 2 or parts[-2] not in ENV_WORDS:
            continue
        env_dir = "/".join(parts[:-1])
        if "overlays" in parts or is_kustomize_dir(snap, env_dir):
            continue
        parent = "/".join(parts[:-2])
        by_parent.setdefault(parent, set()).add(parts[-2])
    for parent, envs in by_parent.items():
        if len(envs) < 2:
            continue
        for env in envs:
            env_dir = join(parent, env)
            files = [f for f in snap.listdir(env_dir)[0] if f.endswith((".yaml", ".yml"))]
            snap.prefetch(files)
            if any(_WORKLOAD_HINT.search(snap.read(f)) for f in files):
                add(env, "plain manifests", env_dir)


def load_config(snap: Snapshot) -> RepoConfig:
    if snap.exists(CONFIG_FILE):
        return parse_config(snap.read(CONFIG_FILE), snap)
    return discover(snap)


def render_config(cfg: RepoConfig) -> str:
    """The `.opsbot.yaml` that pins what discovery found (written by `opsbot init`)."""
    envs: dict[str, Any] = {}
    for env in cfg.envs.values():
        spec: dict[str, Any] = {}
        if env.branch:
            spec["branch"] = env.branch
        if len(env.paths) == 1:
            spec["path"] = env.paths[0]
        else:
            spec["paths"] = list(env.paths)
        if env.promote_from:
            spec["promote_from"] = env.promote_from
        spec["approvals"] = (
            env.approvals if env.approvals else (1 if env.name in ("prod", "production") else 0)
        )
        envs[env.name] = spec
    body = yaml.safe_dump({"environments": envs}, sort_keys=False, default_flow_style=False)
    header = (
        "# opsbot configuration, written by `opsbot init` from what discovery found.\n"
        "# Edit freely: environments (path or branch, promote_from, approvals, agent), apps (aliases),\n"
        "# clusters (path, templates). See docs/configuration.md.\n"
    )
    return header + body
