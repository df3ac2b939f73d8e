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
from opsbot.manifests.cachedb import FactsWriter
from opsbot.manifests.config import CONFIG_FILE, EnvConfig, RepoConfig, is_kustomize_dir, load_config
from opsbot.manifests.fleet import (
    FORMAT,
    FleetRows,
    Hit,
    Overlay,
    StoredFleet,
    _rootapps,
    ancestors,
    app_key,
    closure_from_json,
    hits_from_json,
    node_to_json,
)
from opsbot.manifests.gitrepo import GitError, GitRepo, Snapshot, git, join, norm
from opsbot.manifests.images import parse_image
from opsbot.manifests.kustomize import BuildError, Graph, build


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
    """Everything opsbot knows about one base commit (and the env branches it refers to).

    Lookups by app and by file go through the commit's fleet index (`fleet`): built once per commit
    (from an earlier commit's rows where possible) and stored, so later commands and processes read
    only their app's rows. `index_fleet=False` (history walks over many old commits) builds none and
    scans as before, using stored rows only when some earlier command left them.
    """

    def __init__(
        self,
        repo: GitRepo,
        ref: str,
        env_refs: dict[str, str] | None = None,
        config: RepoConfig | None = None,
        *,
        index_fleet: bool = True,
    ) -> None:
        """`config` reads an old commit with today's config and layout (history, rollback): the
        `.opsbot.yaml` of that commit may be missing or describe a layout that no longer exists.
        Such an Index neither reads nor writes the commit's fleet rows (they follow its own config)."""
        self.repo = repo
        self.base_ref = ref
        #: per-env commit overrides for branch-per-env history (rollback reads older env branch tips)
        self.env_refs = env_refs or {}
        self.snap = repo.snapshot(ref)
        self._graphs: dict[str, Graph] = {}
        self._stored = StoredFleet(repo.db, self.snap.sha)
        #: an injected config is today's, not this commit's: it must never be cached under this commit
        self._borrowed_config = config is not None
        self._index_fleet = index_fleet and config is None
        stored_config = None
        if config is None and self._stored.load_meta():
            stored_config = self._stored.config()
        if stored_config is not None and index_fleet:
            repo.db.touch_commit(self.snap.sha, time.time())  # pruning keeps what is in use
        #: None: not decided yet; True: the stored rows answer lookups; False: scan
        self._fleet_ready: bool | None = True if stored_config is not None else None
        if config is not None:
            self._fleet_ready = False
        #: where the fleet rows came from: stored | update | full | "" (none yet)
        self.fleet_source = "stored" if stored_config is not None else ""
        self.config: RepoConfig = config if config is not None else (stored_config or load_config(self.snap))
        self._renders: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._lock = threading.RLock()

    # ---------------------------------------------------------------------------------- persistence
    def persist(self) -> None:
        """Store what this process computed (kustomize nodes and closures, parsed files) for the next."""
        graph = self._graphs.get(self.snap.sha)
        if graph is not None:
            with self._lock:
                nodes = [graph.nodes[d] for d in graph.fresh_nodes if d in graph.nodes]
                closures = {r: graph._closures[r] for r in graph.fresh_closures if r in graph._closures}
                graph.fresh_nodes.clear()
                graph.fresh_closures.clear()
            self._stored.store_nodes(nodes)
            self._stored.store_closures(closures)
        self.repo.cache.save()

    def fleet(self) -> StoredFleet | None:
        """The commit's stored fleet index, built now if this Index may build one; None to scan."""
        with self._lock:
            if self._fleet_ready is None:
                self._fleet_ready = self._index_fleet and self._build_fleet()
            return self._stored if self._fleet_ready else None

    def _build_fleet(self) -> bool:
        return self._update_fleet() or self._full_fleet()

    #: above this many changed paths, indexing the commit afresh is simpler than an update
    MAX_UPDATE_PATHS = 400

    def _update_fleet(self) -> bool:
        """Index this commit from the most recently used indexed one: `git diff-tree` names the
        changed paths, the inverted rows name the kustomize dirs and roots those can concern, only
        those are recomputed, and every other row is copied."""
        db, snap = self.repo.db, self.snap
        prev_sha = next((c for c in db.recent_commits(1) if c != snap.sha), None)
        if prev_sha is None:
            return False
        prev = StoredFleet(db, prev_sha)
        if not prev.load_meta() or prev.config() != self.config:
            return False
        try:
            out = git(
                self.repo.path, "diff-tree", "-r", "--no-renames", "--name-only", "-z", prev_sha, snap.sha
            )
        except GitError:
            return False
        changed = sorted({p for p in out.split("\0") if p})
        if len(changed) > self.MAX_UPDATE_PATHS:
            return False
        on_snap = [e for e in self.config.envs.values() if self._on_snap(e)]
        if sorted(e.name for e in on_snap) != sorted(prev.envs):
            return False  # an env that was broken (or moved branch): index afresh

        keys = sorted({a for p in changed for a in ancestors(p)})
        bad_nodes = {d for dirs in prev.facts("refby", keys).values() for d in dirs}
        incl = prev.facts("incl", sorted(set(keys) | bad_nodes))
        bad_roots = {r for roots in incl.values() for r in roots}
        bad_roots |= {r for roots in prev.facts("readers", changed).values() for r in roots}
        chart_dirs = {str(PurePosixPath(p).parent) for p in changed if PurePosixPath(p).name == "Chart.yaml"}
        for env in on_snap:  # a Helm root's app is named by its Chart.yaml, which no build reads
            bad_roots |= {r for r in env.paths if r.endswith((".yaml", ".yml")) and _chart_dir(env, r) in chart_dirs}

        graph = Graph(snap, Overlay(prev, changed, bad_nodes, bad_roots))
        with self._lock:
            self._graphs[snap.sha] = graph
        old_closures = {r: closure_from_json(v) for r, v in prev.facts("closure", sorted(bad_roots)).items()}
        new_apps: dict[str, list[Hit]] = {}
        new_reads: dict[str, list[str]] = {}
        for env in on_snap:
            for root in env.paths:
                if root in bad_roots:
                    kind = self.root_kind(snap, root)
                    names, reads = self._root_rows(env, snap, root, kind)
                    for name, hit in names:
                        new_apps.setdefault(app_key(env.name, name), []).append(hit)
                    new_reads[root] = reads
        rootapps = prev.facts("rootapps", sorted(bad_roots))
        app_keys = sorted({k for ks in rootapps.values() for k in ks} | set(new_apps))
        apps: dict[str, list[Hit]] = {}
        for key, raw in prev.facts("app", app_keys).items():
            hits = hits_from_json(raw)
            if hits is None:
                return False
            kept = [h for h in hits if h[0] not in bad_roots]
            if kept:
                apps[key] = kept
        for key, hits in new_apps.items():
            apps.setdefault(key, []).extend(hits)
        old_files = {f for c in old_closures.values() if c for f in c[1]} | {
            r for r in bad_roots if r.endswith((".yaml", ".yml"))
        }
        touched = sorted(old_files | {f for fs in new_reads.values() for f in fs})
        readers: dict[str, list[str]] = {}
        prev_readers = prev.facts("readers", touched)
        for f in touched:
            users = [r for r in prev_readers.get(f, []) if r not in bad_roots]
            users += [r for r, fs in new_reads.items() if f in fs and r not in users]
            readers[f] = users
        new_closures = {r: graph.closure(r) for r in new_reads if self.root_kind(snap, r) != "helm"}
        dirs_touched = sorted(
            {d for c in old_closures.values() if c for d in c[0]}
            | {d for c in new_closures.values() for d in c[0]}
        )
        prev_incl = prev.facts("incl", dirs_touched)
        new_incl = {}
        for d in dirs_touched:
            users = [r for r in prev_incl.get(d, []) if r not in bad_roots]
            users += [r for r, c in new_closures.items() if d in c[0] and r not in users]
            new_incl[d] = users
        fresh = {d: graph.nodes[d] for d in graph.fresh_nodes if d in graph.nodes}
        dropped = {d for d in set(fresh) | bad_nodes}
        old_refs = {d: n.refs for d in dropped if (n := prev.node(d)) is not None}
        targets = sorted(
            {t for refs in old_refs.values() for t in refs} | {t for n in fresh.values() for t in n.refs}
        )
        prev_refby = prev.facts("refby", targets)
        refby = {}
        for t in targets:
            users = [d for d in prev_refby.get(t, []) if d not in dropped]
            users += [d for d, n in fresh.items() if t in n.refs and d not in users]
            refby[t] = users
        cfg = prev.facts("config", [""])[""]
        meta = {"envs": sorted(prev.envs), "format": FORMAT}

        def fill(w: FactsWriter) -> None:
            w.put("config", [("", cfg)])
            w.copy_from(prev_sha, "node", dropped | {d for d in keys})
            w.put("node", [(d, node_to_json(n)) for d, n in fresh.items()], exact=False)
            w.copy_from(prev_sha, "closure", bad_roots)
            w.put("closure", [(r, [d, f]) for r, (d, f) in new_closures.items()])
            w.copy_from(prev_sha, "app", app_keys)
            w.put("app", [(k, [list(h) for h in v]) for k, v in apps.items()])
            w.copy_from(prev_sha, "rootapps", bad_roots)
            w.put("rootapps", _rootapps(new_apps).items())
            w.copy_from(prev_sha, "readers", touched)
            w.put("readers", [(f, u) for f, u in readers.items() if u])
            w.copy_from(prev_sha, "incl", dirs_touched)
            w.put("incl", [(d, u) for d, u in new_incl.items() if u])
            w.copy_from(prev_sha, "refby", targets)
            w.put("refby", [(t, u) for t, u in refby.items() if u])
            w.put("meta", [("", meta)])

        if not db.write_commit(snap.sha, fill, time.time()):
            return False
        graph.fresh_nodes.clear()
        graph.fresh_closures.clear()
        self._stored.envs = frozenset(prev.envs)
        self.fleet_source = "update"
        return True

    def _on_snap(self, env: EnvConfig) -> bool:
        try:
            return self.env_snapshot(env).sha == self.snap.sha
        except CommandError:
            return False

    def _full_fleet(self) -> bool:
        snap = self.snap
        graph = self.graph(snap)
        graph.prefetch_kustomizations()
        per_env: list[tuple[EnvConfig, list[tuple[str, str]]]] = []
        for env in self.config.envs.values():
            try:
                if self.env_snapshot(env).sha != snap.sha:
                    continue  # another branch: its lookups scan that branch's snapshot
                kinds = [(root, self.root_kind(snap, root)) for root in env.paths]
                for root, kind in kinds:
                    if kind != "helm":
                        graph.closure(root)
                per_env.append((env, kinds))
            except CommandError:
                continue  # a broken env: its lookups scan and report the problem as before
        snap.prefetch(
            f
            for _, kinds in per_env
            for root, kind in kinds
            if kind != "helm"
            for f in graph.closure(root)[1]
        )
        apps: dict[str, list[Hit]] = {}
        readers: dict[str, list[str]] = {}
        for env, kinds in per_env:
            for root, kind in kinds:
                names, reads = self._root_rows(env, snap, root, kind)
                for name, hit in names:
                    apps.setdefault(app_key(env.name, name), []).append(hit)
                for f in reads:
                    users = readers.setdefault(f, [])
                    if root not in users:
                        users.append(root)
        rows = FleetRows(
            [env.name for env, _ in per_env], dict(graph.nodes), dict(graph._closures), apps, readers
        )
        if not self._stored.store_full(self.config, rows, time.time()):
            return False
        graph.fresh_nodes.clear()
        graph.fresh_closures.clear()
        self.repo.cache.save()
        self.fleet_source = "full"
        return True

    def _root_rows(
        self, env: EnvConfig, snap: Snapshot, root: str, kind: str
    ) -> tuple[list[tuple[str, Hit]], list[str]]:
        """(workload name, hit) for every workload document the root defines, and the files it reads."""
        if kind == "helm":
            return [(self.helm_chart(env, snap, root)[1], (root, None, 0))], [root]
        graph = self.graph(snap)
        _, files = graph.closure(root)
        patches = graph.patch_files(root)
        out: list[tuple[str, Hit]] = []
        for f in files:
            if f in patches or not f.endswith((".yaml", ".yml", ".json")):
                continue
            text = snap.read(f)
            if not any(k in text for k in WORKLOAD_KINDS):
                continue
            for i, d in enumerate(self.docs(snap, f)):
                if (
                    isinstance(d, dict)
                    and d.get("kind") in WORKLOAD_KINDS
                    and isinstance(d.get("metadata"), dict)
                ):
                    name = d["metadata"].get("name")
                    if isinstance(name, str) and name in text:
                        out.append((name, (root, f, i)))
        return out, files

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
                graph = Graph(snap, self._stored if snap.sha == self.snap.sha else None)
                # Without this commit's rows (a cold or history-walking Index), reading every
                # kustomization in one pipe round trip beats one round trip per node.
                graph._prefetched = self._fleet_ready is True and snap.sha == self.snap.sha
                self._graphs[snap.sha] = graph
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
        others = [
            o
            for o in self.config.envs.values()
            if o.name != env.name and self.env_snapshot(o).sha == snap.sha
        ]
        fleet = self.fleet() if snap.sha == self.snap.sha else None
        if fleet is not None and all(o.name in fleet.envs for o in others):
            roots = fleet.readers(path)
            if roots is not None:
                return [o.name for o in others if any(r in roots for r in o.paths)]
        return [o.name for o in others if path in self.env_files(o)]

    # ---------------------------------------------------------------------------------- apps
    def find(self, app: str, env_name: str) -> Target:
        env = self.env(env_name)
        snap = self.env_snapshot(env)
        workload = self.config.workload_name(app)
        fleet = self.fleet() if snap.sha == self.snap.sha else None
        found = fleet.app_hits(env.name, workload) if fleet is not None and env.name in fleet.envs else None
        if found is not None:
            return self._one(app, env, self._find_indexed(app, workload, env, snap, found))
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
        return self._one(app, env, hits)

    def _find_indexed(
        self, app: str, workload: str, env: EnvConfig, snap: Snapshot, found: list[Hit]
    ) -> list[Target]:
        """The scan of `find`, over only the roots and files the fleet index names for the workload."""
        by_root: dict[str, list[str]] = {}
        for root, file, _ in found:
            files = by_root.setdefault(root, [])
            if file is not None and file not in files:
                files.append(file)
        hits: list[Target] = []
        for root in env.paths:
            if root not in by_root:
                continue
            kind = self.root_kind(snap, root)
            if kind == "helm":
                t = self._find_helm(app, workload, env, snap, root)
                if t:
                    hits.append(t)
            else:
                hits.extend(self._find_in_dir(app, workload, env, snap, root, kind, only=by_root[root]))
        return hits

    def _one(self, app: str, env: EnvConfig, hits: list[Target]) -> Target:
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
        self,
        app: str,
        name: str,
        env: EnvConfig,
        snap: Snapshot,
        root: str,
        kind: str,
        only: list[str] | None = None,
    ) -> list[Target]:
        graph = self.graph(snap)
        _, files = graph.closure(root)
        patches = graph.patch_files(root)
        sources = self._candidates(
            snap, [f for f in (files if only is None else only) if f not in patches], name
        )
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


def _chart_dir(env: EnvConfig, values_file: str) -> str:
    """Where the chart of a Helm values root lives (as `Index.helm_chart` finds it), without reading."""
    vc = env.chart_of(values_file)
    return vc.chart if vc else str(PurePosixPath(values_file).parent)


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
