"""Custom resources validated the way the API server does: the CRD's openAPIV3Schema plus its CEL rules.

Why: a HelmRelease with both `chart` and `chartRef`, or a `chart.spec` without its `sourceRef`, parses,
builds and passes the built-in Kubernetes schema (which knows no custom kinds), yet the cluster rejects
it. Which CRD: one found in the manifest repo (e.g. Flux's `gotk-components.yaml`, the version that
cluster runs) wins over the copies opsbot ships in `opsbot/crds/` (see SOURCES.md there). CRDs are read
lazily, only for the kinds a change touches.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from opsbot.core.model import Check
from opsbot.manifests.gitrepo import Snapshot

#: Bundled CRDs are our own package data, but they still load with a safe (object-free) loader.
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "crds"
#: (group, kind) -> bundled file; a table, so that finding one schema reads one file
BUNDLED = {
    ("helm.toolkit.fluxcd.io", "HelmRelease"): "flux-helm.toolkit.fluxcd.io_helmreleases.yaml",
    ("kustomize.toolkit.fluxcd.io", "Kustomization"): "flux-kustomize.toolkit.fluxcd.io_kustomizations.yaml",
    ("source.toolkit.fluxcd.io", "Bucket"): "flux-source.toolkit.fluxcd.io_buckets.yaml",
    ("source.toolkit.fluxcd.io", "ExternalArtifact"): "flux-source.toolkit.fluxcd.io_externalartifacts.yaml",
    ("source.toolkit.fluxcd.io", "GitRepository"): "flux-source.toolkit.fluxcd.io_gitrepositories.yaml",
    ("source.toolkit.fluxcd.io", "HelmChart"): "flux-source.toolkit.fluxcd.io_helmcharts.yaml",
    ("source.toolkit.fluxcd.io", "HelmRepository"): "flux-source.toolkit.fluxcd.io_helmrepositories.yaml",
    ("source.toolkit.fluxcd.io", "OCIRepository"): "flux-source.toolkit.fluxcd.io_ocirepositories.yaml",
    ("argoproj.io", "Application"): "argocd-application-crd.yaml",
    ("argoproj.io", "AppProject"): "argocd-appproject-crd.yaml",
    ("cluster.x-k8s.io", "Cluster"): "cluster-api-clusters-crd.yaml",
    ("cluster.x-k8s.io", "MachineDeployment"): "cluster-api-machinedeployments-crd.yaml",
}
#: where each bundled file comes from (opsbot/crds/SOURCES.md has the commits)
_ORIGINS = {
    "flux-helm.": "fluxcd/helm-controller",
    "flux-kustomize.": "fluxcd/kustomize-controller",
    "flux-source.": "fluxcd/source-controller",
    "argocd-": "argoproj/argo-cd",
    "cluster-api-": "kubernetes-sigs/cluster-api",
}
_CRD_FILE_HINT = re.compile(r"(crd|gotk-components|customresourcedefinition)", re.I)
_MAX_ERRORS = 3


@dataclass(frozen=True)
class Crd:
    group: str
    kind: str
    versions: dict[str, dict[str, Any]]  # served version -> openAPIV3Schema
    source: str  # for people: "CRD from repo clusters/x/gotk-components.yaml" / "CRD bundled with opsbot"


class Catalog:
    """The CRDs one commit of a repo offers, found on demand, falling back to opsbot's own copies."""

    def __init__(self, snap: Snapshot | None) -> None:
        self.snap = snap
        self._repo: dict[tuple[str, str], Crd] | None = None
        self._bundled: dict[tuple[str, str], Crd | None] = {}
        self._lock = threading.Lock()

    def find(self, group: str, kind: str) -> Crd | None:
        with self._lock:
            if self._repo is None:
                self._repo = self._scan_repo()
            if (group, kind) in self._repo:
                return self._repo[(group, kind)]
            if (group, kind) not in self._bundled:
                self._bundled[(group, kind)] = _bundled(group, kind)
            return self._bundled[(group, kind)]

    def _scan_repo(self) -> dict[tuple[str, str], Crd]:
        """CRDs in files whose name says they hold CRDs (reading every file of a fleet would be slow)."""
        out: dict[tuple[str, str], Crd] = {}
        if self.snap is None:
            return out
        files = [
            p for p in self.snap.blobs if p.endswith((".yaml", ".yml")) and _CRD_FILE_HINT.search(PurePosixPath(p).name)
        ]
        self.snap.prefetch(files)
        for path in sorted(files):
            if "CustomResourceDefinition" not in self.snap.read(path):
                continue
            for doc in self.snap.docs(path):
                crd = _parse_crd(doc, f"CRD from repo {path}")
                if crd is not None:
                    out.setdefault((crd.group, crd.kind), crd)
        return out


_BUNDLED_CACHE: dict[tuple[str, str], Crd | None] = {}
_BUNDLED_LOCK = threading.Lock()


def _bundled(group: str, kind: str) -> Crd | None:
    name = BUNDLED.get((group, kind))
    if name is None:
        return None
    with _BUNDLED_LOCK:
        if (group, kind) not in _BUNDLED_CACHE:
            text = (BUNDLED_DIR / name).read_text()
            crd = None
            origin = next((o for prefix, o in _ORIGINS.items() if name.startswith(prefix)), name)
            for doc in yaml.load_all(text, Loader=_SAFE_LOADER):
                crd = _parse_crd(doc, f"bundled CRD from {origin}") or crd
            _BUNDLED_CACHE[(group, kind)] = crd
        return _BUNDLED_CACHE[(group, kind)]


def _parse_crd(doc: Any, source: str) -> Crd | None:
    if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
        return None
    spec = doc.get("spec") or {}
    kind = (spec.get("names") or {}).get("kind")
    group = spec.get("group")
    if not kind or not group:
        return None
    versions = {}
    for v in spec.get("versions") or []:
        if isinstance(v, dict) and v.get("served", True):
            schema = (v.get("schema") or {}).get("openAPIV3Schema")
            if isinstance(schema, dict):
                versions[str(v.get("name"))] = schema
    return Crd(str(group), str(kind), versions, source)


# ------------------------------------------------------------------------------------------ the check


def check_custom(objects: Iterable[dict[str, Any]], catalog: Catalog) -> list[Check]:
    """One check per custom kind among `objects`: fits its CRD (schema and CEL rules), or says why not."""
    by_kind: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for obj in objects:
        api = str(obj.get("apiVersion", ""))
        by_kind.setdefault((api.split("/", 1)[0], str(obj.get("kind"))), []).append(obj)
    checks = []
    for (group, kind), objs in sorted(by_kind.items()):
        crd = catalog.find(group, kind)
        if crd is None:
            checks.append(
                Check(f"schema ({kind})", True, f"skipped: no CRD for {group}/{kind} in the repo or bundled", skipped=True)
            )
            continue
        failed = None
        unchecked = 0
        for obj in objs:
            version = str(obj.get("apiVersion")).split("/", 1)[1]
            name = (obj.get("metadata") or {}).get("name", "?")
            schema = crd.versions.get(version)
            if schema is None:
                failed = f"{kind} {name}: {group}/{version} is not served by this CRD (served: {', '.join(sorted(crd.versions))})"
                break
            v = Validator()
            v.walk(obj, schema, "")
            unchecked += v.unchecked
            if v.errors:
                failed = f"{kind} {name}: " + "; ".join(v.errors[:_MAX_ERRORS])
                break
        label = f"schema ({kind}, {crd.source})"
        if failed:
            checks.append(Check(label, False, failed))
        else:
            extra = f"; {unchecked} CEL rule(s) opsbot cannot evaluate" if unchecked else ""
            checks.append(Check(label, True, f"{len(objs)} object(s){extra}"))
    return checks


class Validator:
    """A structural-schema walk like the API server's: types, required, unknown fields, formats of
    enum/pattern/bounds, and `x-kubernetes-validations` CEL rules evaluated with `self` bound."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.unchecked = 0

    def walk(self, value: Any, schema: dict[str, Any], path: str) -> None:
        if value is None:
            if not schema.get("nullable"):
                return  # the API server drops nulls of non-nullable fields
            return
        if schema.get("x-kubernetes-int-or-string"):
            if not isinstance(value, int | str) or isinstance(value, bool):
                self._err(path, f"must be an integer or a string, not {_tname(value)}")
            return
        typ = schema.get("type")
        if typ and not _type_ok(typ, value):
            self._err(path, f"must be {typ}, not {_tname(value)}")
            return
        if "enum" in schema and value not in schema["enum"]:
            self._err(path, f"must be one of {', '.join(map(str, schema['enum']))}, not {value!r}")
        if isinstance(value, str):
            self._string(value, schema, path)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                self._err(path, f"must be >= {schema['minimum']}")
            if "maximum" in schema and value > schema["maximum"]:
                self._err(path, f"must be <= {schema['maximum']}")
        if isinstance(value, dict):
            self._object(value, schema, path)
        if isinstance(value, list):
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                self._err(path, f"must have at most {schema['maxItems']} items")
            if "minItems" in schema and len(value) < schema["minItems"]:
                self._err(path, f"must have at least {schema['minItems']} items")
            items = schema.get("items")
            if isinstance(items, dict):
                for i, item in enumerate(value):
                    self.walk(item, items, f"{path}[{i}]")
        for rule in schema.get("x-kubernetes-validations") or []:
            self._cel(rule, value, path)

    def _string(self, value: str, schema: dict[str, Any], path: str) -> None:
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            self._err(path, f"must be at most {schema['maxLength']} characters")
        if "minLength" in schema and len(value) < schema["minLength"]:
            self._err(path, f"must be at least {schema['minLength']} characters")
        pattern = schema.get("pattern")
        if pattern:
            try:
                if not re.search(pattern, value):
                    self._err(path, f"{value!r} does not match {pattern}")
            except re.error:
                pass  # a Go RE2 construct Python lacks: not checked rather than misjudged

    def _object(self, value: dict[str, Any], schema: dict[str, Any], path: str) -> None:
        props = schema.get("properties") or {}
        for req in schema.get("required") or []:
            if req not in value:
                self._err(path, f"{req} is required")
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if k in props:
                self.walk(v, props[k], sub)
            elif isinstance(extra, dict):
                self.walk(v, extra, sub)
            elif path == "" and k in ("apiVersion", "kind", "metadata"):
                continue
            elif props and not schema.get("x-kubernetes-preserve-unknown-fields"):
                self._err(sub, "unknown field")

    def _cel(self, rule: dict[str, Any], value: Any, path: str) -> None:
        expr = str(rule.get("rule", ""))
        if "oldSelf" in expr:
            return  # a transition rule: only checked on update against the live object
        try:
            ok = _evaluate(expr, value)
        except _Unsupported:
            self.unchecked += 1
            return
        except _RuleError as exc:
            self._err(path, f"rule {expr!r} fails: {exc}")
            return
        if ok is not True:
            msg = rule.get("message") or f"failed rule: {expr}"
            self._err(path, str(msg))

    def _err(self, path: str, msg: str) -> None:
        self.errors.append(f"{path or '(root)'}: {msg}")


class _Unsupported(Exception):
    pass


class _RuleError(Exception):
    pass


_PROGRAMS: dict[str, Any] = {}


def _evaluate(expr: str, value: Any) -> Any:
    """Run one CEL rule with `self` = value (common-expression-language; compiled once per rule)."""
    import cel

    prog = _PROGRAMS.get(expr)
    if prog is None:
        try:
            prog = cel.compile(expr)
        except Exception as exc:  # the library's parse errors: a rule it cannot read is not judged
            raise _Unsupported(str(exc)) from None
        _PROGRAMS[expr] = prog
    try:
        return prog.execute({"self": value})
    except Exception as exc:
        text = str(exc)
        if "Unsupported" in text or "not supported" in text or "Undefined function" in text or "undeclared" in text:
            raise _Unsupported(text) from None
        raise _RuleError(text.splitlines()[0][:160]) from None


def _type_ok(typ: str, value: Any) -> bool:
    if typ == "object":
        return isinstance(value, dict)
    if typ == "array":
        return isinstance(value, list)
    if typ == "string":
        return isinstance(value, str)
    if typ == "boolean":
        return isinstance(value, bool)
    if typ == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if typ == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def _tname(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer", float: "a number"}.get(
        type(value), type(value).__name__
    )
