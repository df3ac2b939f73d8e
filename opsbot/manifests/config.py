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
from opsbot.manifests.gitrepo import Snapshot, join, norm

CONFIG_FILE = ".opsbot.yaml"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

#: Usual promotion order of common env names, used where the repo itself does not say (Kargo Stages,
#: ApplicationSet lists, Flux dependsOn); `promote_from` defaults to the previous env in this order.
ENV_ORDER = (
    "local",
    "sandbox",
    "dev",
    "development",
    "develop",
    "ci",
    "test",
    "testing",
    "qa",
    "int",
    "integration",
    "sit",
    "e2e",
    "load",
    "perf",
    "performance",
    "stage",
    "staging",
    "stg",
    "uat",
    "acc",
    "acceptance",
    "demo",
    "preprod",
    "pre-prod",
    "pre-production",
    "preproduction",
    "canary",
    "prod",
    "production",
    "prd",
    "live",
)
#: Names of production: `opsbot init` writes `approvals: 1` for them (also `prod-eu` and the like).
PRODUCTION_NAMES = frozenset({"prod", "production", "prd", "live"})
#: Names taken as an env where a folder is named so; narrower than ENV_ORDER, which also orders envs
#: named in GitOps objects (a folder called `ci/` or `e2e/` is usually not an env).
ENV_WORDS = frozenset(ENV_ORDER) - {"local", "ci", "e2e", "demo", "canary", "acc", "sit"}


@dataclass(frozen=True)
class AgentRef:
    """Which Flux or Argo CD object reconciles an env (for deploy correlation)."""

    kind: str  # flux | argocd
    name: str
    namespace: str = "flux-system"
    cluster: str = ""
    object_kind: str = "Kustomization"  # Kustomization | HelmRelease | Application


@dataclass(frozen=True)
class ValuesChart:
    """A Helm values file kept away from its chart, and the chart that reads it (from an Argo CD
    Application or `.opsbot.yaml`): where the defaults are, and the app's name (the chart's)."""

    values: str
    chart: str  # chart folder in the repo, or "" for a chart from a Helm repository
    name: str
    #: values files the Application lists before this one (merged under it, never edited)
    layers: tuple[str, ...] = ()
    #: dotted keys the Application sets itself (helm.parameters, helm.values, valuesObject); they
    #: win over every values file, so editing them in a file would change nothing
    overrides: tuple[str, ...] = ()


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
    charts: tuple[ValuesChart, ...] = ()

    def chart_of(self, values_file: str) -> ValuesChart | None:
        return next((c for c in self.charts if c.values == values_file), None)


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

    def chains(self) -> list[list[str]]:
        """Promotion chains, first env to last (`dev → testing → staging → production`)."""
        nxt: dict[str, list[str]] = {}
        for name in self.envs:
            src = self.envs[name].promote_from
            if src:
                nxt.setdefault(src, []).append(name)
        out: list[list[str]] = []

        def walk(path: list[str]) -> None:
            after = [n for n in nxt.get(path[-1], []) if n not in path]
            if not after:
                out.append(path)
            for n in after:
                walk([*path, n])

        for name, env in self.envs.items():
            if not env.promote_from or env.promote_from not in self.envs:
                walk([name])
        return out

    def workload_name(self, app: str) -> str:
        cfg = self.apps.get(app)
        return cfg.workload if cfg else app

    def helm_keys(self, app: str) -> HelmKeys:
        cfg = self.apps.get(app)
        return cfg.helm if cfg and cfg.helm else self.helm


# ------------------------------------------------------------------------------------------ the file


_ENV_KEYS = {
    "path",
    "paths",
    "branch",
    "promote_from",
    "approvals",
    "agent",
    "protected",
    "max_replicas",
    "charts",
}
_TOP_KEYS = {"environments", "apps", "clusters", "helm"}


def parse_config(text: str, snapshot: Snapshot | None = None) -> RepoConfig:
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{CONFIG_FILE}: not valid YAML ({exc})") from None
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
        where = f"{CONFIG_FILE}: environments.{name}"
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
        paths = tuple(
            norm(str(p)) for p in ([paths_raw] if isinstance(paths_raw, str) else (paths_raw or [""]))
        )
        approvals = spec.get("approvals", 0)
        if not isinstance(approvals, int) or approvals < 0:
            raise ConfigError(f"{where}.approvals: expected a whole number >= 0")
        max_rep = spec.get("max_replicas")
        if max_rep is not None and (not isinstance(max_rep, int) or max_rep < 1):
            raise ConfigError(f"{where}.max_replicas: expected a whole number >= 1")
        envs[str(name)] = EnvConfig(
            name=str(name),
            paths=paths,
            branch=str(spec["branch"]) if spec.get("branch") else None,
            promote_from=str(spec["promote_from"]) if spec.get("promote_from") else None,
            approvals=approvals,
            agent=_agent(spec.get("agent"), where),
            protected=bool(spec.get("protected", False)),
            max_replicas=max_rep,
            charts=_charts(spec.get("charts"), where),
        )
    for env in envs.values():
        if env.promote_from and env.promote_from not in envs:
            raise ConfigError(
                f"{CONFIG_FILE}: environments.{env.name}.promote_from names {env.promote_from!r}, "
                f"which is not an environment ({', '.join(envs)})"
            )
    apps: dict[str, AppConfig] = {}
    for name, spec in (raw.get("apps") or {}).items():
        if isinstance(spec, str):
            spec = {"workload": spec}
        if not isinstance(spec, dict):
            raise ConfigError(f"{CONFIG_FILE}: apps.{name}: expected {{workload: NAME}}")
        apps[str(name)] = AppConfig(
            name=str(name),
            workload=str(spec.get("workload", name)),
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
        path=str(clusters_raw.get("path", ClustersConfig.path)),
        templates=norm(str(clusters_raw.get("templates", ClustersConfig.templates))),
        agent=_agent(clusters_raw.get("agent"), f"{CONFIG_FILE}: clusters"),
    )
    if "{name}" not in clusters.path:
        raise ConfigError(f"{CONFIG_FILE}: clusters.path must contain {{name}}, e.g. clusters/{{name}}")
    return RepoConfig(envs=envs, apps=apps, clusters=clusters, helm=helm, from_file=True)


def _charts(raw: Any, where: str) -> tuple[ValuesChart, ...]:
    """`charts: {values/prod.yaml: {chart: charts/shop}}` ties a values file to a chart elsewhere."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}.charts: expected {{VALUES_FILE: {{chart: DIR, name: CHART}}}}")
    out = []
    for values, spec in raw.items():
        if not isinstance(spec, dict) or not (spec.get("chart") or spec.get("name")):
            raise ConfigError(f"{where}.charts.{values}: expected {{chart: DIR}} or {{name: CHART}}")
        chart = norm(str(spec.get("chart") or ""))
        layers, overrides = spec.get("layers") or [], spec.get("overrides") or []
        if not isinstance(layers, list) or not isinstance(overrides, list):
            raise ConfigError(f"{where}.charts.{values}: layers and overrides are lists")
        out.append(
            ValuesChart(
                norm(str(values)),
                chart,
                str(spec.get("name") or PurePosixPath(chart).name),
                tuple(norm(str(x)) for x in layers),
                tuple(str(x) for x in overrides),
            )
        )
    return tuple(out)


def _helm_keys(raw: Any, where: str) -> HelmKeys:
    if raw is None:
        return HelmKeys()
    if not isinstance(raw, dict):
        raise ConfigError(f"{CONFIG_FILE}: {where}: expected {{replicas: KEY, tag: KEY}}")
    return HelmKeys(replicas=str(raw.get("replicas", "replicaCount")), tag=str(raw.get("tag", "image.tag")))


def _agent(raw: Any, where: str) -> AgentRef | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("kind") not in ("flux", "argocd"):
        raise ConfigError(f"{where}.agent: expected {{kind: flux|argocd, name: ..., namespace: ...}}")
    kind = str(raw["kind"])
    return AgentRef(
        kind=kind,
        name=str(raw.get("name", "")),
        namespace=str(raw.get("namespace", "flux-system" if kind == "flux" else "argocd")),
        cluster=str(raw.get("cluster", "")),
        object_kind=str(raw.get("object", "Kustomization" if kind == "flux" else "Application")),
    )


# ------------------------------------------------------------------------------------------ discovery


def env_sort_key(name: str) -> tuple[int, str]:
    """Known names in their usual order (`prod-eu` sorts as `prod`), unknown ones last by name."""
    for word in (name, *re.split(r"[-_.]", name)):
        if word.lower() in ENV_ORDER:
            return (ENV_ORDER.index(word.lower()), name)
    return (len(ENV_ORDER), name)


def env_of(*texts: str) -> str | None:
    """The first known env name in `texts` (whole words of paths and names), or None."""
    for text in texts:
        for word in re.split(r"[-_./]", text):
            w = re.sub(r"^values-|\.ya?ml$", "", word.lower())
            if w in ENV_ORDER:
                return w
    return None


def is_kustomize_dir(snap: Snapshot, directory: str) -> bool:
    return any(snap.exists(join(directory, f)) for f in KUSTOMIZATION_FILES)


def kustomization_file(snap: Snapshot, directory: str) -> str | None:
    for f in KUSTOMIZATION_FILES:
        p = join(directory, f)
        if snap.exists(p):
            return p
    return None


def discover(snap: Snapshot) -> RepoConfig:
    """Envs from the repo's GitOps objects, else folder conventions (see manifests/discovery.py)."""
    from opsbot.manifests.discovery import discover as _discover

    return _discover(snap)


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
        if env.charts:
            spec["charts"] = {
                c.values: ({"chart": c.chart} if c.chart else {})
                | {"name": c.name}
                | ({"layers": list(c.layers)} if c.layers else {})
                | ({"overrides": list(c.overrides)} if c.overrides else {})
                for c in env.charts
            }
        spec["approvals"] = (
            env.approvals if env.approvals else (1 if env_of(env.name) in PRODUCTION_NAMES else 0)
        )
        envs[env.name] = spec
    body = yaml.safe_dump({"environments": envs}, sort_keys=False, default_flow_style=False)
    header = (
        "# opsbot configuration, written by `opsbot init` from what discovery found.\n"
        "# Edit freely: environments (path or branch, promote_from, approvals, agent), apps (aliases),\n"
        "# clusters (path, templates). See docs/configuration.md.\n"
    )
    return header + body
