"""Where a field change goes in each layout, and the proof that it does only that.

The rule (DESIGN §5): edit at the env level, in a file no other env reads. For kustomize that is the
outermost kustomization of the app's chain that only this env builds: an existing `replicas:` /
`images:` entry or patch there is edited in place; otherwise an entry (or, for an image that other
apps share, a per-workload patch) is added. Every kustomize edit is then built for real and the
before/after objects are compared: only the meant fields of the meant object may differ.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from opsbot.core.model import Check, FileEdit
from opsbot.errors import CommandError
from opsbot.manifests.config import EnvConfig
from opsbot.manifests.gitrepo import Snapshot, join
from opsbot.manifests.images import parse_image
from opsbot.manifests.index import HPA_KIND, Index, Target, containers
from opsbot.manifests.kustomize import BuildError, Kustomization, build
from opsbot.manifests.yamledit import EditError, Sel, YPath, append_item, load_all, set_value


@dataclass
class Expect:
    """A field of a rendered object the edit must change: how to read it and what it must become."""

    kind: str
    name: str
    path: YPath
    value: Any
    label: str  # words for people: "replicas", "image api"


@dataclass
class EditSet:
    """File texts as edited so far (on one snapshot), plus what the result must show."""

    snap: Snapshot
    texts: dict[str, str] = field(default_factory=dict)
    created: set[str] = field(default_factory=set)
    expects: list[Expect] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: what a Helm render must show moved: ("replicas", 5), ("image tag", "6.5.2"), ("chart version", …)
    render_field: tuple[str, Any] | None = None

    def text(self, path: str) -> str:
        return self.texts[path] if path in self.texts else self.snap.read(path)

    def put(self, path: str, text: str, *, new: bool = False) -> None:
        self.texts[path] = text
        if new:
            self.created.add(path)

    def exists(self, path: str) -> bool:
        return path in self.texts or self.snap.exists(path)

    def file_edits(self) -> list[FileEdit]:
        out = []
        for path in sorted(self.texts):
            before = None if path in self.created else self.snap.read(path)
            if before != self.texts[path]:
                out.append(FileEdit(path, before, self.texts[path]))
        return out


# ------------------------------------------------------------------------------------- edit points


def exclusive(index: Index, env: EnvConfig, path: str) -> bool:
    return not index.other_envs_reading(env, path)


def edit_point(index: Index, t: Target, chain: list[str] | None = None) -> Kustomization | None:
    """The outermost real kustomization in the chain (the app's by default) that only this env builds."""
    graph = index.graph(t.snap)
    for d in t.chain if chain is None else chain:
        node = graph.node(d)
        if node.file and exclusive(index, t.env, node.file):
            return node
    return None


def _no_edit_point(t: Target) -> CommandError:
    return CommandError(
        f"{t.app} in {t.env.name} has no file that only {t.env.name} reads (its definition and every "
        f"kustomization on the way are shared with other envs). Add an overlay for {t.env.name}, e.g. "
        f"overlays/{t.env.name}/kustomization.yaml with resources: [the shared base]."
    )


@dataclass(frozen=True)
class PatchDoc:
    file: str
    doc: int
    json6902: bool


def find_patch(es: EditSet, k: Kustomization, kind: str, name: str) -> list[PatchDoc]:
    """Patch documents in kustomization `k` that apply to the object kind/name."""
    out: list[PatchDoc] = []
    entries: list[tuple[str, dict[str, Any], bool]] = []
    for item in k.data.get("patches") or []:
        if isinstance(item, dict) and isinstance(item.get("path"), str):
            entries.append((join(k.dir, item["path"]), item.get("target") or {}, False))
    for item in k.data.get("patchesStrategicMerge") or []:
        if isinstance(item, str) and "\n" not in item:
            entries.append((join(k.dir, item), {}, False))
    for item in k.data.get("patchesJson6902") or []:
        if isinstance(item, dict) and isinstance(item.get("path"), str):
            entries.append((join(k.dir, item["path"]), item.get("target") or {}, True))
    for path, target, is_json in entries:
        if not es.exists(path):
            continue
        try:
            docs = load_all(es.text(path))
        except Exception:
            continue
        for i, d in enumerate(docs):
            if isinstance(d, list) or is_json:
                if target.get("kind") == kind and target.get("name") == name:
                    out.append(PatchDoc(path, i, True))
            elif isinstance(d, dict):
                dk = d.get("kind", target.get("kind"))
                dn = (d.get("metadata") or {}).get("name", target.get("name"))
                if dk == kind and dn == name:
                    out.append(PatchDoc(path, i, False))
    return out


def _pointer(path: YPath, sample: dict[str, Any] | None) -> str:
    parts: list[str] = []
    cur: Any = sample
    for step in path:
        if isinstance(step, Sel):
            idx = 0
            if isinstance(cur, list):
                idx = next(
                    (i for i, c in enumerate(cur) if isinstance(c, dict) and c.get(step.key) == step.value), 0
                )
                cur = cur[idx] if idx < len(cur) else None
            parts.append(str(idx))
        else:
            parts.append(str(step).replace("~", "~0").replace("/", "~1"))
            cur = cur.get(step) if isinstance(cur, dict) else None
    return "/" + "/".join(parts)


def edit_in_patches(
    es: EditSet,
    k: Kustomization,
    kind: str,
    name: str,
    path: YPath,
    value: Any,
    source: dict[str, Any] | None,
    *,
    insert: bool = False,
) -> str | None:
    """Set `path` in a patch of `k` for kind/name that already sets it (or any SMP, with insert)."""
    patches = find_patch(es, k, kind, name)
    for p in patches:
        text = es.text(p.file)
        docs = load_all(text)
        if p.json6902:
            ops = docs[p.doc] if isinstance(docs[p.doc], list) else []
            pointer = _pointer(path, source)
            for j, op in enumerate(ops):
                if isinstance(op, dict) and op.get("op") in ("replace", "add") and op.get("path") == pointer:
                    es.put(p.file, set_value(text, p.doc, [j, "value"], value))
                    return p.file
            continue
        if _has_path(docs[p.doc], path):
            es.put(p.file, set_value(text, p.doc, path, value))
            return p.file
    if insert:
        for p in patches:
            if not p.json6902:
                es.put(p.file, set_value(es.text(p.file), p.doc, path, value))
                return p.file
    return None


def _has_path(data: Any, path: YPath) -> bool:
    for step in path:
        if isinstance(step, Sel):
            if not isinstance(data, list):
                return False
            data = next((i for i in data if isinstance(i, dict) and i.get(step.key) == step.value), None)
        elif isinstance(data, dict) and isinstance(step, str):
            if step not in data:
                return False
            data = data[step]
        else:
            return False
        if data is None:
            return False
    return True


def add_patch_file(es: EditSet, k: Kustomization, filename: str, doc: dict[str, Any]) -> str:
    """A new strategic-merge patch file beside `k`, listed under its `patches:`."""
    assert k.file is not None
    path = join(k.dir, filename)
    if es.exists(path):
        raise CommandError(
            f"{path} exists but does not patch what opsbot expected; edit it by hand or remove it."
        )
    from opsbot.manifests.yamledit import render_block

    body = "\n".join(render_block(doc, 0, 0)) + "\n"
    es.put(path, body, new=True)
    es.put(k.file, append_item(es.text(k.file), 0, ["patches"], {"path": filename}))
    return path


def _smp_header(source: dict[str, Any] | None, kind: str, name: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if source and (source.get("metadata") or {}).get("namespace"):
        meta["namespace"] = source["metadata"]["namespace"]
    api = (source or {}).get("apiVersion") or {"HorizontalPodAutoscaler": "autoscaling/v2"}.get(
        kind, "apps/v1"
    )
    return {"apiVersion": api, "kind": kind, "metadata": meta}


def _nest(path: YPath, value: Any) -> dict[str, Any]:
    out: Any = value
    for step in reversed(list(path)):
        if isinstance(step, Sel):
            item = {step.key: step.value}
            item.update(out if isinstance(out, dict) else {})
            out = [item]
        else:
            out = {step: out}
    assert isinstance(out, dict)
    return out


# ------------------------------------------------------------------------------------- field setters


def set_replicas(index: Index, es: EditSet, t: Target, n: int, replicas_key: str) -> None:
    if t.layout == "helm":
        set_helm_value(es, t, replicas_key, n)
        return
    if t.is_helmrelease:
        set_helmrelease(index, es, t, ["spec", "values", *replicas_key.split(".")], n, "replicas")
        return
    es.expects.append(Expect(t.kind, _rname(t), ["spec", "replicas"], n, "replicas"))
    if t.layout == "plain":
        assert t.source is not None
        _require_exclusive(index, t, t.source.file)
        es.put(t.source.file, set_value(es.text(t.source.file), t.source.doc, ["spec", "replicas"], n))
        return
    k = edit_point(index, t)
    if k is None:
        raise _no_edit_point(t)
    assert k.file is not None
    entries = [e for e in (k.data.get("replicas") or []) if isinstance(e, dict)]
    if any(e.get("name") == t.name for e in entries):
        es.put(k.file, set_value(es.text(k.file), 0, ["replicas", Sel("name", t.name), "count"], n))
        return
    if edit_in_patches(es, k, t.kind, t.name, ["spec", "replicas"], n, t.source.data if t.source else None):
        return
    es.put(k.file, append_item(es.text(k.file), 0, ["replicas"], {"name": t.name, "count": n}))


def set_image(index: Index, es: EditSet, t: Target, container: str, new_image: str) -> None:
    """Point one container of a Deployment-like workload at `new_image`."""
    es.expects.append(
        Expect(t.kind, _rname(t), _container_path(t, container), new_image, f"image {container}")
    )
    src_path: YPath = ["spec", "template", "spec", "containers", Sel("name", container), "image"]
    if t.layout == "plain":
        assert t.source is not None
        _require_exclusive(index, t, t.source.file)
        es.put(t.source.file, set_value(es.text(t.source.file), t.source.doc, src_path, new_image))
        return
    k = edit_point(index, t)
    if k is None:
        raise _no_edit_point(t)
    assert k.file is not None
    ref = parse_image(new_image)
    # An images: entry applies to what its own kustomization renders, so that is where sharing counts.
    scope = index.render(t.snap, k.dir) if k.dir != t.root else t.objects
    sharers = _image_sharers(t, ref.name, scope)
    entries = [e for e in (k.data.get("images") or []) if isinstance(e, dict)]
    entry = next(
        (e for e in entries if e.get("newName", e.get("name")) == ref.name or e.get("name") == ref.name), None
    )
    if entry is not None:
        if sharers:
            raise CommandError(
                f"{k.file} sets the tag of {ref.name} for every workload that uses it ({', '.join([t.name, *sharers])}); "
                f"changing it for {t.name} alone would change {', '.join(sharers)} too. Move that images: entry "
                f"into each app's own overlay, or give {t.name} its own image."
            )
        if entry.get("digest"):
            raise CommandError(f"{k.file} pins {ref.name} by digest; opsbot sets tags, not digests.")
        es.put(
            k.file,
            set_value(es.text(k.file), 0, ["images", Sel("name", str(entry["name"])), "newTag"], ref.tag),
        )
        return
    source = t.source.data if t.source else None
    if edit_in_patches(es, k, t.kind, t.name, src_path, new_image, source):
        return
    if not sharers:
        es.put(k.file, append_item(es.text(k.file), 0, ["images"], {"name": ref.name, "newTag": ref.tag}))
        return
    doc = _smp_header(source, t.kind, t.name)
    doc.update(_nest(["spec", "template", "spec", "containers", Sel("name", container), "image"], new_image))
    add_patch_file(es, k, f"{t.name}-image-patch.yaml", doc)
    es.notes.append(
        f"{ref.name} is shared with {', '.join(sharers)}: {t.name} gets its own patch so the others keep their version."
    )


def set_hpa_bounds(index: Index, es: EditSet, t: Target, lo: int, hi: int) -> None:
    hpa = t.hpa()
    assert hpa is not None
    hname = str(hpa["metadata"]["name"])
    es.expects.append(Expect(HPA_KIND, hname, ["spec", "minReplicas"], lo, "minReplicas"))
    es.expects.append(Expect(HPA_KIND, hname, ["spec", "maxReplicas"], hi, "maxReplicas"))
    graph = index.graph(t.snap)
    files = graph.closure(t.root)[1]
    sources = [
        (f, i, d)
        for f in files
        if f.endswith((".yaml", ".yml"))
        for i, d in enumerate(index.docs(t.snap, f))
        if isinstance(d, dict)
        and d.get("kind") == HPA_KIND
        and (d.get("metadata") or {}).get("name") == hname
        and "scaleTargetRef" in (d.get("spec") or {})
    ]
    if t.layout == "plain":
        if not sources:
            raise CommandError(f"cannot find the file that defines HorizontalPodAutoscaler {hname}")
        f, i, _ = sources[0]
        _require_exclusive(index, t, f)
        text = set_value(es.text(f), i, ["spec", "minReplicas"], lo)
        es.put(f, set_value(text, i, ["spec", "maxReplicas"], hi))
        return
    # The autoscaler may live elsewhere than the workload (another app's folder, even): edit on its own chain.
    k = edit_point(index, t, graph.chain_to(t.root, sources[0][0]) if sources else None)
    if k is None:
        raise _no_edit_point(t)
    source = sources[0][2] if sources else None
    done_lo = edit_in_patches(es, k, HPA_KIND, hname, ["spec", "minReplicas"], lo, source, insert=True)
    done_hi = edit_in_patches(es, k, HPA_KIND, hname, ["spec", "maxReplicas"], hi, source, insert=True)
    if done_lo and done_hi:
        return
    if sources and not done_lo and not done_hi:
        f, i, _ = sources[0]
        if (
            exclusive(index, t.env, f)
            and graph.chain_to(t.root, f)
            and f.startswith(k.dir + "/" if k.dir else "")
        ):
            text = set_value(es.text(f), i, ["spec", "minReplicas"], lo)
            es.put(f, set_value(text, i, ["spec", "maxReplicas"], hi))
            return
    doc = _smp_header(source, HPA_KIND, hname)
    doc["spec"] = {"minReplicas": lo, "maxReplicas": hi}
    add_patch_file(es, k, f"{hname}-hpa-patch.yaml", doc)


def set_helmrelease(index: Index, es: EditSet, t: Target, path: YPath, value: Any, label: str) -> None:
    es.expects.append(Expect(t.kind, _rname(t), path, value, label))
    if t.layout == "plain":
        assert t.source is not None
        _require_exclusive(index, t, t.source.file)
        es.put(t.source.file, set_value(es.text(t.source.file), t.source.doc, path, value))
        return
    k = edit_point(index, t)
    if k is None:
        raise _no_edit_point(t)
    source = t.source.data if t.source else None
    if edit_in_patches(es, k, t.kind, t.name, path, value, source, insert=True):
        return
    if (
        t.source
        and exclusive(index, t.env, t.source.file)
        and t.source.file.startswith(k.dir + "/" if k.dir else "")
    ):
        es.put(t.source.file, set_value(es.text(t.source.file), t.source.doc, path, value))
        return
    doc = _smp_header(source, t.kind, t.name)
    doc.update(_nest(path, value))
    add_patch_file(es, k, f"{t.name}-values.yaml" if t.is_helmrelease else f"{t.name}-{t.kind.lower()}.yaml", doc)


def set_helm_value(es: EditSet, t: Target, dotted: str, value: Any) -> None:
    text = es.text(t.root)
    if not text.strip() or load_all(text) in ([], [None]):
        from opsbot.manifests.yamledit import render_block

        es.put(t.root, text + "\n".join(render_block(_nest(dotted.split("."), value), 0, 0)) + "\n")
        return
    es.put(t.root, set_value(text, 0, dotted.split("."), value))


def _require_exclusive(index: Index, t: Target, path: str) -> None:
    others = index.other_envs_reading(t.env, path)
    if others:
        raise CommandError(
            f"{path} is read by {', '.join(others)} as well as {t.env.name}; opsbot only edits files that "
            f"belong to one env. Give {t.env.name} its own copy or overlay."
        )


def _rname(t: Target) -> str:
    return str((t.rendered.get("metadata") or {}).get("name", t.name))


def _container_path(t: Target, container: str) -> YPath:
    return ["spec", "template", "spec", "containers", Sel("name", container), "image"]


def _image_sharers(t: Target, image_name: str, objects: list[dict[str, Any]]) -> list[str]:
    me = _rname(t)
    out = []
    for obj in objects:
        name = str((obj.get("metadata") or {}).get("name", ""))
        if obj.get("kind") == t.kind and (name == me or name == t.name):
            continue
        if any(parse_image(str(c.get("image", ""))).name == image_name for c in containers(obj)):
            out.append(name)
    return sorted(set(out))


# ------------------------------------------------------------------------------------- the proof


def _key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    m = obj.get("metadata") or {}
    return (
        str(obj.get("apiVersion")),
        str(obj.get("kind")),
        str(m.get("namespace", "")),
        str(m.get("name", "")),
    )


def _set(obj: Any, path: YPath, value: Any) -> None:
    for step in path[:-1]:
        if isinstance(step, Sel):
            obj = next(i for i in obj if isinstance(i, dict) and i.get(step.key) == step.value)
        else:
            obj = obj.setdefault(step, {})
    last = path[-1]
    assert isinstance(last, str)
    obj[last] = value


def verify_kustomize(index: Index, es: EditSet, t: Target) -> tuple[Check, list[dict[str, Any]]]:
    """Build the root with the edits; only the expected fields of the expected objects may differ.

    Returns the check and the objects the build produced (empty when it failed)."""
    overrides = dict(es.texts)
    try:
        after = build(
            t.snap, index.graph(t.snap), t.root, overrides, allow_remote=index.config.kustomize_allow_remote
        )
    except BuildError as exc:
        return Check("kustomize build", False, f"{t.root}: {exc.message}"), []
    return _compare(es, t, after), after


def _compare(es: EditSet, t: Target, after: list[dict[str, Any]]) -> Check:
    before = t.objects
    expected = {_key(o): copy.deepcopy(o) for o in before}
    for ex in es.expects:
        for k, obj in expected.items():
            if k[1] == ex.kind and k[3] == ex.name:
                try:
                    _set(obj, ex.path, ex.value)
                except (StopIteration, AttributeError, TypeError):
                    return Check("kustomize build", False, f"{ex.kind} {ex.name} has no {ex.label}")
    got = {_key(o): o for o in after}
    if set(got) != set(expected):
        added = sorted(set(got) - set(expected))
        removed = sorted(set(expected) - set(got))
        return Check("kustomize build", False, f"objects changed: added {added}, removed {removed}")
    for k in expected:
        if got[k] != expected[k]:
            who = f"{k[1]} {k[3]}"
            diffs = _first_diff(expected[k], got[k])
            return Check(
                "kustomize build",
                False,
                f"after the edit {who} renders {diffs}; something else in {t.root} overrides it "
                "(an inline patch or a transformer opsbot cannot edit)",
            )
    return Check("kustomize build", True, t.root)


def _first_diff(want: Any, got: Any, path: str = "") -> str:
    if isinstance(want, dict) and isinstance(got, dict):
        for k in sorted(set(want) | set(got), key=str):
            if want.get(k) != got.get(k):
                return _first_diff(want.get(k), got.get(k), f"{path}.{k}" if path else str(k))
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            if a != b:
                return _first_diff(a, b, f"{path}[{i}]")
    return f"{path or 'the object'} = {json.dumps(got, default=str)[:120]} instead of {json.dumps(want, default=str)[:120]}"


def changed_objects(
    es: EditSet, t: Target, render: Callable[[], list[dict[str, Any]]] | None = None
) -> list[dict[str, Any]]:
    """Objects that the change touches, as they will be applied (for schema validation)."""
    names = {(e.kind, e.name) for e in es.expects}
    if t.layout == "kustomize" and render is not None:
        return [o for o in render() if (o.get("kind"), (o.get("metadata") or {}).get("name")) in names]
    out = []
    for path, text in es.texts.items():
        if PurePosixPath(path).suffix not in (".yaml", ".yml"):
            continue
        for d in load_all(text):
            if isinstance(d, dict) and (d.get("kind"), (d.get("metadata") or {}).get("name")) in names:
                out.append(d)
    return out


__all__ = [
    "EditError",
    "EditSet",
    "changed_objects",
    "set_helm_value",
    "set_helmrelease",
    "set_hpa_bounds",
    "set_image",
    "set_replicas",
    "verify_kustomize",
]
