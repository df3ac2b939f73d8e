"""The validation gate: nothing reaches a PR unless it parses, fits the schema and builds."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from functools import lru_cache
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
    from jsonschema import ValidationError

    checked, skipped = 0, []
    for obj in objects:
        if is_custom(obj):
            continue  # validated against its CRD (opsbot.manifests.crds)
        validator = _validator(version, str(obj.get("apiVersion")), str(obj.get("kind")))
        if validator is None:
            skipped.append(str(obj.get("kind")))
            continue
        try:
            validator.validate(obj)
            checked += 1
        except ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            name = (obj.get("metadata") or {}).get("name", "?")
            return Check(f"schema (k8s {version})", False, f"{obj.get('kind')} {name}: {path}: {exc.message}")
    detail = f"{checked} object(s)" + (f" {label}" if label else "")
    if skipped:
        detail += f"; no schema for {', '.join(sorted(set(skipped)))} (custom resource)"
    return Check(f"schema (k8s {version})", True, detail)


# Schemas load lazily and stay cached per process: only the kinds a change touches are read, and a
# running bot reads each (and the 1.8 MB definitions file) once, not once per object per plan.
# The lookup rules are kubernetes_validate.validate's own (schema dir of the newest version not
# newer than the one asked for, strict variant, `<kind>-<group>-<version>.json`).


@lru_cache(maxsize=8)
def _schema_dir(version: str) -> str:
    from kubernetes_validate.utils import VersionNotSupportedError, all_versions, major_minor

    wanted = version[1:] if version.startswith("v") else version
    versions = all_versions()
    if major_minor(wanted) > versions[-1]:
        raise VersionNotSupportedError(version=major_minor(wanted))
    found = [v for v in versions if major_minor(v) <= major_minor(wanted)][-1]
    return f"kubernetes-json-schema/v{found}-local-strict"


@lru_cache(maxsize=4)
def _definitions(schema_dir: str, version: str) -> Any:
    from kubernetes_validate.utils import schema_contents
    from referencing import Resource

    return Resource.from_contents(schema_contents(f"{schema_dir}/_definitions.json", version))


@lru_cache(maxsize=256)
def _validator(version: str, api_version: str, kind: str) -> Any:
    """A compiled validator for the kind, or None when the offline schema has none (custom resource)."""
    from jsonschema.validators import Draft202012Validator
    from kubernetes_validate.utils import schema_contents
    from referencing import Registry, Resource

    schema_dir = _schema_dir(version)
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = schema_contents(f"{schema_dir}/{kind.lower()}-{group_version}.json", version)
    except FileNotFoundError:
        return None
    registry = _definitions(schema_dir, version) @ (Resource.from_contents(schema) @ Registry())
    return Draft202012Validator(schema, registry=registry)


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
