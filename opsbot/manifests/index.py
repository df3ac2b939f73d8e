"""Where an app lives in an env, and what it runs there now.

An env is one or more roots: kustomize dirs (also Flux-style dirs without kustomization.yaml, built
the way Flux builds them), plain manifest dirs, or Helm values files. Finding an app reads only the
files whose text mentions it, and builds only the root that holds it; all of it is cached per
commit, so a warm plan on a large fleet is one build.
"""

from __future__ import annotations

import difflib
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml

from opsbot.errors import CommandError
from opsbot.manifests import paths
from opsbot.manifests.codec import CodecError, decode, encode
from opsbot.manifests.config import CONFIG_FILE, EnvConfig, RepoConfig, is_kustomize_dir, load_config
from opsbot.manifests.gitrepo import GitRepo, Snapshot, join, norm
from opsbot.manifests.images import parse_image
from opsbot.manifests.kustomize import BuildError, Graph, Kustomization, build


class UnknownApp(CommandError):
    """No app of that name in the env: an answer about the name, not a fault of the repo."""


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Rollout", "HelmRelease")
HPA_KIND = "HorizontalPodAutoscaler"


@dataclass(frozen=True)
class SourceDoc:
    file: str
    doc: int
    data: dict[str, Any]


@dataclass
class Target:
    """One app in one env: where it is defined and how the env renders it."""

    app: str
    env: EnvConfig
    snap: Snapshot
    layout: str  # kustomize | plain | helm
    root: str
    kind: str
    name: str
    source: SourceDoc | None  # the workload's own document (kustomize/plain)
    rendered: dict[str, Any]  # as the env renders it (kustomize), the doc (plain), merged values (helm)
    objects: list[dict[str, Any]] = field(default_factory=list)  # full render of the root (kustomize)
    chain: list[str] = field(default_factory=list)  # kustomize dirs root -> the one holding the doc

    @property
    def is_helmrelease(self) -> bool:
        return self.kind == "HelmRelease"

    def values_from(self) -> list[tuple[str, dict[str, Any]]]:
        """A HelmRelease's `valuesFrom` ConfigMaps as this env renders them: (name, values), in order.

        Flux merges these first and `spec.values` over them, so what the release runs is both."""
        out: list[tuple[str, dict[str, Any]]] = []
        spec = self.rendered.get("spec") or {}
        ns = (self.rendered.get("metadata") or {}).get("namespace")
        for ref in spec.get("valuesFrom") or []:
            if not isinstance(ref, dict) or ref.get("kind") != "ConfigMap" or ref.get("targetPath"):
                continue
            for obj in self.objects:
                meta = obj.get("metadata") or {}
                if obj.get("kind") == "ConfigMap" and meta.get("name") == ref.get("name") and (
                    meta.get("namespace") == ns
                ):
                    text = (obj.get("data") or {}).get(str(ref.get("valuesKey") or "values.yaml"))
                    try:
                        values = yaml.safe_load(text) if isinstance(text, str) else None
                    except yaml.YAMLError:
                        values = None
                    if isinstance(values, dict):
                        out.append((str(ref["name"]), values))
        return out

    def values_layers(self) -> list[tuple[str, dict[str, Any]]]:
        """(where, values) that Flux merges under a HelmRelease's `spec.values`, in order: the
        chart's `valuesFiles` from this repo (a GitRepository source), then `valuesFrom` ConfigMaps."""
        out: list[tuple[str, dict[str, Any]]] = []
        chart = dig(self.rendered.get("spec") or {}, "chart.spec")
        source = chart.get("sourceRef") if isinstance(chart, dict) else None
        if isinstance(chart, dict) and isinstance(source, dict) and source.get("kind") == "GitRepository":
            files = chart.get("valuesFiles") or ([chart["valuesFile"]] if chart.get("valuesFile") else [])
            for f in files if isinstance(files, list) else []:
                path = norm(str(f))
                docs = self.snap.docs(path) if path and self.snap.exists(path) else []
                if docs and isinstance(docs[0], dict):
                    out.append((path, docs[0]))
        out += [(f"ConfigMap {name}", values) for name, values in self.values_from()]
        return out

    def helm_values(self, release: dict[str, Any] | None = None) -> dict[str, Any]:
        """The values a HelmRelease hands its chart: its values layers, then `spec.values` (of
        `release` when given: the same HelmRelease after an edit)."""
        merged: dict[str, Any] = {}
        for _, values in self.values_layers():
            merged = _deep_merge(merged, values)
        own = ((release or self.rendered).get("spec") or {}).get("values")
        return _deep_merge(merged, own if isinstance(own, dict) else {})

    def value_home(self, dotted: str) -> str | None:
        """Where `dotted` comes from when `spec.values` does not set it (a values file or
        "ConfigMap NAME"), else None."""
        if dig((self.rendered.get("spec") or {}).get("values") or {}, dotted) is not None:
            return None
        hits = [where for where, values in self.values_layers() if dig(values, dotted) is not None]
        return hits[-1] if hits else None

    def hpas(self) -> list[dict[str, Any]]:
        """Autoscalers whose scaleTargetRef names this workload (more than one is a repo bug)."""
        me = self.rendered.get("metadata", {}).get("name")
        out = []
        for obj in self.objects:
            if obj.get("kind") != HPA_KIND:
                continue
            ref = (obj.get("spec") or {}).get("scaleTargetRef") or {}
            if ref.get("kind") == self.kind and ref.get("name") == me:
                out.append(obj)
        return out

    def hpa(self) -> dict[str, Any] | None:
        found = self.hpas()
        if len(found) > 1:
            names = ", ".join(sorted(str(h["metadata"]["name"]) for h in found))
            raise CommandError(
                f"{self.app} in {self.env.name} is the target of {len(found)} HorizontalPodAutoscalers ({names}); "
                "they would fight over its replicas. Fix their scaleTargetRef in the repo first."
            )
        return found[0] if found else None


class Index:
    """Everything opsbot knows about one base commit (and the env branches it refers to)."""

    def __init__(
        self,
        repo: GitRepo,
        ref: str,
        env_refs: dict[str, str] | None = None,
        config: RepoConfig | None = None,
    ) -> None:
        """`config` reads an old commit with today's config and layout (history, rollback): the
        `.opsbot.yaml` of that commit may be missing or describe a layout that no longer exists."""
        self.repo = repo
        self.base_ref = ref
        #: per-env commit overrides for branch-per-env history (rollback reads older env branch tips)
        self.env_refs = env_refs or {}
        self.snap = repo.snapshot(ref)
        self._graphs: dict[str, Graph] = {}
        self._saved_nodes = -1
        #: an injected config is today's, not this commit's: it must never be cached under this commit
        self._borrowed_config = config is not None
        saved = self._load_state()
        self.config: RepoConfig = config if config is not None else (saved or load_config(self.snap))
        self._renders: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._lock = threading.RLock()

    # ---------------------------------------------------------------------------------- persistence
    def _load_state(self) -> RepoConfig | None:
        """A warm process re-uses the config and kustomize graph an earlier one built for this commit.

        The rows come from opsbot's SQLite cache (JSON, never code); a row that does not decode into
        exactly the shapes below makes the whole state count as absent.
        """
        db = self.repo.db
        sha = self.snap.sha
        if not db.has_commit(sha):
            return None
        try:
            config = decode(RepoConfig, db.get_facts(sha, "config", [""])[""])
            nodes = {d: _node_from_json(d, v) for d, v in db.get_facts(sha, "node").items()}
            closures = {r: _closure_from_json(v) for r, v in db.get_facts(sha, "closure").items()}
        except (KeyError, CodecError):
            return None
        graph = Graph(self.snap)
        graph.nodes, graph._closures, graph._prefetched = nodes, closures, True
        self._graphs[sha] = graph
        self._saved_nodes = len(nodes)
        return config if isinstance(config, RepoConfig) else None

    def persist(self) -> None:
        graph = self._graphs.get(self.snap.sha)
        if self._borrowed_config or graph is None or len(graph.nodes) <= self._saved_nodes:
            self.repo.cache.save()
            return
        db = self.repo.db
        sha = self.snap.sha
        try:
            config = encode(self.config)
        except CodecError:
            return
        db.put_facts(sha, "config", [("", config)])
        db.put_facts(sha, "node", [(d, _node_to_json(n)) for d, n in graph.nodes.items()])
        db.put_facts(sha, "closure", [(r, [dirs, files]) for r, (dirs, files) in graph._closures.items()])
        db.mark_commit(sha, time.time())
        self._saved_nodes = len(graph.nodes)
        self.repo.cache.save()

    # ---------------------------------------------------------------------------------- lookups
    def env(self, name: str) -> EnvConfig:
        if name in self.config.envs:
            return self.config.envs[name]
        names = self.config.env_names()
        if not names:
            raise CommandError(
                f'Unknown environment "{name}": no environments are configured or discovered in this repo. '
                f"Run `opsbot init` to write a {CONFIG_FILE}, or write one by hand (docs/configuration.md)."
            )
        near = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        hint = f' Did you mean "{near[0]}"?' if near else ""
        raise CommandError(f'Unknown environment "{name}".{hint} Environments: {", ".join(names)}.')

    def env_snapshot(self, env: EnvConfig) -> Snapshot:
        if env.name in self.env_refs:
            return self.repo.snapshot(self.env_refs[env.name])
        if env.branch:
            if not self.repo.has_branch(env.branch):
                raise CommandError(
                    f'Environment "{env.name}" lives on branch {env.branch}, which does not exist.'
                )
            return self.repo.snapshot(env.branch)
        return self.snap

    def graph(self, snap: Snapshot) -> Graph:
        with self._lock:
            if snap.sha not in self._graphs:
                self._graphs[snap.sha] = Graph(snap)
            return self._graphs[snap.sha]

    def docs(self, snap: Snapshot, path: str) -> list[Any]:
        return snap.docs(path)

    def render(self, snap: Snapshot, root: str) -> list[dict[str, Any]]:
        key = (snap.sha, root)
        with self._lock:
            if key not in self._renders:
                try:
                    self._renders[key] = build(
                        snap, self.graph(snap), root, allow_remote=self.config.kustomize_allow_remote
                    )
                except BuildError as exc:
                    raise CommandError(
                        f"kustomize build of {root} fails on the base commit: {exc.message}"
                    ) from None
            return self._renders[key]

    def root_kind(self, snap: Snapshot, root: str) -> str:
        paths.check_no_links(root, snap.links)
        if root.endswith((".yaml", ".yml")) and snap.exists(root):
            return "helm"
        if is_kustomize_dir(snap, root):
            return "kustomize"
        if not snap.is_dir(root):
            raise CommandError(f"{CONFIG_FILE}: path {root or '.'} does not exist in the repo.")
        graph = self.graph(snap)
        return "kustomize" if graph.node(root).children else "plain"

    def env_files(self, env: EnvConfig) -> set[str]:
        """Every file any root of `env` reads (for env isolation)."""
        snap = self.env_snapshot(env)
        out: set[str] = set()
        for root in env.paths:
            kind = self.root_kind(snap, root)
            if kind == "helm":
                out.add(root)
            else:
                out.update(self.graph(snap).closure(root)[1])
        return out

    def other_envs_reading(self, env: EnvConfig, path: str) -> list[str]:
        """Names of other envs (on the same branch) whose roots read `path`."""
        snap = self.env_snapshot(env)
        users = []
        for other in self.config.envs.values():
            if other.name == env.name or self.env_snapshot(other).sha != snap.sha:
                continue
            if path in self.env_files(other):
                users.append(other.name)
        return users

    # ---------------------------------------------------------------------------------- apps
    def find(self, app: str, env_name: str) -> Target:
        env = self.env(env_name)
        snap = self.env_snapshot(env)
        workload = self.config.workload_name(app)
        hits: list[Target] = []
        graph = self.graph(snap)
        snap.prefetch(
            f for root in env.paths if self.root_kind(snap, root) != "helm" for f in graph.closure(root)[1]
        )
        for root in env.paths:
            kind = self.root_kind(snap, root)
            if kind == "helm":
                t = self._find_helm(app, workload, env, snap, root)
                if t:
                    hits.append(t)
            else:
                hits.extend(self._find_in_dir(app, workload, env, snap, root, kind))
        if not hits:
            raise UnknownApp(self._unknown_app_message(app, env))
        if len(hits) > 1:
            where = ", ".join(f"{t.kind} in {t.source.file if t.source else t.root}" for t in hits)
            raise CommandError(
                f'App "{app}" is defined {len(hits)} times in {env.name}: {where}. '
                f"Pin one in {CONFIG_FILE} under apps: {app}: {{workload: NAME}} or narrow environments.{env.name}.path."
            )
        return hits[0]

    def _candidates(self, snap: Snapshot, files: Iterable[str], name: str) -> list[SourceDoc]:
        files = [f for f in files if f.endswith((".yaml", ".yml", ".json"))]
        snap.prefetch(files)
        out = []
        for f in files:
            if name not in snap.read(f):
                continue
            for i, d in enumerate(self.docs(snap, f)):
                if (
                    isinstance(d, dict)
                    and d.get("kind") in WORKLOAD_KINDS
                    and isinstance(d.get("metadata"), dict)
                    and d["metadata"].get("name") == name
                ):
                    out.append(SourceDoc(f, i, d))
        return out

    def _find_in_dir(
        self, app: str, name: str, env: EnvConfig, snap: Snapshot, root: str, kind: str
    ) -> list[Target]:
        graph = self.graph(snap)
        _, files = graph.closure(root)
        patches = graph.patch_files(root)
        sources = self._candidates(snap, [f for f in files if f not in patches], name)
        targets = []
        for src in sources:
            chain = graph.chain_to(root, src.file)
            if kind == "plain":
                targets.append(
                    Target(
                        app,
                        env,
                        snap,
                        "plain",
                        root,
                        src.data["kind"],
                        name,
                        src,
                        src.data,
                        objects=self._plain_docs(snap, files),
                        chain=chain,
                    )
                )
                continue
            objects = self.render(snap, root)
            rendered = _match_rendered(objects, src.data["kind"], name)
            if rendered is None:
                continue
            targets.append(
                Target(
                    app,
                    env,
                    snap,
                    "kustomize",
                    root,
                    src.data["kind"],
                    name,
                    src,
                    rendered,
                    objects=objects,
                    chain=chain,
                )
            )
        return targets

    def generated_from(self, t: Target, configmap: str) -> list[str]:
        """The files a `configMapGenerator` of the env builds ConfigMap `configmap` from (the
        rendered name may carry kustomize's hash suffix)."""
        graph = self.graph(t.snap)
        out: list[str] = []
        for d in graph.closure(t.root)[0]:
            for gen in graph.node(d).data.get("configMapGenerator") or []:
                if not isinstance(gen, dict) or not gen.get("name"):
                    continue
                name = str(gen["name"])
                if configmap != name and not re.fullmatch(re.escape(name) + r"-[a-z0-9]{10}", configmap):
                    continue
                for f in gen.get("files") or []:
                    if isinstance(f, str):
                        out.append(join(d, f.split("=", 1)[-1]))
        return out

    def _plain_docs(self, snap: Snapshot, files: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for f in files:
            out.extend(d for d in self.docs(snap, f) if isinstance(d, dict))
        return out

    def helm_chart(self, env: EnvConfig, snap: Snapshot, values_file: str) -> tuple[str, str]:
        """(chart folder or "" for a chart not in the repo, chart name) of a values file; the chart
        name is the app's name, in listings and in lookups alike."""
        vc = env.chart_of(values_file)
        chart_dir = vc.chart if vc else str(PurePosixPath(values_file).parent)
        name = vc.name if vc else PurePosixPath(chart_dir).name
        chart_file = join(chart_dir, "Chart.yaml")
        if chart_dir and snap.exists(chart_file):
            meta = self.docs(snap, chart_file)
            if meta and isinstance(meta[0], dict) and meta[0].get("name"):
                name = str(meta[0]["name"])
        return chart_dir, name

    def helm_layers(self, env: EnvConfig, snap: Snapshot, values_file: str) -> list[str]:
        """The values files Helm merges under `values_file`: the chart's defaults, then the files an
        Argo CD Application lists before it."""
        chart_dir = self.helm_chart(env, snap, values_file)[0]
        vc = env.chart_of(values_file)
        default_file = join(chart_dir, "values.yaml") if chart_dir else ""
        out = [default_file] if default_file and default_file != values_file else []
        out += list(vc.layers) if vc else []
        return [f for f in out if snap.exists(f)]

    def _find_helm(
        self, app: str, name: str, env: EnvConfig, snap: Snapshot, values_file: str
    ) -> Target | None:
        if self.helm_chart(env, snap, values_file)[1] != name:
            return None
        docs = self.docs(snap, values_file)
        values = docs[0] if docs and isinstance(docs[0], dict) else {}
        defaults: dict[str, Any] = {}
        for layer in self.helm_layers(env, snap, values_file):
            d = self.docs(snap, layer)
            defaults = _deep_merge(defaults, d[0] if d and isinstance(d[0], dict) else {})
        return Target(
            app,
            env,
            snap,
            "helm",
            values_file,
            "Chart",
            name,
            SourceDoc(values_file, 0, values),
            _deep_merge(defaults, values),
        )

    def _unknown_app_message(self, app: str, env: EnvConfig) -> str:
        known = self.apps_in(env)
        if app in known:
            return (
                f'"{app}" is defined in the files of {env.name}, but opsbot cannot match it to one object in '
                f"what {env.name} renders, so it will not change it. Run `opsbot check` to see the env's render."
            )
        aliases = self.aliases_in(env, known)
        near = difflib.get_close_matches(app, [*known, *aliases], n=1, cutoff=0.6)
        hint = f' Did you mean "{near[0]}"?' if near and near[0] != app else ""
        listing = ", ".join(known[:20]) + (" …" if len(known) > 20 else "")
        also = f" (aliases: {', '.join(f'{a} → {w}' for a, w in aliases.items())})" if aliases else ""
        return f'Unknown app "{app}" in {env.name}.{hint} Apps in {env.name}: {listing or "none found"}{also}.'

    def unknown_app(self, app: str) -> UnknownApp:
        """`app` is in no env at all: say so, with the nearest name and every app there is."""
        known = sorted({a for env in self.config.envs.values() for a in self.apps_in(env)})
        near = difflib.get_close_matches(app, known, n=1, cutoff=0.6)
        hint = f' Did you mean "{near[0]}"?' if near else ""
        listing = ", ".join(known[:20]) + (" …" if len(known) > 20 else "")
        return UnknownApp(f'Unknown app "{app}".{hint} Apps: {listing or "none found"}.')

    def apps_in(self, env: EnvConfig) -> list[str]:
        snap = self.env_snapshot(env)
        names: set[str] = set()
        for root in env.paths:
            kind = self.root_kind(snap, root)
            if kind == "helm":
                names.add(self.helm_chart(env, snap, root)[1])
                continue
            patches = self.graph(snap).patch_files(root)
            files = [
                f
                for f in self.graph(snap).closure(root)[1]
                if f.endswith((".yaml", ".yml")) and f not in patches
            ]
            snap.prefetch(files)
            for f in files:
                if "kind:" not in snap.read(f):
                    continue
                for d in self.docs(snap, f):
                    if isinstance(d, dict) and d.get("kind") in WORKLOAD_KINDS:
                        n = (d.get("metadata") or {}).get("name")
                        if n:
                            names.add(str(n))
        return sorted(names)

    def aliases_in(self, env: EnvConfig, apps: list[str] | None = None) -> dict[str, str]:
        """`.opsbot.yaml` aliases (alias -> workload) that name an app of `env`; not apps themselves."""
        known = set(self.apps_in(env) if apps is None else apps)
        return {a: c.workload for a, c in sorted(self.config.apps.items()) if c.workload in known and a != c.workload}


def _node_to_json(node: Kustomization) -> dict[str, Any]:
    return {
        "file": node.file,
        "data": node.data,
        "children": node.children,
        "files": node.files,
        "patches": node.patches,
    }


def _node_from_json(directory: str, v: Any) -> Kustomization:
    node = decode(Kustomization, {"dir": directory, **v} if isinstance(v, dict) else v)
    if not isinstance(node, Kustomization):
        raise CodecError("not a kustomization")
    return node


def _closure_from_json(v: Any) -> tuple[list[str], list[str]]:
    dirs, files = decode(tuple[list[str], list[str]], v)
    return dirs, files


def _match_rendered(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    exact = [o for o in objects if o.get("kind") == kind and (o.get("metadata") or {}).get("name") == name]
    if len(exact) == 1:
        return exact[0]
    fuzzy = [
        o for o in objects if o.get("kind") == kind and name in str((o.get("metadata") or {}).get("name", ""))
    ]
    return fuzzy[0] if len(fuzzy) == 1 else None


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dig(data: Any, dotted: str | list[str]) -> Any:
    for key in dotted.split(".") if isinstance(dotted, str) else dotted:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


# ---------------------------------------------------------------------------------------- versions


@dataclass(frozen=True)
class Version:
    """What an app runs in an env: its images by container, or its chart version and image tag."""

    images: tuple[tuple[str, str], ...] = ()  # (container, image ref)
    chart: str | None = None  # HelmRelease chart version
    tag: str | None = None  # Helm values image tag / HelmRelease values image tag

    def primary_tag(self, app: str) -> str | None:
        if self.chart:
            return self.chart
        if self.tag:
            return self.tag
        c = primary_container(self.images, app)
        return parse_image(c[1]).tag if c else None

    def describe(self) -> str:
        if self.chart:
            return f"chart {self.chart}" + (f", image {self.tag}" if self.tag else "")
        if self.tag:
            return self.tag
        return ", ".join(img for _, img in self.images)


def primary_container(images: tuple[tuple[str, str], ...], app: str) -> tuple[str, str] | None:
    if not images:
        return None
    for c, img in images:
        if c == app:
            return (c, img)
    for c, img in images:
        if parse_image(img).name.rsplit("/", 1)[-1] == app:
            return (c, img)
    return images[0]


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    return [c for c in (pod.get("containers") or []) if isinstance(c, dict)]


def current_version(t: Target, helm_tag_key: str) -> Version:
    if t.layout == "helm":
        tag = dig(t.rendered, helm_tag_key)
        return Version(tag=None if tag is None else str(tag))
    if t.is_helmrelease:
        spec = t.rendered.get("spec") or {}
        chart = dig(spec, "chart.spec.version")
        source = chart_source(t)
        if source is not None:
            chart = dig(source[0], source[1])
        tag = dig(t.helm_values(), helm_tag_key)
        return Version(chart=None if chart is None else str(chart), tag=None if tag is None else str(tag))
    return Version(images=tuple((str(c.get("name")), str(c.get("image"))) for c in containers(t.rendered)))


def chart_source(t: Target) -> tuple[dict[str, Any], list[str]] | None:
    """For a HelmRelease with `chartRef`: the OCIRepository/HelmChart it points at (as this env renders
    it) and the path of the field that holds the chart version there; None without chartRef.

    Why: with chartRef the version is not on the release at all, so reading or writing
    `spec.chart.spec.version` there would be wrong (and invalid beside chartRef)."""
    ref = (t.rendered.get("spec") or {}).get("chartRef")
    if not isinstance(ref, dict):
        return None
    kind, name = ref.get("kind"), ref.get("name")
    ns = ref.get("namespace") or (t.rendered.get("metadata") or {}).get("namespace")
    for obj in t.objects:
        meta = obj.get("metadata") or {}
        if obj.get("kind") == kind and meta.get("name") == name and (meta.get("namespace") or ns) == ns:
            spec = obj.get("spec") or {}
            if kind == "OCIRepository":
                r = spec.get("ref") or {}
                return obj, ["spec", "ref", "semver" if "semver" in r else "tag"]
            return obj, ["spec", "version"]
    return {}, ["spec", "version"]


def current_replicas(t: Target, helm_replicas_key: str) -> int | None:
    if t.layout == "helm":
        v = dig(t.rendered, helm_replicas_key)
    elif t.is_helmrelease:
        v = dig(t.helm_values(), helm_replicas_key)
    else:
        v = (t.rendered.get("spec") or {}).get("replicas")
        if v is None and t.kind in ("Deployment", "StatefulSet", "Rollout"):
            return 1  # the API server's default
    return v if isinstance(v, int) else None
