"""Reading a field of JSON a peer sent (a webhook body, a Kubernetes object) without trusting its shape.

Why: a Flux or Argo CD object, or an API server's answer, may lack a field or carry another type
than documented (another version, a hostile peer); a read must then see "absent", not raise deep
inside a translation. Shared by intake (agent payloads and objects) and kube (API answers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["as_int", "as_list", "as_map", "as_str"]


def as_map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: object) -> str:
    return value if isinstance(value, str) else ""


def as_int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
