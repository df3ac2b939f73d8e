"""The schema gate reads each schema once per process and judges exactly as kubernetes-validate does."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate import utils as kv_utils

from opsbot.manifests import validate
from opsbot.manifests.validate import check_schema

VERSION = "1.30"


def deployment(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1"}]},
            },
            **spec,
        },
    }


def reference_message(obj: dict[str, Any]) -> str | None:
    try:
        kubernetes_validate.validate(obj, VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return str(exc.message)
    return None


@pytest.mark.parametrize(
    "obj",
    [
        deployment(replicas=3),
        deployment(replicas="three"),
        deployment(replicaz=3),  # strict: unknown field
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s"},
            "spec": {"ports": [{"port": "x"}]},
        },
    ],
    ids=["valid", "wrong-type", "unknown-field", "service"],
)
def test_same_verdict_as_kubernetes_validate(obj: dict[str, Any]) -> None:
    check = check_schema([obj], VERSION)
    expected = reference_message(obj)
    assert check.ok == (expected is None)
    if expected is not None:
        assert check.detail.endswith(expected)


def test_custom_resources_are_named_not_failed() -> None:
    crd = {"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w"}}  # no schema, not a CRD group
    check = check_schema([crd, deployment()], VERSION)
    assert check.ok and check.detail == "1 object(s); no schema for Widget (custom resource)"


def test_each_schema_file_is_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    validate._validator.cache_clear()
    validate._definitions.cache_clear()
    reads: list[str] = []
    real = kv_utils.schema_contents

    def counting(filename: str, version: str) -> Any:
        reads.append(filename.rsplit("/", 1)[-1])
        return real(filename, version)

    monkeypatch.setattr(kv_utils, "schema_contents", counting)
    for _ in range(3):
        assert check_schema([deployment(), deployment(replicas=2)], VERSION).ok
    assert sorted(reads) == ["_definitions.json", "deployment-apps-v1.json"]
