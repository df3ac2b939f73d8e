"""Which envs a repo has, where each lives, and the order changes move through them.

The GitOps objects in the repo (Argo CD Applications and ApplicationSets of an app-of-apps, Flux
Kustomizations, Kargo Stages) are the map the clusters themselves follow, so they are read first;
folder conventions (`overlays/<env>`, `envs/<env>`, `<env>/`, `values-<env>.yaml` beside a chart, …)
fill in where no object says anything. Where the two disagree, or nothing is found, discovery says
what it saw rather than guess: a wrong env map makes every later change look valid and be wrong.
"""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any

import yaml

from opsbot.errors import ConfigError
from opsbot.manifests import safeyaml
from opsbot.manifests.config import (
    CONFIG_FILE,
    ENV_WORDS,
    EnvConfig,
    RepoConfig,
    ValuesChart,
    env_of,
    env_sort_key,
    is_kustomize_dir,
)
from opsbot.manifests.gitrepo import Snapshot, join, norm
from opsbot.manifests.paths import escapes, is_name, normalise
from opsbot.manifests.yamledit import load_all

#: Rules that read GitOps objects; the rest are folder conventions.
GITOPS_RULES = frozenset({"flux clusters", "flux Kustomization", "argo cd Application"})

_OVERLAY = re.compile(r"(?:^|/)overlays/([^/]+)/kustomization\.ya?ml$")
_ENVS_DIR = re.compile(r"(?:^|/)(?:envs|environments|env)/([^/]+)/kustomization\.ya?ml$")
_ENV_FOLDER = re.compile(r"^(?:(.*)/)?([^/]+)/kustomization\.ya?ml$")
_VALUES = re.compile(r"(?:^|/)values[-.]([A-Za-z0-9_-]+)\.ya?ml$")
_FLUX_CLUSTER = re.compile(r"^clusters/([^/]+)/")
_WORKLOAD_HINT = re.compile(r"^kind:\s*(Deployment|StatefulSet|DaemonSet|Rollout|HelmRelease)\s*$", re.M)
_MARKERS = ("kustomize.toolkit.fluxcd.io", "helm.toolkit.fluxcd.io", "argoproj.io", "kargo.akuity.io")
#: Reading every YAML file of a 20,000-file fleet for GitOps objects would cost seconds; past this many
#: candidates only files in the folders such objects usually live in are read.
_MAX_SCAN = 3000
_GITOPS_DIRS = (
    "clusters",
    "argocd",
    "argo",
    "argo-cd",
    "applications",
    "applicationsets",
    "appsets",
    "bootstrap",
    "kargo",
    "flux",
    "gitops",
)
_TEMPLATE_VAR = re.compile(r"\{\{-?\s*\.?(?:values\.)?([A-Za-z0-9_.\[\]-]+?)\s*-?\}\}")


@dataclass
class Found:
    """Everything discovery saw, also when it cannot make a config of it (`opsbot init` shows it)."""

    rules: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # env -> rule -> roots
    charts: dict[str, dict[str, ValuesChart]] = field(default_factory=dict)  # env -> values file -> chart
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (earlier, later, said by)
    promote_from: dict[str, str] = field(default_factory=dict)  # explicit, from Kargo
    notes: list[str] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)  # Argo CD Applications that name no env
    #: values files a Flux HelmRelease reads through its chart's valuesFiles: part of that release,
    #: not an env of their own even when named values-<env>.yaml beside the chart
    claimed: set[str] = field(default_factory=set)
    kustomize_dirs: list[str] = field(default_factory=list)  # for the skeleton
    chart_dirs: list[str] = field(default_factory=list)

    def add(self, env: str, rule: str, path: str) -> None:
        # A folder named with control characters is not an env anyone types, and a path a repo object
        # names outside the repo is no env root (paths.py: nothing leaves the repo).
        if not is_name(env) or escapes(normalise(path)):
            return
        paths = self.rules.setdefault(env, {}).setdefault(rule, [])
        if path not in paths:
            paths.append(path)


def discover(snap: Snapshot) -> RepoConfig:
    """Envs from the repo's GitOps objects, else from folder conventions; ConfigError when undecidable."""
    found = scan(snap)
    if not found.rules:
        raise ConfigError(
            "No environments found. Looked for Argo CD Applications/ApplicationSets and Flux Kustomizations "
            "in the repo, overlays/<env>/ and envs/<env>/ kustomizations, <env>/ folders, apps/<env>/, "
            "values-<env>.yaml beside Chart.yaml, Flux clusters/<env>/ and <env>/ folders of plain manifests. "
            f"Run `opsbot init` to write a {CONFIG_FILE} (a skeleton of what it found), or write one by hand "
            "(docs/configuration.md)."
        )
    envs: dict[str, EnvConfig] = {}
    for name, rules in found.rules.items():
        gitops = {p for r, ps in rules.items() if r in GITOPS_RULES for p in ps}
        folders = {p for r, ps in rules.items() if r not in GITOPS_RULES for p in ps}
        if gitops and folders and not (gitops <= folders or folders <= gitops):
            cand = "; ".join(f"{r}: {', '.join(ps)}" for r, ps in rules.items())
            first = next(p for r, ps in rules.items() if r in GITOPS_RULES for p in ps)
            raise ConfigError(
                f"Environment {name!r} is ambiguous: {cand}. Pin it in {CONFIG_FILE}, e.g.\n"
                f"environments:\n  {name}:\n    path: {first}"
            )
        paths: list[str] = []
        for ps in rules.values():
            paths.extend(p for p in ps if p not in paths)
        charts = tuple(found.charts.get(name, {}).values())
        envs[name] = EnvConfig(name=name, paths=tuple(paths), found_by=", ".join(rules), charts=charts)
    order, notes = env_order(list(envs), found.edges)
    ordered: dict[str, EnvConfig] = {}
    for i, n in enumerate(order):
        src = found.promote_from.get(n)
        explicit = n in found.promote_from and (not src or src in envs)
        if not explicit:  # nothing said, or a Kargo source named unlike any env: the order decides
            src = order[i - 1] if i > 0 else None
        ordered[n] = replace(envs[n], promote_from=src or None)
    return RepoConfig(envs=ordered, notes=tuple(found.notes + notes))


def env_order(names: list[str], edges: Iterable[tuple[str, str, str]]) -> tuple[list[str], list[str]]:
    """Names in promotion order: what the repo says (edges) first, the usual order of names second."""
    base = sorted(names, key=env_sort_key)
    after: dict[str, set[str]] = {n: set() for n in names}
    said: list[str] = []
    for a, b, who in edges:
        if a in after and b in after and a != b:
            after[b].add(a)
            said.append(who)
    out: list[str] = []
    left = list(base)
    while left:
        ready = [n for n in left if after[n] <= set(out)]
        if not ready:
            why = ", ".join(sorted(set(said)))
            return base, [f"The promotion order in the repo ({why}) has a cycle; used the usual order of names."]
        out.append(ready[0])
        left.remove(ready[0])
    return out, []


# ------------------------------------------------------------------------------------------ scanning


def _parent(path: str) -> str:
    """PurePosixPath(path).parent for repo paths, without its cost on 20,000 paths ("" at the top)."""
    return path.rpartition("/")[0]


def scan(snap: Snapshot, *, inventory: bool = False) -> Found:
    """What the repo says about envs; `inventory` also lists kustomize folders and charts (for init)."""
    found = Found()
    _scan_gitops(snap, found)
    _scan_folders(snap, found)
    _scan_plain(snap, found)
    for env in list(found.rules):
        rules = found.rules[env]
        if "helm values" in rules:
            rules["helm values"] = [p for p in rules["helm values"] if p not in found.claimed]
            if not rules["helm values"]:
                del rules["helm values"]
        if not rules:
            del found.rules[env]
    if found.unplaced:
        shown = ", ".join(found.unplaced[:5]) + (f" and {len(found.unplaced) - 5} more" if len(found.unplaced) > 5 else "")
        found.notes.append(
            f"Argo CD Applications that name no environment opsbot knows: {shown}; "
            f"add their paths to an environment in {CONFIG_FILE} if opsbot should change them."
        )
    if inventory:
        found.kustomize_dirs = sorted({_parent(p) for p in snap.blobs if _ENV_FOLDER.match(p)} - {""})[:40]
        found.chart_dirs = sorted(_parent(p) for p in snap.blobs if p.endswith("/Chart.yaml"))[:40]
    return found


def _scan_folders(snap: Snapshot, found: Found) -> None:
    for path in sorted(snap.blobs):
        if not path.endswith((".yaml", ".yml")):
            continue
        parent = _parent(path)
        if m := _OVERLAY.search(path):
            found.add(m.group(1), "kustomize overlays", parent)
        elif m := _ENVS_DIR.search(path):
            found.add(m.group(1), "envs/<env>", parent)
        elif (m := _ENV_FOLDER.match(path)) and m.group(2) in ENV_WORDS and not path.startswith("clusters/"):
            up = m.group(1) or ""
            if up == "apps" and snap.is_dir("apps/base"):
                found.add(m.group(2), "apps/<env>", parent)
            elif not up or snap.is_dir(join(up, "base")):
                found.add(m.group(2), "<env>/ folders", parent)
        elif (
            (m := _VALUES.search(path)) and snap.exists(join(parent, "Chart.yaml")) and m.group(1) != "schema"
        ):
            found.add(m.group(1), "helm values", path)


def _scan_plain(snap: Snapshot, found: Found) -> None:
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
        by_parent.setdefault("/".join(parts[:-2]), set()).add(parts[-2])
    for parent, envs in by_parent.items():
        if len(envs) < 2:
            continue
        for env in sorted(envs):
            env_dir = join(parent, env)
            files = [f for f in snap.listdir(env_dir)[0] if f.endswith((".yaml", ".yml"))]
            snap.prefetch(files)
            if any(_WORKLOAD_HINT.search(snap.read(f)) for f in files):
                found.add(env, "plain manifests", env_dir)


def _candidate_files(snap: Snapshot) -> list[str]:
    skip = tuple(
        f"{_parent(p)}/{sub}/" if _parent(p) else f"{sub}/"
        for p in snap.blobs
        if p.endswith("Chart.yaml")
        for sub in ("templates", "charts")
    )
    out = [
        p
        for p in sorted(snap.blobs)
        if p.endswith((".yaml", ".yml"))
        and p.rpartition("/")[2] not in ("gotk-components.yaml", "Chart.yaml", "kustomization.yaml")
        and not p.startswith(skip)
    ]
    if len(out) > _MAX_SCAN:
        out = [p for p in out if p.count("/") <= 2 or p.split("/", 1)[0] in _GITOPS_DIRS][:_MAX_SCAN]
    return out


def _objects(snap: Snapshot) -> list[tuple[str, dict[str, Any]]]:
    files = _candidate_files(snap)
    snap.prefetch(files)
    out: list[tuple[str, dict[str, Any]]] = []
    for f in files:
        text = snap.read(f)
        # Files in clusters/<env>/ are what Flux applies first: always read (through the size and alias
        # checks), so a hostile one is refused by name rather than skipped.
        if not any(m in text for m in _MARKERS) and not _FLUX_CLUSTER.match(f):
            continue
        safeyaml.check_size(text, f)
        try:
            docs = load_all(text, f)
        except yaml.YAMLError:
            continue
        out.extend((f, d) for d in docs if isinstance(d, dict) and isinstance(d.get("spec"), dict))
    return out


def _scan_gitops(snap: Snapshot, found: Found) -> None:
    objects = _objects(snap)
    app_dirs = {_parent(f) for f, d in objects if _is_argo(d)}
    flux_names: dict[tuple[str, str], set[str]] = {}
    flux_deps: list[tuple[str, list[Any], str]] = []
    list_orders: list[tuple[list[str], str]] = []
    for f, d in objects:
        kind, api = d.get("kind"), str(d.get("apiVersion", ""))
        meta = _map(d.get("metadata"))
        spec = d["spec"]
        if kind == "Kustomization" and api.startswith("kustomize.toolkit.fluxcd.io"):
            env = _flux_env(f, spec, meta)
            target = norm(str(spec.get("path") or ""))
            if env is None or not isinstance(spec.get("path"), str):
                continue
            if not target or target.startswith("clusters/") or not snap.is_dir(target):
                continue  # the whole repo, or the bootstrap folders: not an env's own files
            source = _map(spec.get("sourceRef"))
            if not _FLUX_CLUSTER.match(f) and source.get("name") not in (None, "flux-system"):
                continue  # a path in another repository (a tenant's GitRepository), not in this one
            found.add(env, "flux clusters" if _FLUX_CLUSTER.match(f) else "flux Kustomization", target)
            key = (str(meta.get("namespace") or "flux-system"), str(meta.get("name") or ""))
            flux_names.setdefault(key, set()).add(env)
            flux_deps.append((env, spec.get("dependsOn") or [], key[0]))
        elif _is_argo(d) and kind == "Application":
            _argo_application(snap, found, f, d, app_dirs)
        elif _is_argo(d) and kind == "ApplicationSet":
            envs = [
                (_argo_application(snap, found, f, app, app_dirs), listed)
                for app, listed in _expand_appset(snap, d)
            ]
            named = [e for e, listed in envs if e and listed]  # a list is written in order; a Git scan is not
            if len(set(named)) > 1:
                list_orders.append((named, f"ApplicationSet {meta.get('name')}"))
        elif kind == "HelmRelease" and api.startswith("helm.toolkit.fluxcd.io"):
            chart = _map(_map(spec.get("chart")).get("spec"))
            found.claimed.update(norm(str(v)) for v in _list(chart.get("valuesFiles")))
        elif kind == "Stage" and api.startswith("kargo.akuity.io"):
            _kargo_stage(found, meta, spec)
    for env, deps, ns in flux_deps:
        for dep in deps if isinstance(deps, list) else []:
            if not isinstance(dep, dict) or not dep.get("name"):
                continue
            holders = flux_names.get((str(dep.get("namespace") or ns), str(dep["name"])), set())
            # the same name in this env is this cluster's own object (infrastructure before apps)
            others = holders - {env} if env not in holders else set()
            if len(others) == 1:
                found.edges.append((next(iter(others)), env, "Flux dependsOn"))
    for names, who in list_orders:
        seen: list[str] = []
        for n in names:
            if n not in seen:
                seen.append(n)
        found.edges.extend((a, b, who) for a, b in itertools.pairwise(seen))


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    """A field that should be a list; anything else in a hand-written object counts as empty."""
    return value if isinstance(value, list) else []


def _is_argo(d: dict[str, Any]) -> bool:
    return str(d.get("apiVersion", "")).startswith("argoproj.io/")


def _flux_env(file: str, spec: dict[str, Any], meta: dict[str, Any]) -> str | None:
    if (m := _FLUX_CLUSTER.match(file)) and "/flux-system/" not in file:
        return m.group(1)
    if file.startswith("clusters/"):
        return None
    return env_of(str(spec.get("path") or ""), str(meta.get("name") or ""))


def _kargo_stage(found: Found, meta: dict[str, Any], spec: dict[str, Any]) -> None:
    name = str(meta.get("name") or "")
    env = env_of(name) or name
    sources: list[str] = []
    direct = False
    for req in _list(spec.get("requestedFreight")):
        src = _map(_map(req).get("sources"))
        direct = direct or bool(src.get("direct"))
        sources += [str(s) for s in _list(src.get("stages"))]
    subs = _map(spec.get("subscriptions"))  # Kargo before v0.6
    sources += [str(_map(u)["name"]) for u in _list(subs.get("upstreamStages")) if _map(u).get("name")]
    direct = direct or bool(subs.get("warehouse"))
    if len(set(sources)) == 1:
        src_env = env_of(sources[0]) or sources[0]
        found.promote_from[env] = src_env
        found.edges.append((src_env, env, f"Kargo Stage {name}"))
    elif direct and not sources:
        found.promote_from.setdefault(env, "")
    elif len(set(sources)) > 1:
        found.notes.append(f"Kargo Stage {name} takes freight from {', '.join(sources)}; pin promote_from.")


def _expand_appset(snap: Snapshot, d: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    """The Applications an ApplicationSet's list, Git-directory and matrix generators make, each
    with whether a list took part (people write a list's order on purpose; a Git scan is sorted)."""
    spec = d["spec"]
    template = spec.get("template")
    if not isinstance(template, dict):
        return []
    params = [p for gen in _list(spec.get("generators")) for p in _gen_params(snap, gen, 0)]
    return [(_fill(template, p), listed) for p, listed in params]


def _gen_params(snap: Snapshot, gen: Any, depth: int) -> list[tuple[dict[str, str], bool]]:
    if not isinstance(gen, dict) or depth > 2:
        return []
    out: list[tuple[dict[str, str], bool]] = []
    lst = gen.get("list")
    if isinstance(lst, dict):
        for el in _list(lst.get("elements")):
            if isinstance(el, dict):
                out.append(({str(k): str(v) for k, v in el.items() if not isinstance(v, (dict, list))}, True))
    g = gen.get("git")
    if isinstance(g, dict):
        pats = [x for x in _list(g.get("directories")) if isinstance(x, dict) and x.get("path")]
        keep = [norm(str(x["path"])) for x in pats if not x.get("exclude")]
        drop = [norm(str(x["path"])) for x in pats if x.get("exclude")]
        for dd in _all_dirs(snap):
            if any(fnmatch.fnmatch(dd, k) for k in keep) and not any(fnmatch.fnmatch(dd, x) for x in drop):
                base = dd.rpartition("/")[2]
                found = {
                    "path": dd,
                    "path.path": dd,
                    "path.basename": base,
                    "path.basenameNormalized": re.sub(r"[^a-z0-9-]", "-", base.lower()),
                }
                found |= {f"path[{i}]": part for i, part in enumerate(dd.split("/"))}
                out.append((found, False))
    matrix = gen.get("matrix")
    if isinstance(matrix, dict):
        parts = [_gen_params(snap, child, depth + 1) for child in _list(matrix.get("generators"))[:2]]
        if len(parts) == 2:
            out += [(a | b, la or lb) for a, la in parts[0] for b, lb in parts[1]]
    return out


def _all_dirs(snap: Snapshot) -> list[str]:
    dirs: set[str] = set()
    for p in snap.blobs:
        d = _parent(p)
        while d and d not in dirs:
            dirs.add(d)
            d = _parent(d)
    return sorted(dirs)


def _fill(value: Any, params: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _TEMPLATE_VAR.sub(lambda m: params.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_fill(v, params) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, params) for k, v in value.items()}
    return value


def _argo_application(
    snap: Snapshot, found: Found, file: str, app: dict[str, Any], app_dirs: set[str]
) -> str | None:
    """Add the roots one Argo CD Application deploys to its env; returns the env (None if unknown)."""
    spec = _map(app.get("spec"))
    meta = _map(app.get("metadata"))
    sources = [s for s in (_list(spec.get("sources")) or [spec.get("source")]) if isinstance(s, dict)]
    refs = {str(s["ref"]) for s in sources if s.get("ref")}
    roots: list[tuple[str, ValuesChart | None]] = []
    for s in sources:
        path = norm(str(s["path"])) if isinstance(s.get("path"), str) else None
        helm = _map(s.get("helm"))
        value_files = [str(v) for v in _list(helm.get("valueFiles"))]
        if s.get("ref") and path is None and not s.get("chart"):
            continue  # only a `$ref` for another source's values files
        chart_dir = path if path is not None and snap.exists(join(path, "Chart.yaml")) else ""
        chart_name = _chart_name(snap, chart_dir) if chart_dir else str(s.get("chart") or "")
        if value_files and chart_name:
            files: list[str] = []
            for vf in value_files:
                if vf.startswith("$"):
                    ref, _, rest = vf[1:].partition("/")
                    f = norm(rest) if ref in refs else ""
                else:
                    f = join(path, vf) if path is not None else ""
                if f and snap.exists(f) and f not in files:
                    files.append(f)
            if files:
                # The last file wins over the ones before it: that is the one to edit.
                defaults = join(chart_dir, "values.yaml") if chart_dir else ""
                layers = tuple(f for f in files[:-1] if f != defaults)
                tie = ValuesChart(files[-1], chart_dir, chart_name, layers, _helm_overrides(helm))
                roots.append((files[-1], tie))
        elif path is not None and snap.is_dir(path) and not chart_dir:
            if path in app_dirs or any(a.startswith(path + "/") for a in app_dirs if path):
                continue  # the app-of-apps folder itself: Applications, not workloads
            roots.append((path, None))
    if not roots:
        return None
    dest = _map(spec.get("destination"))
    env = env_of(
        *(PurePosixPath(r).name for r, vc in roots if vc),
        *(r for r, vc in roots if not vc),
        str(meta.get("name") or ""),
        str(dest.get("namespace") or ""),
        str(PurePosixPath(file).parent),
        str(dest.get("name") or ""),
    )
    if env is None:
        found.unplaced.append(f"{meta.get('name')} ({', '.join(r for r, _ in roots)})")
        return None
    for root, vc in roots:
        found.add(env, "argo cd Application", root)
        if vc is not None and (vc.chart != _parent(root) or vc.layers or vc.overrides):
            found.charts.setdefault(env, {})[root] = vc
    return env


def _helm_overrides(helm: dict[str, Any]) -> tuple[str, ...]:
    """Dotted keys an Application's `helm.parameters`, `helm.values` and `valuesObject` set."""
    keys = [str(_map(p).get("name")) for p in _list(helm.get("parameters")) if _map(p).get("name")]
    inline: list[Any] = [helm.get("valuesObject")]
    if isinstance(helm.get("values"), str):
        with contextlib.suppress(yaml.YAMLError):
            inline.append(yaml.safe_load(helm["values"]))
    for obj in inline:
        keys += _leaves(obj, "")
    return tuple(dict.fromkeys(keys))


def _leaves(obj: Any, prefix: str) -> list[str]:
    if not isinstance(obj, dict):
        return [prefix] if prefix else []
    out: list[str] = []
    for k, v in obj.items():
        out += _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def _chart_name(snap: Snapshot, chart_dir: str) -> str:
    docs = snap.docs(join(chart_dir, "Chart.yaml"))
    if docs and isinstance(docs[0], dict) and docs[0].get("name"):
        return str(docs[0]["name"])
    return PurePosixPath(chart_dir).name


def render_skeleton(found: Found, reason: str) -> str:
    """A fully commented `.opsbot.yaml` holding what discovery saw, for a person to finish."""
    out = [
        "# opsbot configuration skeleton, written by `opsbot init`: discovery could not decide on its own.",
        *(f"#   {line}" for line in reason.splitlines()),
        "# Uncomment and edit what fits this repo, then commit it and run `opsbot check`.",
        "# Reference: docs/configuration.md.",
        "#",
        "# environments:",
    ]
    if found.rules:
        for env in sorted(found.rules, key=env_sort_key):
            rules = found.rules[env]
            paths = [p for ps in rules.values() for p in ps]
            out += [
                f"#   {env}:  # found by {', '.join(rules)}",
                f"#     paths: [{', '.join(dict.fromkeys(paths))}]",
            ]
    else:
        out += ["#   production:", "#     path: <folder or values file of this env>", "#     approvals: 1"]
    if found.kustomize_dirs:
        out += ["#", "# Kustomize folders in the repo (candidates for env paths):"]
        out += [f"#   - {d}" for d in found.kustomize_dirs]
    if found.chart_dirs:
        out += ["#", "# Helm charts in the repo (an env path may be a values file of one):"]
        out += [f"#   - {d}" for d in found.chart_dirs]
    if found.notes:
        out += ["#", "# Notes:", *(f"#   {n}" for n in found.notes)]
    return "\n".join(out) + "\n"
