"""The fleet index of one commit: rows a command looks up by app, env and path instead of scanning.

Why: on a 20,000-manifest fleet, finding one app by walking every env root, and answering "which
other envs read this file" by computing every env's files, cost seconds per command, for every
command. Here each commit's answers are stored once as rows in opsbot's cache (`cachedb`, in the
repo's git dir), keyed by commit id, so a warm command reads the handful of rows its app needs:

=========  ========================  ==============================================================
kind       key                       value
=========  ========================  ==============================================================
config     ""                        the repo config the rows were built from
meta       ""                        {"envs": env names the rows cover, "format": FORMAT}
node       kustomize dir             the dir's `Kustomization` (what it reads, every path it names)
closure    root                      [dirs, files] that building the root reads
app        "<env>\\n<workload>"       [[root, file or null, doc index], ...] where the env defines it
readers    file                      roots (of covered envs) whose build reads the file
refby      path                      kustomize dirs that name the path (inverted `node.refs`)
incl       kustomize dir             roots whose closure includes the dir (inverted `closure`)
rootapps   root                      the `app` keys that have a hit in the root
=========  ========================  ==============================================================

A new commit is indexed from an earlier one (`git diff-tree`): only the dirs and roots a changed
path can affect are recomputed; every other row is copied. The inverted rows (refby, incl, readers,
rootapps) are what lets that update find the affected rows without reading the fleet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from opsbot.manifests.cachedb import CacheDB, FactsWriter
from opsbot.manifests.codec import CodecError, decode, encode
from opsbot.manifests.config import RepoConfig
from opsbot.manifests.kustomize import Kustomization

#: Bump when what a row means changes; rows of another format are not used.
FORMAT = 1

Hit = tuple[str, str | None, int]  # root, file (None for a Helm values root), document index


def app_key(env: str, workload: str) -> str:
    return f"{env}\n{workload}"


def node_to_json(node: Kustomization) -> dict[str, Any]:
    return {
        "file": node.file,
        "data": node.data,
        "children": node.children,
        "files": node.files,
        "patches": node.patches,
        "refs": node.refs,
    }


def node_from_json(directory: str, v: Any) -> Kustomization | None:
    """A stored node, or None if the row is not exactly the shape we write."""
    if not isinstance(v, dict) or set(v) != {"file", "data", "children", "files", "patches", "refs"}:
        return None
    if not (v["file"] is None or isinstance(v["file"], str)) or not isinstance(v["data"], dict):
        return None
    lists = [v[k] for k in ("children", "files", "patches", "refs")]
    if not all(isinstance(x, list) and all(isinstance(i, str) for i in x) for x in lists):
        return None
    return Kustomization(directory, v["file"], v["data"], *lists)


def _str_list(v: Any) -> list[str] | None:
    return v if isinstance(v, list) and all(isinstance(i, str) for i in v) else None


def closure_from_json(v: Any) -> tuple[list[str], list[str]] | None:
    if isinstance(v, list) and len(v) == 2:
        dirs, files = _str_list(v[0]), _str_list(v[1])
        if dirs is not None and files is not None:
            return dirs, files
    return None


def hits_from_json(v: Any) -> list[Hit] | None:
    if not isinstance(v, list):
        return None
    out: list[Hit] = []
    for h in v:
        if not (isinstance(h, list) and len(h) == 3 and isinstance(h[0], str)):
            return None
        if not (h[1] is None or isinstance(h[1], str)) or type(h[2]) is not int:
            return None
        out.append((h[0], h[1], h[2]))
    return out


@dataclass
class FleetRows:
    """Everything a full build computes for one commit, before it is stored."""

    envs: list[str]
    nodes: dict[str, Kustomization]
    closures: dict[str, tuple[list[str], list[str]]]
    apps: dict[str, list[Hit]]
    readers: dict[str, list[str]]


class StoredFleet:
    """Read side of one commit's rows (also the `StoredGraph` a `Graph` consults)."""

    def __init__(self, db: CacheDB, commit: str) -> None:
        self.db = db
        self.commit = commit
        self.envs: frozenset[str] = frozenset()

    def load_meta(self) -> bool:
        """True when the commit has a complete index of our format."""
        if not self.db.has_commit(self.commit):
            return False
        meta = self.db.get_facts(self.commit, "meta", [""]).get("")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            return False
        envs = _str_list(meta.get("envs"))
        if envs is None:
            return False
        self.envs = frozenset(envs)
        return True

    def config(self) -> RepoConfig | None:
        raw = self.db.get_facts(self.commit, "config", [""]).get("")
        if raw is None:
            return None
        try:
            cfg = decode(RepoConfig, raw)
        except CodecError:
            return None
        return cfg if isinstance(cfg, RepoConfig) else None

    def node(self, directory: str) -> Kustomization | None:
        return node_from_json(directory, self.db.get_facts(self.commit, "node", [directory]).get(directory))

    def closure(self, root: str) -> tuple[list[str], list[str]] | None:
        return closure_from_json(self.db.get_facts(self.commit, "closure", [root]).get(root))

    def app_hits(self, env: str, workload: str) -> list[Hit] | None:
        """Where the env defines the workload; None when the rows cannot say (the caller scans)."""
        key = app_key(env, workload)
        row = self.db.get_facts(self.commit, "app", [key]).get(key)
        return hits_from_json(row) if row is not None else self._absent()

    def readers(self, path: str) -> list[str] | None:
        """Roots whose build reads `path`; None when the rows cannot say (the caller scans)."""
        row = self.db.get_facts(self.commit, "readers", [path]).get(path)
        return _str_list(row) if row is not None else self._absent()

    def _absent(self) -> list[Any] | None:
        """A missing row means "none" only while the commit is still complete in the cache: a
        long-lived Index must not read "unknown app" from rows that were pruned under it."""
        return [] if self.db.has_commit(self.commit) else None

    # ------------------------------------------------------------------------------------ writing
    def store_nodes(self, nodes: Iterable[Kustomization]) -> None:
        self.db.put_facts(self.commit, "node", [(n.dir, node_to_json(n)) for n in nodes])

    def store_closures(self, closures: dict[str, tuple[list[str], list[str]]]) -> None:
        self.db.put_facts(self.commit, "closure", [(r, [d, f]) for r, (d, f) in closures.items()])

    def store_full(self, config: RepoConfig, rows: FleetRows, used: float) -> bool:
        """Write a complete index for the commit; False (and nothing marked) if it cannot be stored."""
        try:
            cfg = encode(config)
        except CodecError:
            return False
        refby: dict[str, list[str]] = {}
        for n in rows.nodes.values():
            for t in n.refs:
                refby.setdefault(t, []).append(n.dir)
        incl: dict[str, list[str]] = {}
        for root, (dirs, _) in rows.closures.items():
            for d in dirs:
                incl.setdefault(d, []).append(root)

        def fill(w: FactsWriter) -> None:
            w.put("config", [("", cfg)])
            w.put("node", [(n.dir, node_to_json(n)) for n in rows.nodes.values()], exact=False)
            w.put("closure", [(r, [d, f]) for r, (d, f) in rows.closures.items()])
            w.put("app", [(k, [list(h) for h in v]) for k, v in rows.apps.items()])
            w.put("rootapps", _rootapps(rows.apps).items())
            w.put("readers", rows.readers.items())
            w.put("refby", refby.items())
            w.put("incl", incl.items())
            w.put("meta", [("", {"envs": sorted(rows.envs), "format": FORMAT})])

        if not self.db.write_commit(self.commit, fill, used):
            return False
        self.envs = frozenset(rows.envs)
        return True

    # ------------------------------------------------------------------------------------ updates
    def facts(self, kind: str, keys: Iterable[str]) -> dict[str, Any]:
        return self.db.get_facts(self.commit, kind, keys)


def _rootapps(apps: dict[str, list[Hit]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, hits in apps.items():
        for root in dict.fromkeys(h[0] for h in hits):
            out.setdefault(root, []).append(key)
    return out


def ancestors(path: str) -> list[str]:
    """ "a/b/c" -> ["", "a", "a/b", "a/b/c"]: every dir a change to the path can concern, and itself."""
    parts = path.split("/")
    return ["", *("/".join(parts[:i]) for i in range(1, len(parts) + 1))]


class Overlay:
    """An earlier commit's graph rows minus those a change can concern (the `StoredGraph` of an update).

    A node is dropped when it is named as bad (a changed path is, or lies under, a path it names) or
    when a changed path lies under its dir (its kustomization, its generated listing).
    """

    def __init__(
        self, prev: StoredFleet, changed: list[str], bad_nodes: set[str], bad_roots: set[str]
    ) -> None:
        self.prev = prev
        self.changed = changed
        self.bad_nodes = bad_nodes
        self.bad_roots = bad_roots

    def _bad(self, directory: str) -> bool:
        if directory in self.bad_nodes or not directory:
            return True
        prefix = directory + "/"
        return any(p.startswith(prefix) for p in self.changed)

    def node(self, directory: str) -> Kustomization | None:
        return None if self._bad(directory) else self.prev.node(directory)

    def closure(self, root: str) -> tuple[list[str], list[str]] | None:
        return None if root in self.bad_roots else self.prev.closure(root)
