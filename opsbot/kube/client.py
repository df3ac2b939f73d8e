"""How opsbot reaches a Kubernetes API server: which clusters, which credentials, and how to read
what the server answers.

Why one module: `OPSBOT_WATCH` names every cluster opsbot may talk to (watch mode and the live side
of `status` share it), and every caller of the `kubernetes` client needs the same care reading raw
JSON (a field this client version does not know must not fail a read; see `opsbot.core.fields`)
and describing a failure without leaking request headers into logs. The `kubernetes` library is imported only in
`opsbot.kube`; other packages name its client type through `ApiClient` here.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from opsbot.errors import ConfigError

__all__ = [
    "IN_CLUSTER",
    "ApiClient",
    "WatchTarget",
    "api_client_for",
    "describe",
    "json_object",
    "parse_watch",
]

#: The client type other packages hold without importing the `kubernetes` library themselves.
ApiClient = client.ApiClient

IN_CLUSTER = "in-cluster"


@dataclass(frozen=True)
class WatchTarget:
    cluster: str
    context: str


def parse_watch(value: str) -> list[WatchTarget]:
    """`prod-eu=in-cluster,staging` → targets; ConfigError naming the bad part."""
    targets: list[WatchTarget] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        cluster, sep, context = (s.strip() for s in part.partition("="))
        if not cluster or (sep and not context):
            raise ConfigError(f"OPSBOT_WATCH: {part!r} is not <cluster>[=<context>]")
        if any(t.cluster == cluster for t in targets):
            raise ConfigError(f"OPSBOT_WATCH: cluster {cluster!r} is listed twice")
        targets.append(WatchTarget(cluster, context or cluster))
    return targets


def api_client_for(target: WatchTarget, *, retries: int | None = None) -> client.ApiClient:
    """A client for one target: the pod's service account, or a kubeconfig context.

    `retries` caps urllib3's own retries (its default is 3 per call); a reader that a person waits
    on passes 0 so an unreachable cluster costs one timeout, not four.
    """
    from kubernetes import config

    try:
        cfg = client.Configuration()
        if target.context == IN_CLUSTER:
            config.load_incluster_config(client_configuration=cfg)
        else:
            # KUBECONFIG is read now, not when the client library was imported
            config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None, context=target.context,
                client_configuration=cfg,
            )
        if retries is not None:
            cfg.retries = retries
        return client.ApiClient(cfg)
    except config.ConfigException as exc:
        raise ConfigError(f"OPSBOT_WATCH: cannot connect to cluster {target.cluster!r}: {exc}") from None


def describe(exc: BaseException) -> str:
    """A one-line reason for logs: the exception type and its text, never request headers."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]



def json_object(resp: Any, what: str) -> dict[str, Any]:
    """Decode a raw (`_preload_content=False`) response and give its connection back."""
    try:
        data = json.loads(resp.data)
    finally:
        with contextlib.suppress(Exception):
            resp.release_conn()
    if not isinstance(data, dict):
        raise ValueError(f"the API server returned a {type(data).__name__} for a {what}, not an object")
    return data
