"""Watch mode: feed the deploy processor from the Kubernetes API instead of (or besides) webhooks.

Why: some clusters cannot reach opsbot (no ingress, egress policy), and a webhook delivery can be
lost for good. Watching Flux Kustomizations/HelmReleases and Argo CD Applications gives the same
deploy events from the objects' status (`opsbot.intake.agent_events`, over `opsbot.kube.watcher`), and they take the same road as a
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
`deployments.apps` / `statefulsets.apps` for the live side of `status` (`opsbot.kube.live`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opsbot.core.model import DeployEvent, utcnow
from opsbot.intake.agent_events import event_from_object
from opsbot.intake.deploys import AgentIntake, event_record, inbox_key
from opsbot.kube.client import ApiClient, api_client_for, parse_watch
from opsbot.kube.lease import LeaseElector, identity
from opsbot.kube.watcher import ResourceWatcher, WatchedResource, run_watchers
from opsbot.settings import Settings

log = logging.getLogger(__name__)

LEASE_NAME = "opsbot-watch"
SOURCE = "watch"
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

KUSTOMIZATIONS = WatchedResource("kustomize.toolkit.fluxcd.io", "v1", "kustomizations", "Kustomization")
HELMRELEASES = WatchedResource("helm.toolkit.fluxcd.io", "v2", "helmreleases", "HelmRelease")
APPLICATIONS = WatchedResource("argoproj.io", "v1alpha1", "applications", "Application")
#: Cluster API clusters on a management cluster: the second step of `create cluster` going live
#: (the agent applied the manifests, then the new cluster reports Ready). Not a deploy of a commit.
CLUSTERS = WatchedResource("cluster.x-k8s.io", "v1beta1", "clusters", "Cluster")
DEFAULT_RESOURCES = (KUSTOMIZATIONS, HELMRELEASES, APPLICATIONS, CLUSTERS)


def lease_namespace(settings: Settings) -> str:
    if settings.watch_lease_namespace:
        return settings.watch_lease_namespace
    try:
        return _SA_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


class DeployWatch:
    """Watches every configured cluster while this replica holds the Lease (or always, without one).

    Runs on a thread of its own; events enter the intake with `submit_from_thread`, which stores
    them in the inbox and then waits for room in the queue (backpressure, never a drop).
    """

    def __init__(
        self,
        intake: AgentIntake,
        clusters: Sequence[tuple[str, ApiClient]],
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
            ResourceWatcher(api, resource, self._sink, translate=event_from_object, namespace=self.namespace,
                            cluster=cluster, **self.watcher_options)
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
