"""Watch mode: feed the deploy processor from the Kubernetes API instead of (or besides) webhooks.

Why: some clusters cannot reach opsbot (no ingress, egress policy), and a webhook delivery can be
lost for good. Watching Flux Kustomizations/HelmReleases and Argo CD Applications gives the same
deploy events from the objects' status (`opsbot.intake.watch`), and they take the same road as a
webhook: stored in the inbox under their dedup key first (source `watch`), then correlated by the
same `DeployProcessor`. So a fact seen by a webhook *and* a watcher is still told once.

Settings (DESIGN §4 style, one variable each):

``OPSBOT_WATCH``
    Comma-separated `<cluster>[=<context>]`. `<context>` is a context of the kubeconfig (`KUBECONFIG`
    or `~/.kube/config`), or `in-cluster` for the service account of the pod opsbot runs in; it
    defaults to the cluster name. The cluster name is what events carry as `cluster`, so it should
    match `agent.cluster` in `.opsbot.yaml` (or the `clusters/<dir>` name). Example:
    `OPSBOT_WATCH=prod-eu=in-cluster,staging` watches this pod's cluster as `prod-eu` and the
    kubeconfig context `staging` as `staging`.
``OPSBOT_WATCH_LEASE_NAMESPACE``
    Namespace of the `coordination.k8s.io/v1` Lease `opsbot-watch` (on the first cluster listed), so
    that with several replicas exactly one watches. Default: the pod's own namespace, else `default`.

RBAC needed per watched cluster: get/list/watch on `kustomizations.kustomize.toolkit.fluxcd.io`,
`helmreleases.helm.toolkit.fluxcd.io`, `applications.argoproj.io` and (on a Cluster API management
cluster, for `create cluster`) `clusters.cluster.x-k8s.io` (a resource whose CRD is not installed is
skipped), get/create/update on `leases.coordination.k8s.io` where the Lease lives, and get on
`deployments.apps` / `statefulsets.apps` for the live side of `status` (`opsbot.intake.live`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from opsbot.core.model import DeployEvent, utcnow
from opsbot.errors import ConfigError
from opsbot.intake.deploys import AgentIntake, event_record, inbox_key
from opsbot.intake.watch import (
    DEFAULT_RESOURCES,
    LeaseElector,
    ResourceWatcher,
    WatchedResource,
    run_watchers,
)
from opsbot.settings import Settings

log = logging.getLogger(__name__)

IN_CLUSTER = "in-cluster"
LEASE_NAME = "opsbot-watch"
SOURCE = "watch"
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


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


def lease_namespace(settings: Settings) -> str:
    if settings.watch_lease_namespace:
        return settings.watch_lease_namespace
    try:
        return _SA_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def identity() -> str:
    """Unique per process: two processes on one host (or a restarted pod) never share leadership."""
    host = os.environ.get("POD_NAME") or socket.gethostname() or "opsbot"
    return f"{host}-{uuid.uuid4().hex[:8]}"


class DeployWatch:
    """Watches every configured cluster while this replica holds the Lease (or always, without one).

    Runs on a thread of its own; events enter the intake with `submit_from_thread`, which stores
    them in the inbox and then waits for room in the queue (backpressure, never a drop).
    """

    def __init__(
        self,
        intake: AgentIntake,
        clusters: Sequence[tuple[str, client.ApiClient]],
        *,
        elector: LeaseElector | None = None,
        resources: Sequence[WatchedResource] = DEFAULT_RESOURCES,
        namespace: str | None = None,
        retry_period: float = 2.0,
        watcher_options: dict[str, Any] | None = None,
        clock: Callable[[], Any] = utcnow,
    ) -> None:
        self.intake = intake
        self.clusters = list(clusters)
        self.elector = elector
        self.resources = list(resources)
        self.namespace = namespace
        self.retry_period = retry_period
        self.watcher_options = dict(watcher_options or {})
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.delivered = 0

    def _sink(self, event: DeployEvent) -> None:
        record = event_record(event, self.clock())
        try:
            if self.intake.submit_from_thread(SOURCE, inbox_key(event), record, timeout=60.0):
                self.delivered += 1
        except Exception as exc:
            # Stored but not queued (shutting down): the inbox replay at the next start handles it.
            log.warning("watch event %s %s/%s not queued: %s", event.kind, event.namespace, event.name,
                        type(exc).__name__)

    def watchers(self) -> list[ResourceWatcher]:
        return [
            ResourceWatcher(api, resource, self._sink, namespace=self.namespace, cluster=cluster,
                            **self.watcher_options)
            for cluster, api in self.clusters
            for resource in self.resources
        ]

    def work(self, stop: threading.Event) -> None:
        """Fresh watchers per leadership term: a new leader relists and so misses nothing."""
        run_watchers(self.watchers(), stop)

    def run(self, stop: threading.Event) -> None:
        if self.elector is None:
            self.work(stop)
        else:
            self.elector.run(stop, self.work, retry_period=self.retry_period)

    def start(self) -> None:
        def target() -> None:
            try:
                self.run(self._stop)
            except BaseException as exc:  # a refused token: logged loudly, the webhooks keep working
                self.error = exc
                log.error("watch mode stopped: %s", exc)

        self._thread = threading.Thread(target=target, name="opsbot-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


def watch_from_settings(settings: Settings, intake: AgentIntake) -> DeployWatch | None:
    """The watch of `OPSBOT_WATCH`, with a Lease on the first cluster; None when unset."""
    targets = parse_watch(settings.watch)
    if not targets:
        return None
    clusters = [(t.cluster, api_client_for(t)) for t in targets]
    elector = LeaseElector(
        clusters[0][1], namespace=lease_namespace(settings), name=LEASE_NAME, identity=identity()
    )
    return DeployWatch(intake, clusters, elector=elector)
