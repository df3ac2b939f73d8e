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
from opsbot.manifests.gitrepo import Snapshot, join
from opsbot.manifests.paths import is_name
from opsbot.policy.model import Gate, Window
from opsbot.policy.rules import parse_gate, parse_window

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

    #: Deploy windows (Argo CD sync-window shape), metric gates and auto-revert: see docs/policies.md.
    windows: tuple[Window, ...] = ()
    gates: tuple[Gate, ...] = ()
    auto_revert: bool = False

    def chart_of(self, values_file: str) -> ValuesChart | None:
        return next((c for c in self.charts if c.values == values_file), None)


@dataclass(frozen=True)
class HelmKeys:
    """Where a chart's values keep replicas and the image tag (dotted paths)."""

    replicas: str = "replicaCount"
    tag: str = "image.tag"
    #: True when .opsbot.yaml names the replicas key; else opsbot finds it by rendering the chart.
    replicas_pinned: bool = False


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
    "windows",
    "gates",
    "auto_revert",
}
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
        windows_raw = spec.get("windows") or []
        gates_raw = spec.get("gates") or []
        if not isinstance(windows_raw, list):
            raise ConfigError(f"{where}.windows: expected a list of windows")
        if not isinstance(gates_raw, list):
            raise ConfigError(f"{where}.gates: expected a list of gates")
        auto_revert = spec.get("auto_revert", False)
        if not isinstance(auto_revert, bool):
            raise ConfigError(f"{where}.auto_revert: expected true or false")
        envs[str(name)] = EnvConfig(
            name=str(name),
            windows=tuple(parse_window(w, f"{where}.windows[{i}]") for i, w in enumerate(windows_raw)),
            gates=tuple(parse_gate(g, f"{where}.gates[{i}]") for i, g in enumerate(gates_raw)),
            auto_revert=auto_revert,
            paths=env_paths,
            branch=_text(spec["branch"], f"{where}.branch") if spec.get("branch") else None,
            promote_from=_text(spec["promote_from"], f"{where}.promote_from") if spec.get("promote_from") else None,
            approvals=approvals,
            agent=_agent(spec.get("agent"), where),
            protected=_flag(spec.get("protected", False), f"{where}.protected"),
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
        values_path = paths.repo_path(_text(values, f"{where}.charts"), f"{where}.charts")
        chart = (
            paths.repo_path(_text(spec["chart"], f"{where}.charts.{values}.chart"), f"{where}.charts.{values}.chart")
            if spec.get("chart")
            else ""
        )
        name = _text(spec["name"], f"{where}.charts.{values}.name") if spec.get("name") else PurePosixPath(chart).name
        layers, overrides = spec.get("layers") or [], spec.get("overrides") or []
        if not isinstance(layers, list) or not isinstance(overrides, list):
            raise ConfigError(f"{where}.charts.{values}: layers and overrides are lists")
        out.append(
            ValuesChart(
                values_path,
                chart,
                name,
                tuple(paths.repo_path(_text(x, f"{where}.charts.{values}.layers"), f"{where}.charts") for x in layers),
                tuple(_text(x, f"{where}.charts.{values}.overrides") for x in overrides),
            )
        )
    return tuple(out)


def _helm_keys(raw: Any, where: str) -> HelmKeys:
    if raw is None:
        return HelmKeys()
    if not isinstance(raw, dict):
        raise ConfigError(f"{CONFIG_FILE}: {where}: expected {{replicas: KEY, tag: KEY}}")
    return HelmKeys(
        replicas=_text(raw.get("replicas", "replicaCount"), f"{CONFIG_FILE}: {where}.replicas"),
        tag=_text(raw.get("tag", "image.tag"), f"{CONFIG_FILE}: {where}.tag"),
        replicas_pinned="replicas" in raw,
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
