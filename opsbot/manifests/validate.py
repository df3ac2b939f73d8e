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
