"""The validation gate: nothing reaches a PR unless it parses, fits the schema and builds."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import yaml

from opsbot.core.model import Check, FileEdit
from opsbot.manifests.yamledit import load_all

log = logging.getLogger(__name__)


def check_yaml(edits: Iterable[FileEdit]) -> Check:
    for e in edits:
        if not e.path.endswith((".yaml", ".yml")):
            continue
        try:
            load_all(e.after)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            return Check("YAML", False, f"{e.path}{where}: {getattr(exc, 'problem', exc)}")
    return Check("YAML", True)


def check_schema(objects: Iterable[dict[str, Any]], version: str, label: str = "") -> Check:
    """Built-in kinds against the offline Kubernetes schema (strict); CRDs are named, not failed."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    checked, skipped = 0, []
    for obj in objects:
        if is_custom(obj):
            continue  # validated against its CRD (opsbot.manifests.crds)
        try:
            kubernetes_validate.validate(obj, version, strict=True)
            checked += 1
        except SchemaNotFoundError:
            skipped.append(str(obj.get("kind")))
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            name = (obj.get("metadata") or {}).get("name", "?")
            return Check(f"schema (k8s {version})", False, f"{obj.get('kind')} {name}: {path}: {exc.message}")
    detail = f"{checked} object(s)" + (f" {label}" if label else "")
    if skipped:
        detail += f"; no schema for {', '.join(sorted(set(skipped)))} (custom resource)"
    return Check(f"schema (k8s {version})", True, detail)


def is_custom(obj: dict[str, Any]) -> bool:
    """A kind from a CRD: its API group has a dot (helm.toolkit.fluxcd.io), unlike the built-in ones."""
    api = str(obj.get("apiVersion", ""))
    return "/" in api and "." in api.split("/", 1)[0] and not api.split("/", 1)[0].endswith(".k8s.io")


def check_objects(objects: list[dict[str, Any]], version: str, catalog: Any, label: str = "") -> list[Check]:
    """Built-in kinds against the Kubernetes schema, custom ones against their CRD (one check per kind)."""
    from opsbot.manifests.crds import check_custom

    custom = [o for o in objects if is_custom(o)]
    out = []
    if len(custom) < len(objects) or not objects:
        out.append(check_schema(objects, version, label))
    return out + check_custom(custom, catalog)
