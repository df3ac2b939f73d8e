"""The Helm render proof: render the chart before and after a values edit with Helm's own engine.

Why: a values key is only an intent; what runs is what the templates make of it. A key the chart
never reads (`replicaCount` in a chart that reads `singleBinary.replicas`) would pass every YAML and
schema check while changing nothing, and a key that also feeds a label or a config map would change
more than was asked. Only the render shows which, so the proof is: the rendered objects before and
after differ exactly in the targeted fields (replica counts, container images and the version label
that charts derive from the tag), and at least one of them moved.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsbot.core.model import Check
from opsbot.manifests.gitrepo import Snapshot, norm
from opsbot.manifests.helm import (
    ChartMissing,
    ChartRef,
    EngineUnavailable,
    HelmError,
    cached_or_pulled,
    chart_archive,
    render_many,
)
from opsbot.manifests.images import parse_image

WORKLOADS = ("Deployment", "StatefulSet", "ReplicaSet", "Rollout")
CHECK = "helm render"
_IMAGE_PATH = re.compile(
    r"^spec\.(jobTemplate\.spec\.)?template\.spec\.(initContainers|containers|ephemeralContainers)\[\d+\]\.image$"
)
_VERSION_LABEL = "app.kubernetes.io/version"
REPLICA_KEYS = ("replicaCount", "replicas")
_PROBE = 7919  # a replica count no chart ships with: a probe that moved, moved because of the key


@dataclass(frozen=True)
class ChartSource:
    """A chart opsbot can render (archive), or why it cannot (skipped)."""

    where: str  # for people: "charts/podinfo" or "podinfo 6.5.0 from https://…"
    archive: bytes | None = None
    skipped: str | None = None
    missing: str | None = None  # the source answered that it has no such chart/version


def in_repo(snap: Snapshot, chart_dir: str) -> ChartSource:
    if not snap.exists(f"{chart_dir}/Chart.yaml" if chart_dir else "Chart.yaml"):
        return ChartSource(chart_dir or ".", skipped=f"{chart_dir or '.'}/Chart.yaml is not in the repo")
    try:
        return ChartSource(chart_dir, chart_archive(snap, chart_dir))
    except HelmError as exc:
        return ChartSource(chart_dir, skipped=exc.message)


def helmrelease_chart(
    hr: dict[str, Any],
    objects: list[dict[str, Any]],
    snap: Snapshot,
    *,
    version: str | None = None,
    cache_dir: Path | None,
    fetch: bool,
) -> ChartSource:
    """Where a Flux HelmRelease's chart comes from, fetched (or from the cache) when it is not in the repo.

    `objects` are the other objects the env renders (the HelmRepository / OCIRepository / HelmChart the
    release points at are looked up there); `version` overrides the release's own (a chart upgrade)."""
    spec = hr.get("spec") or {}
    ns = str((hr.get("metadata") or {}).get("namespace", ""))
    chart_ref = spec.get("chartRef")
    if isinstance(chart_ref, dict):
        kind, name = str(chart_ref.get("kind")), str(chart_ref.get("name"))
        source = _find(objects, kind, name, str(chart_ref.get("namespace") or ns))
        if source is None:
            return ChartSource(f"{kind} {name}", skipped=f"{kind} {name} is not among the objects this env renders")
        sspec = source.get("spec") or {}
        if kind == "OCIRepository":
            url = str(sspec.get("url", ""))
            ref = sspec.get("ref") or {}
            ver = version or ref.get("tag") or ref.get("semver")
            base, _, chart = url.rstrip("/").rpartition("/")
            return _remote(ChartRef(chart, str(ver or ""), base), cache_dir, fetch)
        if kind == "HelmChart":
            return _from_chart_spec(sspec, objects, snap, ns, version, cache_dir, fetch)
        return ChartSource(f"{kind} {name}", skipped=f"chartRef kind {kind} is not one opsbot can render")
    chart_spec = ((spec.get("chart") or {}).get("spec")) or {}
    return _from_chart_spec(chart_spec, objects, snap, ns, version, cache_dir, fetch)


def _from_chart_spec(
    cspec: dict[str, Any],
    objects: list[dict[str, Any]],
    snap: Snapshot,
    ns: str,
    version: str | None,
    cache_dir: Path | None,
    fetch: bool,
) -> ChartSource:
    ref = cspec.get("sourceRef") or {}
    kind, name, chart = str(ref.get("kind")), str(ref.get("name")), str(cspec.get("chart", ""))
    if kind in ("GitRepository", "Bucket"):
        path = norm(chart)
        if path.startswith(".."):
            return ChartSource(chart, skipped=f"chart path {chart} leaves the repo")
        return in_repo(snap, path)
    if not ref:
        return ChartSource(chart or "(no chart)", skipped="the release names no chart source (spec.chart.spec.sourceRef)")
    if kind != "HelmRepository":
        return ChartSource(chart, skipped=f"charts from a {kind} are not rendered by opsbot")
    repo = _find(objects, "HelmRepository", name, str(ref.get("namespace") or ns))
    if repo is None:
        return ChartSource(chart, skipped=f"HelmRepository {name} is not among the objects this env renders")
    rspec = repo.get("spec") or {}
    url = str(rspec.get("url", ""))
    if rspec.get("type") == "oci" and not url.startswith("oci://"):
        url = "oci://" + url.split("://", 1)[-1]
    return _remote(ChartRef(chart, str(version or cspec.get("version") or ""), url), cache_dir, fetch)


def _remote(ref: ChartRef, cache_dir: Path | None, fetch: bool) -> ChartSource:
    shown = redact(ref.url)
    where = f"{ref.name} {ref.version or '(no version)'} from {shown}"
    if not ref.version:
        return ChartSource(where, skipped=f"{ref.name} has no pinned version to fetch")
    try:
        return ChartSource(where, cached_or_pulled(ref, cache_dir, fetch=fetch))
    except ChartMissing as exc:
        return ChartSource(where, missing=exc.message.replace(ref.url, shown))
    except HelmError as exc:
        return ChartSource(where, skipped=exc.message.replace(ref.url, shown))


def redact(url: str) -> str:
    """A URL without user:password@ (checks end up in PR bodies and chat)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", url, flags=re.I)


def _find(objects: list[dict[str, Any]], kind: str, name: str, ns: str) -> dict[str, Any] | None:
    hits = [
        o
        for o in objects
        if o.get("kind") == kind and (o.get("metadata") or {}).get("name") == name
        and str((o.get("metadata") or {}).get("namespace", ns) or ns) == ns
    ]
    return hits[0] if hits else None


def skipped(src: ChartSource) -> Check:
    if src.missing:
        return Check(CHECK, False, f"{src.where}: {src.missing}")
    return Check(CHECK, True, f"skipped: {src.skipped}", skipped=True)


def verify(
    src: ChartSource,
    before: dict[str, Any],
    after: dict[str, Any],
    field: str,
    value: Any,
    *,
    release: str,
    namespace: str,
) -> tuple[Check, list[dict[str, Any]]]:
    """Render with both values sets; returns the check and the objects whose targeted fields moved."""
    if src.archive is None:
        return skipped(src), []
    try:
        old, new = render_many(src.archive, [before, after], release=release, namespace=namespace)
    except EngineUnavailable as exc:
        return Check(CHECK, True, f"skipped: {exc.message}", skipped=True), []
    except HelmError as exc:
        return Check(CHECK, False, f"{src.where}: {exc.message}"), []
    check, moved = compare(src.where, old.objects, new.objects, field, value)
    if old.missing_deps:
        deps = ", ".join(old.missing_deps)
        if not check.ok:  # the key may be read by a subchart that is not there: cannot tell
            why = f"{src.where} depends on {deps}, which its charts/ folder does not hold, so the render is incomplete"
            return Check(CHECK, True, f"skipped: {why}", skipped=True), []
        check = Check(CHECK, True, f"{check.detail} (without subcharts {deps}: not in charts/)")
    return check, moved


def render_check(
    src: ChartSource, values: dict[str, Any], *, release: str, namespace: str
) -> tuple[Check, list[dict[str, Any]]]:
    """A new chart version has no before to compare with: the proof is that it renders with the values."""
    if src.archive is None:
        return skipped(src), []
    try:
        (out,) = render_many(src.archive, [values], release=release, namespace=namespace)
    except EngineUnavailable as exc:
        return Check(CHECK, True, f"skipped: {exc.message}", skipped=True), []
    except HelmError as exc:
        return Check(CHECK, False, f"{src.where}: {exc.message}"), []
    return Check(CHECK, True, f"{src.where}: renders {len(out.objects)} object(s) with these values"), out.objects


def compare(
    where: str, before: list[dict[str, Any]], after: list[dict[str, Any]], field: str, value: Any
) -> tuple[Check, list[dict[str, Any]]]:
    b, a = _keyed(before), _keyed(after)
    if set(a) != set(b):
        added = sorted(f"{k[1]} {k[3]}" for k in set(a) - set(b))
        removed = sorted(f"{k[1]} {k[3]}" for k in set(b) - set(a))
        what = "; ".join(x for x in (f"adds {', '.join(added)}" if added else "",
                                     f"removes {', '.join(removed)}" if removed else "") if x)
        return Check(CHECK, False, f"{where}: the edit {what}, not only the {field}"), []
    moved: list[dict[str, Any]] = []
    for key in sorted(b):
        paths = _diffs(b[key], a[key])
        for path, old, new in paths:
            if not _allowed(field, value, key[1], path, new):
                return (
                    Check(
                        CHECK,
                        False,
                        f"{where}: after the edit {key[1]} {key[3]} renders {path} = {_short(new)} "
                        f"(was {_short(old)}); the values change reaches more than the {field}",
                    ),
                    [],
                )
        if any(_is_target(field, value, key[1], p, n) for p, _, n in paths):
            moved.append(a[key])
    if not moved:
        return (
            Check(CHECK, False, f"{where}: no rendered object's {field} changed, so nothing in the chart reads that key"),
            [],
        )
    names = ", ".join(f"{o.get('kind')} {(o.get('metadata') or {}).get('name')}" for o in moved[:4])
    return Check(CHECK, True, f"{where}: only the {field} of {names} changed"), moved


def replica_keys(
    src: ChartSource,
    values: dict[str, Any],
    *,
    release: str,
    namespace: str,
    merged: dict[str, Any] | None = None,
) -> list[str] | None:
    """The values keys that move a workload's replica count, found by rendering; None if no render.

    `merged` (defaults + env values) when the caller has it saves one render of the chart."""
    if src.archive is None:
        return None
    try:
        if merged is None:
            (base,) = render_many(src.archive, [values], release=release, namespace=namespace)
            merged = _merge(base.defaults, values)
            candidates = candidate_replica_keys(merged)
            probes = [_with(values, key.split("."), _PROBE) for key in candidates]
            renders = render_many(src.archive, probes, release=release, namespace=namespace) if probes else []
        else:
            candidates = candidate_replica_keys(merged)
            probes = [_with(values, key.split("."), _PROBE) for key in candidates]
            base, *renders = render_many(src.archive, [values, *probes], release=release, namespace=namespace)
    except HelmError:
        return None
    if not candidates:
        return None if base.missing_deps else []
    before = _keyed(base.objects)
    out = []
    for key, r in zip(candidates, renders, strict=True):
        for k, o in _keyed(r.objects).items():
            if k[1] in WORKLOADS and k in before and _replicas(o) != _replicas(before[k]):
                out.append(key)
                break
    if not out and base.missing_deps:
        return None  # a subchart that is not vendored may read one of them
    return out


def _replicas(obj: dict[str, Any]) -> Any:
    return (obj.get("spec") or {}).get("replicas")


def candidate_replica_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys named replicaCount/replicas holding a whole number (or nothing yet), in file order."""
    out: list[str] = []
    for k, v in values.items():
        dotted = f"{prefix}{k}"
        if isinstance(v, dict):
            out += candidate_replica_keys(v, dotted + ".")
        elif k in REPLICA_KEYS and (v is None or (isinstance(v, int) and not isinstance(v, bool))):
            out.append(dotted)
    return out


# ------------------------------------------------------------------------------------------ helpers


def _keyed(objs: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    out = {}
    for o in objs:
        m = o.get("metadata") or {}
        out[(str(o.get("apiVersion")), str(o.get("kind")), str(m.get("namespace", "")), str(m.get("name", "")))] = o
    return out


def _diffs(before: Any, after: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted path, old, new) for each leaf that differs."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[tuple[str, Any, Any]] = []
        for k in sorted(set(before) | set(after), key=str):
            out += _diffs(before.get(k), after.get(k), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        out = []
        for i, (x, y) in enumerate(zip(before, after, strict=True)):
            out += _diffs(x, y, f"{path}[{i}]")
        return out
    return [] if before == after else [(path, before, after)]


def _is_target(field: str, value: Any, kind: str, path: str, new: Any) -> bool:
    if field == "replicas":
        return kind in WORKLOADS and path == "spec.replicas" and new == value
    if field == "image tag":
        return bool(_IMAGE_PATH.match(path)) and isinstance(new, str) and parse_image(new).tag == str(value)
    return False


def _allowed(field: str, value: Any, kind: str, path: str, new: Any) -> bool:
    if _is_target(field, value, kind, path, new):
        return True
    # charts derive the standard version label from the image tag (app.kubernetes.io/version)
    return field == "image tag" and path.endswith(f"labels.{_VERSION_LABEL}") and str(new) == str(value)


def _short(v: Any) -> str:
    return json.dumps(v, default=str)[:80]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _with(values: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(values)
    cur = out
    for step in path[:-1]:
        nxt = cur.get(step)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[step] = nxt
        cur = nxt
    cur[path[-1]] = value
    return out
