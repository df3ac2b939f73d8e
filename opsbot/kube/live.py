"""The live side of `status`: what a cluster runs (Deployments, StatefulSets), read with the
`kubernetes` client.

Why it is built this way:

- **The clusters are the watch-mode clusters.** `OPSBOT_WATCH` already names every cluster opsbot
  may talk to and how (kubeconfig context or in-cluster); an env whose `.opsbot.yaml` agent says
  `cluster: X` gets a live side when X is one of them. No second list to keep in step.
- **A person is waiting.** `status` runs while someone looks at Slack, so every read has short
  connect/read timeouts and no urllib3 retries, and a cluster that just failed is not asked again
  for `failure_ttl` seconds: `status` for five apps on a dead cluster answers "unreachable" five
  times at the cost of one timeout.
- **Clients are made on first use.** A kubeconfig context that is wrong must not stop the bot from
  starting (the webhooks and Git answers still work); it makes the live side say why instead.

Implements `opsbot.core.ports.LiveReader`; commands see only that Protocol.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from opsbot.core.fields import as_int, as_list, as_map, as_str
from opsbot.core.ports import LiveWorkload
from opsbot.errors import ConfigError, PermanentError, TemporaryError
from opsbot.kube.client import api_client_for, describe, json_object, parse_watch
from opsbot.settings import Settings

__all__ = ["LIVE_KINDS", "KubeLiveReader", "LiveStatus", "live_reader_from_settings", "live_status"]

log = logging.getLogger(__name__)

#: (connect, read) seconds for one live read.
READ_TIMEOUT = (2.0, 5.0)
#: How long a failed cluster answers from memory instead of being asked again.
FAILURE_TTL = 30.0


class KubeLiveReader:
    """`LiveReader` over one `kubernetes.client.ApiClient` per cluster, made lazily."""

    def __init__(
        self,
        clients: Mapping[str, Callable[[], Any]],
        *,
        timeout: tuple[float, float] = READ_TIMEOUT,
        failure_ttl: float = FAILURE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factories = dict(clients)
        self._clients: dict[str, Any] = {}
        self._failed: dict[str, tuple[float, Exception]] = {}
        self._lock = threading.Lock()
        self.timeout = timeout
        self.failure_ttl = failure_ttl
        self.clock = clock

    def covers(self, cluster: str) -> bool:
        return cluster in self._factories

    def _client(self, cluster: str) -> Any:
        with self._lock:
            api = self._clients.get(cluster)
            if api is None:
                api = self._factories[cluster]()
                self._clients[cluster] = api
            return api

    def read(self, cluster: str, namespace: str, kind: str, name: str) -> LiveWorkload | None:
        if not self.covers(cluster):
            raise PermanentError(f"no connection to cluster {cluster} is configured (OPSBOT_WATCH)")
        now = self.clock()
        with self._lock:
            failed = self._failed.get(cluster)
        if failed is not None and now - failed[0] < self.failure_ttl:
            raise failed[1]
        try:
            try:
                api = self._client(cluster)
            except ConfigError as exc:  # the context is gone from the kubeconfig, say
                raise PermanentError(str(exc)) from None
            status = live_status(api, namespace, name, kind=kind, request_timeout=self.timeout)
        except (TemporaryError, PermanentError) as exc:
            if isinstance(exc, TemporaryError) or cluster not in self._clients:
                # unreachable, or no client at all: the next read would fail the same way
                with self._lock:
                    self._failed[cluster] = (now, exc)
            log.info("live read of %s %s/%s on %s failed: %s", kind, namespace, name, cluster, exc)
            raise
        with self._lock:
            self._failed.pop(cluster, None)
        if status is None:
            return None
        return LiveWorkload(
            cluster=cluster,
            namespace=namespace,
            kind=kind,
            name=name,
            replicas=status.replicas,
            ready_replicas=status.ready_replicas,
            updated_replicas=status.updated_replicas,
            containers=status.containers,
            rolled_out=status.rolled_out,
        )

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for api in clients:
            try:
                api.close()
            except Exception as exc:  # closing a pool must not fail a shutdown
                log.debug("closing a live-read client failed: %s", type(exc).__name__)


def live_reader_from_settings(settings: Settings) -> KubeLiveReader | None:
    """The reader for the clusters of `OPSBOT_WATCH`; None when no cluster is configured."""
    targets = parse_watch(settings.watch)
    if not targets:
        return None
    return KubeLiveReader({t.cluster: functools.partial(api_client_for, t, retries=0) for t in targets})


# ------------------------------------------------------------------------ one read


@dataclass(frozen=True)
class LiveStatus:
    """What a Deployment (or StatefulSet) runs right now, for `status`: replicas and images, read not guessed."""

    name: str
    namespace: str
    replicas: int
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    images: tuple[str, ...]
    generation: int
    observed_generation: int
    #: (container name, image), init containers first: drift is judged per container, not per list
    containers: tuple[tuple[str, str], ...] = ()
    kind: str = "Deployment"

    @property
    def rolled_out(self) -> bool:
        return (
            self.observed_generation >= self.generation
            and self.updated_replicas == self.replicas
            and self.ready_replicas == self.replicas
        )


#: Workload kinds `live_status` reads, and their `apps/v1` plural.
LIVE_KINDS = {"Deployment": "deployments", "StatefulSet": "statefulsets"}


def live_status(
    api: client.ApiClient,
    namespace: str,
    name: str,
    *,
    kind: str = "Deployment",
    request_timeout: tuple[float, float] = (5, 15),
) -> LiveStatus | None:
    """Read a Deployment's (or StatefulSet's) live replicas and container images; None when it does not exist.

    The raw JSON is read (not the generated model) so that a field this client version does not
    know, or a missing optional field, cannot fail the read.
    """
    plural = LIVE_KINDS.get(kind)
    if plural is None:
        raise ValueError(f"live status reads {', '.join(LIVE_KINDS)}, not {kind}")
    apps = client.AppsV1Api(api)
    read = apps.read_namespaced_deployment if kind == "Deployment" else apps.read_namespaced_stateful_set
    try:
        # With _preload_content=False the client returns the urllib3 response, whatever the
        # annotation says.
        resp: Any = read(name, namespace, _preload_content=False, _request_timeout=request_timeout)
        obj = json_object(resp, kind.lower())
    except ApiException as exc:
        if exc.status == 404:
            return None
        if exc.status in (401, 403):
            raise PermanentError(_auth_message_deployments(exc.status, namespace, plural)) from None
        raise TemporaryError(f"reading {kind.lower()} {namespace}/{name} failed: HTTP {exc.status}") from None
    except (Urllib3HTTPError, OSError, ValueError) as exc:
        raise TemporaryError(f"reading {kind.lower()} {namespace}/{name} failed: {describe(exc)}") from None
    spec, status, meta = as_map(obj.get("spec")), as_map(obj.get("status")), as_map(obj.get("metadata"))
    pod_spec = as_map(as_map(spec.get("template")).get("spec"))
    containers = tuple(
        (as_str(c.get("name")), as_str(c.get("image")))
        for c in [*as_list(pod_spec.get("initContainers")), *as_list(pod_spec.get("containers"))]
        if isinstance(c, dict) and as_str(c.get("image"))
    )
    replicas = spec.get("replicas")
    return LiveStatus(
        name=name,
        namespace=namespace,
        replicas=replicas if isinstance(replicas, int) else 1,
        ready_replicas=as_int(status.get("readyReplicas")),
        updated_replicas=as_int(status.get("updatedReplicas")),
        available_replicas=as_int(status.get("availableReplicas")),
        images=tuple(image for _, image in containers),
        generation=as_int(meta.get("generation")),
        observed_generation=as_int(status.get("observedGeneration")),
        containers=containers,
        kind=kind,
    )



def _auth_message_deployments(status: int, namespace: str, plural: str = "deployments") -> str:
    what = (
        "refused opsbot's credentials (401 Unauthorized)"
        if status == 401
        else "denied opsbot (403 Forbidden)"
    )
    return f"the Kubernetes API {what} reading {plural}.apps in namespace {namespace}"

