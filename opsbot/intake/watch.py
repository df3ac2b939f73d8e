"""Watch mode: read Flux and Argo CD status from the Kubernetes API when webhooks cannot reach us.

Why: some clusters cannot call opsbot (no ingress, policy), and a webhook delivery can be lost.
Watching the objects' status gives the same deploy events from the source of truth.

The official `kubernetes` client is synchronous (urllib3), so each watched resource runs in a
thread of its own. Events reach the caller through a plain callback, called in that thread; an
asyncio consumer should hand them over with `loop.call_soon_threadsafe`. The loop follows the
API server's list/watch contract (https://kubernetes.io/docs/reference/using-api/api-concepts/):
list once, remember `metadata.resourceVersion`, watch from it with bookmarks on, advance on every
event and bookmark, and relist when the server answers 410 Gone. It emits an event only when an
object's (revision, outcome, reason, message) changes, so a relist or a status-only update does
not notify twice.

With several bot replicas, `LeaseElector` (a `coordination.k8s.io/v1` Lease, as client-go's
leader election uses) makes sure only one of them watches.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from opsbot.core.model import DeployEvent, Outcome, utcnow
from opsbot.errors import OpsbotError, PermanentError, TemporaryError
from opsbot.intake.agents import (
    FluxRevision,
    PayloadError,
    argocd_outcome,
    flux_outcome,
    parse_flux_revision,
)

log = logging.getLogger(__name__)

__all__ = [
    "APPLICATIONS",
    "CLUSTERS",
    "DEFAULT_RESOURCES",
    "HELMRELEASES",
    "KUSTOMIZATIONS",
    "LIVE_KINDS",
    "Backoff",
    "LeaseElector",
    "LiveStatus",
    "ResourceWatcher",
    "WatchAuthError",
    "WatchedResource",
    "event_from_object",
    "live_status",
    "run_watchers",
]


@dataclass(frozen=True)
class WatchedResource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}"


KUSTOMIZATIONS = WatchedResource("kustomize.toolkit.fluxcd.io", "v1", "kustomizations", "Kustomization")
HELMRELEASES = WatchedResource("helm.toolkit.fluxcd.io", "v2", "helmreleases", "HelmRelease")
APPLICATIONS = WatchedResource("argoproj.io", "v1alpha1", "applications", "Application")
#: Cluster API clusters on a management cluster: the second step of `create cluster` going live
#: (the agent applied the manifests, then the new cluster reports Ready). Not a deploy of a commit.
CLUSTERS = WatchedResource("cluster.x-k8s.io", "v1beta1", "clusters", "Cluster")
DEFAULT_RESOURCES = (KUSTOMIZATIONS, HELMRELEASES, APPLICATIONS, CLUSTERS)


class WatchAuthError(PermanentError):
    """The API server refused our credentials (401/403): retrying cannot help, a person must act."""


class _Expired(Exception):
    """410 Gone: the resourceVersion we hold is older than the server's history; relist."""


class _StreamError(Exception):
    """The watch stream carried an ERROR event other than 410, or a line that is not an event."""


# ------------------------------------------------------------------------------------ status -> event


def event_from_object(
    resource: WatchedResource, obj: Mapping[str, Any], *, now: datetime, cluster: str = ""
) -> DeployEvent | None:
    """What an object's status says about its deploy, or None while it says nothing yet.

    Conservative like the webhook parsers: an object whose controller has not yet observed the
    latest spec (`observedGeneration < generation`) is progressing, whatever its Ready says.
    """
    meta = _map(obj.get("metadata"))
    name, namespace = _str(meta.get("name")), _str(meta.get("namespace"))
    if not name:
        return None
    status = _map(obj.get("status"))
    if resource.kind == "Application":
        return _argo_event(name, namespace, status, now=now, cluster=cluster)
    if resource.kind == "Cluster":
        return _cluster_event(name, namespace, meta, status, now=now, cluster=cluster)
    return _flux_event(resource, name, namespace, meta, status, now=now, cluster=cluster)


def _flux_event(
    resource: WatchedResource,
    name: str,
    namespace: str,
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    *,
    now: datetime,
    cluster: str,
) -> DeployEvent | None:
    ready = next(
        (c for c in _list(status.get("conditions")) if isinstance(c, dict) and c.get("type") == "Ready"), None
    )
    if ready is None:
        return None
    reason, message = _str(ready.get("reason")), _str(ready.get("message"))
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    stale = isinstance(generation, int) and isinstance(observed, int) and observed < generation
    state = _str(ready.get("status"))
    if state == "True" and not stale:
        outcome = Outcome.SUCCEEDED
    elif state == "False" and not stale:
        outcome = flux_outcome(reason, "error")
    else:
        outcome = Outcome.PROGRESSING

    if resource.kind == "HelmRelease":
        history = [h for h in _list(status.get("history")) if isinstance(h, dict)]
        applied = _str(history[0].get("chartVersion")) if history else ""
        attempted = _str(status.get("lastAttemptedRevision"))
        raw = applied if outcome is Outcome.SUCCEEDED and applied else attempted or applied
        revision = _safe_revision(raw)
    else:
        applied = _str(status.get("lastAppliedRevision"))
        attempted = _str(status.get("lastAttemptedRevision"))
        if outcome is Outcome.SUCCEEDED:
            revision = _safe_revision(applied)
            if not revision.sha:
                origin = _safe_revision(_str(status.get("lastAppliedOriginRevision")))
                revision = FluxRevision(revision.raw, sha=origin.sha, digest=revision.digest)
        else:
            revision = _safe_revision(attempted or applied)
    return DeployEvent(
        source="watch",
        kind=resource.kind,
        name=name,
        namespace=namespace,
        revision=revision.sha or revision.raw,
        outcome=outcome,
        reason=reason or state or "Unknown",
        message=message,
        at=_time(ready.get("lastTransitionTime")) or now,
        cluster=cluster,
    )


_ARGO_PHASES = frozenset({"Running", "Terminating", "Succeeded", "Failed", "Error"})
_ARGO_HEALTH = frozenset({"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"})


def _argo_event(
    name: str, namespace: str, status: Mapping[str, Any], *, now: datetime, cluster: str
) -> DeployEvent | None:
    op = _map(status.get("operationState"))
    health = _map(status.get("health"))
    sync = _map(status.get("sync"))
    phase = _str(op.get("phase"))
    health_status = _str(health.get("status"))
    if not phase and not health_status:
        return None
    outcome, reason = argocd_outcome(
        phase if phase in _ARGO_PHASES else "", health_status if health_status in _ARGO_HEALTH else ""
    )
    finished = _time(op.get("finishedAt"))
    changed = _time(health.get("lastTransitionTime"))
    if outcome is Outcome.SUCCEEDED and finished and changed and changed < finished:
        # The catalog's on-deployed rule: Healthy from before the sync finished is the previous
        # rollout's health, not this one's.
        outcome = Outcome.PROGRESSING
    revision = (
        _str(_map(op.get("syncResult")).get("revision"))
        or _str(_map(_map(op.get("operation")).get("sync")).get("revision"))
        or _str(sync.get("revision"))
    )
    message = _str(op.get("message"))
    if outcome is Outcome.DEGRADED and _str(health.get("message")):
        message = _str(health.get("message"))
    return DeployEvent(
        source="watch",
        kind="Application",
        name=name,
        namespace=namespace,
        revision=revision.lower() if _is_sha1(revision) else revision,
        outcome=outcome,
        reason=reason,
        message=message,
        at=finished or changed or now,
        cluster=cluster,
    )


def _cluster_event(
    name: str,
    namespace: str,
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    *,
    now: datetime,
    cluster: str,
) -> DeployEvent | None:
    """A Cluster API `Cluster`: succeeded once its Ready condition is True, progressing before.

    The revision is the object's uid, not a commit: a cluster deleted and created again under the
    same name is another object, so its Ready is a new event and not a redelivery of the old one.
    """
    ready = next(
        (c for c in _list(status.get("conditions")) if isinstance(c, dict) and c.get("type") == "Ready"), None
    )
    if ready is None:
        return None
    state = _str(ready.get("status"))
    return DeployEvent(
        source="watch",
        kind="Cluster",
        name=name,
        namespace=namespace,
        revision=_str(meta.get("uid")),
        outcome=Outcome.SUCCEEDED if state == "True" else Outcome.PROGRESSING,
        reason=_str(ready.get("reason")) or ("Ready" if state == "True" else state or "Unknown"),
        message=_str(ready.get("message")),
        at=_time(ready.get("lastTransitionTime")) or now,
        cluster=cluster,
    )


# --------------------------------------------------------------------------------------------- watcher


class Backoff:
    """Exponential delay with jitter, so a failing API server is not hammered by every replica."""

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial, self.maximum, self.factor, self.jitter, self._rng = (
            initial,
            maximum,
            factor,
            jitter,
            rng,
        )
        self._next = initial

    def next(self) -> float:
        delay = min(self._next, self.maximum)
        self._next = min(self._next * self.factor, self.maximum)
        return delay * (1 - self.jitter * self._rng())

    def reset(self) -> None:
        self._next = self.initial


Fingerprint = tuple[str, str, str, str]


class ResourceWatcher:
    """List-then-watch one resource kind and call `on_event` for every change of deploy state.

    `run(stop)` blocks until `stop` is set (a watchdog aborts the blocked read, so stopping does
    not wait for the next event), or raises `WatchAuthError` on 401/403. Every other failure is
    logged and retried after a backoff that `stop` interrupts. A watch that delivers nothing
    also waits a backoff before the next one, so a server that closes streams at once cannot
    make the loop spin.
    """

    def __init__(
        self,
        api: client.ApiClient,
        resource: WatchedResource,
        on_event: Callable[[DeployEvent], None],
        *,
        namespace: str | None = None,
        cluster: str = "",
        clock: Callable[[], datetime] = utcnow,
        backoff: Backoff | None = None,
        timeout_seconds: int = 300,
        request_timeout: tuple[float, float] | None = None,
        stop_poll_seconds: float = 0.2,
    ) -> None:
        self._api = client.CustomObjectsApi(api)
        self.resource = resource
        self._on_event = on_event
        self.namespace = namespace
        self.cluster = cluster
        self._clock = clock
        self._backoff = backoff or Backoff()
        self._timeout_seconds = timeout_seconds
        # The read timeout outlives the server-side timeout, so it only fires on a dead connection.
        self._request_timeout = request_timeout or (10.0, timeout_seconds + 30.0)
        self._stop_poll = stop_poll_seconds
        self._known: dict[tuple[str, str], Fingerprint] = {}
        self._response: Any = None
        self._response_lock = threading.Lock()
        self.resource_version: str | None = None
        self.lists = 0
        self._missing_logged = False

    # ------------------------------------------------------------------------------ loop

    def run(self, stop: threading.Event) -> None:
        done = threading.Event()
        watchdog = threading.Thread(
            target=self._abort_on_stop,
            args=(stop, done),
            name=f"watchdog-{self.resource.plural}",
            daemon=True,
        )
        watchdog.start()
        try:
            self._loop(stop)
        finally:
            done.set()
            watchdog.join()

    def _loop(self, stop: threading.Event) -> None:
        expired_in_a_row = 0
        while not stop.is_set():
            delay = 0.0
            try:
                if self.resource_version is None:
                    self._relist()
                if stop.is_set():
                    break
                if self._watch_once(stop):
                    self._backoff.reset()
                    expired_in_a_row = 0
                else:
                    delay = self._backoff.next()
            except _Expired:
                # The first 410 relists at once (the normal case after a long disconnect); a
                # second one in a row means something is wrong, so back off.
                self.resource_version = None
                expired_in_a_row += 1
                delay = self._backoff.next() if expired_in_a_row > 1 else 0.0
                log.info("watch of %s expired (410 Gone); relisting", self.resource)
            except ApiException as exc:
                if exc.status in (401, 403):
                    raise WatchAuthError(_auth_message(self.resource, exc.status, self.namespace)) from None
                if exc.status == 410:
                    self.resource_version = None
                    expired_in_a_row += 1
                    delay = self._backoff.next() if expired_in_a_row > 1 else 0.0
                elif exc.status == 404:
                    # The CRD is not installed (a Flux-only cluster has no Applications): say so
                    # once, then look again now and then in case it gets installed.
                    delay = self._backoff.maximum
                    level = logging.DEBUG if self._missing_logged else logging.WARNING
                    self._missing_logged = True
                    log.log(level, "%s is not served by this cluster (404); looking again every %.0fs",
                            self.resource, delay)
                else:
                    delay = self._backoff.next()
                    log.warning(
                        "watch of %s failed: %s; retrying in %.1fs", self.resource, _describe(exc), delay
                    )
            except WatchAuthError:
                raise
            except (Urllib3HTTPError, OSError, _StreamError, ValueError) as exc:
                if stop.is_set():
                    break
                delay = self._backoff.next()
                log.warning("watch of %s failed: %s; retrying in %.1fs", self.resource, _describe(exc), delay)
            except Exception:
                # Unexpected (a client bug, a payload the client chokes on): keep watching, slowly.
                if stop.is_set():
                    break
                delay = self._backoff.next()
                log.exception("watch of %s failed unexpectedly; retrying in %.1fs", self.resource, delay)
            if delay and stop.wait(delay):
                break

    def _abort_on_stop(self, stop: threading.Event, done: threading.Event) -> None:
        while not done.is_set():
            if stop.wait(self._stop_poll):
                self._abort()
                return

    def _abort(self) -> None:
        with self._response_lock:
            resp = self._response
        if resp is None:
            return
        try:
            # Half-closes the socket: the reader thread wakes up with end-of-stream and closes
            # the response itself (closing it from here could race with its read).
            resp.shutdown()
        except Exception:
            with contextlib.suppress(Exception):
                resp.close()

    # ------------------------------------------------------------------------------ list / watch

    def _call(self, **kwargs: Any) -> Any:
        r = self.resource
        if self.namespace:
            return self._api.list_namespaced_custom_object(
                r.group, r.version, self.namespace, r.plural, **kwargs
            )
        return self._api.list_cluster_custom_object(r.group, r.version, r.plural, **kwargs)

    def _relist(self) -> None:
        items: list[Any] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": 500, "_request_timeout": (self._request_timeout[0], 60.0)}
            if token:
                kwargs["_continue"] = token
            page = self._call(**kwargs)
            if not isinstance(page, dict):
                raise _StreamError(f"list of {self.resource} returned {type(page).__name__}, not an object")
            items.extend(_list(page.get("items")))
            meta = _map(page.get("metadata"))
            token = _str(meta.get("continue")) or None
            if token is None:
                rv = _str(meta.get("resourceVersion"))
                break
        self.lists += 1
        seen: set[tuple[str, str]] = set()
        for obj in items:
            if isinstance(obj, dict):
                seen.add(self._observe(obj))
        for key in set(self._known) - seen:
            del self._known[key]  # deleted while we were not watching
        self.resource_version = rv or None
        if not rv:
            raise _StreamError(f"list of {self.resource} has no metadata.resourceVersion")

    def _watch_once(self, stop: threading.Event) -> bool:
        """Read one watch stream to its end; True when it delivered at least one event."""
        resp = self._call(
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self.resource_version,
            timeout_seconds=self._timeout_seconds,
            _preload_content=False,
            _request_timeout=self._request_timeout,
        )
        with self._response_lock:
            self._response = resp
        if stop.is_set():
            self._abort()
        got = False
        try:
            for line in _lines(resp):
                if not line.strip():
                    continue
                self._handle(line)
                got = True
                if stop.is_set():
                    break
        finally:
            with self._response_lock:
                self._response = None
            # Close before release: a stream left half-read must not go back to the pool.
            with contextlib.suppress(Exception):
                resp.close()
            with contextlib.suppress(Exception):
                resp.release_conn()
        return got

    def _handle(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            raise _StreamError(f"watch of {self.resource} sent a line that is not JSON") from None
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            raise _StreamError(f"watch of {self.resource} sent something that is not a watch event")
        type_, obj = event.get("type"), event["object"]
        if type_ == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Expired()
            if code in (401, 403):
                raise WatchAuthError(_auth_message(self.resource, int(code), self.namespace))
            raise _StreamError(
                f"watch of {self.resource} ended with error {code}: {_str(obj.get('message'))}"
            )
        rv = _str(_map(obj.get("metadata")).get("resourceVersion"))
        if type_ in ("ADDED", "MODIFIED"):
            self._observe(obj)
        elif type_ == "DELETED":
            meta = _map(obj.get("metadata"))
            self._known.pop((_str(meta.get("namespace")), _str(meta.get("name"))), None)
        elif type_ != "BOOKMARK":
            raise _StreamError(f"watch of {self.resource} sent unknown event type {type_!r}")
        if rv:
            self.resource_version = rv

    def _observe(self, obj: Mapping[str, Any]) -> tuple[str, str]:
        meta = _map(obj.get("metadata"))
        key = (_str(meta.get("namespace")), _str(meta.get("name")))
        event = event_from_object(self.resource, obj, now=self._clock(), cluster=self.cluster)
        if event is None:
            return key
        fingerprint = (event.revision, str(event.outcome), event.reason, event.message)
        if self._known.get(key) == fingerprint:
            return key
        self._known[key] = fingerprint
        try:
            self._on_event(event)
        except Exception:
            # A broken consumer must not stop the watch; the next change is delivered again.
            log.exception("deploy event callback failed for %s %s/%s", event.kind, key[0], key[1])
        return key


def run_watchers(watchers: list[ResourceWatcher], stop: threading.Event) -> None:
    """Run several watchers in threads until `stop`; if one fails for good, stop all and raise it."""
    errors: list[BaseException] = []
    inner = threading.Event()

    def target(w: ResourceWatcher) -> None:
        try:
            w.run(inner)
        except BaseException as exc:
            errors.append(exc)
            inner.set()

    threads = [
        threading.Thread(target=target, args=(w,), name=f"watch-{w.resource.plural}") for w in watchers
    ]
    for t in threads:
        t.start()
    try:
        while not inner.is_set() and not stop.wait(0.2):
            pass
    finally:
        inner.set()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]


# ------------------------------------------------------------------------------------ leader election


class LeaseElector:
    """Leader election on a `coordination.k8s.io/v1` Lease, following client-go's rules.

    Why these rules: expiry is judged on *our* clock from the moment we last saw the lease
    record change (not from its `renewTime`), so clock skew between replicas cannot make two of
    them leader; every write carries the `resourceVersion` we read, so of two candidates racing
    for an expired lease exactly one write succeeds and the other gets 409 and stays follower.
    A leader that cannot renew gives up after `renew_deadline`, before anyone else may take over.

    The Lease is handled as plain JSON (see `_request`).
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: int = 15,
        renew_deadline: float | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if not identity:
            raise OpsbotError("leader election needs a non-empty identity (e.g. the pod name)")
        self._client = api
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline if renew_deadline is not None else lease_duration * 2 / 3
        self._clock = clock
        self._observed: tuple[Any, ...] | None = None
        self._observed_at: datetime | None = None
        self._renewed_at: datetime | None = None
        self.is_leader = False

    def try_acquire_or_renew(self) -> bool:
        now = self._clock()
        try:
            lease = self._read()
        except ApiException as exc:
            if exc.status == 404:
                return self._create(now)
            return self._failed(now, exc)
        except (Urllib3HTTPError, OSError, ValueError) as exc:
            return self._failed(now, exc)

        spec = dict(_map(lease.get("spec")))
        holder = _str(spec.get("holderIdentity"))
        record = _record(spec)
        if record != self._observed:
            self._observed, self._observed_at = record, now
        duration = spec.get("leaseDurationSeconds")
        if not isinstance(duration, int) or duration <= 0:
            duration = self.lease_duration
        observed_at = self._observed_at or now
        if holder and holder != self.identity and now < observed_at + timedelta(seconds=duration):
            self.is_leader = False
            return False

        if holder != self.identity:
            spec["acquireTime"] = _micro_time(now)
            transitions = spec.get("leaseTransitions")
            spec["leaseTransitions"] = (transitions if isinstance(transitions, int) else 0) + 1
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = self.lease_duration
        spec["renewTime"] = _micro_time(now)
        lease["spec"] = spec
        try:
            updated = self._write(lease)
        except ApiException as exc:
            if exc.status == 409:  # someone else wrote since our read: they won
                self.is_leader = False
                return False
            return self._failed(now, exc)
        except (Urllib3HTTPError, OSError, ValueError) as exc:
            return self._failed(now, exc)
        return self._won(updated, now)

    def release(self) -> None:
        """Hand the lease back so another replica takes over at once instead of after expiry."""
        if not self.is_leader:
            return
        self.is_leader = False
        now = _micro_time(self._clock())
        try:
            lease = self._read()
            spec = dict(_map(lease.get("spec")))
            if spec.get("holderIdentity") != self.identity:
                return
            spec.pop("holderIdentity", None)
            spec.update(leaseDurationSeconds=1, renewTime=now, acquireTime=now)
            lease["spec"] = spec
            self._write(lease)
        except (ApiException, Urllib3HTTPError, OSError, ValueError) as exc:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, _describe(exc))

    def run(
        self,
        stop: threading.Event,
        work: Callable[[threading.Event], None],
        *,
        retry_period: float = 2.0,
    ) -> None:
        """Run `work(child_stop)` while leader; stop it when leadership is lost or `stop` is set.

        If `work` raises, leadership is released and the error re-raised here, so a permanent
        failure (a refused token) ends the bot's watch loop visibly instead of silently.
        """
        worker: threading.Thread | None = None
        child = threading.Event()
        errors: list[BaseException] = []

        def target(child_stop: threading.Event) -> None:
            try:
                work(child_stop)
            except BaseException as exc:
                errors.append(exc)

        try:
            while not stop.is_set() and not errors:
                if worker is not None and not worker.is_alive():
                    worker = None  # the work returned on its own; start it again while we lead
                leading = self.try_acquire_or_renew()
                if leading and worker is None:
                    log.info("leading lease %s/%s as %s", self.namespace, self.name, self.identity)
                    child = threading.Event()
                    worker = threading.Thread(target=target, args=(child,), name="leader-work")
                    worker.start()
                elif not leading and worker is not None:
                    log.warning("lost lease %s/%s; stopping work", self.namespace, self.name)
                    child.set()
                    worker.join()
                    worker = None
                if stop.wait(retry_period) or errors:
                    break
        finally:
            child.set()
            if worker is not None:
                worker.join()
            self.release()
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------------------ internals

    _LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"

    def _read(self) -> dict[str, Any]:
        return self._request("GET", self._LEASES + "/{name}")

    def _write(self, lease: dict[str, Any]) -> dict[str, Any]:
        return self._request("PUT", self._LEASES + "/{name}", lease)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One Lease call with a plain JSON body.

        The generated `*_namespaced_lease` methods coerce a body into a `V1Lease` and write its
        times with `isoformat()`, which drops the fraction when the microseconds are 0; the API
        server then answers 400 (MicroTime needs exactly six digits).
        """
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = self._client.param_serialize(
            method=method,
            resource_path=path,
            path_params={"namespace": self.namespace, "name": self.name},
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(*request, _request_timeout=(5, 10))
        raw = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        data = json.loads(raw or b"null")
        if not isinstance(data, dict):
            raise ValueError(f"the API server returned a {type(data).__name__} for a lease, not an object")
        return data

    def _create(self, now: datetime) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.lease_duration,
                "acquireTime": _micro_time(now),
                "renewTime": _micro_time(now),
                "leaseTransitions": 0,
            },
        }
        try:
            created = self._request("POST", self._LEASES, body)
        except ApiException as exc:
            if exc.status == 409:  # another replica created it first
                self.is_leader = False
                return False
            return self._failed(now, exc)
        except (Urllib3HTTPError, OSError, ValueError) as exc:
            return self._failed(now, exc)
        return self._won(created, now)

    def _won(self, lease: Mapping[str, Any], now: datetime) -> bool:
        self._observed = _record(_map(lease.get("spec")))
        self._observed_at = now
        self._renewed_at = now
        self.is_leader = True
        return True

    def _failed(self, now: datetime, exc: BaseException) -> bool:
        still = (
            self.is_leader
            and self._renewed_at is not None
            and now < self._renewed_at + timedelta(seconds=self.renew_deadline)
        )
        state = "still leader" if still else "not leader"
        log.warning("lease %s/%s: %s; %s", self.namespace, self.name, _describe(exc), state)
        self.is_leader = still
        return still


# --------------------------------------------------------------------------------------------- live status


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
        obj = _json_object(resp, kind.lower())
    except ApiException as exc:
        if exc.status == 404:
            return None
        if exc.status in (401, 403):
            raise PermanentError(_auth_message_deployments(exc.status, namespace, plural)) from None
        raise TemporaryError(f"reading {kind.lower()} {namespace}/{name} failed: HTTP {exc.status}") from None
    except (Urllib3HTTPError, OSError, ValueError) as exc:
        raise TemporaryError(f"reading {kind.lower()} {namespace}/{name} failed: {_describe(exc)}") from None
    spec, status, meta = _map(obj.get("spec")), _map(obj.get("status")), _map(obj.get("metadata"))
    pod_spec = _map(_map(spec.get("template")).get("spec"))
    containers = tuple(
        (_str(c.get("name")), _str(c.get("image")))
        for c in [*_list(pod_spec.get("initContainers")), *_list(pod_spec.get("containers"))]
        if isinstance(c, dict) and _str(c.get("image"))
    )
    replicas = spec.get("replicas")
    return LiveStatus(
        name=name,
        namespace=namespace,
        replicas=replicas if isinstance(replicas, int) else 1,
        ready_replicas=_int(status.get("readyReplicas")),
        updated_replicas=_int(status.get("updatedReplicas")),
        available_replicas=_int(status.get("availableReplicas")),
        images=tuple(image for _, image in containers),
        generation=_int(meta.get("generation")),
        observed_generation=_int(status.get("observedGeneration")),
        containers=containers,
        kind=kind,
    )


# --------------------------------------------------------------------------------------------- helpers


def _lines(resp: Any) -> Iterator[bytes]:
    buffer = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        buffer += chunk if isinstance(chunk, bytes) else str(chunk).encode()
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line
    if buffer.strip():
        yield buffer


def _auth_message(resource: WatchedResource, status: int, namespace: str | None) -> str:
    where = f"in namespace {namespace}" if namespace else "cluster-wide"
    if status == 401:
        return (
            "the Kubernetes API refused opsbot's credentials (401 Unauthorized)"
            f" when listing {resource} {where}: the service account token is missing, expired or wrong"
        )
    return (
        f"the Kubernetes API denied opsbot (403 Forbidden) to list and watch {resource} {where}:"
        " grant get/list/watch on it to opsbot's service account"
    )


def _auth_message_deployments(status: int, namespace: str, plural: str = "deployments") -> str:
    what = (
        "refused opsbot's credentials (401 Unauthorized)"
        if status == 401
        else "denied opsbot (403 Forbidden)"
    )
    return f"the Kubernetes API {what} reading {plural}.apps in namespace {namespace}"


def _describe(exc: BaseException) -> str:
    """A one-line reason for logs: the exception type and its text, never request headers."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


def _record(spec: Mapping[str, Any]) -> tuple[Any, ...]:
    """The parts of a Lease that change on every renewal or takeover (client-go's record)."""
    return (
        _str(spec.get("holderIdentity")),
        spec.get("renewTime"),
        spec.get("acquireTime"),
        spec.get("leaseTransitions"),
        spec.get("leaseDurationSeconds"),
    )


def _micro_time(value: datetime) -> str:
    """MicroTime as the API server parses it: RFC 3339 with exactly six fractional digits."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_object(resp: Any, what: str) -> dict[str, Any]:
    """Decode a raw (`_preload_content=False`) response and give its connection back."""
    try:
        data = json.loads(resp.data)
    finally:
        with contextlib.suppress(Exception):
            resp.release_conn()
    if not isinstance(data, dict):
        raise ValueError(f"the API server returned a {type(data).__name__} for a {what}, not an object")
    return data


def _safe_revision(raw: str) -> FluxRevision:
    try:
        return parse_flux_revision(raw, field="status revision")
    except PayloadError:
        return FluxRevision(raw)


def _is_sha1(value: str) -> bool:
    return len(value) == 40 and all(c in "0123456789abcdefABCDEF" for c in value)


def _time(value: object) -> datetime | None:
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except (ValueError, OverflowError):
            return None
    return None


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
