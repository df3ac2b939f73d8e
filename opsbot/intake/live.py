"""The live side of `status`: what a cluster runs, read with the `kubernetes` client.

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
from typing import Any

from opsbot.core.ports import LiveWorkload
from opsbot.errors import ConfigError, PermanentError, TemporaryError
from opsbot.settings import Settings

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
        from opsbot.intake.watch import live_status

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
    from opsbot.intake.watching import api_client_for, parse_watch

    targets = parse_watch(settings.watch)
    if not targets:
        return None
    return KubeLiveReader({t.cluster: functools.partial(api_client_for, t, retries=0) for t in targets})
