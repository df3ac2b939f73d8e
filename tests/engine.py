"""Helpers for engine tests: plan on a fixture repo, and render every env the way its agent would."""

from __future__ import annotations

from typing import Any

from commands import REGISTRY
from opsbot.core.model import Change
from opsbot.manifests.gitrepo import GitRepo
from opsbot.manifests.index import Index, _deep_merge
from opsbot.manifests.planner import Planner


def plan(repo: GitRepo, command: str, ref: str = "main") -> Change:
    _, intent = REGISTRY.parse(command)
    return Planner(repo, ref).plan(intent)


def render_env(index: Index, env_name: str) -> dict[str, Any]:
    """Every object (or merged Helm values) an env renders, keyed by root then object identity."""
    env = index.env(env_name)
    snap = index.env_snapshot(env)
    out: dict[str, Any] = {}
    for root in env.paths:
        kind = index.root_kind(snap, root)
        if kind == "helm":
            merged: dict[str, Any] = {}
            for f in [*index.helm_layers(env, snap, root), root]:
                docs = index.docs(snap, f)
                merged = _deep_merge(merged, docs[0] if docs and isinstance(docs[0], dict) else {})
            out[root] = merged
        elif kind == "kustomize":
            out[root] = {_ident(o): o for o in index.render(snap, root)}
        else:
            objs = []
            for f in index.graph(snap).closure(root)[1]:
                objs.extend(d for d in index.docs(snap, f) if isinstance(d, dict))
            out[root] = {_ident(o): o for o in objs}
    return out


def _ident(o: dict[str, Any]) -> str:
    m = o.get("metadata") or {}
    return f"{o.get('kind')}/{m.get('namespace', '')}/{m.get('name')}"


def apply_to_branch(repo: GitRepo, change: Change, branch: str) -> str:
    """Commit the change on a branch of the fixture repo (as the local forge would) and return its sha."""
    from opsbot.forge.local import LocalForge

    forge = LocalForge(repo.path)
    pr = forge.open_pr(change, branch, change.title + "\n", "", [])
    return pr.head_sha


def diffs(before: Any, after: Any, path: str = "") -> list[str]:
    """Dotted paths where two rendered structures differ."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[str] = []
        for k in sorted(set(before) | set(after), key=str):
            out += diffs(before.get(k), after.get(k), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        out = []
        for i, (a, b) in enumerate(zip(before, after, strict=True)):
            out += diffs(a, b, f"{path}[{i}]")
        return out
    return [] if before == after else [path]
